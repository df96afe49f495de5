//! Bad input gets a clear 1/KP error, loses nothing, and never stops the platform.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::io::{Read, Write};
use std::time::Duration;

use kaa_e2e::{DEADLINE, Platform};
use rumqttc::QoS;
use serde_json::{Value, json};

const AV: &str = "demo_application_v1";

/// Publishes and returns the error reply's topic suffix, statusCode and reasonPhrase.
async fn error_for(device: &mut kaa_e2e::Device, topic: &str, payload: &[u8]) -> (String, u64, String) {
    device.publish(topic, payload.to_vec(), QoS::AtLeastOnce).await;
    let (reply, body) = device
        .next_message(DEADLINE)
        .await
        .unwrap_or_else(|| panic!("no reply to {topic}"));
    let body: Value = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("error payload is JSON: {e}"));
    let fields: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        fields,
        ["reasonPhrase", "statusCode"],
        "1/KP error payload has exactly these fields"
    );
    let suffix = reply.strip_prefix(topic).unwrap_or(&reply).to_owned();
    (
        suffix,
        body["statusCode"].as_u64().unwrap(),
        body["reasonPhrase"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn bad_requests_get_documented_errors_and_the_platform_keeps_serving() {
    let platform = Platform::up().await;
    platform.register(AV, "good-token").await;
    let mut device = platform.device("bad-input").await;

    let cases: &[(&str, &[u8], u64, &str)] = &[
        ("kp1/demo_application_v1/epmx", b"{}", 400, "path"),
        ("kp1/demo_application_v1//good-token/get/1", b"", 400, "empty"),
        ("kp2/demo_application_v1/epmx/good-token/get/1", b"", 400, "kp1"),
        (
            "kp1/no_such_version/epmx/good-token/get/1",
            b"",
            404,
            "no_such_version",
        ),
        (
            "kp1/demo_application_v1/ghost/good-token/json/1",
            b"{}",
            404,
            "ghost",
        ),
        (
            "kp1/demo_application_v1/epmx/unknown-token/get/1",
            b"",
            401,
            "token",
        ),
        (
            "kp1/demo_application_v1/epmx/good-token/update/keys/2",
            b"{not json",
            400,
            "JSON",
        ),
        (
            "kp1/demo_application_v1/epmx/good-token/update/keys/3",
            b"[1,2]",
            400,
            "object",
        ),
        (
            "kp1/demo_application_v1/epmx/good-token/update/keys/4",
            br#"{"bad key!":1}"#,
            400,
            "bad key!",
        ),
        (
            "kp1/demo_application_v1/epmx/good-token/no/such/resource/5",
            b"",
            404,
            "resource",
        ),
    ];
    for (topic, payload, code, hint) in cases {
        let (suffix, status, reason) = error_for(&mut device, topic, payload).await;
        assert_eq!((suffix.as_str(), status), ("/error", *code), "{topic}: {reason}");
        assert!(
            reason.to_lowercase().contains(&hint.to_lowercase()),
            "{topic}: reason `{reason}` should mention `{hint}`"
        );
    }

    // A 1 MiB payload is refused with 413 and the connection stays usable.
    let big = vec![b' '; 1024 * 1024];
    let (suffix, status, _) = error_for(
        &mut device,
        "kp1/demo_application_v1/epmx/good-token/update/keys/6",
        &big,
    )
    .await;
    assert_eq!((suffix.as_str(), status), ("/error", 413));

    // A client may not publish replies.
    let (_, status, _) = error_for(
        &mut device,
        "kp1/demo_application_v1/epmx/good-token/get/7/status",
        b"",
    )
    .await;
    assert_eq!(status, 400);

    // Nothing was lost or corrupted: a good request still works on the same connection.
    let (suffix, body) = device
        .request(
            "kp1/demo_application_v1/epmx/good-token/update/keys/8",
            r#"{"ok":true}"#,
        )
        .await;
    assert_eq!((suffix.as_str(), body), ("/status", Value::Null));
    let (_, body) = device
        .request("kp1/demo_application_v1/epmx/good-token/get/9", "")
        .await;
    assert_eq!(body, json!({ "ok": true }));
    assert_eq!(platform.get("/health").await.0, 200);
}

#[tokio::test]
async fn a_client_vanishing_mid_request_does_not_hurt_anyone() {
    let platform = Platform::up().await;
    platform.register(AV, "ghost-token").await;
    // Raw MQTT 3.1.1: CONNECT, a QoS 1 request, then the socket closes before any reply.
    for _ in 0..20 {
        let mut socket = std::net::TcpStream::connect(("127.0.0.1", platform.mqtt_port)).unwrap();
        socket.write_all(&connect_packet("ghost")).unwrap();
        // Read the CONNACK first: closing with unread data resets the connection, and a reset makes
        // the server discard the request unread. Here the request is read, then the client is gone.
        let mut connack = [0u8; 4];
        socket.read_exact(&mut connack).unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK accepted");
        socket
            .write_all(&publish_packet(
                "kp1/demo_application_v1/epmx/ghost-token/update/keys/1",
                b"{\"x\":1}",
            ))
            .unwrap();
        drop(socket);
    }
    // Garbage instead of MQTT, and a connection that never sends CONNECT at all.
    let mut garbage = std::net::TcpStream::connect(("127.0.0.1", platform.mqtt_port)).unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let _silent = std::net::TcpStream::connect(("127.0.0.1", platform.mqtt_port)).unwrap();

    let mut device = platform.device("after-ghosts").await;
    let (suffix, body) = device
        .request("kp1/demo_application_v1/epmx/ghost-token/get/2", "")
        .await;
    assert_eq!((suffix.as_str(), body), ("/status", json!({ "x": 1 })));
    assert_eq!(platform.get("/health").await.0, 200);
    assert!(!platform.processes[0].log().contains("panicked"));
    assert!(
        device.next_message(Duration::from_millis(200)).await.is_none(),
        "no stray replies"
    );
}

fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0b10, 0, 30];
    body.extend((client_id.len() as u16).to_be_bytes());
    body.extend(client_id.as_bytes());
    frame(0x10, body)
}

fn publish_packet(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend(topic.as_bytes());
    body.extend(1u16.to_be_bytes()); // packet id
    body.extend(payload);
    frame(0x32, body) // PUBLISH, QoS 1
}

fn frame(header: u8, body: Vec<u8>) -> Vec<u8> {
    assert!(body.len() < 128, "short packets only");
    let mut packet = vec![header, body.len() as u8];
    packet.extend(body);
    packet
}
