//! Which config version the replicas run, from their `ConfigAppliedEvent` reports, as the
//! Blueprint's `ConfigApplied` condition and per-instance `configVersion` / `configApplied`.

use std::collections::BTreeMap;

use kaa_protocol::scmp::ConfigAppliedEvent;
use serde::Serialize;

use super::Served;
use crate::{
    crd::{BlueprintStatus, Condition},
    status,
};

/// The condition type.
pub const CONFIG_APPLIED: &str = "ConfigApplied";

/// One Blueprint's rollout of its current configs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rollout {
    /// The generation whose configs are served.
    pub generation: i64,
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// `Applied`, `RollingOut`, `Rejected` or `NatsUnreachable`.
    pub reason: &'static str,
    pub message: String,
    pub instances: Vec<InstanceRollout>,
}

/// One instance: its current version and how many of its reporting replicas run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRollout {
    pub name: String,
    pub version: String,
    /// Replicas reporting `version`.
    pub applied: u32,
    /// Replicas reporting at all.
    pub replicas: u32,
}

/// The rollout of `instances` given the live `reports` (of any instance) and whether the
/// provider has a NATS connection (without one, reports are stale: `Unknown`).
pub fn rollout(
    generation: i64,
    instances: &BTreeMap<String, Served>,
    reports: &[ConfigAppliedEvent],
    connected: bool,
) -> Rollout {
    let mut rolling = Vec::new();
    let mut rejected = Vec::new();
    let mut silent = Vec::new();
    let mut out = Vec::new();
    for (name, served) in instances {
        let mut mine: Vec<&ConfigAppliedEvent> = reports
            .iter()
            .filter(|r| &r.service_instance_name == name)
            .collect();
        mine.sort_by(|a, b| a.originator_replica_id.cmp(&b.originator_replica_id));
        let applied = mine.iter().filter(|r| r.version == served.version).count();
        for r in &mine {
            if let (Some(error), Some(version)) = (&r.error, &r.rejected_version)
                && *version == served.version
            {
                rejected.push(format!(
                    "{name}: replica {} rejected {version}: {error}",
                    r.originator_replica_id
                ));
            }
        }
        if mine.is_empty() {
            silent.push(name.as_str());
        } else if applied < mine.len() {
            rolling.push(format!(
                "{name}: {applied}/{} replicas run {}",
                mine.len(),
                served.version
            ));
        }
        out.push(InstanceRollout {
            name: name.clone(),
            version: served.version.clone(),
            applied: u32::try_from(applied).unwrap_or(u32::MAX),
            replicas: u32::try_from(mine.len()).unwrap_or(u32::MAX),
        });
    }
    let (status, reason, message) = if !connected {
        (
            "Unknown",
            "NatsUnreachable",
            "no connection to NATS: changes are announced, and reports heard, once it is back".to_owned(),
        )
    } else if !rejected.is_empty() {
        ("False", "Rejected", rejected.join("; "))
    } else if !rolling.is_empty() {
        ("False", "RollingOut", rolling.join(", "))
    } else {
        let mut message = "every reporting replica runs its current config".to_owned();
        if !silent.is_empty() {
            message.push_str(&format!(" (no report from: {})", silent.join(", ")));
        }
        ("True", "Applied", message)
    };
    Rollout {
        generation,
        status,
        reason,
        message,
        instances: out,
    }
}

/// Adds the `ConfigApplied` condition and the per-instance config fields to `status`; without
/// a rollout (nothing served yet) the previous condition stays.
pub fn annotate(
    status: &mut BlueprintStatus,
    previous: Option<&BlueprintStatus>,
    rollout: Option<&Rollout>,
    now: &str,
) {
    let earlier = previous.and_then(|p| p.conditions.iter().find(|c| c.type_ == CONFIG_APPLIED));
    let condition: Option<Condition> = match rollout {
        None => earlier.cloned(),
        Some(r) => Some(status::condition(
            earlier,
            CONFIG_APPLIED,
            (r.status, r.reason, r.message.clone()),
            Some(r.generation),
            now,
        )),
    };
    status.conditions.retain(|c| c.type_ != CONFIG_APPLIED);
    status.conditions.extend(condition);
    let Some(rollout) = rollout else { return };
    for service in &mut status.services {
        if let Some(i) = rollout.instances.iter().find(|i| i.name == service.name) {
            service.config_version = Some(i.version.clone());
            service.config_applied = Some(i32::try_from(i.applied).unwrap_or(i32::MAX));
        }
    }
}
