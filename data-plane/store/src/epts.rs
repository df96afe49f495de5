//! EPTS repository: time series data points.
//!
//! Owned by the EPTS service. A point belongs to an application, a series and an endpoint, has a
//! time (ms) and a JSON object of values. Points are only inserted (a batch in one transaction),
//! read by time range or as "the latest before", and deleted by age (retention), a bounded
//! number at a time so that a large backlog never holds the write lock for long.
//!
//! Parameters are written `$1, $2, ...`, which both SQLite and PostgreSQL accept.

use serde_json::{Map, Value};
use sqlx::{Row, any::AnyRow};

use crate::{SqlBuilder, Store, clamp_i64};

mod sqlite_writer;
pub(crate) use sqlite_writer::SqliteWriter;

/// Rows per INSERT statement (7 parameters each). Kept small: binding looks each parameter up by
/// name, a linear scan in SQLite, so the cost of a statement grows with the square of its size.
const INSERT_ROWS: usize = 16;

/// Errors of the EPTS repository.
#[derive(Debug, thiserror::Error)]
pub enum EptsError {
    #[error("stored values of a {series} point are not a JSON object: {reason}")]
    Corrupt { series: String, reason: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the time series point writer stopped")]
    WriterStopped,
    #[error("cannot start the time series point writer: {0}")]
    WriterStart(String),
}

/// A point to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPoint {
    pub app_name: String,
    pub series: String,
    pub endpoint_id: String,
    /// When it was measured (ms).
    pub ts: i64,
    /// Its place in its batch: orders points of one series and endpoint with equal `ts`.
    pub seq: i64,
    /// When the platform received it (ms).
    pub ingested_at: i64,
    pub values: Map<String, Value>,
}

/// A stored point.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPoint {
    pub series: String,
    pub endpoint_id: String,
    pub ts: i64,
    pub values: Map<String, Value>,
}

/// Time order of a query's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Ascending,
    Descending,
}

/// Points of one series in a time range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointQuery {
    pub app_name: String,
    pub series: String,
    /// Only these endpoints; `None`: every endpoint.
    pub endpoint_ids: Option<Vec<String>>,
    /// Inclusive bounds (ms).
    pub from: i64,
    pub to: i64,
    pub order: Order,
    pub limit: u64,
}

fn point_from_row(row: &AnyRow) -> Result<StoredPoint, EptsError> {
    let series: String = row.try_get("series")?;
    let text: String = row.try_get("point_values")?;
    let values = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return Err(EptsError::Corrupt {
                series,
                reason: "not an object".into(),
            });
        }
        Err(e) => {
            return Err(EptsError::Corrupt {
                series,
                reason: e.to_string(),
            });
        }
    };
    Ok(StoredPoint {
        series,
        endpoint_id: row.try_get("endpoint_id")?,
        ts: row.try_get("ts")?,
        values,
    })
}

/// ` AND endpoint_id IN (...)` when the query names endpoints.
fn push_endpoints(qb: &mut SqlBuilder, endpoint_ids: Option<&[String]>) {
    if let Some(ids) = endpoint_ids {
        qb.push(" AND endpoint_id IN (")
            .push_binds(ids.iter().map(String::as_str))
            .push(")");
    }
}

impl Store {
    /// Stores a batch of points in one transaction: all or none. On an SQLite file the point
    /// writer's thread does it (`epts/sqlite_writer.rs`); otherwise the pool.
    pub async fn insert_points(&self, points: &[NewPoint]) -> Result<(), EptsError> {
        if points.is_empty() {
            return Ok(());
        }
        if let Some(writer) = &self.points {
            return writer.insert(points).await;
        }
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        // One statement per chunk of rows, not per row: each statement is a round trip to the
        // database (in-memory SQLite: to sqlx's worker thread and back).
        for chunk in points.chunks(INSERT_ROWS) {
            let mut qb = SqlBuilder::new(
                "INSERT INTO epts_points (app_name, series, endpoint_id, ts, seq, ingested_at, point_values) VALUES ",
            );
            for (i, p) in chunk.iter().enumerate() {
                if i > 0 {
                    qb.push(", ");
                }
                qb.push("(").push_bind(p.app_name.as_str());
                qb.push(", ").push_bind(p.series.as_str());
                qb.push(", ").push_bind(p.endpoint_id.as_str());
                qb.push(", ").push_bind(p.ts).push(", ").push_bind(p.seq);
                qb.push(", ").push_bind(p.ingested_at);
                // A map of JSON values always serializes.
                let values = serde_json::to_string(&p.values).unwrap_or_default();
                qb.push(", ").push_bind(values).push(")");
            }
            qb.build()?.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The points of one series in `[from, to]`, in time order, at most `limit`.
    pub async fn points(&self, q: &PointQuery) -> Result<Vec<StoredPoint>, EptsError> {
        if q.endpoint_ids.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Vec::new());
        }
        let mut qb = SqlBuilder::new(
            "SELECT series, endpoint_id, ts, point_values FROM epts_points WHERE app_name = ",
        );
        qb.push_bind(q.app_name.as_str());
        qb.push(" AND series = ").push_bind(q.series.as_str());
        push_endpoints(&mut qb, q.endpoint_ids.as_deref());
        qb.push(" AND ts >= ").push_bind(q.from);
        qb.push(" AND ts <= ").push_bind(q.to);
        qb.push(match q.order {
            Order::Ascending => " ORDER BY ts ASC, endpoint_id ASC, ingested_at ASC, seq ASC",
            Order::Descending => " ORDER BY ts DESC, endpoint_id DESC, ingested_at DESC, seq DESC",
        });
        qb.push(" LIMIT ").push_bind(clamp_i64(q.limit));
        let rows = qb.build()?.fetch_all(&self.pool).await?;
        rows.iter().map(point_from_row).collect()
    }

    /// For every endpoint and series, its latest point at or before `before` (ms). `series` empty:
    /// every series of the application; `endpoint_ids` `None`: every endpoint.
    pub async fn last_points(
        &self,
        app_name: &str,
        series: &[String],
        endpoint_ids: Option<&[String]>,
        before: i64,
    ) -> Result<Vec<StoredPoint>, EptsError> {
        if endpoint_ids.is_some_and(<[String]>::is_empty) {
            return Ok(Vec::new());
        }
        // The latest time per (endpoint, series), then the rows at that time; of rows sharing
        // it the caller keeps the last (highest seq), which this order puts last.
        let mut qb = SqlBuilder::new(
            "SELECT p.series, p.endpoint_id, p.ts, p.point_values FROM epts_points p JOIN \
             (SELECT series, endpoint_id, MAX(ts) AS ts FROM epts_points WHERE app_name = ",
        );
        qb.push_bind(app_name);
        if !series.is_empty() {
            qb.push(" AND series IN (")
                .push_binds(series.iter().map(String::as_str))
                .push(")");
        }
        push_endpoints(&mut qb, endpoint_ids);
        qb.push(" AND ts <= ").push_bind(before);
        qb.push(
            " GROUP BY series, endpoint_id) m ON p.series = m.series AND p.endpoint_id = m.endpoint_id \
             AND p.ts = m.ts WHERE p.app_name = ",
        );
        qb.push_bind(app_name);
        qb.push(" ORDER BY p.endpoint_id, p.series, p.ingested_at, p.seq");
        let rows = qb.build()?.fetch_all(&self.pool).await?;
        let mut out: Vec<StoredPoint> = Vec::with_capacity(rows.len());
        for row in &rows {
            let point = point_from_row(row)?;
            match out.last_mut() {
                Some(prev) if prev.endpoint_id == point.endpoint_id && prev.series == point.series => {
                    *prev = point;
                }
                _ => out.push(point),
            }
        }
        Ok(out)
    }

    /// Names of the series an application has points of.
    pub async fn series_names(&self, app_name: &str) -> Result<Vec<String>, EptsError> {
        let names =
            sqlx::query_scalar("SELECT DISTINCT series FROM epts_points WHERE app_name = $1 ORDER BY series")
                .bind(app_name)
                .fetch_all(&self.pool)
                .await?;
        Ok(names)
    }

    /// Deletes points of an application older than `cutoff` (ms), about `max_rows` of the oldest
    /// at most (points sharing the boundary time wait for the next round); returns how many.
    pub async fn delete_points_before(
        &self,
        app_name: &str,
        cutoff: i64,
        max_rows: u64,
    ) -> Result<u64, EptsError> {
        let _turn = self.write_turn().await;
        // The time of the (max_rows+1)-th oldest expired point bounds this round; without one,
        // fewer than max_rows are expired and all of them go.
        let boundary: Option<i64> = sqlx::query_scalar(
            "SELECT ts FROM epts_points WHERE app_name = $1 AND ts < $2 ORDER BY ts LIMIT 1 OFFSET $3",
        )
        .bind(app_name)
        .bind(cutoff)
        .bind(clamp_i64(max_rows))
        .fetch_optional(&self.pool)
        .await?;
        let result = sqlx::query("DELETE FROM epts_points WHERE app_name = $1 AND ts < $2")
            .bind(app_name)
            .bind(boundary.unwrap_or(cutoff))
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::{TestStore, on_both};

    fn point(series: &str, endpoint: &str, ts: i64, seq: i64, value: Value) -> NewPoint {
        NewPoint {
            app_name: "meter".into(),
            series: series.into(),
            endpoint_id: endpoint.into(),
            ts,
            seq,
            ingested_at: 1_000,
            values: Map::from_iter([("value".to_owned(), value)]),
        }
    }

    fn query(series: &str, order: Order, limit: u64) -> PointQuery {
        PointQuery {
            app_name: "meter".into(),
            series: series.into(),
            endpoint_ids: None,
            from: 0,
            to: i64::MAX,
            order,
            limit,
        }
    }

    fn values(points: &[StoredPoint]) -> Vec<(i64, Value)> {
        points.iter().map(|p| (p.ts, p.values["value"].clone())).collect()
    }

    /// On SQLite, the point writer's thread and the pool's writers take turns (no writer meets
    /// the write lock taken and sleeps in SQLite's busy handler): while a turn is held, both wait.
    #[tokio::test]
    async fn sqlite_writers_wait_for_their_turn() {
        let db = TestStore::sqlite().await;
        let store = &db.store;
        let turn = store.write_turn().await;
        assert!(turn.is_some());
        let rows = [point("t", "a", 10, 0, json!(1))];
        let mut insert = std::pin::pin!(store.insert_points(&rows));
        let mut delete = std::pin::pin!(store.delete_points_before("meter", 5, 100));
        // The pool's writer queues on its first poll; the thread's, once it has the job.
        assert!(
            futures_util::poll!(&mut delete).is_pending(),
            "the deletion went ahead"
        );
        let inserted = tokio::select! {
            inserted = &mut insert => Some(inserted),
            () = tokio::time::sleep(std::time::Duration::from_millis(200)) => None,
        };
        assert!(
            inserted.is_none(),
            "the insert went ahead of the turn: {inserted:?}"
        );
        drop(turn);
        let (inserted, deleted) = tokio::join!(insert, delete);
        inserted.unwrap();
        assert_eq!(deleted.unwrap(), 0);
        let stored = store.points(&query("t", Order::Ascending, 10)).await.unwrap();
        assert_eq!(values(&stored), [(10, json!(1))]);
    }

    #[tokio::test]
    async fn points_come_back_in_time_order_within_range_and_limit() {
        on_both(|store| async move {
            store
                .insert_points(&[
                    point("t", "a", 30, 0, json!(3)),
                    point("t", "a", 10, 0, json!(1)),
                    point("t", "b", 20, 0, json!(2)),
                    point("t", "a", 20, 0, json!(20)),
                    point("t", "a", 20, 1, json!(21)),
                    point("h", "a", 15, 0, json!(99)),
                ])
                .await
                .unwrap();
            let all = store.points(&query("t", Order::Ascending, 100)).await.unwrap();
            assert_eq!(
                values(&all),
                [
                    (10, json!(1)),
                    (20, json!(20)),
                    (20, json!(21)),
                    (20, json!(2)),
                    (30, json!(3))
                ]
            );
            let mut q = query("t", Order::Descending, 2);
            q.endpoint_ids = Some(vec!["a".into()]);
            assert_eq!(
                values(&store.points(&q).await.unwrap()),
                [(30, json!(3)), (20, json!(21))]
            );
            let mut q = query("t", Order::Ascending, 100);
            (q.from, q.to) = (15, 25);
            q.endpoint_ids = Some(vec!["a".into()]);
            assert_eq!(
                values(&store.points(&q).await.unwrap()),
                [(20, json!(20)), (20, json!(21))]
            );
            q.endpoint_ids = Some(vec![]);
            assert!(store.points(&q).await.unwrap().is_empty());
            assert_eq!(store.series_names("meter").await.unwrap(), ["h", "t"]);
        })
        .await;
    }

    #[tokio::test]
    async fn last_points_are_per_endpoint_and_series_before_a_time() {
        on_both(|store| async move {
            store
                .insert_points(&[
                    point("t", "a", 10, 0, json!(1)),
                    point("t", "a", 20, 0, json!(2)),
                    point("t", "a", 20, 1, json!(3)),
                    point("t", "b", 5, 0, json!(4)),
                    point("h", "a", 50, 0, json!(5)),
                ])
                .await
                .unwrap();
            let last = store.last_points("meter", &[], None, i64::MAX).await.unwrap();
            let got: Vec<_> = last
                .iter()
                .map(|p| {
                    (
                        p.endpoint_id.as_str(),
                        p.series.as_str(),
                        p.values["value"].clone(),
                    )
                })
                .collect();
            assert_eq!(
                got,
                [("a", "h", json!(5)), ("a", "t", json!(3)), ("b", "t", json!(4))]
            );
            let before = store
                .last_points("meter", &["t".into()], Some(&["a".into()]), 15)
                .await
                .unwrap();
            assert_eq!(values(&before), [(10, json!(1))]);
            assert!(
                store
                    .last_points("other", &[], None, i64::MAX)
                    .await
                    .unwrap()
                    .is_empty()
            );
        })
        .await;
    }

    #[tokio::test]
    async fn retention_deletes_old_points_a_bounded_number_at_a_time() {
        on_both(|store| async move {
            let points: Vec<NewPoint> = (0..10).map(|i| point("t", "a", i * 10, 0, json!(i))).collect();
            store.insert_points(&points).await.unwrap();
            // Expired: ts < 75, i.e. 8 points; 3 per round.
            assert_eq!(store.delete_points_before("meter", 75, 3).await.unwrap(), 3);
            assert_eq!(store.delete_points_before("meter", 75, 3).await.unwrap(), 3);
            assert_eq!(store.delete_points_before("meter", 75, 3).await.unwrap(), 2);
            assert_eq!(store.delete_points_before("meter", 75, 3).await.unwrap(), 0);
            let left = store.points(&query("t", Order::Ascending, 100)).await.unwrap();
            assert_eq!(values(&left), [(80, json!(8)), (90, json!(9))]);
            assert_eq!(store.delete_points_before("other", i64::MAX, 3).await.unwrap(), 0);
        })
        .await;
    }

    #[tokio::test]
    async fn the_sqlite_writer_stores_all_or_none_and_goes_on_after_a_failure() {
        let db = TestStore::sqlite().await;
        let store = &db.store;
        // The writer's own connection inserts; the pool's connections must see the commits.
        sqlx::query(
            "CREATE TRIGGER refuse_bad BEFORE INSERT ON epts_points WHEN NEW.series = 'bad' \
             BEGIN SELECT RAISE(ABORT, 'bad point'); END",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        let refused = store
            .insert_points(&[point("t", "a", 1, 0, json!(1)), point("bad", "a", 2, 0, json!(2))])
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("bad point"), "{refused}");
        assert!(
            store
                .points(&query("t", Order::Ascending, 10))
                .await
                .unwrap()
                .is_empty()
        );
        store
            .insert_points(&[point("t", "a", 3, 0, json!(3)), point("t", "b", 4, 0, json!(4))])
            .await
            .unwrap();
        let stored = store.points(&query("t", Order::Ascending, 10)).await.unwrap();
        assert_eq!(values(&stored), [(3, json!(3)), (4, json!(4))]);
        assert_eq!(stored[1].endpoint_id, "b");

        store.close().await;
        let closed = store.insert_points(&[point("t", "a", 5, 0, json!(5))]).await;
        assert!(matches!(closed, Err(EptsError::WriterStopped)), "{closed:?}");
    }

    #[tokio::test]
    async fn concurrent_inserts_through_the_sqlite_writer_are_all_stored() {
        let db = TestStore::sqlite().await;
        let inserts = (0..20).map(|i| {
            let store = db.store.clone();
            tokio::spawn(async move {
                let points: Vec<NewPoint> =
                    (0..5).map(|j| point("t", "a", i * 10 + j, 0, json!(j))).collect();
                store.insert_points(&points).await
            })
        });
        for insert in futures_util::future::join_all(inserts).await {
            insert.unwrap().unwrap();
        }
        let stored = db
            .store
            .points(&query("t", Order::Ascending, 1_000))
            .await
            .unwrap();
        let times: Vec<i64> = stored.iter().map(|p| p.ts).collect();
        assert_eq!(times, (0..200).filter(|t| t % 10 < 5).collect::<Vec<_>>());
    }
}
