//! The reconcile pipeline and the controller that drives it: validate -> build -> apply ->
//! prune -> status, for every Blueprint and whenever an object it owns changes.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use k8s_openapi::api::{
    apps::v1::Deployment,
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{ConfigMap, Service},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{Controller, controller::Action, watcher},
};

use crate::{
    addresses,
    apply::{self, ApplyError},
    build::{self, Settings},
    crd::Blueprint,
    credentials,
    events::{self, Happened},
    metrics::Metrics,
    provider::{self, Provider},
    status::{self, Outcome},
    validate::{self, Planned},
};

/// How often the config provider drops the Blueprints deleted since.
const FORGET_DELETED_EVERY: Duration = Duration::from_secs(5);

/// What every reconcile shares.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Metrics,
    pub provider: Provider,
}

impl Context {
    /// Default settings, fresh metrics and an empty provider: what tests and tools start from.
    pub fn new(client: Client) -> Self {
        Context {
            client,
            settings: Settings::default(),
            metrics: Metrics::default(),
            provider: Provider::default(),
        }
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Why a reconcile failed; the variant name is the `reason` label of the error metric.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("cannot read {what}: {source}")]
    Read { what: String, source: kube::Error },
    #[error("cannot write the status: {0}")]
    Status(kube::Error),
    #[error("the Blueprint has no namespace")]
    NoNamespace,
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Apply(_) => "apply",
            Error::Read { .. } => "read",
            Error::Status(_) => "status",
            Error::NoNamespace => "no_namespace",
        }
    }
}

/// How often a settled Blueprint is looked at again (drift a watch missed).
const RESYNC: Duration = Duration::from_secs(300);

pub async fn reconcile(blueprint: Arc<Blueprint>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_once(&blueprint, &ctx).await;
    ctx.metrics
        .reconciled(started.elapsed(), result.as_ref().err().map(Error::reason));
    result
}

async fn reconcile_once(blueprint: &Blueprint, ctx: &Context) -> Result<Action, Error> {
    let namespace = blueprint.namespace().ok_or(Error::NoNamespace)?;
    let validated = match validate::validate(blueprint) {
        Ok(validated) => validated,
        Err(invalid) => {
            tracing::info!(blueprint = %blueprint.name_any(), %namespace, "invalid spec: {invalid}");
            let message = invalid
                .0
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            if !events::already_reported(blueprint, "Stalled", &message) {
                events::record(&ctx.client, blueprint, &Happened::Invalid(message.clone())).await;
            }
            write_status(blueprint, ctx, Outcome::Invalid(message)).await?;
            // Nothing to retry until the spec changes (which triggers a reconcile).
            return Ok(Action::await_change());
        }
    };
    let desired = build::build(blueprint, &validated, &ctx.settings);
    let mut changes = apply::Changes::default();
    let applied = async {
        apply::ensure_admin_secret(&ctx.client, blueprint).await?;
        ctx.provider
            .reconcile(&ctx.client, &ctx.settings, blueprint, &validated)
            .await?;
        let existing = apply::existing(&ctx.client, blueprint).await?;
        apply::apply(&ctx.client, &namespace, &desired, &existing, &mut changes).await?;
        changes
            .created
            .extend(credentials::ensure(&ctx.client, blueprint, &validated).await?);
        apply::prune(&ctx.client, blueprint, &desired, &existing, &mut changes).await
    }
    .await;
    if !changes.is_empty() {
        events::record(&ctx.client, blueprint, &Happened::Changed(changes)).await;
    }
    if let Err(e) = applied {
        if !events::already_reported(blueprint, "Ready", &e.to_string()) {
            events::record(&ctx.client, blueprint, &Happened::ApplyFailed(e.to_string())).await;
        }
        write_status(blueprint, ctx, Outcome::ApplyFailed(e.to_string())).await?;
        return Err(e.into());
    }
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut services = Vec::new();
    for planned in &validated.services {
        let deployment = deployments
            .get_opt(&planned.object_name)
            .await
            .map_err(|source| Error::Read {
                what: format!("Deployment `{}`", planned.object_name),
                source,
            })?;
        let mut service = status::service_status(
            planned.spec.instance_name(),
            planned.spec.kind.as_str(),
            deployment.as_ref(),
        );
        service.addresses = device_addresses(ctx, &namespace, planned).await?;
        services.push(service);
    }
    write_status(blueprint, ctx, Outcome::Applied(services)).await?;
    Ok(Action::requeue(RESYNC))
}

/// A kpc's device addresses, from its Service (status only: nothing to do for other kinds).
async fn device_addresses(ctx: &Context, namespace: &str, planned: &Planned) -> Result<Vec<String>, Error> {
    let Some(name) = addresses::service_name(planned) else {
        return Ok(Vec::new());
    };
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), namespace);
    let service = api.get_opt(&name).await.map_err(|source| Error::Read {
        what: format!("Service `{name}`"),
        source,
    })?;
    Ok(addresses::device_addresses(planned, service.as_ref(), namespace))
}

async fn write_status(blueprint: &Blueprint, ctx: &Context, outcome: Outcome) -> Result<(), Error> {
    let namespace = blueprint.namespace().ok_or(Error::NoNamespace)?;
    let now = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now());
    let mut status = status::status(
        blueprint.status.as_ref(),
        blueprint.metadata.generation,
        outcome,
        &now.to_string(),
    );
    ctx.provider
        .annotate_status(blueprint, &mut status, &now.to_string());
    if blueprint.status.as_ref() == Some(&status) {
        // Times move only on transitions, so this is "nothing new": writing would only wake
        // the watch again.
        return Ok(());
    }
    let api: Api<Blueprint> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = serde_json::json!({ "status": status });
    api.patch_status(
        &blueprint.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(Error::Status)?;
    Ok(())
}

pub fn error_policy(blueprint: Arc<Blueprint>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(blueprint = %blueprint.name_any(), reason = error.reason(), "reconcile failed: {error}");
    Action::requeue(Duration::from_secs(5))
}

/// Watches Blueprints (in `namespace`, or all) and the objects they own, and reconciles until
/// the stream ends (shutdown).
pub async fn run(ctx: Context, namespace: Option<&str>) {
    let client = ctx.client.clone();
    let api = |c: &Client| -> Api<Blueprint> {
        match namespace {
            Some(ns) => Api::namespaced(c.clone(), ns),
            None => Api::all(c.clone()),
        }
    };
    fn owned<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    // Only our objects: the label keeps the operator's caches small in a busy cluster.
    let mine = watcher::Config::default().labels(&format!("{}={}", build::MANAGED_BY.0, build::MANAGED_BY.1));
    // A replica's config report that changes the rollout updates the status at once.
    let reports = ctx.provider.take_changes().map(provider::cluster::triggers);
    let controller = Controller::new(api(&client), watcher::Config::default());
    // No reconcile runs for a deleted Blueprint: the provider forgets it when the cache does
    // (the provider learns of a Blueprint only from a reconcile, so after the cache has it).
    let (blueprints, provider) = (controller.store(), ctx.provider.clone());
    let forget_deleted = tokio::spawn(async move {
        loop {
            tokio::time::sleep(FORGET_DELETED_EVERY).await;
            let live: std::collections::BTreeSet<_> = blueprints
                .state()
                .iter()
                .map(|bp| provider::cluster::key(bp))
                .collect();
            provider.retain(|key| live.contains(key));
        }
    });
    controller
        .reconcile_on(futures_util::stream::iter(reports).flatten())
        .owns(owned::<Deployment>(&client, namespace), mine.clone())
        .owns(owned::<ConfigMap>(&client, namespace), mine.clone())
        .owns(owned::<Service>(&client, namespace), mine.clone())
        .owns(owned::<PodDisruptionBudget>(&client, namespace), mine.clone())
        .owns(owned::<HorizontalPodAutoscaler>(&client, namespace), mine)
        .shutdown_on_signal()
        .run(reconcile, error_policy, Arc::new(ctx))
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!("reconcile: {e}");
            }
        })
        .await;
    forget_deleted.abort();
}
