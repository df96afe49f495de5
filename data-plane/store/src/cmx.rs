//! CMX repository: configuration documents (per application version and per endpoint) and each
//! endpoint's configuration status. Owned by the CMX service; rows are keyed by configuration
//! name (one per CMX instance), so several instances may share one database.
//!
//! A document's id is derived from its content (SHA-256 of its JSON text, 32 hex digits): storing
//! the same document again keeps its id, so an endpoint that applied it is not sent it again.

use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{Row, any::AnyRow};

use crate::{Store, now_millis};

/// Errors of the CMX repository.
#[derive(Debug, thiserror::Error)]
pub enum CmxError {
    #[error("stored configuration {config_id} is not JSON: {reason}")]
    Corrupt { config_id: String, reason: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Which document: an application version's default, or one endpoint's override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigKey<'a> {
    pub config_name: &'a str,
    pub app_version: &'a str,
    /// `None`: the application version's default.
    pub endpoint_id: Option<&'a str>,
}

/// A stored configuration document.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigDoc {
    pub config_name: String,
    pub app_version: String,
    /// `None`: the application version's default.
    pub endpoint_id: Option<String>,
    pub config_id: String,
    pub body: Value,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What one endpoint did with its configuration (of one configuration name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigStatus {
    pub config_name: String,
    pub endpoint_id: String,
    pub app_version: String,
    pub dispatched_config_id: Option<String>,
    pub dispatched_at: Option<i64>,
    /// The id the endpoint reported last (possibly one this instance never issued).
    pub applied_config_id: Option<String>,
    pub applied_at: Option<i64>,
    pub status_code: Option<i64>,
    pub reason_phrase: Option<String>,
}

impl ConfigStatus {
    /// Whether the endpoint reported `config_id` applied successfully (2xx).
    pub fn has_applied(&self, config_id: &str) -> bool {
        self.applied_config_id.as_deref() == Some(config_id)
            && self.status_code.is_some_and(|c| (200..300).contains(&c))
    }
}

/// The id of a document: 128 bits of the SHA-256 of its JSON text, lowercase hex.
pub fn config_id(body: &Value) -> String {
    let digest = Sha256::digest(body.to_string().as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn stored_endpoint(endpoint_id: Option<&str>) -> &str {
    endpoint_id.unwrap_or("")
}

fn doc_from_row(row: &AnyRow) -> Result<ConfigDoc, CmxError> {
    let config_id: String = row.try_get("config_id")?;
    let body: String = row.try_get("body")?;
    let body = serde_json::from_str(&body).map_err(|e| CmxError::Corrupt {
        config_id: config_id.clone(),
        reason: e.to_string(),
    })?;
    let endpoint_id: String = row.try_get("endpoint_id")?;
    Ok(ConfigDoc {
        config_name: row.try_get("config_name")?,
        app_version: row.try_get("app_version")?,
        endpoint_id: (!endpoint_id.is_empty()).then_some(endpoint_id),
        config_id,
        body,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn status_from_row(row: &AnyRow) -> Result<ConfigStatus, sqlx::Error> {
    Ok(ConfigStatus {
        config_name: row.try_get("config_name")?,
        endpoint_id: row.try_get("endpoint_id")?,
        app_version: row.try_get("app_version")?,
        dispatched_config_id: row.try_get("dispatched_config_id")?,
        dispatched_at: row.try_get("dispatched_at")?,
        applied_config_id: row.try_get("applied_config_id")?,
        applied_at: row.try_get("applied_at")?,
        status_code: row.try_get("status_code")?,
        reason_phrase: row.try_get("reason_phrase")?,
    })
}

/// Which statuses to list; `None` fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusFilter {
    pub config_name: Option<String>,
    pub endpoint_id: Option<String>,
    pub app_version: Option<String>,
    pub config_id: Option<String>,
}

impl Store {
    /// Stores a document (replacing the one at `key`); returns it and whether its content changed.
    pub async fn put_config(&self, key: ConfigKey<'_>, body: &Value) -> Result<(ConfigDoc, bool), CmxError> {
        let _turn = self.write_turn().await;
        let id = config_id(body);
        let previous = self.config(key).await?;
        let changed = previous.as_ref().is_none_or(|p| p.config_id != id);
        let now = now_millis();
        sqlx::query(
            "INSERT INTO cmx_configs (config_name, app_version, endpoint_id, config_id, body, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) \
             ON CONFLICT (config_name, app_version, endpoint_id) \
             DO UPDATE SET config_id = $4, body = $5, updated_at = $6",
        )
        .bind(key.config_name)
        .bind(key.app_version)
        .bind(stored_endpoint(key.endpoint_id))
        .bind(&id)
        .bind(body.to_string())
        .bind(now)
        .execute(&self.pool)
        .await?;
        let doc = ConfigDoc {
            config_name: key.config_name.to_owned(),
            app_version: key.app_version.to_owned(),
            endpoint_id: key.endpoint_id.map(str::to_owned),
            config_id: id,
            body: body.clone(),
            created_at: previous.map_or(now, |p| p.created_at),
            updated_at: now,
        };
        Ok((doc, changed))
    }

    /// The document at `key`, if any.
    pub async fn config(&self, key: ConfigKey<'_>) -> Result<Option<ConfigDoc>, CmxError> {
        let row = sqlx::query(
            "SELECT * FROM cmx_configs WHERE config_name = $1 AND app_version = $2 AND endpoint_id = $3",
        )
        .bind(key.config_name)
        .bind(key.app_version)
        .bind(stored_endpoint(key.endpoint_id))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(doc_from_row).transpose()
    }

    /// Deletes the document at `key`; whether there was one.
    pub async fn delete_config(&self, key: ConfigKey<'_>) -> Result<bool, CmxError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "DELETE FROM cmx_configs WHERE config_name = $1 AND app_version = $2 AND endpoint_id = $3",
        )
        .bind(key.config_name)
        .bind(key.app_version)
        .bind(stored_endpoint(key.endpoint_id))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// What an endpoint gets: its override, else its application version's default (one query:
    /// the default's stored endpoint is the empty string, which sorts before any endpoint id).
    pub async fn effective_config(
        &self,
        config_name: &str,
        app_version: &str,
        endpoint_id: &str,
    ) -> Result<Option<ConfigDoc>, CmxError> {
        let row = sqlx::query(
            "SELECT * FROM cmx_configs WHERE config_name = $1 AND app_version = $2 \
             AND endpoint_id IN ($3, $4) ORDER BY endpoint_id DESC LIMIT 1",
        )
        .bind(config_name)
        .bind(app_version)
        .bind(endpoint_id)
        .bind(stored_endpoint(None))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(doc_from_row).transpose()
    }

    /// Records that `config_id` was sent to the endpoint.
    pub async fn config_dispatched(
        &self,
        config_name: &str,
        endpoint_id: &str,
        app_version: &str,
        config_id: &str,
    ) -> Result<(), CmxError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO cmx_statuses (config_name, endpoint_id, app_version, dispatched_config_id, dispatched_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (config_name, endpoint_id) \
             DO UPDATE SET app_version = $3, dispatched_config_id = $4, dispatched_at = $5",
        )
        .bind(config_name)
        .bind(endpoint_id)
        .bind(app_version)
        .bind(config_id)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records the endpoint's report about `config_id`.
    pub async fn config_applied(&self, status: &ConfigStatus) -> Result<(), CmxError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO cmx_statuses (config_name, endpoint_id, app_version, applied_config_id, applied_at, status_code, reason_phrase) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (config_name, endpoint_id) \
             DO UPDATE SET app_version = $3, applied_config_id = $4, applied_at = $5, status_code = $6, reason_phrase = $7",
        )
        .bind(&status.config_name)
        .bind(&status.endpoint_id)
        .bind(&status.app_version)
        .bind(&status.applied_config_id)
        .bind(status.applied_at.unwrap_or_else(now_millis))
        .bind(status.status_code)
        .bind(&status.reason_phrase)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The endpoint's status for a configuration name, if anything was sent or reported.
    pub async fn config_status(
        &self,
        config_name: &str,
        endpoint_id: &str,
    ) -> Result<Option<ConfigStatus>, CmxError> {
        let row = sqlx::query("SELECT * FROM cmx_statuses WHERE config_name = $1 AND endpoint_id = $2")
            .bind(config_name)
            .bind(endpoint_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(status_from_row).transpose()?)
    }

    /// Statuses matching `filter`, by endpoint then configuration name.
    pub async fn config_statuses(&self, filter: &StatusFilter) -> Result<Vec<ConfigStatus>, CmxError> {
        let rows = sqlx::query(
            "SELECT * FROM cmx_statuses \
             WHERE ($1 IS NULL OR config_name = $1) AND ($2 IS NULL OR endpoint_id = $2) \
             AND ($3 IS NULL OR app_version = $3) \
             AND ($4 IS NULL OR dispatched_config_id = $4 OR applied_config_id = $4) \
             ORDER BY endpoint_id, config_name",
        )
        .bind(&filter.config_name)
        .bind(&filter.endpoint_id)
        .bind(&filter.app_version)
        .bind(&filter.config_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(status_from_row).collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::on_both;

    fn key<'a>(endpoint: Option<&'a str>) -> ConfigKey<'a> {
        ConfigKey {
            config_name: "default",
            app_version: "v1",
            endpoint_id: endpoint,
        }
    }

    #[tokio::test]
    async fn overrides_win_and_ids_follow_content() {
        on_both(|store| async move {
            assert_eq!(store.effective_config("default", "v1", "e1").await.unwrap(), None);
            let (default, changed) = store.put_config(key(None), &json!({"rate": 1})).await.unwrap();
            assert!(changed);
            let (again, changed) = store.put_config(key(None), &json!({"rate": 1})).await.unwrap();
            assert!(!changed, "the same document is no change");
            assert_eq!(again.config_id, default.config_id);
            let (over, _) = store
                .put_config(key(Some("e1")), &json!({"rate": 2}))
                .await
                .unwrap();
            assert_ne!(over.config_id, default.config_id);
            let e1 = store
                .effective_config("default", "v1", "e1")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(e1.body, json!({"rate": 2}));
            let e2 = store
                .effective_config("default", "v1", "e2")
                .await
                .unwrap()
                .unwrap();
            assert_eq!((e2.body, e2.endpoint_id), (json!({"rate": 1}), None));
            assert!(store.delete_config(key(Some("e1"))).await.unwrap());
            assert!(!store.delete_config(key(Some("e1"))).await.unwrap());
            let e1 = store
                .effective_config("default", "v1", "e1")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(e1.config_id, default.config_id);
            assert_eq!(store.effective_config("ota", "v1", "e1").await.unwrap(), None);
        })
        .await;
    }

    #[tokio::test]
    async fn statuses_keep_dispatch_and_report_apart() {
        on_both(|store| async move {
            store
                .config_dispatched("default", "e1", "v1", "c1")
                .await
                .unwrap();
            let applied = ConfigStatus {
                config_name: "default".into(),
                endpoint_id: "e1".into(),
                app_version: "v1".into(),
                dispatched_config_id: None,
                dispatched_at: None,
                applied_config_id: Some("c1".into()),
                applied_at: None,
                status_code: Some(200),
                reason_phrase: None,
            };
            store.config_applied(&applied).await.unwrap();
            let s = store.config_status("default", "e1").await.unwrap().unwrap();
            assert_eq!(s.dispatched_config_id.as_deref(), Some("c1"));
            assert!(s.has_applied("c1") && !s.has_applied("c2"));
            let all = store
                .config_statuses(&StatusFilter {
                    endpoint_id: Some("e1".into()),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(all.len(), 1);
            let none = store
                .config_statuses(&StatusFilter {
                    config_id: Some("zzz".into()),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert!(none.is_empty());
        })
        .await;
    }
}
