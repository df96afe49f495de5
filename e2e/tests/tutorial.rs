//! Kaa's "connect a device" tutorial, end to end: register a smart meter over REST, report its
//! metadata over MQTT from a client that never subscribes, read it back over REST and over EPMX.
//! Once with `kaa up` (one process), once in cluster mode (nats-server + one process per service),
//! and once in cluster mode with EPR and CM on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use kaa_e2e::Platform;
use serde_json::json;

const AV: &str = "demo_application_v1";

/// Runs the tutorial; returns the registered endpoint's id.
async fn tutorial(platform: &Platform) -> String {
    let endpoint_id = platform.register(AV, "meter-token-1").await;
    let mut meter = platform.device("").await; // empty client id, as paho sends by default

    let metadata = json!({ "model": "MySmartMeter A300", "mac": "00-14-22-01-23-45" });
    let topic = format!("kp1/{AV}/epmx/meter-token-1/update/keys/42");
    let (suffix, _) = meter.request(&topic, metadata.to_string()).await;
    assert_eq!(suffix, "/status");

    let (status, body) = platform
        .get(&format!("/epr/api/v1/endpoints/{endpoint_id}/metadata"))
        .await;
    assert_eq!(status, 200);
    // EPL keeps the device's connectivity next to what it reported (asynchronously).
    assert_eq!(kaa_e2e::without_connectivity(body), metadata);

    // EPMX read path: get all, get some keys, list keys.
    let (suffix, body) = meter
        .request(&format!("kp1/{AV}/epmx/meter-token-1/get/7"), "")
        .await;
    assert_eq!((suffix.as_str(), &body), ("/status", &metadata));
    let (_, body) = meter
        .request(
            &format!("kp1/{AV}/epmx/meter-token-1/get/8"),
            r#"{"keys":["mac"]}"#,
        )
        .await;
    assert_eq!(body, json!({ "mac": "00-14-22-01-23-45" }));
    let (_, mut keys) = meter
        .request(&format!("kp1/{AV}/epmx/meter-token-1/get/keys/9"), "")
        .await;
    keys.as_array_mut()
        .unwrap()
        .sort_by_key(|k| k.as_str().map(str::to_owned));
    assert_eq!(keys, json!(["mac", "model"]));

    // The endpoint is listed under its application version.
    let (status, list) = platform
        .get(&format!("/epr/api/v1/endpoints?applicationVersionName={AV}"))
        .await;
    assert_eq!(status, 200);
    assert!(list.to_string().contains(&endpoint_id), "{list}");
    endpoint_id
}

#[tokio::test]
async fn tutorial_with_kaa_up() {
    tutorial(&Platform::up().await).await;
}

#[tokio::test]
async fn tutorial_in_cluster_mode_on_nats() {
    tutorial(&Platform::cluster().await).await;
}

#[tokio::test]
async fn tutorial_in_cluster_mode_on_postgres() {
    let platform = Platform::cluster_on_postgres().await;
    let endpoint_id = tutorial(&platform).await;

    // The state is in PostgreSQL (both services on one database), not in some file.
    let postgres = platform.postgres.as_ref().expect("the platform's PostgreSQL");
    let endpoint = format!("SELECT app_version FROM epr_endpoints WHERE id = '{endpoint_id}'");
    assert_eq!(postgres.psql(&endpoint).await, AV);
    let metadata = format!("SELECT body FROM epr_metadata WHERE endpoint_id = '{endpoint_id}'");
    assert!(postgres.psql(&metadata).await.contains("MySmartMeter A300"));
    let token = format!("SELECT status FROM cm_endpoint_tokens WHERE endpoint_id = '{endpoint_id}'");
    assert_eq!(postgres.psql(&token).await, "Active", "used once by the meter");
}

#[tokio::test]
async fn metadata_survives_a_restart_of_kaa_up() {
    let mut platform = Platform::up().await;
    let endpoint_id = platform.register(AV, "persistent-meter").await;
    let mut meter = platform.device("m").await;
    let topic = format!("kp1/{AV}/epmx/persistent-meter/update/keys/1");
    meter.request(&topic, r#"{"serial":"A-1"}"#).await;
    drop(meter);

    let status = platform.processes[0].terminate();
    assert!(status.success(), "kaa up exits 0 on SIGTERM, got {status}");
    let data_dir = platform.dir.path().join("data");
    assert!(data_dir.join("kaa.db").exists());

    // Same data dir, new process.
    let again = kaa_e2e::Platform::up_in(platform.dir).await;
    let (status, body) = again
        .get(&format!("/epr/api/v1/endpoints/{endpoint_id}/metadata"))
        .await;
    assert_eq!(
        (status, kaa_e2e::without_connectivity(body)),
        (200, json!({ "serial": "A-1" }))
    );
}
