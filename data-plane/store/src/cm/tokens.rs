//! Endpoint tokens: stored as hashes, looked up by value, moved through [`TokenStatus`]'s state
//! machine with compare-and-set.

use std::fmt;

use sha2::{Digest, Sha256};
use sqlx::{Row, any::AnyRow};

use super::CmError;
use crate::{Store, is_unique_violation, now_millis};

/// How often a status change is retried after losing a race to a concurrent change.
const TRANSITION_RETRIES: usize = 16;

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

impl NewToken {
    /// The token as every backend stores it when issued: a fresh UUID, `Inactive`, created now.
    /// The value is dropped here; take its [`token_hash`] first.
    pub fn issue(self) -> EndpointToken {
        EndpointToken {
            id: uuid::Uuid::new_v4().to_string(),
            endpoint_id: self.endpoint_id,
            app_name: self.app_name,
            app_version: self.app_version,
            status: TokenStatus::Inactive,
            created_at: now_millis(),
        }
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

fn token_from_row(row: &AnyRow) -> Result<EndpointToken, CmError> {
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

impl Store {
    /// Stores a new `Inactive` token; [`CmError::DuplicateToken`] if the value is taken.
    pub async fn insert_token(&self, new: NewToken) -> Result<EndpointToken, CmError> {
        let _turn = self.write_turn().await;
        let hash = token_hash(&new.token);
        let token = new.issue();
        sqlx::query(
            "INSERT INTO cm_endpoint_tokens \
             (id, token_hash, endpoint_id, app_name, app_version, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&token.id)
        .bind(hash)
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
        let _turn = self.write_turn().await;
        let done = sqlx::query("UPDATE cm_endpoint_tokens SET status = $1 WHERE id = $2 AND status = $3")
            .bind(to.as_str())
            .bind(id)
            .bind(from.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes every token of an endpoint and returns what was deleted (for revocation events),
    /// oldest first.
    pub async fn delete_endpoint_tokens(&self, endpoint_id: &str) -> Result<Vec<EndpointToken>, CmError> {
        let _turn = self.write_turn().await;
        // One statement (RETURNING: SQLite 3.35+ and PostgreSQL), so that what is returned is
        // exactly what was deleted, even with concurrent inserts or deletes on PostgreSQL, where
        // a SELECT then DELETE would not block them.
        let rows = sqlx::query(
            "DELETE FROM cm_endpoint_tokens WHERE endpoint_id = $1 \
             RETURNING id, endpoint_id, app_name, app_version, status, created_at",
        )
        .bind(endpoint_id)
        .fetch_all(&self.pool)
        .await?;
        let mut tokens = rows.iter().map(token_from_row).collect::<Result<Vec<_>, _>>()?;
        tokens.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::on_both;

    fn new_token(endpoint_id: &str, token: &str) -> NewToken {
        NewToken {
            endpoint_id: endpoint_id.into(),
            app_name: "meter".into(),
            app_version: "meter-v1".into(),
            token: token.into(),
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
        on_both(|store| async move {
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
        })
        .await;
    }

    #[tokio::test]
    async fn transitions_follow_the_state_machine() {
        on_both(|store| async move {
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
        })
        .await;
    }

    #[tokio::test]
    async fn concurrent_transitions_change_the_status_once() {
        on_both(|store| async move {
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
        })
        .await;
    }

    #[tokio::test]
    async fn deleting_an_endpoints_tokens_returns_them() {
        on_both(|store| async move {
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
        })
        .await;
    }
}
