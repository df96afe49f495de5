//! Step 3 of a reconcile: make the cluster hold the desired objects (server-side apply, one field
//! manager), create the admin token Secret once, and delete what the Blueprint no longer declares.

use std::collections::{BTreeMap, BTreeSet};

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
    #[error(transparent)]
    Credentials(#[from] crate::credentials::CredentialError),
}

/// The objects of the Blueprint's kinds that carry its label, by (kind, name): what `apply`
/// compares with (created or updated) and `prune` chooses from. Listed once per reconcile.
#[derive(Debug, Default)]
pub struct Existing {
    objects: BTreeMap<(String, String), DynamicObject>,
}

/// What a reconcile changed, as `Kind/name` (for the Normal event; names only, never data).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub pruned: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.updated.is_empty() && self.pruned.is_empty()
    }
}

/// Lists the Blueprint's objects of every kind it may own.
pub async fn existing(client: &Client, blueprint: &Blueprint) -> Result<Existing, ApplyError> {
    let mut existing = Existing::default();
    let Some(namespace) = blueprint.namespace() else {
        return Ok(existing);
    };
    let selector = format!(
        "{BLUEPRINT_LABEL}={},{}={}",
        blueprint.name_any(),
        MANAGED_BY.0,
        MANAGED_BY.1
    );
    for resource in build::owned_kinds() {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &resource);
        let found = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|source| ApplyError::List {
                kind: resource.kind.clone(),
                source,
            })?;
        for object in found {
            existing
                .objects
                .insert((resource.kind.clone(), object.name_any()), object);
        }
    }
    Ok(existing)
}

/// Applies every desired object; the first failure stops the rest (the next reconcile retries).
/// Adds what was created or changed to `changes`.
pub async fn apply(
    client: &Client,
    namespace: &str,
    desired: &Desired,
    existing: &Existing,
    changes: &mut Changes,
) -> Result<(), ApplyError> {
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
        let applied = api
            .patch(&name, &params, &Patch::Apply(json))
            .await
            .map_err(|source| ApplyError::Apply {
                kind: kind.clone(),
                name: name.clone(),
                source,
            })?;
        let label = format!("{kind}/{name}");
        // An apply that changes nothing keeps the resourceVersion.
        match existing.objects.get(&(kind, name)) {
            None => changes.created.push(label),
            Some(before) if before.resource_version() != applied.resource_version() => {
                changes.updated.push(label);
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Deletes the objects of the Blueprint's kinds that carry its label and its owner reference
/// but are no longer desired, and adds them to `changes`. The owner check keeps a same-named
/// Blueprint's leftovers (or anything a user labelled by hand) safe.
pub async fn prune(
    client: &Client,
    blueprint: &Blueprint,
    desired: &Desired,
    existing: &Existing,
    changes: &mut Changes,
) -> Result<(), ApplyError> {
    let (Some(namespace), Some(uid)) = (blueprint.namespace(), blueprint.uid()) else {
        return Ok(());
    };
    let keep: BTreeSet<(String, &str)> = desired
        .objects
        .iter()
        .map(|o| (o.api_resource().kind, o.name()))
        .collect();
    for resource in build::owned_kinds() {
        let kind = resource.kind.clone();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &resource);
        let found = existing.objects.iter().filter(|((k, _), _)| *k == kind);
        for ((_, name), object) in found {
            let owned = object.owner_references().iter().any(|o| o.uid == uid);
            if owned && !keep.contains(&(kind.clone(), name.as_str())) {
                match api.delete(name, &DeleteParams::background()).await {
                    Ok(_) => changes.pruned.push(format!("{kind}/{name}")),
                    // Gone already: what pruning wanted.
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(source) => {
                        return Err(ApplyError::Delete {
                            kind: kind.clone(),
                            name: name.clone(),
                            source,
                        });
                    }
                }
            }
        }
    }
    Ok(())
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
