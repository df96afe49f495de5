//! The SQLite file's point writer: one thread with its own connection that inserts the points
//! of [`Store::insert_points`](crate::Store::insert_points), a transaction per call.
//!
//! Why not sqlx: its SQLite driver runs each statement on a worker thread of the connection
//! (a hand-off there and back per statement), copies every argument, binds by name, and hands
//! out whichever pooled connection is idle, so the page cache that SQLite keeps per connection
//! is reset whenever another connection wrote last. Here one connection does every insert with
//! one statement prepared once (positional parameters), so the hot index pages stay cached.
//!
//! Both drivers link the same SQLite (one `libsqlite3-sys`), and the file is the one sqlx's
//! pool uses: the store's write gate orders this thread's transactions with the other services'
//! writes (and SQLite's write lock with another process's).

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use rusqlite::{Connection, Statement, params};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{EptsError, NewPoint};
use crate::WriteGate;

/// Calls waiting for the thread at most; one beyond it waits for room.
const QUEUE: usize = 16;

const INSERT: &str = "INSERT INTO epts_points (app_name, series, endpoint_id, ts, seq, ingested_at, point_values) \
                      VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// A point as the thread writes it: its values already JSON (serialized by the caller's task,
/// not on the single writer thread).
struct Row {
    app_name: String,
    series: String,
    endpoint_id: String,
    ts: i64,
    seq: i64,
    ingested_at: i64,
    values: String,
}

struct Job {
    rows: Vec<Row>,
    done: oneshot::Sender<rusqlite::Result<()>>,
}

/// The point writer of one database file. Its thread starts with the first insert (most stores
/// never write points) and ends, closing its connection, on [`Self::close`] or when the last
/// handle is dropped.
#[derive(Debug)]
pub(crate) struct SqliteWriter {
    path: PathBuf,
    gate: WriteGate,
    /// One lock for starting and closing, so that no insert can start the thread after a close.
    state: Mutex<State>,
}

#[derive(Debug)]
enum State {
    NotStarted,
    Running(Thread),
    Closed,
}

/// The running thread: where inserts are sent, and its handle to wait for.
#[derive(Debug)]
struct Thread {
    jobs: mpsc::Sender<Job>,
    handle: JoinHandle<()>,
}

impl SqliteWriter {
    /// The writer of the (migrated) database file at `path`; nothing starts yet.
    pub(crate) fn new(path: &Path, gate: WriteGate) -> SqliteWriter {
        SqliteWriter {
            path: path.to_owned(),
            gate,
            state: Mutex::new(State::NotStarted),
        }
    }

    /// Inserts `points` in one transaction: all or none.
    pub(crate) async fn insert(&self, points: &[NewPoint]) -> Result<(), EptsError> {
        let rows = points
            .iter()
            .map(|p| Row {
                app_name: p.app_name.clone(),
                series: p.series.clone(),
                endpoint_id: p.endpoint_id.clone(),
                ts: p.ts,
                seq: p.seq,
                ingested_at: p.ingested_at,
                // A map of JSON values always serializes.
                values: serde_json::to_string(&p.values).unwrap_or_default(),
            })
            .collect();
        let jobs = {
            let mut state = self.state.lock().await;
            match &*state {
                State::Closed => return Err(EptsError::WriterStopped),
                State::Running(thread) => thread.jobs.clone(),
                State::NotStarted => {
                    let thread = Thread::start(&self.path, self.gate.clone())
                        .await
                        .map_err(EptsError::WriterStart)?;
                    let jobs = thread.jobs.clone();
                    *state = State::Running(thread);
                    jobs
                }
            }
        };
        let (done, outcome) = oneshot::channel();
        jobs.send(Job { rows, done })
            .await
            .map_err(|_| EptsError::WriterStopped)?;
        outcome.await.map_err(|_| EptsError::WriterStopped)??;
        Ok(())
    }

    /// Stops taking points, lets the thread finish what it was given and waits for it.
    pub(crate) async fn close(&self) {
        let previous = std::mem::replace(&mut *self.state.lock().await, State::Closed);
        if let State::Running(Thread { jobs, handle }) = previous {
            // The thread ends once the senders of inserts already under way are gone too.
            drop(jobs);
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

impl Thread {
    /// Opens a connection to the database file at `path` and starts the thread.
    async fn start(path: &Path, gate: WriteGate) -> Result<Thread, String> {
        let path = path.to_owned();
        let (ready, started) = oneshot::channel();
        let (jobs, rx) = mpsc::channel(QUEUE);
        let handle = std::thread::Builder::new()
            .name("epts-writer".into())
            .spawn(move || {
                let conn = match open(&path) {
                    Ok(conn) => conn,
                    Err(e) => return drop(ready.send(Err(e.to_string()))),
                };
                // The statement borrows the connection, so both live in this frame.
                match conn.prepare(INSERT) {
                    Ok(mut insert) => {
                        let _ = ready.send(Ok(()));
                        run(&conn, &mut insert, &gate, rx);
                    }
                    Err(e) => drop(ready.send(Err(e.to_string()))),
                }
            })
            .map_err(|e| e.to_string())?;
        started
            .await
            .unwrap_or_else(|_| Err("the thread ended while starting".to_owned()))?;
        Ok(Thread { jobs, handle })
    }
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    // The pool's settings, so that this connection waits for the write lock like the others do
    // and checkpoints at the same WAL size.
    for pragma in crate::SQLITE_FILE_PRAGMAS {
        conn.execute_batch(pragma)?;
    }
    Ok(conn)
}

fn run(conn: &Connection, insert: &mut Statement<'_>, gate: &WriteGate, mut rx: mpsc::Receiver<Job>) {
    while let Some(job) = rx.blocking_recv() {
        let outcome = {
            let _turn = gate.blocking_lock();
            write(conn, insert, &job.rows)
        };
        let _ = job.done.send(outcome);
    }
}

/// One transaction for `rows`; rolled back if any of them fails.
fn write(conn: &Connection, insert: &mut Statement<'_>, rows: &[Row]) -> rusqlite::Result<()> {
    // IMMEDIATE: take the write lock (waiting for it up to busy_timeout) before the first insert.
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let written = rows.iter().try_for_each(|r| {
        insert
            .execute(params![
                r.app_name,
                r.series,
                r.endpoint_id,
                r.ts,
                r.seq,
                r.ingested_at,
                r.values
            ])
            .map(drop)
    });
    let outcome = written.and_then(|()| conn.execute_batch("COMMIT"));
    if outcome.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    outcome
}
