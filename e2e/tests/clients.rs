//! Real third-party clients, unchanged: a paho-mqtt device written like the official Kaa Python
//! client, and the README walkthrough's mosquitto commands.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::process::Command;

use kaa_e2e::Platform;
use serde_json::{Value, json};

const AV: &str = "demo_application_v1";

#[tokio::test]
async fn a_device_written_like_the_official_kaa_client_reports_metadata() {
    let platform = Platform::up().await;
    let endpoint_id = platform.register(AV, "py-meter").await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/kaa_like_client.py");
    let metadata = json!({ "model": "MySmartMeter A300", "mac": "00-14-22-01-23-45" });
    let port = platform.mqtt_port.to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([
                script,
                "--port",
                &port,
                "--app-version",
                AV,
                "--token",
                "py-meter",
            ])
            .args(["--metadata", &metadata.to_string()])
            .output()
            .expect("python3 runs (make test provides a venv with paho-mqtt)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "client failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        report["topic"],
        format!("{}/status", report["requestTopic"].as_str().unwrap())
    );
    assert!(report.get("unexpected").is_none(), "{report}");

    let (_, body) = platform
        .get(&format!("/epr/api/v1/endpoints/{endpoint_id}/metadata"))
        .await;
    assert_eq!(
        body,
        json!({ "model": "MySmartMeter A300", "mac": "00-14-22-01-23-45" })
    );
}

#[tokio::test]
async fn the_readme_walkthrough_works_with_mosquitto() {
    let platform = Platform::up().await;
    let created = Command::new("curl")
        .args([
            "-s",
            "-X",
            "POST",
            &format!("{}/epr/api/v1/endpoints", platform.http),
        ])
        .args(["-H", "Content-Type: application/json"])
        .args([
            "-d",
            r#"{"appVersion":{"name":"demo_application_v1"},"endpointToken":"my-meter"}"#,
        ])
        .output()
        .unwrap();
    let created: Value = serde_json::from_slice(&created.stdout).expect("curl got JSON back");
    let endpoint_id = created["endpointId"].as_str().unwrap().to_owned();

    let port = platform.mqtt_port.to_string();
    let topic = "kp1/demo_application_v1/epmx/my-meter/update/keys/1";
    let rr = tokio::task::spawn_blocking(move || {
        Command::new("mosquitto_rr")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-t",
                topic,
                "-e",
                &format!("{topic}/status"),
                "-W",
                "5",
            ])
            .args(["-m", r#"{"model":"MySmartMeter A300","mac":"00-14-22-01-23-45"}"#])
            .output()
            .expect("mosquitto_rr runs (make test installs mosquitto-clients)")
    })
    .await
    .unwrap();
    assert!(
        rr.status.success(),
        "mosquitto_rr: {}",
        String::from_utf8_lossy(&rr.stderr)
    );

    let (_, body) = platform
        .get(&format!("/epr/api/v1/endpoints/{endpoint_id}/metadata"))
        .await;
    assert_eq!(
        body,
        json!({ "model": "MySmartMeter A300", "mac": "00-14-22-01-23-45" })
    );
}
