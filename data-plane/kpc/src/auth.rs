//! Client authentication at CONNECT: what a listener's [`ClientAuthMode`] demands of a client,
//! and the 16/ECAP question to the credential provider, answered within a bounded wait.
//!
//! KPC never sees the credential store: a username/password pair or a verified certificate's
//! issuer and serial number go to `kaa.v1.service.{provider}.ecap.client-*-request`; the answer's
//! `credentialId` stays on the session so that a revocation event can end it. Passwords are
//! forwarded, never logged or kept.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use kaa_blueprint::config::ClientAuthMode;
use kaa_bus::Bus;
use kaa_protocol::avro::AvroRecord;
pub use kaa_protocol::ecap::CertificateIdentity;
use kaa_protocol::ecap::{
    CLIENT_CERTIFICATE_REQUEST, CLIENT_USERNAME_PASSWORD_REQUEST, ClientCertificateValidationRequest,
    ClientCertificateValidationResponse, ClientUsernamePasswordValidationRequest,
    ClientUsernamePasswordValidationResponse,
};
use kaa_protocol::{now_millis, subject};

use crate::ratelimit::{FailedConnects, MAX_TRACKED};

/// Who an authenticated client is, as the credential provider named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// What revocation events name.
    pub credential_id: String,
    /// For logs: the provider's client id, if it knows one.
    pub client_id: Option<String>,
}

/// What a client offered at CONNECT.
#[derive(Clone, Copy)]
pub(crate) struct Presented<'a> {
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    pub certificate: Option<&'a CertificateIdentity>,
}

impl std::fmt::Debug for Presented<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presented")
            .field("username", &self.username.is_some())
            .field("password", &self.password.is_some())
            .field("certificate", &self.certificate)
            .finish()
    }
}

/// Why a client may not connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    #[error("bad username or password")]
    BadCredentials,
    #[error("not authorized")]
    NotAuthorized,
    #[error("the credential provider is unavailable")]
    Unavailable,
    #[error("too many failed CONNECTs from this address")]
    RateLimited,
}

#[derive(Debug)]
pub(crate) struct Authenticator {
    bus: Bus,
    password_subject: String,
    certificate_subject: String,
    timeout: Duration,
    failed: FailedConnects,
}

impl Authenticator {
    pub(crate) fn new(bus: Bus, provider: &str, timeout: Duration, failed_per_minute: u32) -> Self {
        Authenticator {
            bus,
            password_subject: subject::ecap_request(provider, CLIENT_USERNAME_PASSWORD_REQUEST),
            certificate_subject: subject::ecap_request(provider, CLIENT_CERTIFICATE_REQUEST),
            timeout,
            failed: FailedConnects::new(failed_per_minute, MAX_TRACKED),
        }
    }

    /// Decides a CONNECT from `peer`; `Ok(None)` when the listener does not authenticate.
    pub(crate) async fn authenticate(
        &self,
        mode: ClientAuthMode,
        peer: IpAddr,
        presented: Presented<'_>,
    ) -> Result<Option<ClientIdentity>, AuthError> {
        if mode == ClientAuthMode::None {
            return Ok(None);
        }
        if !self.failed.try_acquire(peer) {
            return Err(AuthError::RateLimited);
        }
        let result = self.check(mode, presented).await;
        match result {
            Err(AuthError::BadCredentials | AuthError::NotAuthorized) => {}
            _ => self.failed.refund(peer),
        }
        result.map(Some)
    }

    async fn check(&self, mode: ClientAuthMode, p: Presented<'_>) -> Result<ClientIdentity, AuthError> {
        match (mode, p.certificate) {
            (ClientAuthMode::Certificate, Some(cert)) => self.certificate(cert).await,
            (ClientAuthMode::Certificate, None) => Err(AuthError::NotAuthorized),
            // A certificate the provider does not know still leaves the password to try.
            (ClientAuthMode::PasswordOrCertificate, Some(cert)) => match self.certificate(cert).await {
                Err(AuthError::NotAuthorized) if p.username.is_some() => self.password(p).await,
                other => other,
            },
            _ => self.password(p).await,
        }
    }

    async fn password(&self, p: Presented<'_>) -> Result<ClientIdentity, AuthError> {
        let Some(username) = p.username else {
            return Err(AuthError::BadCredentials);
        };
        // 16/ECAP carries the password as a string: a non-UTF-8 one cannot match any.
        let password = match p.password {
            None => None,
            Some(bytes) => Some(
                std::str::from_utf8(bytes)
                    .map_err(|_| AuthError::BadCredentials)?
                    .to_owned(),
            ),
        };
        let request = ClientUsernamePasswordValidationRequest {
            correlation_id: correlation_id(),
            timestamp: now_millis(),
            timeout: self.timeout_ms(),
            username: Some(username.to_owned()),
            password,
        };
        let r: ClientUsernamePasswordValidationResponse = self.ask(&self.password_subject, &request).await?;
        verdict(
            r.status_code,
            r.credential_id,
            r.client_id,
            r.reason_phrase,
            AuthError::BadCredentials,
        )
    }

    async fn certificate(&self, cert: &CertificateIdentity) -> Result<ClientIdentity, AuthError> {
        let request = ClientCertificateValidationRequest {
            correlation_id: correlation_id(),
            timestamp: now_millis(),
            timeout: self.timeout_ms(),
            issuer: cert.issuer.clone(),
            serial_number: cert.serial_number.clone(),
        };
        let r: ClientCertificateValidationResponse = self.ask(&self.certificate_subject, &request).await?;
        verdict(
            r.status_code,
            r.credential_id,
            r.client_id,
            r.reason_phrase,
            AuthError::NotAuthorized,
        )
    }

    /// One request/reply with the bounded wait; any failure to get an answer, or an answer that
    /// does not decode, is `Unavailable`.
    async fn ask<Resp: AvroRecord>(
        &self,
        subject: &str,
        request: &impl AvroRecord,
    ) -> Result<Resp, AuthError> {
        let answer = tokio::time::timeout(
            self.timeout,
            self.bus
                .request(subject, Bytes::from(request.to_avro()), self.timeout),
        )
        .await;
        let reply = match answer {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, subject, "credential provider unreachable");
                return Err(AuthError::Unavailable);
            }
            Err(_) => {
                tracing::warn!(subject, "credential provider did not answer in time");
                return Err(AuthError::Unavailable);
            }
        };
        Resp::from_avro(&reply.payload).map_err(|e| {
            tracing::warn!(error = %e, subject, "malformed answer from the credential provider");
            AuthError::Unavailable
        })
    }

    fn timeout_ms(&self) -> i64 {
        i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX)
    }
}

fn correlation_id() -> String {
    format!("ecap-{}", uuid::Uuid::new_v4().simple())
}

/// 2xx with a credential id accepts; 4xx refuses with `rejected`; anything else means the
/// provider could not decide.
fn verdict(
    status: i32,
    credential_id: Option<String>,
    client_id: Option<String>,
    reason: Option<String>,
    rejected: AuthError,
) -> Result<ClientIdentity, AuthError> {
    match (status, credential_id) {
        (200..=299, Some(credential_id)) => Ok(ClientIdentity {
            credential_id,
            client_id,
        }),
        (200..=299, None) => {
            tracing::warn!("the credential provider accepted a client without naming its credential");
            Err(AuthError::Unavailable)
        }
        (400..=499, _) => Err(rejected),
        (status, _) => {
            tracing::warn!(
                status,
                reason = reason.as_deref().unwrap_or(""),
                "credential provider failed"
            );
            Err(AuthError::Unavailable)
        }
    }
}
