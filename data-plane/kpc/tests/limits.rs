//! The limits that protect the gateway, one test each: what an MQTT 3.1.1 or 5 client sees when
//! it is exceeded (exact codes, through a raw rmqtt-codec client where rumqttc would hide them),
//! that the refusal is counted in `kaa_kpc_limit_refusals_total{limit}`, and that the gateway
//! keeps serving everyone within the limits.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::fmt::Debug;
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{FakeCm, Pki, TlsOutcome, echo_extension, sample, tls_connect};
use futures_util::{SinkExt, StreamExt};
use kaa_blueprint::config::{ClientAuthMode, ClientCertMode, KpcConfig, KpcLimits};
use kaa_bus::Bus;
use kaa_bus::metrics::Metrics;
use kaa_kpc::Kpc;
use kaa_protocol::avro::AvroRecord;
use kaa_protocol::esp::{ClientData, ExtensionData};
use kaa_testkit::{DEADLINE, Device, eventually};
use rmqtt_codec::types::{Protocol, Publish, QoS};
use rmqtt_codec::{v3, v5};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, Encoder, Framed};

/// A gateway on the in-process bus with client authentication off, `cm` knowing `tok-1`..`tok-3`
/// (endpoints `ep-1`..`ep-3`), and `limits` changed by `set`.
async fn gateway(bus: &Bus, set: impl FnOnce(&mut KpcLimits)) -> (Kpc, Metrics, FakeCm) {
    gateway_with(bus, |config| set(&mut config.limits)).await
}

async fn gateway_with(bus: &Bus, set: impl FnOnce(&mut KpcConfig)) -> (Kpc, Metrics, FakeCm) {
    let cm = FakeCm::start(bus).await;
    for n in 1..=3 {
        cm.add_token(&format!("tok-{n}"), &format!("ep-{n}"), &format!("tid-{n}"));
    }
    let mut config = common::config(ClientAuthMode::None);
    set(&mut config);
    let metrics = Metrics::new();
    let kpc = Kpc::start(config, bus.clone(), "kpc-test".into(), &metrics)
        .await
        .unwrap();
    (kpc, metrics, cm)
}

/// `kaa_kpc_limit_refusals_total{limit}` now.
fn refusals(metrics: &Metrics, limit: &str) -> f64 {
    sample(
        &metrics.encode(),
        &format!(r#"kaa_kpc_limit_refusals_total{{limit="{limit}"}}"#),
    )
}

/// Waits until the refusal counter of `limit` reads `expected`.
async fn refusals_reach(metrics: &Metrics, limit: &str, expected: f64) {
    eventually(DEADLINE, &format!("{expected} `{limit}` refusals"), || async {
        (refusals(metrics, limit) == expected).then_some(())
    })
    .await;
}

fn assert_429(body: &Value, naming: &str) {
    assert_eq!(body["statusCode"], 429, "{body}");
    let reason = body["reasonPhrase"].as_str().unwrap_or_default();
    assert!(reason.contains(naming), "the reason names `{naming}`: {body}");
}

// ---------------------------------------------------------------------------------------------
// A raw MQTT client: exact packets both ways.

type Raw<C> = Framed<TcpStream, C>;

/// The next packet, or `None` once the server closed the connection. Panics after [`DEADLINE`].
async fn next<C, P>(conn: &mut Raw<C>) -> Option<P>
where
    C: Decoder<Item = (P, u32)>,
    C::Error: Debug,
{
    match tokio::time::timeout(DEADLINE, conn.next()).await {
        Ok(Some(Ok((packet, _)))) => Some(packet),
        Ok(_) => None,
        Err(_) => panic!("neither a packet nor a close within {DEADLINE:?}"),
    }
}

async fn send<C, P>(conn: &mut Raw<C>, packet: P)
where
    C: Encoder<P>,
    C::Error: Debug,
{
    conn.send(packet).await.unwrap();
}

async fn v3_connect(port: u16, keep_alive: u16) -> (v3::ConnectAckReason, Raw<v3::Codec>) {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut conn = Framed::new(tcp, v3::Codec::new(1 << 20));
    let connect = v3::Connect {
        protocol: Protocol::default(),
        clean_session: true,
        keep_alive,
        last_will: None,
        client_id: "raw-v3".into(),
        username: None,
        password: None,
        cert: None,
    };
    send(&mut conn, v3::Packet::Connect(Box::new(connect))).await;
    match next(&mut conn).await {
        Some(v3::Packet::ConnectAck(ack)) => (ack.return_code, conn),
        other => panic!("expected a CONNACK, got {other:?}"),
    }
}

async fn v5_connect(port: u16, keep_alive: u16) -> (Box<v5::ConnectAck>, Raw<v5::Codec>) {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut conn = Framed::new(tcp, v5::Codec::new(1 << 20, 1 << 20));
    let connect = v5::Connect {
        keep_alive,
        client_id: "raw-v5".into(),
        ..Default::default()
    };
    send(&mut conn, v5::Packet::Connect(Box::new(connect))).await;
    match next(&mut conn).await {
        Some(v5::Packet::ConnectAck(ack)) => (ack, conn),
        other => panic!("expected a CONNACK, got {other:?}"),
    }
}

fn publish(topic: &str, payload: impl Into<Bytes>, qos: QoS, packet_id: u16, v5: bool) -> Box<Publish> {
    Box::new(Publish {
        dup: false,
        retain: false,
        qos,
        topic: topic.into(),
        packet_id: NonZeroU16::new(packet_id),
        payload: payload.into(),
        properties: v5.then(Default::default),
    })
}

/// Waits for the server to close the connection, reading (and dropping) anything it sends first.
async fn closed<C, P>(conn: &mut Raw<C>) -> Vec<P>
where
    C: Decoder<Item = (P, u32)>,
    C::Error: Debug,
{
    let mut before = Vec::new();
    while let Some(packet) = next(conn).await {
        before.push(packet);
    }
    before
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn connections_beyond_max_connections_are_refused_on_every_listener() {
    let bus = Bus::in_process();
    echo_extension(&bus).await;
    let pki = Pki::new("limits CA");
    let (kpc, metrics, _cm) = gateway_with(&bus, |c| {
        c.limits.max_connections = 2;
        c.mqtts = Some(pki.mqtts(ClientCertMode::None, ClientAuthMode::None));
    })
    .await;
    let port = kpc.mqtt_addr().port();
    let tls = kpc.mqtts_addr().unwrap();

    // One session on each listener: the limit is the replica's, not a listener's.
    let mut plain = Device::connect(port, "plain").await;
    let TlsOutcome::Connack(code, _secure) = tls_connect(tls, &pki, None, None).await else {
        panic!("the TLS client is refused")
    };
    assert_eq!(code, v3::ConnectAckReason::ConnectionAccepted);

    assert_eq!(
        Device::connack(port, None).await,
        rumqttc::ConnectReturnCode::ServiceUnavailable,
        "MQTT 3.1.1: 3 server unavailable"
    );
    let (ack, _) = v5_connect(port, 30).await;
    assert_eq!(
        ack.reason_code,
        v5::ConnectAckReason::QuotaExceeded,
        "MQTT 5: 0x97"
    );
    assert_eq!(
        tls_connect(tls, &pki, None, None).await.code(),
        Some(v3::ConnectAckReason::ServiceUnavailable)
    );
    refusals_reach(&metrics, "connections", 3.0).await;

    // The sessions within the limit are served; a session that ends frees its place.
    let (suffix, _) = plain.request("kp1/av1/ext/tok-1/echo/1", "{}").await;
    assert_eq!(suffix, "/status");
    plain.client.disconnect().await.unwrap();
    eventually(DEADLINE, "a place for a new connection", || async {
        Device::try_connect(port, "later", None).await.ok().map(drop)
    })
    .await;
    kpc.shutdown().await;
}

#[tokio::test]
async fn requests_beyond_max_in_flight_get_429_and_are_not_forwarded() {
    let bus = Bus::in_process();
    // An extension that holds every request until the test answers it.
    let mut held = bus
        .subscribe("kaa.v1.service.ext.esp.ClientData", Some("ext"))
        .await
        .unwrap();
    let (tx, mut requests) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(msg) = held.next().await {
            let _ = tx.send(msg);
        }
    });
    let (kpc, metrics, _cm) = gateway(&bus, |l| l.max_in_flight_per_connection = 2).await;
    let mut device = Device::connect(kpc.mqtt_addr().port(), "d").await;
    let other = Device::connect(kpc.mqtt_addr().port(), "other").await;

    device
        .publish("kp1/av1/ext/tok-1/held/1", "{}", rumqttc::QoS::AtLeastOnce)
        .await;
    device
        .publish("kp1/av1/ext/tok-1/held/2", "{}", rumqttc::QoS::AtLeastOnce)
        .await;
    let first = tokio::time::timeout(DEADLINE, requests.recv())
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(DEADLINE, requests.recv())
        .await
        .unwrap()
        .unwrap();

    let (suffix, body) = device.request("kp1/av1/ext/tok-1/held/3", "{}").await;
    assert_eq!(suffix, "/error");
    assert_429(&body, "maxInFlightPerConnection");
    assert!(
        requests.try_recv().is_err(),
        "the refused request was not forwarded"
    );
    refusals_reach(&metrics, "in_flight", 1.0).await;

    // The limit is per connection: another one still gets through.
    other
        .publish("kp1/av1/ext/tok-2/held/1", "{}", rumqttc::QoS::AtLeastOnce)
        .await;
    tokio::time::timeout(DEADLINE, requests.recv())
        .await
        .unwrap()
        .unwrap();

    // An answer frees its place.
    let data = ClientData::from_avro(&first.payload).unwrap();
    let answer = ExtensionData {
        correlation_id: data.correlation_id,
        status_code: 200,
        payload: Some(b"{}".to_vec()),
        ..Default::default()
    };
    bus.publish(first.reply_to.as_deref().unwrap(), Bytes::from(answer.to_avro()))
        .await
        .unwrap();
    let (topic, _) = device.next_message(DEADLINE).await.expect("the answer");
    assert_eq!(topic, "kp1/av1/ext/tok-1/held/1/status");
    device
        .publish("kp1/av1/ext/tok-1/held/4", "{}", rumqttc::QoS::AtLeastOnce)
        .await;
    let forwarded = tokio::time::timeout(DEADLINE, requests.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ClientData::from_avro(&forwarded.payload).unwrap().request_id,
        Some(4)
    );
    assert_eq!(refusals(&metrics, "in_flight"), 1.0);
    kpc.shutdown().await;
}

#[tokio::test]
async fn requests_over_the_publish_rate_get_429_while_acknowledgements_flow() {
    let bus = Bus::in_process();
    echo_extension(&bus).await;
    let (kpc, metrics, _cm) = gateway(&bus, |l| {
        l.max_publishes_per_second = 1;
        l.publish_burst = 3;
    })
    .await;
    let (code, mut conn) = v3_connect(kpc.mqtt_addr().port(), 30).await;
    assert_eq!(code, v3::ConnectAckReason::ConnectionAccepted);

    // Seven requests at once: five at QoS 1, two at QoS 2. The burst lets three through.
    const SENT: u16 = 7;
    for n in 1..=SENT {
        let qos = if n <= 5 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        let topic = format!("kp1/av1/ext/tok-1/echo/{n}");
        send(
            &mut conn,
            v3::Packet::Publish(publish(&topic, "{}", qos, n, false)),
        )
        .await;
    }
    let (mut acked, mut completed) = (Vec::new(), Vec::new());
    let (mut statuses, mut refused) = (0, 0);
    while acked.len() < 5 || completed.len() < 2 || statuses + refused < SENT {
        match next(&mut conn).await.expect("the connection stays open") {
            v3::Packet::PublishAck { packet_id } => acked.push(packet_id.get()),
            v3::Packet::PublishReceived { packet_id } => {
                send(&mut conn, v3::Packet::PublishRelease { packet_id }).await
            }
            v3::Packet::PublishComplete { packet_id } => completed.push(packet_id.get()),
            v3::Packet::Publish(reply) => {
                if reply.topic.ends_with("/status") {
                    statuses += 1;
                } else {
                    assert_429(
                        &serde_json::from_slice(&reply.payload).unwrap(),
                        "maxPublishesPerSecond",
                    );
                    refused += 1;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    acked.sort_unstable();
    completed.sort_unstable();
    assert_eq!(
        (acked, completed),
        (vec![1, 2, 3, 4, 5], vec![6, 7]),
        "refused or not, every PUBLISH is acknowledged"
    );
    // One token may have come back if this machine stalled for a second.
    assert!((3..=4).contains(&statuses), "{statuses} answered");
    assert_eq!(refusals(&metrics, "publish_rate"), f64::from(refused));
    kpc.shutdown().await;
}

#[tokio::test]
async fn a_connection_acts_for_at_most_max_tokens_and_keeps_its_own() {
    let bus = Bus::in_process();
    echo_extension(&bus).await;
    let (kpc, metrics, cm) = gateway(&bus, |l| l.max_tokens_per_connection = 2).await;
    let port = kpc.mqtt_addr().port();
    let mut gateway_device = Device::connect(port, "gateway-device").await;
    for token in ["tok-1", "tok-2"] {
        let (suffix, _) = gateway_device
            .request(&format!("kp1/av1/ext/{token}/echo/1"), "{}")
            .await;
        assert_eq!(suffix, "/status", "{token}");
    }
    let asked = cm.token_requests();

    let (suffix, body) = gateway_device.request("kp1/av1/ext/tok-3/echo/2", "{}").await;
    assert_eq!(suffix, "/error");
    assert_429(&body, "maxTokensPerConnection");
    assert_eq!(cm.token_requests(), asked, "the token provider was not asked");
    refusals_reach(&metrics, "tokens", 1.0).await;

    let (suffix, _) = gateway_device.request("kp1/av1/ext/tok-1/echo/3", "{}").await;
    assert_eq!(suffix, "/status", "the tokens it has keep working");
    let mut another = Device::connect(port, "another").await;
    let (suffix, _) = another.request("kp1/av1/ext/tok-3/echo/1", "{}").await;
    assert_eq!(suffix, "/status", "the limit is per connection");
    kpc.shutdown().await;
}

#[tokio::test]
async fn keepalive_is_capped_and_mqtt5_clients_are_told() {
    let bus = Bus::in_process();
    let (kpc, metrics, _cm) = gateway(&bus, |l| l.max_keepalive_secs = 1).await;
    let port = kpc.mqtt_addr().port();

    let (ack, _) = v5_connect(port, 1).await;
    assert_eq!(ack.server_keepalive_sec, None, "within the cap: not overridden");
    let started = Instant::now();
    let (ack, mut none) = v5_connect(port, 0).await;
    assert_eq!(ack.reason_code, v5::ConnectAckReason::Success);
    assert_eq!(ack.server_keepalive_sec, Some(1), "no keepalive gets the cap");
    let (ack, _) = v5_connect(port, 600).await;
    assert_eq!(ack.server_keepalive_sec, Some(1), "a longer one too");
    // MQTT 3.1.1 cannot be told: the cap is enforced silently.
    let (code, mut v3_none) = v3_connect(port, 0).await;
    assert_eq!(code, v3::ConnectAckReason::ConnectionAccepted);

    let goodbye = closed(&mut none).await;
    assert!(
        matches!(
            goodbye.as_slice(),
            [v5::Packet::Disconnect(d)] if d.reason_code == v5::DisconnectReasonCode::KeepAliveTimeout
        ),
        "{goodbye:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "closed by the keepalive, not at once"
    );
    assert!(closed(&mut v3_none).await.is_empty());
    refusals_reach(&metrics, "keepalive", 2.0).await;
    kpc.shutdown().await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_connect_timeout() {
    let bus = Bus::in_process();
    let (kpc, metrics, _cm) = gateway(&bus, |l| l.connect_timeout_ms = 300).await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(kpc.mqtt_addr()).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(DEADLINE, silent.read(&mut buf))
        .await
        .expect("the gateway closes a silent connection");
    assert!(matches!(read, Ok(0) | Err(_)), "closed without a word: {read:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(refusals(&metrics, "connect_timeout"), 1.0);
    // A client that does speak is still welcome.
    Device::connect(kpc.mqtt_addr().port(), "prompt").await;
    kpc.shutdown().await;
}

#[tokio::test]
async fn payloads_over_max_payload_and_packets_over_max_packet_are_counted() {
    let bus = Bus::in_process();
    echo_extension(&bus).await;
    let (kpc, metrics, _cm) = gateway(&bus, |l| {
        l.max_payload_bytes = 16;
        l.max_packet_bytes = 1024;
    })
    .await;
    let port = kpc.mqtt_addr().port();
    let mut device = Device::connect(port, "d").await;
    let (_, body) = device.request("kp1/av1/ext/tok-1/echo/1", vec![b' '; 17]).await;
    assert_eq!(body["statusCode"], 413);
    assert_eq!(refusals(&metrics, "payload"), 1.0);

    let (_, mut conn) = v5_connect(port, 30).await;
    let topic = "kp1/av1/ext/tok-1/echo/2";
    let big = publish(topic, vec![0u8; 2048], QoS::AtMostOnce, 0, true);
    send(&mut conn, v5::Packet::Publish(big)).await;
    let goodbye = closed(&mut conn).await;
    assert!(
        matches!(
            goodbye.as_slice(),
            [v5::Packet::Disconnect(d)] if d.reason_code == v5::DisconnectReasonCode::PacketTooLarge
        ),
        "{goodbye:?}"
    );
    refusals_reach(&metrics, "packet", 1.0).await;
    let (suffix, _) = device.request("kp1/av1/ext/tok-1/echo/3", "{}").await;
    assert_eq!(suffix, "/status", "everyone else is still served");
    kpc.shutdown().await;
}

#[tokio::test]
async fn http_requests_beyond_max_http_in_flight_get_429() {
    let bus = Bus::in_process();
    let (kpc, metrics, _cm) = gateway(&bus, |l| l.max_http_requests_in_flight = 1).await;
    let gateway = kpc.gateway();
    let held = gateway.admit_http_request().unwrap();
    let refused = gateway.admit_http_request().unwrap_err();
    assert_eq!(refused.status_code, 429);
    assert!(
        refused.reason_phrase.contains("maxHttpRequestsInFlight"),
        "{refused:?}"
    );
    assert_eq!(refusals(&metrics, "http_in_flight"), 1.0);

    // The transport holds the place until its request is answered; then it is free.
    drop(held);
    let again = gateway.admit_http_request();
    assert!(again.is_ok(), "{again:?}");
    kpc.shutdown().await;
}
