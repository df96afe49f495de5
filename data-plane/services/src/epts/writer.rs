//! Group commit: the points of events that arrive while a transaction is being written go into
//! the next transaction together, one commit for all of them instead of one each (a commit is
//! most of an event's cost on SQLite). Each event still gets its own outcome: when a shared
//! transaction fails, its events are written again one by one, so one bad event fails alone.
//! The queue is bounded; the bus handlers wait for room (backpressure, never unbounded memory).

use kaa_store::{EptsError, NewPoint, Store};
use tokio::sync::{mpsc, oneshot};

/// Events waiting for the writer at most; a handler beyond it waits.
const QUEUE: usize = 1024;
/// Points written in one transaction at most.
const MAX_POINTS: usize = 5_000;

struct Job {
    rows: Vec<NewPoint>,
    done: oneshot::Sender<Result<(), String>>,
}

/// The handle of the writer task (cheap to clone; the task ends when every handle is gone).
#[derive(Debug, Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer task on the current runtime.
    pub fn spawn(store: Store) -> Writer {
        let (jobs, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, rx));
        Writer { jobs }
    }

    /// Stores `rows` (all or none), committed with whatever else is waiting.
    pub async fn insert(&self, rows: Vec<NewPoint>) -> Result<(), String> {
        let (done, outcome) = oneshot::channel();
        if self.jobs.send(Job { rows, done }).await.is_err() {
            return Err("the point writer stopped".to_owned());
        }
        outcome
            .await
            .unwrap_or_else(|_| Err("the point writer stopped".to_owned()))
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut points = first.rows.len();
        let mut jobs = vec![first];
        while points < MAX_POINTS {
            let Ok(job) = rx.try_recv() else { break };
            points += job.rows.len();
            jobs.push(job);
        }
        write(&store, jobs).await;
    }
}

/// Writes the jobs in one transaction; if that fails and there were several, each on its own.
async fn write(store: &Store, mut jobs: Vec<Job>) {
    if jobs.len() > 1 {
        let mut all = Vec::with_capacity(jobs.iter().map(|j| j.rows.len()).sum());
        let mut sizes = Vec::with_capacity(jobs.len());
        for job in &mut jobs {
            sizes.push(job.rows.len());
            all.append(&mut job.rows);
        }
        let shared = store.insert_points(&all).await;
        if shared.is_ok() {
            for job in jobs {
                let _ = job.done.send(Ok(()));
            }
            return;
        }
        // Give each job its rows back and try it alone.
        let mut rest = all.into_iter();
        for (job, size) in jobs.iter_mut().zip(sizes) {
            job.rows = rest.by_ref().take(size).collect();
        }
    }
    for job in jobs {
        let outcome = store
            .insert_points(&job.rows)
            .await
            .map_err(|e: EptsError| e.to_string());
        let _ = job.done.send(outcome);
    }
}
