//! The bus contract: one suite, run against the in-process bus and against a real nats-server.
//!
//! Each contract test is a plain `async fn(Harness)`; the `contract!` macro turns every one of them
//! into a `#[tokio::test]` in module `in_process` and one in module `nats` (which starts its own
//! nats-server through kaa-testkit). Nothing sleeps to synchronise: receives have a deadline, and a
//! "not delivered" claim is proven by a later message (per-publisher order) arriving first.

#![allow(
    clippy::unwrap_used,
    reason = "test bodies: the contract fns are called from #[tokio::test]s"
)]

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use bytes::Bytes;
use kaa_bus::{Bus, BusError, Message, SubjectError, Subscription};
use kaa_testkit::{NatsServer, eventually};
use tokio::sync::mpsc;

/// Generous: it only bounds how long a broken test hangs.
const WAIT: Duration = Duration::from_secs(10);

macro_rules! contract {
    ($($test:ident),+ $(,)?) => {
        mod in_process {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Harness::in_process()).await;
                }
            )+
        }
        mod nats {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Harness::nats().await).await;
                }
            )+
        }
    };
}

contract!(
    publish_subscribe,
    publish_with_reply_carries_reply_to,
    subscription_is_active_when_subscribe_returns,
    star_matches_exactly_one_token,
    greater_than_matches_one_or_more_trailing_tokens,
    queue_group_delivers_each_message_once_and_spreads_load,
    plain_subscribers_get_copies_alongside_queue_group,
    request_reply,
    request_times_out_without_answer,
    request_without_subscribers_fails_promptly,
    dropped_subscription_stops_delivery,
    dropped_subscription_leaves_no_responders,
    order_is_kept_per_publisher,
    invalid_subjects_are_errors,
    connected_and_flushes,
);

struct Harness {
    bus: Bus,
    /// Kept alive for the test's duration; `None` for the in-process bus.
    server: Option<NatsServer>,
}

impl Harness {
    fn in_process() -> Harness {
        Harness {
            bus: Bus::in_process(),
            server: None,
        }
    }

    async fn nats() -> Harness {
        let server = NatsServer::start().await;
        let bus = Bus::connect_nats(&server.url).await.unwrap();
        Harness {
            bus,
            server: Some(server),
        }
    }

    /// Another participant: a second connection to the same server, or the same in-process bus.
    async fn other_bus(&self) -> Bus {
        match &self.server {
            Some(server) => Bus::connect_nats(&server.url).await.unwrap(),
            None => self.bus.clone(),
        }
    }
}

fn text(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn recv(sub: &mut Subscription) -> Message {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("timed out waiting for a message")
        .expect("subscription ended")
}

/// Receives `count` messages and returns their payloads as strings.
async fn recv_payloads(sub: &mut Subscription, count: usize) -> Vec<String> {
    let mut payloads = Vec::with_capacity(count);
    for _ in 0..count {
        payloads.push(String::from_utf8(recv(sub).await.payload.to_vec()).unwrap());
    }
    payloads
}

/// Moves each subscription into a task that forwards `(member index, payload)` to one channel.
fn merge(members: Vec<Subscription>) -> mpsc::UnboundedReceiver<(usize, String)> {
    let (tx, rx) = mpsc::unbounded_channel();
    for (index, mut sub) in members.into_iter().enumerate() {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let payload = String::from_utf8(msg.payload.to_vec()).unwrap();
                if tx.send((index, payload)).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

async fn recv_merged(
    rx: &mut mpsc::UnboundedReceiver<(usize, String)>,
    count: usize,
) -> Vec<(usize, String)> {
    let mut got = Vec::with_capacity(count);
    for _ in 0..count {
        let item = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("timed out waiting for a queue group message")
            .expect("all members ended");
        got.push(item);
    }
    got
}

async fn publish_all(bus: &Bus, subjects: &[&str]) {
    for subject in subjects {
        bus.publish(subject, text(subject)).await.unwrap();
    }
}

async fn publish_subscribe(h: Harness) {
    let mut sub = h.bus.subscribe("greet.world", None).await.unwrap();
    h.bus.publish("greet.world", text("hello")).await.unwrap();
    let msg = recv(&mut sub).await;
    assert_eq!(msg.subject, "greet.world");
    assert_eq!(msg.payload, "hello");
    assert_eq!(msg.reply_to, None);
}

async fn publish_with_reply_carries_reply_to(h: Harness) {
    let mut sub = h.bus.subscribe("svc.job", None).await.unwrap();
    h.bus
        .publish_with_reply("svc.job", "answers.here", text("work"))
        .await
        .unwrap();
    let msg = recv(&mut sub).await;
    assert_eq!(msg.reply_to.as_deref(), Some("answers.here"));
    assert_eq!(msg.payload, "work");
}

async fn subscription_is_active_when_subscribe_returns(h: Harness) {
    let publisher = h.other_bus().await;
    for round in 0..5 {
        let subject = format!("fresh.{round}");
        let mut sub = h.bus.subscribe(&subject, None).await.unwrap();
        publisher.publish(&subject, text("first")).await.unwrap();
        assert_eq!(recv(&mut sub).await.payload, "first");
    }
}

async fn star_matches_exactly_one_token(h: Harness) {
    let mut sub = h.bus.subscribe("sensors.*.temp", None).await.unwrap();
    publish_all(
        &h.bus,
        &[
            "sensors.a.temp",
            "sensors.a.b.temp",
            "sensors.temp",
            "sensors.a.humidity",
            "other.a.temp",
            "sensors.b.temp",
        ],
    )
    .await;
    // b.temp arriving right after a.temp proves the four in between were not delivered.
    assert_eq!(
        recv_payloads(&mut sub, 2).await,
        ["sensors.a.temp", "sensors.b.temp"]
    );
}

async fn greater_than_matches_one_or_more_trailing_tokens(h: Harness) {
    let mut sub = h.bus.subscribe("sensors.>", None).await.unwrap();
    let mut after_star = h.bus.subscribe("*.a.>", None).await.unwrap();
    publish_all(
        &h.bus,
        &[
            "sensors",
            "sensors.a",
            "other.sensors.a",
            "sensorsx.a",
            "other.a.b",
            "sensors.a.b.c",
        ],
    )
    .await;
    assert_eq!(recv_payloads(&mut sub, 2).await, ["sensors.a", "sensors.a.b.c"]);
    assert_eq!(
        recv_payloads(&mut after_star, 2).await,
        ["other.a.b", "sensors.a.b.c"]
    );
}

async fn queue_group_delivers_each_message_once_and_spreads_load(h: Harness) {
    const MEMBERS: usize = 3;
    const COUNT: usize = 300;
    let mut members = Vec::new();
    for _ in 0..MEMBERS {
        members.push(h.bus.subscribe("jobs.run", Some("workers")).await.unwrap());
    }
    let mut merged = merge(members);
    for n in 0..COUNT {
        h.bus.publish("jobs.run", text(&n.to_string())).await.unwrap();
    }
    let got = recv_merged(&mut merged, COUNT).await;

    let distinct: BTreeSet<_> = got.iter().map(|(_, payload)| payload.clone()).collect();
    let expected: BTreeSet<_> = (0..COUNT).map(|n| n.to_string()).collect();
    assert_eq!(distinct, expected, "every message exactly once");

    let mut per_member = BTreeMap::new();
    for (member, _) in &got {
        *per_member.entry(*member).or_insert(0usize) += 1;
    }
    assert_eq!(per_member.len(), MEMBERS, "every member got work: {per_member:?}");
    for (member, count) in per_member {
        assert!(count >= COUNT / 10, "member {member} got only {count} of {COUNT}");
    }
}

async fn plain_subscribers_get_copies_alongside_queue_group(h: Harness) {
    const COUNT: usize = 20;
    let mut plain_a = h.bus.subscribe("jobs.*", None).await.unwrap();
    let mut plain_b = h.bus.subscribe("jobs.new", None).await.unwrap();
    let mut group = Vec::new();
    for pattern in ["jobs.new", "jobs.>"] {
        group.push(h.bus.subscribe(pattern, Some("workers")).await.unwrap());
    }
    let mut merged = merge(group);
    let expected: Vec<String> = (0..COUNT).map(|n| n.to_string()).collect();
    for payload in &expected {
        h.bus.publish("jobs.new", text(payload)).await.unwrap();
    }
    assert_eq!(recv_payloads(&mut plain_a, COUNT).await, expected);
    assert_eq!(recv_payloads(&mut plain_b, COUNT).await, expected);
    let mut from_group: Vec<String> = recv_merged(&mut merged, COUNT)
        .await
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    from_group.sort_by_key(|p| p.parse::<usize>().unwrap());
    assert_eq!(
        from_group, expected,
        "the group as a whole gets each message once"
    );
}

async fn request_reply(h: Harness) {
    let responder = h.other_bus().await;
    let mut requests = responder.subscribe("svc.upper", Some("svc")).await.unwrap();
    tokio::spawn(async move {
        while let Some(msg) = requests.next().await {
            let reply_to = msg.reply_to.expect("a request carries reply_to");
            let upper = String::from_utf8(msg.payload.to_vec()).unwrap().to_uppercase();
            responder.publish(&reply_to, text(&upper)).await.unwrap();
        }
    });
    for word in ["hello", "kaa", "bus"] {
        let reply = h.bus.request("svc.upper", text(word), WAIT).await.unwrap();
        assert_eq!(reply.payload, word.to_uppercase());
    }
}

async fn request_times_out_without_answer(h: Harness) {
    let _silent = h.bus.subscribe("svc.silent", None).await.unwrap();
    let timeout = Duration::from_millis(200);
    let started = Instant::now();
    let err = h
        .bus
        .request("svc.silent", text("anyone?"), timeout)
        .await
        .unwrap_err();
    assert_eq!(err, BusError::Timeout);
    assert!(
        started.elapsed() >= timeout,
        "gave up early: {:?}",
        started.elapsed()
    );
}

async fn request_without_subscribers_fails_promptly(h: Harness) {
    let started = Instant::now();
    let err = h
        .bus
        .request("svc.nobody", text("hello?"), WAIT)
        .await
        .unwrap_err();
    assert_eq!(err, BusError::NoResponders("svc.nobody".to_owned()));
    assert!(started.elapsed() < WAIT / 2, "took {:?}", started.elapsed());
}

async fn dropped_subscription_stops_delivery(h: Harness) {
    let mut kept = h.bus.subscribe("work", Some("pool")).await.unwrap();
    let dropped = h.bus.subscribe("work", Some("pool")).await.unwrap();
    drop(dropped);
    // With the other member gone, the survivor must see every message, in order.
    let expected: Vec<String> = (0..20).map(|n| n.to_string()).collect();
    for payload in &expected {
        h.bus.publish("work", text(payload)).await.unwrap();
    }
    assert_eq!(recv_payloads(&mut kept, expected.len()).await, expected);
}

async fn dropped_subscription_leaves_no_responders(h: Harness) {
    let sub = h.bus.subscribe("svc.gone", None).await.unwrap();
    drop(sub);
    let bus = &h.bus;
    eventually(
        WAIT,
        "the dropped subscription to stop counting as a responder",
        || async move {
            match bus.request("svc.gone", text("x"), Duration::from_secs(1)).await {
                Err(BusError::NoResponders(_)) => Some(()),
                _ => None,
            }
        },
    )
    .await;
}

async fn order_is_kept_per_publisher(h: Harness) {
    // More than one subscription buffer, so in-process publishers hit backpressure on the way.
    const COUNT: u32 = 3000;
    let mut readers = Vec::new();
    for _ in 0..2 {
        let mut sub = h.bus.subscribe("ordered", None).await.unwrap();
        readers.push(tokio::spawn(async move {
            for expected in 0..COUNT {
                let msg = recv(&mut sub).await;
                assert_eq!(msg.payload, expected.to_be_bytes().as_slice());
            }
        }));
    }
    for n in 0..COUNT {
        h.bus
            .publish("ordered", Bytes::copy_from_slice(&n.to_be_bytes()))
            .await
            .unwrap();
    }
    for reader in readers {
        reader.await.unwrap();
    }
}

async fn invalid_subjects_are_errors(h: Harness) {
    let bus = &h.bus;
    let invalid = |subject: &str, reason| BusError::InvalidSubject {
        subject: subject.to_owned(),
        reason,
    };
    for (subject, reason) in [
        ("", SubjectError::Empty),
        ("a..b", SubjectError::EmptyToken),
        (".a", SubjectError::EmptyToken),
        ("a.", SubjectError::EmptyToken),
        ("a b", SubjectError::Whitespace),
        ("a\r\nb", SubjectError::Whitespace),
        ("a.*", SubjectError::WildcardInPublish),
        ("a.>", SubjectError::WildcardInPublish),
    ] {
        assert_eq!(
            bus.publish(subject, Bytes::new()).await.unwrap_err(),
            invalid(subject, reason)
        );
        assert_eq!(
            bus.request(subject, Bytes::new(), WAIT).await.unwrap_err(),
            invalid(subject, reason)
        );
        assert_eq!(
            bus.publish_with_reply("ok", subject, Bytes::new())
                .await
                .unwrap_err(),
            invalid(subject, reason)
        );
    }
    for (subject, reason) in [
        ("", SubjectError::Empty),
        ("a..b", SubjectError::EmptyToken),
        ("a b", SubjectError::Whitespace),
        ("a.>.b", SubjectError::FullWildcardNotLast),
    ] {
        assert_eq!(
            bus.subscribe(subject, None).await.unwrap_err(),
            invalid(subject, reason)
        );
    }
    assert_eq!(
        bus.subscribe("ok", Some("two words")).await.unwrap_err(),
        BusError::InvalidQueueGroup {
            queue_group: "two words".to_owned(),
            reason: SubjectError::Whitespace
        }
    );
    assert!(matches!(
        bus.subscribe("ok", Some("")).await,
        Err(BusError::InvalidQueueGroup { .. })
    ));
    // The bus still works after refusing all that.
    let mut sub = bus.subscribe("still.ok", None).await.unwrap();
    bus.publish("still.ok", text("yes")).await.unwrap();
    assert_eq!(recv(&mut sub).await.payload, "yes");
}

async fn connected_and_flushes(h: Harness) {
    assert!(h.bus.is_connected());
    h.bus.publish("anything", text("x")).await.unwrap();
    h.bus.flush().await.unwrap();
}
