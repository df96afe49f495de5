//! `kaa-load`: a first load generator for the gateway (loopback only).
//!
//! Scenario `reqresp`: N MQTT 3.1.1 connections, each with its own endpoint token (registered
//! over REST first), each keeping a bounded window of EPMX `update/keys` requests in flight and
//! matching the replies on `/status` (`/error` counts as an error). Requests sent during the
//! measured period (after the warmup) are the ones counted: each ends as completed (latency
//! recorded), error, or timeout (no reply within `--timeout`). After the period the generator
//! keeps the load on until the measured requests are answered (or time out), then stops.
//!
//! Output: a human summary, then one JSON line (the last line on stdout).

#![allow(clippy::print_stdout, clippy::print_stderr)] // a CLI tool: stdout is its output

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::{Parser, ValueEnum};
use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, Packet, QoS};
use serde::Serialize;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc, oneshot};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Scenario {
    /// Request/reply: EPMX update/keys with a bounded window per connection.
    Reqresp,
}

#[derive(Debug, Parser)]
#[command(about = "Load generator for the kaa gateway (loopback addresses only)")]
struct Args {
    /// The scenario to run.
    #[arg(value_enum, default_value = "reqresp")]
    scenario: Scenario,
    /// MQTT address of the gateway (a loopback IP and port).
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt: SocketAddr,
    /// Base URL of the EPR REST API (loopback host).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    http: String,
    /// Number of MQTT connections, one endpoint token each.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Requests kept in flight per connection.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    window: u16,
    /// QoS of the requests (0 or 1); replies come back at the same QoS.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Measured period, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warmup before the measured period, seconds (requests sent then are not counted).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// A request without a reply after this many seconds counts as a timeout.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// Application version in the topics and registrations.
    #[arg(long, default_value = "demo_application_v1")]
    app_version: String,
    /// File with the admin API token, sent as `Authorization: Bearer` when registering (`kaa up`
    /// writes it to `<data-dir>/admin-token`).
    #[arg(long, env = "KAA_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<std::path::PathBuf>,
    /// Endpoint tokens are `{prefix}{i}`; they are registered over REST first (409 is accepted).
    #[arg(long, default_value = "load-")]
    token_prefix: String,
}

/// What one connection measured.
#[derive(Debug, Default)]
struct ConnStats {
    latencies_us: Vec<u64>,
    completed: u64,
    errors: u64,
    timeouts: u64,
    /// Replies that came after their request had timed out, or matched nothing.
    unmatched: u64,
    /// The connection was lost before the end (its measured requests in flight count as errors).
    lost: Option<String>,
    /// The first `/error` payload seen.
    first_error: Option<String>,
}

/// The final JSON line, fields in this order.
#[derive(Debug, Serialize)]
struct Summary {
    scenario: &'static str,
    connections: usize,
    window: u16,
    qos: u8,
    duration_s: f64,
    completed: u64,
    errors: u64,
    timeouts: u64,
    rps: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

/// What the event loop task forwards to the driver.
#[derive(Debug)]
enum Incoming {
    Reply {
        topic: String,
        payload: bytes::Bytes,
        at: Instant,
    },
    Closed(String),
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    sent: Instant,
    measured: bool,
}

/// The measurement schedule shared by all connections.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    measure_from: Instant,
    measure_until: Instant,
    timeout: Duration,
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
    match args.scenario {
        Scenario::Reqresp => reqresp(&args).await,
    }
}

fn check_loopback_url(url: &str) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("--http {url}"))?;
    let host = parsed.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    ensure!(loopback, "--http {url} is not a loopback address");
    Ok(())
}

async fn reqresp(args: &Args) -> anyhow::Result<()> {
    let qos = if args.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    eprintln!("registering {} endpoint tokens...", args.connections);
    register_all(args).await?;

    eprintln!("connecting {} MQTT clients...", args.connections);
    let mut conns = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        conns.push(connect(args, i).await?);
    }

    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let schedule = Schedule {
        measure_from,
        measure_until: measure_from + Duration::from_secs_f64(args.duration),
        timeout: Duration::from_secs_f64(args.timeout),
    };
    eprintln!(
        "running: {} connections x {} in flight, QoS {}, {}s warmup + {}s measured",
        args.connections, args.window, args.qos, args.warmup, args.duration
    );
    let mut drivers = Vec::with_capacity(conns.len());
    for (i, (client, rx, eventloop)) in conns.into_iter().enumerate() {
        let prefix = format!(
            "kp1/{}/epmx/{}{i}/update/keys/",
            args.app_version, args.token_prefix
        );
        let window = usize::from(args.window);
        drivers.push(tokio::spawn(async move {
            let stats = drive(i, client.clone(), rx, prefix, window, qos, schedule).await;
            let mut eventloop = eventloop;
            let _ = client.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_secs(1), &mut eventloop).await;
            eventloop.abort();
            stats
        }));
    }
    let mut all = ConnStats::default();
    let mut lost = Vec::new();
    let mut first_errors = Vec::new();
    for driver in drivers {
        let stats = driver.await.context("driver task")?;
        all.latencies_us.extend(stats.latencies_us);
        all.completed += stats.completed;
        all.errors += stats.errors;
        all.timeouts += stats.timeouts;
        all.unmatched += stats.unmatched;
        lost.extend(stats.lost);
        if first_errors.len() < 3 {
            first_errors.extend(stats.first_error);
        }
    }
    all.latencies_us.sort_unstable();

    let ms = |q: f64| percentile(&all.latencies_us, q) as f64 / 1000.0;
    let rps = all.completed as f64 / args.duration;
    let max_ms = all.latencies_us.last().copied().unwrap_or(0) as f64 / 1000.0;
    println!("scenario reqresp: EPMX update/keys, ~100-byte JSON, request/reply");
    println!(
        "  {} connections x {} in flight, QoS {}, {}s measured after {}s warmup",
        args.connections, args.window, args.qos, args.duration, args.warmup
    );
    println!(
        "  completed {}  errors {}  timeouts {}  ({:.0} req/s)",
        all.completed, all.errors, all.timeouts, rps
    );
    println!(
        "  latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        ms(0.50),
        ms(0.90),
        ms(0.99),
        ms(0.999),
        max_ms
    );
    if all.unmatched > 0 {
        println!("  unmatched or late replies: {}", all.unmatched);
    }
    if !lost.is_empty() {
        println!("  connections lost: {} (first: {})", lost.len(), lost[0]);
    }
    for error in &first_errors {
        println!("  error reply: {error}");
    }
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    let summary = Summary {
        scenario: "reqresp",
        connections: args.connections,
        window: args.window,
        qos: args.qos,
        duration_s: args.duration,
        completed: all.completed,
        errors: all.errors,
        timeouts: all.timeouts,
        rps: round(rps),
        p50_ms: round(ms(0.50)),
        p90_ms: round(ms(0.90)),
        p99_ms: round(ms(0.99)),
        p999_ms: round(ms(0.999)),
        max_ms: round(max_ms),
    };
    let summary = serde_json::to_string(&summary)?;
    println!("{summary}");
    Ok(())
}

/// The value at quantile `q` of a sorted slice (nearest rank), 0 if empty.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Registers every token over REST, a few at a time. 201 and 409 (already there) are fine.
async fn register_all(args: &Args) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
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
    for i in 0..args.connections {
        let (client, url, permits) = (client.clone(), url.clone(), permits.clone());
        let admin_token = admin_token.clone();
        let body = json!({
            "appVersion": { "name": args.app_version },
            "endpointToken": format!("{}{i}", args.token_prefix),
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
    Ok(())
}

type Conn = (
    AsyncClient,
    mpsc::UnboundedReceiver<Incoming>,
    tokio::task::JoinHandle<()>,
);

/// Opens one MQTT 3.1.1 connection and waits for its CONNACK.
async fn connect(args: &Args, i: usize) -> anyhow::Result<Conn> {
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
    let (ctx, connected) = oneshot::channel();
    let mut ctx = Some(ctx);
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if let Some(c) = ctx.take() {
                        let _ = c.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let at = Instant::now();
                    let reply = Incoming::Reply {
                        topic: p.topic,
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
    tokio::time::timeout(Duration::from_secs(10), connected)
        .await
        .with_context(|| format!("connection {i}: no CONNACK within 10 s"))?
        .with_context(|| format!("connection {i}: closed before CONNACK"))?;
    Ok((client, rx, task))
}

/// One connection's request loop: keeps `window` requests in flight, matches replies by request
/// id, and measures the requests sent in the measured period.
async fn drive(
    conn: usize,
    client: AsyncClient,
    mut rx: mpsc::UnboundedReceiver<Incoming>,
    prefix: String,
    window: usize,
    qos: QoS,
    schedule: Schedule,
) -> ConnStats {
    let mut stats = ConnStats::default();
    let mut inflight: HashMap<u16, Pending> = HashMap::with_capacity(window * 2);
    let mut next_rid: u16 = 1;
    let mut seq: u64 = 0;
    let mut measured_outstanding = 0usize;
    let hard_stop = schedule.measure_until + schedule.timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        let now = Instant::now();
        let draining = now >= schedule.measure_until;
        if draining && (measured_outstanding == 0 || now >= hard_stop) {
            break;
        }
        // Top the window up (the load stays on while the measured requests drain).
        while inflight.len() < window {
            let rid = next_rid;
            next_rid = if next_rid == u16::MAX { 1 } else { next_rid + 1 };
            if inflight.contains_key(&rid) {
                continue; // still waiting on a request 65535 ids ago
            }
            seq += 1;
            let sent = Instant::now();
            let measured = sent >= schedule.measure_from && sent < schedule.measure_until;
            let topic = format!("{prefix}{rid}");
            if client
                .publish(topic, qos, false, payload(conn, seq))
                .await
                .is_err()
            {
                stats.lost = Some("the MQTT client's event loop stopped".into());
                break;
            }
            inflight.insert(rid, Pending { sent, measured });
            measured_outstanding += usize::from(measured);
        }
        if stats.lost.is_some() {
            break;
        }
        tokio::select! {
            message = rx.recv() => match message {
                Some(Incoming::Reply { topic, payload, at }) => {
                    let Some((rid, ok)) = parse_reply(&topic, &prefix) else {
                        stats.unmatched += 1;
                        continue;
                    };
                    let Some(pending) = inflight.remove(&rid) else {
                        stats.unmatched += 1;
                        continue;
                    };
                    if !ok && stats.first_error.is_none() {
                        let text = String::from_utf8_lossy(&payload);
                        stats.first_error = Some(format!("{topic}: {text}"));
                    }
                    if !pending.measured {
                        continue;
                    }
                    measured_outstanding -= 1;
                    if ok {
                        stats.completed += 1;
                        let micros = at.saturating_duration_since(pending.sent).as_micros();
                        stats.latencies_us.push(u64::try_from(micros).unwrap_or(u64::MAX));
                    } else {
                        stats.errors += 1;
                    }
                }
                Some(Incoming::Closed(reason)) => {
                    stats.lost = Some(reason);
                    break;
                }
                None => {
                    stats.lost = Some("the MQTT client's event loop ended".into());
                    break;
                }
            },
            _ = tick.tick() => {
                let now = Instant::now();
                inflight.retain(|_, p| {
                    let expired = now.saturating_duration_since(p.sent) >= schedule.timeout;
                    if expired && p.measured {
                        stats.timeouts += 1;
                        measured_outstanding -= 1;
                    }
                    !expired
                });
            }
        }
    }
    // What is still in flight: timed out at the hard stop, or cut off by a lost connection.
    let cut = inflight.values().filter(|p| p.measured).count() as u64;
    if stats.lost.is_some() {
        stats.errors += cut;
    } else {
        stats.timeouts += cut;
    }
    stats
}

/// `(request id, is /status)` for a reply to one of this connection's requests.
fn parse_reply(topic: &str, prefix: &str) -> Option<(u16, bool)> {
    let rest = topic.strip_prefix(prefix)?;
    let (rid, suffix) = rest.split_once('/')?;
    let ok = match suffix {
        "status" => true,
        "error" => false,
        _ => return None,
    };
    Some((rid.parse().ok()?, ok))
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
    fn replies_are_matched_by_request_id() {
        let prefix = "kp1/app/epmx/load-3/update/keys/";
        assert_eq!(
            parse_reply("kp1/app/epmx/load-3/update/keys/7/status", prefix),
            Some((7, true))
        );
        assert_eq!(
            parse_reply("kp1/app/epmx/load-3/update/keys/65535/error", prefix),
            Some((65535, false))
        );
        assert_eq!(
            parse_reply("kp1/app/epmx/load-30/update/keys/7/status", prefix),
            None
        );
        assert_eq!(parse_reply("kp1/app/epmx/load-3/update/keys/7", prefix), None);
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
