//! Receivers' `DataSamplesProcessed` answers, routed to the batch that waits for them.
//!
//! One subscription per DCX replica on its replica subject (the `replyTo` of every batch it
//! sends); answers are matched to batches by correlation id. A batch registers before it
//! publishes (so no answer can arrive unseen) and unregisters when its [`Waiter`] is dropped.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use kaa_bus::Subscription;
use kaa_protocol::{avro::AvroRecord, collection::DataSamplesProcessed};
use tokio_util::sync::CancellationToken;

/// Answers a batch buffers before further ones wait (one per receiver is the usual count).
const PER_BATCH: usize = 16;

/// flume, not tokio's mpsc: a channel per batch, and flume's allocates as it fills where tokio's
/// reserves a block of 32 answers up front (~3 KiB, zeroed, per request).
type Routes = Arc<Mutex<HashMap<String, flume::Sender<DataSamplesProcessed>>>>;

/// The batches waiting for answers.
#[derive(Debug, Clone, Default)]
pub struct Acks {
    routes: Routes,
}

impl Acks {
    /// Waits for the answers to the batch `correlation_id`.
    pub fn register(&self, correlation_id: &str) -> Waiter {
        let (tx, rx) = flume::bounded(PER_BATCH);
        self.lock().insert(correlation_id.to_owned(), tx);
        Waiter {
            routes: Arc::clone(&self.routes),
            correlation_id: correlation_id.to_owned(),
            rx,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, flume::Sender<DataSamplesProcessed>>> {
        // The map holds no invariant a panicking holder could break.
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands every answer on `sub` to its batch until `shutdown`; answers for no waiting batch
    /// (late, or for another replica's batch) are dropped.
    pub async fn route(&self, mut sub: Subscription, shutdown: CancellationToken) {
        loop {
            let msg = tokio::select! {
                () = shutdown.cancelled() => return,
                msg = sub.next() => match msg {
                    Some(msg) => msg,
                    None => return,
                },
            };
            let answer = match DataSamplesProcessed::from_avro(&msg.payload) {
                Ok(answer) => answer,
                Err(e) => {
                    tracing::warn!(error = %e, "undecodable DataSamplesProcessed dropped");
                    continue;
                }
            };
            let route = self.lock().get(&answer.correlation_id).cloned();
            match route {
                Some(tx) => {
                    if tx.try_send(answer).is_err() {
                        tracing::warn!("a batch got more answers than it waits for; one dropped");
                    }
                }
                None => tracing::debug!(
                    correlation_id = %answer.correlation_id,
                    receiver = %answer.receiver_service_instance_name,
                    "answer for no waiting batch"
                ),
            }
        }
    }
}

/// One batch's answers; unregisters on drop.
#[derive(Debug)]
pub struct Waiter {
    routes: Routes,
    correlation_id: String,
    rx: flume::Receiver<DataSamplesProcessed>,
}

impl Waiter {
    /// Collects answers from every receiver in `expected` until all answered or `timeout`;
    /// returns the answers (by receiver) and those still missing.
    pub async fn collect(
        self,
        expected: &[String],
        timeout: Duration,
    ) -> (Vec<DataSamplesProcessed>, Vec<String>) {
        let mut missing: Vec<String> = expected.to_vec();
        let mut answers = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while !missing.is_empty() {
            let answer = match tokio::time::timeout_at(deadline, self.rx.recv_async()).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(flume::RecvError::Disconnected)) | Err(_) => break,
            };
            // Answers from receivers nobody waits for (unreliable ones) do not count.
            if let Some(i) = missing
                .iter()
                .position(|r| *r == answer.receiver_service_instance_name)
            {
                missing.swap_remove(i);
                answers.push(answer);
            }
        }
        (answers, missing)
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.correlation_id);
    }
}
