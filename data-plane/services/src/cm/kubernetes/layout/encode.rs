//! Records -> Secrets: new endpoint and credential Secrets, and token entries written into existing
//! ones.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kaa_store::CredentialKind;
use kube::api::ObjectMeta;

use super::{
    CLIENT_CREDENTIAL, CLIENT_CREDENTIAL_TYPE, CredentialEntry, ENDPOINT_ID_ANNOTATION, ENDPOINT_TOKENS,
    ENDPOINT_TOKENS_TYPE, Layout, StoredToken, TokenRecord,
};

impl Layout {
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
