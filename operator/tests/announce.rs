//! The provider's 17/SCMP announcements on a real nats-server: what an edit publishes (the RFC's
//! Avro records, on the RFC's subjects, targeted first, then one broadcast), and announcements
//! owed while NATS was unreachable, sent once it is back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use kaa_blueprint::{Blueprint, config::ServiceConfig};
use kaa_bus::{Bus, Subscription};
use kaa_operator::provider::{BlueprintKey, Provider};
use kaa_protocol::{
    avro::AvroRecord,
    scmp::{BroadcastConfigurationUpdateEvent, DEFAULT_TENANT, ServiceSpecificConfigurationUpdateEvent},
};
use kaa_testkit::{NatsServer, eventually, free_port};
use serde_json::json;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

const WAIT: Duration = Duration::from_secs(10);
const BROADCAST: &str = "kaa.v1.events.kaa-operator.service.configuration.upsert";

fn key() -> BlueprintKey {
    BlueprintKey {
        namespace: "default".into(),
        name: "quickstart".into(),
    }
}

fn configs(blueprint: &Blueprint) -> Vec<ServiceConfig> {
    kaa_blueprint::render(blueprint)
        .unwrap()
        .into_iter()
        .map(|r| r.config)
        .collect()
}

/// The quickstart with KPC's connection limit at `max`.
fn with_limit(max: u32) -> Blueprint {
    let mut bp = Blueprint::quickstart();
    bp.spec.services[0]
        .config
        .insert("limits".into(), json!({"maxConnections": max}));
    bp
}

/// Subjects received up to and including the next broadcast, checking every record.
async fn announcements(sub: &mut Subscription) -> Vec<String> {
    let mut subjects = Vec::new();
    loop {
        let message = tokio::time::timeout(WAIT, sub.next())
            .await
            .expect("an announcement")
            .unwrap();
        if message.subject == BROADCAST {
            let event = BroadcastConfigurationUpdateEvent::from_avro(&message.payload).unwrap();
            assert_eq!(event.originator_replica_id, "op-test");
            assert_eq!(event.tenant_id.as_deref(), Some(DEFAULT_TENANT));
            assert!(!event.correlation_id.is_empty() && event.timestamp > 0);
            subjects.push(message.subject);
            return subjects;
        }
        let event = ServiceSpecificConfigurationUpdateEvent::from_avro(&message.payload).unwrap();
        assert_eq!(event.tenant_id, DEFAULT_TENANT);
        assert_eq!((event.app_name, event.app_ver_name), (None, None));
        subjects.push(message.subject);
    }
}

fn targeted(instance: &str, update_type: &str) -> String {
    format!("kaa.v1.service.{instance}.scmp.configuration.{update_type}")
}

#[tokio::test]
async fn an_edit_announces_the_changed_instance_then_a_broadcast() {
    let nats = NatsServer::start().await;
    let bus = Bus::connect_nats(&nats.url).await.unwrap();
    let mut sub = bus.subscribe("kaa.v1.>", None).await.unwrap();
    let provider = Provider::new("op-test");

    provider.feed(&key(), 1, &nats.url, None, &configs(&with_limit(10)));
    let first = announcements(&mut sub).await;
    assert_eq!(
        first.len(),
        12,
        "every instance, the first time, then the broadcast: {first:?}"
    );
    assert!(first.contains(&targeted("kpc", "upsert")));
    assert!(first.contains(&targeted("cmx_ota", "upsert")));

    // Fed again unchanged: nothing to announce (the next announcement is the edit's).
    provider.feed(&key(), 2, &nats.url, None, &configs(&with_limit(10)));
    provider.feed(&key(), 3, &nats.url, None, &configs(&with_limit(20)));
    assert_eq!(
        announcements(&mut sub).await,
        [targeted("kpc", "upsert"), BROADCAST.to_owned()]
    );

    let mut without_bcx = with_limit(20);
    without_bcx.spec.services.retain(|s| s.instance_name() != "bcx");
    without_bcx.spec.applications[0].versions[0]
        .extensions
        .retain(|e| e != "bcx");
    provider.feed(&key(), 4, &nats.url, None, &configs(&without_bcx));
    let removed = announcements(&mut sub).await;
    // KPC routes to the extensions, so its config changes too; EPR's does not.
    assert!(removed.contains(&targeted("bcx", "delete")), "{removed:?}");
    assert!(!removed.contains(&targeted("epr", "upsert")), "{removed:?}");
}

/// A NATS that is unreachable at `listen` (connections are dropped; each drop is counted) until
/// `open` is set, then forwards to the real server at `to`.
struct Gate {
    refused: Arc<Semaphore>,
    open: Arc<AtomicBool>,
}

impl Gate {
    async fn start(listen: u16, to: u16) -> Gate {
        let listener = TcpListener::bind(("127.0.0.1", listen)).await.unwrap();
        let gate = Gate {
            refused: Arc::new(Semaphore::new(0)),
            open: Arc::new(AtomicBool::new(false)),
        };
        let (refused, open) = (gate.refused.clone(), gate.open.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !open.load(Ordering::SeqCst) {
                    drop(client);
                    refused.add_permits(1);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(("127.0.0.1", to)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        gate
    }
}

#[tokio::test]
async fn announcements_owed_while_nats_is_unreachable_are_sent_when_it_is_back() {
    let nats = NatsServer::start().await;
    let bus = Bus::connect_nats(&nats.url).await.unwrap();
    let mut sub = bus.subscribe("kaa.v1.>", None).await.unwrap();
    let port = free_port();
    let gate = Gate::start(port, nats.port).await;
    let url = format!("nats://127.0.0.1:{port}");
    let provider = Provider::new("op-test");

    provider.feed(&key(), 1, &url, None, &configs(&with_limit(10)));
    // The provider tried and failed: NATS is down for it.
    let _ = tokio::time::timeout(WAIT, gate.refused.acquire()).await.unwrap();
    provider.feed(&key(), 2, &url, None, &configs(&with_limit(20)));
    let rollout = provider.rollout(&key()).unwrap();
    assert_eq!((rollout.status, rollout.reason), ("Unknown", "NatsUnreachable"));

    gate.open.store(true, Ordering::SeqCst);
    let owed = announcements(&mut sub).await;
    assert_eq!(owed.len(), 12, "each instance once, then the broadcast: {owed:?}");
    eventually(WAIT, "the rollout to see the connection", || async {
        (provider.rollout(&key()).unwrap().status == "True").then_some(())
    })
    .await;
}
