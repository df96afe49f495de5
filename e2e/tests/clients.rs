//! Real third-party clients, unchanged: a paho-mqtt device written like the official Kaa Python
//! client, and the README walkthrough's mosquitto commands.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::process::Command;

use kaa_e2e::{DEADLINE, Platform};
use kaa_testkit::eventually;
use serde_json::{Value, json};

const AV: &str = "demo_application_v1";

/// Runs e2e/clients/kaa_like_client.py with `args` (plus app version, token and metadata);
/// asserts it succeeded and got `/status` for its request, and returns nothing else.
async fn run_kaa_like_client(token: &str, metadata: &Value, args: &[String]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/kaa_like_client.py");
    let mut command = Command::new("python3");
    command
        .arg(script)
        .args(args)
        .args(["--app-version", AV, "--token", token])
        .args(["--metadata", &metadata.to_string()]);
    let output = tokio::task::spawn_blocking(move || {
        command
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
}

#[tokio::test]
async fn a_device_written_like_the_official_kaa_client_reports_metadata() {
    let platform = Platform::up().await;
    let endpoint_id = platform.register(AV, "py-meter").await;
    let metadata = json!({ "model": "MySmartMeter A300", "mac": "00-14-22-01-23-45" });
    let port = platform.mqtt_port.to_string();
    run_kaa_like_client("py-meter", &metadata, &["--port".into(), port]).await;

    let (_, body) = platform
        .get(&format!("/epr/api/v1/endpoints/{endpoint_id}/metadata"))
        .await;
    assert_eq!(
        kaa_e2e::without_connectivity(body),
        json!({ "model": "MySmartMeter A300", "mac": "00-14-22-01-23-45" })
    );
}

#[tokio::test]
async fn paho_over_websocket_completes_the_tutorial_with_mqtt_3_and_5() {
    let platform = Platform::up().await;
    let endpoint_id = platform.register(AV, "ws-meter").await;
    let port = platform.ws_port.to_string();
    for (n, version) in [(1, None), (2, Some("--mqtt5"))] {
        let metadata = json!({ "model": "MySmartMeter A300", "reading": n });
        let mut args = vec![
            "--port".into(),
            port.clone(),
            "--transport".into(),
            "websockets".into(),
        ];
        args.extend(version.map(String::from));
        run_kaa_like_client("ws-meter", &metadata, &args).await;
        let (_, body) = platform
            .get(&format!("/epr/api/v1/endpoints/{endpoint_id}/metadata"))
            .await;
        assert_eq!(kaa_e2e::without_connectivity(body), metadata, "{version:?}");
    }
    // The sessions were on the `ws` transport's gauge, and are gone.
    let metrics = format!("{}/metrics", platform.http);
    eventually(DEADLINE, "kaa_kpc_connections{transport=\"ws\"} 0", || async {
        let text = reqwest::get(&metrics).await.ok()?.text().await.ok()?;
        text.contains(r#"kaa_kpc_connections{transport="ws"} 0"#)
            .then_some(())
    })
    .await;
}

/// The commands of the README walkthrough's `block`-th sh block (1: connect a smart meter, 2:
/// telemetry), one per element (continuation lines joined), as written.
fn readme_walkthrough(block: usize) -> Vec<String> {
    let block = readme_block(1, block);
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block.lines().filter(|l| !l.trim_start().starts_with('#')) {
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                commands.push(std::mem::take(&mut current));
            }
        }
    }
    commands
}

/// The `block`-th sh block of the README's `section`-th "## Walkthrough" section, as written.
fn readme_block(section: usize, block: usize) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let section = readme
        .split("## Walkthrough")
        .nth(section)
        .expect("README has the Walkthrough section");
    section
        .split("```sh\n")
        .nth(block)
        .and_then(|rest| rest.split("```").next())
        .expect("the walkthrough has the sh block")
        .to_owned()
}

/// Runs a README command with `sh` against `platform` (its ports and data directory).
async fn run_readme_command(platform: &Platform, command: &str, endpoint_id: &str) -> String {
    let command = command
        .replace("http://127.0.0.1:8000", &platform.http)
        .replace("-p 1883", &format!("-p {}", platform.mqtt_port))
        .replace("kaa-data/", &format!("{}/", platform.data_dir().display()))
        .replace("ENDPOINT_ID", endpoint_id);
    let output = tokio::task::spawn_blocking(move || {
        Command::new("sh")
            .args(["-c", &command])
            .output()
            .expect("sh runs (make test installs mosquitto-clients; curl is needed too)")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "README command failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn the_readme_walkthrough_works_with_curl_and_mosquitto() {
    let platform = Platform::up().await;
    let commands = readme_walkthrough(1);
    assert_eq!(commands.len(), 4, "{commands:#?}");
    assert!(
        commands[0].starts_with("curl") && commands[0].contains("Authorization: Bearer"),
        "{}",
        commands[0]
    );

    let created = run_readme_command(&platform, &commands[0], "").await;
    let created: Value = serde_json::from_str(&created).expect("curl got JSON back");
    let endpoint_id = created["endpointId"].as_str().unwrap().to_owned();

    let status = run_readme_command(&platform, &commands[1], &endpoint_id).await;
    assert_eq!(status.trim(), "", "the update's /status carries no payload");

    let metadata = json!({ "model": "MySmartMeter A300", "mac": "00-14-22-01-23-45" });
    let read = run_readme_command(&platform, &commands[2], &endpoint_id).await;
    assert_eq!(
        kaa_e2e::without_connectivity(serde_json::from_str::<Value>(&read).unwrap()),
        metadata
    );

    let from_device = run_readme_command(&platform, &commands[3], &endpoint_id).await;
    assert_eq!(serde_json::from_str::<Value>(&from_device).unwrap(), metadata);
}

#[tokio::test]
async fn the_readme_telemetry_walkthrough_works_with_curl_and_mosquitto() {
    let platform = Platform::up().await;
    let created = run_readme_command(&platform, &readme_walkthrough(1)[0], "").await;
    let created: Value = serde_json::from_str(&created).expect("curl got JSON back");
    let endpoint_id = created["endpointId"].as_str().unwrap().to_owned();
    let commands = readme_walkthrough(2);
    assert_eq!(commands.len(), 8, "{commands:#?}");
    assert!(commands[0].starts_with("mosquitto_pub"), "{}", commands[0]);

    // Sending: QoS 0 without request id, a batch answered on /status, HTTP.
    run_readme_command(&platform, &commands[0], &endpoint_id).await;
    let status = run_readme_command(&platform, &commands[1], &endpoint_id).await;
    assert_eq!(status.trim(), "", "the batch's /status carries no payload");
    run_readme_command(&platform, &commands[2], &endpoint_id).await;

    // Reading: the fire-and-forget sample lands on its own time, so poll for all four.
    let temperatures = kaa_testkit::eventually(kaa_e2e::DEADLINE, "four temperature points", || async {
        let data = run_readme_command(&platform, &commands[3], &endpoint_id).await;
        let data: Value = serde_json::from_str(&data).unwrap();
        let points = data[0][&endpoint_id]["auto~temperature"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (points.len() == 4).then_some(points)
    })
    .await;
    let values: Vec<&Value> = temperatures.iter().map(|p| &p["values"]["value"]).collect();
    // The batch's first sample carries a time a minute ago: first in time order.
    assert_eq!(values[0], &json!(22), "{temperatures:?}");
    let last: Value =
        serde_json::from_str(&run_readme_command(&platform, &commands[4], &endpoint_id).await).unwrap();
    assert_eq!(
        last[0][&endpoint_id]["auto~humidity"][0]["values"]["value"],
        json!(40),
        "{last}"
    );
    let config: Value =
        serde_json::from_str(&run_readme_command(&platform, &commands[5], &endpoint_id).await).unwrap();
    assert!(
        config["demo_application"]
            .to_string()
            .contains("auto~temperature"),
        "{config}"
    );

    // Connectivity: mosquitto_pub and mosquitto_rr each connected and disconnected the endpoint:
    // 1, 0, 1, 0; or 1, 1, 0 when the second connection came before the gateway saw the first
    // one close (the device never went offline then). Either way it ends offline.
    let connectivity = kaa_testkit::eventually(kaa_e2e::DEADLINE, "both connections' points", || async {
        let data = run_readme_command(&platform, &commands[6], &endpoint_id).await;
        let data: Value = serde_json::from_str(&data).unwrap();
        let points = data[0][&endpoint_id]["connectivity"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let ended_offline = points.last().is_some_and(|p| p["values"]["value"] == json!(0));
        (points.len() >= 3 && ended_offline).then_some(points)
    })
    .await;
    assert_eq!(connectivity[0]["values"]["value"], json!(1), "{connectivity:?}");
    assert!(connectivity.len() <= 4, "{connectivity:?}");
    let metadata: Value =
        serde_json::from_str(&run_readme_command(&platform, &commands[7], &endpoint_id).await).unwrap();
    assert_eq!(metadata["connected"], json!(false), "{metadata}");
    assert!(metadata["connectivity_ts"].is_i64(), "{metadata}");
}

#[tokio::test]
async fn the_readme_control_walkthrough_works_with_curl_mosquitto_and_jq() {
    let platform = Platform::up().await;
    let created = run_readme_command(&platform, &readme_walkthrough(1)[0], "").await;
    let created: Value = serde_json::from_str(&created).expect("curl got JSON back");
    let endpoint_id = created["endpointId"].as_str().unwrap().to_owned();
    // One shell, as a reader runs it: the commands share variables. `set -e`: any failure fails.
    let script = format!("set -e\n{}", readme_block(2, 1));
    let output = run_readme_command(&platform, &script, &endpoint_id).await;

    // The PUT, the applied status, the 202 for an offline endpoint, the command the device
    // pulled, the completed command and the uploaded file read back.
    for expected in [
        r#"reportEveryS\":30"#,
        r#""status":"APPLIED""#,
        "HTTP/1.1 202",
        "location: /cex/api/v1/endpoints/",
        r#""id":1"#,
        "rebooting",
    ] {
        assert!(
            output.to_lowercase().contains(&expected.to_lowercase()),
            "{expected} missing in:\n{output}"
        );
    }
    assert!(output.trim_end().ends_with("boot ok"), "{output}");
}
