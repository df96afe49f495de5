//! 9/ELCE connectivity events, observed on a real nats-server in cluster mode: one `connected`
//! event per endpoint as it first appears on a connection, one `disconnected` event per lost
//! connection listing all its endpoints, whether the client said goodbye, vanished, or went silent.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use kaa_bus::{Bus, Subscription};
use kaa_e2e::{DEADLINE, Platform};
use kaa_protocol::avro::AvroRecord;
use kaa_protocol::elce::{ConnectedEvent, DisconnectedEvent};

const AV: &str = "demo_application_v1";

enum Connectivity {
    Connected(BTreeMap<String, String>),
    Disconnected(BTreeMap<String, String>),
}

async fn next_event(events: &mut Subscription, within: Duration) -> Connectivity {
    let msg = tokio::time::timeout(within, events.next())
        .await
        .expect("an ELCE event in time")
        .expect("subscribed");
    if msg.subject.ends_with(".connected") {
        let event = ConnectedEvent::from_avro(&msg.payload).expect("a valid ConnectedEvent");
        assert!(
            event.originator_replica_id.starts_with("kpc-"),
            "{}",
            event.originator_replica_id
        );
        Connectivity::Connected(event.endpoints)
    } else {
        assert!(msg.subject.ends_with(".disconnected"), "{}", msg.subject);
        Connectivity::Disconnected(
            DisconnectedEvent::from_avro(&msg.payload)
                .expect("a valid DisconnectedEvent")
                .endpoints,
        )
    }
}

async fn cluster_with_events() -> (Platform, Subscription) {
    let platform = Platform::cluster().await;
    let bus = Bus::connect_nats(&platform.nats.as_ref().unwrap().url)
        .await
        .unwrap();
    let events = bus
        .subscribe("kaa.v1.events.kpc.endpoint.connectivity.*", None)
        .await
        .unwrap();
    (platform, events)
}

#[tokio::test]
async fn a_gateway_connection_announces_each_endpoint_once_and_all_of_them_on_disconnect() {
    let (platform, mut events) = cluster_with_events().await;
    let a = platform.register(AV, "elce-a").await;
    let b = platform.register(AV, "elce-b").await;
    let mut device = platform.device("elce").await;

    for (token, id) in [("elce-a", &a), ("elce-b", &b)] {
        device
            .request(&format!("kp1/{AV}/epmx/{token}/get/keys/1"), "")
            .await;
        match next_event(&mut events, DEADLINE).await {
            Connectivity::Connected(endpoints) => {
                assert_eq!(endpoints, BTreeMap::from([(id.clone(), AV.to_owned())]))
            }
            Connectivity::Disconnected(e) => panic!("unexpected disconnected {e:?}"),
        }
    }
    // A second request for a known endpoint announces nothing new.
    device
        .request(&format!("kp1/{AV}/epmx/elce-a/get/keys/2"), "")
        .await;

    device.client.disconnect().await.unwrap();
    match next_event(&mut events, DEADLINE).await {
        Connectivity::Disconnected(endpoints) => {
            assert_eq!(
                endpoints,
                BTreeMap::from([(a, AV.to_owned()), (b, AV.to_owned())])
            );
        }
        Connectivity::Connected(e) => panic!("unexpected connected {e:?}"),
    }
}

#[tokio::test]
async fn a_vanished_client_and_a_silent_one_are_announced_disconnected() {
    let (platform, mut events) = cluster_with_events().await;
    let vanishing = platform.register(AV, "elce-vanish").await;
    let silent = platform.register(AV, "elce-silent").await;

    // Socket loss: no DISCONNECT packet.
    let socket = raw_client(platform.mqtt_port, 60, "elce-vanish");
    assert!(matches!(
        next_event(&mut events, DEADLINE).await,
        Connectivity::Connected(_)
    ));
    drop(socket);
    match next_event(&mut events, DEADLINE).await {
        Connectivity::Disconnected(endpoints) => {
            assert_eq!(endpoints, BTreeMap::from([(vanishing, AV.to_owned())]))
        }
        Connectivity::Connected(e) => panic!("unexpected connected {e:?}"),
    }

    // Keepalive of 1 s, then silence with the socket still open: dropped after 1.5 s.
    let _socket = raw_client(platform.mqtt_port, 1, "elce-silent");
    assert!(matches!(
        next_event(&mut events, DEADLINE).await,
        Connectivity::Connected(_)
    ));
    let started = std::time::Instant::now();
    match next_event(&mut events, DEADLINE).await {
        Connectivity::Disconnected(endpoints) => {
            assert_eq!(endpoints, BTreeMap::from([(silent, AV.to_owned())]))
        }
        Connectivity::Connected(e) => panic!("unexpected connected {e:?}"),
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "not before the keepalive expired"
    );
}

/// MQTT 3.1.1 by hand: CONNECT with a keepalive, one QoS 0 request for `token`, then nothing.
fn raw_client(port: u16, keepalive: u8, token: &str) -> std::net::TcpStream {
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let connect = [&[
        0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0b10, 0, keepalive, 0, 0,
    ][..]]
    .concat();
    let topic = format!("kp1/{AV}/epmx/{token}/get/keys");
    let mut publish = vec![0x30, (2 + topic.len()) as u8, 0, topic.len() as u8];
    publish.extend(topic.as_bytes());
    socket.write_all(&connect).unwrap();
    socket.write_all(&publish).unwrap();
    socket
}
