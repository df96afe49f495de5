//! Benchmark (ignored by default): how long a saved Blueprint edit takes to run in every replica.
//! N `kaa run epmx` replicas follow `kaa-operator provide` on a real nats-server; M edits (each
//! changes EPMX's request timeout) are made one after another, and for each the time
//! from saving the file to the last replica reporting the new version (its `ConfigAppliedEvent`)
//! is recorded, and the time from the provider's announcement to EPMX on NATS to that report (the part a
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
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use kaa_bus::Bus;
use kaa_e2e::{DEADLINE, Process, provide::ConfigProvider};
use kaa_protocol::{
    avro::AvroRecord,
    scmp::{ConfigAppliedEvent, ServiceSpecificConfigurationUpdateEvent, UPSERT},
    subject,
};
use kaa_testkit::{NatsServer, eventually};

const EPMX: &str = "    - kind: epmx\n";

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every report heard: its timestamp (ms since the epoch, the replica's clock: this machine's),
/// the replica, the version.
type Heard = Arc<Mutex<Vec<(i64, String, String)>>>;

fn now_ms() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(since_epoch.as_millis()).unwrap()
}

/// When the last of `replicas` first reported `version` at or after `since`; `None` until all did.
fn all_reported(heard: &Heard, replicas: usize, version: &str, since: i64) -> Option<i64> {
    let mut first: BTreeMap<String, i64> = BTreeMap::new();
    for (at, replica, v) in heard.lock().unwrap().iter() {
        if *at >= since && v == version {
            first.entry(replica.clone()).or_insert(*at);
        }
    }
    (first.len() == replicas).then(|| first.into_values().max().unwrap())
}

fn percentile(sorted: &[i64], p: usize) -> i64 {
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
    // Announcements and reports carry their sender's time: what this task is busy with does not
    // skew them.
    let announced: Arc<Mutex<Vec<i64>>> = Arc::default();
    let mut messages = bus.subscribe("kaa.v1.>", None).await.unwrap();
    let announcement = subject::scmp_service_configuration("epmx", UPSERT);
    let report = subject::scmp_config_applied("epmx");
    let (reports, announcements) = (heard.clone(), announced.clone());
    tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            if message.subject == announcement
                && let Ok(a) = ServiceSpecificConfigurationUpdateEvent::from_avro(&message.payload)
            {
                announcements.lock().unwrap().push(a.timestamp);
            } else if message.subject == report
                && let Ok(r) = ConfigAppliedEvent::from_avro(&message.payload)
            {
                let entry = (r.timestamp, r.originator_replica_id, r.version);
                reports.lock().unwrap().push(entry);
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

    let started = now_ms();
    let processes: Vec<Process> = (0..replicas)
        .map(|i| {
            let replica = format!("epmx-{i}");
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
                "127.0.0.1:0",
                "--replica-id",
                &replica,
                // Only announcements: a periodic check (all replicas started at once) would
                // sometimes fetch an edit before it is announced.
                "--config-check-secs",
                "3600",
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
        let saved = now_ms();
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
            .expect("the edit's announcement");
        from_announcement.push(done - announcement);
    }
    drop(processes);

    for (what, mut samples) in [
        ("file saved -> every replica reports it", took),
        ("announced on NATS -> every replica reports it", from_announcement),
    ] {
        samples.sort();
        println!(
            "{what} ({replicas} replicas, {edits} edits): p50 {} ms, p99 {} ms, max {} ms, min {} ms",
            percentile(&samples, 50),
            percentile(&samples, 99),
            samples.last().unwrap(),
            samples[0],
        );
    }
}
