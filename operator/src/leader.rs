//! Leader election with a `coordination.k8s.io/v1` Lease, so that two operator replicas are safe:
//! only the Lease's holder reconciles.
//!
//! The protocol is client-go's: the holder renews `renewTime` every `renew_every`; a candidate
//! takes the Lease over when its holder is empty or has not renewed for `lease_duration` as
//! measured on the candidate's own clock (from when it first saw the current record), so clock
//! skew between replicas does not matter. Every write carries the resourceVersion it read, so
//! two candidates never both win. A leader that cannot renew within `renew_deadline` (shorter
//! than the duration) stops reconciling before anyone else may take over; on shutdown it
//! releases the Lease so that the next leader need not wait.
//!
//! A small module on kube's `Api<Lease>` rather than a crate: the maintained ones pin other kube
//! versions.

use std::{future::Future, pin::pin, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{PostParams, Resource},
};
use tokio::time::Instant;

/// How the Lease is named and timed.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    /// This replica's name in `holderIdentity` (the pod name in a cluster).
    pub identity: String,
    /// How long a holder that stopped renewing keeps the Lease.
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long stops reconciling (< `lease_duration`).
    pub renew_deadline: Duration,
    /// How often the leader renews and a candidate retries.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// client-go's defaults (15 s / 10 s / 2 s).
    pub fn new(name: &str, namespace: &str, identity: &str) -> LeaseSettings {
        LeaseSettings {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            identity: identity.to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// One replica's view of the Lease.
#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The last record seen from another holder (holder, renewTime, resourceVersion) and when
    /// this replica first saw it: the local clock decides expiry.
    observed: Option<(String, Instant)>,
}

/// Why [`Elector::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The shutdown future completed.
    Shutdown,
    /// The work completed on its own.
    WorkEnded,
}

impl Elector {
    pub fn new(client: Client, settings: LeaseSettings) -> Elector {
        Elector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: None,
        }
    }

    /// One attempt to acquire or renew the Lease: `Ok(true)` while this replica holds it.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let Some(current) = self.api.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now.clone(), now, 0)),
            };
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        let replacement = if holder == self.settings.identity {
            // Renewal: same acquireTime, new renewTime.
            self.spec(
                spec.acquire_time.clone().unwrap_or_else(|| now.clone()),
                now,
                transitions,
            )
        } else if holder.is_empty() || self.expired(&current, &spec) {
            self.spec(now.clone(), now, transitions.saturating_add(1))
        } else {
            return Ok(false);
        };
        let mut lease = current;
        lease.spec = Some(replacement);
        // `replace` sends the resourceVersion read above: a concurrent writer makes it a 409.
        let name = self.settings.name.clone();
        conflict_is_false(self.api.replace(&name, &PostParams::default(), &lease).await)
    }

    /// Gives the Lease up if this replica holds it (shutdown), so that another takes over at
    /// once instead of after `lease_duration`.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.acquire_time = None;
        spec.renew_time = None;
        let name = self.settings.name.clone();
        conflict_is_false(self.api.replace(&name, &PostParams::default(), &lease).await).map(|_| ())
    }

    /// Runs `work` only while this replica leads: waits for the Lease, runs `work()` while
    /// renewing, drops it when the Lease is lost (and campaigns again), and releases the Lease
    /// when `shutdown` completes or `work` ends.
    pub async fn run<W, F>(&mut self, mut work: W, shutdown: impl Future<Output = ()>) -> Ended
    where
        W: FnMut() -> F,
        F: Future<Output = ()>,
    {
        let mut shutdown = pin!(shutdown);
        loop {
            // Candidate: retry until the Lease is ours.
            loop {
                match self.try_acquire_or_renew().await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(lease = %self.settings.name, "cannot read or write the Lease: {e}")
                    }
                }
                tokio::select! {
                    () = &mut shutdown => return Ended::Shutdown,
                    () = tokio::time::sleep(self.settings.retry_period) => {}
                }
            }
            tracing::info!(lease = %self.settings.name, identity = %self.settings.identity, "leading");
            let mut renewed = Instant::now();
            let mut work = Box::pin(work());
            let ended = loop {
                tokio::select! {
                    () = &mut work => break Some(Ended::WorkEnded),
                    () = &mut shutdown => break Some(Ended::Shutdown),
                    () = tokio::time::sleep(self.settings.retry_period) => {}
                }
                match self.try_acquire_or_renew().await {
                    Ok(true) => renewed = Instant::now(),
                    Ok(false) => break None,
                    Err(e) => {
                        tracing::warn!(lease = %self.settings.name, "cannot renew the Lease: {e}");
                        if renewed.elapsed() >= self.settings.renew_deadline {
                            break None;
                        }
                    }
                }
            };
            // Lost or ending: the work (the controller) stops here, before anyone else may lead.
            drop(work);
            if let Some(ended) = ended {
                if let Err(e) = self.release().await {
                    tracing::warn!(lease = %self.settings.name, "cannot release the Lease: {e}");
                }
                return ended;
            }
            tracing::warn!(lease = %self.settings.name, "lost the Lease: stopped reconciling");
        }
    }

    fn spec(&self, acquire_time: MicroTime, renew_time: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.settings.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX),
            ),
            acquire_time: Some(acquire_time),
            renew_time: Some(renew_time),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Whether another holder's record has gone unrenewed for its lease duration, by this
    /// replica's clock.
    fn expired(&mut self, lease: &Lease, spec: &LeaseSpec) -> bool {
        let record = format!(
            "{:?}/{:?}/{:?}",
            spec.holder_identity,
            spec.renew_time.as_ref().map(|t| t.0),
            lease.meta().resource_version
        );
        let first_seen = match &self.observed {
            Some((seen, at)) if *seen == record => *at,
            _ => {
                let now = Instant::now();
                self.observed = Some((record, now));
                now
            }
        };
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.settings.lease_duration, Duration::from_secs);
        first_seen.elapsed() >= duration
    }
}

/// A write that lost a race (409) means "not the leader", not an error.
fn conflict_is_false<T>(result: Result<T, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
