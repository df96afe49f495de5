//! The provider's part of a reconcile: the Blueprint's config-reader token (a Secret created
//! once, never overwritten), the rendered configs fed to the provider (which announces what
//! changed), and the `ConfigApplied` status.

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, ResourceExt,
    api::{PostParams, Resource},
    runtime::reflector::ObjectRef,
};

use super::{BlueprintKey, Provider, rollout};
use crate::{
    apply::{self, ApplyError},
    build::{self, ADMIN_TOKEN_KEY, Settings},
    crd::{Blueprint, BlueprintStatus},
    validate::Validated,
};

/// The port the operator serves the provider's API on.
pub const PROVIDER_PORT: u16 = 8090;

/// The provider's in-cluster URL when the operator runs in `namespace` (the chart's Service).
pub fn provider_url(namespace: &str) -> String {
    format!("http://kaa-operator-config.{namespace}.svc:{PROVIDER_PORT}")
}

/// Name of the config-reader token Secret of a Blueprint (its key is `token`).
pub fn config_token_secret_name(blueprint: &Blueprint) -> String {
    format!(
        "{}-config-token",
        blueprint.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Reconcile requests for the Blueprints whose rollout changed (see [`Provider::take_changes`]).
pub fn triggers(
    changes: tokio::sync::mpsc::UnboundedReceiver<BlueprintKey>,
) -> impl futures_util::Stream<Item = ObjectRef<Blueprint>> + Send {
    futures_util::stream::unfold(changes, |mut changes| async move {
        let key = changes.recv().await?;
        Some((ObjectRef::new(&key.name).within(&key.namespace), changes))
    })
}

/// The Blueprint's key in the provider.
pub fn key(blueprint: &Blueprint) -> BlueprintKey {
    BlueprintKey {
        namespace: blueprint.namespace().unwrap_or_default(),
        name: blueprint.name_any(),
    }
}

impl Provider {
    /// Makes sure the token Secret exists, then serves the validated configs and announces
    /// what changed. Only the API server is waited for, never NATS.
    pub async fn reconcile(
        &self,
        client: &Client,
        settings: &Settings,
        blueprint: &Blueprint,
        validated: &Validated,
    ) -> Result<(), ApplyError> {
        let token = ensure_token(client, blueprint).await?;
        let nats_url = blueprint
            .spec
            .blueprint
            .cluster
            .as_ref()
            .and_then(|c| c.nats_url.clone())
            .unwrap_or_else(|| settings.nats_url.clone());
        self.feed(
            &key(blueprint),
            blueprint.meta().generation.unwrap_or_default(),
            &nats_url,
            Some(token),
            validated.services.iter().map(|p| &p.config),
        );
        Ok(())
    }

    /// Adds `ConfigApplied` and the instances' config versions to the status about to be written.
    pub fn annotate_status(&self, blueprint: &Blueprint, status: &mut BlueprintStatus, now: &str) {
        let rollout = self.rollout(&key(blueprint));
        rollout::annotate(status, blueprint.status.as_ref(), rollout.as_ref(), now);
    }
}

/// The token in the Blueprint's config token Secret, which is created (with a new token) when
/// missing. An existing Secret is never replaced: pods hold its token.
async fn ensure_token(client: &Client, blueprint: &Blueprint) -> Result<String, ApplyError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &blueprint.namespace().unwrap_or_default());
    let name = config_token_secret_name(blueprint);
    let fail = |e: String| ApplyError::ConfigToken(format!("`{name}`: {e}"));
    if let Some(secret) = api.get_opt(&name).await.map_err(|e| fail(e.to_string()))? {
        return stored_token(&secret).ok_or_else(|| fail(format!("no `{ADMIN_TOKEN_KEY}` in it")));
    }
    let token = apply::new_token().map_err(&fail)?;
    let secret = build::token_secret(blueprint, name.clone(), &token);
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(token),
        // Made meanwhile (another operator replica, a user): theirs stands.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let secret = api.get(&name).await.map_err(|e| fail(e.to_string()))?;
            stored_token(&secret).ok_or_else(|| fail(format!("no `{ADMIN_TOKEN_KEY}` in it")))
        }
        Err(e) => Err(fail(e.to_string())),
    }
}

fn stored_token(secret: &Secret) -> Option<String> {
    let from_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(ADMIN_TOKEN_KEY))
        .and_then(|b| String::from_utf8(b.0.clone()).ok());
    let from_string_data = || {
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(ADMIN_TOKEN_KEY).cloned())
    };
    from_data
        .or_else(from_string_data)
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}
