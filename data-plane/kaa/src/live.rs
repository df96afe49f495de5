//! Changing the running instances' configs (17/SCMP in `kaa run`, the Blueprint file watch in
//! `kaa up`): [`LiveConfigs::apply`] checks each offered config and swaps it into the instance's
//! [`Live`] handle, so the next request reads it while requests in flight finish on the old one.
//!
//! A config is applied when it changes nothing that only a restart can change
//! ([`ServiceConfig::live_change_to`]: listeners, storage) and passes the kind's own checks; else
//! the instance keeps running its config and remembers why the offer was refused, for `/health`,
//! the metrics and the 17/SCMP report.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kaa_blueprint::config::{
    BcxConfig, CexConfig, CmxConfig, DcxConfig, EplConfig, EpmxConfig, EprConfig, EptsConfig, KpcConfig,
    Live, ServiceConfig,
};
use kaa_bus::metrics::Metrics;
use kaa_bus::metrics::prometheus_client::metrics::counter::Counter;
use kaa_bus::metrics::prometheus_client::metrics::family::Family;
use kaa_bus::metrics::prometheus_client::metrics::gauge::Gauge;
use kaa_services::{cex, cm, cmx, dcx, epl, epmx, epr, epts};

/// Where a running instance takes a new config.
#[derive(Debug, Clone)]
pub enum Handle {
    Kpc(Live<KpcConfig>),
    Epr(Live<EprConfig>),
    Epmx(Live<EpmxConfig>),
    /// CM rebuilds its password hasher when `passwordHash` changes. Boxed: its state is many
    /// times the size of the other handles.
    Cm(Box<cm::CmState>),
    Epl(Live<EplConfig>),
    Dcx(Live<DcxConfig>),
    Epts(Live<EptsConfig>),
    Cmx(Live<CmxConfig>),
    Cex(Live<CexConfig>),
    Bcx(Live<BcxConfig>),
    /// The dashboard's proxy routes are built at start: every change is restart-relevant.
    Web,
}

impl Handle {
    /// Swaps `config` in; `Err` if it is for another kind or the kind's checks refuse it.
    fn set(&self, config: ServiceConfig) -> Result<(), String> {
        match (self, config) {
            (Handle::Kpc(live), ServiceConfig::Kpc(c)) => {
                checked(live, c, |c| match c.limits.problems().first() {
                    Some((key, why)) => Err(format!("limits.{key}: {why}")),
                    None => Ok(()),
                })
            }
            (Handle::Epr(live), ServiceConfig::Epr(c)) => checked(live, c, epr::validate),
            (Handle::Epmx(live), ServiceConfig::Epmx(c)) => checked(live, c, epmx::validate),
            (Handle::Cm(state), ServiceConfig::Cm(c)) => state.apply_config(c).map_err(|e| e.to_string()),
            (Handle::Epl(live), ServiceConfig::Epl(c)) => checked(live, c, epl::validate),
            (Handle::Dcx(live), ServiceConfig::Dcx(c)) => checked(live, c, dcx::validate),
            (Handle::Epts(live), ServiceConfig::Epts(c)) => checked(live, c, epts::validate),
            (Handle::Cmx(live), ServiceConfig::Cmx(c)) => checked(live, c, cmx::validate),
            (Handle::Cex(live), ServiceConfig::Cex(c)) => checked(live, c, cex::validate),
            (Handle::Bcx(live), ServiceConfig::Bcx(c)) => checked(live, c, |_| Ok::<_, String>(())),
            (Handle::Web, ServiceConfig::Web(_)) => {
                Err("the web service applies its upstreams at a restart".to_owned())
            }
            (_, other) => Err(format!("a `{}` config cannot replace this one", other.kind())),
        }
    }
}

/// Sets `config` if `check` passes it.
fn checked<C, E: std::fmt::Display>(
    live: &Live<C>,
    config: C,
    check: impl FnOnce(&C) -> Result<(), E>,
) -> Result<(), String> {
    check(&config).map_err(|e| e.to_string())?;
    live.set(config);
    Ok(())
}

/// What became of one offered config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// The instance already runs it.
    Unchanged,
    /// The config is not usable (the reason names the field); the old one keeps running.
    Invalid(String),
    /// Only a restart can apply it (a listener, storage, a new or removed instance).
    NeedsRestart(String),
}

impl Outcome {
    /// The `outcome` label of `kaa_config_applies_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Unchanged => "unchanged",
            Outcome::Invalid(_) => "invalid",
            Outcome::NeedsRestart(_) => "needs_restart",
        }
    }

    pub fn error(&self) -> Option<&str> {
        match self {
            Outcome::Invalid(why) | Outcome::NeedsRestart(why) => Some(why),
            Outcome::Applied | Outcome::Unchanged => None,
        }
    }
}

/// One instance's answer to [`LiveConfigs::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub instance: String,
    /// The version offered.
    pub offered: String,
    pub outcome: Outcome,
}

/// The config an instance runs, and why the latest offer was refused, if it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub version: String,
    pub error: Option<String>,
    pub rejected_version: Option<String>,
}

impl Status {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "version": self.version, "error": self.error })
    }
}

#[derive(Debug)]
struct Instance {
    running: ServiceConfig,
    handle: Handle,
    /// The refused version (if the offer could be read at all) and why.
    rejected: Option<(Option<String>, String)>,
}

type Labels = Vec<(&'static str, String)>;

/// The configs of this process's instances. Cheap to clone; clones share them.
#[derive(Debug, Clone, Default)]
pub struct LiveConfigs {
    instances: Arc<Mutex<BTreeMap<String, Instance>>>,
    info: Family<Labels, Gauge>,
    applies: Family<Labels, Counter>,
}

impl LiveConfigs {
    /// Registers `kaa_config_info` and `kaa_config_applies_total` in `metrics`.
    pub fn new(metrics: &Metrics) -> LiveConfigs {
        let live = LiveConfigs::default();
        metrics.register(
            "kaa_config_info",
            "The config version each service instance of this process runs (value 1)",
            live.info.clone(),
        );
        metrics.register(
            "kaa_config_applies",
            "Configs offered to a running instance, by outcome (applied, unchanged, invalid, needs_restart)",
            live.applies.clone(),
        );
        live
    }

    fn instances(&self) -> MutexGuard<'_, BTreeMap<String, Instance>> {
        // Each entry is replaced whole: a panic elsewhere cannot leave one half-written.
        self.instances.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a started instance.
    pub fn insert(&self, config: ServiceConfig, handle: Handle) {
        let instance = config.instance().to_owned();
        self.info_label(&instance, &config.version(), true);
        let entry = Instance {
            running: config,
            handle,
            rejected: None,
        };
        self.instances().insert(instance, entry);
    }

    fn info_label(&self, instance: &str, version: &str, on: bool) {
        let labels = vec![("instance", instance.to_owned()), ("version", version.to_owned())];
        if on {
            self.info.get_or_create(&labels).set(1);
        } else {
            self.info.remove(&labels);
        }
    }

    /// Offers `configs` to the running instances (one per instance; `complete`: the list is the
    /// whole set, so a running instance it lacks was removed). Every offer gets a report.
    pub fn apply(&self, configs: Vec<ServiceConfig>, complete: bool) -> Vec<Report> {
        let mut reports = Vec::new();
        let mut instances = self.instances();
        if complete {
            for name in instances.keys() {
                if !configs.iter().any(|c| c.instance() == name) {
                    reports.push(Report {
                        instance: name.clone(),
                        offered: String::new(),
                        outcome: Outcome::NeedsRestart(format!(
                            "service `{name}` was removed: it stops with a restart"
                        )),
                    });
                }
            }
        }
        for config in configs {
            let name = config.instance().to_owned();
            let offered = config.version();
            let outcome = match instances.get_mut(&name) {
                None => Outcome::NeedsRestart(format!(
                    "service `{name}` ({}) is new: it starts with a restart",
                    config.kind()
                )),
                Some(instance) => self.offer(instance, config),
            };
            if let Some(instance) = instances.get_mut(&name) {
                instance.rejected = outcome.error().map(|e| (Some(offered.clone()), e.to_owned()));
            }
            let labels = vec![
                ("instance", name.clone()),
                ("outcome", outcome.label().to_owned()),
            ];
            self.applies.get_or_create(&labels).inc();
            reports.push(Report {
                instance: name,
                offered,
                outcome,
            });
        }
        reports
    }

    fn offer(&self, instance: &mut Instance, config: ServiceConfig) -> Outcome {
        if instance.running == config {
            return Outcome::Unchanged;
        }
        if let Err(why) = instance.running.live_change_to(&config) {
            return Outcome::NeedsRestart(why);
        }
        match instance.handle.set(config.clone()) {
            Ok(()) => {
                self.info_label(config.instance(), &instance.running.version(), false);
                self.info_label(config.instance(), &config.version(), true);
                instance.running = config;
                Outcome::Applied
            }
            Err(why) => Outcome::Invalid(why),
        }
    }

    /// Records an offer for `instance` that could not even be read (a broken config file): the
    /// instance keeps its config, and reports `why`.
    pub fn reject(&self, instance: &str, why: String) {
        if let Some(i) = self.instances().get_mut(instance) {
            i.rejected = Some((None, why));
        }
        let labels = vec![
            ("instance", instance.to_owned()),
            ("outcome", "invalid".to_owned()),
        ];
        self.applies.get_or_create(&labels).inc();
    }

    /// Every instance's status, by instance name.
    pub fn statuses(&self) -> BTreeMap<String, Status> {
        self.instances()
            .iter()
            .map(|(name, i)| {
                let status = Status {
                    version: i.running.version(),
                    error: i.rejected.as_ref().map(|(_, why)| why.clone()),
                    rejected_version: i.rejected.as_ref().and_then(|(version, _)| version.clone()),
                };
                (name.clone(), status)
            })
            .collect()
    }
}

/// Logs what became of each offer: applied and refused ones at info and warn, unchanged at debug.
pub fn log(reports: &[Report]) {
    for r in reports {
        match &r.outcome {
            Outcome::Applied => {
                tracing::info!(instance = r.instance, version = r.offered, "config applied live")
            }
            Outcome::Unchanged => {
                tracing::debug!(instance = r.instance, version = r.offered, "config unchanged")
            }
            Outcome::Invalid(why) => tracing::warn!(
                instance = r.instance,
                version = r.offered,
                error = why,
                "config REJECTED (invalid): the previous config keeps running"
            ),
            Outcome::NeedsRestart(why) => tracing::warn!(
                instance = r.instance,
                version = r.offered,
                error = why,
                "config not applied: it needs a restart; the previous config keeps running"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kpc(json: serde_json::Value) -> ServiceConfig {
        let mut base =
            serde_json::json!({"kind": "kpc", "instance": "kpc", "tokenProvider": "cm", "appVersions": {}});
        if let (Some(base), Some(extra)) = (base.as_object_mut(), json.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(base).unwrap()
    }

    fn running_kpc() -> (LiveConfigs, Live<KpcConfig>, ServiceConfig) {
        let configs = LiveConfigs::new(&Metrics::new());
        let start = kpc(serde_json::json!({}));
        let ServiceConfig::Kpc(k) = start.clone() else {
            unreachable!()
        };
        let live = Live::new(k);
        configs.insert(start.clone(), Handle::Kpc(live.clone()));
        (configs, live, start)
    }

    #[test]
    fn a_valid_change_is_swapped_in_and_reported() {
        let (configs, live, start) = running_kpc();
        let next = kpc(serde_json::json!({
            "appVersions": {"v2": {"application": "a", "extensions": ["epmx"]}},
            "limits": {"maxConnections": 7}
        }));
        let reports = configs.apply(vec![next.clone()], true);
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].outcome, Outcome::Applied);
        assert_eq!(live.get().limits.max_connections, 7);
        assert!(live.get().app_versions.contains_key("v2"));
        let status = &configs.statuses()["kpc"];
        assert_eq!(
            (status.version.as_str(), status.error.as_deref()),
            (next.version().as_str(), None)
        );
        assert_ne!(status.version, start.version());
        assert_eq!(configs.apply(vec![next], true)[0].outcome, Outcome::Unchanged);
    }

    #[test]
    fn invalid_and_restart_needing_changes_keep_the_old_config() {
        let (configs, live, start) = running_kpc();
        let invalid = kpc(serde_json::json!({"limits": {"maxConnections": 0}}));
        let reports = configs.apply(vec![invalid.clone()], true);
        let Outcome::Invalid(why) = &reports[0].outcome else {
            panic!("{reports:?}")
        };
        assert!(why.contains("limits.maxConnections"), "{why}");
        assert_eq!(ServiceConfig::Kpc(KpcConfig::clone(&live.get())), start);
        let status = &configs.statuses()["kpc"];
        assert_eq!(status.version, start.version(), "the old config runs");
        assert_eq!(
            status.rejected_version.as_deref(),
            Some(invalid.version().as_str())
        );

        let moved = kpc(serde_json::json!({"mqtt": {"listen": "127.0.0.1:1"}}));
        let reports = configs.apply(vec![moved], true);
        assert_eq!(reports[0].outcome.label(), "needs_restart");
        assert_eq!(configs.statuses()["kpc"].version, start.version());

        // Offering the running config again clears the error.
        assert_eq!(configs.apply(vec![start], true)[0].outcome, Outcome::Unchanged);
        assert_eq!(configs.statuses()["kpc"].error, None);
    }

    #[test]
    fn new_and_removed_instances_need_a_restart() {
        let (configs, _, _) = running_kpc();
        let epr: ServiceConfig =
            serde_json::from_value(serde_json::json!({"kind": "epr", "instance": "epr", "applications": []}))
                .unwrap();
        let reports = configs.apply(vec![epr], true);
        let labels: Vec<_> = reports
            .iter()
            .map(|r| (r.instance.as_str(), r.outcome.label()))
            .collect();
        assert_eq!(labels, [("kpc", "needs_restart"), ("epr", "needs_restart")]);
    }
}
