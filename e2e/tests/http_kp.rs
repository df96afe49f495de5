//! 1/KP over HTTP: the tutorial with `POST /kp1/...` on `kaa up`'s HTTP listener, and the
//! HTTP mapping of 1/KP errors. No admin token is sent: devices use their endpoint token.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use kaa_e2e::Platform;
use serde_json::{Value, json};

const AV: &str = "demo_application_v1";

/// POSTs `body` to `{http}/{path}` without any Authorization; status, Content-Type and body.
async fn post(platform: &Platform, path: &str, body: impl Into<reqwest::Body>) -> (u16, String, Vec<u8>) {
    let response = reqwest::Client::new()
        .post(format!("{}/{path}", platform.http))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.bytes().await.unwrap().to_vec())
}

fn assert_kp_error((status, content_type, body): (u16, String, Vec<u8>), expected: u16) {
    assert_eq!(status, expected, "{}", String::from_utf8_lossy(&body));
    assert_eq!(content_type, "application/json");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["statusCode"], expected, "{body}");
    assert!(
        body["reasonPhrase"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn the_tutorial_over_http_and_its_errors() {
    let platform = Platform::up().await;
    let endpoint_id = platform.register(AV, "http-meter").await;

    let metadata = json!({ "model": "MySmartMeter A300", "mac": "00-14-22-01-23-45" });
    let (status, _, body) = post(
        &platform,
        &format!("kp1/{AV}/epmx/http-meter/update/keys"),
        metadata.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, stored) = platform
        .get(&format!("/epr/api/v1/endpoints/{endpoint_id}/metadata"))
        .await;
    assert_eq!((status, &stored), (200, &metadata));

    let (status, content_type, body) = post(&platform, &format!("kp1/{AV}/epmx/http-meter/get"), "").await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), metadata);
    // A trailing number is a request id, as over MQTT: same answer.
    let (status, _, body) = post(
        &platform,
        &format!("kp1/{AV}/epmx/http-meter/get/5"),
        r#"{"keys":["mac"]}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({ "mac": "00-14-22-01-23-45" })
    );

    let unknown_token = post(&platform, &format!("kp1/{AV}/epmx/no-such-token/get"), "").await;
    assert_kp_error(unknown_token, 401);
    let unknown_extension = post(&platform, &format!("kp1/{AV}/nope/http-meter/get"), "").await;
    assert_kp_error(unknown_extension, 404);
    let unknown_version = post(&platform, "kp1/no_such_v1/epmx/http-meter/get", "").await;
    assert_kp_error(unknown_version, 404);
    let invalid_json = post(
        &platform,
        &format!("kp1/{AV}/epmx/http-meter/update/keys"),
        "{not json",
    )
    .await;
    assert_kp_error(invalid_json, 400);
    let huge = post(
        &platform,
        &format!("kp1/{AV}/epmx/http-meter/update/keys"),
        vec![b' '; 1 << 20],
    )
    .await;
    assert_kp_error(huge, 413);

    // The metadata is untouched by the refused requests.
    let (_, stored) = platform
        .get(&format!("/epr/api/v1/endpoints/{endpoint_id}/metadata"))
        .await;
    assert_eq!(stored, metadata);

    // Only POST under /kp1/ is open: the REST API still needs the admin token.
    let response = reqwest::Client::new()
        .get(format!("{}/epr/api/v1/endpoints", platform.http))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let response = reqwest::Client::new()
        .get(format!("{}/kp1/{AV}/epmx/http-meter/get", platform.http))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test]
async fn curl_as_in_the_readme() {
    let platform = Platform::up().await;
    platform.register(AV, "curl-meter").await;
    let url = format!("{}/kp1/{AV}/epmx/curl-meter/update/keys", platform.http);
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "-X", "POST", &url])
        .args(["-H", "Content-Type: application/json"])
        .args(["-d", r#"{"model":"MySmartMeter A300"}"#])
        .output()
        .await
        .expect("curl is installed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.lines().last(), Some("200"), "{stdout}");

    let (status, _, body) = post(&platform, &format!("kp1/{AV}/epmx/curl-meter/get"), "").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({ "model": "MySmartMeter A300" })
    );
}
