//! Secrets -> records: which kind a Secret is, whose it is, and its entries, with what could not be
//! read (names and reasons, never values).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kaa_protocol::ecap::canonical_serial;
use kaa_store::{ClientCredential, CredentialKind, CredentialStatus, EndpointToken, TokenStatus};

use super::{
    CLIENT_CREDENTIAL, CredentialEntry, ENDPOINT_ID_ANNOTATION, ENDPOINT_TOKENS, EndpointEntry, KIND_LABEL,
    Layout, Parsed, Reading, StoredToken, TokenRecord,
};

impl Layout {
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
