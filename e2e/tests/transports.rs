//! One endpoint, every transport: the same 1/KP requests over MQTT, MQTT over TLS, MQTT over
//! WebSocket (plain and TLS) from a paho client written like the official Kaa client, and over
//! HTTP and HTTPS with curl, against one `kaa up`. Every transport gets the same answers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::process::Command;

use kaa_e2e::Platform;
use kaa_e2e::pki::{ca, issue};
use serde_json::{Value, json};

const AV: &str = "demo_application_v1";
const TOKEN: &str = "everywhere";

/// The quickstart with every listener on (TLS ones with the test's server certificate); client
/// authentication is off: this test is about transports.
fn blueprint() -> String {
    format!(
        r#"
apiVersion: kaa-rs.dev/v1alpha1
kind: Blueprint
metadata: {{ name: transports }}
spec:
  applications:
    - name: demo_application
      versions: [{{ name: {AV}, extensions: [epmx] }}]
  services:
    - kind: kpc
      config:
        mqtt: {{ auth: none }}
        mqtts: {{ certFile: server.pem, keyFile: server.key, auth: none }}
        ws: {{ auth: none }}
        wss: {{ certFile: server.pem, keyFile: server.key, auth: none }}
        https: {{ certFile: server.pem, keyFile: server.key, auth: none }}
    - kind: epr
    - kind: epmx
    - kind: cm
"#
    )
}

/// The paho client's reply (suffix, JSON body) to `path` with `payload`, over `args`.
async fn over_mqtt(path: &str, payload: &Value, args: Vec<String>) -> (String, Value) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/kaa_like_client.py");
    let mut command = Command::new("python3");
    command
        .arg(script)
        .args(&args)
        .args(["--app-version", AV, "--token", TOKEN, "--path", path])
        .args(["--metadata", &payload.to_string()]);
    let output = tokio::task::spawn_blocking(move || command.output().expect("python3 runs"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "paho {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    let request = report["requestTopic"].as_str().unwrap();
    let suffix = report["topic"].as_str().unwrap().strip_prefix(request).unwrap();
    let body = serde_json::from_str(report["payload"].as_str().unwrap()).unwrap_or(Value::Null);
    (suffix.to_owned(), body)
}

/// curl's answer (`/status` for 200, else `/error`, and the JSON body) to a 1/KP POST.
async fn over_http(url: &str, payload: &Value, extra: &[&str]) -> (String, Value) {
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "-X", "POST", url, "--data-binary"])
        .arg(payload.to_string())
        .args(extra)
        .output()
        .await
        .expect("curl is installed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let (body, status) = stdout.rsplit_once('\n').unwrap();
    let suffix = if status == "200" { "/status" } else { "/error" };
    (
        suffix.to_owned(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn one_endpoint_gets_the_same_answers_over_every_transport() {
    let dir = tempfile::tempdir().unwrap();
    let authority = ca(dir.path(), "ca");
    issue(dir.path(), "server", &authority, true);
    let file = dir.path().join("transports.yaml");
    std::fs::write(&file, blueprint()).unwrap();
    let ca_pem = dir.path().join("ca.pem").display().to_string();
    let platform = Platform::up_from(dir, Path::new(&file)).await;
    platform.register(AV, TOKEN).await;

    let port = |p: u16| p.to_string();
    let mqtt_transports: [(&str, Vec<String>); 4] = [
        ("mqtt", vec!["--port".into(), port(platform.mqtt_port)]),
        (
            "mqtts",
            vec![
                "--port".into(),
                port(platform.mqtts_port.unwrap()),
                "--ca".into(),
                ca_pem.clone(),
            ],
        ),
        (
            "ws",
            vec![
                "--port".into(),
                port(platform.ws_port),
                "--transport".into(),
                "websockets".into(),
            ],
        ),
        (
            "wss",
            vec![
                "--port".into(),
                port(platform.wss_port.unwrap()),
                "--transport".into(),
                "websockets".into(),
                "--ca".into(),
                ca_pem.clone(),
            ],
        ),
    ];
    let https = format!("https://127.0.0.1:{}", platform.https_port.unwrap());

    // Each transport writes one key; every transport then reads back all of them.
    let mut expected = serde_json::Map::new();
    for (name, args) in &mqtt_transports {
        let update = json!({ format!("via_{name}"): true });
        assert_eq!(
            over_mqtt("update/keys", &update, args.clone()).await.0,
            "/status",
            "{name}"
        );
        expected.insert(format!("via_{name}"), json!(true));
    }
    for (name, base, extra) in [
        ("http", platform.http.clone(), vec![]),
        ("https", https.clone(), vec!["--cacert", ca_pem.as_str()]),
    ] {
        let url = format!("{base}/kp1/{AV}/epmx/{TOKEN}/update/keys");
        let update = json!({ format!("via_{name}"): true });
        assert_eq!(over_http(&url, &update, &extra).await.0, "/status", "{name}");
        expected.insert(format!("via_{name}"), json!(true));
    }
    let all = (String::from("/status"), Value::Object(expected));
    // And a refusal: an unknown token is the same 401 everywhere.
    let refusal = |body: &Value| (String::from("/error"), body.clone());
    let unknown = json!({ "statusCode": 401, "reasonPhrase": "unknown or invalid endpoint token" });

    for (name, args) in &mqtt_transports {
        assert_eq!(
            over_mqtt("get", &json!({}), args.clone()).await,
            all,
            "get over {name}"
        );
    }
    for (name, base, extra) in [
        ("http", platform.http.clone(), vec![]),
        ("https", https, vec!["--cacert", ca_pem.as_str()]),
    ] {
        let get = format!("{base}/kp1/{AV}/epmx/{TOKEN}/get");
        assert_eq!(over_http(&get, &json!({}), &extra).await, all, "get over {name}");
        let stranger = format!("{base}/kp1/{AV}/epmx/no-such-token/get");
        assert_eq!(
            over_http(&stranger, &json!({}), &extra).await,
            refusal(&unknown),
            "unknown token over {name}"
        );
    }
}
