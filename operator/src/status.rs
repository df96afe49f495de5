//! Step 4 of a reconcile: what the Blueprint's status says. kstatus conventions: `Ready`,
//! `Reconciling`, `Stalled`, each with a reason, a message and the generation it describes;
//! `lastTransitionTime` moves only when a condition's status does.

use k8s_openapi::api::apps::v1::Deployment;

use crate::crd::{BlueprintStatus, Condition, ServiceStatus};

/// Where a reconcile got to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The spec breaks rules: nothing was applied.
    Invalid(String),
    /// Applying failed (the API server refused or is unreachable); retried.
    ApplyFailed(String),
    /// Everything is applied; pods are as the Deployments report.
    Applied(Vec<ServiceStatus>),
}

/// A service instance's replicas from its Deployment (`None`: not created yet).
pub fn service_status(name: &str, kind: &str, deployment: Option<&Deployment>) -> ServiceStatus {
    let spec_replicas = deployment.and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas);
    let status = deployment.and_then(|d| d.status.as_ref());
    ServiceStatus {
        name: name.to_owned(),
        kind: kind.to_owned(),
        // An HPA-managed Deployment has the HPA's number in spec.replicas, 1 by default.
        desired_replicas: spec_replicas.unwrap_or(1),
        ready_replicas: status.and_then(|s| s.ready_replicas).unwrap_or(0),
        config_version: None,
        config_applied: None,
        addresses: Vec::new(),
    }
}

/// The status to write after a reconcile of `generation` ending in `outcome`; `previous`
/// keeps transition times of conditions that did not change; `now` is RFC 3339.
pub fn status(
    previous: Option<&BlueprintStatus>,
    generation: Option<i64>,
    outcome: Outcome,
    now: &str,
) -> BlueprintStatus {
    let (ready, reconciling, stalled, services) = match outcome {
        Outcome::Invalid(message) => (
            ("False", "InvalidSpec", message.clone()),
            (
                "False",
                "InvalidSpec",
                "nothing applied until the spec is fixed".to_owned(),
            ),
            ("True", "InvalidSpec", message),
            previous.map(|p| p.services.clone()).unwrap_or_default(),
        ),
        Outcome::ApplyFailed(message) => (
            ("False", "ApplyFailed", message.clone()),
            ("True", "ApplyFailed", format!("retrying: {message}")),
            ("False", "ApplyFailed", "retrying".to_owned()),
            previous.map(|p| p.services.clone()).unwrap_or_default(),
        ),
        Outcome::Applied(services) => {
            let waiting: Vec<String> = services
                .iter()
                .filter(|s| s.ready_replicas < s.desired_replicas)
                .map(|s| format!("{} {}/{}", s.name, s.ready_replicas, s.desired_replicas))
                .collect();
            let (ready, reconciling) = if waiting.is_empty() {
                (
                    (
                        "True",
                        "AllServicesReady",
                        "every service instance is ready".to_owned(),
                    ),
                    ("False", "AllServicesReady", "rolled out".to_owned()),
                )
            } else {
                let message = format!("pods not ready: {}", waiting.join(", "));
                (
                    ("False", "ServicesNotReady", message.clone()),
                    ("True", "ServicesNotReady", message),
                )
            };
            (
                ready,
                reconciling,
                ("False", "Applied", "the spec is valid and applied".to_owned()),
                services,
            )
        }
    };
    let ready_count = services
        .iter()
        .filter(|s| s.ready_replicas >= s.desired_replicas)
        .count();
    let conditions = [
        ("Ready", ready),
        ("Reconciling", reconciling),
        ("Stalled", stalled),
    ]
    .into_iter()
    .map(|(type_, value)| {
        let earlier = previous.and_then(|p| p.conditions.iter().find(|c| c.type_ == type_));
        condition(earlier, type_, value, generation, now)
    })
    .collect();
    BlueprintStatus {
        observed_generation: generation,
        conditions,
        services_ready: Some(format!("{ready_count}/{}", services.len())),
        services,
    }
}

/// The condition `type_` with `(status, reason, message)`; its transition time is `earlier`'s
/// unless the status changed.
pub fn condition(
    earlier: Option<&Condition>,
    type_: &str,
    (status, reason, message): (&str, &str, String),
    generation: Option<i64>,
    now: &str,
) -> Condition {
    let last_transition_time = match earlier {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now.to_owned(),
    };
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}
