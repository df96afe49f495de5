//! The gateway against a scripted token provider and extension on the in-process bus: what it does
//! when extensions are silent, push without being asked, or the token provider is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::sample;
use kaa_blueprint::config::ClientAuthMode;
use kaa_bus::Bus;
use kaa_bus::metrics::Metrics;
use kaa_kpc::Kpc;
use kaa_protocol::avro::AvroRecord;
use kaa_protocol::ecap::{EndpointTokenValidationRequest, EndpointTokenValidationResponse};
use kaa_protocol::esp::{ClientData, ExtensionData};
use kaa_testkit::{DEADLINE, Device, eventually};
use rumqttc::QoS;
use serde_json::json;

const REQUEST_TIMEOUT_MS: u64 = 300;

async fn gateway(bus: &Bus) -> Kpc {
    gateway_with_metrics(bus, &Metrics::new()).await
}

async fn gateway_with_metrics(bus: &Bus, metrics: &Metrics) -> Kpc {
    let mut config = common::config(ClientAuthMode::None);
    config.limits.request_timeout_ms = REQUEST_TIMEOUT_MS;
    Kpc::start(config, bus.clone(), "kpc-test".into(), metrics)
        .await
        .unwrap()
}

/// Token provider: `tok-N` is endpoint `ep-N`; anything else is unknown.
async fn token_provider(bus: &Bus) {
    let mut requests = bus
        .subscribe("kaa.v1.service.cm.ecap.ep-token-request", Some("cm"))
        .await
        .unwrap();
    let bus = bus.clone();
    tokio::spawn(async move {
        while let Some(msg) = requests.next().await {
            let request = EndpointTokenValidationRequest::from_avro(&msg.payload).unwrap();
            assert_eq!(request.app_name, "app");
            let endpoint = request.token.strip_prefix("tok-").map(|n| format!("ep-{n}"));
            let response = EndpointTokenValidationResponse {
                correlation_id: request.correlation_id,
                status_code: if endpoint.is_some() { 200 } else { 404 },
                token_id: endpoint.clone(),
                endpoint_id: endpoint,
                ..Default::default()
            };
            bus.publish(msg.reply_to.as_deref().unwrap(), Bytes::from(response.to_avro()))
                .await
                .unwrap();
        }
    });
}

/// Extension `ext`: `/echo` answers with the payload, `/silent` never answers, `/push` answers
/// and then pushes an unsolicited `/pushed` message to the endpoint.
async fn extension(bus: &Bus) {
    let mut requests = bus
        .subscribe("kaa.v1.service.ext.esp.ClientData", Some("ext"))
        .await
        .unwrap();
    let bus = bus.clone();
    tokio::spawn(async move {
        while let Some(msg) = requests.next().await {
            let data = ClientData::from_avro(&msg.payload).unwrap();
            let reply_to = msg.reply_to.clone().unwrap();
            let answer = |correlation_id: String, resource_path: &str, request_id| ExtensionData {
                correlation_id,
                app_version_name: Some(data.app_version_name.clone()),
                extension_instance_name: Some("ext".into()),
                endpoint_id: data.endpoint_id.clone(),
                resource_path: resource_path.into(),
                request_id,
                payload: Some(data.payload.clone()),
                status_code: 200,
                ..Default::default()
            };
            match data.resource_path.as_str() {
                "/silent" => {}
                "/push" => {
                    let reply = answer(data.correlation_id.clone(), "/push", data.request_id);
                    bus.publish(&reply_to, Bytes::from(reply.to_avro()))
                        .await
                        .unwrap();
                    let push = answer("unsolicited".into(), "/pushed", None);
                    bus.publish(&reply_to, Bytes::from(push.to_avro())).await.unwrap();
                }
                _ => {
                    let reply = answer(data.correlation_id.clone(), &data.resource_path, data.request_id);
                    bus.publish(&reply_to, Bytes::from(reply.to_avro()))
                        .await
                        .unwrap();
                }
            }
        }
    });
}

#[tokio::test]
async fn a_silent_extension_gets_the_device_a_504_after_the_request_timeout() {
    let bus = Bus::in_process();
    token_provider(&bus).await;
    extension(&bus).await;
    let kpc = gateway(&bus).await;
    let mut device = Device::connect(kpc.mqtt_addr().port(), "d").await;

    let started = std::time::Instant::now();
    let (suffix, body) = device.request("kp1/av1/ext/tok-1/silent/5", "{}").await;
    assert_eq!(suffix, "/error");
    assert_eq!(body["statusCode"], 504);
    assert!(started.elapsed() >= Duration::from_millis(REQUEST_TIMEOUT_MS));

    // Without a request id the device asked for no answer, so a timeout says nothing either.
    device
        .publish("kp1/av1/ext/tok-1/silent", "{}", QoS::AtMostOnce)
        .await;
    let (suffix, body) = device
        .request("kp1/av1/ext/tok-1/echo/6", r#"{"after":"silence"}"#)
        .await;
    assert_eq!(
        (suffix.as_str(), body),
        ("/status", json!({ "after": "silence" }))
    );
    assert!(
        device
            .next_message(Duration::from_millis(2 * REQUEST_TIMEOUT_MS))
            .await
            .is_none()
    );
    kpc.shutdown().await;
}

#[tokio::test]
async fn metrics_count_connections_timeouts_pushes_and_unrouted_requests() {
    let bus = Bus::in_process();
    token_provider(&bus).await;
    extension(&bus).await;
    let metrics = Metrics::new();
    let kpc = gateway_with_metrics(&bus, &metrics).await;
    let mut device = Device::connect(kpc.mqtt_addr().port(), "d").await;
    let connections = r#"kaa_kpc_connections{transport="mqtt"}"#;
    assert_eq!(sample(&metrics.encode(), connections), 1.0);

    assert_eq!(
        device.request("kp1/av1/ext/tok-1/silent/1", "{}").await.0,
        "/error"
    );
    assert_eq!(
        device.request("kp1/av1/ext/tok-1/push/2", "{}").await.0,
        "/status"
    );
    let (topic, _) = device.next_message(DEADLINE).await.expect("the push");
    assert!(topic.ends_with("/pushed/status"), "{topic}");
    assert_eq!(device.request("kp1/av1/nope/tok-1/x/3", "{}").await.0, "/error");

    let text = metrics.encode();
    for (series, value) in [
        ("kaa_kpc_request_timeouts_total", 1.0),
        (
            r#"kaa_kpc_messages_total{extension="ext",outcome="forwarded"}"#,
            2.0,
        ),
        (r#"kaa_kpc_replies_total{extension="ext",kind="error"}"#, 1.0),
        (r#"kaa_kpc_replies_total{extension="ext",kind="status"}"#, 1.0),
        (r#"kaa_kpc_replies_total{extension="ext",kind="push"}"#, 1.0),
        (r#"kaa_kpc_request_duration_seconds_count{extension="ext"}"#, 1.0),
        (
            r#"kaa_kpc_messages_total{extension="unrouted",outcome="rejected_4xx"}"#,
            1.0,
        ),
        (r#"kaa_kpc_replies_total{extension="unrouted",kind="error"}"#, 1.0),
        ("kaa_kpc_dropped_messages_total", 0.0),
    ] {
        assert_eq!(sample(&text, series), value, "{series} in\n{text}");
    }

    device.client.disconnect().await.unwrap();
    eventually(DEADLINE, "the connection gauge back to 0", || async {
        (sample(&metrics.encode(), connections) == 0.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn pushes_reach_every_connection_of_the_endpoint_and_no_other() {
    let bus = Bus::in_process();
    token_provider(&bus).await;
    extension(&bus).await;
    let kpc = gateway(&bus).await;
    let port = kpc.mqtt_addr().port();
    let mut first = Device::connect(port, "first").await;
    let mut second = Device::connect(port, "second").await;
    let mut other = Device::connect(port, "other").await;
    // Both connections act for endpoint ep-1; `other` acts for ep-2.
    second.request("kp1/av1/ext/tok-1/echo/1", "{}").await;
    other.request("kp1/av1/ext/tok-2/echo/1", "{}").await;

    let (suffix, _) = first.request("kp1/av1/ext/tok-1/push/9", r#"{"n":1}"#).await;
    assert_eq!(suffix, "/status");
    for device in [&mut first, &mut second] {
        let (topic, payload) = device.next_message(DEADLINE).await.expect("the push");
        assert_eq!(topic, "kp1/av1/ext/tok-1/pushed/status");
        assert_eq!(payload, Bytes::from_static(br#"{"n":1}"#));
    }
    assert!(other.next_message(Duration::from_millis(200)).await.is_none());
    kpc.shutdown().await;
}

#[tokio::test]
async fn a_missing_token_provider_is_503_and_an_unknown_token_401() {
    let bus = Bus::in_process();
    extension(&bus).await;
    let kpc = gateway(&bus).await;
    let mut device = Device::connect(kpc.mqtt_addr().port(), "d").await;
    let (suffix, body) = device.request("kp1/av1/ext/tok-1/echo/1", "{}").await;
    assert_eq!(
        (suffix.as_str(), body["statusCode"].as_u64()),
        ("/error", Some(503))
    );

    token_provider(&bus).await;
    let (_, body) = device.request("kp1/av1/ext/nobody/echo/2", "{}").await;
    assert_eq!(body["statusCode"], 401);
    let (suffix, _) = device.request("kp1/av1/ext/tok-3/echo/3", "{}").await;
    assert_eq!(
        suffix, "/status",
        "the provider is consulted again once it is back"
    );
    kpc.shutdown().await;
}

#[tokio::test]
async fn shutdown_tells_mqtt5_clients_and_closes_everyone() {
    use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError, mqttbytes::v5::Packet};
    let bus = Bus::in_process();
    let kpc = gateway(&bus).await;
    let (_client, mut eventloop) =
        AsyncClient::new(MqttOptions::new("v5", "127.0.0.1", kpc.mqtt_addr().port()), 4);
    let connected = eventloop.poll().await.unwrap();
    assert!(
        matches!(connected, Event::Incoming(Packet::ConnAck(_))),
        "{connected:?}"
    );
    let shutdown = tokio::spawn(kpc.shutdown());
    let reason = tokio::time::timeout(DEADLINE, async {
        loop {
            match eventloop.poll().await {
                // rumqttc reports a server's DISCONNECT as an error carrying its reason code.
                Err(ConnectionError::MqttState(StateError::ServerDisconnect { reason_code, .. })) => {
                    return Some(reason_code);
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        reason,
        Some(rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::ServerShuttingDown)
    );
    tokio::time::timeout(DEADLINE, shutdown).await.unwrap().unwrap();
}
