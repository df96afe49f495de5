//! Test support: every repository test runs once per backend, on a fresh database.

use std::future::Future;

use kaa_testkit::Postgres;
use tempfile::TempDir;

use crate::{Backend, Store};

/// A fresh store and what keeps its database alive (a temporary directory, or a server).
pub(crate) struct TestStore {
    pub store: Store,
    _sqlite_dir: Option<TempDir>,
    _postgres: Option<Postgres>,
}

impl TestStore {
    /// A new SQLite file (not `:memory:`, which is limited to one connection: the concurrency
    /// tests need a real pool, and the file is what `kaa up` uses).
    pub async fn sqlite() -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("kaa.db")).await.unwrap();
        TestStore {
            store,
            _sqlite_dir: Some(dir),
            _postgres: None,
        }
    }

    /// A new PostgreSQL server with an empty database.
    pub async fn postgres() -> TestStore {
        let server = Postgres::start().await;
        let store = Store::connect(server.url()).await.unwrap();
        TestStore {
            store,
            _sqlite_dir: None,
            _postgres: Some(server),
        }
    }
}

/// Runs `test` on a fresh SQLite store, then on a fresh PostgreSQL store: the same assertions
/// must hold on both.
pub(crate) async fn on_both<F, Fut>(test: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    for backend in [Backend::Sqlite, Backend::Postgres] {
        // Shown with the output of a failing test: which backend failed.
        eprintln!("--- on {backend:?}");
        let db = match backend {
            Backend::Sqlite => TestStore::sqlite().await,
            Backend::Postgres => TestStore::postgres().await,
        };
        assert_eq!(db.store.backend(), backend);
        test(db.store.clone()).await;
        db.store.close().await;
    }
}
