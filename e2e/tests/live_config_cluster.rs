//! Live configuration in cluster mode (`kaa run` processes on a real nats-server): edits of the
//! mounted `--config` files reach every replica without a restart or a dropped connection, each
//! replica reports the version it runs on the bus (17/SCMP `ConfigAppliedEvent`), and a change
//! only a restart can apply is refused while the old listeners keep serving.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use kaa_blueprint::config::ServiceConfig;
use kaa_bus::{Bus, Subscription};
use kaa_e2e::{DEADLINE, Device, Platform, kaa_bin};
use kaa_protocol::avro::AvroRecord;
use kaa_protocol::scmp::ConfigAppliedEvent;
use kaa_protocol::subject;
use serde_json::{Value, json};

const AV: &str = "meter_v1";
const AV2: &str = "meter_v2";

/// A small platform: the gateway, the register, the credential service and the metadata
/// extension; `more_versions` are added to the application.
fn blueprint(more_versions: &str) -> String {
    format!(
        "apiVersion: kaa-rs.dev/v1alpha1
kind: Blueprint
metadata:
  name: live
spec:
  applications:
    - name: meter
      versions:
        - name: {AV}
          extensions: [epmx]
{more_versions}  services:
    - kind: kpc
      config:
        mqtt:
          auth: none
    - kind: epr
    - kind: cm
    - kind: epmx
"
    )
}

/// Every instance's config as `kaa render` writes it for `blueprint`.
fn render(blueprint: &str) -> BTreeMap<String, Value> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blueprint.yaml");
    std::fs::write(&file, blueprint).unwrap();
    let out = dir.path().join("configs");
    let status = std::process::Command::new(kaa_bin())
        .args(["render", file.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let instance = p.file_stem().unwrap().to_str().unwrap().to_owned();
            (
                instance,
                serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap(),
            )
        })
        .collect()
}

/// Replaces a config file the way a ConfigMap volume update does: a new file renamed over it.
fn replace(path: &Path, config: &Value) {
    let next = path.with_extension("next");
    std::fs::write(&next, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// Writes `blueprint`'s configs over the platform's config files; each gateway replica keeps
/// its own listeners (`kpc-N.json`), as the harness gave them.
fn roll_out(platform: &Platform, blueprint: &str) -> BTreeMap<String, String> {
    let rendered = render(blueprint);
    let configs = platform.dir.path().join("configs");
    let mut versions = BTreeMap::new();
    let files: Vec<_> = std::fs::read_dir(&configs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for path in files {
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        if name == "kpc" {
            continue; // rendered for the harness, run by no process
        }
        let mut config = rendered[name.split('-').next().unwrap()].clone();
        if name.starts_with("kpc-") {
            let running: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            config["mqtt"]["listen"] = running["mqtt"]["listen"].clone();
        }
        replace(&path, &config);
        versions.insert(name, version_of(&config));
    }
    versions
}

fn version_of(config: &Value) -> String {
    serde_json::from_value::<ServiceConfig>(config.clone())
        .unwrap()
        .version()
}

/// Waits for `replica` of `instance` to report running `version` (and, if given, refusing
/// something with an error containing `error`); returns the report.
async fn wait_for_report(
    reports: &mut Subscription,
    replica: &str,
    version: &str,
    error: Option<&str>,
) -> ConfigAppliedEvent {
    let found = tokio::time::timeout(DEADLINE, async {
        loop {
            let msg = reports.next().await.expect("the bus subscription ended");
            let event = ConfigAppliedEvent::from_avro(&msg.payload).unwrap();
            let error_matches = match error {
                None => event.error.is_none(),
                Some(text) => event.error.as_deref().is_some_and(|e| e.contains(text)),
            };
            if event.originator_replica_id == replica && event.version == version && error_matches {
                return event;
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!("{replica} did not report version {version} (error {error:?}) within {DEADLINE:?}")
    })
}

async fn health(base: &str) -> Value {
    reqwest::get(format!("{base}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn config_file_edits_reach_every_gateway_replica_without_restart_or_drop() {
    let platform = Platform::cluster_with(&blueprint(""), 2).await;
    let bus = Bus::connect_nats(&platform.nats.as_ref().unwrap().url)
        .await
        .unwrap();
    let mut reports = bus
        .subscribe(&subject::scmp_config_applied("kpc"), None)
        .await
        .unwrap();
    platform.register(AV, "meter-1").await;
    let mut devices = Vec::new();
    for (i, port) in platform.mqtt_ports.iter().enumerate() {
        devices.push(Device::connect(*port, &format!("live-{i}")).await);
    }
    for (i, device) in devices.iter_mut().enumerate() {
        let (suffix, body) = device
            .request(&format!("kp1/{AV2}/epmx/meter-2/get/keys/{i}"), "")
            .await;
        assert_eq!(suffix, "/error", "unknown before the change: {body}");
    }

    let versions = roll_out(
        &platform,
        &blueprint(&format!("        - name: {AV2}\n          extensions: [epmx]\n")),
    );
    for replica in ["kpc-0", "kpc-1"] {
        wait_for_report(&mut reports, replica, &versions[replica], None).await;
        let body = health(&platform.service_http[replica]).await;
        assert_eq!(
            body["config"],
            json!({"version": versions[replica], "error": null})
        );
    }
    // EPR and CM follow their files too: the new version registers.
    for instance in ["epr", "cm", "epmx"] {
        let base = &platform.service_http[instance];
        kaa_testkit::eventually(DEADLINE, &format!("{instance} to run the new config"), || async {
            (health(base).await["config"]["version"] == json!(versions[instance])).then_some(())
        })
        .await;
    }
    // One endpoint per connection: an endpoint that shows up on another replica roams there.
    for (i, device) in devices.iter_mut().enumerate() {
        let token = format!("meter-2-{i}");
        platform.register(AV2, &token).await;
        let (suffix, body) = device
            .request(&format!("kp1/{AV2}/epmx/{token}/get/keys/{}", 10 + i), "")
            .await;
        assert_eq!(
            suffix, "/status",
            "served after the change, same connection: {body}"
        );
    }

    // Moving a listener takes a restart: refused, reported, and the old listener keeps serving.
    let file = platform.dir.path().join("configs").join("kpc-0.json");
    let mut moved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    moved["mqtt"]["listen"] = json!(format!("127.0.0.1:{}", kaa_testkit::free_port()));
    replace(&file, &moved);
    let report = wait_for_report(&mut reports, "kpc-0", &versions["kpc-0"], Some("restart")).await;
    assert_eq!(report.rejected_version, Some(version_of(&moved)));
    let body = health(&platform.service_http["kpc-0"]).await;
    assert_eq!(body["config"]["version"], json!(versions["kpc-0"]));
    assert!(
        body["config"]["error"].as_str().unwrap().contains("restart"),
        "{body}"
    );
    let (suffix, _) = devices[0]
        .request(&format!("kp1/{AV2}/epmx/meter-2-0/get/keys/20"), "")
        .await;
    assert_eq!(suffix, "/status");
    let mut late = Device::connect(platform.mqtt_ports[0], "late").await;
    let (suffix, _) = late
        .request(&format!("kp1/{AV}/epmx/meter-1/get/keys/21"), "")
        .await;
    assert_eq!(
        suffix, "/status",
        "a new client still connects to the old listener"
    );

    for device in &mut devices {
        assert_eq!(
            device.closed(Duration::from_millis(50)).await,
            None,
            "no connection dropped"
        );
    }
    let metrics = reqwest::get(format!("{}/metrics", platform.service_http["kpc-0"]))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for outcome in ["applied", "needs_restart"] {
        let series = format!(r#"kaa_config_applies_total{{instance="kpc",outcome="{outcome}"}} 1"#);
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }
    let mut platform = platform;
    for process in &mut platform.processes {
        assert!(process.is_running(), "{} stopped", process.name());
    }
}
