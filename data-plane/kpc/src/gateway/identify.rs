//! Who a session acts for: endpoint tokens identified through 16/ECAP (once per token per
//! session), and the 9/ELCE `connected` / `disconnected` events that announce endpoints.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use kaa_protocol::avro::AvroRecord;
use kaa_protocol::elce::{ConnectedEvent, DisconnectedEvent};
use kaa_protocol::error::KpError;
use kaa_protocol::{now_millis, subject};

use super::{Gateway, SessionId};
use crate::metrics::AuthFailure;
use crate::tokens::{Identified, TokenError};

impl Gateway {
    /// Resolves a token for a session: from the session's cache, else through 16/ECAP (with the
    /// replica-wide cache in front).
    pub(super) async fn identify(
        &self,
        session: SessionId,
        app: &str,
        app_version: &str,
        token: &str,
    ) -> Result<Identified, KpError> {
        if let Some(known) = self
            .state()
            .sessions
            .get(&session)
            .and_then(|s| s.tokens.get(token))
            .filter(|known| known.application == app)
        {
            return Ok(Identified {
                app_version: app_version.to_owned(),
                ..known.clone()
            });
        }
        self.check_token_room(session, token)?;
        // A revocation while the answer was in flight may have missed it: ask again, a few times,
        // and in the end use the answer without keeping it.
        let mut attempts = 0;
        let (identified, generation) = loop {
            attempts += 1;
            let generation = self.tokens.generation();
            let identified = self
                .tokens
                .resolve(app, app_version, token)
                .await
                .map_err(|e| match e {
                    TokenError::Unknown => {
                        self.metrics.auth_failure(AuthFailure::UnknownToken);
                        KpError::new(401, "unknown or invalid endpoint token")
                    }
                    TokenError::Refused(reason) => {
                        self.metrics.auth_failure(AuthFailure::TokenRefused);
                        KpError::new(403, reason)
                    }
                    TokenError::Unavailable(why) => {
                        self.metrics.auth_failure(AuthFailure::TokenUnavailable);
                        tracing::warn!(%why, "endpoint token validation failed");
                        KpError::new(
                            503,
                            "the endpoint token could not be validated now; try again later",
                        )
                    }
                })?;
            if self.tokens.generation() == generation || attempts >= 3 {
                break (identified, generation);
            }
        };
        let newly_connected = {
            let mut state = self.state();
            if self.tokens.generation() != generation {
                return Ok(identified);
            }
            let Some(s) = state.sessions.get_mut(&session) else {
                return Err(KpError::new(410, "the session ended"));
            };
            s.tokens.insert(token.to_owned(), identified.clone());
            let new = s
                .endpoint_tokens
                .insert(identified.endpoint_id.clone(), token.to_owned())
                .is_none();
            let announce = (new && s.pushes).then(now_millis);
            if let Some(at) = announce {
                s.announced.insert(identified.endpoint_id.clone(), at);
                state
                    .endpoints
                    .entry(identified.endpoint_id.clone())
                    .or_default()
                    .push(session);
            }
            announce
        };
        if let Some(timestamp) = newly_connected {
            let endpoints = [(identified.endpoint_id.clone(), identified.app_version.clone())].into();
            let event = ConnectedEvent {
                correlation_id: format!("{}-c{session}", self.replica_id),
                timestamp,
                timeout: 0,
                endpoints,
                originator_replica_id: self.replica_id.clone(),
            };
            self.emit(subject::elce_connected(&self.config().instance), event.to_avro())
                .await;
        }
        Ok(identified)
    }

    pub(super) async fn announce_disconnected(&self, endpoints: BTreeMap<String, String>) {
        if endpoints.is_empty() {
            return;
        }
        let event = DisconnectedEvent {
            correlation_id: format!(
                "{}-d{}",
                self.replica_id,
                self.next_id.fetch_add(1, Ordering::Relaxed)
            ),
            timestamp: now_millis(),
            timeout: 0,
            endpoints,
            originator_replica_id: self.replica_id.clone(),
        };
        self.emit(
            subject::elce_disconnected(&self.config().instance),
            event.to_avro(),
        )
        .await;
    }

    async fn emit(&self, subject: String, payload: Vec<u8>) {
        if let Err(e) = self.bus.publish(&subject, Bytes::from(payload)).await {
            tracing::warn!(error = %e, subject, "could not publish a connectivity event");
        }
    }
}
