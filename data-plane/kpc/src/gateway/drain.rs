//! Winding a replica down (rolling upgrade, scale-down): once draining, new requests are refused
//! with 503 while the ones in flight are still answered; each MQTT session ends as soon as it
//! has nothing in flight (see `mqtt::session`), and `Kpc::shutdown` waits for that, up to the
//! drain timeout.

use std::sync::atomic::Ordering;

use super::{Gateway, SessionId};

impl Gateway {
    /// From now on, requests are refused with 503.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Whether a request of `session` awaits its extension's answer.
    pub fn has_pending(&self, session: SessionId) -> bool {
        self.state()
            .sessions
            .get(&session)
            .is_some_and(|s| s.limits.in_flight() > 0)
    }

    /// Whether any request of any session (HTTP ones included) awaits an answer.
    pub fn any_pending(&self) -> bool {
        !self.state().pending.is_empty()
    }
}
