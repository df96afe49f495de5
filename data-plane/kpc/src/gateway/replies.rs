//! ExtensionData back to devices: an answer goes to the session that asked (by correlation id), a
//! push to every session acting for its endpoint; requests left unanswered past their deadline
//! get a 504.

use std::time::Instant;

use bytes::Bytes;
use kaa_protocol::error::KpError;
use kaa_protocol::esp::ExtensionData;
use rmqtt_codec::types::QoS;

use super::{Gateway, Pending, SessionId};
use crate::metrics::ReplyKind;

impl Gateway {
    /// Routes one ExtensionData (an answer or a push) to the session(s) it belongs to.
    pub fn handle_extension_data(&self, data: ExtensionData) {
        let pending = self.state().pending.remove(&data.correlation_id);
        match pending {
            Some(p) => {
                p.extension.answered(p.started);
                // Without a request id the device asked for no answer: only errors and replies that
                // carry data (e.g. BCX's `token`, awaited by the official client) are delivered.
                let success = (200..300).contains(&data.status_code);
                let has_payload = data.payload.as_ref().is_some_and(|p| !p.is_empty());
                if p.has_request_id || !success || has_payload {
                    let (suffix, payload) = reply_body(data);
                    if self.send(p.session, format!("{}/{suffix}", p.topic), payload, p.qos) {
                        p.extension.replied(match suffix {
                            "status" => ReplyKind::Status,
                            _ => ReplyKind::Error,
                        });
                    }
                }
            }
            None => self.push(data),
        }
    }

    /// An extension-initiated message: to every session acting for the endpoint, at QoS 0.
    fn push(&self, data: ExtensionData) {
        let (Some(endpoint_id), Some(extension)) =
            (data.endpoint_id.clone(), data.extension_instance_name.clone())
        else {
            tracing::debug!(
                correlation_id = data.correlation_id,
                "dropping an ExtensionData with no endpoint or extension"
            );
            return;
        };
        let targets: Vec<(SessionId, String, String)> = {
            let state = self.state();
            let sessions = state
                .endpoints
                .get(&endpoint_id)
                .map(Vec::as_slice)
                .unwrap_or_default();
            sessions
                .iter()
                .filter_map(|id| {
                    let session = state.sessions.get(id).filter(|s| s.pushes)?;
                    let token = session.endpoint_tokens.get(&endpoint_id)?;
                    let app_version = data
                        .app_version_name
                        .clone()
                        .or_else(|| session.tokens.get(token).map(|i| i.app_version.clone()))?;
                    Some((*id, token.clone(), app_version))
                })
                .collect()
        };
        if targets.is_empty() {
            tracing::debug!(endpoint_id, "push for an endpoint with no session here");
            return;
        }
        let request_id = data.request_id.map(|r| format!("/{r}")).unwrap_or_default();
        let resource_path = data.resource_path.clone();
        let (suffix, payload) = reply_body(data);
        let metrics = self.metrics.extension(&extension);
        for (session, token, app_version) in targets {
            let topic = format!("kp1/{app_version}/{extension}/{token}{resource_path}{request_id}/{suffix}");
            if self.send(session, topic, payload.clone(), QoS::AtMostOnce) {
                metrics.replied(ReplyKind::Push);
            }
        }
    }

    /// Answers requests whose extension stayed silent past the deadline with `/error` 504.
    pub fn expire_pending(&self, now: Instant) {
        let expired: Vec<Pending> = {
            let mut state = self.state();
            let keys: Vec<String> = state
                .pending
                .iter()
                .filter(|(_, p)| p.deadline <= now)
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter().filter_map(|k| state.pending.remove(k)).collect()
        };
        for p in expired {
            self.metrics.timed_out();
            if !p.has_request_id {
                continue;
            }
            let error = KpError::new(504, "the extension did not answer in time");
            if self.send(
                p.session,
                format!("{}/error", p.topic),
                Bytes::from(error.to_json()),
                p.qos,
            ) {
                p.extension.replied(ReplyKind::Error);
            }
        }
    }
}

/// `("status", payload)` for a 2xx ExtensionData, else `("error", 1/KP error JSON)`.
fn reply_body(data: ExtensionData) -> (&'static str, Bytes) {
    if (200..300).contains(&data.status_code) {
        ("status", data.payload.map(Bytes::from).unwrap_or_default())
    } else {
        let code = u16::try_from(data.status_code).unwrap_or(500);
        let reason = data
            .reason_phrase
            .unwrap_or_else(|| format!("the extension answered {code}"));
        ("error", Bytes::from(KpError::new(code, reason).to_json()))
    }
}
