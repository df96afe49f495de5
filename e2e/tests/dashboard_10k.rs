//! A bounded benchmark, not a test (ignored; no timed assertions): the dashboard's endpoint list
//! with 10,000 registered endpoints. Registers them over REST, then times the requests the list
//! page makes (first page, a deep page, searches, the 304 of a poll) and, with Chromium, page
//! loads and a search in the browser. Prints the numbers; the README's dashboard section has them.
//!
//! `cargo nextest run -p kaa-e2e --test dashboard_10k --run-ignored only --no-capture`
//! (`KAA_BENCH_ENDPOINTS` changes the count).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // benchmark code

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kaa_e2e::Platform;
use reqwest::{Client, StatusCode, header};
use serde_json::{Value, json};

const VERSION: &str = "demo_application_v1";
const REPEAT: usize = 30;

#[tokio::test]
#[ignore = "a benchmark: run explicitly"]
async fn bench_the_endpoint_list_with_10k_endpoints() {
    let count: usize = std::env::var("KAA_BENCH_ENDPOINTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let platform = Platform::up().await;
    let started = Instant::now();
    register(&platform, count).await;
    println!(
        "registered {count} endpoints in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let list = |rest: &str| {
        format!("/epr/api/v1/endpoints?applicationVersionName={VERSION}&include=metadata&limit=25{rest}")
    };
    let last = count.saturating_sub(25);
    let one = format!("mac-{:05}", count / 2);
    let cases = [
        ("first page", list("&offset=0")),
        ("page 200 (offset 4975)", list("&offset=4975")),
        ("last page", list(&format!("&offset={last}"))),
        ("search, 1 match", list(&format!("&search={one}"))),
        ("search, every endpoint matches", list("&search=a300")),
        ("search, no match", list("&search=nothing-like-this")),
    ];
    let client = Client::new();
    for (name, path) in &cases {
        let (status, times) = time(&client, &platform, path, None).await;
        println!("{name:32} {status} {}", summary(&times));
    }
    let (_, tag) = fetch(&client, &platform, &cases[0].1, None).await;
    let (status, times) = time(&client, &platform, &cases[0].1, Some(&tag)).await;
    println!("{:32} {status} {}", "first page, If-None-Match", summary(&times));

    let browser = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    if browser.join("node_modules/playwright-core").exists() {
        let output = Command::new("node")
            .arg(browser.join("load.mjs"))
            .env("KAA_URL", &platform.http)
            .env("KAA_ADMIN_TOKEN", &platform.admin_token)
            .env("KAA_SEARCH", &one)
            .env("KAA_RUNS", "5")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        for (name, key) in [
            ("browser: load + login + list", "loads"),
            ("browser: search typed -> drawn", "searches"),
        ] {
            let times: Vec<Duration> = report[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|ms| Duration::from_secs_f64(ms.as_f64().unwrap() / 1000.0))
                .collect();
            println!("{name:32}     {}", summary(&times));
        }
    }
}

/// Registers `count` endpoints (metadata like the tutorial meter's) from 8 concurrent clients.
async fn register(platform: &Platform, count: usize) {
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let (base, token) = (platform.http.clone(), platform.admin_token.clone());
        workers.spawn(async move {
            let client = Client::new();
            for i in (worker..count).step_by(8) {
                let body = json!({
                    "appVersion": {"name": VERSION},
                    "metadata": {"model": "MySmartMeter A300", "mac": format!("mac-{i:05}"), "serial": i},
                });
                let response = client
                    .post(format!("{base}/epr/api/v1/endpoints"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201);
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.unwrap();
    }
}

async fn fetch(client: &Client, platform: &Platform, path: &str, etag: Option<&str>) -> (StatusCode, String) {
    let mut request = client
        .get(format!("{}{path}", platform.http))
        .bearer_auth(&platform.admin_token);
    if let Some(etag) = etag {
        request = request.header(header::IF_NONE_MATCH, etag);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let tag = response
        .headers()
        .get(header::ETAG)
        .map_or("", |t| t.to_str().unwrap())
        .to_owned();
    response.bytes().await.unwrap();
    (status, tag)
}

/// `REPEAT` sequential requests (after one warm-up); each one's time to the whole body.
async fn time(
    client: &Client,
    platform: &Platform,
    path: &str,
    etag: Option<&str>,
) -> (StatusCode, Vec<Duration>) {
    let (status, _) = fetch(client, platform, path, etag).await;
    let mut times = Vec::with_capacity(REPEAT);
    for _ in 0..REPEAT {
        let start = Instant::now();
        fetch(client, platform, path, etag).await;
        times.push(start.elapsed());
    }
    (status, times)
}

fn summary(times: &[Duration]) -> String {
    let mut ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {:7.1} ms  p90 {:7.1} ms  max {:7.1} ms",
        at(0.5),
        at(0.9),
        at(1.0)
    )
}
