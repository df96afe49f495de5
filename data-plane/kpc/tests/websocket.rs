//! MQTT over WebSocket and over WebSocket with TLS: the same sessions as over TCP behind an
//! upgrade that checks the path and the `mqtt` subprotocol, with MQTT packets free to span or
//! share WebSocket messages.
//!
//! The client is raw on purpose (tokio-tungstenite + rmqtt-codec): it controls exactly how
//! packets map to WebSocket messages, and it speaks MQTT 3.1.1 and 5 over TCP too, so that the
//! two transports are compared with the same client.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use common::{ClientCert, FakeCm, Pki, config, echo_extension};
use futures_util::{SinkExt, StreamExt};
use kaa_blueprint::config::{ClientAuthMode, ClientCertMode, KpcConfig, WsSettings, WssSettings};
use kaa_bus::Bus;
use kaa_bus::metrics::Metrics;
use kaa_kpc::Kpc;
use kaa_testkit::{DEADLINE, eventually};
use rmqtt_codec::types::{Protocol, Publish, QoS};
use rmqtt_codec::{v3, v5};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{WebSocketStream, client_async};
use tokio_util::codec::{Decoder, Encoder};

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Bytes to and from the gateway: straight over TCP, or as WebSocket messages.
enum Transport {
    Tcp(TcpStream),
    Ws(Box<WebSocketStream<Box<dyn Io>>>),
}

impl Transport {
    /// Sends `bytes`: over WebSocket, as one binary message.
    async fn send(&mut self, bytes: Bytes) {
        match self {
            Transport::Tcp(tcp) => tcp.write_all(&bytes).await.unwrap(),
            Transport::Ws(ws) => ws.send(Message::Binary(bytes)).await.unwrap(),
        }
    }

    /// The next bytes from the gateway; `None` once the connection is closed.
    async fn recv(&mut self) -> Option<Bytes> {
        match self {
            Transport::Tcp(tcp) => {
                let mut buf = vec![0; 4096];
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => None,
                    Ok(n) => Some(Bytes::copy_from_slice(&buf[..n])),
                }
            }
            Transport::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Binary(data))) => return Some(data),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Text(t))) => panic!("the gateway sent text: {t}"),
                    Some(Ok(Message::Close(_) | Message::Frame(_))) | Some(Err(_)) | None => return None,
                }
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V3,
    V5,
}

/// A minimal MQTT client (CONNECT, QoS 0 PUBLISH, answers) over a [`Transport`].
struct Client {
    transport: Transport,
    version: Version,
    v3: v3::Codec,
    v5: v5::Codec,
    unread: BytesMut,
}

/// What the gateway answered a CONNECT: accepted, or the refusal's reason.
#[derive(Debug, PartialEq, Eq)]
enum Connack {
    Accepted,
    Refused(String),
}

impl Client {
    fn new(transport: Transport, version: Version) -> Client {
        Client {
            transport,
            version,
            v3: v3::Codec::new(1 << 20),
            v5: v5::Codec::new(1 << 20, 1 << 20),
            unread: BytesMut::new(),
        }
    }

    fn connect_packet(&mut self, credentials: Option<(&str, &str)>) -> Bytes {
        let username = credentials.map(|(u, _)| u.into());
        let password = credentials.map(|(_, p)| Bytes::copy_from_slice(p.as_bytes()));
        match self.version {
            Version::V3 => self.encode_v3(v3::Packet::Connect(Box::new(v3::Connect {
                protocol: Protocol::default(),
                clean_session: true,
                keep_alive: 30,
                last_will: None,
                client_id: "ws-client".into(),
                username,
                password,
                cert: None,
            }))),
            Version::V5 => self.encode_v5(v5::Packet::Connect(Box::new(v5::Connect {
                clean_start: true,
                keep_alive: 30,
                client_id: "ws-client-5".into(),
                username,
                password,
                ..v5::Connect::default()
            }))),
        }
    }

    fn publish_packet(&mut self, topic: &str, payload: &str) -> Bytes {
        let publish = Box::new(Publish {
            dup: false,
            retain: false,
            qos: QoS::AtMostOnce,
            topic: topic.into(),
            packet_id: None,
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            properties: None,
        });
        match self.version {
            Version::V3 => self.encode_v3(v3::Packet::Publish(publish)),
            Version::V5 => self.encode_v5(v5::Packet::Publish(publish)),
        }
    }

    fn encode_v3(&mut self, packet: v3::Packet) -> Bytes {
        let mut buf = BytesMut::new();
        self.v3.encode(packet, &mut buf).unwrap();
        buf.freeze()
    }

    fn encode_v5(&mut self, packet: v5::Packet) -> Bytes {
        let mut buf = BytesMut::new();
        self.v5.encode(packet, &mut buf).unwrap();
        buf.freeze()
    }

    /// CONNECT and its CONNACK.
    async fn connect(&mut self, credentials: Option<(&str, &str)>) -> Connack {
        let connect = self.connect_packet(credentials);
        self.transport.send(connect).await;
        self.connack().await
    }

    async fn connack(&mut self) -> Connack {
        match self.next().await {
            Some(Incoming::Connack(ack)) => ack,
            other => panic!("expected a CONNACK, got {other:?}"),
        }
    }

    /// A QoS 0 request; its answer's topic suffix and JSON body.
    async fn request(&mut self, topic: &str, payload: &str) -> (String, Value) {
        let publish = self.publish_packet(topic, payload);
        self.transport.send(publish).await;
        self.answer(topic).await
    }

    async fn answer(&mut self, topic: &str) -> (String, Value) {
        match self.next().await {
            Some(Incoming::Publish(reply, payload)) => {
                assert!(reply.starts_with(topic), "{reply} is not under {topic}");
                let body = serde_json::from_slice(&payload).unwrap_or(Value::Null);
                (reply[topic.len()..].to_owned(), body)
            }
            other => panic!("expected an answer to {topic}, got {other:?}"),
        }
    }

    /// The next packet from the gateway (within the deadline); `None` once closed.
    async fn next(&mut self) -> Option<Incoming> {
        tokio::time::timeout(DEADLINE, async {
            loop {
                if let Some(packet) = self.decode() {
                    return Some(packet);
                }
                let bytes = self.transport.recv().await?;
                self.unread.extend_from_slice(&bytes);
            }
        })
        .await
        .expect("a packet or the end of the connection in time")
    }

    fn decode(&mut self) -> Option<Incoming> {
        match self.version {
            Version::V3 => match self.v3.decode(&mut self.unread).unwrap()? {
                (v3::Packet::ConnectAck(ack), _) => Some(Incoming::Connack(match ack.return_code {
                    v3::ConnectAckReason::ConnectionAccepted => Connack::Accepted,
                    code => Connack::Refused(format!("{code:?}")),
                })),
                (v3::Packet::Publish(p), _) => Some(Incoming::Publish(p.topic.to_string(), p.payload)),
                (other, _) => Some(Incoming::Other(format!("{other:?}"))),
            },
            Version::V5 => match self.v5.decode(&mut self.unread).unwrap()? {
                (v5::Packet::ConnectAck(ack), _) => Some(Incoming::Connack(match ack.reason_code {
                    v5::ConnectAckReason::Success => Connack::Accepted,
                    code => Connack::Refused(format!("{code:?}")),
                })),
                (v5::Packet::Publish(p), _) => Some(Incoming::Publish(p.topic.to_string(), p.payload)),
                (other, _) => Some(Incoming::Other(format!("{other:?}"))),
            },
        }
    }

    /// Waits until the gateway closes the connection, skipping anything it still sends.
    async fn closed(&mut self) {
        while self.next().await.is_some() {}
    }
}

#[derive(Debug)]
enum Incoming {
    Connack(Connack),
    Publish(String, Bytes),
    Other(#[expect(dead_code, reason = "shown in failure messages")] String),
}

/// The WebSocket upgrade to `path` over `stream`, offering `protocol`.
async fn upgrade(
    stream: Box<dyn Io>,
    addr: SocketAddr,
    path: &str,
    protocol: Option<&str>,
) -> Result<WebSocketStream<Box<dyn Io>>, WsError> {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(protocol) = protocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(protocol).unwrap());
    }
    let (ws, response) = client_async(request, stream).await?;
    assert_eq!(response.headers()["Sec-WebSocket-Protocol"], "mqtt");
    Ok(ws)
}

async fn ws(addr: SocketAddr) -> Transport {
    let tcp = TcpStream::connect(addr).await.unwrap();
    Transport::Ws(Box::new(
        upgrade(Box::new(tcp), addr, "/mqtt", Some("mqtt")).await.unwrap(),
    ))
}

/// TLS trusting `pki`'s CA (with an optional client certificate), then the upgrade.
async fn wss(addr: SocketAddr, pki: &Pki, client: Option<&ClientCert>) -> Transport {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let tls = match client {
        Some(c) => builder
            .with_client_auth_cert(vec![c.cert.clone()], c.key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let stream = TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap();
    let ws = upgrade(Box::new(stream), addr, "/mqtt", Some("mqtt")).await;
    Transport::Ws(Box::new(ws.unwrap()))
}

fn ws_settings(auth: ClientAuthMode) -> WsSettings {
    WsSettings {
        listen: "127.0.0.1:0".into(),
        path: "/mqtt".into(),
        auth,
    }
}

async fn start(bus: &Bus, cfg: KpcConfig, metrics: &Metrics) -> Kpc {
    Kpc::start(cfg, bus.clone(), "kpc-ws".into(), metrics)
        .await
        .unwrap()
}

/// A platform with the echo extension, user `meter`/`pw` and token `tok-1`.
async fn platform() -> (Bus, FakeCm) {
    let bus = Bus::in_process();
    let cm = FakeCm::start(&bus).await;
    cm.add_user("meter", "pw", "cred-pw");
    cm.add_token("tok-1", "ep-1", "tid-1");
    echo_extension(&bus).await;
    (bus, cm)
}

#[tokio::test]
async fn mqtt_3_and_5_over_websocket_get_the_same_answers_as_over_tcp() {
    let (bus, _cm) = platform().await;
    let mut cfg = config(ClientAuthMode::Password);
    cfg.ws = Some(ws_settings(ClientAuthMode::Password));
    let metrics = Metrics::new();
    let kpc = start(&bus, cfg, &metrics).await;
    let ws_addr = kpc.ws_addr().expect("a WebSocket listener");

    for version in [Version::V3, Version::V5] {
        let mut answers = Vec::new();
        for over_ws in [false, true] {
            let transport = if over_ws {
                ws(ws_addr).await
            } else {
                Transport::Tcp(TcpStream::connect(kpc.mqtt_addr()).await.unwrap())
            };
            let mut client = Client::new(transport, version);
            let refused = client.connect(Some(("meter", "wrong"))).await;
            assert!(matches!(refused, Connack::Refused(_)), "{version:?}: {refused:?}");

            let transport = if over_ws {
                ws(ws_addr).await
            } else {
                Transport::Tcp(TcpStream::connect(kpc.mqtt_addr()).await.unwrap())
            };
            let mut client = Client::new(transport, version);
            assert_eq!(client.connect(Some(("meter", "pw"))).await, Connack::Accepted);
            if over_ws {
                let gauge = r#"kaa_kpc_connections{transport="ws"} 1"#;
                eventually(DEADLINE, "the ws session is counted", || async {
                    metrics.encode().contains(gauge).then_some(())
                })
                .await;
            }
            answers.push((
                refused,
                client.request("kp1/av1/ext/tok-1/echo/1", r#"{"n":1}"#).await,
                client.request("kp1/av1/ext/unknown/echo/2", "{}").await,
                client.request("kp1/av1/nope/tok-1/echo/3", "{}").await,
            ));
        }
        assert_eq!(answers[0], answers[1], "{version:?}: TCP vs WebSocket");
        let (_, echo, unknown, unrouted) = &answers[1];
        assert_eq!(echo, &("/status".to_owned(), json!({ "n": 1 })));
        assert_eq!(
            (unknown.0.as_str(), &unknown.1["statusCode"]),
            ("/error", &json!(401))
        );
        assert_eq!(
            (unrouted.0.as_str(), &unrouted.1["statusCode"]),
            ("/error", &json!(404))
        );
    }
    kpc.shutdown().await;
}

#[tokio::test]
async fn secure_websocket_takes_registered_certificates_and_passwords() {
    let (bus, cm) = platform().await;
    let pki = Pki::new("WS CA");
    let registered = pki.client_cert(77, (2020, 2100));
    let unknown = pki.client_cert(78, (2020, 2100));
    cm.add_cert(&pki.issuer, "77", "cred-cert");
    let mut cfg = config(ClientAuthMode::Password);
    cfg.wss = Some(WssSettings {
        listen: "127.0.0.1:0".into(),
        path: "/mqtt".into(),
        tls: pki.tls(ClientCertMode::Optional),
        auth: ClientAuthMode::PasswordOrCertificate,
    });
    let metrics = Metrics::new();
    let kpc = start(&bus, cfg, &metrics).await;
    let addr = kpc.wss_addr().expect("a WSS listener");

    let mut by_cert = Client::new(wss(addr, &pki, Some(&registered)).await, Version::V5);
    assert_eq!(by_cert.connect(None).await, Connack::Accepted);
    let (suffix, body) = by_cert
        .request("kp1/av1/ext/tok-1/echo/1", r#"{"over":"wss"}"#)
        .await;
    assert_eq!((suffix.as_str(), &body), ("/status", &json!({ "over": "wss" })));
    let gauge = r#"kaa_kpc_connections{transport="wss"} 1"#;
    eventually(DEADLINE, "the wss session is counted", || async {
        metrics.encode().contains(gauge).then_some(())
    })
    .await;

    let mut by_password = Client::new(wss(addr, &pki, None).await, Version::V3);
    assert_eq!(
        by_password.connect(Some(("meter", "pw"))).await,
        Connack::Accepted
    );
    let (suffix, _) = by_password.request("kp1/av1/ext/tok-1/echo/2", "{}").await;
    assert_eq!(suffix, "/status");

    let mut stranger = Client::new(wss(addr, &pki, Some(&unknown)).await, Version::V3);
    assert_eq!(
        stranger.connect(None).await,
        Connack::Refused("NotAuthorized".into())
    );
    kpc.shutdown().await;
}

#[tokio::test]
async fn the_upgrade_needs_the_path_and_the_mqtt_subprotocol() {
    let (bus, _cm) = platform().await;
    let mut cfg = config(ClientAuthMode::None);
    cfg.ws = Some(ws_settings(ClientAuthMode::None));
    let kpc = start(&bus, cfg, &Metrics::new()).await;
    let addr = kpc.ws_addr().unwrap();

    let status = |result: Result<_, WsError>| match result {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected a refusal"),
    };
    let tcp = Box::new(TcpStream::connect(addr).await.unwrap());
    assert_eq!(status(upgrade(tcp, addr, "/other", Some("mqtt")).await), 404);
    let tcp = Box::new(TcpStream::connect(addr).await.unwrap());
    assert_eq!(status(upgrade(tcp, addr, "/mqtt", None).await), 400);
    let tcp = Box::new(TcpStream::connect(addr).await.unwrap());
    assert_eq!(status(upgrade(tcp, addr, "/mqtt", Some("wamp")).await), 400);
    // Offered among others, `mqtt` is chosen (`upgrade` checks the answer selects it).
    let tcp = Box::new(TcpStream::connect(addr).await.unwrap());
    let ws = upgrade(tcp, addr, "/mqtt", Some("mqttv3.1, mqtt")).await.unwrap();
    let mut client = Client::new(Transport::Ws(Box::new(ws)), Version::V3);
    assert_eq!(client.connect(None).await, Connack::Accepted);
    kpc.shutdown().await;
}

#[tokio::test]
async fn packets_may_span_and_share_websocket_messages() {
    let (bus, _cm) = platform().await;
    let mut cfg = config(ClientAuthMode::None);
    cfg.ws = Some(ws_settings(ClientAuthMode::None));
    let kpc = start(&bus, cfg, &Metrics::new()).await;
    let mut client = Client::new(ws(kpc.ws_addr().unwrap()).await, Version::V5);

    // CONNECT in two messages, split inside the fixed header.
    let connect = client.connect_packet(None);
    client.transport.send(connect.slice(..1)).await;
    client.transport.send(connect.slice(1..)).await;
    assert_eq!(client.connack().await, Connack::Accepted);

    // Two PUBLISHes in one message, and a third split across two.
    let first = client.publish_packet("kp1/av1/ext/tok-1/echo/1", r#"{"n":1}"#);
    let second = client.publish_packet("kp1/av1/ext/tok-1/echo/2", r#"{"n":2}"#);
    let third = client.publish_packet("kp1/av1/ext/tok-1/echo/3", r#"{"n":3}"#);
    client.transport.send([first, second].concat().into()).await;
    client.transport.send(third.slice(..third.len() / 2)).await;
    // A ping between the halves is answered and does not disturb the packet.
    let Transport::Ws(ws) = &mut client.transport else {
        unreachable!()
    };
    ws.send(Message::Ping(Bytes::from_static(b"hi"))).await.unwrap();
    client.transport.send(third.slice(third.len() / 2..)).await;

    let mut answers = Vec::new();
    for _ in 0..3 {
        let Some(Incoming::Publish(topic, payload)) = client.next().await else {
            panic!("expected three answers")
        };
        answers.push((topic, serde_json::from_slice::<Value>(&payload).unwrap()));
    }
    answers.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        answers,
        (1..=3)
            .map(|n| (format!("kp1/av1/ext/tok-1/echo/{n}/status"), json!({ "n": n })))
            .collect::<Vec<_>>()
    );
    kpc.shutdown().await;
}

#[tokio::test]
async fn a_text_message_closes_the_connection() {
    let (bus, _cm) = platform().await;
    let mut cfg = config(ClientAuthMode::None);
    cfg.ws = Some(ws_settings(ClientAuthMode::None));
    let kpc = start(&bus, cfg, &Metrics::new()).await;
    let mut client = Client::new(ws(kpc.ws_addr().unwrap()).await, Version::V3);
    assert_eq!(client.connect(None).await, Connack::Accepted);

    let Transport::Ws(ws) = &mut client.transport else {
        unreachable!()
    };
    ws.send(Message::text("kp1/av1/ext/tok-1/echo/1")).await.unwrap();
    client.closed().await;
    kpc.shutdown().await;
}

#[tokio::test]
async fn a_client_that_never_upgrades_is_dropped_at_the_connect_deadline() {
    let (bus, _cm) = platform().await;
    let mut cfg = config(ClientAuthMode::None);
    cfg.ws = Some(ws_settings(ClientAuthMode::None));
    cfg.limits.connect_timeout_ms = 1_000;
    let kpc = start(&bus, cfg, &Metrics::new()).await;
    let mut idle = TcpStream::connect(kpc.ws_addr().unwrap()).await.unwrap();
    // Another client is served meanwhile.
    let mut client = Client::new(ws(kpc.ws_addr().unwrap()).await, Version::V3);
    assert_eq!(client.connect(None).await, Connack::Accepted);
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(DEADLINE, idle.read(&mut buf))
        .await
        .expect("closed before the test deadline");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    kpc.shutdown().await;
}
