//! Revocation across gateway replicas: cluster mode with two `kaa run kpc` processes on a real
//! nats-server, and the credential service, the register and the metadata extension each in its
//! own process. One client credential and one endpoint token are used on both replicas; revoking
//! them over REST must stop both within a second.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use kaa_e2e::{DEADLINE, Device, Platform};
use reqwest::Method;
use rumqttc::ConnectReturnCode;
use serde_json::json;

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

/// A connection with the shared credential (which must be accepted).
async fn connect(port: u16, id: &str) -> Device {
    Device::try_connect(port, id, Some(USER)).await.unwrap()
}

/// How long after `since` the gateway closed the connection; `None` if it stayed open for
/// `wait`.
async fn closed_after(device: &mut Device, since: Instant, wait: Duration) -> Option<Duration> {
    device.closed(wait).await.map(|_| since.elapsed())
}

/// A metadata read of the endpoint with `token`; `n` keeps request ids apart.
fn topic(token: &str, n: u32) -> String {
    format!("kp1/{AV}/epmx/{token}/get/{n}")
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
    let mut gateway = connect(port_a, "gateway-a").await;
    let mut device = connect(port_b, "device-b").await;
    assert_eq!(
        gateway.request(&topic("shared-token", 1), "{}").await.0,
        "/status"
    );
    assert_eq!(gateway.request(&topic("other-token", 2), "{}").await.0, "/status");
    assert_eq!(device.request(&topic("shared-token", 3), "{}").await.0, "/status");

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
    let device_cut = closed_after(&mut device, revoked_at, DEADLINE)
        .await
        .expect("replica B closes the single-endpoint connection");
    // Replica A keeps the connection; the shared endpoint's next publish is refused. Requests
    // answered before the event arrived are served: poll until the refusal.
    let mut n = 10;
    let gateway_refused = loop {
        let (suffix, body) = gateway.request(&topic("shared-token", n), "{}").await;
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
        gateway.request(&topic("other-token", n), "{}").await.0,
        "/status",
        "the gateway's other endpoint goes on"
    );

    // Both replicas hold a session of the credential again; delete the credential over REST.
    let mut device = connect(port_b, "device-b-again").await;
    assert_eq!(
        device.request(&topic("other-token", n + 1), "{}").await.0,
        "/status"
    );
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
        closed_after(&mut gateway, deleted_at, DEADLINE),
        closed_after(&mut device, deleted_at, DEADLINE)
    );
    let on_a = on_a.expect("replica A ends the credential's session");
    let on_b = on_b.expect("replica B ends the credential's session");
    assert!(on_a < BOUND, "replica A took {on_a:?}");
    assert!(on_b < BOUND, "replica B took {on_b:?}");
    for port in [port_a, port_b] {
        assert_eq!(
            Device::connack(port, Some(USER)).await,
            ConnectReturnCode::BadUserNamePassword,
            "the deleted credential cannot reconnect"
        );
    }
}
