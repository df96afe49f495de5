//! Telemetry end to end, with `kaa up` and in cluster mode: samples sent over MQTT (QoS 0 without
//! request id, as the official client does, and with one) and over HTTP reach EPTS and come back
//! over its REST API with their own timestamps, in order; a device that connects, goes offline
//! and reconnects shows the right `connected` metadata in EPR and a `connectivity` series; bad
//! samples are refused with their reason, and wrong types at value paths cost only that value.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use kaa_e2e::{DEADLINE, Platform};
use kaa_testkit::eventually;
use rumqttc::QoS;
use serde_json::{Value, json};

const AV: &str = "demo_application_v1";
const APP: &str = "demo_application";

/// The points of one series of one endpoint as `(timestamp, value)`, as EPTS's REST API gives them.
async fn series(platform: &Platform, query: &str, endpoint_id: &str, series: &str) -> Vec<(String, Value)> {
    let (status, body) = platform
        .get(&format!("/epts/api/v1/applications/{APP}/time-series/{query}"))
        .await;
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.get(endpoint_id))
        .filter_map(|s| s.get(series))
        .flat_map(|points| points.as_array().unwrap().clone())
        .map(|p| {
            (
                p["timestamp"].as_str().unwrap().to_owned(),
                p["values"]["value"].clone(),
            )
        })
        .collect()
}

/// POST a 1/KP request over HTTP to the gateway (no admin token: the endpoint token is the identity).
async fn post_kp(platform: &Platform, path: &str, body: &str) -> u16 {
    let base = platform.service_http.get("kpc").unwrap_or(&platform.http);
    reqwest::Client::new()
        .post(format!("{base}/{path}"))
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn telemetry(platform: Platform) {
    let endpoint_id = platform.register(AV, "tele-meter").await;
    let mut device = platform.device("").await;
    // 2024-05-01T12:00:00Z, within a week of nothing: queried with explicit dates below.
    let t0: i64 = 1_714_564_800_000;

    // QoS 0 without request id, one object: what the official client publishes. No reply.
    device
        .publish(
            &format!("kp1/{AV}/dcx/tele-meter/json"),
            json!({"temperature": 20, "timestamp": t0}).to_string(),
            QoS::AtMostOnce,
        )
        .await;
    // A batch with a request id: answered on /status, empty, once stored. An ISO 8601 time too.
    let (suffix, body) = device
        .request(
            &format!("kp1/{AV}/dcx/tele-meter/json/5"),
            json!([
                {"temperature": 22, "timestamp": "2024-05-01T12:00:02Z"},
                {"temperature": 21, "timestamp": t0 + 1000},
            ])
            .to_string(),
        )
        .await;
    assert_eq!((suffix.as_str(), body), ("/status", Value::Null));
    // Over HTTP.
    let status = post_kp(
        &platform,
        &format!("kp1/{AV}/dcx/tele-meter/json"),
        &json!({"temperature": 23, "humidity": 50, "timestamp": t0 + 3000}).to_string(),
    )
    .await;
    assert_eq!(status, 200);

    let range = "fromDate=2024-05-01T00:00:00Z&toDate=2024-05-02";
    let points = eventually(DEADLINE, "four temperature points", || async {
        let q = format!("data?timeSeriesName=auto~temperature&{range}&endpointId={endpoint_id}");
        let points = series(&platform, &q, &endpoint_id, "auto~temperature").await;
        (points.len() == 4).then_some(points)
    })
    .await;
    assert_eq!(
        points,
        [
            ("2024-05-01T12:00:00.000Z".to_owned(), json!(20)),
            ("2024-05-01T12:00:01.000Z".to_owned(), json!(21)),
            ("2024-05-01T12:00:02.000Z".to_owned(), json!(22)),
            ("2024-05-01T12:00:03.000Z".to_owned(), json!(23)),
        ]
    );
    let q = format!("data?timeSeriesName=auto~temperature&{range}&sort=DESC&limit=2");
    let newest: Vec<Value> = series(&platform, &q, &endpoint_id, "auto~temperature")
        .await
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(newest, [json!(23), json!(22)]);
    let last = series(
        &platform,
        "last?timeSeriesName=auto~humidity",
        &endpoint_id,
        "auto~humidity",
    )
    .await;
    assert_eq!(last, [("2024-05-01T12:00:03.000Z".to_owned(), json!(50))]);
    let (status, config) = platform
        .get(&format!("/epts/api/v1/time-series/config?applicationNames={APP}"))
        .await;
    assert_eq!(status, 200);
    for name in ["auto~temperature", "auto~humidity"] {
        assert!(
            config[APP]
                .as_array()
                .unwrap()
                .contains(&json!({"name": name, "values": ["value"]})),
            "{config}"
        );
    }
}

#[tokio::test]
async fn telemetry_with_kaa_up() {
    telemetry(Platform::up().await).await;
}

#[tokio::test]
async fn telemetry_in_cluster_mode() {
    telemetry(Platform::cluster().await).await;
}

/// The endpoint's `connected` metadata once it equals `expected`, with `connectivity_ts`.
async fn connected(platform: &Platform, endpoint_id: &str, expected: bool) -> i64 {
    eventually(DEADLINE, &format!("connected = {expected}"), || async {
        let (_, metadata) = platform
            .get(&format!("/epr/api/v1/endpoints/{endpoint_id}/metadata"))
            .await;
        (metadata["connected"] == json!(expected)).then(|| metadata["connectivity_ts"].as_i64().unwrap())
    })
    .await
}

async fn connectivity(platform: Platform) {
    let endpoint_id = platform.register(AV, "online-meter").await;
    let topic = format!("kp1/{AV}/epmx/online-meter/get/keys/1");

    let mut device = platform.device("online-1").await;
    device.request(&topic, "").await;
    let first = connected(&platform, &endpoint_id, true).await;
    device.client.disconnect().await.unwrap();
    let offline = connected(&platform, &endpoint_id, false).await;
    assert!(offline >= first);
    let mut again = platform.device("online-2").await;
    again.request(&topic, "").await;
    let back = connected(&platform, &endpoint_id, true).await;
    assert!(back >= offline);

    // The connectivity keys are the platform's: devices neither see nor overwrite them, and a
    // full update keeps them.
    let (suffix, body) = again
        .request(
            &format!("kp1/{AV}/epmx/online-meter/update/2"),
            r#"{"model":"m"}"#,
        )
        .await;
    assert_eq!(suffix, "/status", "{body}");
    let (_, body) = again
        .request(&format!("kp1/{AV}/epmx/online-meter/get/3"), "")
        .await;
    assert_eq!(body, json!({"model": "m"}));
    let (suffix, body) = again
        .request(
            &format!("kp1/{AV}/epmx/online-meter/update/keys/4"),
            r#"{"connected":false}"#,
        )
        .await;
    assert_eq!(
        (suffix.as_str(), body["statusCode"].as_i64()),
        ("/error", Some(403)),
        "{body}"
    );
    assert_eq!(connected(&platform, &endpoint_id, true).await, back);

    let q = format!("data?timeSeriesName=connectivity&fromDate=now-1h&endpointId={endpoint_id}");
    let values = eventually(DEADLINE, "three connectivity points", || async {
        let points = series(&platform, &q, &endpoint_id, "connectivity").await;
        (points.len() == 3).then_some(points)
    })
    .await;
    let values: Vec<Value> = values.into_iter().map(|(_, v)| v).collect();
    assert_eq!(values, [json!(1), json!(0), json!(1)]);
}

#[tokio::test]
async fn connectivity_with_kaa_up() {
    connectivity(Platform::up().await).await;
}

#[tokio::test]
async fn connectivity_in_cluster_mode() {
    connectivity(Platform::cluster().await).await;
}

/// The quickstart with a configured `temperature` series (a number at `/temperature`, timed by
/// `ts`) and batches of at most 3 samples.
fn strict_blueprint() -> String {
    let quickstart = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../blueprints/quickstart.yaml"),
    )
    .unwrap();
    quickstart
        .replace("    - kind: dcx\n", "    - kind: dcx\n      config: { maxBatch: 3 }\n")
        .replace(
            "            autoExtract: true\n",
            "            autoExtract: false\n            timeSeries:\n              - name: temperature\n                timestampPath: ts\n                values: [{ name: value, path: /temperature }]\n",
        )
}

#[tokio::test]
async fn bad_samples_are_refused_and_wrong_types_cost_only_their_value() {
    let platform = Platform::up_with(&strict_blueprint()).await;
    let endpoint_id = platform.register(AV, "bad-meter").await;
    let mut device = platform.device("bad").await;
    let topic = |rid: u32| format!("kp1/{AV}/dcx/bad-meter/json/{rid}");

    for (rid, payload, status, reason) in [
        (1, "{nope".to_owned(), 400, "invalid JSON"),
        (2, "[]".to_owned(), 400, "empty batch"),
        (
            3,
            "[1,2,3,4]".to_owned(),
            413,
            "batch of 4 samples is over the limit of 3",
        ),
    ] {
        let (suffix, body) = device.request(&topic(rid), payload).await;
        assert_eq!(
            (suffix.as_str(), body["statusCode"].as_i64()),
            ("/error", Some(status)),
            "{body}"
        );
        assert!(body["reasonPhrase"].as_str().unwrap().contains(reason), "{body}");
    }

    // A wrong type skips that value; the batch is accepted and the rest stored.
    let (suffix, _) = device
        .request(
            &topic(4),
            json!([
                {"temperature": "hot", "ts": 1_714_564_800_000_i64},
                {"temperature": 5, "ts": 1_714_564_801_000_i64},
                {"temperature": 6, "ts": "not a time"},
            ])
            .to_string(),
        )
        .await;
    assert_eq!(suffix, "/status");
    let q = format!(
        "data?timeSeriesName=temperature&fromDate=2024-05-01&toDate=2024-05-02&endpointId={endpoint_id}"
    );
    let points = series(&platform, &q, &endpoint_id, "temperature").await;
    assert_eq!(points, [("2024-05-01T12:00:01.000Z".to_owned(), json!(5))]);

    // Bad queries get a JSON error.
    let (status, body) = platform
        .get(&format!(
            "/epts/api/v1/applications/{APP}/time-series/data?timeSeriesName=temperature&fromDate=soon"
        ))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("fromDate"), "{body}");
    let (status, _) = platform
        .get("/epts/api/v1/applications/nope/time-series/last")
        .await;
    assert_eq!(status, 404);
    assert!(!platform.processes[0].log().contains("panicked"));
}
