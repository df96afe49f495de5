//! The Secret layout of CM's Kubernetes backend: names, labels, types and data keys, and the
//! conversion between Secrets and CM's records. Pure: no client, no I/O.
//!
//! ```text
//! kind: Secret                                   kind: Secret
//! metadata:                                      metadata:
//!   name: kaa-cm-<instance>-ep-<endpointId>        name: kaa-ccm-<instance>-<credentialId>
//!   annotations:
//!     kaa-rs.dev/endpoint-id: <endpointId>
//!   labels:                                        labels:
//!     app.kubernetes.io/managed-by: kaa-rs           app.kubernetes.io/managed-by: kaa-rs
//!     kaa-rs.dev/cm: <instance>                      kaa-rs.dev/cm: <instance>
//!     kaa-rs.dev/kind: endpoint-tokens               kaa-rs.dev/kind: client-credential
//! type: kaa-rs.dev/endpoint-tokens               type: kaa-rs.dev/client-credential
//! data:                                          data:
//!   <tokenId>: {"sha256": "<hex of SHA-256          clientId: <client id>
//!     of the token value>", "appName": ..,          username: <username>         \ password
//!     "appVersion": .., "status": "Inactive"|       passwordHash: <argon2id PHC>  / credential
//!     "Active"|"Suspended"|"Revoked",               issuer: <RFC 4514 issuer DN> \ certificate
//!     "createdAt": <unix ms>}                       serial: <base-10 serial>      / credential
//!   <tokenId>: ...                                  status: Active | Revoked      (default Active)
//!                                                   createdAt: <unix ms>          (optional)
//! ```
//!
//! CM finds its Secrets by the label `kaa-rs.dev/cm=<instance>`, tells the two kinds apart by
//! `kaa-rs.dev/kind`, and takes the credential id from the name and the endpoint id from the
//! annotation `kaa-rs.dev/endpoint-id` (or, without it, from the name). Endpoint ids are UUIDs, so
//! a lowercase one is a valid name part as it is; any other (EPR accepts a caller's UUID in upper
//! case) is named by its hash, `kaa-cm-<instance>-ep.<first 56 hex digits of its SHA-256>`, which
//! the '.' keeps apart from every plain name. Whoever writes these
//! Secrets (CM itself, the operator from a Blueprint, `kubectl`) follows the same layout. An entry
//! that does not parse is left alone when CM rewrites its Secret, and ignored for validation: an
//! unreadable token or credential authenticates nothing.
//!
//! Why one Secret per endpoint (all its tokens) and one per credential, and not one per token or
//! one per batch: an endpoint holds a handful of tokens of ~200 bytes each, far below the 1 MiB
//! Secret limit even with thousands; the object count grows with endpoints, not tokens; a change to
//! one endpoint's tokens is one watch event carrying only that endpoint (a batch Secret would send
//! the whole batch to every replica on every change, and make unrelated endpoints contend for one
//! resourceVersion); deleting an endpoint deletes one object. Credentials are independent of each
//! other and of endpoints, so each is its own object, named by its id.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kaa_protocol::ecap::canonical_serial;
use kaa_store::{ClientCredential, CredentialKind, CredentialStatus, EndpointToken, TokenStatus};
use kube::api::ObjectMeta;
use serde::{Deserialize, Serialize};

/// `app.kubernetes.io/managed-by` value on every Secret CM writes.
pub const MANAGED_BY: &str = "kaa-rs";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The CM instance a Secret belongs to; CM watches only its own.
pub const CM_LABEL: &str = "kaa-rs.dev/cm";
/// `endpoint-tokens` or `client-credential`.
pub const KIND_LABEL: &str = "kaa-rs.dev/kind";
/// The endpoint an `endpoint-tokens` Secret belongs to (its name may only hash it).
pub const ENDPOINT_ID_ANNOTATION: &str = "kaa-rs.dev/endpoint-id";
pub const ENDPOINT_TOKENS: &str = "endpoint-tokens";
pub const CLIENT_CREDENTIAL: &str = "client-credential";
/// Secret `type`s, so that `kubectl get secrets --field-selector type=...` finds them.
pub const ENDPOINT_TOKENS_TYPE: &str = "kaa-rs.dev/endpoint-tokens";
pub const CLIENT_CREDENTIAL_TYPE: &str = "kaa-rs.dev/client-credential";

/// Longest DNS-1123 label (and label value).
const MAX_LABEL: usize = 63;
/// Longest Secret name (DNS-1123 subdomain).
const MAX_NAME: usize = 253;
/// Hex digits of an endpoint id's SHA-256 in a hashed name (one DNS label: at most 63).
const HASHED_ID_LEN: usize = 56;

/// A name that cannot be part of this layout.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error(
        "the CM instance name {0:?} cannot label Kubernetes Secrets: use 1..=63 lowercase letters, \
         digits and '-', starting and ending with a letter or digit"
    )]
    Instance(String),
    #[error("credential id {0:?} cannot name a Kubernetes Secret")]
    CredentialId(String),
}

/// Whether `s` is a DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LABEL
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// One token as stored under its id in an endpoint's Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenRecord {
    sha256: String,
    app_name: String,
    app_version: String,
    status: String,
    #[serde(default)]
    created_at: i64,
}

/// A token with the hash it is found by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub token: EndpointToken,
    /// Lowercase hex SHA-256 of the value ([`kaa_store::token_hash`]).
    pub hash: String,
}

/// What CM reads from one endpoint's Secret.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointEntry {
    pub endpoint_id: String,
    /// By token id.
    pub tokens: BTreeMap<String, StoredToken>,
}

/// What CM reads from one credential's Secret. `Debug` hides the hash.
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialEntry {
    pub credential: ClientCredential,
    pub password_hash: Option<String>,
}

impl std::fmt::Debug for CredentialEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialEntry")
            .field("credential", &self.credential)
            .field("password_hash", &self.password_hash.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A Secret as CM understands it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Endpoint(EndpointEntry),
    Credential(CredentialEntry),
    /// Not one of CM's (another kind label, a name outside the layout), or an unusable credential.
    Ignored,
}

/// A Secret, parsed, with what could not be read in it (entry names and reasons, never values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub parsed: Parsed,
    pub problems: Vec<String>,
}

/// Names and parses the Secrets of one CM instance.
#[derive(Debug, Clone)]
pub struct Layout {
    instance: String,
    endpoint_prefix: String,
    credential_prefix: String,
}

impl Layout {
    /// `instance` becomes a label value and part of every name, so it must be a DNS-1123 label.
    pub fn new(instance: &str) -> Result<Layout, LayoutError> {
        if !is_dns_label(instance) {
            return Err(LayoutError::Instance(instance.to_owned()));
        }
        Ok(Layout {
            instance: instance.to_owned(),
            endpoint_prefix: format!("kaa-cm-{instance}-ep-"),
            credential_prefix: format!("kaa-ccm-{instance}-"),
        })
    }

    /// The label selector of this instance's Secrets.
    pub fn selector(&self) -> String {
        format!("{CM_LABEL}={}", self.instance)
    }

    /// `kaa-cm-<instance>-ep-<endpointId>`, or `kaa-cm-<instance>-ep.<hash>` for an id that
    /// cannot be part of a name.
    pub fn endpoint_secret_name(&self, endpoint_id: &str) -> String {
        match is_dns_label(endpoint_id) {
            true => format!("{}{endpoint_id}", self.endpoint_prefix),
            false => {
                // SHA-256 hex, as for token values.
                let hash = kaa_store::token_hash(endpoint_id);
                let stem = self.endpoint_prefix.trim_end_matches('-');
                format!("{stem}.{}", &hash[..HASHED_ID_LEN])
            }
        }
    }

    /// `kaa-ccm-<instance>-<credentialId>`.
    pub fn credential_secret_name(&self, credential_id: &str) -> Result<String, LayoutError> {
        let name = format!("{}{credential_id}", self.credential_prefix);
        match is_dns_label(credential_id) && name.len() <= MAX_NAME {
            true => Ok(name),
            false => Err(LayoutError::CredentialId(credential_id.to_owned())),
        }
    }

    fn labels(&self, kind: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
            (CM_LABEL.to_owned(), self.instance.clone()),
            (KIND_LABEL.to_owned(), kind.to_owned()),
        ])
    }

    /// A new endpoint Secret holding `token`.
    pub fn new_endpoint_secret(&self, name: &str, token: &StoredToken) -> Secret {
        let mut secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(self.labels(ENDPOINT_TOKENS)),
                annotations: Some(BTreeMap::from([(
                    ENDPOINT_ID_ANNOTATION.to_owned(),
                    token.token.endpoint_id.clone(),
                )])),
                ..Default::default()
            },
            type_: Some(ENDPOINT_TOKENS_TYPE.to_owned()),
            ..Default::default()
        };
        put_token(&mut secret, token);
        secret
    }

    /// Makes an existing Secret (say, one created by hand without labels) one of this instance's
    /// endpoint Secrets, so that the watch sees what CM writes to it.
    pub fn claim_endpoint_secret(&self, secret: &mut Secret, endpoint_id: &str) {
        secret
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .extend(self.labels(ENDPOINT_TOKENS));
        secret
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(ENDPOINT_ID_ANNOTATION.to_owned(), endpoint_id.to_owned());
    }

    /// A new credential Secret.
    pub fn new_credential_secret(&self, name: &str, entry: &CredentialEntry) -> Secret {
        let c = &entry.credential;
        let mut data = BTreeMap::from([
            ("clientId".to_owned(), c.client_id.clone()),
            ("status".to_owned(), c.status.as_str().to_owned()),
            ("createdAt".to_owned(), c.created_at.to_string()),
        ]);
        match &c.kind {
            CredentialKind::Password { username } => {
                data.insert("username".into(), username.clone());
                if let Some(hash) = &entry.password_hash {
                    data.insert("passwordHash".into(), hash.clone());
                }
            }
            CredentialKind::Certificate { issuer, serial } => {
                data.insert("issuer".into(), issuer.clone());
                data.insert("serial".into(), serial.clone());
            }
        }
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(self.labels(CLIENT_CREDENTIAL)),
                ..Default::default()
            },
            type_: Some(CLIENT_CREDENTIAL_TYPE.to_owned()),
            data: Some(
                data.into_iter()
                    .map(|(k, v)| (k, ByteString(v.into_bytes())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    /// Reads a Secret of this instance (the watch selects by the instance label already).
    pub fn read(&self, secret: &Secret) -> Reading {
        let name = secret.metadata.name.as_deref().unwrap_or_default();
        let kind = secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(KIND_LABEL))
            .map(String::as_str);
        let ignored = |why: String| Reading {
            parsed: Parsed::Ignored,
            problems: vec![why],
        };
        let annotated = secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ENDPOINT_ID_ANNOTATION))
            .map(String::as_str);
        let from_name = name
            .strip_prefix(&self.endpoint_prefix)
            .filter(|id| !id.is_empty());
        match kind {
            Some(ENDPOINT_TOKENS) => match annotated.or(from_name) {
                // The name must be the one CM would give this endpoint: a Secret cannot claim
                // another endpoint's id.
                Some(endpoint_id) if self.endpoint_secret_name(endpoint_id) == name => {
                    read_endpoint(endpoint_id, secret)
                }
                _ => ignored(format!(
                    "an {ENDPOINT_TOKENS} Secret must be named {}<endpointId> (or the hashed form \
                     of annotation {ENDPOINT_ID_ANNOTATION})",
                    self.endpoint_prefix
                )),
            },
            Some(CLIENT_CREDENTIAL) => match name.strip_prefix(&self.credential_prefix) {
                Some(id) if !id.is_empty() => read_credential(id, secret),
                _ => ignored(format!(
                    "a {CLIENT_CREDENTIAL} Secret must be named {}<credentialId>",
                    self.credential_prefix
                )),
            },
            other => ignored(format!(
                "label {KIND_LABEL} is {other:?}, not {ENDPOINT_TOKENS:?} or {CLIENT_CREDENTIAL:?}"
            )),
        }
    }
}

/// Stores (or overwrites) one token entry in an endpoint Secret, leaving other entries alone.
pub fn put_token(secret: &mut Secret, token: &StoredToken) {
    let t = &token.token;
    let record = TokenRecord {
        sha256: token.hash.clone(),
        app_name: t.app_name.clone(),
        app_version: t.app_version.clone(),
        status: t.status.as_str().to_owned(),
        created_at: t.created_at,
    };
    // Serializing a struct of strings and an integer cannot fail; an empty entry would read as
    // invalid (fail closed) if it ever did.
    let json = serde_json::to_vec(&record).unwrap_or_default();
    secret
        .data
        .get_or_insert_with(BTreeMap::new)
        .insert(t.id.clone(), ByteString(json));
}

/// The token stored under `token_id` in an endpoint Secret, if it parses.
pub fn token_in(secret: &Secret, endpoint_id: &str, token_id: &str) -> Option<StoredToken> {
    let bytes = secret.data.as_ref()?.get(token_id)?;
    parse_token(endpoint_id, token_id, &bytes.0).ok()
}

fn read_endpoint(endpoint_id: &str, secret: &Secret) -> Reading {
    let mut entry = EndpointEntry {
        endpoint_id: endpoint_id.to_owned(),
        tokens: BTreeMap::new(),
    };
    let mut problems = Vec::new();
    for (token_id, bytes) in secret.data.iter().flatten() {
        match parse_token(endpoint_id, token_id, &bytes.0) {
            Ok(token) => {
                entry.tokens.insert(token_id.clone(), token);
            }
            Err(why) => problems.push(format!("token {token_id}: {why}")),
        }
    }
    Reading {
        parsed: Parsed::Endpoint(entry),
        problems,
    }
}

fn parse_token(endpoint_id: &str, token_id: &str, bytes: &[u8]) -> Result<StoredToken, String> {
    // serde_json's own messages may quote input; only the position is reported.
    let record: TokenRecord = serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "not a token record (JSON error at line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    let hash = record.sha256.to_ascii_lowercase();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("sha256 must be 64 hex digits".to_owned());
    }
    let status: TokenStatus = record
        .status
        .parse()
        .map_err(|_| "status must be Inactive, Active, Suspended or Revoked".to_owned())?;
    if record.app_name.is_empty() {
        return Err("appName must not be empty".to_owned());
    }
    Ok(StoredToken {
        token: EndpointToken {
            id: token_id.to_owned(),
            endpoint_id: endpoint_id.to_owned(),
            app_name: record.app_name,
            app_version: record.app_version,
            status,
            created_at: record.created_at,
        },
        hash,
    })
}

fn read_credential(id: &str, secret: &Secret) -> Reading {
    let data = secret.data.as_ref();
    let field = |key: &str| {
        data.and_then(|d| d.get(key))
            .map(|b| String::from_utf8(b.0.clone()).map_err(|_| format!("{key} is not UTF-8")))
            .transpose()
    };
    let parsed = (|| {
        let client_id = field("clientId")?
            .filter(|c| !c.is_empty())
            .ok_or("clientId is missing")?;
        let kind = match (
            field("username")?,
            field("passwordHash")?,
            field("issuer")?,
            field("serial")?,
        ) {
            (Some(username), Some(hash), None, None) if !username.is_empty() => {
                (CredentialKind::Password { username }, Some(hash))
            }
            (None, None, Some(issuer), Some(serial)) if !issuer.is_empty() => {
                let serial = canonical_serial(&serial).ok_or("serial must be a base-10 integer")?;
                (CredentialKind::Certificate { issuer, serial }, None)
            }
            _ => return Err("give exactly username + passwordHash or issuer + serial".to_owned()),
        };
        let status = match field("status")?.as_deref() {
            None | Some("Active") => CredentialStatus::Active,
            Some("Revoked") => CredentialStatus::Revoked,
            Some(_) => return Err("status must be Active or Revoked".to_owned()),
        };
        let created_at = match field("createdAt")? {
            Some(ms) => ms
                .trim()
                .parse()
                .map_err(|_| "createdAt must be Unix milliseconds")?,
            None => secret
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| t.0.as_millisecond()),
        };
        Ok::<_, String>(CredentialEntry {
            credential: ClientCredential {
                id: id.to_owned(),
                client_id,
                kind: kind.0,
                status,
                created_at,
            },
            password_hash: kind.1,
        })
    })();
    match parsed {
        Ok(entry) => Reading {
            parsed: Parsed::Credential(entry),
            problems: Vec::new(),
        },
        Err(why) => Reading {
            parsed: Parsed::Ignored,
            problems: vec![format!("credential {id}: {why}")],
        },
    }
}

#[cfg(test)]
mod tests {
    use kaa_store::token_hash;

    use super::*;

    fn layout() -> Layout {
        Layout::new("cm").unwrap()
    }

    fn stored(id: &str, endpoint: &str, value: &str, status: TokenStatus) -> StoredToken {
        StoredToken {
            token: EndpointToken {
                id: id.into(),
                endpoint_id: endpoint.into(),
                app_name: "meter".into(),
                app_version: "meter-v1".into(),
                status,
                created_at: 42,
            },
            hash: token_hash(value),
        }
    }

    /// DNS-1123 subdomain: dot-separated DNS labels, at most 253 characters.
    fn is_dns_subdomain(name: &str) -> bool {
        name.len() <= 253 && name.split('.').all(is_dns_label)
    }

    #[test]
    fn names_are_dns_1123() {
        let l = layout();
        let ep = "5f1c3a4e-9b0d-4c7e-8a21-3d6f0b9e1c2a";
        assert_eq!(l.endpoint_secret_name(ep), format!("kaa-cm-cm-ep-{ep}"));
        assert_eq!(l.credential_secret_name(ep).unwrap(), format!("kaa-ccm-cm-{ep}"));
        // Other ids are hashed into a valid name, distinct from every plain one.
        let upper = ep.to_uppercase();
        let hashed = l.endpoint_secret_name(&upper);
        assert!(hashed.starts_with("kaa-cm-cm-ep."), "{hashed}");
        assert!(is_dns_subdomain(&hashed), "{hashed}");
        assert_ne!(hashed, l.endpoint_secret_name(&format!("{upper} ")));
        for odd in ["", "a_b", "-a", "a.b", &"a".repeat(300)] {
            assert!(is_dns_subdomain(&l.endpoint_secret_name(odd)), "{odd:?}");
            assert!(l.credential_secret_name(odd).is_err(), "{odd:?}");
        }
        assert!(is_dns_subdomain(&l.endpoint_secret_name(ep)));
        for bad in ["", "CM", "cm_1", "cm.1", "-cm"] {
            assert_eq!(Layout::new(bad).unwrap_err(), LayoutError::Instance(bad.into()));
        }
        assert_eq!(l.selector(), "kaa-rs.dev/cm=cm");
    }

    #[test]
    fn endpoint_secrets_round_trip() {
        let l = layout();
        let a = stored("t-1", "ep-1", "value-a", TokenStatus::Inactive);
        let b = stored("t-2", "ep-1", "value-b", TokenStatus::Suspended);
        let mut secret = l.new_endpoint_secret("kaa-cm-cm-ep-ep-1", &a);
        assert_eq!(
            secret.metadata.annotations.as_ref().unwrap()[ENDPOINT_ID_ANNOTATION],
            "ep-1"
        );
        put_token(&mut secret, &b);
        let labels = secret.metadata.labels.clone().unwrap();
        assert_eq!(labels[MANAGED_BY_LABEL], "kaa-rs");
        assert_eq!(labels[CM_LABEL], "cm");
        assert_eq!(labels[KIND_LABEL], "endpoint-tokens");
        assert_eq!(secret.type_.as_deref(), Some("kaa-rs.dev/endpoint-tokens"));
        let raw = String::from_utf8(secret.data.as_ref().unwrap()["t-1"].0.clone()).unwrap();
        let json: serde_json::Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"sha256": token_hash("value-a"), "appName": "meter",
                "appVersion": "meter-v1", "status": "Inactive", "createdAt": 42})
        );
        assert!(!raw.contains("value-a"), "only the hash is stored");

        let reading = l.read(&secret);
        assert!(reading.problems.is_empty(), "{:?}", reading.problems);
        let Parsed::Endpoint(entry) = reading.parsed else {
            panic!("{reading:?}")
        };
        assert_eq!(entry.endpoint_id, "ep-1");
        assert_eq!(entry.tokens["t-1"], a);
        assert_eq!(entry.tokens["t-2"], b);
        assert_eq!(token_in(&secret, "ep-1", "t-2"), Some(b));
        assert_eq!(token_in(&secret, "ep-1", "t-3"), None);
    }

    #[test]
    fn bad_token_entries_are_skipped_without_quoting_them() {
        let l = layout();
        let mut secret = l.new_endpoint_secret(
            "kaa-cm-cm-ep-ep-1",
            &stored("ok", "ep-1", "v", TokenStatus::Active),
        );
        let data = secret.data.as_mut().unwrap();
        data.insert("garbage".into(), ByteString(b"SECRET-not-json".to_vec()));
        data.insert(
            "short-hash".into(),
            ByteString(br#"{"sha256":"SECRET","appName":"a","appVersion":"v","status":"Active"}"#.to_vec()),
        );
        data.insert(
            "bad-status".into(),
            ByteString(
                format!(
                    r#"{{"sha256":"{}","appName":"a","appVersion":"v","status":"Gone"}}"#,
                    "a".repeat(64)
                )
                .into_bytes(),
            ),
        );
        let reading = l.read(&secret);
        let Parsed::Endpoint(entry) = &reading.parsed else {
            panic!()
        };
        assert_eq!(entry.tokens.keys().collect::<Vec<_>>(), ["ok"]);
        assert_eq!(reading.problems.len(), 3, "{:?}", reading.problems);
        assert!(
            !reading.problems.join(" ").contains("SECRET"),
            "{:?}",
            reading.problems
        );
    }

    #[test]
    fn credential_secrets_round_trip() {
        let l = layout();
        let password = CredentialEntry {
            credential: ClientCredential {
                id: "c-1".into(),
                client_id: "gw".into(),
                kind: CredentialKind::Password {
                    username: "alice".into(),
                },
                status: CredentialStatus::Active,
                created_at: 7,
            },
            password_hash: Some("$argon2id$v=19$m=64,t=1,p=1$c2FsdA$aGFzaA".into()),
        };
        let secret = l.new_credential_secret("kaa-ccm-cm-c-1", &password);
        assert_eq!(secret.type_.as_deref(), Some(CLIENT_CREDENTIAL_TYPE));
        assert_eq!(
            secret.data.as_ref().unwrap().keys().collect::<Vec<_>>(),
            ["clientId", "createdAt", "passwordHash", "status", "username"]
        );
        assert_eq!(l.read(&secret).parsed, Parsed::Credential(password.clone()));
        assert!(!format!("{password:?}").contains("argon2"));

        let certificate = CredentialEntry {
            credential: ClientCredential {
                id: "c-2".into(),
                client_id: "meter".into(),
                kind: CredentialKind::Certificate {
                    issuer: "CN=Devices CA".into(),
                    serial: "4660".into(),
                },
                status: CredentialStatus::Revoked,
                created_at: 8,
            },
            password_hash: None,
        };
        let secret = l.new_credential_secret("kaa-ccm-cm-c-2", &certificate);
        assert_eq!(l.read(&secret).parsed, Parsed::Credential(certificate));
    }

    #[test]
    fn hand_written_credentials_are_read_leniently_and_checked_strictly() {
        let l = layout();
        let secret = |data: &[(&str, &str)]| Secret {
            metadata: ObjectMeta {
                name: Some("kaa-ccm-cm-from-blueprint".into()),
                labels: Some(BTreeMap::from([(KIND_LABEL.into(), CLIENT_CREDENTIAL.into())])),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        // No status, no createdAt, a serial with leading zeros: Active, 0, canonical serial.
        let reading = l.read(&secret(&[
            ("clientId", "meter"),
            ("issuer", "CN=CA"),
            ("serial", "004660"),
        ]));
        let Parsed::Credential(entry) = reading.parsed else {
            panic!("{reading:?}")
        };
        assert_eq!(entry.credential.id, "from-blueprint");
        assert_eq!(entry.credential.status, CredentialStatus::Active);
        assert_eq!(
            entry.credential.kind,
            CredentialKind::Certificate {
                issuer: "CN=CA".into(),
                serial: "4660".into()
            }
        );
        for bad in [
            &[("issuer", "CN=CA"), ("serial", "1")][..],
            &[("clientId", "c"), ("username", "u")],
            &[
                ("clientId", "c"),
                ("username", "u"),
                ("passwordHash", "h"),
                ("issuer", "CN=CA"),
                ("serial", "1"),
            ],
            &[("clientId", "c"), ("issuer", "CN=CA"), ("serial", "0x1")],
            &[
                ("clientId", "c"),
                ("username", "u"),
                ("passwordHash", "h"),
                ("status", "Suspended"),
            ],
        ] {
            let reading = l.read(&secret(bad));
            assert_eq!(reading.parsed, Parsed::Ignored, "{bad:?}");
            assert_eq!(reading.problems.len(), 1);
            assert!(
                !reading.problems[0].contains("passwordHash\": "),
                "{:?}",
                reading.problems
            );
        }
    }

    #[test]
    fn hashed_names_carry_the_id_in_the_annotation() {
        let l = layout();
        let id = "5F1C3A4E-9B0D-4C7E-8A21-3D6F0B9E1C2A";
        let name = l.endpoint_secret_name(id);
        let mut token = stored("t", id, "v", TokenStatus::Active);
        token.token.endpoint_id = id.into();
        let mut secret = l.new_endpoint_secret(&name, &token);
        let Parsed::Endpoint(entry) = l.read(&secret).parsed else {
            panic!()
        };
        assert_eq!(entry.endpoint_id, id);
        // An annotation that does not match the name is not believed.
        secret
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ENDPOINT_ID_ANNOTATION.into(), "someone-else".into());
        assert_eq!(l.read(&secret).parsed, Parsed::Ignored);
        // Without the annotation, a plain name says the id.
        let mut plain =
            l.new_endpoint_secret("kaa-cm-cm-ep-e-1", &stored("t", "e-1", "v", TokenStatus::Active));
        plain.metadata.annotations = None;
        let Parsed::Endpoint(entry) = l.read(&plain).parsed else {
            panic!()
        };
        assert_eq!(entry.endpoint_id, "e-1");
    }

    #[test]
    fn foreign_secrets_are_ignored() {
        let l = layout();
        let mut secret =
            l.new_endpoint_secret("some-other-name", &stored("t", "e", "v", TokenStatus::Active));
        assert_eq!(l.read(&secret).parsed, Parsed::Ignored);
        secret.metadata.name = Some("kaa-cm-cm-ep-e".into());
        secret
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(KIND_LABEL.into(), "something".into());
        assert_eq!(l.read(&secret).parsed, Parsed::Ignored);
    }
}
