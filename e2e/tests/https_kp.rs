//! 1/KP over HTTPS with curl against `kaa up`: the same answers as over plain HTTP, with client
//! authentication by TLS client certificate, and certificates that are missing, untrusted or
//! unregistered refused. Certificates are made in the test (rcgen), the Blueprint is
//! blueprints/secured.yaml's `https` listener with client certificates required.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use kaa_e2e::Platform;
use kaa_e2e::pki::{ca, issue};
use kaa_testkit::free_port;
use serde_json::{Value, json};

const AV: &str = "demo_application_v1";

/// What curl got: HTTP status (0 when there was no HTTP answer), Content-Type and body.
#[derive(Debug, PartialEq)]
struct Got {
    status: u16,
    content_type: String,
    body: Value,
}

/// `curl -X POST url` with the payload and extra arguments.
async fn curl(url: &str, payload: &str, extra: &[String]) -> Got {
    let output = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "-",
            "-w",
            "\n%{http_code} %{content_type}",
            "-X",
            "POST",
            url,
        ])
        .args(["-H", "Content-Type: application/json", "--data-binary", payload])
        .args(extra)
        .output()
        .await
        .expect("curl is installed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let (body, trailer) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let (status, content_type) = trailer.split_once(' ').unwrap_or((trailer, ""));
    Got {
        status: status.parse().unwrap_or(0),
        content_type: content_type.to_owned(),
        body: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

#[tokio::test]
async fn curl_over_https_gets_the_http_answers_and_needs_a_registered_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let authority = ca(dir, "ca");
    issue(dir, "server", &authority, true);
    issue(dir, "device", &authority, false);
    issue(dir, "stranger", &authority, false);
    let rogue = ca(dir, "rogue-ca");
    issue(dir, "rogue", &rogue, false);
    let https_port = free_port();
    let file = |name: &str| dir.join(name).display().to_string();
    let blueprint = format!(
        r#"
apiVersion: kaa-rs.dev/v1alpha1
kind: Blueprint
metadata: {{ name: https }}
spec:
  applications:
    - name: demo_application
      versions: [{{ name: {AV}, extensions: [epmx] }}]
  services:
    - kind: kpc
      config:
        mqtt: {{ auth: password }}
        https:
          listen: 127.0.0.1:{https_port}
          certFile: {server_pem}
          keyFile: {server_key}
          clientCaFile: {ca_pem}
          clientCerts: required
          auth: certificate
    - kind: epr
    - kind: epmx
    - kind: cm
"#,
        server_pem = file("server.pem"),
        server_key = file("server.key"),
        ca_pem = file("ca.pem"),
    );
    let platform = Platform::up_with(&blueprint).await;
    let banner = platform.processes[0].log();
    let expected = format!(
        "HTTPS https://127.0.0.1:{https_port}   (1/KP: POST /kp1/...; TLS, client certificates \
         required; clients authenticate with a TLS client certificate)"
    );
    assert!(banner.contains(&expected), "missing `{expected}` in:\n{banner}");

    platform.register(AV, "tls-meter").await;
    let pem = std::fs::read_to_string(dir.join("device.pem")).unwrap();
    for client in [
        json!({ "clientId": "device", "certificate": pem }),
        json!({ "clientId": "meter", "username": "meter", "password": "s3cret-Passw0rd" }),
    ] {
        let (status, body) = platform
            .request(reqwest::Method::POST, "/ccm/api/v1/clients", Some(&client))
            .await;
        assert_eq!(status, 201, "{body}");
    }

    let http = |path: &str| format!("{}/{path}", platform.http);
    let https = |path: &str| format!("https://127.0.0.1:{https_port}/{path}");
    let basic = ["-u".to_owned(), "meter:s3cret-Passw0rd".to_owned()];
    let tls = |name: &str| {
        vec![
            "--cacert".to_owned(),
            file("ca.pem"),
            "--cert".to_owned(),
            file(&format!("{name}.pem")),
            "--key".to_owned(),
            file(&format!("{name}.key")),
        ]
    };
    let update = format!("kp1/{AV}/epmx/tls-meter/update/keys");
    let metadata = r#"{"model":"MySmartMeter A300","mac":"00-14-22-01-23-45"}"#;
    let got = curl(&https(&update), metadata, &tls("device")).await;
    assert_eq!(got.status, 200, "{got:?}");

    // The same requests over HTTP (Basic, as plain MQTT wants) and HTTPS (certificate).
    for path in [
        format!("kp1/{AV}/epmx/tls-meter/get"),
        format!("kp1/{AV}/epmx/tls-meter/get/7"),
        format!("kp1/{AV}/epmx/no-such-token/get"),
        format!("kp1/{AV}/nope/tls-meter/get"),
    ] {
        let over_http = curl(&http(&path), "{}", &basic).await;
        let over_https = curl(&https(&path), "{}", &tls("device")).await;
        assert_eq!(over_http, over_https, "{path}");
    }
    let got = curl(
        &https(&format!("kp1/{AV}/epmx/tls-meter/get")),
        "{}",
        &tls("device"),
    )
    .await;
    assert_eq!(
        (got.status, got.content_type.as_str(), got.body),
        (
            200,
            "application/json",
            serde_json::from_str::<Value>(metadata).unwrap()
        )
    );

    // No certificate, or one from another CA: no TLS connection, so no HTTP status at all.
    let get = https(&format!("kp1/{AV}/epmx/tls-meter/get"));
    let ca_only = ["--cacert".to_owned(), file("ca.pem")];
    let mut with_password = ca_only.to_vec();
    with_password.extend(basic.clone());
    for (what, args) in [
        ("none", ca_only.to_vec()),
        ("none, with a password", with_password),
        ("untrusted", {
            let mut args = tls("rogue");
            args[1] = file("ca.pem");
            args
        }),
    ] {
        assert_eq!(curl(&get, "{}", &args).await.status, 0, "{what}");
    }
    // Trusted but not registered: refused by the credential service.
    let got = curl(&get, "{}", &tls("stranger")).await;
    assert_eq!(
        (got.status, &got.body["statusCode"]),
        (403, &json!(403)),
        "{got:?}"
    );
}
