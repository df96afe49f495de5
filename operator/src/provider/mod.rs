//! The config provider (17/SCMP; Tekton's role in Kaa): serves every service instance's current
//! config over HTTP, announces changes on NATS, and follows which version each replica runs.
//!
//! # Layout
//! - this file: [`Provider`], the configs it serves per Blueprint, the token check, the change diff.
//! - [`http`]: `GET /tekton/api/v1/service-instances/{instance}/config` (bearer token).
//! - `nats`: one background connection per NATS URL: announcements owed and sent, reports received.
//! - [`rollout`]: replicas' reports -> the `ConfigApplied` aggregate -> Blueprint status.
//! - [`cluster`]: what a reconcile does for the provider (the token Secret, feeding the configs).
//! - [`file`]: `kaa-operator provide`: the same provider for a Blueprint file, without Kubernetes.
//!
//! Nothing here blocks on NATS: feeding records what is owed and wakes the connection's task.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, Mutex, MutexGuard},
};

use kaa_blueprint::config::ServiceConfig;
use serde::Serialize;
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;

pub mod cluster;
pub mod file;
pub mod http;
mod nats;
pub mod rollout;

use rollout::Rollout;

/// The path of an instance's config in the provider's HTTP API.
pub fn config_path(instance: &str) -> String {
    format!("/tekton/api/v1/service-instances/{instance}/config")
}

/// A Blueprint, as `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlueprintKey {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for BlueprintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One instance's config as served: the JSON the ConfigMap holds, and its version.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub config: serde_json::Value,
    pub version: String,
}

/// What the provider knows of one Blueprint.
#[derive(Clone)]
struct Entry {
    generation: i64,
    nats_url: String,
    /// The config-reader token; `None`: every request is refused.
    token: Option<String>,
    instances: BTreeMap<String, Served>,
}

/// The answer to `GET .../service-instances/{instance}/config`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigResponse {
    pub service_instance_name: String,
    pub blueprint: String,
    pub generation: i64,
    pub version: String,
    pub config: serde_json::Value,
}

/// Why a config request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("unknown token")]
    Unauthorized,
    #[error("no service instance `{instance}` in Blueprint {blueprint}")]
    NotFound { instance: String, blueprint: String },
}

/// What one feed changed: instances whose version is new, and instances gone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub upserted: Vec<String>,
    pub deleted: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.upserted.is_empty() && self.deleted.is_empty()
    }
}

/// The provider; cheap to clone (clones share everything).
#[derive(Clone)]
pub struct Provider {
    inner: Arc<Inner>,
}

struct Inner {
    /// `originatorReplicaId` of the broadcasts.
    replica_id: String,
    entries: Mutex<BTreeMap<BlueprintKey, Entry>>,
    links: nats::Links,
    /// The rollout each Blueprint last had, to tell a change.
    rollouts: Mutex<BTreeMap<BlueprintKey, Rollout>>,
    changed: mpsc::UnboundedSender<BlueprintKey>,
    changes: Mutex<Option<mpsc::UnboundedReceiver<BlueprintKey>>>,
}

impl fmt::Debug for Provider {
    // Never the tokens.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("replica_id", &self.inner.replica_id)
            .finish_non_exhaustive()
    }
}

impl Default for Provider {
    /// A provider announcing as this host (`HOSTNAME`: the pod name in Kubernetes).
    fn default() -> Self {
        Provider::new(&std::env::var("HOSTNAME").unwrap_or_else(|_| "kaa-operator".to_owned()))
    }
}

/// Locks, shrugging off poisoning: every critical section leaves its map consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Provider {
    pub fn new(replica_id: &str) -> Provider {
        let (changed, changes) = mpsc::unbounded_channel();
        Provider {
            inner: Arc::new(Inner {
                replica_id: replica_id.to_owned(),
                entries: Mutex::default(),
                links: nats::Links::default(),
                rollouts: Mutex::default(),
                changed,
                changes: Mutex::new(Some(changes)),
            }),
        }
    }

    /// Forgets every Blueprint `keep` refuses (deleted ones): their configs are no longer served
    /// and their tokens no longer accepted.
    pub fn retain(&self, keep: impl Fn(&BlueprintKey) -> bool) {
        lock(&self.inner.entries).retain(|key, _| keep(key));
        lock(&self.inner.rollouts).retain(|key, _| keep(key));
    }

    /// Serves `configs` (one per instance) for `key` from now on, and announces on `nats_url`
    /// what changed since the last feed (every instance, the first time). Must run in a Tokio
    /// runtime: the first feed for a NATS URL starts its connection task.
    pub fn feed<'a>(
        &self,
        key: &BlueprintKey,
        generation: i64,
        nats_url: &str,
        token: Option<String>,
        configs: impl IntoIterator<Item = &'a ServiceConfig>,
    ) -> Changes {
        let instances: BTreeMap<String, Served> = configs
            .into_iter()
            .map(|c| {
                let served = Served {
                    // Plain data: cannot fail; `Null` would be refused by the services, loudly.
                    config: serde_json::to_value(c).unwrap_or_default(),
                    version: c.version(),
                };
                (c.instance().to_owned(), served)
            })
            .collect();
        let changes = {
            let mut entries = lock(&self.inner.entries);
            let previous = entries.get(key).filter(|e| e.nats_url == nats_url);
            let changes = diff(previous.map(|e| &e.instances), &instances);
            entries.insert(
                key.clone(),
                Entry {
                    generation,
                    nats_url: nats_url.to_owned(),
                    token,
                    instances,
                },
            );
            changes
        };
        if !changes.is_empty() {
            tracing::info!(blueprint = %key, generation, upserted = ?changes.upserted, deleted = ?changes.deleted, "config changed");
        }
        let link = self.link(nats_url);
        link.owe(&changes);
        // The reconcile that fed writes the status itself: remember, do not notify.
        if let Some(rollout) = self.rollout(key) {
            lock(&self.inner.rollouts).insert(key.clone(), rollout);
        }
        changes
    }

    /// The config of `instance` in the Blueprint `token` reads.
    pub fn config(&self, token: &str, instance: &str) -> Result<ConfigResponse, Refused> {
        let entries = lock(&self.inner.entries);
        // Every token is compared, in constant time each: timing tells nothing about any.
        let mut found = None;
        for (key, entry) in entries.iter() {
            let matches = entry
                .token
                .as_deref()
                .is_some_and(|t| bool::from(t.as_bytes().ct_eq(token.as_bytes())));
            if matches && found.is_none() {
                found = Some((key, entry));
            }
        }
        let (key, entry) = found.ok_or(Refused::Unauthorized)?;
        let served = entry.instances.get(instance).ok_or_else(|| Refused::NotFound {
            instance: instance.to_owned(),
            blueprint: key.to_string(),
        })?;
        Ok(ConfigResponse {
            service_instance_name: instance.to_owned(),
            blueprint: key.to_string(),
            generation: entry.generation,
            version: served.version.clone(),
            config: served.config.clone(),
        })
    }

    /// What `key`'s instances run now, by their replicas' reports; `None` before its first feed.
    pub fn rollout(&self, key: &BlueprintKey) -> Option<Rollout> {
        let entry = lock(&self.inner.entries).get(key).cloned()?;
        let link = self.link(&entry.nats_url);
        let reports = link.reports();
        Some(rollout::rollout(
            entry.generation,
            &entry.instances,
            &reports,
            link.connected(),
        ))
    }

    /// Blueprints whose rollout changed since it was last computed (by a report, a replica
    /// going silent, or the NATS connection): one receiver, handed out once.
    pub fn take_changes(&self) -> Option<mpsc::UnboundedReceiver<BlueprintKey>> {
        lock(&self.inner.changes).take()
    }

    /// Recomputes the rollout of every Blueprint on `nats_url`; notifies those that changed.
    fn refresh(&self, nats_url: &str) {
        let keys: Vec<BlueprintKey> = lock(&self.inner.entries)
            .iter()
            .filter(|(_, e)| e.nats_url == nats_url)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let Some(rollout) = self.rollout(&key) else {
                continue;
            };
            let previous = lock(&self.inner.rollouts).insert(key.clone(), rollout.clone());
            if previous.as_ref() != Some(&rollout) {
                // Nobody listening (no controller yet): the next reconcile reads it anyway.
                let _ = self.inner.changed.send(key);
            }
        }
    }

    fn link(&self, nats_url: &str) -> Arc<nats::Link> {
        self.inner
            .links
            .get_or_start(nats_url, &self.inner.replica_id, Arc::downgrade(&self.inner))
    }
}

/// Instances with a new or changed version, and instances no longer there.
fn diff(before: Option<&BTreeMap<String, Served>>, after: &BTreeMap<String, Served>) -> Changes {
    let empty = BTreeMap::new();
    let before = before.unwrap_or(&empty);
    Changes {
        upserted: after
            .iter()
            .filter(|(name, s)| before.get(*name).is_none_or(|b| b.version != s.version))
            .map(|(name, _)| name.clone())
            .collect(),
        deleted: before
            .keys()
            .filter(|name| !after.contains_key(*name))
            .cloned()
            .collect(),
    }
}
