//! Endpoint identification: endpoint token -> endpoint id, through the 16/ECAP provider on the bus.
//!
//! KPC never holds the credential store. Answers are cached twice: per session (in the gateway)
//! and here, replica-wide for `limits.tokenCacheTtlMs`, so that reconnects and many sessions of
//! one endpoint cost one ECAP request per TTL. A revocation event drops the named token ids from
//! both at once; a [`TokenResolver::generation`] counter keeps an answer that was in flight across
//! a revocation from being cached.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kaa_bus::{Bus, BusError};
use kaa_protocol::avro::AvroRecord;
use kaa_protocol::ecap::{EndpointTokenValidationRequest, EndpointTokenValidationResponse};
use kaa_protocol::{now_millis, subject};

/// Tokens cached replica-wide at most; when full, expired entries go, and if none did the new
/// answer is simply not cached.
const MAX_CACHED: usize = 100_000;

/// A token the provider accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identified {
    pub endpoint_id: String,
    pub token_id: String,
    /// The application the token was validated for.
    pub application: String,
    pub app_version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("unknown or invalid endpoint token")]
    Unknown,
    /// Known but not usable (suspended, revoked): the provider's reason.
    #[error("{0}")]
    Refused(String),
    #[error("token provider unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug)]
pub struct TokenResolver {
    bus: Bus,
    subject: String,
    timeout: Duration,
    ttl: Duration,
    /// application -> token -> answer.
    cache: Mutex<HashMap<String, HashMap<String, Cached>>>,
    generation: AtomicU64,
}

#[derive(Debug, Clone)]
struct Cached {
    endpoint_id: String,
    token_id: String,
    at: Instant,
}

impl TokenResolver {
    pub fn new(bus: Bus, provider: String, timeout: Duration, ttl: Duration) -> Self {
        TokenResolver {
            bus,
            subject: subject::ecap_token_request(&provider),
            timeout,
            ttl,
            cache: Mutex::default(),
            generation: AtomicU64::new(0),
        }
    }

    fn cache(&self) -> MutexGuard<'_, HashMap<String, HashMap<String, Cached>>> {
        // A cache: after a panic elsewhere its entries are still valid answers.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes whenever tokens are revoked. Read it before resolving and compare after: if it
    /// moved, the answer may predate the revocation and must not be kept.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub async fn resolve(&self, app: &str, app_version: &str, token: &str) -> Result<Identified, TokenError> {
        let identified = |c: Cached| Identified {
            endpoint_id: c.endpoint_id,
            token_id: c.token_id,
            application: app.to_owned(),
            app_version: app_version.to_owned(),
        };
        if let Some(hit) = self.cached(app, token) {
            return Ok(identified(hit));
        }
        let generation = self.generation();
        let answer = self.ask(app, token).await?;
        let mut cache = self.cache();
        // Checked under the lock that `revoke` bumps it under: either the revocation sees the
        // entry and drops it, or this sees the new generation and does not insert.
        if self.ttl > Duration::ZERO && self.generation() == generation && make_room(&mut cache, self.ttl) {
            cache
                .entry(app.to_owned())
                .or_default()
                .insert(token.to_owned(), answer.clone());
        }
        Ok(identified(answer))
    }

    fn cached(&self, app: &str, token: &str) -> Option<Cached> {
        let cache = self.cache();
        let hit = cache.get(app)?.get(token)?;
        (hit.at.elapsed() < self.ttl).then(|| hit.clone())
    }

    async fn ask(&self, app: &str, token: &str) -> Result<Cached, TokenError> {
        let request = EndpointTokenValidationRequest {
            correlation_id: format!("ecap-{}", uuid::Uuid::new_v4().simple()),
            timestamp: now_millis(),
            timeout: i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX),
            app_name: app.to_owned(),
            token: token.to_owned(),
        };
        let reply = self
            .bus
            .request(&self.subject, Bytes::from(request.to_avro()), self.timeout)
            .await
            .map_err(|e: BusError| TokenError::Unavailable(e.to_string()))?;
        let response = EndpointTokenValidationResponse::from_avro(&reply.payload)
            .map_err(|e| TokenError::Unavailable(format!("malformed ECAP response: {e}")))?;
        match response {
            EndpointTokenValidationResponse {
                status_code: 200..=299,
                endpoint_id: Some(endpoint_id),
                token_id,
                ..
            } => Ok(Cached {
                token_id: token_id.unwrap_or_else(|| endpoint_id.clone()),
                endpoint_id,
                at: Instant::now(),
            }),
            EndpointTokenValidationResponse {
                status_code: 403,
                reason_phrase,
                ..
            } => Err(TokenError::Refused(
                reason_phrase.unwrap_or_else(|| "endpoint token not usable".into()),
            )),
            EndpointTokenValidationResponse {
                status_code: 400..=499,
                ..
            } => Err(TokenError::Unknown),
            other => Err(TokenError::Unavailable(format!(
                "provider answered {}: {}",
                other.status_code,
                other.reason_phrase.unwrap_or_default()
            ))),
        }
    }

    /// Forgets every cached token with one of these ids; returns how many entries went.
    pub fn revoke(&self, token_ids: &HashSet<&str>) -> usize {
        let mut cache = self.cache();
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut dropped = 0;
        cache.retain(|_, tokens| {
            let before = tokens.len();
            tokens.retain(|_, c| !token_ids.contains(c.token_id.as_str()));
            dropped += before - tokens.len();
            !tokens.is_empty()
        });
        dropped
    }
}

/// Whether one more entry fits, after dropping expired ones if the cache is full.
fn make_room(cache: &mut HashMap<String, HashMap<String, Cached>>, ttl: Duration) -> bool {
    let len = |c: &HashMap<String, HashMap<String, Cached>>| c.values().map(HashMap::len).sum::<usize>();
    if len(cache) < MAX_CACHED {
        return true;
    }
    cache.retain(|_, tokens| {
        tokens.retain(|_, c| c.at.elapsed() < ttl);
        !tokens.is_empty()
    });
    len(cache) < MAX_CACHED
}
