//! Revocation across gateway replicas: cluster mode with two `kaa run kpc` processes on a real
//! nats-server, and the credential service, the register and the metadata extension each in its
//! own process. One client credential and one endpoint token are used on both replicas; revoking
//! them over REST must stop both within a second.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use bytes::Bytes;
use kaa_e2e::{DEADLINE, Platform};
use reqwest::Method;
use rumqttc::{AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The bound the issue sets: revocation takes effect on every replica within a second.
const BOUND: Duration = Duration::from_secs(1);

const AV: &str = "demo_application_v1";

/// The quickstart with client authentication on, and a cheap password hash (this test is about
/// revocation, not hashing cost).
const BLUEPRINT: &str = r#"
apiVersion: kaa-rs.dev/v1alpha1
kind: Blueprint
metadata:
  name: revocation
spec:
  applications:
    - name: demo_application
      versions:
        - name: demo_application_v1
          extensions: [epmx]
  services:
    - kind: kpc
      config:
        mqtt:
          auth: password
    - kind: epr
    - kind: epmx
    - kind: cm
      config:
        passwordHash: { memoryKib: 1024, iterations: 1 }
"#;

const USER: (&str, &str) = ("fleet", "fleet-password");

/// An MQTT 3.1.1 client with a username and password that never subscribes.
struct Client {
    client: AsyncClient,
    incoming: mpsc::UnboundedReceiver<(String, Bytes)>,
    closed: mpsc::UnboundedReceiver<String>,
}

impl Client {
    async fn connect(port: u16, id: &str) -> Result<Client, ConnectionError> {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_credentials(USER.0, USER.1);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let first = tokio::time::timeout(DEADLINE, eventloop.poll())
            .await
            .expect("a CONNACK in time")?;
        assert!(matches!(first, Event::Incoming(Packet::ConnAck(_))), "{first:?}");
        let (tx, incoming) = mpsc::unbounded_channel();
        let (ctx, closed) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.clone()));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = ctx.send(e.to_string());
                        return;
                    }
                }
            }
        });
        Ok(Client {
            client,
            incoming,
            closed,
        })
    }

    /// Publishes a request and returns (`/status` or `/error`, JSON body) of its answer.
    async fn request(&mut self, topic: &str) -> (String, Value) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, b"{}".to_vec())
            .await
            .unwrap();
        let (reply, body) = tokio::time::timeout(DEADLINE, self.incoming.recv())
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no reply to {topic} within {DEADLINE:?}"));
        assert!(reply.starts_with(topic), "{reply} is not under {topic}");
        let body = match body.is_empty() {
            true => Value::Null,
            false => serde_json::from_slice(&body).unwrap(),
        };
        (reply[topic.len()..].to_owned(), body)
    }

    /// How long after `since` the gateway closed the connection; `None` if it stayed open for
    /// `wait`.
    async fn closed_after(&mut self, since: Instant, wait: Duration) -> Option<Duration> {
        tokio::time::timeout(wait, self.closed.recv())
            .await
            .ok()
            .flatten()
            .map(|_| since.elapsed())
    }
}

/// A metadata read of the endpoint with `token`; `n` keeps request ids apart.
fn topic(token: &str, n: u32) -> String {
    format!("kp1/{AV}/epmx/{token}/get/{n}")
}

/// The CONNACK a new connection with the shared credential gets on `port`.
async fn connack(port: u16) -> ConnectReturnCode {
    match Client::connect(port, "comeback").await {
        Ok(_) => ConnectReturnCode::Success,
        Err(ConnectionError::ConnectionRefused(code)) => code,
        Err(e) => panic!("expected a CONNACK, got {e}"),
    }
}

#[tokio::test]
async fn revoking_a_token_or_deleting_a_credential_stops_both_gateway_replicas_within_a_second() {
    let platform = Platform::cluster_with(BLUEPRINT, 2).await;
    let [port_a, port_b] = platform.mqtt_ports[..] else {
        panic!("two gateways: {:?}", platform.mqtt_ports);
    };
    let (status, credential) = platform
        .request(
            Method::POST,
            "/ccm/api/v1/clients",
            Some(&json!({ "clientId": "fleet", "username": USER.0, "password": USER.1 })),
        )
        .await;
    assert_eq!(status, 201, "{credential}");
    let credential_id = credential["credentialId"].as_str().unwrap().to_owned();
    let shared = platform.register(AV, "shared-token").await;
    platform.register(AV, "other-token").await;
    let (_, tokens) = platform
        .get(&format!("/cm/api/v1/endpoints/{shared}/tokens"))
        .await;
    let token_id = tokens[0]["tokenId"].as_str().unwrap().to_owned();

    // Replica A: a gateway connection acting for two endpoints. Replica B: a device acting for
    // the shared endpoint alone. Same credential, same token.
    let mut gateway = Client::connect(port_a, "gateway-a").await.unwrap();
    let mut device = Client::connect(port_b, "device-b").await.unwrap();
    assert_eq!(gateway.request(&topic("shared-token", 1)).await.0, "/status");
    assert_eq!(gateway.request(&topic("other-token", 2)).await.0, "/status");
    assert_eq!(device.request(&topic("shared-token", 3)).await.0, "/status");

    // Revoke the token over REST.
    let revoked_at = Instant::now();
    let (status, body) = platform
        .request(
            Method::PUT,
            &format!("/cm/api/v1/tokens/{token_id}/status"),
            Some(&json!({ "status": "Revoked" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let device_cut = device
        .closed_after(revoked_at, DEADLINE)
        .await
        .expect("replica B closes the single-endpoint connection");
    // Replica A keeps the connection; the shared endpoint's next publish is refused. Requests
    // answered before the event arrived are served: poll until the refusal.
    let mut n = 10;
    let gateway_refused = loop {
        let (suffix, body) = gateway.request(&topic("shared-token", n)).await;
        n += 1;
        if suffix == "/error" {
            assert_eq!(
                body,
                json!({ "statusCode": 403, "reasonPhrase": "token revoked" })
            );
            break revoked_at.elapsed();
        }
        assert_eq!(suffix, "/status", "{body}");
        assert!(
            revoked_at.elapsed() < DEADLINE,
            "replica A never refused the token"
        );
    };
    assert!(device_cut < BOUND, "replica B took {device_cut:?}");
    assert!(gateway_refused < BOUND, "replica A took {gateway_refused:?}");
    assert_eq!(
        gateway.request(&topic("other-token", n)).await.0,
        "/status",
        "the gateway's other endpoint goes on"
    );

    // Both replicas hold a session of the credential again; delete the credential over REST.
    let mut device = Client::connect(port_b, "device-b-again").await.unwrap();
    assert_eq!(device.request(&topic("other-token", n + 1)).await.0, "/status");
    let deleted_at = Instant::now();
    let (status, _) = platform
        .request(
            Method::DELETE,
            &format!("/ccm/api/v1/clients/{credential_id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (on_a, on_b) = tokio::join!(
        gateway.closed_after(deleted_at, DEADLINE),
        device.closed_after(deleted_at, DEADLINE)
    );
    let on_a = on_a.expect("replica A ends the credential's session");
    let on_b = on_b.expect("replica B ends the credential's session");
    assert!(on_a < BOUND, "replica A took {on_a:?}");
    assert!(on_b < BOUND, "replica B took {on_b:?}");
    for port in [port_a, port_b] {
        assert_eq!(
            connack(port).await,
            ConnectReturnCode::BadUserNamePassword,
            "the deleted credential cannot reconnect"
        );
    }
}
