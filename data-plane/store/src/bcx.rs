//! BCX repository: upload tokens (as hashes, like CM's endpoint tokens) and uploaded blobs
//! (base64 text, the one binary representation SQLite and PostgreSQL share). Owned by BCX.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use sqlx::{Row, any::AnyRow};

use crate::{Store, now_millis, token_hash};

/// Errors of the BCX repository.
#[derive(Debug, thiserror::Error)]
pub enum BcxError {
    #[error("stored blob {name:?} is not valid base64: {reason}")]
    Corrupt { name: String, reason: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// The endpoint an upload token was issued to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadGrant {
    pub endpoint_id: String,
    pub app_version: String,
}

/// An uploaded blob, without its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub endpoint_id: String,
    pub name: String,
    pub content_type: String,
    pub size: i64,
    pub uploaded_at: i64,
}

fn info_from_row(row: &AnyRow) -> Result<BlobInfo, sqlx::Error> {
    Ok(BlobInfo {
        endpoint_id: row.try_get("endpoint_id")?,
        name: row.try_get("name")?,
        content_type: row.try_get("content_type")?,
        size: row.try_get("size")?,
        uploaded_at: row.try_get("uploaded_at")?,
    })
}

impl Store {
    /// Keeps an upload token (its hash) for the endpoint, and forgets tokens older than `ttl_ms`.
    pub async fn add_upload_token(
        &self,
        instance: &str,
        token: &str,
        grant: &UploadGrant,
        ttl_ms: i64,
    ) -> Result<(), BcxError> {
        let _turn = self.write_turn().await;
        let now = now_millis();
        sqlx::query("DELETE FROM bcx_tokens WHERE created_at <= $1")
            .bind(now.saturating_sub(ttl_ms))
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO bcx_tokens (token_hash, instance, endpoint_id, app_version, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash(token))
        .bind(instance)
        .bind(&grant.endpoint_id)
        .bind(&grant.app_version)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whom `token` was issued to, if it was issued by `instance` less than `ttl_ms` ago.
    pub async fn upload_grant(
        &self,
        instance: &str,
        token: &str,
        ttl_ms: i64,
    ) -> Result<Option<UploadGrant>, BcxError> {
        let row = sqlx::query(
            "SELECT endpoint_id, app_version FROM bcx_tokens \
             WHERE token_hash = $1 AND instance = $2 AND created_at > $3",
        )
        .bind(token_hash(token))
        .bind(instance)
        .bind(now_millis().saturating_sub(ttl_ms))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(|r| -> Result<UploadGrant, sqlx::Error> {
                Ok(UploadGrant {
                    endpoint_id: r.try_get("endpoint_id")?,
                    app_version: r.try_get("app_version")?,
                })
            })
            .transpose()?)
    }

    /// Stores (or replaces) a blob.
    pub async fn put_blob(
        &self,
        instance: &str,
        endpoint_id: &str,
        name: &str,
        content_type: &str,
        content: &[u8],
    ) -> Result<BlobInfo, BcxError> {
        let _turn = self.write_turn().await;
        let now = now_millis();
        let size = i64::try_from(content.len()).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO bcx_blobs (instance, endpoint_id, name, content_type, size, content, uploaded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (instance, endpoint_id, name) \
             DO UPDATE SET content_type = $4, size = $5, content = $6, uploaded_at = $7",
        )
        .bind(instance)
        .bind(endpoint_id)
        .bind(name)
        .bind(content_type)
        .bind(size)
        .bind(STANDARD.encode(content))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(BlobInfo {
            endpoint_id: endpoint_id.to_owned(),
            name: name.to_owned(),
            content_type: content_type.to_owned(),
            size,
            uploaded_at: now,
        })
    }

    /// The endpoint's blobs, by name.
    pub async fn blobs(&self, instance: &str, endpoint_id: &str) -> Result<Vec<BlobInfo>, BcxError> {
        let rows = sqlx::query(
            "SELECT endpoint_id, name, content_type, size, uploaded_at FROM bcx_blobs \
             WHERE instance = $1 AND endpoint_id = $2 ORDER BY name",
        )
        .bind(instance)
        .bind(endpoint_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(info_from_row).collect::<Result<_, _>>()?)
    }

    /// One blob with its content.
    pub async fn blob(
        &self,
        instance: &str,
        endpoint_id: &str,
        name: &str,
    ) -> Result<Option<(BlobInfo, Vec<u8>)>, BcxError> {
        let row =
            sqlx::query("SELECT * FROM bcx_blobs WHERE instance = $1 AND endpoint_id = $2 AND name = $3")
                .bind(instance)
                .bind(endpoint_id)
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else { return Ok(None) };
        let content: String = row.try_get("content")?;
        let bytes = STANDARD.decode(content).map_err(|e| BcxError::Corrupt {
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Some((info_from_row(&row)?, bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::on_both;

    #[tokio::test]
    async fn tokens_expire_and_blobs_round_trip() {
        on_both(|store| async move {
            let grant = UploadGrant {
                endpoint_id: "e1".into(),
                app_version: "v1".into(),
            };
            store.add_upload_token("bcx", "t1", &grant, 60_000).await.unwrap();
            assert_eq!(
                store.upload_grant("bcx", "t1", 60_000).await.unwrap(),
                Some(grant)
            );
            assert_eq!(store.upload_grant("bcx", "t2", 60_000).await.unwrap(), None);
            assert_eq!(store.upload_grant("other", "t1", 60_000).await.unwrap(), None);
            assert_eq!(store.upload_grant("bcx", "t1", 0).await.unwrap(), None, "expired");

            let bytes = [0u8, 1, 2, 255];
            store
                .put_blob("bcx", "e1", "a/b.bin", "application/octet-stream", &bytes)
                .await
                .unwrap();
            store
                .put_blob("bcx", "e1", "a/b.bin", "text/plain", b"new")
                .await
                .unwrap();
            let (info, content) = store.blob("bcx", "e1", "a/b.bin").await.unwrap().unwrap();
            assert_eq!(
                (info.size, info.content_type.as_str(), content),
                (3, "text/plain", b"new".to_vec())
            );
            assert_eq!(store.blobs("bcx", "e1").await.unwrap().len(), 1);
            assert!(store.blobs("bcx", "e2").await.unwrap().is_empty());
            assert!(store.blob("bcx", "e1", "x").await.unwrap().is_none());
        })
        .await;
    }
}
