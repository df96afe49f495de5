//! The in-process bus: NATS subject semantics inside one process, for `kaa up`.
//!
//! It owns the subscription table. A publish takes the table's read lock just long enough to pick its
//! targets (cloning their channel senders), then delivers with the lock released, so a slow subscriber
//! never blocks subscribing, unsubscribing or publishers to other subjects on the lock.
//!
//! Delivery semantics:
//! - every matching plain subscription gets a copy;
//! - every matching queue group gets one copy, for one member chosen round robin (members of one group
//!   may use different subject patterns, as in NATS); a member with room in its channel is preferred
//!   over the round-robin pick when that one is full;
//! - each subscription has a bounded channel. When it is full the publisher waits (backpressure) rather
//!   than dropping, unlike a NATS server's slow-consumer handling. A handler that publishes into its own
//!   full subscription would therefore wait for itself: give such loops room or a separate task.
//! - a dropped [`Subscription`] removes itself from the table at once; dropping the last [`Bus`] clone
//!   ends every subscription (`next()` returns `None`).
//!
//! [`Bus`]: crate::Bus

use std::{
    collections::HashMap,
    sync::{
        Arc, PoisonError, RwLock, Weak,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use smallvec::{SmallVec, smallvec};
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::{
    BusError, Message,
    subject::{self, Shape},
};

/// Channel capacity of each subscription made through [`crate::Bus::in_process`].
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 1024;

/// Capacity of a request's reply inbox: one answer is taken, a few stray extra answers do not block.
const INBOX_CAPACITY: usize = 4;

#[derive(Debug)]
pub(crate) struct InProcess {
    table: RwLock<Table>,
    next_sid: AtomicU64,
    capacity: usize,
    /// Makes inbox subjects of different buses distinct, so they are never guessable constants.
    inbox_prefix: String,
}

#[derive(Debug, Default)]
struct Table {
    /// Subscriptions without wildcards, found by exact subject (the common case: services, inboxes).
    literal: HashMap<Box<str>, Vec<Route>, foldhash::fast::RandomState>,
    /// Subscriptions with `*` or `>`, matched one by one.
    wildcard: Vec<(Box<str>, Shape, Route)>,
    /// The queue groups by name, with how many subscriptions are members.
    queues: HashMap<Box<str>, (Arc<QueueGroup>, usize)>,
}

#[derive(Debug)]
struct Route {
    sid: u64,
    /// Shared by the group's members: a publish finds the group and its round-robin cursor through
    /// the route, without a lookup by name.
    queue: Option<Arc<QueueGroup>>,
    tx: mpsc::Sender<Message>,
}

/// A queue group's round-robin cursor.
#[derive(Debug, Default)]
struct QueueGroup {
    next: AtomicUsize,
}

/// Where one copy of a published message goes, picked under the read lock: the one subscription of a
/// plain subscriber, or the members of a queue group (one of which takes it).
struct Target {
    /// `None` for a plain subscription.
    group: Option<Arc<QueueGroup>>,
    members: SmallVec<[mpsc::Sender<Message>; 2]>,
    /// The member to try first: the group's round-robin pick.
    start: usize,
}

/// Most publishes have one target (a queue group or an inbox): no heap allocation for them.
type Targets = SmallVec<[Target; 2]>;

impl InProcess {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(InProcess {
            table: RwLock::default(),
            next_sid: AtomicU64::new(1),
            // tokio's bounded channel needs room for at least one message.
            capacity: capacity.max(1),
            inbox_prefix: format!("_INBOX.{}", uuid::Uuid::new_v4().simple()),
        })
    }

    /// Publishes a message whose subjects are already validated; returns how many subscriptions
    /// (plain ones plus one per queue group) accepted it.
    pub(crate) async fn publish(&self, subject: &str, reply_to: Option<&str>, payload: Bytes) -> usize {
        let mut targets = self.targets(subject).into_iter();
        let Some(last) = targets.next_back() else {
            return 0;
        };
        let message = Message {
            subject: subject.to_owned(),
            reply_to: reply_to.map(str::to_owned),
            payload,
        };
        let mut delivered = 0;
        for target in targets {
            delivered += usize::from(target.deliver(message.clone()).await);
        }
        // The last target takes the message itself: the usual single target costs no copy.
        delivered + usize::from(last.deliver(message).await)
    }

    pub(crate) fn subscribe(self: &Arc<Self>, subject: &str, queue: Option<&str>) -> Subscription {
        self.subscribe_with_capacity(subject, queue, self.capacity)
    }

    fn subscribe_with_capacity(
        self: &Arc<Self>,
        subject: &str,
        queue: Option<&str>,
        capacity: usize,
    ) -> Subscription {
        let (tx, rx) = mpsc::channel(capacity);
        let sid = self.next_sid.fetch_add(1, Ordering::Relaxed);
        let literal = subject::is_literal(subject);
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        let group = queue.map(|name| {
            let (group, members) = table.queues.entry(name.into()).or_default();
            *members += 1;
            group.clone()
        });
        let route = Route {
            sid,
            queue: group,
            tx,
        };
        if literal {
            table.literal.entry(subject.into()).or_default().push(route);
        } else {
            table.wildcard.push((subject.into(), Shape::of(subject), route));
        }
        drop(table);
        Subscription {
            rx,
            _registration: Registration {
                bus: Arc::downgrade(self),
                sid,
                subject: subject.into(),
                literal,
                queue: queue.map(Box::from),
            },
        }
    }

    /// Request/reply over a fresh inbox subscription. Fails at once with `NoResponders` when nobody
    /// took the request, like a NATS server's no-responders status.
    pub(crate) async fn request(
        self: &Arc<Self>,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, BusError> {
        let inbox = format!(
            "{}.{}",
            self.inbox_prefix,
            self.next_sid.fetch_add(1, Ordering::Relaxed)
        );
        let mut reply = self.subscribe_with_capacity(&inbox, None, INBOX_CAPACITY);
        let exchange = async {
            if self.publish(subject, Some(&inbox), payload).await == 0 {
                return Err(BusError::NoResponders(subject.to_owned()));
            }
            reply.next().await.ok_or(BusError::Closed)
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| BusError::Timeout)?
    }

    fn targets(&self, subject: &str) -> Targets {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let mut targets = Targets::new();
        let literal = table.literal.get(subject).into_iter().flatten();
        let tokens = subject::token_count(subject);
        let wildcard = table
            .wildcard
            .iter()
            .filter(|(pattern, shape, _)| shape.admits(tokens) && subject::matches(pattern, subject))
            .map(|(_, _, route)| route);
        for route in literal.chain(wildcard) {
            let group = route.queue.as_ref().and_then(|queue| {
                targets.iter_mut().find(|target| {
                    target
                        .group
                        .as_ref()
                        .is_some_and(|group| Arc::ptr_eq(group, queue))
                })
            });
            match group {
                Some(target) => target.members.push(route.tx.clone()),
                None => targets.push(Target {
                    group: route.queue.clone(),
                    members: smallvec![route.tx.clone()],
                    start: 0,
                }),
            }
        }
        for target in &mut targets {
            if let Some(group) = &target.group {
                target.start = group.next.fetch_add(1, Ordering::Relaxed) % target.members.len();
            }
        }
        targets
    }

    fn unsubscribe(&self, registration: &Registration) {
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        if registration.literal {
            if let Some(routes) = table.literal.get_mut(&*registration.subject) {
                routes.retain(|route| route.sid != registration.sid);
                if routes.is_empty() {
                    table.literal.remove(&*registration.subject);
                }
            }
        } else {
            table
                .wildcard
                .retain(|(_, _, route)| route.sid != registration.sid);
        }
        if let Some(name) = &registration.queue
            && let Some((_, members)) = table.queues.get_mut(name)
        {
            *members -= 1;
            if *members == 0 {
                table.queues.remove(name);
            }
        }
    }
}

impl Target {
    /// Hands `message` to one member, starting at `start`: the first with room takes it; if all are
    /// full, waits on the first full one (backpressure). Returns false if every member is gone.
    async fn deliver(self, mut message: Message) -> bool {
        let count = self.members.len();
        let mut full = SmallVec::<[&mpsc::Sender<Message>; 2]>::new();
        for offset in 0..count {
            let member = &self.members[(self.start + offset) % count];
            match member.try_send(message) {
                Ok(()) => return true,
                Err(TrySendError::Full(back)) => {
                    full.push(member);
                    message = back;
                }
                // That subscription was dropped after we looked it up.
                Err(TrySendError::Closed(back)) => message = back,
            }
        }
        for member in full {
            match member.send(message).await {
                Ok(()) => return true,
                Err(mpsc::error::SendError(back)) => message = back,
            }
        }
        false
    }
}

/// An in-process subscription: its channel plus the registration that removes it on drop.
#[derive(Debug)]
pub(crate) struct Subscription {
    rx: mpsc::Receiver<Message>,
    _registration: Registration,
}

impl Subscription {
    pub(crate) async fn next(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    pub(crate) fn poll_next(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }
}

/// Removes its subscription from the table when dropped.
#[derive(Debug)]
struct Registration {
    /// Weak, so a forgotten subscription does not keep the whole bus alive.
    bus: Weak<InProcess>,
    sid: u64,
    subject: Box<str>,
    literal: bool,
    queue: Option<Box<str>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(bus) = self.bus.upgrade() {
            bus.unsubscribe(self);
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    fn bytes(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[tokio::test]
    async fn full_subscription_makes_the_publisher_wait() {
        let bus = InProcess::new(1);
        let mut sub = bus.subscribe("a", None);
        assert_eq!(bus.publish("a", None, bytes("1")).await, 1);

        let second = bus.publish("a", None, bytes("2"));
        tokio::pin!(second);
        assert!(
            (&mut second).now_or_never().is_none(),
            "publish must wait while the channel is full"
        );

        assert_eq!(sub.next().await.unwrap().payload, "1");
        assert_eq!(second.await, 1);
        assert_eq!(sub.next().await.unwrap().payload, "2");
    }

    #[tokio::test]
    async fn queue_group_prefers_a_member_with_room() {
        let bus = InProcess::new(1);
        let mut first = bus.subscribe("a", Some("q"));
        let mut second = bus.subscribe("a", Some("q"));
        assert_eq!(bus.publish("a", None, bytes("1")).await, 1); // first, now full
        assert_eq!(bus.publish("a", None, bytes("2")).await, 1); // second
        assert_eq!(second.next().await.unwrap().payload, "2");
        // Round robin points at `first` again, but it is full and `second` has room.
        let third = bus.publish("a", None, bytes("3"));
        assert_eq!(
            third.now_or_never(),
            Some(1),
            "must not wait while a member has room"
        );
        assert_eq!(second.next().await.unwrap().payload, "3");
        assert_eq!(first.next().await.unwrap().payload, "1");
        assert!(first.next().now_or_never().is_none());
    }

    #[tokio::test]
    async fn round_robin_is_even() {
        let bus = InProcess::new(64);
        let mut members: Vec<_> = (0..3).map(|_| bus.subscribe("jobs", Some("workers"))).collect();
        for n in 0..30u8 {
            assert_eq!(bus.publish("jobs", None, Bytes::from(vec![n])).await, 1);
        }
        for member in &mut members {
            for _ in 0..10 {
                member.next().await.unwrap();
            }
            assert!(member.next().now_or_never().is_none(), "more than its share");
        }
    }

    #[tokio::test]
    async fn dropping_the_bus_ends_subscriptions() {
        let bus = InProcess::new(4);
        let mut sub = bus.subscribe("a.>", None);
        drop(bus);
        assert!(sub.next().await.is_none());
    }

    #[tokio::test]
    async fn dropped_subscriptions_leave_no_table_entries() {
        let bus = InProcess::new(4);
        let subs = [
            bus.subscribe("a", None),
            bus.subscribe("a", Some("q")),
            bus.subscribe("a.*", Some("q")),
            bus.subscribe("b.>", None),
        ];
        drop(subs);
        let table = bus.table.read().unwrap();
        assert!(table.literal.is_empty());
        assert!(table.wildcard.is_empty());
        assert!(table.queues.is_empty());
    }

    #[tokio::test]
    async fn one_queue_group_across_patterns_gets_one_copy() {
        let bus = InProcess::new(4);
        let _literal = bus.subscribe("a.b", Some("q"));
        let _wildcard = bus.subscribe("a.*", Some("q"));
        assert_eq!(bus.publish("a.b", None, bytes("x")).await, 1);
    }
}
