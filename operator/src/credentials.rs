//! `spec.credentials` -> the Secrets the `cm` instance's Kubernetes backend watches, in its
//! documented layout (data-plane/services/src/cm/kubernetes/layout):
//!
//! - a client credential -> `kaa-ccm-<cm>-<id>` (type `kaa-rs.dev/client-credential`) with
//!   `clientId`, `username` + `passwordHash` (argon2id PHC, at the cm's configured cost) or
//!   `issuer` + `serial`, `status: Active`, `createdAt`;
//! - endpoint tokens -> one `kaa-cm-<cm>-ep-<endpointId>` per endpoint (type
//!   `kaa-rs.dev/endpoint-tokens`, annotation `kaa-rs.dev/endpoint-id`), one entry per token id:
//!   `{"sha256", "appName", "appVersion", "status": "Inactive", "createdAt"}`.
//!
//! Created once, never overwritten: after creation the credential service owns the record (a
//! token turns `Active` on first use, an operator of the platform may suspend or revoke it), so
//! the operator only adds what is missing: a missing Secret, or a missing token entry in an
//! endpoint's Secret. To rotate a password or token value, delete the materialised Secret (or
//! the token's entry); the next reconcile writes it again from the referenced Secret. Removing a
//! credential from the Blueprint leaves its Secret (revoke with the CM API or delete it). The
//! Secrets are owned by the Blueprint, so deleting the Blueprint removes them.
//!
//! Values are read from the referenced Secrets and only their hashes are written; no value
//! reaches a log line, an event, the status or an error message.

use std::collections::BTreeMap;

use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version, password_hash::SaltString};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kaa_blueprint::{
    config::{CmStorage, PasswordHashSettings, ServiceConfig},
    spec::{BlueprintSpec, SecretKeyRef},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ObjectMeta, PostParams},
};
use sha2::{Digest, Sha256};

use crate::{
    build::BLUEPRINT_LABEL,
    crd::Blueprint,
    validate::{Planned, Validated},
};

/// Labels and types of the cm's layout.
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "kaa-rs");
const CM_LABEL: &str = "kaa-rs.dev/cm";
const KIND_LABEL: &str = "kaa-rs.dev/kind";
const ENDPOINT_ID_ANNOTATION: &str = "kaa-rs.dev/endpoint-id";
const CLIENT_CREDENTIAL: &str = "client-credential";
const ENDPOINT_TOKENS: &str = "endpoint-tokens";

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("spec.credentials: {0}")]
    Source(String),
    #[error("cannot {action} Secret `{name}`: {source}")]
    Api {
        action: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("cannot hash the password of spec.credentials.clients `{0}`")]
    Hash(String),
}

/// The rules a schema cannot check: a cm that keeps credentials in Secrets, unique ids, known
/// application versions.
pub fn check(spec: &BlueprintSpec, services: &[Planned], fail: &mut impl FnMut(String, String)) {
    let Some(credentials) = &spec.credentials else {
        return;
    };
    if credentials.clients.is_empty() && credentials.endpoint_tokens.is_empty() {
        return;
    }
    if cm(services).is_none() {
        fail(
            "spec.credentials".into(),
            "needs the `cm` service to keep credentials in Kubernetes Secrets: set its config `storage: kubernetes`"
                .into(),
        );
    }
    let mut seen = BTreeMap::new();
    for (i, client) in credentials.clients.iter().enumerate() {
        let at = format!("spec.credentials.clients[{i}]");
        check_id(&at, "clients", &client.id, i, &mut seen, fail);
        let password = client.username.is_some() && client.password_secret.is_some();
        if password == client.certificate.is_some()
            || client.username.is_some() != client.password_secret.is_some()
        {
            fail(
                at,
                "give either username and passwordSecret, or certificate".into(),
            );
        }
    }
    let versions: Vec<&str> = spec
        .applications
        .iter()
        .flat_map(|a| a.versions.iter().map(|v| v.name.as_str()))
        .collect();
    let mut seen = BTreeMap::new();
    for (i, token) in credentials.endpoint_tokens.iter().enumerate() {
        let at = format!("spec.credentials.endpointTokens[{i}]");
        check_id(&at, "endpointTokens", &token.id, i, &mut seen, fail);
        if !is_uuid(&token.endpoint_id) {
            fail(
                format!("{at}.endpointId"),
                format!("`{}` must be a lowercase UUID", token.endpoint_id),
            );
        }
        if !versions.contains(&token.app_version.as_str()) {
            fail(
                format!("{at}.appVersion"),
                format!("`{}` is not a version in spec.applications", token.app_version),
            );
        }
    }
}

/// An id names a Secret or a Secret key: a DNS label, unique in its list.
fn check_id<'a>(
    at: &str,
    list: &str,
    id: &'a str,
    index: usize,
    seen: &mut BTreeMap<&'a str, usize>,
    fail: &mut impl FnMut(String, String),
) {
    if !is_dns_label(id) {
        fail(
            format!("{at}.id"),
            format!("`{id}` must be lowercase letters, digits and `-`"),
        );
    }
    if let Some(first) = seen.insert(id, index) {
        fail(
            format!("{at}.id"),
            format!("`{id}` is the id of {list}[{first}] already"),
        );
    }
}

/// The cm instance with `storage: kubernetes`, and its password hash settings.
fn cm(services: &[Planned]) -> Option<(&Planned, &PasswordHashSettings)> {
    services.iter().find_map(|p| match &p.config {
        ServiceConfig::Cm(cm) if cm.storage == CmStorage::Kubernetes => Some((p, &cm.password_hash)),
        _ => None,
    })
}

/// Writes every declared credential the cluster does not hold yet; returns the Secrets written
/// (`Secret/name`, for the event).
pub async fn ensure(
    client: &Client,
    blueprint: &Blueprint,
    validated: &Validated,
) -> Result<Vec<String>, CredentialError> {
    let Some(credentials) = &blueprint.spec.blueprint.credentials else {
        return Ok(Vec::new());
    };
    let Some((cm, cost)) = cm(&validated.services) else {
        return Ok(Vec::new());
    };
    let namespace = blueprint.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let writer = Writer {
        api: &api,
        blueprint,
        instance: cm.spec.instance_name(),
    };
    let mut written = Vec::new();
    for c in &credentials.clients {
        let name = format!("kaa-ccm-{}-{}", writer.instance, c.id);
        if get(&api, &name).await?.is_some() {
            continue;
        }
        let mut data = BTreeMap::from([
            ("clientId", c.client_id.clone()),
            ("status", "Active".to_owned()),
            ("createdAt", now_millis().to_string()),
        ]);
        match (&c.username, &c.password_secret, &c.certificate) {
            (Some(username), Some(secret), _) => {
                let password = read(&api, secret, &format!("clients `{}`", c.id)).await?;
                data.insert("username", username.clone());
                data.insert(
                    "passwordHash",
                    hash_password(&password, cost).map_err(|()| CredentialError::Hash(c.id.clone()))?,
                );
            }
            (_, _, Some(certificate)) => {
                data.insert("issuer", certificate.issuer.clone());
                data.insert("serial", certificate.serial_number.clone());
            }
            // Refused by `check`.
            _ => continue,
        }
        let secret = writer.secret(
            &name,
            CLIENT_CREDENTIAL,
            None,
            data.into_iter().map(|(k, v)| (k.to_owned(), v.into_bytes())),
        );
        if writer.create(&secret).await? {
            written.push(format!("Secret/{name}"));
        }
    }
    for t in &credentials.endpoint_tokens {
        let name = format!("kaa-cm-{}-ep-{}", writer.instance, t.endpoint_id);
        let existing = get(&api, &name).await?;
        if existing
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .is_some_and(|d| d.contains_key(&t.id))
        {
            continue;
        }
        let value = read(&api, &t.token_secret, &format!("endpointTokens `{}`", t.id)).await?;
        let app_name = blueprint
            .spec
            .blueprint
            .applications
            .iter()
            .find(|a| a.versions.iter().any(|v| v.name == t.app_version))
            .map(|a| a.name.clone())
            .unwrap_or_default();
        let record = serde_json::json!({
            "sha256": sha256_hex(&value),
            "appName": app_name,
            "appVersion": t.app_version,
            "status": "Inactive",
            "createdAt": now_millis(),
        });
        let entry = (t.id.clone(), record.to_string().into_bytes());
        let done = match existing {
            None => {
                let annotation = (ENDPOINT_ID_ANNOTATION, t.endpoint_id.as_str());
                writer
                    .create(&writer.secret(&name, ENDPOINT_TOKENS, Some(annotation), [entry]))
                    .await?
            }
            Some(mut secret) => {
                // Only the missing entry is added; the resourceVersion read above makes a
                // concurrent change by the cm a 409, retried by the next reconcile.
                secret
                    .data
                    .get_or_insert_with(BTreeMap::new)
                    .insert(entry.0, ByteString(entry.1));
                api.replace(&name, &PostParams::default(), &secret)
                    .await
                    .map_err(|source| CredentialError::Api {
                        action: "update",
                        name: name.clone(),
                        source,
                    })?;
                true
            }
        };
        if done {
            written.push(format!("Secret/{name}"));
        }
    }
    Ok(written)
}

struct Writer<'a> {
    api: &'a Api<Secret>,
    blueprint: &'a Blueprint,
    instance: &'a str,
}

impl Writer<'_> {
    fn secret(
        &self,
        name: &str,
        kind: &str,
        annotation: Option<(&str, &str)>,
        data: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: self.blueprint.namespace(),
                labels: Some(BTreeMap::from([
                    (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
                    (CM_LABEL.to_owned(), self.instance.to_owned()),
                    (KIND_LABEL.to_owned(), kind.to_owned()),
                    (BLUEPRINT_LABEL.to_owned(), self.blueprint.name_any()),
                ])),
                annotations: annotation.map(|(k, v)| BTreeMap::from([(k.to_owned(), v.to_owned())])),
                owner_references: self.blueprint.controller_owner_ref(&()).map(|o| vec![o]),
                ..ObjectMeta::default()
            },
            type_: Some(format!("kaa-rs.dev/{kind}")),
            data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
            ..Secret::default()
        }
    }

    /// `false` when someone else created it first (theirs stands).
    async fn create(&self, secret: &Secret) -> Result<bool, CredentialError> {
        match self.api.create(&PostParams::default(), secret).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(source) => Err(CredentialError::Api {
                action: "create",
                name: secret.metadata.name.clone().unwrap_or_default(),
                source,
            }),
        }
    }
}

async fn get(api: &Api<Secret>, name: &str) -> Result<Option<Secret>, CredentialError> {
    api.get_opt(name).await.map_err(|source| CredentialError::Api {
        action: "read",
        name: name.to_owned(),
        source,
    })
}

/// The value under `reference`; the error names the Secret and key, never a value.
async fn read(api: &Api<Secret>, reference: &SecretKeyRef, what: &str) -> Result<String, CredentialError> {
    let missing = |why: &str| {
        CredentialError::Source(format!(
            "{what}: Secret `{}` key `{}` {why}",
            reference.name, reference.key
        ))
    };
    let secret = get(api, &reference.name)
        .await?
        .ok_or_else(|| missing("not found (the Secret does not exist)"))?;
    let bytes = secret
        .data
        .and_then(|mut d| d.remove(&reference.key))
        .ok_or_else(|| missing("not found"))?;
    let value = String::from_utf8(bytes.0).map_err(|_| missing("is not UTF-8"))?;
    let value = value.trim_end_matches(['\r', '\n']).to_owned();
    if value.is_empty() {
        return Err(missing("is empty"));
    }
    Ok(value)
}

fn hash_password(password: &str, cost: &PasswordHashSettings) -> Result<String, ()> {
    let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None).map_err(|_| ())?;
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| ())?;
    let salt = SaltString::encode_b64(&bytes).map_err(|_| ())?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| ())
}

/// Lowercase hex SHA-256: how the cm finds a token by its value.
fn sha256_hex(value: &str) -> String {
    Sha256::digest(value.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn now_millis() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}
