//! Live configuration in cluster mode: every service process (two gateway replicas) follows
//! `kaa-operator provide` (`kaa run --config-url`) on a real nats-server. Saving an edit of the
//! Blueprint file reaches every replica without a restart, while one MQTT client stays connected
//! and keeps getting replies; the provider's output shows the rollout complete.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::{path::Path, time::Instant};

use kaa_e2e::{DEADLINE, Device, Platform, provide::ConfigProvider};
use serde_json::Value;

const AV: &str = "demo_application_v1";
const AV2: &str = "demo_application_v2";
const V1_EXTENSIONS: &str = "          extensions: [epmx, dcx, cmx, cmx_ota, cex, bcx]\n";

fn quickstart() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../blueprints/quickstart.yaml"))
        .unwrap()
}

/// Whether the rollout line says every instance's every reporting replica runs generation
/// `generation`'s config, with `kpcs` gateway replicas among them.
fn complete(rollout: &Value, generation: i64, kpcs: u64) -> bool {
    let instances = rollout["instances"].as_array().cloned().unwrap_or_default();
    rollout["status"] == "True"
        && rollout["generation"] == generation
        && instances
            .iter()
            .all(|i| i["replicas"].as_u64() > Some(0) && i["applied"] == i["replicas"])
        && instances
            .iter()
            .any(|i| i["name"] == "kpc" && i["applied"].as_u64() == Some(kpcs))
}

fn rollout_complete(provider: &ConfigProvider, generation: i64) -> bool {
    provider.rollout().is_some_and(|r| complete(&r, generation, 2))
}

#[tokio::test]
async fn a_blueprint_edit_reaches_every_replica_live_while_a_device_stays_connected() {
    let platform = Platform::cluster_provided(&quickstart(), 2).await;
    let provider = platform.provider.as_ref().unwrap();
    provider.event("rollout", |r| complete(r, 1, 2)).await;
    let pids: Vec<u32> = platform.processes.iter().map(|p| p.pid()).collect();

    platform.register(AV, "rollout-1").await;
    let mut device = Device::connect(platform.mqtt_ports[0], "rollout-device").await;
    let get = |n: u32| format!("kp1/{AV}/epmx/rollout-1/get/keys/{n}");
    assert_eq!(device.request(&get(1), "").await.0, "/status");
    let (suffix, body) = device
        .request(&format!("kp1/{AV2}/epmx/rollout-2/get/keys/2"), "")
        .await;
    assert_eq!(suffix, "/error", "no second version yet: {body}");

    assert!(quickstart().contains(V1_EXTENSIONS));
    let edited = std::fs::read_to_string(&provider.blueprint).unwrap().replace(
        V1_EXTENSIONS,
        &format!("{V1_EXTENSIONS}        - name: {AV2}\n          extensions: [epmx]\n"),
    );
    provider.edit(&edited);
    // The device keeps talking through the rollout, on its one connection.
    let started = Instant::now();
    let mut n = 3;
    while !rollout_complete(provider, 2) {
        assert!(
            started.elapsed() < DEADLINE,
            "rollout not complete: {:?}",
            provider.rollout()
        );
        assert_eq!(device.request(&get(n), "").await.0, "/status", "request {n}");
        n += 1;
    }

    // The new version registers (EPR and CM run the new config) and is routed by both gateways.
    platform.register(AV2, "rollout-2").await;
    let topic = |n: u32| format!("kp1/{AV2}/epmx/rollout-2/get/keys/{n}");
    let (suffix, body) = device.request(&topic(n), "").await;
    assert_eq!(suffix, "/status", "on the old connection: {body}");
    let mut on_b = Device::connect(platform.mqtt_ports[1], "rollout-device-b").await;
    let (suffix, body) = on_b.request(&topic(n + 1), "").await;
    assert_eq!(suffix, "/status", "through the second gateway: {body}");

    assert_eq!(device.closed(std::time::Duration::from_millis(50)).await, None);
    let now: Vec<u32> = platform.processes.iter().map(|p| p.pid()).collect();
    assert_eq!(now, pids, "no process was restarted");
    let mut platform = platform;
    assert!(platform.processes.iter_mut().all(|p| p.is_running()));
}
