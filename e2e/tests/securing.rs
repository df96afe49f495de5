//! The README's "Securing devices" commands, as written, against `kaa up blueprints/secured.yaml`:
//! openssl certificates, a username/password client, endpoint token states, TLS client
//! certificates and credential deletion, with real curl, jq and mosquitto clients.
//!
//! The blocks run in order in one `sh` session (so `VAR=$(...)` lines carry over), from a
//! temporary directory standing in for the repository root; only ports and the data directory are
//! substituted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Stdio;

use kaa_e2e::{DEADLINE, Platform};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// The README's "Securing devices" `sh` blocks, each as its commands (comment lines dropped,
/// continuation lines kept with their newlines).
fn readme_blocks() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let section = readme
        .split("\n## Securing devices\n")
        .nth(1)
        .expect("README has a `## Securing devices` section");
    let section = section.split("\n## ").next().unwrap();
    section
        .split("```sh\n")
        .skip(1)
        .map(|rest| {
            let block = rest.split("```").next().unwrap();
            let mut commands = Vec::new();
            let mut current = String::new();
            for line in block.lines().filter(|l| !l.trim_start().starts_with('#')) {
                current.push_str(line);
                current.push('\n');
                if !line.ends_with('\\') {
                    commands.push(std::mem::take(&mut current));
                }
            }
            commands
        })
        .collect()
}

/// What one command did.
#[derive(Debug)]
struct Outcome {
    command: String,
    status: i32,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// Asserts the command succeeded and returns its output.
    fn ok(&self) -> &str {
        assert_eq!(
            self.status, 0,
            "README command failed:\n{}stderr: {}",
            self.command, self.stderr
        );
        &self.stdout
    }

    /// Asserts the command succeeded and printed one JSON document.
    fn json(&self) -> Value {
        let out = self.ok();
        serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("{e}: not JSON from\n{}{out}", self.command))
    }
}

/// One `sh` session: variables set by a command are seen by the next ones.
struct Shell {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Where each command's output is captured (outside the working directory).
    io: tempfile::TempDir,
    /// README text -> what it means on this test's platform.
    substitutions: Vec<(String, String)>,
}

impl Shell {
    fn start(cwd: &Path) -> Shell {
        let mut child = tokio::process::Command::new("sh")
            .arg("-u")
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("sh runs");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Shell {
            child,
            stdin,
            stdout,
            io: tempfile::tempdir().unwrap(),
            substitutions: Vec::new(),
        }
    }

    /// Runs one README command (after substitutions) and returns what it did.
    async fn run(&mut self, command: &str) -> Outcome {
        let mut command = command.to_owned();
        for (from, to) in &self.substitutions {
            command = command.replace(from, to);
        }
        let (out, err) = (self.io.path().join("out"), self.io.path().join("err"));
        // A group, not a subshell: assignments persist. Its stdin is not the script's.
        let script = format!(
            "{{\n{command}}} </dev/null >'{}' 2>'{}'\necho \"__done $?\"\n",
            out.display(),
            err.display()
        );
        self.stdin.write_all(script.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
        let line = tokio::time::timeout(DEADLINE * 3, self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("README command did not finish:\n{command}"))
            .unwrap();
        let stderr = std::fs::read_to_string(&err).unwrap_or_default();
        let Some(status) = line.as_deref().and_then(|l| l.strip_prefix("__done ")) else {
            panic!("the shell ended running:\n{command}stderr: {stderr}");
        };
        Outcome {
            status: status.trim().parse().unwrap(),
            stdout: std::fs::read_to_string(&out).unwrap(),
            stderr,
            command,
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn secured_blueprint() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../blueprints/secured.yaml")
}

#[tokio::test]
async fn the_readme_securing_devices_commands_work_as_documented() {
    let blocks = readme_blocks();
    assert_eq!(
        blocks.len(),
        5,
        "certificates, start, password, tokens, TLS: {blocks:#?}"
    );
    let [certificates, start, password, tokens, tls] = <[Vec<String>; 5]>::try_from(blocks).unwrap();

    // 1. Certificates, made where `kaa up` will run.
    let dir = tempfile::tempdir().unwrap();
    let mut sh = Shell::start(dir.path());
    for command in &certificates {
        sh.run(command).await.ok();
    }
    for file in ["ca.pem", "server.pem", "server.key", "client.pem", "client.key"] {
        assert!(dir.path().join("certs").join(file).is_file(), "certs/{file}");
    }

    // 2. The documented start command, run as the harness runs `kaa up` (free ports, temp dir).
    assert_eq!(
        start,
        ["cargo run --release -p kaa -- up blueprints/secured.yaml\n"]
    );
    let platform = Platform::up_from(dir, &secured_blueprint()).await;
    let banner = platform.processes[0].log();
    let mqtts_port = platform.mqtts_port.unwrap();
    for expected in [
        format!(
            "MQTT  127.0.0.1:{}   (clients authenticate with username and password)",
            platform.mqtt_port
        ),
        format!(
            "MQTTS 127.0.0.1:{mqtts_port}   (TLS, client certificates optional; clients authenticate \
             with a TLS client certificate or username and password)"
        ),
        format!(
            "WSS   wss://127.0.0.1:{}/mqtt   (MQTT over WebSocket and TLS, client certificates \
             optional; clients authenticate with a TLS client certificate or username and password)",
            platform.wss_port.unwrap()
        ),
        format!(
            "HTTPS https://127.0.0.1:{}   (1/KP: POST /kp1/...; TLS, client certificates optional; \
             clients authenticate with a TLS client certificate or username and password)",
            platform.https_port.unwrap()
        ),
    ] {
        assert!(banner.contains(&expected), "missing `{expected}` in:\n{banner}");
    }
    assert!(
        !banner.contains("CLIENT AUTHENTICATION IS OFF"),
        "no warning for a secured Blueprint:\n{banner}"
    );
    sh.substitutions = vec![
        ("http://127.0.0.1:8000".into(), platform.http.clone()),
        ("-p 1883".into(), format!("-p {}", platform.mqtt_port)),
        ("-p 8883".into(), format!("-p {mqtts_port}")),
        ("kaa-data/".into(), format!("{}/", platform.data_dir().display())),
    ];

    // 3. Username and password.
    assert_eq!(password.len(), 4, "{password:#?}");
    let credential = sh.run(&password[0]).await.json();
    assert_eq!(
        (
            &credential["kind"],
            &credential["username"],
            &credential["status"]
        ),
        (&json!("password"), &json!("meter-1"), &json!("Active"))
    );
    assert!(credential.get("password").is_none(), "{credential}");
    let endpoint = sh.run(&password[1]).await.json();
    assert_eq!(endpoint["endpointToken"], "secure-meter");
    let update = sh.run(&password[2]).await;
    assert_eq!(update.ok().trim(), "", "the update's /status carries no payload");
    let wrong = sh.run(&password[3]).await;
    assert_eq!(wrong.status, 4, "{wrong:?}");
    assert!(
        wrong
            .stderr
            .contains("Connection Refused: bad user name or password"),
        "{wrong:?}"
    );

    // 4. Endpoint tokens: issue, use, suspend, reactivate, revoke.
    assert_eq!(tokens.len(), 13, "{tokens:#?}");
    sh.run(&tokens[0]).await.ok(); // ENDPOINT_ID=...
    sh.run(&tokens[1]).await.ok(); // ISSUED=...
    let issued = sh.run(&tokens[2]).await.json();
    let token = issued["token"]
        .as_str()
        .expect("the creating answer shows the value");
    assert_eq!(token.len(), 43, "256 bits, base64url: {token}");
    assert_eq!(issued["status"], "Inactive");
    assert_eq!(issued["appVersion"], "demo_application_v1");
    sh.run(&tokens[3]).await.ok(); // TOKEN=...; TOKEN_ID=...
    sh.run(&tokens[4]).await.ok(); // T=...
    assert_eq!(sh.run(&tokens[5]).await.json(), json!({}), "active: served");

    let suspended = sh.run(&tokens[6]).await.json();
    assert_eq!(suspended["status"], "Suspended");
    assert!(suspended.get("token").is_none(), "{suspended}");
    assert_eq!(
        sh.run(&tokens[7]).await.json(),
        json!({ "statusCode": 403, "reasonPhrase": "token suspended" })
    );
    assert_eq!(sh.run(&tokens[8]).await.json()["status"], "Active");
    assert_eq!(sh.run(&tokens[9]).await.json(), json!({}), "reactivated");
    assert_eq!(sh.run(&tokens[10]).await.json()["status"], "Revoked");
    assert_eq!(
        sh.run(&tokens[11]).await.json(),
        json!({ "statusCode": 403, "reasonPhrase": "token revoked" })
    );
    let listed = sh.run(&tokens[12]).await.json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["tokenId"], issued["tokenId"]);
    assert_eq!(listed[0]["status"], "Revoked");
    assert!(
        listed[0].get("token").is_none(),
        "values are never listed: {listed}"
    );

    // 5. TLS client certificates.
    assert_eq!(tls.len(), 6, "{tls:#?}");
    let registered = sh.run(&tls[0]).await.json();
    assert_eq!(registered["kind"], "certificate");
    assert_eq!(registered["clientId"], "meter-tls");
    assert_eq!(registered["issuer"], "CN=kaa-rs demo CA");
    assert!(
        registered["serialNumber"]
            .as_str()
            .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())),
        "{registered}"
    );
    let metadata = json!({ "model": "MySmartMeter A300", "mac": "00-14-22-01-23-45" });
    assert_eq!(sh.run(&tls[1]).await.json(), metadata, "certificate over TLS");
    assert_eq!(sh.run(&tls[2]).await.json(), metadata, "password over TLS");
    // The README's 1/KP over HTTPS commands ("Transports"), with the same certificate and password.
    let https = platform.https_port.unwrap();
    for credential in [
        "--cert certs/client.pem --key certs/client.key",
        "-u meter-1:s3cret-Passw0rd",
    ] {
        let command = format!(
            "curl -s -X POST https://127.0.0.1:{https}/kp1/demo_application_v1/epmx/secure-meter/get \
             --cacert certs/ca.pem {credential}\n"
        );
        assert_eq!(sh.run(&command).await.json(), metadata, "HTTPS: {credential}");
    }
    sh.run(&tls[3]).await.ok(); // CREDENTIAL_ID=...
    assert_eq!(sh.run(&tls[4]).await.ok().trim(), "204");
    let refused = sh.run(&tls[5]).await;
    assert_eq!(refused.status, 5, "{refused:?}");
    assert!(
        refused.stderr.contains("Connection Refused: not authorised"),
        "{refused:?}"
    );
    let (status, _) = platform
        .get(&format!(
            "/ccm/api/v1/clients/{}",
            registered["credentialId"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 404, "the deleted credential is gone");

    // Nothing secret reached the log.
    let log = platform.processes[0].log();
    for secret in ["s3cret-Passw0rd", token] {
        assert!(!log.contains(secret), "the log shows a secret");
    }
}
