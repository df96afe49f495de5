//! Token buckets: the arithmetic ([`Rate`], [`Bucket`]), shared by the failed-CONNECT limit here
//! and the per-connection publish rate (`gateway::limits`).
//!
//! Failed-CONNECT rate limiting is per source address: a bucket per address, in a map of bounded
//! size so that a flood from many addresses costs bounded memory. A CONNECT takes one token
//! before the credential provider is asked and gives it back unless the provider refused the
//! client; an empty bucket refuses the CONNECT without asking at all. Taking the token up front
//! bounds a burst of parallel guesses by the bucket size, not by the number of CONNECTs in flight.
//! IPv6 addresses are counted per /64, the block one subscriber usually gets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// A bucket's size and refill speed. Kept apart from [`Bucket`] so that thousands of buckets
/// sharing one rate do not each store it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rate {
    capacity: f64,
    per_second: f64,
}

/// One bucket's state: tokens left (fractional, so slow rates refill smoothly) as of `updated`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Rate {
    /// Holds `capacity` tokens and refills `per_second` of them a second.
    pub(crate) fn new(capacity: u32, per_second: f64) -> Rate {
        Rate {
            capacity: f64::from(capacity),
            per_second,
        }
    }

    /// A bucket that starts full.
    pub(crate) fn full(&self, now: Instant) -> Bucket {
        Bucket {
            tokens: self.capacity,
            updated: now,
        }
    }

    /// Takes a token if one is left; `false`: over the rate.
    pub(crate) fn try_take(&self, bucket: &mut Bucket, now: Instant) -> bool {
        bucket.tokens = self.tokens_at(bucket, now);
        bucket.updated = now;
        if bucket.tokens < 1.0 {
            return false;
        }
        bucket.tokens -= 1.0;
        true
    }

    /// Puts a token back (never beyond the capacity).
    pub(crate) fn give_back(&self, bucket: &mut Bucket) {
        bucket.tokens = (bucket.tokens + 1.0).min(self.capacity);
    }

    /// Whether the bucket has refilled completely by `now`: as good as a new one.
    fn is_full_at(&self, bucket: &Bucket, now: Instant) -> bool {
        self.tokens_at(bucket, now) >= self.capacity
    }

    fn tokens_at(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.per_second).min(self.capacity)
    }
}

/// Addresses tracked at most; beyond it the least recently failed one is forgotten.
pub(crate) const MAX_TRACKED: usize = 10_000;

#[derive(Debug)]
pub(crate) struct FailedConnects {
    /// Bucket size and refill per minute; `None`: no limit.
    rate: Option<Rate>,
    max_tracked: usize,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl FailedConnects {
    /// `per_minute` failed CONNECTs per address and minute (0: no limit).
    pub(crate) fn new(per_minute: u32, max_tracked: usize) -> Self {
        FailedConnects {
            rate: (per_minute > 0).then(|| Rate::new(per_minute, f64::from(per_minute) / 60.0)),
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
        let Some(rate) = self.rate else {
            return true;
        };
        let key = key(addr);
        let now = Instant::now();
        let mut buckets = self.buckets();
        if let Some(bucket) = buckets.get_mut(&key) {
            return rate.try_take(bucket, now);
        }
        if buckets.len() >= self.max_tracked {
            self.evict(&rate, &mut buckets, now);
        }
        let mut bucket = rate.full(now);
        rate.try_take(&mut bucket, now);
        buckets.insert(key, bucket);
        true
    }

    /// Gives back the token of a CONNECT that did not fail (accepted, or the provider was down).
    pub(crate) fn refund(&self, addr: IpAddr) {
        let Some(rate) = self.rate else {
            return;
        };
        if let Some(bucket) = self.buckets().get_mut(&key(addr)) {
            rate.give_back(bucket);
        }
    }

    /// Makes room: buckets that refilled completely are as good as absent; if none did, the one
    /// updated longest ago goes.
    fn evict(&self, rate: &Rate, buckets: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        buckets.retain(|_, b| !rate.is_full_at(b, now));
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
    fn a_rate_refills_with_time_up_to_its_capacity() {
        let rate = Rate::new(2, 10.0);
        let start = Instant::now();
        let mut bucket = rate.full(start);
        assert!(rate.try_take(&mut bucket, start) && rate.try_take(&mut bucket, start));
        assert!(!rate.try_take(&mut bucket, start), "a burst of 2, then empty");
        let later = start + std::time::Duration::from_millis(100);
        assert!(
            rate.try_take(&mut bucket, later),
            "10/s: one token back after 100 ms"
        );
        assert!(!rate.try_take(&mut bucket, later));
        let much_later = start + std::time::Duration::from_secs(60);
        assert!(rate.is_full_at(&bucket, much_later));
        assert!(rate.try_take(&mut bucket, much_later) && rate.try_take(&mut bucket, much_later));
        assert!(
            !rate.try_take(&mut bucket, much_later),
            "never more than the capacity"
        );
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
