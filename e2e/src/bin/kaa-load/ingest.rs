//! Scenario `ingest`: N connections publish samples without request id (fire-and-forget, QoS 0
//! or 1) as fast as their client lets them for `--duration` seconds; then the run waits until the
//! platform's stored count stops growing (at most `--timeout` seconds) and reports what was sent
//! and what was stored, and the rates.
//!
//! Stored, for kaa-rs: samples DCX answered without error, from the gateway's `--metrics-url`:
//! answers (`kaa_kpc_request_duration_seconds_count`) minus the extension's errors (error replies
//! `kaa_kpc_replies_total{kind="error"}` minus the gateway's own refusals
//! `kaa_kpc_messages_total{outcome=~"rejected_.xx"}`, e.g. 429 over `maxInFlightPerConnection`,
//! which are never forwarded). DCX answers after its reliable receiver, EPTS, committed the points. For the peer: what kaa-responder
//! received and parsed, from `--count-file`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::{Args, connect, payload, register_all, round3};

pub(crate) async fn run(args: &Args) -> anyhow::Result<Value> {
    register_all(args, args.connections).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let before = stored(args, &http).await?;
    eprintln!("connecting {} MQTT clients...", args.connections);
    let mut conns = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        conns.push(connect(args, i, &args.request_topic(i), false).await?);
    }
    eprintln!(
        "sending for {}s on {} connections, QoS {}",
        args.duration, args.connections, args.qos
    );
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(args.duration);
    let mut senders = Vec::with_capacity(conns.len());
    for (i, conn) in conns.into_iter().enumerate() {
        let (topic, qos) = (args.request_topic(i), args.qos());
        senders.push(tokio::spawn(async move {
            let mut sent = 0u64;
            while Instant::now() < until {
                if conn
                    .client
                    .publish(topic.as_str(), qos, false, payload(i, sent + 1))
                    .await
                    .is_err()
                {
                    break;
                }
                sent += 1;
            }
            conn.close().await;
            sent
        }));
    }
    let mut sent = 0u64;
    for sender in senders {
        sent += sender.await.context("sender task")?;
    }
    let send_s = start.elapsed().as_secs_f64();

    // Drain: until the count holds still for a second, or the timeout.
    let drain_until = Instant::now() + Duration::from_secs_f64(args.timeout);
    let mut last = stored(args, &http).await?;
    let mut last_change = Instant::now();
    while Instant::now() < drain_until && last_change.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = stored(args, &http).await?;
        if now != last {
            (last, last_change) = (now, Instant::now());
        }
    }
    let stored_count = last.saturating_sub(before);
    // Until the last sample arrived: the platform's rate, however long it buffered.
    let stored_s = last_change
        .saturating_duration_since(start)
        .as_secs_f64()
        .max(send_s);
    let sent_rate = sent as f64 / send_s;
    let stored_rate = stored_count as f64 / stored_s;
    println!(
        "scenario ingest: {} /{} without request id, ~100-byte JSON",
        args.extension, args.resource
    );
    println!(
        "  {} connections, QoS {}: sent {sent} in {send_s:.1}s ({sent_rate:.0}/s), stored {stored_count} \
         in {stored_s:.1}s ({stored_rate:.0}/s), lost {}",
        args.connections,
        args.qos,
        sent.saturating_sub(stored_count)
    );
    Ok(json!({
        "scenario": "ingest",
        "connections": args.connections,
        "qos": args.qos,
        "duration_s": args.duration,
        "sent": sent,
        "stored": stored_count,
        "lost": sent.saturating_sub(stored_count),
        "sent_per_s": round3(sent_rate),
        "stored_per_s": round3(stored_rate),
    }))
}

/// The platform's stored count now (see the module docs).
async fn stored(args: &Args, http: &reqwest::Client) -> anyhow::Result<u64> {
    if let Some(path) = &args.count_file {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        return text
            .trim()
            .parse()
            .with_context(|| format!("{}: not a count: {text:?}", path.display()));
    }
    let Some(url) = &args.metrics_url else {
        bail!("ingest needs --metrics-url (kaa-rs) or --count-file (peer)");
    };
    let text = http.get(url).send().await?.error_for_status()?.text().await?;
    let extension = format!("extension=\"{}\"", args.extension);
    let answered = sample(&text, "kaa_kpc_request_duration_seconds_count", &[&extension]);
    // Error replies are the gateway's refusals (never forwarded) plus the extension's errors.
    let errors = sample(&text, "kaa_kpc_replies_total", &[&extension, "kind=\"error\""]);
    let refused = ["rejected_4xx", "rejected_5xx"]
        .map(|outcome| {
            let outcome = format!("outcome=\"{outcome}\"");
            sample(&text, "kaa_kpc_messages_total", &[&extension, &outcome])
        })
        .iter()
        .sum::<u64>();
    Ok(answered.saturating_sub(errors.saturating_sub(refused)))
}

/// The value of the first sample of metric `name` whose labels include every one of `labels`
/// (0 when there is none yet).
fn sample(exposition: &str, name: &str, labels: &[&str]) -> u64 {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(series, _)| {
            series
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{'))
                && labels.iter().all(|label| series.contains(label))
        })
        .find_map(|(_, value)| value.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_by_name_and_labels() {
        let text = "# HELP x\nkaa_kpc_replies_total{extension=\"dcx\",kind=\"status\"} 5\n\
                    kaa_kpc_replies_total{extension=\"dcx\",kind=\"error\"} 2\n\
                    kaa_kpc_request_duration_seconds_count{extension=\"dcx\"} 40\n";
        assert_eq!(
            sample(
                text,
                "kaa_kpc_replies_total",
                &["extension=\"dcx\"", "kind=\"error\""]
            ),
            2
        );
        assert_eq!(
            sample(
                text,
                "kaa_kpc_request_duration_seconds_count",
                &["extension=\"dcx\""]
            ),
            40
        );
        assert_eq!(sample(text, "kaa_kpc_replies_total", &["extension=\"epmx\""]), 0);
    }
}
