//! Step 3 of a reconcile: make the cluster hold the desired objects (server-side apply, one field
//! manager), create the admin token Secret once, and delete what the Blueprint no longer declares.

use std::collections::BTreeSet;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams},
};

use crate::{
    build::{self, BLUEPRINT_LABEL, Desired, MANAGED_BY},
    crd::Blueprint,
};

/// The one field manager of everything the operator writes.
pub const FIELD_MANAGER: &str = "kaa-operator";

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot apply {kind} `{name}`: {source}")]
    Apply {
        kind: String,
        name: String,
        source: kube::Error,
    },
    #[error("cannot encode {kind} `{name}`: {source}")]
    Encode {
        kind: String,
        name: String,
        source: serde_json::Error,
    },
    #[error("cannot list {kind} to prune: {source}")]
    List { kind: String, source: kube::Error },
    #[error("cannot delete {kind} `{name}`: {source}")]
    Delete {
        kind: String,
        name: String,
        source: kube::Error,
    },
    #[error("cannot create the admin token Secret: {0}")]
    AdminSecret(String),
    #[error("cannot read or create the config token Secret {0}")]
    ConfigToken(String),
}

/// Applies every desired object; the first failure stops the rest (the next reconcile retries).
pub async fn apply(client: &Client, namespace: &str, desired: &Desired) -> Result<(), ApplyError> {
    // `force`: the operator owns these fields; a `kubectl edit` is reverted, not a conflict.
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for object in &desired.objects {
        let resource = object.api_resource();
        let (kind, name) = (resource.kind.clone(), object.name().to_owned());
        let json = object.to_json().map_err(|source| ApplyError::Encode {
            kind: kind.clone(),
            name: name.clone(),
            source,
        })?;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        api.patch(&name, &params, &Patch::Apply(json))
            .await
            .map_err(|source| ApplyError::Apply { kind, name, source })?;
    }
    Ok(())
}

/// Deletes the objects of the Blueprint's kinds that carry its label and its owner reference
/// but are no longer desired. The owner check keeps a same-named Blueprint's leftovers (or
/// anything a user labelled by hand) safe.
pub async fn prune(client: &Client, blueprint: &Blueprint, desired: &Desired) -> Result<usize, ApplyError> {
    let (Some(namespace), Some(uid)) = (blueprint.namespace(), blueprint.uid()) else {
        return Ok(0);
    };
    let selector = format!(
        "{BLUEPRINT_LABEL}={},{}={}",
        blueprint.name_any(),
        MANAGED_BY.0,
        MANAGED_BY.1
    );
    let keep: BTreeSet<(String, &str)> = desired
        .objects
        .iter()
        .map(|o| (o.api_resource().kind, o.name()))
        .collect();
    let mut pruned = 0;
    for resource in build::owned_kinds() {
        let kind = resource.kind.clone();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &resource);
        let found = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|source| ApplyError::List {
                kind: kind.clone(),
                source,
            })?;
        for object in found {
            let name = object.name_any();
            let owned = object.owner_references().iter().any(|o| o.uid == uid);
            if owned && !keep.contains(&(kind.clone(), name.as_str())) {
                match api.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => pruned += 1,
                    // Gone already: what pruning wanted.
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(source) => {
                        return Err(ApplyError::Delete {
                            kind: kind.clone(),
                            name,
                            source,
                        });
                    }
                }
            }
        }
    }
    Ok(pruned)
}

/// Creates the admin token Secret unless it exists: a token users already hold is never
/// replaced (delete the Secret for a new one).
pub async fn ensure_admin_secret(client: &Client, blueprint: &Blueprint) -> Result<(), ApplyError> {
    let namespace = blueprint.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let name = build::admin_secret_name(blueprint);
    match api.get_opt(&name).await {
        Ok(Some(_)) => return Ok(()),
        Ok(None) => {}
        Err(e) => return Err(ApplyError::AdminSecret(e.to_string())),
    }
    let token = new_token().map_err(ApplyError::AdminSecret)?;
    match api
        .create(&PostParams::default(), &build::admin_secret(blueprint, &token))
        .await
    {
        // Another replica (or a user) made it first: theirs stands.
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(ApplyError::AdminSecret(e.to_string())),
    }
}

/// 32 random bytes, base64url: the format `kaa up` writes to `kaa-data/admin-token`.
pub(crate) fn new_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for the token: {e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}
