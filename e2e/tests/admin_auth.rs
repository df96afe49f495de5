//! The admin API's bearer token: every REST route needs it, `/health` does not, `kaa up` keeps it
//! in a private file across restarts, `kaa run` takes it from a file, and it never reaches a log.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::process::Command;

use kaa_e2e::{Platform, kaa_bin};
use reqwest::Method;
use serde_json::{Value, json};

const AV: &str = "demo_application_v1";

/// Sends `method path` with an optional `Authorization` header; returns status, the
/// `WWW-Authenticate` header and the JSON body.
async fn call(
    platform: &Platform,
    method: Method,
    path: &str,
    auth: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut request = reqwest::Client::new().request(method.clone(), format!("{}{path}", platform.http));
    if method == Method::POST {
        request = request.json(&json!({ "appVersion": { "name": AV } }));
    }
    if let Some(auth) = auth {
        request = request.header("Authorization", auth);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, challenge, response.json().await.unwrap_or(Value::Null))
}

fn assert_refused((status, challenge, body): (u16, Option<String>, Value), what: &str) {
    assert_eq!(status, 401, "{what}: {body}");
    assert!(
        challenge.as_deref().is_some_and(|c| c.starts_with("Bearer")),
        "{what}: WWW-Authenticate {challenge:?}"
    );
    assert_eq!(body["error"], "unauthorized", "{what}: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
}

/// The REST checks every mode must pass: refused without or with a wrong token, served with the
/// right one, `/health` open.
async fn rest_requires_the_admin_token(platform: &Platform, wrong_token: &str) {
    let wrong = format!("Bearer {wrong_token}");
    for method in [Method::GET, Method::POST] {
        let what = format!("{method} without a token");
        assert_refused(
            call(platform, method.clone(), "/epr/api/v1/endpoints", None).await,
            &what,
        );
        let what = format!("{method} with a wrong token");
        let refused = call(platform, method.clone(), "/epr/api/v1/endpoints", Some(&wrong)).await;
        assert_refused(refused, &what);
        let what = format!("{method} with another scheme");
        let basic = format!("Basic {}", platform.admin_token);
        assert_refused(
            call(platform, method, "/epr/api/v1/endpoints", Some(&basic)).await,
            &what,
        );
    }
    // The right token: served, and nothing was created by the refused POSTs.
    let right = format!("Bearer {}", platform.admin_token);
    let path = format!("/epr/api/v1/endpoints?applicationVersionName={AV}");
    let (status, _, body) = call(platform, Method::GET, &path, Some(&right)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["totalElements"], 0, "{body}");
    let (status, _, body) = call(platform, Method::POST, "/epr/api/v1/endpoints", Some(&right)).await;
    assert_eq!(status, 201, "{body}");

    let (status, challenge, _) = call(platform, Method::GET, "/health", None).await;
    assert_eq!((status, challenge), (200, None));
}

#[tokio::test]
async fn kaa_up_rest_needs_the_admin_token_and_never_logs_it() {
    // Everything at trace level: whatever any crate logs about a request must not hold a token.
    let mut platform = Platform::up_logging("trace").await;
    let wrong_token = "wrong-admin-token-4b1d9c";
    rest_requires_the_admin_token(&platform, wrong_token).await;
    platform.register(AV, "auth-meter").await;

    let status = platform.processes[0].terminate();
    assert!(status.success(), "kaa up exits 0 on SIGTERM, got {status}");
    let log = platform.processes[0].log();
    assert!(log.contains("kaa-rs is up"), "the banner is captured too:\n{log}");
    assert!(
        log.contains("refusal=WrongToken"),
        "refused requests are logged (without the token):\n{log}"
    );
    for secret in [platform.admin_token.as_str(), wrong_token] {
        assert!(!log.contains(secret), "the log leaks a token ({secret})");
    }
    // Only the banner's instructions mention a bearer header, never a sent one.
    for line in log.lines().filter(|l| l.to_ascii_lowercase().contains("bearer ")) {
        assert!(
            line.contains("$(cat ") || line.contains("<its content>"),
            "{line}"
        );
    }
}

#[tokio::test]
async fn the_admin_token_file_is_private_and_survives_a_restart() {
    let mut platform = Platform::up().await;
    let token_file = platform.data_dir().join("admin-token");
    let token = platform.admin_token.clone();
    assert_eq!(
        token.len(),
        43,
        "32 random bytes, base64url without padding: {token}"
    );
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{token}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    }
    let banner = platform.processes[0].log();
    assert!(
        banner.contains(&format!("Authorization: Bearer $(cat {})", token_file.display())),
        "the banner shows how to send the token:\n{banner}"
    );

    assert!(platform.processes[0].terminate().success());
    let again = Platform::up_in(platform.dir).await;
    assert_eq!(again.admin_token, token, "the token is kept across restarts");
    assert_eq!(again.get("/epr/api/v1/endpoints").await.0, 200);
    assert_refused(
        call(&again, Method::GET, "/epr/api/v1/endpoints", None).await,
        "after the restart",
    );
}

#[tokio::test]
async fn a_token_file_written_before_the_first_start_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("admin-token"), "my-own-admin-token-0123456789\n").unwrap();
    let platform = Platform::up_in(dir).await;
    assert_eq!(platform.admin_token, "my-own-admin-token-0123456789");
    assert_eq!(platform.get("/epr/api/v1/endpoints").await.0, 200);
    let contents = std::fs::read_to_string(platform.data_dir().join("admin-token")).unwrap();
    assert_eq!(contents, "my-own-admin-token-0123456789\n", "never overwritten");
}

#[tokio::test]
async fn cluster_rest_needs_the_token_from_the_admin_token_file() {
    let platform = Platform::cluster().await;
    rest_requires_the_admin_token(&platform, "not-the-cluster-token").await;
}

/// `kaa run epr` with its config rendered from the quickstart, plus `extra` arguments.
fn run_epr(extra: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let bp = dir.path().join("blueprint.yaml");
    std::fs::write(&bp, kaa_e2e::quickstart_with_mqtt(kaa_testkit::free_port())).unwrap();
    let configs = dir.path().join("configs");
    let rendered = Command::new(kaa_bin())
        .args(["render", bp.to_str().unwrap(), "--out", configs.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(rendered.success());
    let config = configs.join("epr.json");
    let db = dir.path().join("epr.db");
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    let args: Vec<String> = extra
        .iter()
        .map(|a| a.replace("EMPTY", empty.to_str().unwrap()))
        .collect();
    Command::new(kaa_bin())
        .args(["run", "epr", "--config", config.to_str().unwrap()])
        .args(["--database", db.to_str().unwrap(), "--http-addr", "127.0.0.1:0"])
        // Nothing listens here: the token check must come first.
        .args([
            "--nats-url",
            &format!("nats://127.0.0.1:{}", kaa_testkit::free_port()),
        ])
        .args(&args)
        .env_remove("KAA_ADMIN_TOKEN_FILE")
        .output()
        .unwrap()
}

#[test]
fn kaa_run_of_a_rest_service_refuses_to_start_without_a_token() {
    let out = run_epr(&[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--admin-token-file"), "{stderr}");

    let out = run_epr(&["--admin-token-file", "EMPTY"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("admin token") && stderr.contains("empty"),
        "{stderr}"
    );
}
