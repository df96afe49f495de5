//! Persistent state of the kaa-rs services.
//!
//! # Layout
//! - [`Store`] (this file): opens the database, applies the embedded migrations, owns the pool.
//! - [`epr`]: the endpoint register's repository (endpoints, metadata). Only the EPR service
//!   writes these tables; everyone else goes through EPR's bus protocols or REST.
//! - [`cm`]: the credential service's repository (endpoint tokens, client credentials), secrets
//!   stored only as hashes. Only the CM service uses it.
//! - [`epts`]: the time series service's data points. Only the EPTS service uses it. On an SQLite
//!   file its inserts bypass the pool: one thread with its own connection (`rusqlite`) writes them.
//! - [`cmx`], [`cex`], [`bcx`]: the device-control extensions' repositories (configuration
//!   documents and statuses; commands and results; upload tokens and blobs), one per service.
//! - [`SqlBuilder`] (`sql_builder.rs`): dynamic SQL with numbered placeholders, for both engines.
//!
//! # Backends
//! One schema, one set of migrations and one set of queries for both engines, through sqlx's
//! `Any` driver: SQLite (bundled; `kaa up` and `kaa run --database FILE`) and PostgreSQL
//! (`kaa run --database postgres://...`, cluster mode). [`Store::connect`] picks the engine from
//! the argument. Every statement and migration is portable SQL: TEXT/BIGINT (PostgreSQL's INTEGER
//! is 32-bit; the `Any` driver decodes BIGINT as `i64` on both), no AUTOINCREMENT, no
//! engine-specific functions, parameters written `$1, $2, ...`. Queries are built at run time
//! (no compile-time checked macros), so building needs no database.
//!
//! Writing a repository module: take rows as [`sqlx::any::AnyRow`] (`use sqlx::Row` for
//! `try_get`), executors as `impl sqlx::AnyExecutor<'e>` (`&self.pool`, or `&mut *tx`), and build
//! dynamic SQL with [`SqlBuilder`], never sqlx's `QueryBuilder<Any>` (it writes `?` placeholders,
//! which PostgreSQL rejects). Every write first takes its turn, `let _turn = self.write_turn()`
//! (on SQLite this process's writers queue there instead of in SQLite's sleeping busy handler;
//! see `WriteGate`). A read-modify-write starts with `Store::begin_write`, which takes the turn
//! too, and reads the rows it will change with [`Backend::locking`], so concurrent writers queue
//! on both engines; or, where a row carries a version (EPR's metadata), it is optimistic: an
//! `UPDATE ... WHERE version = <the version read>` that is retried from a fresh read when it
//! changed nothing (by a writer on PostgreSQL or in another process).
//! `is_unique_violation` recognises a duplicate on both. Column types: TEXT, BIGINT (`i64`; never
//! INTEGER, which PostgreSQL decodes as `i32`), and JSON stored as TEXT. Tests run each case on
//! both engines with `testing::on_both(|store| async move { ... })`.

use std::{borrow::Cow, path::Path, sync::Arc, time::Duration};

use sqlx::{
    AssertSqlSafe, ConnectOptions, SqlSafeStr, Transaction,
    any::{Any, AnyConnectOptions, AnyPoolOptions},
    migrate::{Migration, MigrationType, Migrator},
    pool::Pool,
    sqlite::SqliteConnectOptions,
};

pub mod bcx;
pub mod cex;
pub mod cm;
pub mod cmx;
pub mod epr;
pub mod epts;
mod sql_builder;
#[cfg(test)]
mod testing;

pub use cm::{
    ClientCredential, CmError, CredentialKind, CredentialPage, CredentialStatus, EndpointToken, NewAuth,
    NewCredential, NewToken, PasswordCredential, TokenStatus, Transition, token_hash,
};
pub use epr::{
    Endpoint, EndpointPage, EprError, ListFilter, ListedEndpoint, Metadata, MetadataUpdate, NewEndpoint,
    is_valid_metadata_key,
};
pub use epts::{EptsError, NewPoint, Order, PointQuery, StoredPoint};
pub use sql_builder::SqlBuilder;

/// The migrations, embedded in the binary. Listed by hand because sqlx's `migrate!` macro needs
/// the `macros` feature (and its proc-macro build); a unit test checks this list against the
/// files in `migrations/` so a new file cannot be forgotten.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "epr", include_str!("../migrations/0001_epr.sql")),
    (2, "cm", include_str!("../migrations/0002_cm.sql")),
    (3, "epts", include_str!("../migrations/0003_epts.sql")),
    (4, "cmx", include_str!("../migrations/0004_cmx.sql")),
    (5, "cex", include_str!("../migrations/0005_cex.sql")),
    (6, "bcx", include_str!("../migrations/0006_bcx.sql")),
    (7, "epr list", include_str!("../migrations/0007_epr_list.sql")),
];

/// Connections per process; PostgreSQL counts them against its `max_connections` (100 by
/// default), so a handful of replicas of each service fit.
const MAX_CONNECTIONS: u32 = 8;

/// Run on every new SQLite file connection. The `Any` driver is configured by URL only, which
/// cannot carry these options. busy_timeout (how long a writer waits for the write lock; WAL allows
/// one writer) comes first: switching to WAL takes a lock that a connection opened at the same
/// moment must wait for. NORMAL is durable across application
/// crashes in WAL mode; only an OS crash may lose the last transactions, the usual trade for an
/// embedded store.
///
/// wal_autocheckpoint: the committing connection checkpoints once the WAL holds this many pages
/// (4,000, 16 MiB, instead of 1,000), on every connection alike (the one with the smallest value
/// would do them all). Each stored time series point dirties about one page (a leaf of the series
/// index per endpoint and series), and a checkpoint costs two fsyncs plus a copy of each distinct
/// page: under `kaa-load reqresp`, checkpoints took 60% of the point writer's time at 1,000
/// pages, about half at 4,000 (+30% requests/s); 16,000 gave a little more throughput but a worse
/// p99 (longer stalls).
pub(crate) const SQLITE_FILE_PRAGMAS: &[&str] = &[
    "PRAGMA busy_timeout = 5000",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA wal_autocheckpoint = 4000",
];

/// SQLite lets one connection write at a time, and a connection that finds the write lock taken
/// sleeps in SQLite's busy handler (1, 2, 5, 10 ms and longer) before it looks again: a stall per
/// collision, with a pooled connection held all along. So this process's SQLite writers (the
/// pool's and the point writer's thread) queue here first, without sleeping, and find the lock
/// free. (A writer in another process still meets the busy handler.) PostgreSQL locks rows, not
/// the database: no gate there.
pub(crate) type WriteGate = Arc<tokio::sync::Mutex<()>>;

/// A turn from the [`WriteGate`] (`None` on PostgreSQL); the next writer goes when it is dropped.
pub(crate) type WriteTurn<'a> = Option<tokio::sync::MutexGuard<'a, ()>>;

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

/// The database engine behind a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// `select` with the row-lock `clause` (such as `" FOR UPDATE"`) appended on PostgreSQL, for
    /// the read of a read-modify-write inside `Store::begin_write`. SQLite has no row locks and
    /// needs none: its write transaction already holds the database's single write lock.
    pub fn locking(self, select: &'static str, clause: &'static str) -> AssertSqlSafe<Cow<'static, str>> {
        AssertSqlSafe(match self {
            Backend::Sqlite => Cow::Borrowed(select),
            Backend::Postgres => Cow::Owned(format!("{select}{clause}")),
        })
    }
}

/// Handle to the database; cheap to clone (a connection pool inside).
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool<Any>,
    backend: Backend,
    /// On SQLite, where every writer of this process takes its turn ([`WriteGate`]).
    write_gate: Option<WriteGate>,
    /// On an SQLite file, the thread that inserts time series points ([`epts`]).
    points: Option<Arc<epts::SqliteWriter>>,
}

impl Store {
    /// Opens what `kaa run --database` names: a `postgres://` or `postgresql://` URL, or else the
    /// path of an SQLite file (see [`Store::open`]). Migrates the database.
    pub async fn connect(database: &str) -> Result<Store, OpenError> {
        if is_postgres_url(database) {
            Self::open_postgres(database).await
        } else {
            Self::open(database).await
        }
    }

    /// Opens (creating if missing) the SQLite database file at `path` in WAL mode and migrates it.
    pub async fn open(path: impl AsRef<Path>) -> Result<Store, OpenError> {
        // An absolute path, so that the URL cannot read a relative file name as a host name.
        let path = std::path::absolute(path.as_ref()).map_err(|e| OpenError::Connect(e.into()))?;
        let url = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .to_url_lossy();
        let pool = sqlite_pool_options()
            .max_connections(MAX_CONNECTIONS)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    for pragma in SQLITE_FILE_PRAGMAS {
                        sqlx::query(*pragma).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(AnyConnectOptions::from_url(&url).map_err(OpenError::Connect)?)
            .await
            .map_err(OpenError::Connect)?;
        let mut store = Self::migrated(pool, Backend::Sqlite).await?;
        let gate = store.write_gate.clone().unwrap_or_default();
        store.points = Some(Arc::new(epts::SqliteWriter::new(&path, gate)));
        Ok(store)
    }

    /// A private in-memory SQLite database (for tests and throw-away runs).
    pub async fn open_in_memory() -> Result<Store, OpenError> {
        // Every SQLite connection to ":memory:" is a separate database, so the pool holds exactly
        // one connection and never retires it (that would drop the data). sqlx turns foreign keys
        // on by default.
        let pool = sqlite_pool_options()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect("sqlite::memory:")
            .await
            .map_err(OpenError::Connect)?;
        Self::migrated(pool, Backend::Sqlite).await
    }

    async fn open_postgres(url: &str) -> Result<Store, OpenError> {
        let pool = pool_options()
            .max_connections(MAX_CONNECTIONS)
            .connect(url)
            .await
            .map_err(OpenError::Connect)?;
        Self::migrated(pool, Backend::Postgres).await
    }

    async fn migrated(pool: Pool<Any>, backend: Backend) -> Result<Store, OpenError> {
        // On PostgreSQL, sqlx serialises migrators with an advisory lock, so services sharing one
        // database may start together.
        migrator().run(&pool).await?;
        Ok(Store {
            pool,
            backend,
            write_gate: (backend == Backend::Sqlite).then(WriteGate::default),
            points: None,
        })
    }

    /// The engine this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Waits for this process's turn to write (SQLite; at once on PostgreSQL). Every write takes
    /// one, held until its statement or transaction is done.
    pub(crate) async fn write_turn(&self) -> WriteTurn<'_> {
        match &self.write_gate {
            Some(gate) => Some(gate.lock().await),
            None => None,
        }
    }

    /// Starts a transaction that reads before it writes, in its write turn (keep the turn until
    /// the transaction ends: `let (_turn, mut tx) = ...`). On SQLite, `BEGIN IMMEDIATE` takes the
    /// write lock before the first read, so a writer in another process cannot change what this
    /// one read (and a deferred transaction whose snapshot went stale fails its first write with
    /// SQLITE_BUSY, without waiting). On PostgreSQL the reads that decide the write lock their
    /// rows instead ([`Backend::locking`]).
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<(WriteTurn<'_>, Transaction<'static, Any>), sqlx::Error> {
        let turn = self.write_turn().await;
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }?;
        Ok((turn, tx))
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

    /// Closes the pool, waiting for checked-out connections to return, and the point writer,
    /// letting it finish the inserts it was given.
    pub async fn close(&self) {
        if let Some(points) = &self.points {
            points.close().await;
        }
        self.pool.close().await;
    }
}

/// Whether `database` (a `--database` argument) names a PostgreSQL server rather than a file.
pub fn is_postgres_url(database: &str) -> bool {
    ["postgres://", "postgresql://"].iter().any(|scheme| {
        database
            .get(..scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
    })
}

/// `database` (a `--database` argument) fit for a log or an error message: a URL's password
/// replaced by `***`.
pub fn redacted(database: &str) -> Cow<'_, str> {
    let Some((scheme, rest)) = database.split_once("://") else {
        return Cow::Borrowed(database);
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    // The last '@' ends the user info (a password may contain '@' unescaped).
    let Some(at) = rest[..authority_end].rfind('@') else {
        return Cow::Borrowed(database);
    };
    match rest[..at].split_once(':') {
        Some((user, _password)) => Cow::Owned(format!("{scheme}://{user}:***{}", &rest[at..])),
        None => Cow::Borrowed(database),
    }
}

/// Pool options for either engine, with the drivers of sqlx's `Any` registered first (without
/// them, connecting panics; registering is idempotent).
fn pool_options() -> AnyPoolOptions {
    sqlx::any::install_default_drivers();
    AnyPoolOptions::new()
}

/// Pool options for SQLite: no ping before a connection is handed out. An SQLite connection is
/// in-process, so a ping checks nothing, yet costs a round trip to the connection's worker thread
/// on every acquire, as many as the statements themselves (each query on the pool acquires).
fn sqlite_pool_options() -> AnyPoolOptions {
    pool_options().test_before_acquire(false)
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

/// Whether a statement failed on a UNIQUE constraint (a duplicate the caller reports as a
/// conflict), on either engine: sqlx maps SQLite's and PostgreSQL's (23505) codes alike.
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
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

    async fn register_one(store: &Store) -> Endpoint {
        store
            .register(NewEndpoint {
                app_version: "app-v1".into(),
                ..Default::default()
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn open_creates_a_wal_file_database_and_reopens_it() {
        let dir = tempfile::tempdir().unwrap();
        // Characters that the SQLite URL behind the `Any` driver must escape.
        let path = dir.path().join("data #1").join("kaa.db");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let store = Store::open(&path).await.unwrap();
        assert_eq!(store.backend(), Backend::Sqlite);
        let ep = register_one(&store).await;
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        for (pragma, expected) in [("synchronous", 1), ("foreign_keys", 1), ("busy_timeout", 5000)] {
            let value: i64 = sqlx::query_scalar(AssertSqlSafe(format!("PRAGMA {pragma}")))
                .fetch_one(&store.pool)
                .await
                .unwrap();
            assert_eq!(value, expected, "PRAGMA {pragma}");
        }
        store.close().await;
        assert!(path.is_file(), "the file is where the path says");

        // Migrations are idempotent and the data survives a reopen, also through `connect`.
        let store = Store::connect(path.to_str().unwrap()).await.unwrap();
        assert_eq!(store.backend(), Backend::Sqlite);
        assert_eq!(store.endpoint(&ep.id).await.unwrap().app_version, "app-v1");
        store.close().await;
    }

    #[tokio::test]
    async fn in_memory_stores_are_private() {
        let a = Store::open_in_memory().await.unwrap();
        let b = Store::open_in_memory().await.unwrap();
        let ep = register_one(&a).await;
        assert_eq!(a.endpoint(&ep.id).await.unwrap(), ep);
        assert!(matches!(
            b.endpoint(&ep.id).await,
            Err(EprError::EndpointNotFound(_))
        ));
    }

    #[tokio::test]
    async fn postgres_migrations_are_idempotent_and_data_survives_a_reconnect() {
        let server = kaa_testkit::Postgres::start().await;
        let store = Store::connect(server.url()).await.unwrap();
        assert_eq!(store.backend(), Backend::Postgres);
        let ep = register_one(&store).await;
        store.ping(Duration::from_secs(5)).await.unwrap();
        store.close().await;

        // Two processes (EPR and CM) may share one database and start together: both migrate.
        let (a, b) = tokio::join!(Store::connect(server.url()), Store::connect(server.url()));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(b.endpoint(&ep.id).await.unwrap(), ep);
        let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(&a.pool)
            .await
            .unwrap();
        assert_eq!(applied, i64::try_from(MIGRATIONS.len()).unwrap());
        a.close().await;
        b.close().await;

        let missing = server.url().replace("/kaa", "/no_such_database");
        let res = Store::connect(&missing).await;
        assert!(matches!(res, Err(OpenError::Connect(_))), "{res:?}");
    }

    #[tokio::test]
    async fn bad_database_arguments_are_errors_not_panics() {
        for bad in ["postgres://[::1", "postgres://127.0.0.1:99999/kaa"] {
            let res = Store::connect(bad).await;
            assert!(matches!(res, Err(OpenError::Connect(_))), "{bad}: {res:?}");
        }
        let res = Store::connect("/nonexistent-dir/kaa.db").await;
        assert!(matches!(res, Err(OpenError::Connect(_))), "{res:?}");
    }

    #[test]
    fn postgres_urls_are_told_from_paths() {
        for url in [
            "postgres://db/kaa",
            "postgresql://u:p@db:5432/kaa",
            "POSTGRES://db",
        ] {
            assert!(is_postgres_url(url), "{url}");
        }
        for path in [
            "kaa.db",
            "/var/lib/kaa/kaa.db",
            "postgres",
            "./postgres://x",
            "",
            "é",
        ] {
            assert!(!is_postgres_url(path), "{path}");
        }
    }

    #[test]
    fn redacted_hides_only_the_password() {
        for (given, shown) in [
            (
                "postgres://kaa:s3cr@t@db:5432/kaa?sslmode=disable",
                "postgres://kaa:***@db:5432/kaa?sslmode=disable",
            ),
            ("postgresql://kaa:pw@db", "postgresql://kaa:***@db"),
            ("postgres://kaa@db/kaa", "postgres://kaa@db/kaa"),
            ("postgres://db/kaa?user=a@b", "postgres://db/kaa?user=a@b"),
            ("/var/lib/kaa/kaa.db", "/var/lib/kaa/kaa.db"),
            ("", ""),
        ] {
            assert_eq!(redacted(given), shown);
        }
    }
}
