//! Gateway replicas in cluster mode (separate `kaa run kpc` processes on a real nats-server):
//! a device that reconnects through another replica is dropped by the first one without a
//! `disconnected` event overriding its new `connected`, and a replica that gets SIGTERM drains:
//! the request in flight is answered, the device is told, the process exits 0.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use kaa_bus::{Bus, Subscription};
use kaa_e2e::{DEADLINE, Platform};
use kaa_protocol::avro::AvroRecord;
use kaa_protocol::elce::{ConnectedEvent, DisconnectedEvent};
use kaa_protocol::esp::{ClientData, ExtensionData};
use kaa_testkit::{Device5, Ended};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;

const AV: &str = "demo_application_v1";

async fn cluster(kpcs: usize) -> (Platform, Bus) {
    let quickstart =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../blueprints/quickstart.yaml"))
            .unwrap();
    let platform = Platform::cluster_with(&quickstart, kpcs).await;
    let bus = Bus::connect_nats(&platform.nats.as_ref().unwrap().url)
        .await
        .unwrap();
    (platform, bus)
}

/// The next connectivity event: (`connected` or `disconnected`, originating replica, endpoints).
async fn next_event(events: &mut Subscription) -> (&'static str, String, Vec<String>) {
    let msg = tokio::time::timeout(DEADLINE, events.next())
        .await
        .expect("an ELCE event in time")
        .unwrap();
    if msg.subject.ends_with(".connected") {
        let e = ConnectedEvent::from_avro(&msg.payload).unwrap();
        (
            "connected",
            e.originator_replica_id,
            e.endpoints.into_keys().collect(),
        )
    } else {
        let e = DisconnectedEvent::from_avro(&msg.payload).unwrap();
        (
            "disconnected",
            e.originator_replica_id,
            e.endpoints.into_keys().collect(),
        )
    }
}

#[tokio::test]
async fn a_device_that_moves_to_another_replica_stays_connected_in_the_events() {
    let (platform, bus) = cluster(2).await;
    let mut events = bus
        .subscribe("kaa.v1.events.kpc.endpoint.connectivity.*", None)
        .await
        .unwrap();
    let endpoint = platform.register(AV, "roaming-token").await;
    let [port_a, port_b] = platform.mqtt_ports[..] else {
        panic!("two gateways: {:?}", platform.mqtt_ports);
    };
    let topic = |n: u32| format!("kp1/{AV}/epmx/roaming-token/get/{n}");

    let mut on_a = Device5::connect(port_a, "device").await;
    assert_eq!(on_a.request(&topic(1), "{}").await.0, "/status");
    let (kind, replica_a, endpoints) = next_event(&mut events).await;
    assert_eq!((kind, &endpoints), ("connected", &vec![endpoint.clone()]));

    // The device comes back through replica B while A still holds its old connection.
    let mut on_b = Device5::connect(port_b, "device").await;
    assert_eq!(on_b.request(&topic(2), "{}").await.0, "/status");
    let (kind, replica_b, endpoints) = next_event(&mut events).await;
    assert_eq!((kind, &endpoints), ("connected", &vec![endpoint.clone()]));
    assert_ne!(replica_a, replica_b);
    assert_eq!(
        on_a.ended(DEADLINE).await,
        Some(Ended::Disconnect(DisconnectReasonCode::SessionTakenOver)),
        "replica A drops the stale connection"
    );

    // The next event is B's disconnect: A announced nothing that would mark the device offline
    // while it was connected through B.
    on_b.client.disconnect().await.unwrap();
    assert_eq!(
        next_event(&mut events).await,
        ("disconnected", replica_b, vec![endpoint])
    );
}

#[tokio::test]
async fn sigterm_drains_a_gateway_replica_and_it_exits_cleanly() {
    let (mut platform, bus) = cluster(1).await;
    platform.register(AV, "drain-token").await;
    // The test plays the metadata extension, to hold a request in flight.
    let epmx = platform
        .processes
        .iter()
        .position(|p| p.name() == "kaa-run-epmx")
        .unwrap();
    assert!(platform.processes[epmx].terminate().success());
    let mut requests = bus
        .subscribe("kaa.v1.service.epmx.esp.ClientData", Some("epmx"))
        .await
        .unwrap();

    let mut device = Device5::connect(platform.mqtt_port, "device").await;
    let topic = format!("kp1/{AV}/epmx/drain-token/get/1");
    device.publish(&topic, "{}", QoS::AtLeastOnce).await;
    let held = tokio::time::timeout(DEADLINE, requests.next())
        .await
        .unwrap()
        .unwrap();

    let kpc = platform
        .processes
        .iter()
        .position(|p| p.name() == "kaa-run-kpc")
        .unwrap();
    let mut kpc = platform.processes.remove(kpc);
    let pid = kpc.pid().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Still draining: the request in flight holds the connection open.
    assert_eq!(device.ended(Duration::from_millis(300)).await, None);

    let data = ClientData::from_avro(&held.payload).unwrap();
    let answer = ExtensionData {
        correlation_id: data.correlation_id,
        app_version_name: Some(data.app_version_name),
        extension_instance_name: Some("epmx".into()),
        endpoint_id: data.endpoint_id,
        resource_path: data.resource_path,
        request_id: data.request_id,
        payload: Some(b"{}".to_vec()),
        status_code: 200,
        ..Default::default()
    };
    bus.publish(held.reply_to.as_deref().unwrap(), Bytes::from(answer.to_avro()))
        .await
        .unwrap();
    let (reply, _) = device
        .next_message(DEADLINE)
        .await
        .expect("the held request is answered");
    assert_eq!(reply, format!("{topic}/status"));
    assert_eq!(
        device.ended(DEADLINE).await,
        Some(Ended::Disconnect(DisconnectReasonCode::ServerShuttingDown))
    );
    let status = tokio::task::spawn_blocking(move || kpc.terminate())
        .await
        .unwrap();
    assert!(status.success(), "the drained replica exits 0: {status:?}");
}
