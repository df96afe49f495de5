//! CM repository: endpoint tokens and client credentials.
//!
//! Owned by the credential service (CM). Nothing here holds a secret in clear:
//! - an endpoint token is stored as the SHA-256 of its value ([`token_hash`]) and looked up by
//!   that hash. Equality on a hash is safe to leave to the database index (not constant-time):
//!   timing can at most reveal a prefix of the *hash* of a guess, which says nothing about the
//!   token (preimage resistance);
//! - a password credential stores the password hash string the service computed (argon2id PHC
//!   format); verifying it is the service's job, this module only hands it over
//!   ([`Store::password_credential`]).
//!
//! Token status follows CM's state machine ([`TokenStatus`]): `Inactive` (issued, never used) ->
//! `Active` (on the first successful validation) <-> `Suspended`; any live state -> `Revoked`,
//! which is terminal. Status changes are compare-and-set (`UPDATE ... WHERE status = <read>`), so
//! two concurrent transitions cannot both believe they moved the token, which keeps revocation
//! events exactly one per real transition, on SQLite and PostgreSQL alike.

use std::fmt;

use sha2::{Digest, Sha256};
use sqlx::{Row, sqlite::SqliteRow};

use crate::{Store, now_millis};

/// How often a status change is retried after losing a race to a concurrent change.
const TRANSITION_RETRIES: usize = 16;

/// Errors of the CM repository.
#[derive(Debug, thiserror::Error)]
pub enum CmError {
    #[error("endpoint token {0} not found")]
    TokenNotFound(String),
    #[error("endpoint token is already in use")]
    DuplicateToken,
    #[error("endpoint token {token_id} is {from}; it cannot become {to}")]
    InvalidTransition {
        token_id: String,
        from: TokenStatus,
        to: TokenStatus,
    },
    #[error("endpoint token {0} changed too often concurrently; try again")]
    Contended(String),
    #[error("client credential {0} not found")]
    CredentialNotFound(String),
    #[error("username {0:?} is already taken")]
    DuplicateUsername(String),
    #[error("a certificate with issuer {issuer:?} and serial number {serial} is already registered")]
    DuplicateCertificate { issuer: String, serial: String },
    #[error("stored {what} is corrupt: {value:?}")]
    Corrupt { what: &'static str, value: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// SHA-256 of a token value, lowercase hex: the only form in which tokens are stored.
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    hex
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lifecycle state of an endpoint token (spelled as in Kaa's CM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenStatus {
    /// Issued, never used yet.
    Inactive,
    /// Validated at least once and usable.
    Active,
    /// Refused until reactivated.
    Suspended,
    /// Refused for good.
    Revoked,
}

impl TokenStatus {
    pub const ALL: [TokenStatus; 4] = [
        TokenStatus::Inactive,
        TokenStatus::Active,
        TokenStatus::Suspended,
        TokenStatus::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Inactive => "Inactive",
            TokenStatus::Active => "Active",
            TokenStatus::Suspended => "Suspended",
            TokenStatus::Revoked => "Revoked",
        }
    }

    /// Whether a token in this state identifies its endpoint.
    pub fn is_usable(self) -> bool {
        matches!(self, TokenStatus::Inactive | TokenStatus::Active)
    }

    /// Whether `self -> to` is allowed. Staying in the same state is allowed (a no-op) except into
    /// `Inactive`, which only issuing produces; nothing leaves `Revoked`.
    pub fn can_become(self, to: TokenStatus) -> bool {
        match (self, to) {
            (_, TokenStatus::Inactive) => false,
            (TokenStatus::Revoked, to) => to == TokenStatus::Revoked,
            _ => true,
        }
    }
}

impl fmt::Display for TokenStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TokenStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TokenStatus::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown token status {s:?}"))
    }
}

/// A token to store. `Debug` hides the value.
#[derive(Clone)]
pub struct NewToken {
    pub endpoint_id: String,
    pub app_name: String,
    pub app_version: String,
    /// The token value; only its [`token_hash`] is stored.
    pub token: String,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("endpoint_id", &self.endpoint_id)
            .field("app_name", &self.app_name)
            .field("app_version", &self.app_version)
            .field("token", &"***")
            .finish()
    }
}

/// A stored endpoint token (its value is not kept, so not shown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointToken {
    /// Opaque, non-secret id (what revocation events carry).
    pub id: String,
    pub endpoint_id: String,
    pub app_name: String,
    pub app_version: String,
    pub status: TokenStatus,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// The outcome of a status change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub previous: TokenStatus,
    pub token: EndpointToken,
}

impl Transition {
    /// Whether the status actually changed (a same-state request changes nothing).
    pub fn changed(&self) -> bool {
        self.previous != self.token.status
    }
}

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

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// `SELECT <token columns> FROM cm_endpoint_tokens <rest>` as one `&'static str` (sqlx only
/// takes literal SQL, which rules out `format!`).
macro_rules! select_tokens {
    ($rest:literal) => {
        concat!(
            "SELECT id, endpoint_id, app_name, app_version, status, created_at FROM cm_endpoint_tokens ",
            $rest
        )
    };
}

/// `SELECT <credential columns><extra> FROM cm_client_credentials <rest>`, like [`select_tokens`].
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

fn token_from_row(row: &SqliteRow) -> Result<EndpointToken, CmError> {
    let status: String = row.try_get("status")?;
    Ok(EndpointToken {
        id: row.try_get("id")?,
        endpoint_id: row.try_get("endpoint_id")?,
        app_name: row.try_get("app_name")?,
        app_version: row.try_get("app_version")?,
        status: status.parse().map_err(|_| CmError::Corrupt {
            what: "token status",
            value: status,
        })?,
        created_at: row.try_get("created_at")?,
    })
}

fn credential_from_row(row: &SqliteRow) -> Result<ClientCredential, CmError> {
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

fn clamp_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    // --- endpoint tokens ------------------------------------------------------------------

    /// Stores a new `Inactive` token; [`CmError::DuplicateToken`] if the value is taken.
    pub async fn insert_token(&self, new: NewToken) -> Result<EndpointToken, CmError> {
        let token = EndpointToken {
            id: uuid::Uuid::new_v4().to_string(),
            endpoint_id: new.endpoint_id,
            app_name: new.app_name,
            app_version: new.app_version,
            status: TokenStatus::Inactive,
            created_at: now_millis(),
        };
        sqlx::query(
            "INSERT INTO cm_endpoint_tokens \
             (id, token_hash, endpoint_id, app_name, app_version, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&token.id)
        .bind(token_hash(&new.token))
        .bind(&token.endpoint_id)
        .bind(&token.app_name)
        .bind(&token.app_version)
        .bind(token.status.as_str())
        .bind(token.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| match is_unique_violation(&e) {
            true => CmError::DuplicateToken,
            false => e.into(),
        })?;
        Ok(token)
    }

    /// The token whose value is `token`, if any.
    pub async fn token_by_value(&self, token: &str) -> Result<Option<EndpointToken>, CmError> {
        let row = sqlx::query(select_tokens!("WHERE token_hash = $1"))
            .bind(token_hash(token))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    /// One token by id.
    pub async fn token(&self, id: &str) -> Result<EndpointToken, CmError> {
        let row = sqlx::query(select_tokens!("WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| CmError::TokenNotFound(id.to_owned()))?;
        token_from_row(&row)
    }

    /// Every token of an endpoint, oldest first (none for an unknown endpoint).
    pub async fn endpoint_tokens(&self, endpoint_id: &str) -> Result<Vec<EndpointToken>, CmError> {
        let rows = sqlx::query(select_tokens!("WHERE endpoint_id = $1 ORDER BY created_at, id"))
            .bind(endpoint_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(token_from_row).collect()
    }

    /// Moves a token to `to` if [`TokenStatus::can_become`] allows it from its current state.
    pub async fn transition_token(&self, id: &str, to: TokenStatus) -> Result<Transition, CmError> {
        for _ in 0..TRANSITION_RETRIES {
            let current = self.token(id).await?;
            if !current.status.can_become(to) {
                return Err(CmError::InvalidTransition {
                    token_id: id.to_owned(),
                    from: current.status,
                    to,
                });
            }
            if current.status == to {
                return Ok(Transition {
                    previous: to,
                    token: current,
                });
            }
            if self.compare_and_set(id, current.status, to).await? {
                return Ok(Transition {
                    previous: current.status,
                    token: EndpointToken {
                        status: to,
                        ..current
                    },
                });
            }
        }
        Err(CmError::Contended(id.to_owned()))
    }

    /// `Inactive` -> `Active`, the first time a token is used; `false` if it was not `Inactive`
    /// (any more), which callers treat as "someone else changed it, re-read".
    pub async fn activate_token(&self, id: &str) -> Result<bool, CmError> {
        self.compare_and_set(id, TokenStatus::Inactive, TokenStatus::Active)
            .await
    }

    async fn compare_and_set(&self, id: &str, from: TokenStatus, to: TokenStatus) -> Result<bool, CmError> {
        let done = sqlx::query("UPDATE cm_endpoint_tokens SET status = $1 WHERE id = $2 AND status = $3")
            .bind(to.as_str())
            .bind(id)
            .bind(from.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes every token of an endpoint and returns what was deleted (for revocation events).
    pub async fn delete_endpoint_tokens(&self, endpoint_id: &str) -> Result<Vec<EndpointToken>, CmError> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(select_tokens!("WHERE endpoint_id = $1 ORDER BY created_at, id"))
            .bind(endpoint_id)
            .fetch_all(&mut *tx)
            .await?;
        let tokens = rows.iter().map(token_from_row).collect::<Result<Vec<_>, _>>()?;
        sqlx::query("DELETE FROM cm_endpoint_tokens WHERE endpoint_id = $1")
            .bind(endpoint_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(tokens)
    }

    // --- client credentials ---------------------------------------------------------------

    /// Stores a new `Active` credential; a taken username or issuer+serial is a conflict.
    pub async fn insert_credential(&self, new: NewCredential) -> Result<ClientCredential, CmError> {
        let (kind, password_hash) = match new.auth {
            NewAuth::Password {
                username,
                password_hash,
            } => (CredentialKind::Password { username }, Some(password_hash)),
            NewAuth::Certificate { issuer, serial } => (CredentialKind::Certificate { issuer, serial }, None),
        };
        let credential = ClientCredential {
            id: uuid::Uuid::new_v4().to_string(),
            client_id: new.client_id,
            kind,
            status: CredentialStatus::Active,
            created_at: now_millis(),
        };
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
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(select_credentials!("", "WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| CmError::CredentialNotFound(id.to_owned()))?;
        let credential = credential_from_row(&row)?;
        sqlx::query("DELETE FROM cm_client_credentials WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(credential)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> Store {
        Store::open_in_memory().await.unwrap()
    }

    fn new_token(endpoint_id: &str, token: &str) -> NewToken {
        NewToken {
            endpoint_id: endpoint_id.into(),
            app_name: "meter".into(),
            app_version: "meter-v1".into(),
            token: token.into(),
        }
    }

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

    #[test]
    fn token_hash_is_sha256_hex() {
        // SHA-256("abc"), FIPS 180-2 test vector.
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn status_rules() {
        use TokenStatus::*;
        for from in TokenStatus::ALL {
            assert!(!from.can_become(Inactive), "{from} -> Inactive");
        }
        for (from, to) in [
            (Inactive, Active),
            (Inactive, Suspended),
            (Inactive, Revoked),
            (Active, Suspended),
            (Suspended, Active),
            (Active, Revoked),
            (Suspended, Revoked),
            (Active, Active),
            (Revoked, Revoked),
        ] {
            assert!(from.can_become(to), "{from} -> {to}");
        }
        assert!(!Revoked.can_become(Active));
        assert!(!Revoked.can_become(Suspended));
        for s in TokenStatus::ALL {
            assert_eq!(s.as_str().parse::<TokenStatus>(), Ok(s));
        }
        assert!("active".parse::<TokenStatus>().is_err());
        assert!(Inactive.is_usable() && Active.is_usable());
        assert!(!Suspended.is_usable() && !Revoked.is_usable());
    }

    #[tokio::test]
    async fn tokens_are_stored_hashed_and_found_by_value() {
        let store = store().await;
        let t = store.insert_token(new_token("ep-1", "tok-secret")).await.unwrap();
        assert_eq!(t.status, TokenStatus::Inactive);
        assert!(uuid::Uuid::parse_str(&t.id).is_ok());
        assert_eq!(store.token_by_value("tok-secret").await.unwrap(), Some(t.clone()));
        assert_eq!(store.token_by_value("tok-secre").await.unwrap(), None);
        assert_eq!(store.token(&t.id).await.unwrap(), t);
        assert!(matches!(
            store.token("nope").await,
            Err(CmError::TokenNotFound(id)) if id == "nope"
        ));

        // The value itself is nowhere in the table.
        let stored: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM cm_endpoint_tokens")
            .fetch_all(&store.pool)
            .await
            .unwrap();
        assert_eq!(stored, [token_hash("tok-secret")]);

        assert!(matches!(
            store.insert_token(new_token("ep-2", "tok-secret")).await,
            Err(CmError::DuplicateToken)
        ));
        let second = store.insert_token(new_token("ep-1", "tok-2")).await.unwrap();
        let mut listed: Vec<String> = store
            .endpoint_tokens("ep-1")
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        listed.sort();
        let mut expected = [t.id.clone(), second.id.clone()];
        expected.sort();
        assert_eq!(listed, expected);
        assert!(store.endpoint_tokens("ep-2").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn transitions_follow_the_state_machine() {
        let store = store().await;
        let t = store.insert_token(new_token("ep-1", "tok")).await.unwrap();
        assert!(store.activate_token(&t.id).await.unwrap());
        assert!(!store.activate_token(&t.id).await.unwrap(), "only once");
        assert_eq!(store.token(&t.id).await.unwrap().status, TokenStatus::Active);

        let tr = store
            .transition_token(&t.id, TokenStatus::Suspended)
            .await
            .unwrap();
        assert_eq!(
            (tr.previous, tr.token.status),
            (TokenStatus::Active, TokenStatus::Suspended)
        );
        assert!(tr.changed());
        let again = store
            .transition_token(&t.id, TokenStatus::Suspended)
            .await
            .unwrap();
        assert!(!again.changed(), "same state is a no-op");
        assert!(
            !store.activate_token(&t.id).await.unwrap(),
            "a suspended token is not activated"
        );

        let back = store.transition_token(&t.id, TokenStatus::Active).await.unwrap();
        assert_eq!(back.token.status, TokenStatus::Active);
        let revoked = store.transition_token(&t.id, TokenStatus::Revoked).await.unwrap();
        assert!(revoked.changed());
        for to in [TokenStatus::Active, TokenStatus::Suspended, TokenStatus::Inactive] {
            let err = store.transition_token(&t.id, to).await.unwrap_err();
            assert!(
                matches!(err, CmError::InvalidTransition { from: TokenStatus::Revoked, to: got, .. } if got == to),
                "{err}"
            );
        }
        assert_eq!(store.token(&t.id).await.unwrap().status, TokenStatus::Revoked);
        assert!(matches!(
            store.transition_token("nope", TokenStatus::Active).await,
            Err(CmError::TokenNotFound(_))
        ));
    }

    #[tokio::test]
    async fn concurrent_transitions_change_the_status_once() {
        let dir = std::env::temp_dir().join(format!("kaa-store-cm-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(dir.join("kaa.db")).await.unwrap();
        let t = store.insert_token(new_token("ep-1", "tok")).await.unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (store, id) = (store.clone(), t.id.clone());
                tokio::spawn(async move { store.transition_token(&id, TokenStatus::Revoked).await })
            })
            .collect();
        let mut changed = 0;
        for task in tasks {
            changed += usize::from(task.await.unwrap().unwrap().changed());
        }
        assert_eq!(changed, 1, "exactly one caller saw the real transition");
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn deleting_an_endpoints_tokens_returns_them() {
        let store = store().await;
        let a = store.insert_token(new_token("ep-1", "a")).await.unwrap();
        let b = store.insert_token(new_token("ep-1", "b")).await.unwrap();
        let other = store.insert_token(new_token("ep-2", "c")).await.unwrap();
        let mut deleted = store.delete_endpoint_tokens("ep-1").await.unwrap();
        deleted.sort_by(|x, y| x.id.cmp(&y.id));
        let mut expected = [a, b];
        expected.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(deleted, expected);
        assert_eq!(store.token_by_value("a").await.unwrap(), None);
        assert_eq!(store.token_by_value("c").await.unwrap(), Some(other));
        assert!(store.delete_endpoint_tokens("ep-1").await.unwrap().is_empty());
        // The values are free again.
        store.insert_token(new_token("ep-3", "a")).await.unwrap();
    }

    #[tokio::test]
    async fn password_credentials() {
        let store = store().await;
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
    }

    #[tokio::test]
    async fn certificate_credentials() {
        let store = store().await;
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
    }

    #[tokio::test]
    async fn credentials_list_pages_and_delete() {
        let store = store().await;
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
    }
}
