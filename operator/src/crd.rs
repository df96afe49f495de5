//! The `Blueprint` custom resource (`kaa-rs.dev/v1alpha1`): kaa-blueprint's spec types, which
//! `kaa up` reads from a file, wrapped in kube's derive, plus the status the operator writes.
//!
//! The schema comes from the Rust types; the CEL rules below add what a per-field schema cannot
//! say (counts across the list, names referring to other entries) so that `kubectl apply` refuses
//! those mistakes before the operator ever sees them. The operator validates again in full
//! (`validate`), since CEL covers only part of the rules and older API servers skip it.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The instance name of a service entry in CEL: the explicit one, else the kind.
macro_rules! name_of {
    ($s:literal) => {
        concat!("(has(", $s, ".name) ? ", $s, ".name : ", $s, ".kind)")
    };
}

/// A kaa-rs platform: applications and the service instances that serve them.
// Printer columns repeat `type_`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kaa-rs.dev",
    version = "v1alpha1",
    kind = "Blueprint",
    namespaced,
    shortname = "bp",
    status = "BlueprintStatus",
    derive = "PartialEq",
    doc = "A kaa-rs platform: applications, their versions, and the service instances that serve them.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#
    ),
    printcolumn(
        name = "Services",
        type_ = "string",
        json_path = ".status.servicesReady",
        description = "service instances ready / declared"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.services.exists(s, s.kind == 'kpc')",
        "message": "spec.services needs a `kpc` service: without a gateway no device can connect",
    },
    {
        "rule": "self.services.filter(s, s.kind == 'epr').size() == 1",
        "message": "spec.services needs exactly one `epr` service (the endpoint register)",
    },
    {
        "rule": "self.services.filter(s, s.kind == 'cm').size() == 1",
        "message": "spec.services needs exactly one `cm` service (the credential service)",
    },
    {
        "rule": concat!("self.services.all(s, self.services.filter(t, ", name_of!("t"), " == ", name_of!("s"), ").size() == 1)"),
        "message": "spec.services: instance names (the name, else the kind) must be unique",
    },
    {
        "rule": concat!("self.applications.all(a, a.versions.all(v, v.extensions.all(e, self.services.exists(s, ", name_of!("s"), " == e))))"),
        "message": "spec.applications[].versions[].extensions: every entry must name a service instance in spec.services",
    },
    {
        "rule": "self.services.all(s, !has(s.autoscaling) || s.autoscaling.minReplicas <= s.autoscaling.maxReplicas)",
        "message": "spec.services[].autoscaling: maxReplicas must be at least minReplicas",
    },
]))]
pub struct BlueprintSpec {
    // Flattened so that the resource's `spec` is exactly the spec `kaa up` reads.
    #[serde(flatten)]
    pub blueprint: kaa_blueprint::BlueprintSpec,
}

/// What the operator last saw and did; kstatus conventions, so `kubectl wait`, Argo CD and Flux
/// read it without a plugin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlueprintStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling`, `Stalled` and `ConfigApplied`, each with a reason and a message.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Service instances whose replicas are all ready, over those declared (`3/4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services_ready: Option<String>,
    /// Each service instance's replicas.
    #[serde(default)]
    pub services: Vec<ServiceStatus>,
}

/// One condition, as in every Kubernetes API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Reconciling`, `Stalled` or `ConfigApplied`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Why, in one CamelCase word.
    pub reason: String,
    /// Why, for a human; names the field at fault when the spec is.
    pub message: String,
    /// The generation the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
}

/// The replicas of one service instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// Instance name.
    pub name: String,
    /// Service kind.
    pub kind: String,
    /// Replicas wanted (by the spec, or by the autoscaler).
    pub desired_replicas: i32,
    /// Replicas passing their readiness probe.
    pub ready_replicas: i32,
    /// The version of the config the operator serves the instance (17/SCMP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_version: Option<String>,
    /// Replicas reporting that they run `configVersion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_applied: Option<i32>,
    /// For a `kpc`: the addresses devices should use (e.g. `mqtts://203.0.113.7:8883`), from its
    /// Service; empty while a load balancer or node port is pending.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
}

/// The CRD as YAML, as checked in at `crds/blueprint.yaml`.
pub fn crd_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let crd: CustomResourceDefinition = Blueprint::crd();
    Ok(format!(
        "# Generated by `kaa-operator crd`; do not edit (a test fails when it drifts from the code).\n{}",
        serde_saphyr::to_string(&crd)?
    ))
}
