//! Persistent state of the kaa-rs services.
//!
//! # Layout
//! - [`Store`] (this file): opens the database, applies the embedded migrations, owns the pool.
//! - [`epr`]: the endpoint register's repository (endpoints, metadata). Only the EPR service
//!   writes these tables; everyone else goes through EPR's bus protocols or REST.
//! - [`cm`]: the credential service's repository (endpoint tokens, client credentials), secrets
//!   stored only as hashes. Only the CM service uses it.
//! - [`cmx`], [`cex`], [`bcx`]: the device-control extensions' repositories (configuration
//!   documents and statuses; commands and results; upload tokens and blobs), one per service.
//!
//! The backend today is SQLite (bundled). Every statement and migration is written in portable
//! SQL (TEXT/BIGINT, no AUTOINCREMENT, no engine-specific functions) so that the same migrations
//! and queries can run on PostgreSQL in cluster mode. Queries are built at run time (no
//! compile-time checked macros), so building needs no database.

use std::{borrow::Cow, path::Path, str::FromStr, time::Duration};

use sqlx::{
    SqlSafeStr,
    migrate::{Migration, MigrationType, Migrator},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous},
};

pub mod bcx;
pub mod cex;
pub mod cm;
pub mod cmx;
pub mod epr;

pub use cm::{
    ClientCredential, CmError, CredentialKind, CredentialPage, CredentialStatus, EndpointToken, NewAuth,
    NewCredential, NewToken, PasswordCredential, TokenStatus, Transition, token_hash,
};
pub use epr::{
    Endpoint, EndpointPage, EprError, ListFilter, Metadata, MetadataUpdate, NewEndpoint,
    is_valid_metadata_key,
};

/// The migrations, embedded in the binary. Listed by hand because sqlx's `migrate!` macro needs
/// the `macros` feature (and its proc-macro build); a unit test checks this list against the
/// files in `migrations/` so a new file cannot be forgotten.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "epr", include_str!("../migrations/0001_epr.sql")),
    (2, "cm", include_str!("../migrations/0002_cm.sql")),
    (4, "cmx", include_str!("../migrations/0004_cmx.sql")),
    (5, "cex", include_str!("../migrations/0005_cex.sql")),
    (6, "bcx", include_str!("../migrations/0006_bcx.sql")),
];

/// How long a writer waits for SQLite's write lock before giving up (WAL allows one writer).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors opening a store.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot apply database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Why [`Store::ping`] failed.
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    #[error("the database did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the database failed: {0}")]
    Database(#[source] sqlx::Error),
}

/// Handle to the database; cheap to clone (a connection pool inside).
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if missing) the SQLite database file at `path` in WAL mode and migrates it.
    pub async fn open(path: impl AsRef<Path>) -> Result<Store, OpenError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable across application crashes in WAL mode; only an OS crash may
            // lose the last transactions, which is the usual trade for an embedded store.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(OpenError::Connect)?;
        Self::migrated(pool).await
    }

    /// A private in-memory database (for tests and throw-away runs).
    pub async fn open_in_memory() -> Result<Store, OpenError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(OpenError::Connect)?
            .foreign_keys(true);
        // Every SQLite connection to ":memory:" is a separate database, so the pool holds exactly
        // one connection and never retires it (that would drop the data).
        let pool = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(OpenError::Connect)?;
        Self::migrated(pool).await
    }

    async fn migrated(pool: SqlitePool) -> Result<Store, OpenError> {
        migrator().run(&pool).await?;
        Ok(Store { pool })
    }

    /// Whether the database answers `SELECT 1` within `timeout` (the `/health` check). The wait
    /// for a pooled connection counts: a pool exhausted that long is as good as unreachable.
    pub async fn ping(&self, timeout: Duration) -> Result<(), PingError> {
        let query = sqlx::query("SELECT 1").fetch_one(&self.pool);
        match tokio::time::timeout(timeout, query).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(PingError::Database(e)),
            Err(_) => Err(PingError::Timeout(timeout)),
        }
    }

    /// Closes the pool, waiting for checked-out connections to return.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// Whether a statement failed on a UNIQUE constraint (a duplicate the caller reports as a conflict).
fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// A `u64` page offset or limit as the `BIGINT` the database binds, saturating at `i64::MAX`.
fn clamp_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Current Unix time in milliseconds (0 if the clock is before 1970, which only a broken host has).
fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_embedded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        assert_eq!(files.len(), MIGRATIONS.len(), "migrations/ has {files:?}");
        for (file, (version, _, _)) in files.iter().zip(MIGRATIONS) {
            let prefix: i64 = file.split('_').next().unwrap().parse().unwrap();
            assert_eq!(prefix, *version, "{file} is not listed in MIGRATIONS in order");
        }
    }

    #[test]
    fn migrations_use_portable_sql() {
        for (_, name, sql) in MIGRATIONS {
            // Only statements count; the header comment may name what it avoids.
            let upper: String = sql
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
                .to_uppercase();
            for banned in [
                "AUTOINCREMENT",
                "WITHOUT ROWID",
                "PRAGMA",
                "STRICT",
                "DATETIME(",
                "JSON_",
            ] {
                assert!(
                    !upper.contains(banned),
                    "migration {name} uses non-portable {banned}"
                );
            }
        }
    }

    #[tokio::test]
    async fn open_creates_a_wal_file_database_and_reopens_it() {
        let dir = std::env::temp_dir().join(format!("kaa-store-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kaa.db");
        let store = Store::open(&path).await.unwrap();
        let ep = store
            .register(NewEndpoint {
                app_version: "app-v1".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        store.close().await;

        // Migrations are idempotent and the data survives a reopen.
        let store = Store::open(&path).await.unwrap();
        assert_eq!(store.endpoint(&ep.id).await.unwrap().app_version, "app-v1");
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
