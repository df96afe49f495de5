//! EPR repository: endpoints and endpoint metadata.
//!
//! Owned by the EPR service. An endpoint has an id (UUID text), the application version it
//! belongs to and a creation time; its metadata is one JSON object with a version counter that
//! grows by one on every write and serves as the ETag for conditional writes. Endpoint tokens
//! are the credential service's (see [`crate::cm`]).
//!
//! A metadata write is optimistic: it reads the object and its version, computes the new object,
//! and writes it with `UPDATE ... WHERE version = <the version read>`; if that changed nothing,
//! another write came first, and it starts over from a fresh read. So concurrent writers to one
//! endpoint lose nothing, every failed attempt means another one succeeded, and a write is two
//! autocommit statements: no transaction holds SQLite's single write lock (or a PostgreSQL row
//! lock) while the new object is computed. If-Match compares the caller's version with the one
//! read.
//!
//! Parameters are written `$1, $2, ...`, which both SQLite and PostgreSQL accept.

use json_patch::Patch;
use serde_json::{Map, Value};
use sqlx::{AnyExecutor, Row, SqlSafeStr, any::AnyRow};

use crate::{SqlBuilder, Store, clamp_i64, is_unique_violation, now_millis};

/// Errors of the EPR repository.
#[derive(Debug, thiserror::Error)]
pub enum EprError {
    #[error("endpoint {0} not found")]
    EndpointNotFound(String),
    #[error("endpoint {0} already exists")]
    DuplicateEndpoint(String),
    #[error("metadata key {0} not found")]
    KeyNotFound(String),
    #[error("metadata version is {current}, not the expected {expected}")]
    VersionMismatch { expected: i64, current: i64 },
    #[error("invalid metadata: {0}")]
    InvalidMetadata(String),
    #[error("cannot apply JSON patch: {0}")]
    Patch(#[from] json_patch::PatchError),
    #[error("stored metadata of endpoint {endpoint_id} is not a JSON object: {reason}")]
    Corrupt { endpoint_id: String, reason: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// A registration request.
#[derive(Debug, Clone, Default)]
pub struct NewEndpoint {
    /// Caller-chosen endpoint id; `None` = a new random UUID.
    pub id: Option<String>,
    pub app_version: String,
    /// Initial metadata; `None` = empty object.
    pub metadata: Option<Map<String, Value>>,
}

/// A registered endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: String,
    pub app_version: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// An endpoint's metadata object at one version.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    pub endpoint_id: String,
    pub app_version: String,
    pub body: Map<String, Value>,
    /// Grows by one on every write; the ETag of this state.
    pub version: i64,
}

/// Result of a metadata write: the object before and after (for change events).
#[derive(Debug, Clone, PartialEq)]
pub struct MetadataUpdate {
    pub previous: Map<String, Value>,
    pub current: Metadata,
}

/// Which endpoints to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only endpoints of these application versions; `None` = any (an empty list matches nothing).
    pub app_versions: Option<Vec<String>>,
    /// Only endpoints whose id or metadata (keys and values, as JSON text) contain this text,
    /// ignoring ASCII case.
    pub search: Option<String>,
    pub offset: u64,
    pub limit: u64,
}

/// One page of endpoints, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPage {
    pub items: Vec<ListedEndpoint>,
    /// Number of endpoints matching the filter, across all pages.
    pub total: u64,
}

/// An endpoint of a page, with its metadata (read in the same query: a page is one round trip).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedEndpoint {
    pub endpoint: Endpoint,
    pub metadata: Map<String, Value>,
}

/// Whether `key` is a valid metadata key (10/EPMP: `^[a-zA-Z0-9_]+$`).
pub fn is_valid_metadata_key(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `%text%` in lower case, with LIKE's wildcards and the escape character escaped.
fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

fn check_keys(body: &Map<String, Value>) -> Result<(), EprError> {
    match body.keys().find(|k| !is_valid_metadata_key(k)) {
        Some(bad) => Err(EprError::InvalidMetadata(format!(
            "key {bad:?} does not match ^[a-zA-Z0-9_]+$"
        ))),
        None => Ok(()),
    }
}

fn endpoint_from_row(row: &AnyRow) -> Result<Endpoint, sqlx::Error> {
    Ok(Endpoint {
        id: row.try_get("id")?,
        app_version: row.try_get("app_version")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// Registers an endpoint (with its initial metadata) in one transaction.
    pub async fn register(&self, new: NewEndpoint) -> Result<Endpoint, EprError> {
        let metadata = new.metadata.unwrap_or_default();
        check_keys(&metadata)?;
        let endpoint = Endpoint {
            id: new.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            app_version: new.app_version,
            created_at: now_millis(),
        };
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO epr_endpoints (id, app_version, created_at) VALUES ($1, $2, $3)")
            .bind(&endpoint.id)
            .bind(&endpoint.app_version)
            .bind(endpoint.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| match is_unique_violation(&e) {
                true => EprError::DuplicateEndpoint(endpoint.id.clone()),
                false => e.into(),
            })?;
        sqlx::query("INSERT INTO epr_metadata (endpoint_id, body, version) VALUES ($1, $2, 1)")
            .bind(&endpoint.id)
            .bind(Value::Object(metadata).to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(endpoint)
    }

    /// One endpoint by id.
    pub async fn endpoint(&self, id: &str) -> Result<Endpoint, EprError> {
        fetch_endpoint(&self.pool, SELECT_ENDPOINT, id).await
    }

    /// A page of endpoints matching `filter`, oldest first (ties broken by id, so pages are stable).
    pub async fn list_endpoints(&self, filter: &ListFilter) -> Result<EndpointPage, EprError> {
        if filter.app_versions.as_ref().is_some_and(Vec::is_empty) {
            return Ok(EndpointPage {
                items: Vec::new(),
                total: 0,
            });
        }
        let pattern = filter.search.as_deref().map(like_pattern);
        // The metadata is joined only where it is needed (a search, the page's rows): counting
        // the endpoints of a version is then an index-only scan (migration 0007's index).
        let push_where = |qb: &mut SqlBuilder, join: bool| {
            qb.push(" FROM epr_endpoints e");
            if join {
                qb.push(" JOIN epr_metadata m ON m.endpoint_id = e.id");
            }
            qb.push(" WHERE 1 = 1");
            if let Some(versions) = &filter.app_versions {
                qb.push(" AND e.app_version IN (")
                    .push_binds(versions.iter().map(String::as_str))
                    .push(")");
            }
            if let Some(pattern) = &pattern {
                // LOWER + LIKE with an explicit escape: the same meaning on SQLite and PostgreSQL.
                qb.push(" AND (LOWER(e.id) LIKE ")
                    .push_bind(pattern.as_str())
                    .push(" ESCAPE '\\' OR LOWER(m.body) LIKE ")
                    .push_bind(pattern.as_str())
                    .push(" ESCAPE '\\')");
            }
        };

        let mut select = SqlBuilder::new("SELECT e.id, e.app_version, e.created_at, m.body");
        push_where(&mut select, true);
        select
            .push(" ORDER BY e.created_at, e.id LIMIT ")
            .push_bind(clamp_i64(filter.limit))
            .push(" OFFSET ")
            .push_bind(clamp_i64(filter.offset));
        let rows = select.build()?.fetch_all(&self.pool).await?;
        let items = rows
            .iter()
            .map(|row| {
                let endpoint = endpoint_from_row(row)?;
                let metadata = parse_body(&endpoint.id, &row.try_get::<String, _>("body")?)?;
                Ok(ListedEndpoint { endpoint, metadata })
            })
            .collect::<Result<Vec<_>, EprError>>()?;
        // A page that is not full and not past the end is the last one: it tells the total
        // without counting again (a search with few matches reads every endpoint once, not twice).
        let listed = u64::try_from(items.len()).unwrap_or(u64::MAX);
        let total = if listed < filter.limit && (listed > 0 || filter.offset == 0) {
            filter.offset.saturating_add(listed)
        } else {
            let mut count = SqlBuilder::new("SELECT COUNT(*)");
            push_where(&mut count, pattern.is_some());
            let total: i64 = count.build_scalar()?.fetch_one(&self.pool).await?;
            u64::try_from(total).unwrap_or(0)
        };
        Ok(EndpointPage { items, total })
    }

    /// Moves an endpoint to another application version; returns the endpoint as it was before
    /// (for the lifecycle event).
    pub async fn move_endpoint(&self, id: &str, app_version: &str) -> Result<Endpoint, EprError> {
        // Locked, so that the endpoint returned is the one this move replaced.
        let (_turn, mut tx) = self.begin_write().await?;
        let select = self.backend.locking(SELECT_ENDPOINT, " FOR UPDATE");
        let before = fetch_endpoint(&mut *tx, select, id).await?;
        sqlx::query("UPDATE epr_endpoints SET app_version = $2 WHERE id = $1")
            .bind(id)
            .bind(app_version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(before)
    }

    /// Deletes an endpoint with its metadata; returns what was deleted (for the lifecycle event).
    pub async fn delete_endpoint(&self, id: &str) -> Result<Endpoint, EprError> {
        // Explicit child deletes instead of relying on ON DELETE CASCADE, which SQLite only
        // honours when the connection enabled foreign keys.
        let (_turn, mut tx) = self.begin_write().await?;
        let endpoint = fetch_endpoint(&mut *tx, SELECT_ENDPOINT, id).await?;
        sqlx::query("DELETE FROM epr_metadata WHERE endpoint_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM epr_endpoints WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(EprError::EndpointNotFound(id.to_owned()));
        }
        tx.commit().await?;
        Ok(endpoint)
    }

    /// The endpoint's metadata object and version.
    pub async fn metadata(&self, endpoint_id: &str) -> Result<Metadata, EprError> {
        fetch_metadata(&self.pool, SELECT_METADATA, endpoint_id).await
    }

    /// The endpoint's metadata keys, sorted.
    pub async fn metadata_keys(&self, endpoint_id: &str) -> Result<Vec<String>, EprError> {
        Ok(self
            .metadata(endpoint_id)
            .await?
            .body
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// Replaces the whole metadata object.
    pub async fn replace_metadata(
        &self,
        endpoint_id: &str,
        body: Map<String, Value>,
        if_match: Option<i64>,
    ) -> Result<MetadataUpdate, EprError> {
        check_keys(&body)?;
        self.update_metadata(endpoint_id, if_match, |current| {
            *current = body.clone();
            Ok(())
        })
        .await
    }

    /// Applies an RFC 6902 JSON Patch atomically (all operations or none).
    pub async fn patch_metadata(
        &self,
        endpoint_id: &str,
        patch: &Patch,
        if_match: Option<i64>,
    ) -> Result<MetadataUpdate, EprError> {
        self.update_metadata(endpoint_id, if_match, |current| {
            let mut doc = Value::Object(std::mem::take(current));
            json_patch::patch(&mut doc, patch)?;
            match doc {
                Value::Object(map) => {
                    *current = map;
                    Ok(())
                }
                other => Err(EprError::InvalidMetadata(format!(
                    "the patch turns metadata into {}, not a JSON object",
                    json_kind(&other)
                ))),
            }
        })
        .await
    }

    /// Creates or overwrites one key.
    pub async fn set_metadata_key(
        &self,
        endpoint_id: &str,
        key: &str,
        value: Value,
        if_match: Option<i64>,
    ) -> Result<MetadataUpdate, EprError> {
        if !is_valid_metadata_key(key) {
            return Err(EprError::InvalidMetadata(format!(
                "key {key:?} does not match ^[a-zA-Z0-9_]+$"
            )));
        }
        self.update_metadata(endpoint_id, if_match, |current| {
            current.insert(key.to_owned(), value.clone());
            Ok(())
        })
        .await
    }

    /// Removes one key; [`EprError::KeyNotFound`] if it is absent.
    pub async fn delete_metadata_key(
        &self,
        endpoint_id: &str,
        key: &str,
        if_match: Option<i64>,
    ) -> Result<MetadataUpdate, EprError> {
        self.update_metadata(endpoint_id, if_match, |current| match current.remove(key) {
            Some(_) => Ok(()),
            None => Err(EprError::KeyNotFound(key.to_owned())),
        })
        .await
    }

    /// Optimistic read-modify-write (see the module docs): read, change, write only if the
    /// version read is still the stored one, else read again.
    async fn update_metadata(
        &self,
        endpoint_id: &str,
        if_match: Option<i64>,
        change: impl Fn(&mut Map<String, Value>) -> Result<(), EprError>,
    ) -> Result<MetadataUpdate, EprError> {
        loop {
            let read = fetch_metadata(&self.pool, SELECT_METADATA, endpoint_id).await?;
            if let Some(expected) = if_match
                && expected != read.version
            {
                return Err(EprError::VersionMismatch {
                    expected,
                    current: read.version,
                });
            }
            let mut body = read.body.clone();
            change(&mut body)?;
            check_keys(&body)?;
            let version = read.version + 1;
            let _turn = self.write_turn().await;
            let written = sqlx::query(
                "UPDATE epr_metadata SET body = $1, version = $2 WHERE endpoint_id = $3 AND version = $4",
            )
            .bind(Value::Object(body.clone()).to_string())
            .bind(version)
            .bind(endpoint_id)
            .bind(read.version)
            .execute(&self.pool)
            .await?;
            if written.rows_affected() == 1 {
                return Ok(MetadataUpdate {
                    previous: read.body,
                    current: Metadata {
                        body,
                        version,
                        ..read
                    },
                });
            }
            // Another write came first (or the endpoint was deleted): the next read tells.
        }
    }
}

const SELECT_METADATA: &str = "SELECT e.app_version, m.body, m.version \
     FROM epr_endpoints e JOIN epr_metadata m ON m.endpoint_id = e.id WHERE e.id = $1";

/// An endpoint's metadata, read with `select` ([`SELECT_METADATA`], or it with a row lock).
async fn fetch_metadata<'e>(
    exec: impl AnyExecutor<'e>,
    select: impl SqlSafeStr,
    endpoint_id: &str,
) -> Result<Metadata, EprError> {
    let row = sqlx::query(select)
        .bind(endpoint_id)
        .fetch_optional(exec)
        .await?
        .ok_or_else(|| EprError::EndpointNotFound(endpoint_id.to_owned()))?;
    let body: String = row.try_get("body")?;
    Ok(Metadata {
        endpoint_id: endpoint_id.to_owned(),
        app_version: row.try_get("app_version")?,
        body: parse_body(endpoint_id, &body)?,
        version: row.try_get("version")?,
    })
}

/// A stored metadata body: always a JSON object.
fn parse_body(endpoint_id: &str, body: &str) -> Result<Map<String, Value>, EprError> {
    let corrupt = |reason: String| EprError::Corrupt {
        endpoint_id: endpoint_id.to_owned(),
        reason,
    };
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(corrupt(format!("found {other}"))),
        Err(e) => Err(corrupt(e.to_string())),
    }
}

const SELECT_ENDPOINT: &str = "SELECT id, app_version, created_at FROM epr_endpoints WHERE id = $1";

/// One endpoint, read with `select` ([`SELECT_ENDPOINT`], or it with a row lock).
async fn fetch_endpoint<'e>(
    exec: impl AnyExecutor<'e>,
    select: impl SqlSafeStr,
    id: &str,
) -> Result<Endpoint, EprError> {
    let row = sqlx::query(select)
        .bind(id)
        .fetch_optional(exec)
        .await?
        .ok_or_else(|| EprError::EndpointNotFound(id.to_owned()))?;
    Ok(endpoint_from_row(&row)?)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
