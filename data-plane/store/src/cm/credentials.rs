//! Client credentials: a username with a password hash, or a TLS client certificate named by
//! issuer and serial number.

use std::fmt;

use sqlx::{Row, any::AnyRow};

use super::CmError;
use crate::{Store, clamp_i64, is_unique_violation, now_millis};

/// How a client credential authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialKind {
    Password {
        username: String,
    },
    Certificate {
        /// The issuer DN as an RFC 4514-style string.
        issuer: String,
        /// Serial number, base 10, no leading zeros.
        serial: String,
    },
}

impl CredentialKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            CredentialKind::Password { .. } => "password",
            CredentialKind::Certificate { .. } => "certificate",
        }
    }
}

/// Lifecycle state of a client credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialStatus {
    Active,
    Revoked,
}

impl CredentialStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialStatus::Active => "Active",
            CredentialStatus::Revoked => "Revoked",
        }
    }
}

/// A credential to store.
#[derive(Debug, Clone)]
pub struct NewCredential {
    pub client_id: String,
    pub auth: NewAuth,
}

/// How a new credential authenticates. `Debug` hides the password hash.
#[derive(Clone)]
pub enum NewAuth {
    /// `password_hash` is the hash string the service computed (argon2id PHC format).
    Password { username: String, password_hash: String },
    /// `serial` in base 10 without leading zeros.
    Certificate { issuer: String, serial: String },
}

impl fmt::Debug for NewAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NewAuth::Password { username, .. } => f
                .debug_struct("Password")
                .field("username", username)
                .field("password_hash", &"***")
                .finish(),
            NewAuth::Certificate { issuer, serial } => f
                .debug_struct("Certificate")
                .field("issuer", issuer)
                .field("serial", serial)
                .finish(),
        }
    }
}

impl NewAuth {
    /// What the credential is known by, and the password hash to keep (password credentials only).
    pub fn into_parts(self) -> (CredentialKind, Option<String>) {
        match self {
            NewAuth::Password {
                username,
                password_hash,
            } => (CredentialKind::Password { username }, Some(password_hash)),
            NewAuth::Certificate { issuer, serial } => (CredentialKind::Certificate { issuer, serial }, None),
        }
    }
}

/// A stored client credential, without its password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCredential {
    pub id: String,
    pub client_id: String,
    pub kind: CredentialKind,
    pub status: CredentialStatus,
    /// Unix milliseconds.
    pub created_at: i64,
}

impl ClientCredential {
    /// A credential as every backend stores it when registered: a fresh UUID, `Active`, created
    /// now.
    pub fn issue(client_id: String, kind: CredentialKind) -> ClientCredential {
        ClientCredential {
            id: uuid::Uuid::new_v4().to_string(),
            client_id,
            kind,
            status: CredentialStatus::Active,
            created_at: now_millis(),
        }
    }
}

/// A password credential with the hash to verify against. `Debug` hides the hash.
#[derive(Clone)]
pub struct PasswordCredential {
    pub credential: ClientCredential,
    pub password_hash: String,
}

impl fmt::Debug for PasswordCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordCredential")
            .field("credential", &self.credential)
            .field("password_hash", &"***")
            .finish()
    }
}

/// One page of credentials, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialPage {
    pub items: Vec<ClientCredential>,
    /// Number of credentials matching the filter, across all pages.
    pub total: u64,
}

/// `SELECT <credential columns><extra> FROM cm_client_credentials <rest>`, like `select_tokens`.
macro_rules! select_credentials {
    ($extra:literal, $rest:literal) => {
        concat!(
            "SELECT id, client_id, kind, username, issuer, serial, status, created_at",
            $extra,
            " FROM cm_client_credentials ",
            $rest
        )
    };
}

fn credential_from_row(row: &AnyRow) -> Result<ClientCredential, CmError> {
    let kind: String = row.try_get("kind")?;
    let username: Option<String> = row.try_get("username")?;
    let issuer: Option<String> = row.try_get("issuer")?;
    let serial: Option<String> = row.try_get("serial")?;
    let kind = match (kind.as_str(), username, issuer, serial) {
        ("password", Some(username), _, _) => CredentialKind::Password { username },
        ("certificate", _, Some(issuer), Some(serial)) => CredentialKind::Certificate { issuer, serial },
        _ => {
            return Err(CmError::Corrupt {
                what: "credential kind",
                value: kind,
            });
        }
    };
    let status: String = row.try_get("status")?;
    let status = match status.as_str() {
        "Active" => CredentialStatus::Active,
        "Revoked" => CredentialStatus::Revoked,
        _ => {
            return Err(CmError::Corrupt {
                what: "credential status",
                value: status,
            });
        }
    };
    Ok(ClientCredential {
        id: row.try_get("id")?,
        client_id: row.try_get("client_id")?,
        kind,
        status,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// Stores a new `Active` credential; a taken username or issuer+serial is a conflict.
    pub async fn insert_credential(&self, new: NewCredential) -> Result<ClientCredential, CmError> {
        let _turn = self.write_turn().await;
        let (kind, password_hash) = new.auth.into_parts();
        let credential = ClientCredential::issue(new.client_id, kind);
        let (username, issuer, serial) = match &credential.kind {
            CredentialKind::Password { username } => (Some(username), None, None),
            CredentialKind::Certificate { issuer, serial } => (None, Some(issuer), Some(serial)),
        };
        sqlx::query(
            "INSERT INTO cm_client_credentials \
             (id, client_id, kind, username, password_hash, issuer, serial, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&credential.id)
        .bind(&credential.client_id)
        .bind(credential.kind.as_str())
        .bind(username)
        .bind(password_hash)
        .bind(issuer)
        .bind(serial)
        .bind(credential.status.as_str())
        .bind(credential.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| match (is_unique_violation(&e), &credential.kind) {
            (true, CredentialKind::Password { username }) => CmError::DuplicateUsername(username.clone()),
            (true, CredentialKind::Certificate { issuer, serial }) => CmError::DuplicateCertificate {
                issuer: issuer.clone(),
                serial: serial.clone(),
            },
            (false, _) => e.into(),
        })?;
        Ok(credential)
    }

    /// One credential by id.
    pub async fn credential(&self, id: &str) -> Result<ClientCredential, CmError> {
        let row = sqlx::query(select_credentials!("", "WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| CmError::CredentialNotFound(id.to_owned()))?;
        credential_from_row(&row)
    }

    /// A page of credentials, oldest first; only those of `client_id` when given.
    pub async fn credentials(
        &self,
        client_id: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> Result<CredentialPage, CmError> {
        // `$1 IS NULL OR ...` keeps one statement for both cases; both engines accept it.
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM cm_client_credentials WHERE ($1 IS NULL OR client_id = $1)",
        )
        .bind(client_id)
        .fetch_one(&self.pool)
        .await?;
        let rows = sqlx::query(select_credentials!(
            "",
            "WHERE ($1 IS NULL OR client_id = $1) \
             ORDER BY created_at, id LIMIT $2 OFFSET $3"
        ))
        .bind(client_id)
        .bind(clamp_i64(limit))
        .bind(clamp_i64(offset))
        .fetch_all(&self.pool)
        .await?;
        Ok(CredentialPage {
            items: rows.iter().map(credential_from_row).collect::<Result<_, _>>()?,
            total: u64::try_from(total).unwrap_or(0),
        })
    }

    /// The password credential with this username, with its hash, if any.
    pub async fn password_credential(&self, username: &str) -> Result<Option<PasswordCredential>, CmError> {
        let row = sqlx::query(select_credentials!(
            ", password_hash",
            "WHERE kind = 'password' AND username = $1"
        ))
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let password_hash: Option<String> = row.try_get("password_hash")?;
        Ok(Some(PasswordCredential {
            credential: credential_from_row(&row)?,
            password_hash: password_hash.ok_or(CmError::Corrupt {
                what: "password credential",
                value: "no password hash".to_owned(),
            })?,
        }))
    }

    /// The certificate credential with this issuer and (base-10, canonical) serial, if any.
    pub async fn certificate_credential(
        &self,
        issuer: &str,
        serial: &str,
    ) -> Result<Option<ClientCredential>, CmError> {
        let row = sqlx::query(select_credentials!(
            "",
            "WHERE kind = 'certificate' AND issuer = $1 AND serial = $2"
        ))
        .bind(issuer)
        .bind(serial)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(credential_from_row).transpose()
    }

    /// Deletes a credential and returns it (for the revocation event).
    pub async fn delete_credential(&self, id: &str) -> Result<ClientCredential, CmError> {
        let (_turn, mut tx) = self.begin_write().await?;
        let row = sqlx::query(select_credentials!("", "WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| CmError::CredentialNotFound(id.to_owned()))?;
        let credential = credential_from_row(&row)?;
        let deleted = sqlx::query("DELETE FROM cm_client_credentials WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        // A concurrent delete got there first (PostgreSQL reads do not block on it): only one
        // caller reports the deletion.
        if deleted.rows_affected() == 0 {
            return Err(CmError::CredentialNotFound(id.to_owned()));
        }
        tx.commit().await?;
        Ok(credential)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::on_both;

    fn password(client_id: &str, username: &str) -> NewCredential {
        NewCredential {
            client_id: client_id.into(),
            auth: NewAuth::Password {
                username: username.into(),
                password_hash: "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA".into(),
            },
        }
    }

    fn certificate(client_id: &str, issuer: &str, serial: &str) -> NewCredential {
        NewCredential {
            client_id: client_id.into(),
            auth: NewAuth::Certificate {
                issuer: issuer.into(),
                serial: serial.into(),
            },
        }
    }
    #[tokio::test]
    async fn password_credentials() {
        on_both(|store| async move {
            let c = store.insert_credential(password("gw-1", "alice")).await.unwrap();
            assert_eq!(c.status, CredentialStatus::Active);
            assert_eq!(
                c.kind,
                CredentialKind::Password {
                    username: "alice".into()
                }
            );
            let found = store.password_credential("alice").await.unwrap().unwrap();
            assert_eq!(found.credential, c);
            assert!(found.password_hash.starts_with("$argon2id$"));
            assert!(!format!("{found:?}").contains("argon2"), "Debug hides the hash");
            assert!(store.password_credential("bob").await.unwrap().is_none());
            assert!(matches!(
                store.insert_credential(password("gw-2", "alice")).await,
                Err(CmError::DuplicateUsername(u)) if u == "alice"
            ));
            assert!(!format!("{:?}", password("gw-3", "carol")).contains("argon2"));
        })
        .await;
    }

    #[tokio::test]
    async fn certificate_credentials() {
        on_both(|store| async move {
            let c = store
                .insert_credential(certificate("meter-1", "CN=Devices CA", "4660"))
                .await
                .unwrap();
            assert_eq!(
                store
                    .certificate_credential("CN=Devices CA", "4660")
                    .await
                    .unwrap(),
                Some(c.clone())
            );
            assert_eq!(
                store.certificate_credential("CN=Other CA", "4660").await.unwrap(),
                None
            );
            assert_eq!(
                store
                    .certificate_credential("CN=Devices CA", "4661")
                    .await
                    .unwrap(),
                None
            );
            // The same serial from another issuer is another certificate.
            store
                .insert_credential(certificate("meter-2", "CN=Other CA", "4660"))
                .await
                .unwrap();
            assert!(matches!(
                store
                    .insert_credential(certificate("meter-3", "CN=Devices CA", "4660"))
                    .await,
                Err(CmError::DuplicateCertificate { .. })
            ));
            // Password credentials (NULL issuer/serial) never collide with each other.
            store.insert_credential(password("a", "a")).await.unwrap();
            store.insert_credential(password("b", "b")).await.unwrap();
            // A certificate credential is not found as a password one.
            assert!(
                store
                    .password_credential("CN=Devices CA")
                    .await
                    .unwrap()
                    .is_none()
            );
        })
        .await;
    }

    #[tokio::test]
    async fn credentials_list_pages_and_delete() {
        on_both(|store| async move {
            let mut ids = Vec::new();
            for i in 0..5 {
                let client = if i % 2 == 0 { "even" } else { "odd" };
                ids.push(
                    store
                        .insert_credential(password(client, &format!("u{i}")))
                        .await
                        .unwrap()
                        .id,
                );
            }
            let all = store.credentials(None, 0, 100).await.unwrap();
            assert_eq!(all.total, 5);
            let mut seen: Vec<String> = store
                .credentials(None, 0, 3)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|c| c.id)
                .collect();
            let rest = store.credentials(None, 3, 3).await.unwrap();
            assert_eq!((rest.items.len(), rest.total), (2, 5));
            seen.extend(rest.items.into_iter().map(|c| c.id));
            seen.sort();
            ids.sort();
            assert_eq!(seen, ids);
            let odd = store.credentials(Some("odd"), 0, 100).await.unwrap();
            assert_eq!(odd.total, 2);
            assert!(odd.items.iter().all(|c| c.client_id == "odd"));

            let deleted = store.delete_credential(&ids[0]).await.unwrap();
            assert_eq!(deleted.id, ids[0]);
            assert!(matches!(
                store.credential(&ids[0]).await,
                Err(CmError::CredentialNotFound(_))
            ));
            assert!(matches!(
                store.delete_credential(&ids[0]).await,
                Err(CmError::CredentialNotFound(_))
            ));
            assert_eq!(store.credentials(None, 0, 100).await.unwrap().total, 4);
        })
        .await;
    }
}
