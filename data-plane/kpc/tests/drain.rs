//! Graceful drain: on shutdown the gateway stops accepting, refuses new requests, lets the ones
//! in flight be answered, tells MQTT 5 clients it is shutting down, announces the endpoints
//! disconnected, and finishes within the drain timeout even if an extension never answers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{FakeCm, config};
use kaa_blueprint::config::{ClientAuthMode, KpcConfig};
use kaa_bus::metrics::Metrics;
use kaa_bus::{Bus, Message, Subscription};
use kaa_kpc::Kpc;
use kaa_protocol::avro::AvroRecord;
use kaa_protocol::elce::DisconnectedEvent;
use kaa_protocol::esp::{ClientData, ExtensionData};
use kaa_protocol::subject;
use kaa_testkit::{DEADLINE, Device5, Ended, eventually};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;

/// KPC whose extension `ext` is the test itself: requests wait until the test answers them.
async fn setup(kpc_config: KpcConfig) -> (Bus, Kpc, Subscription) {
    let bus = Bus::in_process();
    let cm = FakeCm::start(&bus).await;
    cm.add_token("tok-1", "ep-1", "tid-1");
    let requests = bus
        .subscribe(&subject::esp_client_data("ext"), Some("ext"))
        .await
        .unwrap();
    let kpc = Kpc::start(kpc_config, bus.clone(), "kpc-a".into(), &Metrics::new())
        .await
        .unwrap();
    (bus, kpc, requests)
}

async fn answer(bus: &Bus, request: &Message) {
    let data = ClientData::from_avro(&request.payload).unwrap();
    let reply = ExtensionData {
        correlation_id: data.correlation_id,
        app_version_name: Some(data.app_version_name),
        extension_instance_name: Some("ext".into()),
        endpoint_id: data.endpoint_id,
        resource_path: data.resource_path,
        request_id: data.request_id,
        payload: Some(b"{\"done\":true}".to_vec()),
        status_code: 200,
        ..Default::default()
    };
    bus.publish(request.reply_to.as_deref().unwrap(), Bytes::from(reply.to_avro()))
        .await
        .unwrap();
}

#[tokio::test]
async fn requests_in_flight_are_answered_before_the_gateway_says_goodbye() {
    let (bus, kpc, mut requests) = setup(config(ClientAuthMode::None)).await;
    let mut disconnected = bus
        .subscribe(&subject::elce_disconnected("kpc"), None)
        .await
        .unwrap();
    let addr = kpc.mqtt_addr();
    let mut device = Device5::connect(addr.port(), "device").await;
    device
        .publish("kp1/av1/ext/tok-1/slow/1", "{}", QoS::AtLeastOnce)
        .await;
    let in_flight = tokio::time::timeout(DEADLINE, requests.next())
        .await
        .unwrap()
        .unwrap();

    let shutdown = tokio::spawn(kpc.shutdown());
    eventually(DEADLINE, "the listener stops accepting", || async {
        tokio::net::TcpStream::connect(addr).await.is_err().then_some(())
    })
    .await;
    // A new request is refused; the one in flight still gets its answer.
    let (suffix, body) = device.request("kp1/av1/ext/tok-1/late/2", "{}").await;
    assert_eq!(suffix, "/error");
    assert_eq!(body["statusCode"], 503, "{body}");
    assert_eq!(
        device.ended(Duration::from_millis(100)).await,
        None,
        "still waiting for /slow/1"
    );

    answer(&bus, &in_flight).await;
    let (topic, payload) = device.next_message(DEADLINE).await.unwrap();
    assert_eq!(topic, "kp1/av1/ext/tok-1/slow/1/status");
    assert_eq!(payload.as_ref(), b"{\"done\":true}");
    assert_eq!(
        device.ended(DEADLINE).await,
        Some(Ended::Disconnect(DisconnectReasonCode::ServerShuttingDown))
    );
    let event = tokio::time::timeout(DEADLINE, disconnected.next())
        .await
        .unwrap()
        .unwrap();
    let event = DisconnectedEvent::from_avro(&event.payload).unwrap();
    assert_eq!(event.endpoints.keys().collect::<Vec<_>>(), ["ep-1"]);
    tokio::time::timeout(DEADLINE, shutdown).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_silent_extension_holds_the_drain_no_longer_than_the_drain_timeout() {
    let mut kpc_config = config(ClientAuthMode::None);
    kpc_config.limits.drain_timeout_ms = 300;
    // Far beyond the test's deadline: only the drain timeout can end the wait.
    kpc_config.limits.request_timeout_ms = 600_000;
    let (_bus, kpc, mut requests) = setup(kpc_config).await;
    let mut device = Device5::connect(kpc.mqtt_addr().port(), "device").await;
    device
        .publish("kp1/av1/ext/tok-1/never/1", "{}", QoS::AtLeastOnce)
        .await;
    tokio::time::timeout(DEADLINE, requests.next())
        .await
        .unwrap()
        .unwrap();

    tokio::time::timeout(DEADLINE, kpc.shutdown())
        .await
        .expect("shutdown ends after the drain timeout");
    assert_eq!(
        device.ended(DEADLINE).await,
        Some(Ended::Disconnect(DisconnectReasonCode::ServerShuttingDown))
    );
}
