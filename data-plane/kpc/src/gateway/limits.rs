//! Limits that protect the gateway from one client, or from too many: how many connections and
//! HTTP requests a replica serves at once, and per connection how many requests await an answer,
//! how fast requests come and how many endpoint tokens it acts for. Each refusal is counted in
//! `kaa_kpc_limit_refusals_total{limit}`.
//!
//! Counts are held by RAII [`Slot`]s: a connection holds one for its life, a request in flight
//! one inside its `Pending` entry, so every way a request or connection ends (answer, expiry,
//! bus failure, socket loss) gives its place back without bookkeeping at each exit.
//!
//! Over-limit requests get 429 "Too Many Requests", including a token beyond
//! `maxTokensPerConnection`: the token itself is fine (403 would say it is forbidden, and the
//! same token works on another connection); this connection has just taken on too many.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use kaa_blueprint::config::KpcLimits;
use kaa_protocol::error::KpError;

use super::{Gateway, SessionId};
use crate::ratelimit::{Bucket, Rate};

/// Which limit refused something: the `limit` label of `kaa_kpc_limit_refusals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `maxConnections`: a CONNECT beyond it.
    Connections,
    /// `maxInFlightPerConnection`: a request beyond it.
    InFlight,
    /// `maxPublishesPerSecond`: a request over the rate.
    PublishRate,
    /// `maxTokensPerConnection`: a further endpoint token.
    Tokens,
    /// `maxPayloadBytes`: a request payload over it (MQTT and HTTP).
    Payload,
    /// `maxPacketBytes`: an MQTT packet over it (the connection is closed).
    Packet,
    /// The keepalive (at most `maxKeepaliveSecs`) passed in silence: the connection is closed.
    Keepalive,
    /// `connectTimeoutMs`: no TLS handshake and CONNECT in time.
    ConnectTimeout,
    /// `maxHttpRequestsInFlight`: a 1/KP over HTTP request beyond it.
    HttpInFlight,
}

impl Limit {
    pub(crate) const ALL: [Limit; 9] = [
        Limit::Connections,
        Limit::InFlight,
        Limit::PublishRate,
        Limit::Tokens,
        Limit::Payload,
        Limit::Packet,
        Limit::Keepalive,
        Limit::ConnectTimeout,
        Limit::HttpInFlight,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Limit::Connections => "connections",
            Limit::InFlight => "in_flight",
            Limit::PublishRate => "publish_rate",
            Limit::Tokens => "tokens",
            Limit::Payload => "payload",
            Limit::Packet => "packet",
            Limit::Keepalive => "keepalive",
            Limit::ConnectTimeout => "connect_timeout",
            Limit::HttpInFlight => "http_in_flight",
        }
    }
}

/// Things held at once, each [`Slot`] freeing its place when dropped. The limit is given at each
/// take, so that a config change applies to the next one (places already held stay held).
#[derive(Debug, Clone, Default)]
pub(crate) struct Slots {
    held: Arc<AtomicUsize>,
}

impl Slots {
    /// How many places are held.
    fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// A place, or `None` when `max` (or more) are held.
    pub(crate) fn try_take(&self, max: usize) -> Option<Slot> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.held.clone()))
    }
}

/// One place under a limit, given back on drop.
#[derive(Debug)]
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The replica-wide counts. The limits themselves are read from the live config at each check.
#[derive(Debug, Default)]
pub(crate) struct Limits {
    connections: Slots,
    http_requests: Slots,
}

/// The publish rate of `limits`; `None`: no publish rate limit.
fn publish_rate(limits: &KpcLimits) -> Option<Rate> {
    let per_second = limits.max_publishes_per_second;
    (per_second > 0).then(|| Rate::new(limits.publish_burst, f64::from(per_second)))
}

/// What one session has used of its limits.
#[derive(Debug, Default)]
pub(crate) struct SessionLimits {
    in_flight: Slots,
    /// Filled at the first request under a publish rate.
    publishes: Option<Bucket>,
}

impl SessionLimits {
    /// Requests of the session awaiting their extension's answer.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.held()
    }
}

impl Gateway {
    /// A place for one more MQTT session of this replica (any listener), held for its life;
    /// `None` (counted) when `maxConnections` are open.
    pub(crate) fn admit_connection(&self) -> Option<Slot> {
        let max = self.config().limits.max_connections;
        let slot = self.limits.connections.try_take(max);
        if slot.is_none() {
            self.count_refusal(Limit::Connections);
        }
        slot
    }

    /// A place for one more 1/KP over HTTP request, for the transport to hold until the request
    /// is answered ([`Gateway::request`]); 429 (counted) when `maxHttpRequestsInFlight` are being
    /// served. Take it before reading the body, so that waiting bodies are bounded too.
    pub fn admit_http_request(&self) -> Result<Slot, KpError> {
        let max = self.config().limits.max_http_requests_in_flight;
        self.limits.http_requests.try_take(max).ok_or_else(|| {
            self.refusal(
                Limit::HttpInFlight,
                format!(
                    "too many 1/KP over HTTP requests at once (maxHttpRequestsInFlight is {max}); try again later"
                ),
            )
        })
    }

    /// Counts a refusal by `limit` (for transports that refuse before the gateway sees the
    /// request, e.g. an HTTP body over `maxPayloadBytes`).
    pub fn count_refusal(&self, limit: Limit) {
        self.metrics.limit_refused(limit);
    }

    /// Counts a refusal and builds its 429.
    fn refusal(&self, limit: Limit, reason: String) -> KpError {
        self.count_refusal(limit);
        KpError::new(429, reason)
    }

    /// Takes one request from the session's publish bucket; `false` when it is over the rate.
    /// Every request takes one, even one refused later: bad requests cost the gateway work too.
    pub(super) fn take_publish_token(&self, session: SessionId, limits: &KpcLimits) -> bool {
        let Some(rate) = publish_rate(limits) else {
            return true;
        };
        let now = Instant::now();
        let mut state = self.state();
        match state.sessions.get_mut(&session) {
            Some(s) => {
                let bucket = s.limits.publishes.get_or_insert_with(|| rate.full(now));
                rate.try_take(bucket, now)
            }
            // The session ended meanwhile; the request fails on that later.
            None => true,
        }
    }

    /// The 429 of a request over the publish rate.
    pub(super) fn over_publish_rate(&self, limits: &KpcLimits) -> KpError {
        self.refusal(
            Limit::PublishRate,
            format!(
                "this connection sends requests faster than maxPublishesPerSecond ({}/s, publishBurst {})",
                limits.max_publishes_per_second, limits.publish_burst
            ),
        )
    }

    /// A place for one more request of the session awaiting its answer, to be kept in its
    /// `Pending` entry; 429 when `maxInFlightPerConnection` requests already wait.
    pub(super) fn take_in_flight(&self, session: SessionId, limits: &KpcLimits) -> Result<Slot, KpError> {
        let max = limits.max_in_flight_per_connection;
        let slot = match self.state().sessions.get(&session) {
            Some(s) => s.limits.in_flight.try_take(max),
            None => return Err(KpError::new(410, "the session ended")),
        };
        slot.ok_or_else(|| {
            self.refusal(
                Limit::InFlight,
                format!(
                    "too many requests of this connection await an answer (maxInFlightPerConnection is {max})"
                ),
            )
        })
    }

    /// Whether the session may take on `token`: it already acts for it, or it acts for fewer
    /// than `maxTokensPerConnection`. Checked before the token provider is asked.
    pub(super) fn check_token_room(&self, session: SessionId, token: &str) -> Result<(), KpError> {
        let max = self.config().limits.max_tokens_per_connection;
        let full = self
            .state()
            .sessions
            .get(&session)
            .is_some_and(|s| s.tokens.len() >= max && !s.tokens.contains_key(token));
        if full {
            return Err(self.refusal(
                Limit::Tokens,
                format!(
                    "this connection already acts for {max} endpoint tokens (maxTokensPerConnection); \
                     use another connection for more"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_refuse_beyond_the_limit_and_free_on_drop() {
        let slots = Slots::default();
        let a = slots.try_take(2);
        let b = slots.try_take(2);
        assert!(a.is_some() && b.is_some());
        assert!(slots.try_take(2).is_none(), "two of two are held");
        drop(a);
        let c = slots.try_take(2);
        assert!(c.is_some(), "a dropped slot is free again");
        assert!(slots.try_take(2).is_none());
        assert!(
            slots.try_take(3).is_some(),
            "a raised limit applies to the next take"
        );
        assert!(
            slots.try_take(1).is_none(),
            "a lowered one refuses until enough are freed"
        );
    }

    #[test]
    fn every_limit_has_its_own_label() {
        let labels: std::collections::BTreeSet<_> = Limit::ALL.iter().map(|l| l.label()).collect();
        assert_eq!(labels.len(), Limit::ALL.len());
        // The metrics index their counters by discriminant.
        for (i, limit) in Limit::ALL.into_iter().enumerate() {
            assert_eq!(limit as usize, i, "{limit:?}");
        }
    }
}
