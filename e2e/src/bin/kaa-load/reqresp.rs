//! Scenario `reqresp`: N connections, each with its own endpoint token, each keeping a bounded
//! window of requests in flight (`{topic}/{rid}`, a ~100-byte JSON object) and matching the
//! replies on `/status` (`/error` counts as an error). Requests sent during the measured period
//! (after the warmup) are the ones counted: each ends as completed (latency recorded), error, or
//! timeout (no reply within `--timeout`). After the period the load stays on until the measured
//! requests are answered (or time out), then the run stops. With `--rate` each connection paces
//! its requests evenly instead of refilling its window at once (a load below the peak).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rumqttc::QoS;
use serde_json::{Value, json};

use crate::{Args, Conn, Incoming, connect, latency_json, merged, payload, register_all, round3};

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
    /// Time between two requests of one connection; `None`: unpaced.
    pace: Option<Duration>,
}

pub(crate) async fn run(args: &Args) -> anyhow::Result<Value> {
    register_all(args, args.connections).await?;
    eprintln!("connecting {} MQTT clients...", args.connections);
    let mut conns = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        conns.push(connect(args, i, &args.request_topic(i), true).await?);
    }

    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let schedule = Schedule {
        measure_from,
        measure_until: measure_from + Duration::from_secs_f64(args.duration),
        timeout: Duration::from_secs_f64(args.timeout),
        pace: (args.rate > 0.0).then(|| Duration::from_secs_f64(args.connections as f64 / args.rate)),
    };
    eprintln!(
        "running: {} connections x {} in flight, QoS {}, {}s warmup + {}s measured, rate {}",
        args.connections,
        args.window,
        args.qos,
        args.warmup,
        args.duration,
        pace_text(args.rate)
    );
    let mut drivers = Vec::with_capacity(conns.len());
    for (i, conn) in conns.into_iter().enumerate() {
        let prefix = format!("{}/", args.request_topic(i));
        let (window, qos) = (usize::from(args.window), args.qos());
        drivers.push(tokio::spawn(async move {
            drive(i, conn, prefix, window, qos, schedule).await
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

    let rps = all.completed as f64 / args.duration;
    let latency = latency_json(&all.latencies_us);
    println!(
        "scenario reqresp: {} /{}, ~100-byte JSON, request/reply",
        args.extension, args.resource
    );
    println!(
        "  {} connections x {} in flight, QoS {}, {}s measured after {}s warmup, rate {}",
        args.connections,
        args.window,
        args.qos,
        args.duration,
        args.warmup,
        pace_text(args.rate)
    );
    println!(
        "  completed {}  errors {}  timeouts {}  ({:.0} req/s)",
        all.completed, all.errors, all.timeouts, rps
    );
    println!("  latency: {latency}");
    if all.unmatched > 0 {
        println!("  unmatched or late replies: {}", all.unmatched);
    }
    if !lost.is_empty() {
        println!("  connections lost: {} (first: {})", lost.len(), lost[0]);
    }
    for error in &first_errors {
        println!("  error reply: {error}");
    }
    let summary = json!({
        "scenario": "reqresp",
        "connections": args.connections,
        "window": args.window,
        "qos": args.qos,
        "rate": args.rate,
        "duration_s": args.duration,
        "completed": all.completed,
        "errors": all.errors,
        "timeouts": all.timeouts,
        "rps": round3(rps),
    });
    Ok(merged(summary, latency))
}

fn pace_text(rate: f64) -> String {
    if rate > 0.0 {
        format!("{rate} req/s")
    } else {
        "unpaced".to_owned()
    }
}

/// Where in the pacing interval connection `i` starts, in [0, 1): spreads the connections.
fn fraction(i: usize) -> f64 {
    (i as f64 * 0.618_033_988_75).fract()
}

/// One connection's request loop: keeps `window` requests in flight, matches replies by request
/// id, and measures the requests sent in the measured period; disconnects at the end.
async fn drive(
    conn_index: usize,
    conn: Conn,
    prefix: String,
    window: usize,
    qos: QoS,
    schedule: Schedule,
) -> ConnStats {
    let Conn { client, mut rx, task } = conn;
    let mut stats = ConnStats::default();
    let mut inflight: HashMap<u16, Pending> = HashMap::with_capacity(window * 2);
    let mut next_rid: u16 = 1;
    let mut seq: u64 = 0;
    let mut measured_outstanding = 0usize;
    let hard_stop = schedule.measure_until + schedule.timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    // Paced: the next request may go at `next_send` (spread over the first interval).
    let mut next_send = Instant::now()
        + schedule
            .pace
            .map_or(Duration::ZERO, |p| p.mul_f64(fraction(conn_index)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        let now = Instant::now();
        let draining = now >= schedule.measure_until;
        if draining && (measured_outstanding == 0 || now >= hard_stop) {
            break;
        }
        // Top the window up (the load stays on while the measured requests drain).
        while inflight.len() < window && Instant::now() >= next_send {
            if let Some(pace) = schedule.pace {
                // Catch up at most one interval late: a stalled connection does not burst.
                next_send = (next_send + pace).max(Instant::now());
            }
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
                .publish(topic, qos, false, payload(conn_index, seq))
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
                    let topic = String::from_utf8_lossy(&topic);
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
            () = tokio::time::sleep_until(next_send.into()), if schedule.pace.is_some() && inflight.len() < window => {}
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
    Conn { client, rx, task }.close().await;
    stats
}

/// `(request id, is /status)` for a reply to one of this connection's requests.
pub(crate) fn parse_reply(topic: &str, prefix: &str) -> Option<(u16, bool)> {
    let rest = topic.strip_prefix(prefix)?;
    let (rid, suffix) = rest.split_once('/')?;
    let ok = match suffix {
        "status" => true,
        "error" => false,
        _ => return None,
    };
    Some((rid.parse().ok()?, ok))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_matched_by_request_id() {
        let prefix = "kp1/app/dcx/load-3/json/";
        assert_eq!(
            parse_reply("kp1/app/dcx/load-3/json/7/status", prefix),
            Some((7, true))
        );
        assert_eq!(
            parse_reply("kp1/app/dcx/load-3/json/65535/error", prefix),
            Some((65535, false))
        );
        assert_eq!(parse_reply("kp1/app/dcx/load-30/json/7/status", prefix), None);
        assert_eq!(parse_reply("kp1/app/dcx/load-3/json/7", prefix), None);
    }
}
