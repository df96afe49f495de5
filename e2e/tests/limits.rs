//! The gateway's limits through `kaa up`: Blueprint keys reach the gateway, refusals are what the
//! README says, they are counted in `/metrics`, and the process stays healthy.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::path::Path;

use kaa_e2e::{Device, Platform};

const AV: &str = "demo_application_v1";

/// The quickstart with `limits` (YAML flow mapping) on its gateway.
fn quickstart_with_limits(limits: &str) -> String {
    let quickstart =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../blueprints/quickstart.yaml"))
            .unwrap();
    let kpc = "    - kind: kpc\n      config:\n";
    assert!(quickstart.contains(kpc), "the quickstart's gateway moved");
    quickstart.replace(kpc, &format!("{kpc}        limits: {limits}\n"))
}

async fn metric(platform: &Platform, series: &str) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", platform.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn refusals_are_counted_and_the_platform_stays_healthy() {
    let platform = Platform::up_with(&quickstart_with_limits(
        "{ maxConnections: 1, maxPayloadBytes: 64 }",
    ))
    .await;
    platform.register(AV, "limited-meter").await;
    let mut device = platform.device("first").await;

    assert_eq!(
        Device::connack(platform.mqtt_port, None).await,
        rumqttc::ConnectReturnCode::ServiceUnavailable,
        "a second connection is over maxConnections"
    );
    let response = reqwest::Client::new()
        .post(format!(
            "{}/kp1/{AV}/epmx/limited-meter/update/keys",
            platform.http
        ))
        .body(vec![b' '; 65])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413, "over maxPayloadBytes over HTTP");

    let health = reqwest::get(format!("{}/health", platform.http)).await.unwrap();
    assert_eq!(health.status(), 200);
    for (limit, count) in [("connections", 1.0), ("payload", 1.0), ("in_flight", 0.0)] {
        let series = format!(r#"kaa_kpc_limit_refusals_total{{limit="{limit}"}}"#);
        assert_eq!(metric(&platform, &series).await, Some(count), "{series}");
    }
    let (suffix, _) = device
        .request(
            &format!("kp1/{AV}/epmx/limited-meter/update/keys/1"),
            r#"{"ok":1}"#,
        )
        .await;
    assert_eq!(suffix, "/status", "the connection within the limit is served");
}

#[test]
fn kaa_run_refuses_a_config_whose_limit_refuses_everyone() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kpc.json");
    let text = r#"{"kind":"kpc","instance":"kpc","tokenProvider":"cm","appVersions":{},
                   "limits":{"maxKeepaliveSecs":0}}"#;
    std::fs::write(&config, text).unwrap();
    let out = std::process::Command::new(kaa_e2e::kaa_bin())
        .args(["run", "kpc", "--config", config.to_str().unwrap()])
        .args(["--nats-url", "nats://127.0.0.1:1", "--http-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("kpc.json: limits.maxKeepaliveSecs: must be at least 1"),
        "{stderr}"
    );
}
