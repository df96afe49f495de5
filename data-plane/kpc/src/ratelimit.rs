//! Failed-CONNECT rate limiting per source address: a token bucket per address, in a map of
//! bounded size so that a flood from many addresses costs bounded memory.
//!
//! A CONNECT takes one token before the credential provider is asked and gives it back unless the
//! provider refused the client; an empty bucket refuses the CONNECT without asking at all. Taking
//! the token up front bounds a burst of parallel guesses by the bucket size, not by the number of
//! CONNECTs in flight. IPv6 addresses are counted per /64, the block one subscriber usually gets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Addresses tracked at most; beyond it the least recently failed one is forgotten.
pub(crate) const MAX_TRACKED: usize = 10_000;

#[derive(Debug)]
pub(crate) struct FailedConnects {
    /// Bucket size and refill per minute; 0 disables the limit.
    per_minute: u32,
    max_tracked: usize,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl FailedConnects {
    pub(crate) fn new(per_minute: u32, max_tracked: usize) -> Self {
        FailedConnects {
            per_minute,
            max_tracked: max_tracked.max(1),
            buckets: Mutex::default(),
        }
    }

    fn buckets(&self) -> MutexGuard<'_, HashMap<IpAddr, Bucket>> {
        // The map holds counters only; after a panic elsewhere they are still usable.
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a token for a CONNECT from `addr`; `false` means over the limit: refuse it.
    pub(crate) fn try_acquire(&self, addr: IpAddr) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let key = key(addr);
        let now = Instant::now();
        let capacity = f64::from(self.per_minute);
        let mut buckets = self.buckets();
        if let Some(bucket) = buckets.get_mut(&key) {
            self.refill(bucket, now);
            if bucket.tokens < 1.0 {
                return false;
            }
            bucket.tokens -= 1.0;
            return true;
        }
        if buckets.len() >= self.max_tracked {
            self.evict(&mut buckets, now);
        }
        buckets.insert(
            key,
            Bucket {
                tokens: capacity - 1.0,
                updated: now,
            },
        );
        true
    }

    /// Gives back the token of a CONNECT that did not fail (accepted, or the provider was down).
    pub(crate) fn refund(&self, addr: IpAddr) {
        if self.per_minute == 0 {
            return;
        }
        let capacity = f64::from(self.per_minute);
        if let Some(bucket) = self.buckets().get_mut(&key(addr)) {
            bucket.tokens = (bucket.tokens + 1.0).min(capacity);
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let capacity = f64::from(self.per_minute);
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * capacity / 60.0).min(capacity);
        bucket.updated = now;
    }

    /// Makes room: buckets that refilled completely are as good as absent; if none did, the one
    /// updated longest ago goes.
    fn evict(&self, buckets: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        buckets.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * per_second < capacity
        });
        if buckets.len() >= self.max_tracked {
            let oldest = buckets.iter().min_by_key(|(_, b)| b.updated).map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                buckets.remove(&oldest);
            }
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets().len()
    }
}

/// The unit an address is counted in: itself for IPv4, its /64 for IPv6.
fn key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn a_bucket_empties_and_refunds_refill_it() {
        let limiter = FailedConnects::new(3, 100);
        let a = ip("192.0.2.1");
        assert!(limiter.try_acquire(a) && limiter.try_acquire(a) && limiter.try_acquire(a));
        assert!(
            !limiter.try_acquire(a),
            "the fourth failure in a minute is over the limit"
        );
        assert!(
            limiter.try_acquire(ip("192.0.2.2")),
            "other addresses are not affected"
        );
        limiter.refund(a);
        assert!(limiter.try_acquire(a));
        assert!(!limiter.try_acquire(a));
    }

    #[test]
    fn zero_disables_the_limit() {
        let limiter = FailedConnects::new(0, 1);
        for _ in 0..100 {
            assert!(limiter.try_acquire(ip("192.0.2.1")));
        }
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn the_map_never_grows_past_its_bound() {
        let limiter = FailedConnects::new(2, 16);
        for i in 0..1000u32 {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(limiter.try_acquire(addr));
            assert!(limiter.tracked() <= 16);
        }
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let limiter = FailedConnects::new(1, 100);
        assert!(limiter.try_acquire(ip("2001:db8:1:2::1")));
        assert!(!limiter.try_acquire(ip("2001:db8:1:2:ffff::9")));
        assert!(limiter.try_acquire(ip("2001:db8:1:3::1")));
        assert!(limiter.try_acquire(ip("::ffff:192.0.2.7")));
        assert!(!limiter.try_acquire(ip("192.0.2.7")));
    }
}
