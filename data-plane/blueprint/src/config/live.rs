//! [`Live`]: a service's config that can be replaced while it runs (17/SCMP, `kaa up`'s file
//! watch). Readers take a snapshot once per request ([`Live::get`]), so a request in flight
//! finishes on the config it started with while the next one sees the new config.

use std::sync::Arc;

use arc_swap::ArcSwap;

/// A shared, replaceable config. Clones share the value: a [`Live::set`] on one is seen by all.
/// Reads are lock-free (an atomic load and a reference count); nothing is held across an await.
#[derive(Debug, Default)]
pub struct Live<T>(Arc<ArcSwap<T>>);

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Live(self.0.clone())
    }
}

impl<T> Live<T> {
    pub fn new(value: T) -> Live<T> {
        Live(Arc::new(ArcSwap::from_pointee(value)))
    }

    /// The current config: take it once per request and use that snapshot throughout.
    pub fn get(&self) -> Arc<T> {
        self.0.load_full()
    }

    /// Replaces the config for every later [`Live::get`].
    pub fn set(&self, value: T) {
        self.0.store(Arc::new(value));
    }
}

impl<T> From<T> for Live<T> {
    fn from(value: T) -> Live<T> {
        Live::new(value)
    }
}

#[cfg(test)]
mod tests {
    use super::Live;

    #[test]
    fn a_snapshot_stays_while_later_reads_see_the_new_value() {
        let live = Live::new(1);
        let reader = live.clone();
        let snapshot = reader.get();
        live.set(2);
        assert_eq!(*snapshot, 1, "a request in flight keeps its config");
        assert_eq!(*reader.get(), 2, "clones share the value");
    }
}
