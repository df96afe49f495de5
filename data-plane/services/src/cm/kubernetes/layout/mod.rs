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
//!
//! This module names the Secrets and holds the parsed forms; `encode` builds and edits Secrets from
//! records, `decode` reads records (and what is wrong with them) out of Secrets.

use std::collections::BTreeMap;

use kaa_store::{ClientCredential, EndpointToken};
use serde::{Deserialize, Serialize};

pub use decode::token_in;
pub use encode::put_token;

mod decode;
mod encode;

#[cfg(test)]
mod tests;

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
}
