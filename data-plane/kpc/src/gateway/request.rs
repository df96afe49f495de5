//! One synchronous 1/KP request, for request/response transports (1/KP over HTTP and HTTPS).
//!
//! The request takes the same path as an MQTT PUBLISH, through a session of its own that lives
//! for this request only: the topic is checked, the token identified, the extension asked, and
//! the first message on the session's channel is the answer (the session gets no pushes). A
//! success is answered even without a request id, since HTTP always responds.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use kaa_blueprint::config::ClientAuthMode;
use kaa_protocol::error::KpError;
use rmqtt_codec::types::QoS;

use super::Gateway;
use crate::auth::{AuthError, CertificateIdentity, Presented};
use crate::metrics::{AuthFailure, ReplyKind};

/// The answer to a synchronous request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The extension's payload (`/status`).
    Status(Bytes),
    /// A 1/KP error (`/error`): its status code becomes the HTTP status.
    Error(KpError),
}

/// HTTP Basic credentials, checked like MQTT username/password at CONNECT.
#[derive(Clone, Copy)]
pub struct BasicCredentials<'a> {
    pub username: &'a str,
    pub password: &'a [u8],
}

impl std::fmt::Debug for BasicCredentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BasicCredentials(<redacted>)")
    }
}

/// Who sent a synchronous request, and how the listener it came through authenticates clients.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The client's address (for the failed-authentication rate limit).
    pub peer: IpAddr,
    /// The listener's mode: 1/KP over plain HTTP follows the plain MQTT listener's, HTTPS has
    /// its own.
    pub auth: ClientAuthMode,
    pub credentials: Option<BasicCredentials<'a>>,
    /// The verified TLS client certificate (HTTPS).
    pub certificate: Option<&'a CertificateIdentity>,
}

impl Gateway {
    /// Handles one 1/KP request and waits for its answer. `topic` is a request topic
    /// (`kp1/{appVersion}/{ext}/{token}/{path}`). Clients authenticate as at an MQTT CONNECT on
    /// the caller's listener: not at all with `auth: none`, else with username and password
    /// (HTTP Basic) or a registered client certificate.
    pub async fn request(&self, caller: Caller<'_>, topic: &str, payload: Bytes) -> Answer {
        let Caller {
            peer,
            auth: mode,
            credentials,
            certificate,
        } = caller;
        if mode == ClientAuthMode::Certificate && certificate.is_none() {
            self.metrics.auth_failure(AuthFailure::NotAuthorized);
            return Answer::Error(KpError::new(
                401,
                "this listener admits clients with a registered TLS client certificate only, \
                 and none was presented",
            ));
        }
        let presented = Presented {
            username: credentials.map(|c| c.username),
            password: credentials.map(|c| c.password),
            certificate,
        };
        let client = match self.auth.authenticate(mode, peer, presented).await {
            Ok(client) => client,
            Err(e) => {
                let (failure, code) = match e {
                    AuthError::BadCredentials => (AuthFailure::BadCredentials, 401),
                    AuthError::NotAuthorized => (AuthFailure::NotAuthorized, 403),
                    AuthError::Unavailable => (AuthFailure::ProviderUnavailable, 503),
                    AuthError::RateLimited => (AuthFailure::RateLimited, 429),
                };
                self.metrics.auth_failure(failure);
                return Answer::Error(KpError::new(code, e.to_string()));
            }
        };
        let Some(handle) = self.open(client, false) else {
            self.metrics.auth_failure(AuthFailure::Revoked);
            return Answer::Error(KpError::new(401, "the client credential was revoked"));
        };
        let answer = match self
            .submit(handle.id, topic, payload, QoS::AtMostOnce, true)
            .await
        {
            Err((error, extension)) => {
                extension.replied(ReplyKind::Error);
                Answer::Error(error)
            }
            Ok(()) => {
                let timeout = Duration::from_millis(self.config().limits.request_timeout_ms);
                match tokio::time::timeout(timeout, handle.outbound.recv_async()).await {
                    Ok(Ok(out)) if out.topic.ends_with("/status") => Answer::Status(out.payload),
                    Ok(Ok(out)) => Answer::Error(
                        serde_json::from_slice(&out.payload)
                            .unwrap_or_else(|_| KpError::new(502, "the extension's error is malformed")),
                    ),
                    // The session was closed under us (revoked meanwhile): nobody will answer.
                    Ok(Err(_)) => Answer::Error(KpError::new(410, "the session ended")),
                    // Counted as timed out by `expire_pending`, which finds the request still
                    // pending on the same deadline.
                    Err(_) => Answer::Error(KpError::new(504, "the extension did not answer in time")),
                }
            }
        };
        self.close_session(handle.id).await;
        answer
    }
}
