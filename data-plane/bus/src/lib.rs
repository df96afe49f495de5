//! The message bus every kaa-rs service talks over: publish, subscribe (with queue groups) and
//! request/reply on NATS subjects.
//!
//! # Layout
//! - [`Bus`]: the handle services hold. Cheap to clone; one of two implementations inside:
//!   - `in_process`: the subscription table and router for `kaa up` (all services in one process);
//!   - `nats`: an adapter over `async_nats::Client` for cluster mode.
//! - [`Subscription`]: a stream of [`Message`]s; dropping it unsubscribes.
//! - `subject`: NATS subject rules (validation, wildcard matching), applied identically by both.
//! - [`metrics`]: the process's Prometheus registry, and the request round-trip histogram a bus
//!   records into once [`Bus::with_metrics`] attached it.
//!
//! Both implementations give the same observable behaviour, checked by one contract test suite
//! (`tests/contract.rs`): tokens split by `.`, `*` matches one token, `>` one or more trailing
//! tokens; plain subscribers each get a copy; a queue group gets one copy for one of its members;
//! per-publisher order is kept per subscription; a subscription is active when `subscribe` returns;
//! a request nobody listens to fails at once with [`BusError::NoResponders`]; invalid subjects are
//! [`BusError::InvalidSubject`] errors, never panics.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), kaa_bus::BusError> {
//! use std::time::Duration;
//! use bytes::Bytes;
//! use kaa_bus::Bus;
//!
//! let bus = Bus::in_process();
//! let mut echo = bus.subscribe("svc.echo", Some("echo")).await?;
//! let responder = bus.clone();
//! tokio::spawn(async move {
//!     while let Some(msg) = echo.next().await {
//!         if let Some(reply_to) = msg.reply_to {
//!             let _ = responder.publish(&reply_to, msg.payload).await;
//!         }
//!     }
//! });
//! let reply = bus.request("svc.echo", Bytes::from_static(b"hi"), Duration::from_secs(1)).await?;
//! assert_eq!(reply.payload, "hi");
//! # Ok(())
//! # }
//! ```

mod in_process;
pub mod metrics;
mod nats;
mod subject;

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::Stream;

pub use in_process::DEFAULT_SUBSCRIPTION_CAPACITY;
pub use subject::SubjectError;

/// One message as delivered to a subscriber or returned by [`Bus::request`].
#[derive(Debug, Clone)]
pub struct Message {
    pub subject: String,
    /// Where the publisher wants an answer (set by [`Bus::publish_with_reply`] and [`Bus::request`]).
    pub reply_to: Option<String>,
    pub payload: Bytes,
}

/// Errors of bus operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    #[error("invalid subject {subject:?}: {reason}")]
    InvalidSubject {
        subject: String,
        #[source]
        reason: SubjectError,
    },
    #[error("invalid queue group {queue_group:?}: {reason}")]
    InvalidQueueGroup {
        queue_group: String,
        #[source]
        reason: SubjectError,
    },
    /// A request got no reply within its timeout.
    #[error("request timed out")]
    Timeout,
    /// A request reached no subscriber at all (NATS "no responders").
    #[error("no responders on subject {0:?}")]
    NoResponders(String),
    /// The bus went away while an operation was waiting on it.
    #[error("the bus is closed")]
    Closed,
    /// Any other failure reported by the NATS client (connection, protocol, payload size, ...).
    #[error("nats: {0}")]
    Nats(String),
}

/// A handle on the message bus; clones share one connection (NATS) or one routing table (in-process).
#[derive(Clone, Debug)]
pub struct Bus {
    inner: Inner,
    /// Where request round trips are recorded, if anywhere.
    metrics: Option<Arc<metrics::BusMetrics>>,
}

#[derive(Clone, Debug)]
enum Inner {
    InProcess(Arc<in_process::InProcess>),
    Nats(async_nats::Client),
}

impl Bus {
    /// A bus living in this process, with [`DEFAULT_SUBSCRIPTION_CAPACITY`] messages of buffer per
    /// subscription.
    pub fn in_process() -> Bus {
        Self::in_process_with_capacity(DEFAULT_SUBSCRIPTION_CAPACITY)
    }

    /// An in-process bus whose subscriptions buffer `capacity` messages (at least 1) before publishers
    /// wait.
    pub fn in_process_with_capacity(capacity: usize) -> Bus {
        Bus {
            inner: Inner::InProcess(in_process::InProcess::new(capacity)),
            metrics: None,
        }
    }

    /// Connects to a NATS server (`nats://host:port`, or several separated by commas).
    pub async fn connect_nats(url: &str) -> Result<Bus, BusError> {
        Ok(Bus {
            inner: Inner::Nats(nats::connect(url).await?),
            metrics: None,
        })
    }

    /// This bus, recording the round trip of every [`request`](Bus::request) (this handle's and its
    /// clones') in `metrics` as `kaa_bus_request_duration_seconds` (answered) and
    /// `kaa_bus_request_failures_total` (not). Call once per process and registry.
    pub fn with_metrics(mut self, metrics: &metrics::Metrics) -> Bus {
        self.metrics = Some(Arc::new(metrics::BusMetrics::register(metrics)));
        self
    }

    pub async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        check_publish(subject)?;
        match &self.inner {
            Inner::InProcess(bus) => {
                bus.publish(subject, None, payload).await;
                Ok(())
            }
            Inner::Nats(client) => nats::publish(client, subject, None, payload).await,
        }
    }

    pub async fn publish_with_reply(
        &self,
        subject: &str,
        reply_to: &str,
        payload: Bytes,
    ) -> Result<(), BusError> {
        check_publish(subject)?;
        check_publish(reply_to)?;
        match &self.inner {
            Inner::InProcess(bus) => {
                bus.publish(subject, Some(reply_to), payload).await;
                Ok(())
            }
            Inner::Nats(client) => nats::publish(client, subject, Some(reply_to), payload).await,
        }
    }

    /// Subscribes to `subject` (wildcards allowed). `queue_group: Some(name)`: each message goes to
    /// one member of the group. The subscription is active when this returns.
    pub async fn subscribe(
        &self,
        subject: &str,
        queue_group: Option<&str>,
    ) -> Result<Subscription, BusError> {
        subject::validate_subscribe(subject).map_err(|reason| BusError::InvalidSubject {
            subject: subject.to_owned(),
            reason,
        })?;
        if let Some(queue_group) = queue_group {
            subject::validate_queue_group(queue_group).map_err(|reason| BusError::InvalidQueueGroup {
                queue_group: queue_group.to_owned(),
                reason,
            })?;
        }
        let inner = match &self.inner {
            Inner::InProcess(bus) => SubscriptionInner::InProcess(bus.subscribe(subject, queue_group)),
            Inner::Nats(client) => {
                SubscriptionInner::Nats(nats::subscribe(client, subject, queue_group).await?)
            }
        };
        Ok(Subscription { inner })
    }

    /// Request/reply with a deadline; the responder answers on the request's `reply_to`.
    ///
    /// Errors: [`BusError::NoResponders`] at once when nobody subscribes to `subject`,
    /// [`BusError::Timeout`] when nobody answered in time.
    pub async fn request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, BusError> {
        check_publish(subject)?;
        let started = Instant::now();
        let reply = match &self.inner {
            Inner::InProcess(bus) => bus.request(subject, payload, timeout).await,
            Inner::Nats(client) => nats::request(client, subject, payload, timeout).await,
        };
        if let Some(metrics) = &self.metrics {
            metrics.observe(subject, started.elapsed(), reply.as_ref().map(|_| ()));
        }
        reply
    }

    /// Waits until everything published so far has been handed on: written to the NATS socket, or
    /// (in-process, where `publish` delivers before returning) at once.
    pub async fn flush(&self) -> Result<(), BusError> {
        match &self.inner {
            Inner::InProcess(_) => Ok(()),
            Inner::Nats(client) => nats::flush(client).await,
        }
    }

    /// Whether the bus can deliver right now: always for in-process; for NATS, whether the client is
    /// connected (it reconnects by itself; meanwhile publishes are buffered).
    pub fn is_connected(&self) -> bool {
        match &self.inner {
            Inner::InProcess(_) => true,
            Inner::Nats(client) => nats::is_connected(client),
        }
    }
}

fn check_publish(subject: &str) -> Result<(), BusError> {
    subject::validate_publish(subject).map_err(|reason| BusError::InvalidSubject {
        subject: subject.to_owned(),
        reason,
    })
}

/// Messages for one subscription, in publish order per publisher. Dropping it unsubscribes.
///
/// Also a [`Stream`], for use with stream combinators.
#[derive(Debug)]
pub struct Subscription {
    inner: SubscriptionInner,
}

#[derive(Debug)]
enum SubscriptionInner {
    InProcess(in_process::Subscription),
    Nats(async_nats::Subscriber),
}

impl Subscription {
    /// The next message; `None` once the bus is gone (all handles dropped, or the NATS client closed).
    pub async fn next(&mut self) -> Option<Message> {
        std::future::poll_fn(|cx| self.poll_message(cx)).await
    }

    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        match &mut self.inner {
            SubscriptionInner::InProcess(sub) => sub.poll_next(cx),
            SubscriptionInner::Nats(sub) => Pin::new(sub).poll_next(cx).map(|m| m.map(nats::message)),
        }
    }
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.get_mut().poll_message(cx)
    }
}
