//! The message loop shared by all bus handlers.
//!
//! One subscription, one handler future per message, at most `max_in_flight` running at once.
//! When the limit is reached the loop stops reading, so the bus's bounded subscription buffer
//! pushes back instead of this process queueing without bound. On shutdown the loop stops
//! reading, drops the subscription (unsubscribing, so queue-group peers get the traffic) and
//! waits for the handlers already running: each of them is bounded by its own timeouts.
//!
//! [`responder`] turns an `answer(state, request) -> response` function over Avro records into
//! such a handler: decode, answer, reply on `replyTo` (undecodable input gets a 400 reply).

use std::{future::Future, pin::Pin, sync::Arc};

use bytes::Bytes;
use futures_util::{FutureExt, Stream, StreamExt};
use kaa_bus::{Bus, BusError, Message, Subscription};
use kaa_protocol::avro::AvroRecord;
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;

/// Subscribes to `subject` in the queue group `group` (the service's instance name, so that its
/// replicas share the load); `error` turns a failure into the caller's error, naming the subject.
pub(crate) async fn subscribe<E>(
    bus: &Bus,
    subject: String,
    group: &str,
    error: impl FnOnce(String, BusError) -> E,
) -> Result<Subscription, E> {
    bus.subscribe(&subject, Some(group))
        .await
        .map_err(|source| error(subject, source))
}

/// Runs `handle` for every message of `sub` (a subscription, or several merged) until `shutdown`
/// is cancelled or the subscription ends. `handle` itself runs in this loop, in message order;
/// only the future it returns runs concurrently with others.
pub(crate) async fn run<S, H, Fut>(
    name: &str,
    mut sub: S,
    max_in_flight: usize,
    shutdown: &CancellationToken,
    handle: H,
) where
    S: Stream<Item = Message> + Unpin,
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
        // Boxed: a task's future is moved into the task, and its slot is copied again when the
        // task ends; a handler's future can be kilobytes, a box is a pointer. `map`, not an async
        // block, which would hold the future twice.
        tasks.spawn(Box::pin(handle(msg)).map(move |()| drop(permit)));
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

/// A handler future, boxed so that different answer functions share one handler type.
pub(crate) type Handling = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A response record that can also say "your request could not be decoded" (status 400).
pub(crate) trait Undecodable: AvroRecord {
    fn undecodable(reason: String) -> Self;
}

/// Wraps an `answer` function into a per-message handler: decode, answer, reply.
pub(crate) fn responder<S, Req, Resp, F, Fut>(
    bus: &Bus,
    state: &S,
    answer: F,
) -> impl Fn(Message) -> Handling + Send + Sync + use<S, Req, Resp, F, Fut>
where
    S: Clone + Send + Sync + 'static,
    Req: AvroRecord + Send + 'static,
    Resp: Undecodable + Send + 'static,
    F: Fn(S, Req) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Resp> + Send + 'static,
{
    let bus = bus.clone();
    let state = state.clone();
    move |msg: Message| {
        let bus = bus.clone();
        let state = state.clone();
        Box::pin(async move {
            let response = match Req::from_avro(&msg.payload) {
                Ok(req) => answer(state, req).await,
                Err(e) => {
                    tracing::warn!(subject = %msg.subject, error = %e, "undecodable request");
                    Resp::undecodable(e.to_string())
                }
            };
            reply(&bus, &msg, response.to_avro()).await;
        })
    }
}

/// Implements [`Undecodable`] for response records with `timestamp`, `status_code` and
/// `reason_phrase` fields and a `Default`.
macro_rules! undecodable {
    ($($ty:ty),+ $(,)?) => {
        $(
            impl $crate::worker::Undecodable for $ty {
                fn undecodable(reason: String) -> Self {
                    Self {
                        timestamp: kaa_protocol::now_millis(),
                        status_code: 400,
                        reason_phrase: Some(reason),
                        ..Default::default()
                    }
                }
            }
        )+
    };
}
pub(crate) use undecodable;
