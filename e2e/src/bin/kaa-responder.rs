//! `kaa-responder`: the benchmarks' peer service, what a user would build instead of kaa-rs on a
//! plain MQTT broker (Mosquitto): one MQTT 5 connection subscribed to `kp1/#` (no-local, so it
//! does not hear its own replies) that parses each request's JSON payload and, when the topic ends
//! in a request id (`kp1/{app}/{ext}/{token}/{resource}/{rid}`), answers on `{topic}/status` with
//! an empty payload (`{topic}/error` when the payload is not JSON), at the request's QoS. It keeps
//! the number of valid payloads received in `--count-file` (rewritten every 100 ms while it
//! changes; it appears once the subscription is in place), which `kaa-load ingest --peer` reads.

#![allow(clippy::print_stderr)] // a CLI tool

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, ensure};
use bytes::Bytes;
use clap::Parser;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::mpsc;

#[derive(Debug, Parser)]
#[command(about = "Answers 1/KP requests on a plain MQTT broker (the benchmarks' peer)")]
struct Args {
    /// The broker's MQTT address (loopback).
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt: SocketAddr,
    /// Where to keep the number of valid payloads received.
    #[arg(long)]
    count_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.mqtt.ip().is_loopback(), "--mqtt must be a loopback address");
    let mut options = MqttOptions::new("kaa-responder", args.mqtt.ip().to_string(), args.mqtt.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(Some(1024 * 1024));
    options.set_outgoing_inflight_upper_limit(1000);
    let (client, mut eventloop) = AsyncClient::new(options, 10_000);
    let received = Arc::new(AtomicU64::new(0));
    // Replies go out from their own task: the event loop must keep polling while the client's
    // request queue is full.
    let (replies, mut to_send) = mpsc::unbounded_channel::<(String, QoS, Bytes)>();
    let publisher = client.clone();
    tokio::spawn(async move {
        while let Some((topic, qos, payload)) = to_send.recv().await {
            if publisher.publish(topic, qos, false, payload).await.is_err() {
                return;
            }
        }
    });
    let mut filter = Filter::new("kp1/#", QoS::AtLeastOnce);
    filter.nolocal = true;
    client.subscribe_many([filter]).await?;
    loop {
        let publish = match eventloop.poll().await.context("MQTT connection")? {
            Event::Incoming(Packet::Publish(publish)) => publish,
            // Subscribed: the count file appears now, so its existence means "ready".
            Event::Incoming(Packet::SubAck(_)) => {
                if let Some(path) = args.count_file.clone() {
                    tokio::spawn(keep_count(path, received.clone()));
                }
                continue;
            }
            _ => continue,
        };
        let Ok(topic) = std::str::from_utf8(&publish.topic) else {
            continue;
        };
        if topic.ends_with("/status") || topic.ends_with("/error") {
            continue;
        }
        let valid = serde_json::from_slice::<serde_json::Value>(&publish.payload).is_ok();
        if valid {
            received.fetch_add(1, Ordering::Relaxed);
        }
        let has_request_id = topic
            .rsplit('/')
            .next()
            .is_some_and(|last| !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()));
        if has_request_id {
            let reply = match valid {
                true => (format!("{topic}/status"), Bytes::new()),
                false => (
                    format!("{topic}/error"),
                    Bytes::from_static(b"{\"statusCode\":400}"),
                ),
            };
            let _ = replies.send((reply.0, publish.qos, reply.1));
        }
    }
}

/// Rewrites `path` with the count whenever it changed (write, then rename: readers never see a
/// partial file).
async fn keep_count(path: PathBuf, received: Arc<AtomicU64>) {
    let temp = path.with_extension("tmp");
    let mut written = None;
    loop {
        let now = received.load(Ordering::Relaxed);
        if written != Some(now) {
            let ok = std::fs::write(&temp, now.to_string()).is_ok() && std::fs::rename(&temp, &path).is_ok();
            if !ok {
                eprintln!("kaa-responder: cannot write {}", path.display());
            }
            written = Some(now);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
