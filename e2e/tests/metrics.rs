//! `GET /metrics` of `kaa up`: open to scrapers, valid exposition text, and counters that move
//! as device traffic flows.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::HashMap;

use kaa_e2e::Platform;
use serde_json::json;

const AV: &str = "demo_application_v1";

/// Scrapes `/metrics` without any token; returns the samples by `name{labels}`.
async fn scrape(platform: &Platform) -> HashMap<String, f64> {
    let response = reqwest::get(format!("{}/metrics", platform.http)).await.unwrap();
    assert_eq!(response.status(), 200, "/metrics needs no admin token");
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        // `name{labels} value`: the value is after the last space (label values have none here).
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "bad labels in {line:?}");
        }
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        samples.insert(series.to_owned(), value);
    }
    samples
}

fn sample(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn counters_move_as_device_traffic_flows() {
    let platform = Platform::up().await;
    platform.register(AV, "metered").await;
    let before = scrape(&platform).await;

    let forwarded = r#"kaa_kpc_messages_total{extension="epmx",outcome="forwarded"}"#;
    let rejected = r#"kaa_kpc_messages_total{extension="epmx",outcome="rejected_4xx"}"#;
    let status = r#"kaa_kpc_replies_total{extension="epmx",kind="status"}"#;
    let error = r#"kaa_kpc_replies_total{extension="epmx",kind="error"}"#;
    let latency = r#"kaa_kpc_request_duration_seconds_count{extension="epmx"}"#;
    let bad_token = r#"kaa_kpc_auth_failures_total{reason="unknown_token"}"#;
    let connections = r#"kaa_kpc_connections{transport="mqtt"}"#;
    let token_round_trips = r#"kaa_bus_request_duration_seconds_count{subject_kind="ecap.ep-token-request"}"#;
    assert_eq!(sample(&before, forwarded), 0.0, "{before:?}");
    assert_eq!(sample(&before, connections), 0.0, "{before:?}");

    let mut device = platform.device("metered").await;
    let body = json!({ "model": "A300" }).to_string();
    let (suffix, _) = device
        .request(&format!("kp1/{AV}/epmx/metered/update/keys/1"), body)
        .await;
    assert_eq!(suffix, "/status");
    let (suffix, _) = device
        .request(&format!("kp1/{AV}/epmx/no-such-token/get/2"), "")
        .await;
    assert_eq!(suffix, "/error");

    // Replies are counted before they are written to the client, so the counters are final here.
    let after = scrape(&platform).await;
    let moved = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(moved(forwarded), 1.0, "{after:?}");
    assert_eq!(moved(status), 1.0, "{after:?}");
    assert_eq!(moved(latency), 1.0, "{after:?}");
    assert_eq!(moved(rejected), 1.0, "{after:?}");
    assert_eq!(moved(error), 1.0, "{after:?}");
    assert_eq!(moved(bad_token), 1.0, "{after:?}");
    assert!(moved(token_round_trips) >= 1.0, "{after:?}");
    assert_eq!(sample(&after, connections), 1.0, "{after:?}");
    assert!(
        sample(
            &after,
            r#"kaa_kpc_request_duration_seconds_sum{extension="epmx"}"#
        ) > 0.0,
        "{after:?}"
    );
    // EPMX asked the register over 19/EPMMP on the bus for the update.
    assert!(
        after.iter().any(|(series, value)| series
            .starts_with(r#"kaa_bus_request_duration_seconds_count{subject_kind="epmmp."#)
            && *value >= 1.0),
        "{after:?}"
    );
}

#[tokio::test]
async fn health_is_ok_when_up() {
    let platform = Platform::up().await;
    let response = reqwest::get(format!("{}/health", platform.http)).await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok", "{body}");
    // Every instance's config version, and no refused change.
    let configs = body["configs"].as_object().unwrap();
    assert!(
        configs.contains_key("kpc") && configs.contains_key("epmx"),
        "{body}"
    );
    for (instance, config) in configs {
        assert_eq!(
            config["version"].as_str().map(str::len),
            Some(12),
            "{instance}: {body}"
        );
        assert_eq!(config["error"], json!(null), "{instance}: {body}");
    }
}
