//! CEX repository: commands for endpoints, their delivery and their results. Owned by the CEX
//! service.
//!
//! A command's id counts from 1 per (instance, endpoint, command type), allocated inside a write
//! transaction so that concurrent invocations never share one (the device answers by id, and the
//! official client drops a falsy id 0). A command is *outstanding* while it has no result and its
//! `expires_at` lies in the future; only outstanding commands are ever sent to a device.

use serde_json::Value;
use sqlx::{Row, any::AnyRow};

use crate::{Store, is_unique_violation, now_millis};

/// How often an invocation may lose the race for the next command id (PostgreSQL) before failing.
const MAX_ID_ATTEMPTS: u32 = 5;

/// Errors of the CEX repository.
#[derive(Debug, thiserror::Error)]
pub enum CexError {
    #[error("stored command {id} has a payload that is not JSON: {reason}")]
    Corrupt { id: i64, reason: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Which endpoint and command type, for one CEX instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandScope<'a> {
    pub instance: &'a str,
    pub endpoint_id: &'a str,
    pub command_type: &'a str,
}

/// A stored command.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub endpoint_id: String,
    pub command_type: String,
    pub id: i64,
    pub payload: Option<Value>,
    pub created_at: i64,
    pub expires_at: i64,
    /// When it was last sent to the device (a push or a pull).
    pub delivered_at: Option<i64>,
    pub result: Option<CommandResult>,
}

/// What the device answered.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandResult {
    pub completed_at: i64,
    pub status_code: i64,
    pub reason_phrase: Option<String>,
    pub payload: Option<Value>,
}

/// Where a result went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    Recorded,
    /// The command already had a result; the first one stays.
    AlreadyCompleted,
    /// No such command.
    Unknown,
}

fn json_column(row: &AnyRow, column: &str, id: i64) -> Result<Option<Value>, CexError> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| CexError::Corrupt {
            id,
            reason: e.to_string(),
        })
}

fn command_from_row(row: &AnyRow) -> Result<Command, CexError> {
    let id: i64 = row.try_get("id")?;
    let completed_at: Option<i64> = row.try_get("completed_at")?;
    let result = match completed_at {
        None => None,
        Some(completed_at) => Some(CommandResult {
            completed_at,
            status_code: row.try_get::<Option<i64>, _>("status_code")?.unwrap_or(200),
            reason_phrase: row.try_get("reason_phrase")?,
            payload: json_column(row, "result_payload", id)?,
        }),
    };
    Ok(Command {
        endpoint_id: row.try_get("endpoint_id")?,
        command_type: row.try_get("command_type")?,
        id,
        payload: json_column(row, "payload", id)?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        delivered_at: row.try_get("delivered_at")?,
        result,
    })
}

impl Store {
    /// Stores a new command living `ttl_ms`; returns it with its id.
    pub async fn add_command(
        &self,
        scope: CommandScope<'_>,
        payload: Option<&Value>,
        ttl_ms: i64,
    ) -> Result<Command, CexError> {
        // SQLite: the write transaction queues concurrent invocations before they read the
        // highest id. PostgreSQL: two may read the same one; the loser's insert violates the key
        // and it takes the next id.
        let mut attempts = 0;
        let (id, now, expires_at) = loop {
            attempts += 1;
            match self.insert_command(scope, payload, ttl_ms).await {
                Err(e) if attempts < MAX_ID_ATTEMPTS && is_unique_violation(&e) => continue,
                done => break done?,
            }
        };
        Ok(Command {
            endpoint_id: scope.endpoint_id.to_owned(),
            command_type: scope.command_type.to_owned(),
            id,
            payload: payload.cloned(),
            created_at: now,
            expires_at,
            delivered_at: None,
            result: None,
        })
    }

    /// One attempt at storing a command under the next free id: (id, created, expires).
    async fn insert_command(
        &self,
        scope: CommandScope<'_>,
        payload: Option<&Value>,
        ttl_ms: i64,
    ) -> Result<(i64, i64, i64), sqlx::Error> {
        let (_turn, mut tx) = self.begin_write().await?;
        let id: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(id), 0) + 1 FROM cex_commands \
             WHERE instance = $1 AND endpoint_id = $2 AND command_type = $3",
        )
        .bind(scope.instance)
        .bind(scope.endpoint_id)
        .bind(scope.command_type)
        .fetch_one(&mut *tx)
        .await?;
        let now = now_millis();
        let expires_at = now.saturating_add(ttl_ms);
        sqlx::query(
            "INSERT INTO cex_commands (instance, endpoint_id, command_type, id, payload, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(scope.instance)
        .bind(scope.endpoint_id)
        .bind(scope.command_type)
        .bind(id)
        .bind(payload.map(Value::to_string))
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((id, now, expires_at))
    }

    /// One command, if it exists.
    pub async fn command(&self, scope: CommandScope<'_>, id: i64) -> Result<Option<Command>, CexError> {
        let row = sqlx::query(
            "SELECT * FROM cex_commands WHERE instance = $1 AND endpoint_id = $2 AND command_type = $3 AND id = $4",
        )
        .bind(scope.instance)
        .bind(scope.endpoint_id)
        .bind(scope.command_type)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(command_from_row).transpose()
    }

    /// The endpoint's outstanding commands (of one type, or all), oldest first.
    pub async fn outstanding_commands(
        &self,
        instance: &str,
        endpoint_id: &str,
        command_type: Option<&str>,
    ) -> Result<Vec<Command>, CexError> {
        let rows = sqlx::query(
            "SELECT * FROM cex_commands \
             WHERE instance = $1 AND endpoint_id = $2 AND ($3 IS NULL OR command_type = $3) \
             AND completed_at IS NULL AND expires_at > $4 \
             ORDER BY command_type, id",
        )
        .bind(instance)
        .bind(endpoint_id)
        .bind(command_type)
        .bind(now_millis())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(command_from_row).collect()
    }

    /// Records that these commands were sent to the device now.
    pub async fn commands_delivered(&self, scope: CommandScope<'_>, ids: &[i64]) -> Result<(), CexError> {
        let _turn = self.write_turn().await;
        let now = now_millis();
        for id in ids {
            sqlx::query(
                "UPDATE cex_commands SET delivered_at = $5 \
                 WHERE instance = $1 AND endpoint_id = $2 AND command_type = $3 AND id = $4 \
                 AND completed_at IS NULL",
            )
            .bind(scope.instance)
            .bind(scope.endpoint_id)
            .bind(scope.command_type)
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Records the device's result for a command (the first result wins).
    pub async fn complete_command(
        &self,
        scope: CommandScope<'_>,
        id: i64,
        result: &CommandResult,
    ) -> Result<Completion, CexError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "UPDATE cex_commands SET completed_at = $5, status_code = $6, reason_phrase = $7, result_payload = $8 \
             WHERE instance = $1 AND endpoint_id = $2 AND command_type = $3 AND id = $4 AND completed_at IS NULL",
        )
        .bind(scope.instance)
        .bind(scope.endpoint_id)
        .bind(scope.command_type)
        .bind(id)
        .bind(result.completed_at)
        .bind(result.status_code)
        .bind(&result.reason_phrase)
        .bind(result.payload.as_ref().map(Value::to_string))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() > 0 {
            return Ok(Completion::Recorded);
        }
        Ok(match self.command(scope, id).await? {
            Some(_) => Completion::AlreadyCompleted,
            None => Completion::Unknown,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::on_both;

    const SCOPE: CommandScope<'static> = CommandScope {
        instance: "cex",
        endpoint_id: "e1",
        command_type: "reboot",
    };

    #[tokio::test]
    async fn concurrent_invocations_get_distinct_ids() {
        on_both(|store| async move {
            let adds = (0..4).map(|_| store.add_command(SCOPE, None, 60_000));
            let mut ids: Vec<i64> = futures_util::future::join_all(adds)
                .await
                .into_iter()
                .map(|c| c.unwrap().id)
                .collect();
            ids.sort_unstable();
            assert_eq!(ids, [1, 2, 3, 4]);
        })
        .await;
    }

    #[tokio::test]
    async fn ids_count_per_type_and_results_complete_once() {
        on_both(|store| async move {
            let first = store
                .add_command(SCOPE, Some(&json!({"delay": 1})), 60_000)
                .await
                .unwrap();
            let second = store.add_command(SCOPE, None, 60_000).await.unwrap();
            let other = CommandScope {
                command_type: "switch",
                ..SCOPE
            };
            let third = store.add_command(other, None, 60_000).await.unwrap();
            assert_eq!((first.id, second.id, third.id), (1, 2, 1));
            let outstanding = store
                .outstanding_commands("cex", "e1", Some("reboot"))
                .await
                .unwrap();
            assert_eq!(outstanding.iter().map(|c| c.id).collect::<Vec<_>>(), [1, 2]);
            assert_eq!(outstanding[0].payload, Some(json!({"delay": 1})));
            assert_eq!(
                store.outstanding_commands("cex", "e1", None).await.unwrap().len(),
                3
            );

            store.commands_delivered(SCOPE, &[1]).await.unwrap();
            let result = CommandResult {
                completed_at: 5,
                status_code: 200,
                reason_phrase: None,
                payload: Some(json!("ok")),
            };
            assert_eq!(
                store.complete_command(SCOPE, 1, &result).await.unwrap(),
                Completion::Recorded
            );
            let late = CommandResult {
                status_code: 500,
                ..result.clone()
            };
            assert_eq!(
                store.complete_command(SCOPE, 1, &late).await.unwrap(),
                Completion::AlreadyCompleted
            );
            assert_eq!(
                store.complete_command(SCOPE, 9, &late).await.unwrap(),
                Completion::Unknown
            );
            let done = store.command(SCOPE, 1).await.unwrap().unwrap();
            assert!(done.delivered_at.is_some());
            assert_eq!(done.result, Some(result));
            let outstanding = store
                .outstanding_commands("cex", "e1", Some("reboot"))
                .await
                .unwrap();
            assert_eq!(outstanding.iter().map(|c| c.id).collect::<Vec<_>>(), [2]);
        })
        .await;
    }

    #[tokio::test]
    async fn expired_commands_are_not_outstanding() {
        on_both(|store| async move {
            store.add_command(SCOPE, None, 0).await.unwrap();
            assert!(
                store
                    .outstanding_commands("cex", "e1", None)
                    .await
                    .unwrap()
                    .is_empty()
            );
            assert!(store.command(SCOPE, 1).await.unwrap().is_some());
        })
        .await;
    }
}
