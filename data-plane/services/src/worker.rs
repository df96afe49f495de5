//! The message loop shared by all bus handlers.
//!
//! One subscription, one handler future per message, at most `max_in_flight` running at once.
//! When the limit is reached the loop stops reading, so the bus's bounded subscription buffer
//! pushes back instead of this process queueing without bound. On shutdown the loop stops
//! reading, drops the subscription (unsubscribing, so queue-group peers get the traffic) and
//! waits for the handlers already running: each of them is bounded by its own timeouts.

use std::{future::Future, sync::Arc};

use bytes::Bytes;
use kaa_bus::{Bus, Message, Subscription};
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;

/// Runs `handle` for every message of `sub` until `shutdown` is cancelled or the subscription ends.
pub(crate) async fn run<H, Fut>(
    name: &str,
    mut sub: Subscription,
    max_in_flight: usize,
    shutdown: &CancellationToken,
    handle: H,
) where
    H: Fn(Message) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let mut tasks = JoinSet::new();
    loop {
        while let Some(done) = tasks.try_join_next() {
            log_panic(name, done);
        }
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&limit).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // the semaphore is never closed; treat it as shutdown
            },
        };
        let msg = tokio::select! {
            () = shutdown.cancelled() => break,
            msg = sub.next() => match msg {
                Some(msg) => msg,
                None => {
                    tracing::warn!(handler = name, "subscription closed by the bus");
                    break;
                }
            },
        };
        let work = handle(msg);
        tasks.spawn(async move {
            work.await;
            drop(permit);
        });
    }
    drop(sub);
    while let Some(done) = tasks.join_next().await {
        log_panic(name, done);
    }
}

fn log_panic(name: &str, done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!(handler = name, error = %e, "message handler task failed");
    }
}

/// Publishes a response on the request's `reply_to`; a request without one cannot be answered.
pub(crate) async fn reply(bus: &Bus, request: &Message, payload: Vec<u8>) {
    let Some(reply_to) = &request.reply_to else {
        tracing::warn!(subject = %request.subject, "request without replyTo; response dropped");
        return;
    };
    if let Err(e) = bus.publish(reply_to, Bytes::from(payload)).await {
        tracing::warn!(subject = %reply_to, error = %e, "cannot publish response");
    }
}
