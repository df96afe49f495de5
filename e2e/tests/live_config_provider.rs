//! `kaa run --config-url`: replicas follow a 17/SCMP config provider. The provider here is a
//! test double of the operator's HTTP API (the contract's GET, bearer token, JSON answer) on a
//! real socket; the replicas are real `kaa run` processes on a real nats-server.
//!
//! - a replica started with a stale `--config` file runs the provider's version from the start;
//! - an announcement on NATS makes a replica re-fetch at once;
//! - a replica that missed the announcement converges through its periodic check.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use kaa_blueprint::config::ServiceConfig;
use kaa_bus::Bus;
use kaa_e2e::{DEADLINE, Process};
use kaa_protocol::avro::AvroRecord;
use kaa_protocol::scmp::{DEFAULT_TENANT, ServiceSpecificConfigurationUpdateEvent, UPSERT};
use kaa_protocol::subject;
use kaa_testkit::{NatsServer, eventually, free_port};
use serde_json::{Value, json};

const TOKEN: &str = "config-reader-token";

/// The provider's current config of the one instance it serves (`epmx`).
type Served = Arc<Mutex<Value>>;

fn epmx(request_timeout_ms: u64) -> Value {
    json!({"kind": "epmx", "instance": "epmx", "eprInstance": "epr", "requestTimeoutMs": request_timeout_ms})
}

fn version(config: &Value) -> String {
    serde_json::from_value::<ServiceConfig>(config.clone())
        .unwrap()
        .version()
}

async fn instance_config(
    State(served): State<Served>,
    Path(instance): Path<String>,
    headers: HeaderMap,
) -> Response {
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok());
    if bearer != Some(&format!("Bearer {TOKEN}")) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "unknown token"})),
        )
            .into_response();
    }
    if instance != "epmx" {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "no such instance"})),
        )
            .into_response();
    }
    let config = served.lock().unwrap().clone();
    let body = json!({
        "serviceInstanceName": instance, "blueprint": "test/live", "generation": 1,
        "version": version(&config), "config": config,
    });
    axum::Json(body).into_response()
}

/// Serves the contract's GET on a free loopback port; returns its base URL.
async fn provider(served: Served) -> String {
    let app = Router::new()
        .route(
            "/tekton/api/v1/service-instances/{instance}/config",
            get(instance_config),
        )
        .with_state(served);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// `kaa run epmx` with the stale `file`, following `provider`; returns it and its HTTP base.
fn replica(
    dir: &std::path::Path,
    nats: &NatsServer,
    provider: &str,
    id: &str,
    check_secs: &str,
) -> (Process, String) {
    let token_file = dir.join("config-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let file = dir.join("epmx.json");
    let http = format!("127.0.0.1:{}", free_port());
    let args = [
        "run",
        "epmx",
        "--config",
        file.to_str().unwrap(),
        "--nats-url",
        &nats.url,
        "--http-addr",
        &http,
        "--replica-id",
        id,
        "--config-url",
        provider,
        "--config-token-file",
        token_file.to_str().unwrap(),
        "--config-check-secs",
        check_secs,
    ];
    (
        Process::spawn(&format!("kaa-run-{id}"), dir, &args),
        format!("http://{http}"),
    )
}

/// The version `/health` says the replica runs (`None` until it answers).
async fn running(base: &str) -> Option<String> {
    let body: Value = reqwest::get(format!("{base}/health"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body["config"]["version"].as_str().map(str::to_owned)
}

async fn wait_running(base: &str, version: &str, what: &str) {
    eventually(DEADLINE, what, || async {
        (running(base).await.as_deref() == Some(version)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn replicas_follow_the_provider_at_start_on_announcements_and_by_periodic_checks() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("epmx.json"), epmx(1_000).to_string()).unwrap();
    let served: Served = Arc::new(Mutex::new(epmx(2_000)));
    let url = provider(served.clone()).await;
    let bus = Bus::connect_nats(&nats.url).await.unwrap();
    let mut reports = bus
        .subscribe(&subject::scmp_config_applied("epmx"), None)
        .await
        .unwrap();

    // `announced` checks once an hour: only an announcement can change it quickly.
    let (_announced, announced_http) = replica(dir.path(), &nats, &url, "announced", "3600");
    let (_checking, checking_http) = replica(dir.path(), &nats, &url, "checking", "1");
    let provided = version(&epmx(2_000));
    wait_running(
        &announced_http,
        &provided,
        "the stale replica to start on the provider's config",
    )
    .await;
    wait_running(&checking_http, &provided, "the other replica to start on it too").await;
    let report = tokio::time::timeout(DEADLINE, async {
        loop {
            let msg = reports.next().await.unwrap();
            let event = kaa_protocol::scmp::ConfigAppliedEvent::from_avro(&msg.payload).unwrap();
            if event.originator_replica_id == "announced" {
                return event;
            }
        }
    })
    .await
    .expect("a ConfigAppliedEvent from the replica at start");
    assert_eq!((report.version.as_str(), report.error), (provided.as_str(), None));

    // A change nobody announces (a lost announcement): the periodic check finds it.
    *served.lock().unwrap() = epmx(3_000);
    let changed = version(&epmx(3_000));
    wait_running(&checking_http, &changed, "the periodic check to fetch the change").await;
    assert_eq!(
        running(&announced_http).await,
        Some(provided),
        "no announcement yet"
    );

    // The announcement: the other replica re-fetches at once.
    let event = ServiceSpecificConfigurationUpdateEvent {
        correlation_id: "c1".into(),
        timestamp: 1,
        tenant_id: DEFAULT_TENANT.into(),
        app_name: None,
        app_ver_name: None,
    };
    let subject = subject::scmp_service_configuration("epmx", UPSERT);
    bus.publish(&subject, Bytes::from(event.to_avro())).await.unwrap();
    wait_running(
        &announced_http,
        &changed,
        "the announcement to trigger a re-fetch",
    )
    .await;
}
