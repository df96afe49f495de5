//! Live configuration under `kaa up`: edits of the Blueprint file apply to the running services
//! while a device stays connected on one MQTT connection, and an invalid edit is reported while
//! the previous config keeps serving.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::time::Duration;

use kaa_e2e::{DEADLINE, Platform};
use kaa_testkit::eventually;
use serde_json::Value;

const AV: &str = "demo_application_v1";
const AV2: &str = "demo_application_v2";

fn quickstart() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../blueprints/quickstart.yaml"))
        .unwrap()
}

/// `text` with `anchor` followed by `added` (the anchor must be there).
fn insert_after(text: &str, anchor: &str, added: &str) -> String {
    assert!(text.contains(anchor), "the quickstart no longer has {anchor:?}");
    text.replacen(anchor, &format!("{anchor}{added}"), 1)
}

/// The quickstart with a second application version (served by EPMX), EPL maintaining the
/// metadata key `online` (so EPMX makes it read-only for devices) and a gateway payload limit.
fn edited_quickstart(limits: &str) -> String {
    let text = insert_after(
        &quickstart(),
        "          extensions: [epmx, dcx, cmx, cmx_ota, cex, bcx]\n",
        &format!("        - name: {AV2}\n          extensions: [epmx]\n"),
    );
    let text = insert_after(
        &text,
        "    - kind: epl\n",
        "      config:\n        connectedKey: online\n",
    );
    insert_after(
        &text,
        "    - kind: kpc\n      config:\n",
        &format!("        limits: {limits}\n"),
    )
}

async fn health(platform: &Platform) -> Value {
    reqwest::get(format!("{}/health", platform.http))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The config version `/health` reports for `instance`.
async fn version(platform: &Platform, instance: &str) -> String {
    let body = health(platform).await;
    body["configs"][instance]["version"]
        .as_str()
        .unwrap_or_else(|| panic!("no config version of {instance} in /health: {body}"))
        .to_owned()
}

#[tokio::test]
async fn blueprint_edits_apply_live_on_the_same_connection_and_bad_edits_keep_the_old_config() {
    let platform = Platform::up_with(&quickstart()).await;
    let file = platform.dir.path().join("blueprint.yaml");
    platform.register(AV, "live-1").await;
    let mut device = platform.device("live-device").await;

    // Before the edit: the second version is unknown to the gateway, `online` is the device's
    // own key, and 100 bytes are within the gateway's payload limit.
    let (suffix, body) = device
        .request(&format!("kp1/{AV2}/epmx/live-2/get/keys/1"), "")
        .await;
    assert_eq!(suffix, "/error", "{body}");
    assert!(body.to_string().contains(AV2), "{body}");
    let topic = format!("kp1/{AV}/epmx/live-1/update/keys/2");
    assert_eq!(device.request(&topic, r#"{"online": 1}"#).await.0, "/status");
    let big = format!(r#"{{"note": "{}"}}"#, "x".repeat(90));
    let topic = format!("kp1/{AV}/epmx/live-1/update/keys/3");
    assert_eq!(device.request(&topic, big.clone()).await.0, "/status");
    let (kpc_before, epmx_before) = (version(&platform, "kpc").await, version(&platform, "epmx").await);

    std::fs::write(&file, edited_quickstart("{ maxPayloadBytes: 64 }")).unwrap();
    eventually(DEADLINE, "the gateway to run the edited config", || async {
        (version(&platform, "kpc").await != kpc_before).then_some(())
    })
    .await;
    eventually(DEADLINE, "EPMX to run the edited config", || async {
        (version(&platform, "epmx").await != epmx_before).then_some(())
    })
    .await;

    // The new version registers (EPR, CM) and is routed (KPC), on the same connection.
    platform.register(AV2, "live-2").await;
    let (suffix, body) = device
        .request(&format!("kp1/{AV2}/epmx/live-2/get/keys/4"), "")
        .await;
    assert_eq!(suffix, "/status", "{body}");
    let (suffix, body) = device
        .request(&format!("kp1/{AV}/epmx/live-1/update/keys/5"), r#"{"online": 2}"#)
        .await;
    assert_eq!(suffix, "/error", "EPL maintains `online` now: {body}");
    assert!(body.to_string().contains("online"), "{body}");
    let (suffix, body) = device
        .request(&format!("kp1/{AV}/epmx/live-1/update/keys/6"), big.clone())
        .await;
    assert_eq!(suffix, "/error", "over the new maxPayloadBytes: {body}");
    assert!(body.to_string().contains("64"), "{body}");

    // An invalid edit: reported naming the field, and the edited config keeps serving.
    let running = version(&platform, "kpc").await;
    std::fs::write(
        &file,
        edited_quickstart("{ maxPayloadBytes: 64, maxConnections: 0 }"),
    )
    .unwrap();
    eventually(DEADLINE, "the invalid edit to be reported", || async {
        let log = platform.processes[0].log();
        (log.contains("Blueprint edit REJECTED") && log.contains("maxConnections")).then_some(())
    })
    .await;
    assert_eq!(version(&platform, "kpc").await, running);
    let (suffix, body) = device
        .request(&format!("kp1/{AV2}/epmx/live-2/get/keys/7"), "")
        .await;
    assert_eq!(suffix, "/status", "{body}");
    let (suffix, _) = device
        .request(&format!("kp1/{AV}/epmx/live-1/update/keys/8"), big)
        .await;
    assert_eq!(suffix, "/error", "still the edited limit");

    // The one connection carried every request: it never dropped.
    assert_eq!(device.closed(Duration::from_millis(50)).await, None);
    let metrics = reqwest::get(format!("{}/metrics", platform.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            r#"kaa_config_info{{instance="kpc",version="{running}"}} 1"#
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"kaa_config_applies_total{instance="kpc",outcome="applied"} 1"#),
        "{metrics}"
    );
}
