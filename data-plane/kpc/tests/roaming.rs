//! Endpoint roaming: when another replica of the same KPC instance announces an endpoint this
//! replica serves, this replica drops its stale state for it and never declares it disconnected.
//! The other replica is played by the test: its 9/ELCE `connected` events go on the bus.
//! (e2e/tests/roaming_cluster.rs runs the same story with two KPC processes on nats-server.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::{FakeCm, config, echo_extension};
use kaa_blueprint::config::ClientAuthMode;
use kaa_bus::metrics::Metrics;
use kaa_bus::{Bus, Subscription};
use kaa_kpc::Kpc;
use kaa_protocol::avro::AvroRecord;
use kaa_protocol::elce::{ConnectedEvent, DisconnectedEvent};
use kaa_protocol::{now_millis, subject};
use kaa_testkit::{DEADLINE, Device5, Ended};
use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;

struct Setup {
    bus: Bus,
    kpc: Kpc,
    connected: Subscription,
    disconnected: Subscription,
}

async fn setup() -> Setup {
    let bus = Bus::in_process();
    let cm = FakeCm::start(&bus).await;
    for n in 1..=3 {
        cm.add_token(&format!("tok-{n}"), &format!("ep-{n}"), &format!("tid-{n}"));
    }
    echo_extension(&bus).await;
    let connected = bus
        .subscribe(&subject::elce_connected("kpc"), None)
        .await
        .unwrap();
    let disconnected = bus
        .subscribe(&subject::elce_disconnected("kpc"), None)
        .await
        .unwrap();
    let kpc = Kpc::start(
        config(ClientAuthMode::None),
        bus.clone(),
        "kpc-a".into(),
        &Metrics::new(),
    )
    .await
    .unwrap();
    Setup {
        bus,
        kpc,
        connected,
        disconnected,
    }
}

impl Setup {
    /// The next `connected` event this replica published.
    async fn next_connected(&mut self) -> ConnectedEvent {
        let msg = tokio::time::timeout(DEADLINE, self.connected.next())
            .await
            .unwrap()
            .unwrap();
        ConnectedEvent::from_avro(&msg.payload).unwrap()
    }

    async fn next_disconnected(&mut self) -> BTreeMap<String, String> {
        let msg = tokio::time::timeout(DEADLINE, self.disconnected.next())
            .await
            .unwrap()
            .unwrap();
        DisconnectedEvent::from_avro(&msg.payload).unwrap().endpoints
    }

    /// Replica `kpc-b` announces `endpoint_id` connected at `timestamp`.
    async fn connected_elsewhere(&mut self, endpoint_id: &str, timestamp: i64) {
        let event = ConnectedEvent {
            correlation_id: format!("kpc-b-{endpoint_id}"),
            timestamp,
            timeout: 0,
            endpoints: BTreeMap::from([(endpoint_id.to_owned(), "av1".to_owned())]),
            originator_replica_id: "kpc-b".into(),
        };
        self.bus
            .publish(&subject::elce_connected("kpc"), Bytes::from(event.to_avro()))
            .await
            .unwrap();
        // Our own subscription sees it too; skip it.
        let seen = self.next_connected().await;
        assert_eq!(seen.originator_replica_id, "kpc-b");
    }
}

#[tokio::test]
async fn a_device_that_reconnected_elsewhere_is_dropped_here_without_a_disconnected_event() {
    let mut s = setup().await;
    let port = s.kpc.mqtt_addr().port();
    let mut stale = Device5::connect(port, "device").await;
    assert_eq!(stale.request("kp1/av1/ext/tok-1/echo/1", "{}").await.0, "/status");
    let ours = s.next_connected().await;
    assert_eq!(ours.originator_replica_id, "kpc-a");

    s.connected_elsewhere("ep-1", now_millis()).await;
    assert_eq!(
        stale.ended(DEADLINE).await,
        Some(Ended::Disconnect(DisconnectReasonCode::SessionTakenOver)),
        "the stale session is told it was taken over"
    );

    // The next disconnected event this replica publishes is another device's, not ep-1's.
    let mut other = Device5::connect(port, "other").await;
    assert_eq!(other.request("kp1/av1/ext/tok-2/echo/1", "{}").await.0, "/status");
    s.next_connected().await;
    other.client.disconnect().await.unwrap();
    let endpoints = s.next_disconnected().await;
    assert_eq!(endpoints.keys().collect::<Vec<_>>(), ["ep-2"]);
}

#[tokio::test]
async fn a_gateway_session_loses_only_the_roamed_endpoint() {
    let mut s = setup().await;
    let mut gateway = Device5::connect(s.kpc.mqtt_addr().port(), "gateway").await;
    for token in ["tok-1", "tok-2"] {
        let topic = format!("kp1/av1/ext/{token}/echo/1");
        assert_eq!(gateway.request(&topic, "{}").await.0, "/status");
        s.next_connected().await;
    }

    s.connected_elsewhere("ep-1", now_millis()).await;
    // Still serving ep-2; the session stays open.
    assert_eq!(
        gateway.request("kp1/av1/ext/tok-2/echo/2", "{}").await.0,
        "/status"
    );
    assert_eq!(gateway.ended(Duration::from_millis(200)).await, None);

    gateway.client.disconnect().await.unwrap();
    let endpoints = s.next_disconnected().await;
    assert_eq!(
        endpoints.keys().collect::<Vec<_>>(),
        ["ep-2"],
        "ep-1 belongs to the other replica now"
    );
}

#[tokio::test]
async fn an_announcement_older_than_ours_changes_nothing() {
    let mut s = setup().await;
    let mut device = Device5::connect(s.kpc.mqtt_addr().port(), "device").await;
    assert_eq!(
        device.request("kp1/av1/ext/tok-1/echo/1", "{}").await.0,
        "/status"
    );
    let ours = s.next_connected().await;

    // The device left the other replica before it came here: that replica's event is stale.
    s.connected_elsewhere("ep-1", ours.timestamp - 1_000).await;
    assert_eq!(
        device.request("kp1/av1/ext/tok-1/echo/2", "{}").await.0,
        "/status"
    );
    assert_eq!(device.ended(Duration::from_millis(200)).await, None);

    device.client.disconnect().await.unwrap();
    let endpoints = s.next_disconnected().await;
    assert_eq!(endpoints.keys().collect::<Vec<_>>(), ["ep-1"]);
}

#[tokio::test]
async fn a_device_that_reconnected_here_stays_connected_when_its_old_connection_dies() {
    let mut s = setup().await;
    let port = s.kpc.mqtt_addr().port();
    let mut old = Device5::connect(port, "device").await;
    assert_eq!(old.request("kp1/av1/ext/tok-1/echo/1", "{}").await.0, "/status");
    s.next_connected().await;
    // The device is back on a new connection before the old one is noticed as dead.
    let mut new = Device5::connect(port, "device-again").await;
    assert_eq!(new.request("kp1/av1/ext/tok-1/echo/2", "{}").await.0, "/status");
    s.next_connected().await;

    old.client.disconnect().await.unwrap();
    assert!(old.ended(DEADLINE).await.is_some());
    // No `disconnected` for ep-1 while the new connection holds it: the next event is the new
    // connection's, once it ends too.
    new.client.disconnect().await.unwrap();
    let endpoints = s.next_disconnected().await;
    assert_eq!(endpoints.keys().collect::<Vec<_>>(), ["ep-1"]);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), s.disconnected.next())
            .await
            .is_err(),
        "one disconnected event, not one per connection"
    );
}
