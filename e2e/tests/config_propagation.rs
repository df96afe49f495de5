//! Benchmark (ignored by default): how long a saved Blueprint edit takes to run in every replica.
//! N `kaa run epmx` replicas follow `kaa-operator provide` on a real nats-server; M edits (each
//! changes EPMX's request timeout) are made one after another, and for each the time
//! from saving the file to the last replica reporting the new version (its `ConfigAppliedEvent`)
//! is recorded, and the time from the provider's broadcast on NATS to that report (the part a
//! reconcile in Kubernetes would start: there is no file poll). Prints p50 / p99 / max of both.
//!
//! ```sh
//! cargo build -p kaa -p kaa-operator
//! cargo nextest run -p kaa-e2e --test config_propagation --run-ignored only --no-capture
//! ```
//! `KAA_BENCH_REPLICAS` (10) and `KAA_BENCH_EDITS` (40) change N and M.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark: fail loudly, print results

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use kaa_bus::Bus;
use kaa_e2e::{DEADLINE, Process, provide::ConfigProvider};
use kaa_protocol::{
    avro::AvroRecord,
    scmp::{ConfigAppliedEvent, PROVIDER, UPSERT},
    subject,
};
use kaa_testkit::{NatsServer, eventually, free_port};

const EPMX: &str = "    - kind: epmx\n";

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every report heard: when, from which replica, which version.
type Heard = Arc<Mutex<Vec<(Instant, String, String)>>>;

/// When each of `replicas` first reported `version` at or after `since`; `None` until all did.
fn all_reported(heard: &Heard, replicas: usize, version: &str, since: Instant) -> Option<Instant> {
    let mut first: BTreeMap<String, Instant> = BTreeMap::new();
    for (at, replica, v) in heard.lock().unwrap().iter() {
        if *at >= since && v == version {
            first.entry(replica.clone()).or_insert(*at);
        }
    }
    (first.len() == replicas).then(|| first.into_values().max().unwrap())
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}

#[tokio::test]
#[ignore = "benchmark: run with --run-ignored only"]
async fn config_propagation() {
    let (replicas, edits) = (setting("KAA_BENCH_REPLICAS", 10), setting("KAA_BENCH_EDITS", 40));
    let nats = NatsServer::start().await;
    let bus = Bus::connect_nats(&nats.url).await.unwrap();
    let heard: Heard = Arc::default();
    let mut reports = bus
        .subscribe(&subject::scmp_config_applied("epmx"), None)
        .await
        .unwrap();
    let announced: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let mut broadcasts = bus
        .subscribe(&subject::scmp_broadcast_configuration(PROVIDER, UPSERT), None)
        .await
        .unwrap();
    let recorder = announced.clone();
    tokio::spawn(async move {
        while broadcasts.next().await.is_some() {
            recorder.lock().unwrap().push(Instant::now());
        }
    });
    let recorder = heard.clone();
    tokio::spawn(async move {
        while let Some(message) = reports.next().await {
            if let Ok(r) = ConfigAppliedEvent::from_avro(&message.payload) {
                let entry = (Instant::now(), r.originator_replica_id, r.version);
                recorder.lock().unwrap().push(entry);
            }
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let blueprint =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../blueprints/quickstart.yaml"))
            .unwrap();
    let provider = ConfigProvider::start(dir.path(), &blueprint, &nats.url).await;
    let served = provider.event("served", |e| e["generation"] == 1).await;
    let mut version = served["versions"]["epmx"].as_str().unwrap().to_owned();
    let config = dir.path().join("epmx.json");
    let response = reqwest::Client::new()
        .get(provider.config_url("epmx"))
        .bearer_auth(provider.token())
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    std::fs::write(&config, body["config"].to_string()).unwrap();

    let started = Instant::now();
    let processes: Vec<Process> = (0..replicas)
        .map(|i| {
            let (addr, replica) = (format!("127.0.0.1:{}", free_port()), format!("epmx-{i}"));
            let url = provider.config_url("epmx");
            let args = [
                "run",
                "epmx",
                "--config",
                config.to_str().unwrap(),
                "--config-url",
                &url,
                "--config-token-file",
                provider.token_file.to_str().unwrap(),
                "--nats-url",
                &nats.url,
                "--http-addr",
                &addr,
                "--replica-id",
                &replica,
            ];
            Process::spawn_logging(&replica, dir.path(), &args, "warn")
        })
        .collect();
    eventually(DEADLINE, "every replica to report its first config", || async {
        all_reported(&heard, replicas, &version, started).map(drop)
    })
    .await;

    let (mut took, mut from_announcement) = (Vec::new(), Vec::new());
    for edit in 0..edits {
        // Edits at varied points of the provider's file poll (a fixed rhythm would lock onto it).
        tokio::time::sleep(Duration::from_millis(u64::try_from(edit * 137 % 500).unwrap())).await;
        let edited = blueprint.replacen(
            EPMX,
            &format!("{EPMX}      config:\n        requestTimeoutMs: {}\n", 2000 + edit),
            1,
        );
        let saved = Instant::now();
        provider.edit(&edited);
        let generation = i64::try_from(edit).unwrap() + 2;
        let served = provider.event("served", |e| e["generation"] == generation).await;
        let next = served["versions"]["epmx"].as_str().unwrap().to_owned();
        assert_ne!(next, version, "edit {edit} changes EPMX's config");
        version = next;
        let done = eventually(DEADLINE, "every replica to report the edit", || async {
            all_reported(&heard, replicas, &version, saved)
        })
        .await;
        took.push(done - saved);
        let announcement = announced
            .lock()
            .unwrap()
            .iter()
            .copied()
            .find(|at| *at >= saved)
            .expect("the edit's broadcast");
        from_announcement.push(done - announcement);
    }
    drop(processes);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for (what, mut samples) in [
        ("file saved -> every replica reports it", took),
        ("announced on NATS -> every replica reports it", from_announcement),
    ] {
        samples.sort();
        println!(
            "{what} ({replicas} replicas, {edits} edits): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms, min {:.0} ms",
            ms(percentile(&samples, 50)),
            ms(percentile(&samples, 99)),
            ms(*samples.last().unwrap()),
            ms(samples[0]),
        );
    }
}
