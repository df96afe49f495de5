//! The dashboard in a real browser: headless Chromium (Debian's `chromium`) driven by
//! playwright-core from e2e/browser/dashboard.mjs, against `kaa up` and against `kaa run web` in
//! cluster mode, with a paho-mqtt device (e2e/clients/dashboard_meter.py). `make test` installs
//! both (scripts/test-deps.sh).
//!
//! The screenshots stay as artefacts in `<target dir>/dashboard-screenshots/{up,cluster}/` (printed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)] // test code

use std::path::{Path, PathBuf};
use std::process::Command;

use kaa_e2e::{Platform, quickstart_with_web};
use serde_json::Value;

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Where the screenshots go: the cargo target dir, so they outlive the test's temp dirs.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("dashboard-screenshots")
}

#[tokio::test]
async fn the_dashboard_registers_a_meter_shows_it_live_and_controls_it() {
    let platform = Platform::up().await;
    let report = drive_the_browser(&platform, &platform.http, "up").await;
    check_what_the_page_did(&platform, &report).await;
}

/// The same walk through the dashboard in cluster mode: every service its own `kaa run`
/// process on NATS, the browser talking to `kaa run web` only.
#[tokio::test]
async fn the_dashboard_works_through_the_web_service_in_cluster_mode() {
    let platform = Platform::cluster_with(&quickstart_with_web(), 1).await;
    let web = platform.service_http["web"].clone();
    let report = drive_the_browser(&platform, &web, "cluster").await;
    check_what_the_page_did(&platform, &report).await;
}

/// Runs e2e/browser/dashboard.mjs against the dashboard at `base`; its JSON report.
async fn drive_the_browser(platform: &Platform, base: &str, mode: &str) -> Value {
    assert!(
        browser_dir().join("node_modules/playwright-core").exists(),
        "e2e/browser/node_modules is missing: run scripts/test-deps.sh (`make test` does)"
    );
    let shots = screenshot_dir().join(mode);
    eprintln!("dashboard screenshots: {}", shots.display());
    let mut command = Command::new("node");
    command
        .arg(browser_dir().join("dashboard.mjs"))
        .env("KAA_URL", base)
        // In the environment, not the arguments: other users cannot read it from the process list.
        .env("KAA_ADMIN_TOKEN", &platform.admin_token)
        .env("KAA_MQTT_PORT", platform.mqtt_port.to_string())
        .env("KAA_SCREENSHOTS", &shots);
    let output = tokio::task::spawn_blocking(move || command.output().expect("node runs (Node 20+)"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser test failed (screenshots in {}):\n{stdout}\n{stderr}",
        shots.display()
    );
    let report: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(report["ok"], true, "{report}");
    report
}

/// What the page showed is what the APIs hold.
async fn check_what_the_page_did(platform: &Platform, report: &Value) {
    assert!(report["chartPoints"].as_u64().unwrap() >= 5, "{report}");
    let id = report["endpointId"].as_str().unwrap();
    let (_, metadata) = platform
        .get(&format!("/epr/api/v1/endpoints/{id}/metadata"))
        .await;
    assert_eq!(metadata["model"], "MySmartMeter A300");
    assert_eq!(metadata["meterDescription"], "Hall meter");
    let (_, statuses) = platform
        .get(&format!("/ecr/api/v1/statuses?endpointId={id}"))
        .await;
    assert_eq!(statuses["content"][0]["status"], "APPLIED", "{statuses}");
}

#[tokio::test]
async fn the_dashboard_page_is_open_and_the_apis_it_calls_are_not() {
    let platform = Platform::up().await;
    let client = reqwest::Client::new();
    for path in ["/", "/ui/app.js", "/ui/style.css"] {
        let response = client
            .get(format!("{}{path}", platform.http))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
    }
    // Open for GET only, and the page carries no data.
    let page = client
        .get(&platform.http)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains(&platform.admin_token));
    let post = client.post(format!("{}/", platform.http)).send().await.unwrap();
    assert_eq!(post.status(), 401);
    let apps = client
        .get(format!("{}/epr/api/v1/applications", platform.http))
        .send()
        .await
        .unwrap();
    assert_eq!(apps.status(), 401);
}
