//! The `kaa` command's refusals: clear messages, non-zero exits, nothing started.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::process::{Command, Output};

use kaa_e2e::kaa_bin;

fn kaa(args: &[&str]) -> Output {
    Command::new(kaa_bin()).args(args).output().unwrap()
}

fn blueprint(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../blueprints")
        .join(name)
        .display()
        .to_string()
}

/// `kaa render` of the quickstart Blueprint into `out`, which must succeed.
fn render_quickstart(out: &Path) {
    let rendered = kaa(&[
        "render",
        &blueprint("quickstart.yaml"),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
}

#[test]
fn an_invalid_blueprint_is_refused_with_every_mistake_named() {
    let out = kaa(&[
        "up",
        &blueprint("invalid.yaml"),
        "--mqtt-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "invalid.yaml is not a usable Blueprint",
        "spec.services: needs a `kpc` service",
        "spec.services[1].replicas: must be between 1 and 1000",
        "spec.applications[0].versions[0].extensions[1]: no service instance named `dcx`",
        "spec.applications[1].versions[0].name: duplicate application version `smart_meter_v1`",
    ] {
        assert!(stderr.contains(expected), "missing `{expected}` in:\n{stderr}");
    }
}

#[test]
fn render_writes_one_config_per_instance_and_run_checks_the_kind() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("configs");
    render_quickstart(&out_dir);
    let mut files: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    for expected in [
        "bcx.json",
        "cex.json",
        "cm.json",
        "cmx.json",
        "cmx_ota.json",
        "dcx.json",
        "epl.json",
        "epmx.json",
        "epr.json",
        "epts.json",
        "kpc.json",
    ] {
        assert!(files.iter().any(|f| f == expected), "{expected} in {files:?}");
    }
    assert_eq!(files.len(), 11, "{files:?}");
    let kpc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("kpc.json")).unwrap()).unwrap();
    assert_eq!(kpc["kind"], "kpc");
    assert_eq!(kpc["appVersions"]["demo_application_v1"]["extensions"][0], "epmx");

    let out = kaa(&[
        "run",
        "epr",
        "--config",
        out_dir.join("epmx.json").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("configures a `epmx` service, not `epr`"));
}

#[test]
fn a_busy_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = kaa(&[
        "up",
        "--data-dir",
        data.to_str().unwrap(),
        "--mqtt-addr",
        &addr,
        "--ws-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen for MQTT on {addr}")),
        "{stderr}"
    );
}

#[test]
fn tls_listener_addresses_need_a_blueprint_with_that_listener() {
    for (flag, env, field) in [
        ("--mqtts-addr", "KAA_MQTTS_ADDR", "mqtts"),
        ("--wss-addr", "KAA_WSS_ADDR", "wss"),
        ("--https-addr", "KAA_HTTPS_ADDR", "https"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let out = kaa(&[
            "up",
            "--data-dir",
            data.to_str().unwrap(),
            "--mqtt-addr",
            "127.0.0.1:0",
            "--ws-addr",
            "127.0.0.1:0",
            flag,
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let expected = format!("{flag} ({env}) is set but the Blueprint's kpc has no `{field}` listener");
        assert!(stderr.contains(&expected), "{stderr}");
        assert!(!data.exists(), "nothing was started");
    }
}

#[test]
fn run_lists_every_kind_and_stateful_kinds_need_a_database() {
    let help = kaa(&["run", "--help"]);
    assert!(
        String::from_utf8_lossy(&help.stdout)
            .contains("[possible values: kpc, epr, epmx, cm, epl, dcx, epts, cmx, cex, bcx, web]"),
        "{}",
        String::from_utf8_lossy(&help.stdout)
    );
    let unknown = kaa(&["run", "nope", "--config", "x.json"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr)
            .contains("[possible values: kpc, epr, epmx, cm, epl, dcx, epts, cmx, cex, bcx, web]")
    );

    let dir = tempfile::tempdir().unwrap();
    let configs = dir.path().join("configs");
    render_quickstart(&configs);
    let token = dir.path().join("admin-token");
    std::fs::write(&token, "t0ken").unwrap();
    for kind in ["epr", "cm", "epts", "cmx", "cex", "bcx"] {
        let config = configs.join(format!("{kind}.json"));
        let out = kaa(&[
            "run",
            kind,
            "--config",
            config.to_str().unwrap(),
            "--admin-token-file",
            token.to_str().unwrap(),
        ]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "a `{kind}` service keeps its state in a database and needs --database FILE"
            )),
            "{stderr}"
        );
    }
}
