//! Client authentication on the plain MQTT listener against a scripted credential service:
//! CONNACK codes for MQTT 3.1.1 and 5, the bounded wait, failed-CONNECT rate limiting, and logs
//! that never show a password or an endpoint token.

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
use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as V5;

async fn kpc(bus: &Bus, auth: ClientAuthMode) -> Kpc {
    Kpc::start(config(auth), bus.clone(), "kpc-test".into(), &Metrics::new())
        .await
        .unwrap()
}

async fn v5_connack(port: u16, credentials: Option<(&str, &str)>) -> V5 {
    use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, mqttbytes::v5::Packet};
    let mut options = MqttOptions::new("v5-probe", "127.0.0.1", port);
    if let Some((u, p)) = credentials {
        options.set_credentials(u, p);
    }
    let (_client, mut eventloop) = AsyncClient::new(options, 4);
    match tokio::time::timeout(DEADLINE, eventloop.poll()).await.unwrap() {
        Ok(Event::Incoming(Packet::ConnAck(ack))) => ack.code,
        Err(ConnectionError::ConnectionRefused(code)) => code,
        other => panic!("expected a CONNACK, got {other:?}"),
    }
}

#[tokio::test]
async fn password_auth_accepts_the_right_password_only() {
    let bus = Bus::in_process();
    let cm = FakeCm::start(&bus).await;
    cm.add_user("meter-1", "s3cret", "cred-1");
    let kpc = kpc(&bus, ClientAuthMode::Password).await;
    let port = kpc.mqtt_addr().port();

    assert_eq!(
        Device::connack(port, Some(("meter-1", "s3cret"))).await,
        V3::Success
    );
    assert_eq!(
        Device::connack(port, Some(("meter-1", "wrong"))).await,
        V3::BadUserNamePassword
    );
    assert_eq!(
        Device::connack(port, Some(("nobody", "s3cret"))).await,
        V3::BadUserNamePassword
    );
    assert_eq!(Device::connack(port, None).await, V3::BadUserNamePassword);

    assert_eq!(v5_connack(port, Some(("meter-1", "s3cret"))).await, V5::Success);
    assert_eq!(
        v5_connack(port, Some(("meter-1", "wrong"))).await,
        V5::BadUserNamePassword
    );
    assert_eq!(
        v5_connack(port, Some(("nobody", "x"))).await,
        V5::BadUserNamePassword
    );
    kpc.shutdown().await;
}

#[tokio::test]
async fn auth_none_lets_anyone_in_and_never_asks() {
    let bus = Bus::in_process();
    let cm = FakeCm::start(&bus).await;
    cm.add_token("tok-1", "ep-1", "tid-1");
    echo_extension(&bus).await;
    let kpc = kpc(&bus, ClientAuthMode::None).await;
    let port = kpc.mqtt_addr().port();
    assert_eq!(Device::connack(port, None).await, V3::Success);
    assert_eq!(
        Device::connack(port, Some(("anyone", "anything"))).await,
        V3::Success
    );
    let mut device = Device::try_connect(port, "d", None).await.unwrap();
    let (suffix, _) = device.request("kp1/av1/ext/tok-1/echo/1", "{}").await;
    assert_eq!(suffix, "/status");
    assert_eq!(cm.credential_requests(), 0);
    kpc.shutdown().await;
}

#[tokio::test]
async fn a_silent_credential_service_means_server_unavailable_within_the_bound() {
    let bus = Bus::in_process();
    let cm = FakeCm::start(&bus).await;
    cm.add_user("u", "p", "cred-1");
    cm.set_silent(true);
    let kpc = kpc(&bus, ClientAuthMode::Password).await; // authTimeoutMs: 500
    let port = kpc.mqtt_addr().port();

    let started = Instant::now();
    assert_eq!(
        Device::connack(port, Some(("u", "p"))).await,
        V3::ServiceUnavailable
    );
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
    assert!(
        waited < Duration::from_millis(500) + Duration::from_secs(3),
        "{waited:?}"
    );
    assert_eq!(v5_connack(port, Some(("u", "p"))).await, V5::ServerUnavailable);
    assert_eq!(cm.credential_requests(), 2);

    // An outage is not the client's fault: it does not count towards the rate limit.
    cm.set_silent(false);
    assert_eq!(Device::connack(port, Some(("u", "p"))).await, V3::Success);
    kpc.shutdown().await;
}

#[tokio::test]
async fn failed_connects_are_rate_limited_per_address_without_asking() {
    let bus = Bus::in_process();
    let cm = FakeCm::start(&bus).await;
    cm.add_user("u", "right", "cred-1");
    let mut cfg = config(ClientAuthMode::Password);
    cfg.limits.failed_connects_per_minute = 3;
    let kpc = Kpc::start(cfg, bus.clone(), "kpc-test".into(), &Metrics::new())
        .await
        .unwrap();
    let port = kpc.mqtt_addr().port();

    // Successes do not use up the budget.
    for _ in 0..5 {
        assert_eq!(Device::connack(port, Some(("u", "right"))).await, V3::Success);
    }
    for _ in 0..3 {
        assert_eq!(
            Device::connack(port, Some(("u", "guess"))).await,
            V3::BadUserNamePassword
        );
    }
    let asked = cm.credential_requests();
    assert_eq!(
        Device::connack(port, Some(("u", "guess"))).await,
        V3::NotAuthorized
    );
    assert_eq!(
        Device::connack(port, Some(("u", "right"))).await,
        V3::NotAuthorized,
        "over the limit, even the right password waits"
    );
    assert_eq!(
        v5_connack(port, Some(("u", "right"))).await,
        V5::ConnectionRateExceeded
    );
    assert_eq!(
        cm.credential_requests(),
        asked,
        "refused without asking the provider"
    );
    kpc.shutdown().await;
}

// A current-thread runtime (the default): every task of KPC logs through this test's subscriber.
#[tokio::test]
async fn logs_never_show_passwords_or_tokens() {
    let (logs, _guard) = kaa_testkit::capture_logs();

    let bus = Bus::in_process();
    let cm = FakeCm::start(&bus).await;
    cm.add_user("meter", "Pa55-word-right", "cred-7");
    cm.add_token("Tok3n-secret-value", "ep-1", "tid-1");
    cm.add_token("Tok3n-suspended", "ep-2", "tid-2");
    echo_extension(&bus).await;
    let kpc = kpc(&bus, ClientAuthMode::Password).await;
    let port = kpc.mqtt_addr().port();

    assert_eq!(
        Device::connack(port, Some(("meter", "Pa55-word-wrong"))).await,
        V3::BadUserNamePassword
    );
    let mut device = Device::try_connect(port, "d", Some(("meter", "Pa55-word-right")))
        .await
        .unwrap();
    device
        .request("kp1/av1/ext/Tok3n-secret-value/echo/1", "{}")
        .await;
    device.request("kp1/av1/ext/Tok3n-unknown/echo/2", "{}").await;
    cm.suspend_token("Tok3n-suspended").await;
    let (_, body) = device.request("kp1/av1/ext/Tok3n-suspended/echo/3", "{}").await;
    assert_eq!(body["statusCode"], 403);
    cm.revoke_credential("cred-7").await;
    assert!(device.closed(DEADLINE).await.is_some());
    kpc.shutdown().await;

    let logs = logs.text();
    assert!(logs.contains("cred-7"), "credential ids are logged:\n{logs}");
    assert!(logs.contains("CONNECT refused"), "refusals are logged:\n{logs}");
    for secret in ["Pa55-word", "Tok3n"] {
        assert!(!logs.contains(secret), "`{secret}` leaked into the logs:\n{logs}");
    }
}
