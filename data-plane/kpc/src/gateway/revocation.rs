//! 16/ECAP revocations applied to this replica's sessions: revoked endpoint tokens are forgotten
//! (sessions left acting for no endpoint end), sessions of a revoked client credential end at
//! once, and recently revoked credentials are remembered so that a CONNECT authenticated across
//! the revocation cannot open a session after it.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use super::{End, Gateway, State, unlist};

/// Recently revoked credentials kept at most (they also expire, see `forget_after`).
const RECENTLY_REVOKED: usize = 4096;

impl Gateway {
    /// Applies an `EndpointTokenRevokedEvent`: the tokens are forgotten everywhere in this replica,
    /// each session loses the endpoint they named (announced as disconnected), and a session left
    /// acting for no endpoint is ended. Returns how many sessions were ended.
    pub async fn revoke_tokens(&self, endpoint_id: &str, token_ids: &[String]) -> usize {
        let ids: HashSet<&str> = token_ids.iter().map(String::as_str).collect();
        // First the shared cache (bumping the generation), then the sessions: see `identify`.
        let cached = self.tokens.revoke(&ids);
        let mut lost = BTreeMap::new();
        let mut ended = 0;
        {
            let mut state = self.state();
            let State {
                sessions, endpoints, ..
            } = &mut *state;
            for (&id, session) in sessions.iter_mut() {
                let revoked: Vec<String> = session
                    .tokens
                    .iter()
                    .filter(|(_, i)| ids.contains(i.token_id.as_str()))
                    .map(|(token, _)| token.clone())
                    .collect();
                if revoked.is_empty() {
                    continue;
                }
                for token in revoked {
                    let Some(gone) = session.tokens.remove(&token) else {
                        continue;
                    };
                    if session.endpoint_tokens.get(&gone.endpoint_id) != Some(&token) {
                        continue;
                    }
                    // Another token of this session may still name the endpoint.
                    let other = session
                        .tokens
                        .iter()
                        .find(|(_, i)| i.endpoint_id == gone.endpoint_id)
                        .map(|(t, _)| t.clone());
                    match other {
                        Some(other) => {
                            session.endpoint_tokens.insert(gone.endpoint_id.clone(), other);
                        }
                        None => {
                            session.endpoint_tokens.remove(&gone.endpoint_id);
                            if session.announced.remove(&gone.endpoint_id).is_some() {
                                unlist(endpoints, &gone.endpoint_id, id);
                                lost.insert(gone.endpoint_id.clone(), gone.app_version.clone());
                            }
                        }
                    }
                }
                if session.endpoint_tokens.is_empty() {
                    session.end(End::Revoked);
                    ended += 1;
                }
            }
        }
        tracing::info!(
            endpoint_id,
            token_ids = ?token_ids,
            cached,
            sessions_ended = ended,
            "endpoint tokens revoked"
        );
        self.announce_disconnected(lost).await;
        ended
    }

    /// Applies a `ClientCredentialRevokedEvent`: every session of that credential ends now, and a
    /// CONNECT authenticated just before the event is refused. Returns how many sessions ended.
    pub fn revoke_credential(&self, credential_id: &str) -> usize {
        let mut state = self.state();
        {
            let mut recent = self.recently_revoked();
            if recent.len() >= RECENTLY_REVOKED {
                recent.pop_front();
            }
            recent.push_back((Instant::now(), credential_id.to_owned()));
        }
        let mut ended = 0;
        for session in state.sessions.values_mut() {
            if session
                .client
                .as_ref()
                .is_some_and(|c| c.credential_id == credential_id)
            {
                session.end(End::Revoked);
                ended += 1;
            }
        }
        tracing::info!(credential_id, sessions_ended = ended, "client credential revoked");
        ended
    }

    fn recently_revoked(&self) -> MutexGuard<'_, VecDeque<(Instant, String)>> {
        self.recently_revoked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How long a revoked credential is remembered: longer than any CONNECT can be in flight.
    fn forget_after(&self) -> Duration {
        Duration::from_millis(self.config().limits.auth_timeout_ms.saturating_mul(2))
            .max(Duration::from_secs(10))
    }

    /// Whether `credential_id` was revoked within `forget_after` (older entries are
    /// dropped on the way).
    pub(super) fn was_revoked_lately(&self, credential_id: &str) -> bool {
        let mut recent = self.recently_revoked();
        let forget_after = self.forget_after();
        while recent.front().is_some_and(|(at, _)| at.elapsed() > forget_after) {
            recent.pop_front();
        }
        recent.iter().any(|(_, id)| id == credential_id)
    }
}
