//! `kaa-load`: the load generator of the benchmarks (loopback only).
//!
//! It drives either kaa-rs's gateway or the peer of the comparison (Mosquitto plus the
//! `kaa-responder` service, started with `--peer`): the same 1/KP topics and payloads, the same
//! MQTT client (rumqttc), so the two numbers compare like for like.
//!
//! # Layout
//! - this file: the arguments, the shared pieces (endpoint tokens, MQTT connections, payloads,
//!   percentiles) and the scenario dispatch.
//! - [`reqresp`]: requests with a bounded window per connection, matched replies, latencies.
//! - [`ingest`]: fire-and-forget samples, counted where the platform stores them.
//! - [`conns`]: idle connections, connect rate and the server's memory per connection.
//! - [`storm`]: connect, one request with a fresh endpoint token, disconnect; as fast as it goes.
//!
//! Every scenario is bounded in time and count. Output: a human summary, then one JSON line (the
//! last line on stdout).

#![allow(clippy::print_stdout, clippy::print_stderr)] // a CLI tool: stdout is its output

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::{Parser, ValueEnum};
use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, oneshot};

mod conns;
mod ingest;
mod reqresp;
mod storm;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Scenario {
    /// Request/reply with a bounded window per connection (default DCX `/json`).
    Reqresp,
    /// Fire-and-forget samples (no request id), counted where they are stored.
    Ingest,
    /// Idle connections: connect rate, failures, server memory per connection.
    Conns,
    /// Connect + one request with a fresh endpoint token + disconnect, in a loop.
    Storm,
}

#[derive(Debug, Clone, Parser)]
#[command(about = "Load generator for the kaa gateway and its Mosquitto peer (loopback addresses only)")]
struct Args {
    /// The scenario to run.
    #[arg(value_enum, default_value = "reqresp")]
    scenario: Scenario,
    /// MQTT address of the gateway or broker (a loopback IP and port).
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt: SocketAddr,
    /// Base URL of the EPR REST API (loopback host); tokens are registered there.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    http: String,
    /// The peer (Mosquitto + kaa-responder): no endpoint registration; `ingest` reads
    /// `--count-file` instead of `--metrics-url`.
    #[arg(long)]
    peer: bool,
    /// Number of MQTT connections (reqresp, ingest, conns) or of connect cycles (storm), one
    /// endpoint token each.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// reqresp: requests kept in flight per connection; storm: connect cycles at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    window: u16,
    /// QoS of the requests (0 or 1); replies come back at the same QoS.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Measured period, seconds (storm and conns: the longest they may take).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warmup before the measured period, seconds (reqresp: requests sent then are not counted).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// A request without a reply after this many seconds counts as a timeout.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// Application version in the topics and registrations.
    #[arg(long, default_value = "demo_application_v1")]
    app_version: String,
    /// Extension instance the requests go to.
    #[arg(long, default_value = "dcx")]
    extension: String,
    /// Resource path of the requests (without the leading slash).
    #[arg(long, default_value = "json")]
    resource: String,
    /// File with the admin API token, sent as `Authorization: Bearer` when registering (`kaa up`
    /// writes it to `<data-dir>/admin-token`).
    #[arg(long, env = "KAA_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// Endpoint tokens are `{prefix}{i}`; they are registered over REST first (409 is accepted).
    #[arg(long, default_value = "load-")]
    token_prefix: String,
    /// ingest (kaa-rs): the gateway's `/metrics` URL; samples count as stored once DCX answered
    /// them without error (DCX answers after its reliable receiver, EPTS, committed them).
    #[arg(long)]
    metrics_url: Option<String>,
    /// ingest (peer): the file where kaa-responder keeps the number of samples it received.
    #[arg(long)]
    count_file: Option<PathBuf>,
    /// conns: the server's process id, for its resident memory (`VmRSS` in /proc/<pid>/status).
    #[arg(long)]
    server_pid: Option<u32>,
    /// conns: spread the connections over this many source addresses 127.0.0.1, 127.0.0.2, ...
    /// (0: one per 20,000 connections, at least one).
    #[arg(long, default_value_t = 0)]
    source_addrs: usize,
    /// reqresp: paced load, requests per second over all connections (each sends at an even
    /// share, still within its window); 0: as fast as the windows allow.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
}

impl Args {
    fn qos(&self) -> QoS {
        match self.qos {
            0 => QoS::AtMostOnce,
            _ => QoS::AtLeastOnce,
        }
    }

    fn token(&self, i: usize) -> String {
        format!("{}{i}", self.token_prefix)
    }

    /// `kp1/{app}/{ext}/{token}/{resource}`: a request's topic without its request id.
    fn request_topic(&self, i: usize) -> String {
        format!(
            "kp1/{}/{}/{}/{}",
            self.app_version,
            self.extension,
            self.token(i),
            self.resource
        )
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.connections > 0, "--connections must be at least 1");
    ensure!(
        args.duration > 0.0 && args.warmup >= 0.0 && args.timeout > 0.0,
        "bad durations"
    );
    ensure!(
        args.mqtt.ip().is_loopback(),
        "--mqtt {} is not a loopback address",
        args.mqtt
    );
    check_loopback_url(&args.http)?;
    if let Some(url) = &args.metrics_url {
        check_loopback_url(url)?;
    }
    let summary = match args.scenario {
        Scenario::Reqresp => reqresp::run(&args).await?,
        Scenario::Ingest => ingest::run(&args).await?,
        Scenario::Conns => conns::run(&args).await?,
        Scenario::Storm => storm::run(&args).await?,
    };
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

fn check_loopback_url(url: &str) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url).with_context(|| url.to_owned())?;
    let host = parsed.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    ensure!(loopback, "{url} is not a loopback address");
    Ok(())
}

/// Rounds to 3 decimals for the JSON line.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The value at quantile `q` of a sorted slice (nearest rank), 0 if empty.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Latency fields of the JSON line from sorted microseconds.
fn latency_json(sorted_us: &[u64]) -> Value {
    let ms = |q: f64| round3(percentile(sorted_us, q) as f64 / 1000.0);
    json!({
        "p50_ms": ms(0.50),
        "p90_ms": ms(0.90),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "max_ms": round3(sorted_us.last().copied().unwrap_or(0) as f64 / 1000.0),
    })
}

/// Merges the fields of `extra` into the object `base`.
fn merged(mut base: Value, extra: Value) -> Value {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    base
}

/// Registers tokens `0..count` over REST, a few at a time (201 and 409, already there, are
/// fine); nothing for the peer. Returns how long it took.
async fn register_all(args: &Args, count: usize) -> anyhow::Result<Duration> {
    let start = Instant::now();
    if args.peer {
        return Ok(start.elapsed());
    }
    eprintln!("registering {count} endpoint tokens...");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = format!("{}/epr/api/v1/endpoints", args.http.trim_end_matches('/'));
    let admin_token = match &args.admin_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let permits = Arc::new(Semaphore::new(8));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let (client, url, permits) = (client.clone(), url.clone(), permits.clone());
        let admin_token = admin_token.clone();
        let body = json!({
            "appVersion": { "name": args.app_version },
            "endpointToken": args.token(i),
        });
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let mut request = client.post(&url).json(&body);
            if let Some(token) = &admin_token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await?;
            let status = response.status().as_u16();
            if status != 201 && status != 409 {
                bail!("POST {url} {body}: {status} {}", response.text().await?);
            }
            Ok(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.context("register task")??;
    }
    Ok(start.elapsed())
}

/// What a connection's event loop task forwards.
#[derive(Debug)]
enum Incoming {
    Reply {
        topic: bytes::Bytes,
        payload: bytes::Bytes,
        at: Instant,
    },
    Closed(String),
}

/// An open MQTT connection: the client, what arrives on it, its event loop task.
struct Conn {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Incoming>,
    task: tokio::task::JoinHandle<()>,
}

impl Conn {
    /// Disconnects, gives the event loop a second to send it, then stops it.
    async fn close(self) {
        let _ = self.client.disconnect().await;
        let mut task = self.task;
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut task).await;
        task.abort();
    }
}

/// Opens MQTT 3.1.1 connection `i` (client id `kaa-load-{i}`), waits for its CONNACK and, when
/// `replies`, subscribes to the replies of its requests (`{topic}/+/status` and `/+/error`): the
/// peer needs that, and kaa-rs accepts it (it delivers replies either way).
async fn connect(args: &Args, i: usize, topic: &str, replies: bool) -> anyhow::Result<Conn> {
    let mut options = MqttOptions::new(
        format!("kaa-load-{i}"),
        args.mqtt.ip().to_string(),
        args.mqtt.port(),
    );
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(1024 * 1024, 1024 * 1024);
    options.set_inflight(args.window.saturating_add(64));
    let (client, mut eventloop) = AsyncClient::new(options, usize::from(args.window) + 16);
    // Without TCP_NODELAY the client's PUBACK of a reply holds back its next request until the
    // gateway's delayed ACK (40 ms on Linux): it measured 44 ms per request at a window of 1.
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, ready) = oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) if !replies => {
                    if let Some(c) = ready_tx.take() {
                        let _ = c.send(());
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(c) = ready_tx.take() {
                        let _ = c.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let at = Instant::now();
                    let reply = Incoming::Reply {
                        topic: p.topic.into(),
                        payload: p.payload,
                        at,
                    };
                    if tx.send(reply).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Incoming::Closed(e.to_string()));
                    return;
                }
            }
        }
    });
    if replies {
        let qos = args.qos();
        let filters = [
            rumqttc::SubscribeFilter::new(format!("{topic}/+/status"), qos),
            rumqttc::SubscribeFilter::new(format!("{topic}/+/error"), qos),
        ];
        client.subscribe_many(filters).await?;
    }
    tokio::time::timeout(Duration::from_secs(10), ready)
        .await
        .with_context(|| format!("connection {i}: not ready within 10 s"))?
        .with_context(|| format!("connection {i}: closed before it was ready"))?;
    Ok(Conn { client, rx, task })
}

/// A JSON object of about 100 bytes; `seq` changes the stored value on every request.
fn payload(conn: usize, seq: u64) -> Vec<u8> {
    const SIZE: usize = 100;
    let head =
        format!(r#"{{"model":"LoadMeter L100","mac":"00-14-22-01-23-45","conn":{conn},"seq":{seq},"pad":""#);
    let pad = SIZE.saturating_sub(head.len() + 2);
    let mut text = head;
    text.extend(std::iter::repeat_n('x', pad));
    text.push_str("\"}");
    text.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_about_100_bytes_of_json() {
        for (conn, seq) in [(0, 1), (99, 123_456_789)] {
            let bytes = payload(conn, seq);
            assert_eq!(bytes.len(), 100);
            let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            assert_eq!(value["seq"], seq);
        }
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let sorted: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&sorted, 0.5), 500);
        assert_eq!(percentile(&sorted, 0.999), 999);
        assert_eq!(percentile(&sorted, 1.0), 1000);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}
