//! Revocation takes effect at once: token and credential revocation events from the (scripted)
//! credential service reach the sessions of this replica well within a second.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::{FakeCm, config, echo_extension};
use kaa_blueprint::config::ClientAuthMode;
use kaa_bus::Bus;
use kaa_bus::metrics::Metrics;
use kaa_kpc::Kpc;
use kaa_testkit::{DEADLINE, Device};
use rumqttc::ConnectReturnCode as V3;

const BOUND: Duration = Duration::from_secs(1);

async fn setup() -> (Bus, FakeCm, Kpc) {
    let bus = Bus::in_process();
    let cm = FakeCm::start(&bus).await;
    echo_extension(&bus).await;
    let kpc = Kpc::start(
        config(ClientAuthMode::Password),
        bus.clone(),
        "kpc-test".into(),
        &Metrics::new(),
    )
    .await
    .unwrap();
    (bus, cm, kpc)
}

#[tokio::test]
async fn a_revoked_credential_is_disconnected_at_once_and_cannot_come_back() {
    let (_bus, cm, kpc) = setup().await;
    cm.add_user("gw", "pw", "cred-gw");
    cm.add_user("other", "pw", "cred-other");
    cm.add_token("tok-1", "ep-1", "tid-1");
    let port = kpc.mqtt_addr().port();
    let mut v3 = Device::try_connect(port, "gw-a", Some(("gw", "pw")))
        .await
        .unwrap();
    let mut bystander = Device::try_connect(port, "other", Some(("other", "pw")))
        .await
        .unwrap();
    v3.request("kp1/av1/ext/tok-1/echo/1", "{}").await;

    // MQTT 5: told why.
    use rumqttc::v5::{AsyncClient, ConnectionError, MqttOptions, StateError};
    let mut options = MqttOptions::new("gw-b", "127.0.0.1", port);
    options.set_credentials("gw", "pw");
    let (_client, mut eventloop) = AsyncClient::new(options, 4);
    eventloop.poll().await.unwrap(); // CONNACK
    let v5_reason = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Err(ConnectionError::MqttState(StateError::ServerDisconnect { reason_code, .. })) => {
                    return Some((reason_code, Instant::now()));
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    });

    let revoked_at = Instant::now();
    cm.revoke_credential("cred-gw").await;
    assert!(
        v3.closed(BOUND).await.is_some(),
        "the 3.1.1 session ends within {BOUND:?}"
    );
    let (reason, at) = tokio::time::timeout(DEADLINE, v5_reason)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        reason,
        rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::NotAuthorized
    );
    assert!(at - revoked_at < BOUND, "{:?}", at - revoked_at);

    assert_eq!(
        Device::connack(port, Some(("gw", "pw"))).await,
        V3::BadUserNamePassword
    );
    let (suffix, _) = bystander.request("kp1/av1/ext/tok-1/echo/2", "{}").await;
    assert_eq!(suffix, "/status", "other clients are not affected");
    kpc.shutdown().await;
}

#[tokio::test]
async fn a_revoked_token_cuts_off_only_its_endpoint() {
    let (_bus, cm, kpc) = setup().await;
    cm.add_user("gw", "pw", "cred-gw");
    cm.add_token("tok-a", "ep-a", "tid-a");
    cm.add_token("tok-b", "ep-b", "tid-b");
    let port = kpc.mqtt_addr().port();
    // A gateway acting for two endpoints, and a device acting for ep-a alone.
    let mut gateway = Device::try_connect(port, "gateway", Some(("gw", "pw")))
        .await
        .unwrap();
    let mut device = Device::try_connect(port, "device", Some(("gw", "pw")))
        .await
        .unwrap();
    for topic in ["kp1/av1/ext/tok-a/echo/1", "kp1/av1/ext/tok-b/echo/2"] {
        assert_eq!(gateway.request(topic, "{}").await.0, "/status");
    }
    assert_eq!(
        device.request("kp1/av1/ext/tok-a/echo/3", "{}").await.0,
        "/status"
    );

    let revoked_at = Instant::now();
    cm.revoke_token("tok-a").await;
    assert!(
        device.closed(BOUND).await.is_some(),
        "the single-endpoint client is cut off"
    );
    assert!(revoked_at.elapsed() < BOUND);

    let (suffix, body) = gateway.request("kp1/av1/ext/tok-a/echo/4", "{}").await;
    assert_eq!(
        (suffix.as_str(), body["statusCode"].as_u64()),
        ("/error", Some(403))
    );
    assert_eq!(body["reasonPhrase"], "token revoked");
    let (suffix, _) = gateway.request("kp1/av1/ext/tok-b/echo/5", "{}").await;
    assert_eq!(suffix, "/status", "the other endpoint goes on");
    assert!(gateway.closed(Duration::from_millis(200)).await.is_none());
    kpc.shutdown().await;
}

#[tokio::test]
async fn a_suspended_token_is_refused_until_reactivated() {
    let (_bus, cm, kpc) = setup().await;
    cm.add_user("u", "pw", "cred-1");
    cm.add_token("tok-1", "ep-1", "tid-1");
    cm.add_token("tok-2", "ep-2", "tid-2");
    let port = kpc.mqtt_addr().port();
    let mut client = Device::try_connect(port, "c", Some(("u", "pw"))).await.unwrap();
    client.request("kp1/av1/ext/tok-1/echo/1", "{}").await;
    client.request("kp1/av1/ext/tok-2/echo/2", "{}").await;

    cm.suspend_token("tok-1").await;
    let (_, body) = client.request("kp1/av1/ext/tok-1/echo/3", "{}").await;
    assert_eq!(body["statusCode"], 403);
    assert_eq!(body["reasonPhrase"], "token suspended");
    cm.reactivate_token("tok-1");
    let (suffix, _) = client.request("kp1/av1/ext/tok-1/echo/4", "{}").await;
    assert_eq!(suffix, "/status");
    let (_, body) = client.request("kp1/av1/ext/never-issued/echo/5", "{}").await;
    assert_eq!(body["statusCode"], 401, "an unknown token stays 401");
    kpc.shutdown().await;
}

#[tokio::test]
async fn validated_tokens_are_shared_across_sessions_until_revoked() {
    let (_bus, cm, kpc) = setup().await;
    cm.add_user("u", "pw", "cred-1");
    cm.add_token("tok-1", "ep-1", "tid-1");
    let port = kpc.mqtt_addr().port();
    let mut first = Device::try_connect(port, "first", Some(("u", "pw")))
        .await
        .unwrap();
    first.request("kp1/av1/ext/tok-1/echo/1", "{}").await;
    let mut second = Device::try_connect(port, "second", Some(("u", "pw")))
        .await
        .unwrap();
    second.request("kp1/av1/ext/tok-1/echo/1", "{}").await;
    assert_eq!(cm.token_requests(), 1, "the second session reused the answer");

    cm.suspend_token("tok-1").await;
    assert!(first.closed(BOUND).await.is_some());
    assert!(second.closed(BOUND).await.is_some());
    cm.reactivate_token("tok-1");
    let mut third = Device::try_connect(port, "third", Some(("u", "pw")))
        .await
        .unwrap();
    third.request("kp1/av1/ext/tok-1/echo/1", "{}").await;
    assert_eq!(cm.token_requests(), 2, "the cache entry went with the revocation");
    kpc.shutdown().await;
}

/// Two replicas on a real nats-server: a revocation broadcast reaches both within the bound.
#[tokio::test]
async fn revocations_reach_every_replica_over_nats() {
    let nats = kaa_testkit::NatsServer::start().await;
    let bus = Bus::connect_nats(&nats.url).await.unwrap();
    let cm = FakeCm::start(&bus).await;
    echo_extension(&bus).await;
    cm.add_user("gw", "pw", "cred-gw");
    cm.add_token("tok-1", "ep-1", "tid-1");
    let mut replicas = Vec::new();
    for replica in ["kpc-0", "kpc-1"] {
        // Each replica has its own connection, as separate processes would.
        let own_bus = Bus::connect_nats(&nats.url).await.unwrap();
        let kpc = Kpc::start(
            config(ClientAuthMode::Password),
            own_bus,
            replica.into(),
            &Metrics::new(),
        )
        .await
        .unwrap();
        replicas.push(kpc);
    }
    let mut by_token = Vec::new();
    let mut by_credential = Vec::new();
    for kpc in &replicas {
        let port = kpc.mqtt_addr().port();
        let mut device = Device::try_connect(port, "device", Some(("gw", "pw")))
            .await
            .unwrap();
        assert_eq!(
            device.request("kp1/av1/ext/tok-1/echo/1", "{}").await.0,
            "/status"
        );
        by_token.push(device);
        by_credential.push(
            Device::try_connect(port, "idle", Some(("gw", "pw")))
                .await
                .unwrap(),
        );
    }
    bus.flush().await.unwrap();

    let revoked_at = Instant::now();
    cm.revoke_token("tok-1").await;
    bus.flush().await.unwrap();
    for device in &mut by_token {
        assert!(device.closed(BOUND).await.is_some(), "cut off on every replica");
    }
    assert!(revoked_at.elapsed() < BOUND, "{:?}", revoked_at.elapsed());

    let revoked_at = Instant::now();
    cm.revoke_credential("cred-gw").await;
    bus.flush().await.unwrap();
    for client in &mut by_credential {
        assert!(
            client.closed(BOUND).await.is_some(),
            "disconnected on every replica"
        );
    }
    assert!(revoked_at.elapsed() < BOUND, "{:?}", revoked_at.elapsed());
    for kpc in replicas {
        kpc.shutdown().await;
    }
}
