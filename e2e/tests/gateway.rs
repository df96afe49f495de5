//! Gateway routing: one connection acting for several endpoints, replies only to the asker,
//! MQTT 5 and QoS handling.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use kaa_e2e::{DEADLINE, Platform};
use rumqttc::QoS;
use serde_json::json;

const AV: &str = "demo_application_v1";

#[tokio::test]
async fn a_gateway_connection_gets_each_endpoints_reply_and_nobody_else_does() {
    let platform = Platform::up().await;
    for token in ["gw-a", "gw-b", "gw-c"] {
        platform.register(AV, token).await;
    }
    let mut gateway = platform.device("gateway").await;
    let mut bystander = platform.device("bystander").await;
    // A bystander that even subscribes to everything must not see the gateway's replies.
    bystander
        .client
        .subscribe("kp1/#", QoS::AtMostOnce)
        .await
        .unwrap();

    for (i, token) in ["gw-a", "gw-b", "gw-c"].iter().enumerate() {
        let topic = format!("kp1/{AV}/epmx/{token}/update/keys/{}", i + 1);
        gateway
            .publish(&topic, json!({ "slot": i }).to_string(), QoS::AtLeastOnce)
            .await;
    }
    let mut replies = Vec::new();
    for _ in 0..3 {
        let (topic, _) = gateway
            .next_message(DEADLINE)
            .await
            .expect("a reply per endpoint");
        replies.push(topic);
    }
    replies.sort();
    assert_eq!(
        replies,
        [
            format!("kp1/{AV}/epmx/gw-a/update/keys/1/status"),
            format!("kp1/{AV}/epmx/gw-b/update/keys/2/status"),
            format!("kp1/{AV}/epmx/gw-c/update/keys/3/status"),
        ]
    );
    // Each endpoint got its own metadata.
    for (i, token) in ["gw-a", "gw-b", "gw-c"].iter().enumerate() {
        let (_, body) = gateway
            .request(&format!("kp1/{AV}/epmx/{token}/get/{}", 10 + i), "")
            .await;
        assert_eq!(body, json!({ "slot": i }));
    }

    // The bystander's own request is answered; it must be the first and only thing it received.
    platform.register(AV, "bystander-token").await;
    let (suffix, _) = bystander
        .request(&format!("kp1/{AV}/epmx/bystander-token/get/keys/5"), "")
        .await;
    assert_eq!(suffix, "/status");
    assert!(bystander.next_message(Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn replies_come_back_at_the_request_qos_and_without_request_id_only_errors_do() {
    let platform = Platform::up().await;
    platform.register(AV, "qos-token").await;
    let mut device = platform.device("qos").await;

    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let topic = format!("kp1/{AV}/epmx/qos-token/get/keys/{}", qos as u8 + 1);
        device.publish(&topic, "", qos).await;
        let (reply, _) = device.next_message(DEADLINE).await.expect("reply");
        assert_eq!(reply, format!("{topic}/status"));
    }

    // No request id: a successful update is acknowledged by MQTT only...
    device
        .publish(
            &format!("kp1/{AV}/epmx/qos-token/update/keys"),
            r#"{"a":1}"#,
            QoS::AtLeastOnce,
        )
        .await;
    // ...but a failing one is answered on /error.
    device
        .publish(
            &format!("kp1/{AV}/epmx/qos-token/update/keys"),
            "not json",
            QoS::AtLeastOnce,
        )
        .await;
    let (topic, payload) = device.next_message(DEADLINE).await.expect("an error reply");
    assert_eq!(topic, format!("kp1/{AV}/epmx/qos-token/update/keys/error"));
    let error: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(error["statusCode"], 400);
    // And the first update did happen. Without a request id nothing says when it is done (EPMX
    // handles requests concurrently), so poll for it.
    let started = std::time::Instant::now();
    for request_id in 1.. {
        let (_, body) = device
            .request(&format!("kp1/{AV}/epmx/qos-token/get/{request_id}"), "")
            .await;
        if body == json!({ "a": 1 }) {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the update without request id was never applied: {body}"
        );
    }
}

#[tokio::test]
async fn mqtt5_clients_are_served_too() {
    use rumqttc::v5::{AsyncClient, Event, MqttOptions, mqttbytes::v5::Packet};
    let platform = Platform::up().await;
    platform.register(AV, "v5-token").await;
    let (client, mut eventloop) =
        AsyncClient::new(MqttOptions::new("v5", "127.0.0.1", platform.mqtt_port), 16);
    let topic = format!("kp1/{AV}/epmx/v5-token/update/keys/3");
    client
        .publish(
            topic.clone(),
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            r#"{"v":5}"#,
        )
        .await
        .unwrap();
    let reply = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = eventloop.poll().await.expect("connection stays up")
            {
                return String::from_utf8(p.topic.to_vec()).unwrap();
            }
        }
    })
    .await
    .expect("a reply");
    assert_eq!(reply, format!("{topic}/status"));
}

#[tokio::test]
async fn concurrent_updates_from_one_device_are_all_applied() {
    let platform = Platform::up().await;
    platform.register(AV, "busy-token").await;
    let mut device = platform.device("busy").await;
    // 100 requests in flight at once for one endpoint, each writing its own key.
    for i in 1..=100 {
        let topic = format!("kp1/{AV}/epmx/busy-token/update/keys/{i}");
        device
            .publish(
                &topic,
                json!({ format!("k{i}"): i }).to_string(),
                QoS::AtLeastOnce,
            )
            .await;
    }
    let mut ok = 0;
    while ok < 100 {
        let (topic, payload) = device.next_message(DEADLINE).await.expect("a reply per request");
        assert!(
            topic.ends_with("/status"),
            "{topic}: {}",
            String::from_utf8_lossy(&payload)
        );
        ok += 1;
    }
    let (_, keys) = device
        .request(&format!("kp1/{AV}/epmx/busy-token/get/keys/101"), "")
        .await;
    assert_eq!(
        keys.as_array().map(Vec::len),
        Some(100),
        "every update was applied: {keys}"
    );
}
