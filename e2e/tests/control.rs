//! Device control end to end, under `kaa up` and in cluster mode: configuration (CMX) pushed to an
//! online device and to one that connects later, `applied` recorded; commands (CEX) answered
//! synchronously, delivered on reconnect, never after they expire; binary uploads (BCX); bad
//! input; and a paho client written like the official Kaa Python client doing all of it.
//!
//! Devices here behave like the official client: no SUBSCRIBE, and the BCX `/token` request
//! without request id on connect, which is also what makes the gateway announce them (9/ELCE).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::process::Command as Process;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kaa_e2e::{DEADLINE, Device, Platform};
use rumqttc::QoS;
use serde_json::{Value, json};

const AV: &str = "demo_application_v1";

/// A device connection that keeps the messages a test has not looked at yet: pushes from several
/// extensions (and the token reply) arrive in any order.
struct Dev {
    device: Device,
    unread: Vec<(String, Value)>,
}

impl Dev {
    /// The first message on `topic` (JSON), keeping others for later; panics after [`DEADLINE`].
    async fn next_on(&mut self, topic: &str) -> Value {
        if let Some(i) = self.unread.iter().position(|(t, _)| t == topic) {
            return self.unread.remove(i).1;
        }
        let give_up = tokio::time::Instant::now() + DEADLINE;
        loop {
            let left = give_up.saturating_duration_since(tokio::time::Instant::now());
            let (got, payload) = self.device.next_message(left).await.unwrap_or_else(|| {
                panic!(
                    "nothing on {topic} within {DEADLINE:?}; unread: {:?}",
                    self.unread
                )
            });
            let body = serde_json::from_slice(&payload).unwrap_or(Value::Null);
            if got == topic {
                return body;
            }
            self.unread.push((got, body));
        }
    }

    async fn publish(&self, topic: &str, payload: String) {
        self.device.publish(topic, payload, QoS::AtMostOnce).await;
    }

    /// A request with a request id: its `/status` or `/error` reply (suffix, JSON).
    async fn request(&mut self, topic: &str, payload: &str) -> (String, Value) {
        self.device
            .publish(topic, payload.to_owned(), QoS::AtLeastOnce)
            .await;
        let status = format!("{topic}/status");
        let error = format!("{topic}/error");
        let give_up = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(i) = self.unread.iter().position(|(t, _)| *t == status || *t == error) {
                let (t, body) = self.unread.remove(i);
                return (t[topic.len()..].to_owned(), body);
            }
            let left = give_up.saturating_duration_since(tokio::time::Instant::now());
            let (got, payload) = self
                .device
                .next_message(left)
                .await
                .unwrap_or_else(|| panic!("no reply to {topic} within {DEADLINE:?}"));
            self.unread
                .push((got, serde_json::from_slice(&payload).unwrap_or(Value::Null)));
        }
    }

    /// Whether nothing (read or unread) arrived on `topic` within `wait`.
    async fn nothing_on(&mut self, topic: &str, wait: Duration) -> bool {
        while let Some((got, payload)) = self.device.next_message(wait).await {
            self.unread
                .push((got, serde_json::from_slice(&payload).unwrap_or(Value::Null)));
        }
        !self.unread.iter().any(|(t, _)| t == topic)
    }
}

/// Connects like the official client: `bcx/{token}/token` without request id, then waits for the
/// upload token on `.../token/status`. Returns the device and its upload token.
async fn connect(platform: &Platform, token: &str) -> (Dev, String) {
    static CONNECTIONS: AtomicUsize = AtomicUsize::new(0);
    let n = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
    let mut device = Dev {
        device: platform.device(&format!("{token}-{n}")).await,
        unread: Vec::new(),
    };
    device
        .publish(&format!("kp1/{AV}/bcx/{token}/token"), String::new())
        .await;
    let reply = device
        .next_on(&format!("kp1/{AV}/bcx/{token}/token/status"))
        .await;
    let upload_token = reply["token"].as_str().expect("a token").to_owned();
    (device, upload_token)
}

/// A REST call returning status, `Location` and JSON body.
async fn call(
    platform: &Platform,
    method: reqwest::Method,
    path: &str,
    body: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", platform.base_for(path)))
        .bearer_auth(&platform.admin_token);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, location, response.json().await.unwrap_or(Value::Null))
}

async fn statuses(platform: &Platform, endpoint_id: &str) -> Value {
    let (status, body) = platform
        .get(&format!("/ecr/api/v1/statuses?endpointId={endpoint_id}"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["content"].clone()
}

async fn configuration(platform: Platform) {
    let online_id = platform.register(AV, "cfg-online").await;
    let later_id = platform.register(AV, "cfg-later").await;
    let (mut online, _) = connect(&platform, "cfg-online").await;

    // Set over REST: pushed at once to the device that is online, without request id.
    let (status, body) = platform
        .request(
            reqwest::Method::PUT,
            &format!("/ecr/api/v1/app-versions/{AV}"),
            Some(&json!({ "reportEveryS": 30 })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let config_id = body["configId"].as_str().unwrap().to_owned();
    assert_eq!(body["config"], json!("{\"reportEveryS\":30}"));
    let config_topic = |token: &str| format!("kp1/{AV}/cmx/{token}/config/json/status");
    let pushed = online.next_on(&config_topic("cfg-online")).await;
    assert_eq!(
        pushed,
        json!({ "configId": config_id, "config": { "reportEveryS": 30 } })
    );

    // The official client reports with null fields, without request id.
    online
        .publish(
            &format!("kp1/{AV}/cmx/cfg-online/applied/json"),
            json!({ "configId": config_id, "statusCode": null, "reasonPhrase": null }).to_string(),
        )
        .await;
    kaa_testkit::eventually(DEADLINE, "the applied status", || {
        let platform = &platform;
        let online_id = &online_id;
        async move {
            let s = statuses(platform, online_id).await;
            (s[0]["status"] == "APPLIED").then_some(())
        }
    })
    .await;
    let s = statuses(&platform, &online_id).await;
    assert_eq!(
        (s[0]["configId"].as_str(), s[0]["confirmationStatusCode"].as_i64()),
        (Some(config_id.as_str()), Some(200))
    );

    // A device that connects later gets the current configuration pushed on connect.
    let (mut later, _) = connect(&platform, "cfg-later").await;
    let pushed = later.next_on(&config_topic("cfg-later")).await;
    assert_eq!(pushed["configId"], json!(config_id));
    kaa_testkit::eventually(DEADLINE, "the dispatched status", || {
        let (platform, later_id) = (&platform, &later_id);
        async move { (statuses(platform, later_id).await[0]["status"] == "DISPATCHED").then_some(()) }
    })
    .await;

    // An endpoint's override reaches that endpoint only; its pull with the current id is `{}`.
    let (status, _) = platform
        .request(
            reqwest::Method::PUT,
            &format!("/ecr/api/v1/endpoints/{later_id}/app-versions/{AV}"),
            Some(&json!({ "reportEveryS": 5 })),
        )
        .await;
    assert_eq!(status, 200);
    let pushed = later.next_on(&config_topic("cfg-later")).await;
    assert_eq!(pushed["config"], json!({ "reportEveryS": 5 }));
    let (_, current) = later
        .request(
            &format!("kp1/{AV}/cmx/cfg-later/config/json/42"),
            &json!({ "configId": pushed["configId"] }).to_string(),
        )
        .await;
    assert_eq!(current, json!({}));

    // Reconnecting, the device that applied its configuration is not sent it again.
    drop(online);
    let (mut online, _) = connect(&platform, "cfg-online").await;
    let (_, pulled) = online
        .request(&format!("kp1/{AV}/cmx/cfg-online/config/json/7"), "")
        .await;
    assert_eq!(pulled["configId"], json!(config_id), "the pull answers anyway");
    assert!(
        online
            .nothing_on(&config_topic("cfg-online"), Duration::from_millis(300))
            .await,
        "no push of an applied configuration"
    );
}

#[tokio::test]
async fn configuration_reaches_online_and_later_devices_under_kaa_up() {
    configuration(Platform::up().await).await;
}

#[tokio::test]
async fn configuration_reaches_online_and_later_devices_in_cluster_mode() {
    configuration(Platform::cluster().await).await;
}

async fn commands(platform: Platform) {
    let online_id = platform.register(AV, "cmd-online").await;
    let offline_id = platform.register(AV, "cmd-offline").await;
    let (mut online, _) = connect(&platform, "cmd-online").await;

    // An online device gets the command pushed and answers in time: 200 with the result.
    let path = format!("/cex/api/v1/endpoints/{online_id}/commands/reboot?awaitTimeout=10");
    let invocation = {
        let base = platform.base_for(&path).to_owned();
        let token = platform.admin_token.clone();
        tokio::spawn(async move {
            let response = reqwest::Client::new()
                .post(format!("{base}{path}"))
                .bearer_auth(token)
                .json(&json!({ "delayS": 1 }))
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        })
    };
    let pushed = online
        .next_on(&format!("kp1/{AV}/cex/cmd-online/command/reboot/status"))
        .await;
    assert_eq!(pushed, json!([{ "id": 1, "payload": { "delayS": 1 } }]));
    online
        .publish(
            &format!("kp1/{AV}/cex/cmd-online/result/reboot"),
            json!([{ "id": 1, "statusCode": 200, "payload": { "uptime": 0 } }]).to_string(),
        )
        .await;
    let (status, command) = invocation.await.unwrap();
    assert_eq!(status, 200, "{command}");
    assert_eq!(command["state"], "completed");
    assert_eq!(command["result"]["payload"], json!({ "uptime": 0 }));

    // An offline device: 202 with a Location; a command whose TTL ran out is never delivered.
    let base = format!("/cex/api/v1/endpoints/{offline_id}/commands/reboot");
    let (status, location, body) = call(&platform, reqwest::Method::POST, &base, Some("\"now\"")).await;
    assert_eq!(status, 202, "{body}");
    let location = location.expect("a Location");
    assert_eq!(location, format!("{base}/1"));
    let (status, _, _) = call(
        &platform,
        reqwest::Method::POST,
        &format!("{base}?commandTtl=1"),
        None,
    )
    .await;
    assert_eq!(status, 202);
    let (_, _, expired) = call(&platform, reqwest::Method::GET, &format!("{base}/2"), None).await;
    assert_eq!(expired["state"], "expired");

    let (mut offline, _) = connect(&platform, "cmd-offline").await;
    let pushed = offline
        .next_on(&format!("kp1/{AV}/cex/cmd-offline/command/reboot/status"))
        .await;
    assert_eq!(
        pushed,
        json!([{ "id": 1, "payload": "now" }]),
        "delivered on connect, the expired one not"
    );
    // Recorded once the push was handed to the gateway, which may be after the device has it.
    kaa_testkit::eventually(DEADLINE, "the command recorded as delivered", || {
        let (platform, location) = (&platform, &location);
        async move {
            let (_, _, command) = call(platform, reqwest::Method::GET, location, None).await;
            (command["state"] == "delivered").then_some(())
        }
    })
    .await;
    // The official client strips falsy fields: an id-only result is a 200 without payload.
    offline
        .publish(
            &format!("kp1/{AV}/cex/cmd-offline/result/reboot"),
            json!([{ "id": 1 }]).to_string(),
        )
        .await;
    kaa_testkit::eventually(DEADLINE, "the result over REST", || {
        let (platform, location) = (&platform, &location);
        async move {
            let (_, _, c) = call(platform, reqwest::Method::GET, location, None).await;
            (c["state"] == "completed").then_some(c)
        }
    })
    .await;
    let (_, _, expired) = call(&platform, reqwest::Method::GET, &format!("{base}/2"), None).await;
    assert_eq!(expired["state"], "expired");

    // Bad input: invalid command type, unknown endpoint, results for unknown ids.
    let (status, _, body) = call(
        &platform,
        reqwest::Method::POST,
        &format!("/cex/api/v1/endpoints/{online_id}/commands/re.boot"),
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let unknown = "00000000-0000-4000-8000-000000000000";
    let (status, _, body) = call(
        &platform,
        reqwest::Method::POST,
        &format!("/cex/api/v1/endpoints/{unknown}/commands/reboot"),
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (_, error) = online
        .request(
            &format!("kp1/{AV}/cex/cmd-online/result/reboot/9"),
            &json!([{ "id": 77, "statusCode": 200 }]).to_string(),
        )
        .await;
    assert_eq!(error["statusCode"], 404, "{error}");
    let (suffix, error) = online
        .request(&format!("kp1/{AV}/cex/cmd-online/result/reboot/10"), "{not json")
        .await;
    assert_eq!(
        (suffix.as_str(), error["statusCode"].as_i64()),
        ("/error", Some(400))
    );
}

#[tokio::test]
async fn commands_are_answered_delivered_on_reconnect_and_expire_under_kaa_up() {
    commands(Platform::up().await).await;
}

#[tokio::test]
async fn commands_are_answered_delivered_on_reconnect_and_expire_in_cluster_mode() {
    commands(Platform::cluster().await).await;
}

async fn uploads(platform: Platform) {
    let endpoint_id = platform.register(AV, "uploader").await;
    let (_device, upload_token) = connect(&platform, "uploader").await;
    let upload = format!(
        "{}/bcx/api/v1/binary-data?name=logs_today.txt",
        platform.base_for("/bcx/")
    );
    let client = reqwest::Client::new();
    // No admin token: the upload token is the credential.
    let response = client
        .post(&upload)
        .header("X-Auth-Token", &upload_token)
        .header("content-type", "application/octet-stream")
        .body(vec![0u8, 1, 2, 254, 255])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let refused = client
        .post(&upload)
        .header("X-Auth-Token", "not-a-token")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    let (status, list) = platform
        .get(&format!("/bcx/api/v1/endpoints/{endpoint_id}/binary-data"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["content"][0]["name"], "logs_today.txt");
    assert_eq!(list["content"][0]["size"], 5);
    let download = format!(
        "{}/bcx/api/v1/endpoints/{endpoint_id}/binary-data/logs_today.txt",
        platform.base_for("/bcx/")
    );
    let bytes = client
        .get(&download)
        .bearer_auth(&platform.admin_token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..], &[0u8, 1, 2, 254, 255]);
    let anonymous = client.get(&download).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "downloads need the admin token");
}

#[tokio::test]
async fn binary_data_is_uploaded_with_the_device_token_under_kaa_up() {
    uploads(Platform::up().await).await;
}

#[tokio::test]
async fn binary_data_is_uploaded_with_the_device_token_in_cluster_mode() {
    uploads(Platform::cluster().await).await;
}

#[tokio::test]
async fn oversized_and_invalid_configurations_are_refused() {
    let platform = Platform::up().await;
    let path = format!("/ecr/api/v1/app-versions/{AV}");
    let big = format!("\"{}\"", "x".repeat(70 * 1024));
    let (status, _, body) = call(&platform, reqwest::Method::PUT, &path, Some(&big)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );
    let (status, _, body) = call(&platform, reqwest::Method::PUT, &path, Some("{nope")).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, _) = call(&platform, reqwest::Method::GET, &path, None).await;
    assert_eq!(status, 404, "nothing was stored");
    let (status, _, body) = call(
        &platform,
        reqwest::Method::GET,
        &format!("{path}?name=nope"),
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");

    platform.register(AV, "bad-reporter").await;
    let (mut device, _) = connect(&platform, "bad-reporter").await;
    let (suffix, error) = device
        .request(
            &format!("kp1/{AV}/cmx/bad-reporter/applied/json/3"),
            "{\"statusCode\":200}",
        )
        .await;
    assert_eq!(
        (suffix.as_str(), error["statusCode"].as_i64()),
        ("/error", Some(400)),
        "{error}"
    );
}

#[tokio::test]
async fn a_client_written_like_the_official_kaa_client_completes_its_flow() {
    let platform = Platform::up().await;
    let endpoint_id = platform.register(AV, "py-device").await;
    let (status, _) = platform
        .request(
            reqwest::Method::PUT,
            &format!("/ecr/api/v1/app-versions/{AV}"),
            Some(&json!({ "interval": 10, "unit": "s" })),
        )
        .await;
    assert_eq!(status, 200);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/kaa_official_flow.py");
    let (port, http) = (platform.mqtt_port.to_string(), platform.http.clone());
    let client = tokio::task::spawn_blocking(move || {
        Process::new("python3")
            .args([
                script,
                "--port",
                &port,
                "--http",
                &http,
                "--app-version",
                AV,
                "--token",
                "py-device",
            ])
            .output()
            .expect("python3 runs (make test provides a venv with paho-mqtt)")
    });
    // Stored, then pushed now or on the device's connect; the device answers in time.
    let (status, _, command) = call(
        &platform,
        reqwest::Method::POST,
        &format!("/cex/api/v1/endpoints/{endpoint_id}/commands/switch?awaitTimeout=15"),
        Some(r#"{"on": true}"#),
    )
    .await;
    assert_eq!(status, 200, "{command}");
    assert_eq!(command["result"]["payload"], json!({ "switched": true }));

    let output = client.await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "client failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["config"], json!({ "interval": 10, "unit": "s" }));
    assert_eq!(report["uploadStatus"], 201, "{report}");

    let s = statuses(&platform, &endpoint_id).await;
    assert_eq!(s[0]["status"], "APPLIED", "{s}");
    let (_, list) = platform
        .get(&format!("/bcx/api/v1/endpoints/{endpoint_id}/binary-data"))
        .await;
    assert_eq!(list["content"][0]["name"], "var_log_device.log");
    let (_, metadata) = platform
        .get(&format!("/epr/api/v1/endpoints/{endpoint_id}/metadata"))
        .await;
    assert_eq!(metadata["fw"], "1.0.2");
}
