//! Step 2 of a reconcile: a validated Blueprint -> the Kubernetes objects that run it. Pure (no
//! client, no clock, no randomness), so every object is unit-tested from the sample Blueprints.
//!
//! Per service instance: a ConfigMap with its rendered config, a Deployment, a Service, a
//! PodDisruptionBudget when more than one replica must stay up, and an HPA when it autoscales.
//! Once per Blueprint: the admin token Secret (built here, created once by `apply`).
//! Every object carries the Blueprint's labels and an owner reference, so that `apply` can find
//! what to prune and Kubernetes garbage-collects everything with the Blueprint.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        autoscaling::v2::HorizontalPodAutoscaler,
        core::v1::{ConfigMap, Secret, Service, ServiceAccount},
        policy::v1::PodDisruptionBudget,
        rbac::v1::{Role, RoleBinding},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{Resource, core::ApiResource};

use crate::{
    crd::Blueprint,
    validate::{Planned, Validated},
};

mod access;
pub mod exposure;
mod network;
mod scaling;
mod workload;

pub use access::CM_SECRET_VERBS;
pub use workload::RESTART_HASH;

/// The management port of every pod: `/health`, `/metrics`, REST APIs.
pub const HTTP_PORT: u16 = 9000;
/// Label naming the Blueprint an object belongs to; `apply` prunes by it.
pub const BLUEPRINT_LABEL: &str = "kaa-rs.dev/blueprint";
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "kaa-operator");
/// Key of the admin token in its Secret; mounted as a file for `kaa run --admin-token-file`.
pub const ADMIN_TOKEN_KEY: &str = "token";

/// Operator-wide defaults a Blueprint may override in `spec.cluster`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub image: String,
    pub nats_url: String,
    /// Base URL of the operator's config provider, as pods reach it.
    pub provider_url: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            image: format!("ghcr.io/kaa-rs/kaa:{}", env!("CARGO_PKG_VERSION")),
            nats_url: "nats://nats:4222".into(),
            provider_url: crate::provider::cluster::provider_url("kaa-system"),
        }
    }
}

/// One object the Blueprint declares.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "a handful per service instance, built once per reconcile: boxing would buy nothing"
)]
pub enum Object {
    ConfigMap(ConfigMap),
    Deployment(Deployment),
    Service(Service),
    PodDisruptionBudget(PodDisruptionBudget),
    HorizontalPodAutoscaler(HorizontalPodAutoscaler),
    ServiceAccount(ServiceAccount),
    Role(Role),
    RoleBinding(RoleBinding),
}

/// Apply one builder's function to whichever object `$o` holds.
macro_rules! each {
    ($o:expr, $x:ident => $e:expr) => {
        match $o {
            Object::ConfigMap($x) => $e,
            Object::Deployment($x) => $e,
            Object::Service($x) => $e,
            Object::PodDisruptionBudget($x) => $e,
            Object::HorizontalPodAutoscaler($x) => $e,
            Object::ServiceAccount($x) => $e,
            Object::Role($x) => $e,
            Object::RoleBinding($x) => $e,
        }
    };
}

/// The kinds of object a Blueprint owns (what `apply` prunes), as dynamic API resources.
pub fn owned_kinds() -> [ApiResource; 8] {
    [
        ApiResource::erase::<ServiceAccount>(&()),
        ApiResource::erase::<Role>(&()),
        ApiResource::erase::<RoleBinding>(&()),
        ApiResource::erase::<ConfigMap>(&()),
        ApiResource::erase::<Deployment>(&()),
        ApiResource::erase::<Service>(&()),
        ApiResource::erase::<PodDisruptionBudget>(&()),
        ApiResource::erase::<HorizontalPodAutoscaler>(&()),
    ]
}

impl Object {
    /// Its kind as a dynamic API resource.
    pub fn api_resource(&self) -> ApiResource {
        fn of<K: Resource<DynamicType = ()>>(_: &K) -> ApiResource {
            ApiResource::erase::<K>(&())
        }
        each!(self, o => of(o))
    }

    /// The object as JSON, with `apiVersion` and `kind`.
    pub fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        each!(self, o => serde_json::to_value(o))
    }

    pub fn name(&self) -> &str {
        each!(self, o => o.metadata.name.as_deref().unwrap_or_default())
    }
}

/// What the Blueprint declares, in apply order (configs before the pods that mount them).
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub objects: Vec<Object>,
}

/// Everything a Blueprint declares but the admin token Secret.
pub fn build(blueprint: &Blueprint, validated: &Validated, settings: &Settings) -> Desired {
    let ctx = Context::new(blueprint, settings);
    let mut objects = Vec::new();
    for planned in &validated.services {
        if workload::needs_api(planned) {
            objects.push(Object::ServiceAccount(access::service_account(&ctx, planned)));
            objects.push(Object::Role(access::role(&ctx, planned)));
            objects.push(Object::RoleBinding(access::role_binding(&ctx, planned)));
        }
        objects.push(Object::ConfigMap(workload::config_map(&ctx, planned)));
        objects.push(Object::Deployment(workload::deployment(&ctx, planned)));
        objects.push(Object::Service(network::service(&ctx, planned)));
        if let Some(devices) = exposure::devices_service(&ctx, planned) {
            objects.push(Object::Service(devices));
        }
        if let Some(pdb) = scaling::pod_disruption_budget(&ctx, planned) {
            objects.push(Object::PodDisruptionBudget(pdb));
        }
        if let Some(hpa) = scaling::autoscaler(&ctx, planned) {
            objects.push(Object::HorizontalPodAutoscaler(hpa));
        }
    }
    Desired { objects }
}

/// Name of the admin token Secret of a Blueprint.
pub fn admin_secret_name(blueprint: &Blueprint) -> String {
    format!(
        "{}-admin-token",
        blueprint.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The admin token Secret holding `token` (which the caller makes up: building stays pure).
pub fn admin_secret(blueprint: &Blueprint, token: &str) -> Secret {
    token_secret(blueprint, admin_secret_name(blueprint), token)
}

/// A Secret `name` of the Blueprint holding `token` under [`ADMIN_TOKEN_KEY`].
pub fn token_secret(blueprint: &Blueprint, name: String, token: &str) -> Secret {
    let ctx = Context::new(blueprint, &Settings::default());
    Secret {
        metadata: ctx.meta(name, None),
        string_data: Some(BTreeMap::from([(ADMIN_TOKEN_KEY.to_owned(), token.to_owned())])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

/// What every builder needs from the Blueprint.
struct Context<'a> {
    name: &'a str,
    namespace: Option<String>,
    owner: Option<OwnerReference>,
    image: String,
    nats_url: String,
    database_secret: Option<String>,
    admin_secret: String,
    provider_url: String,
    config_token_secret: String,
}

impl<'a> Context<'a> {
    fn new(blueprint: &'a Blueprint, settings: &Settings) -> Context<'a> {
        let cluster = blueprint.spec.blueprint.cluster.clone().unwrap_or_default();
        Context {
            name: blueprint.metadata.name.as_deref().unwrap_or_default(),
            namespace: blueprint.metadata.namespace.clone(),
            // `None` only for a Blueprint that was never stored (no uid): tests of `build`.
            owner: blueprint.controller_owner_ref(&()),
            image: cluster.image.unwrap_or_else(|| settings.image.clone()),
            nats_url: cluster.nats_url.unwrap_or_else(|| settings.nats_url.clone()),
            database_secret: cluster.database_secret,
            admin_secret: admin_secret_name(blueprint),
            provider_url: settings.provider_url.clone(),
            config_token_secret: crate::provider::cluster::config_token_secret_name(blueprint),
        }
    }

    /// Labels that select one instance's pods (they must never change: selectors are immutable).
    fn selector(&self, planned: &Planned) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), "kaa".to_owned()),
            ("app.kubernetes.io/instance".to_owned(), self.name.to_owned()),
            (
                "app.kubernetes.io/component".to_owned(),
                planned.component.clone(),
            ),
        ])
    }

    fn labels(&self, planned: Option<&Planned>) -> BTreeMap<String, String> {
        let mut labels = planned.map(|p| self.selector(p)).unwrap_or_default();
        labels.insert(BLUEPRINT_LABEL.to_owned(), self.name.to_owned());
        labels.insert(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned());
        if let Some(p) = planned {
            labels.insert("kaa-rs.dev/kind".to_owned(), p.spec.kind.as_str().to_owned());
        }
        labels
    }

    fn meta(&self, name: String, planned: Option<&Planned>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: self.namespace.clone(),
            labels: Some(self.labels(planned)),
            owner_references: self.owner.clone().map(|o| vec![o]),
            ..ObjectMeta::default()
        }
    }
}
