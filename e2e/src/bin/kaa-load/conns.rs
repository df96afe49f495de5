//! Scenario `conns`: N idle MQTT 3.1.1 sessions (CONNECT, CONNACK accepted, then nothing), opened
//! 64 at a time from the source addresses 127.0.0.1, 127.0.0.2, ... (a source address has ~28k
//! ephemeral ports). Reports the connect rate, failures and, with `--server-pid`, the growth of the
//! server's resident memory (`VmRSS`) per connection. Raw sockets rather than a full client keep
//! the generator's own memory and CPU small; keepalive is 600 s, longer than the run.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

use crate::{Args, round3};

/// Connections one source address serves at most (under the ephemeral port range).
const PER_SOURCE: usize = 20_000;

pub(crate) async fn run(args: &Args) -> anyhow::Result<Value> {
    let sources = match args.source_addrs {
        0 => args.connections.div_ceil(PER_SOURCE).max(1),
        n => n,
    };
    ensure!(sources <= 250, "--source-addrs: at most 250");
    let rss_before = args.server_pid.map(rss_kib).transpose()?;
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let permits = Arc::new(Semaphore::new(64));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for i in 0..args.connections {
        let permit = permits.clone().acquire_owned().await?;
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % sources) as u8));
        let server = args.mqtt;
        tasks.spawn(async move {
            let left = deadline.saturating_duration_since(Instant::now());
            let result = tokio::time::timeout(left, open(server, source, i)).await;
            drop(permit);
            match result {
                Ok(Ok(stream)) => Ok(stream),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err("the run's time was up".to_owned()),
            }
        });
        if Instant::now() >= deadline {
            break;
        }
    }
    let mut open_streams = Vec::with_capacity(args.connections);
    let mut failures = 0u64;
    let mut first_failure = None;
    while let Some(result) = tasks.join_next().await {
        match result.context("connect task")? {
            Ok(stream) => open_streams.push(stream),
            Err(why) => {
                failures += 1;
                first_failure.get_or_insert(why);
            }
        }
    }
    let connect_s = start.elapsed().as_secs_f64();
    let connected = open_streams.len();
    // Let the server settle (buffers of the last handshakes) before reading its memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = args.server_pid.map(rss_kib).transpose()?;
    // Every session still open: a closed one reads as end of stream right away.
    let mut closed = 0u64;
    for stream in &open_streams {
        let mut byte = [0u8; 1];
        if let Ok(0) = stream.try_read(&mut byte) {
            closed += 1;
        }
    }
    drop(open_streams);
    let per_conn = match (rss_before, rss_after) {
        (Some(before), Some(after)) if connected > 0 => {
            Some(after.saturating_sub(before) as f64 / connected as f64)
        }
        _ => None,
    };
    let rate = connected as f64 / connect_s;
    println!(
        "scenario conns: {} idle MQTT sessions from {sources} source address(es)",
        args.connections
    );
    println!(
        "  connected {connected} in {connect_s:.2}s ({rate:.0}/s), failures {failures}, closed by the server {closed}"
    );
    if let Some(why) = &first_failure {
        println!("  first failure: {why}");
    }
    if let (Some(before), Some(after), Some(per)) = (rss_before, rss_after, per_conn) {
        println!("  server RSS {before} KiB -> {after} KiB: {per:.2} KiB per connection");
    }
    Ok(json!({
        "scenario": "conns",
        "connections": args.connections,
        "connected": connected,
        "failures": failures,
        "closed": closed,
        "connect_s": round3(connect_s),
        "connects_per_s": round3(rate),
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "rss_per_conn_kib": per_conn.map(round3),
    }))
}

/// A TCP connection from `source` with an accepted MQTT 3.1.1 session.
async fn open(server: SocketAddr, source: IpAddr, i: usize) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let mut stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    stream
        .write_all(&connect_packet(&format!("kaa-idle-{i}"), 600))
        .await?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).await?;
    if connack[0] != 0x20 || connack[3] != 0 {
        bail!("CONNACK {connack:02x?}");
    }
    Ok(stream)
}

/// An MQTT 3.1.1 CONNECT: clean session, no credentials.
pub(crate) fn connect_packet(client_id: &str, keepalive_s: u16) -> Vec<u8> {
    let mut body = Vec::with_capacity(12 + client_id.len());
    body.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02]);
    body.extend_from_slice(&keepalive_s.to_be_bytes());
    let id_len = u16::try_from(client_id.len()).unwrap_or(u16::MAX);
    body.extend_from_slice(&id_len.to_be_bytes());
    body.extend_from_slice(&client_id.as_bytes()[..usize::from(id_len)]);
    let mut packet = vec![0x10];
    let mut remaining = body.len();
    loop {
        let mut byte = (remaining % 128) as u8;
        remaining /= 128;
        if remaining > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if remaining == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

/// The resident memory of process `pid`, KiB (`VmRSS` of /proc/<pid>/status).
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_packet_is_mqtt_311() {
        let packet = connect_packet("c1", 600);
        assert_eq!(
            packet,
            [
                0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0x02, 0x58, 0, 2, b'c', b'1'
            ]
        );
        let long = connect_packet(&"x".repeat(200), 60);
        assert_eq!(&long[..3], &[0x10, 0xd4, 0x01]); // 212 bytes: a two-byte length
    }

    #[test]
    fn own_rss_is_read() {
        assert!(rss_kib(std::process::id()).is_ok_and(|kib| kib > 0));
    }
}
