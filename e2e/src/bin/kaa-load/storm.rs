//! Scenario `storm`: `--connections` connect cycles, `--window` at once, each with a fresh
//! endpoint token: connect, subscribe to its replies, one request, wait for its `/status`,
//! disconnect. On kaa-rs the request's token is validated through the credential service (a
//! token the gateway has not seen before, so its cache does not answer). Reports cycles per
//! second, failures and the cycle latency. Bounded by `--duration`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::{Args, Incoming, connect, latency_json, merged, payload, register_all, round3};

pub(crate) async fn run(args: &Args) -> anyhow::Result<Value> {
    register_all(args, args.connections).await?;
    let args = Arc::new(args.clone());
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let permits = Arc::new(Semaphore::new(usize::from(args.window)));
    let mut tasks = tokio::task::JoinSet::new();
    eprintln!(
        "storm: {} connect cycles, {} at once",
        args.connections, args.window
    );
    let start = Instant::now();
    for i in 0..args.connections {
        let permit = permits.clone().acquire_owned().await?;
        if Instant::now() >= deadline {
            break;
        }
        let args = args.clone();
        tasks.spawn(async move {
            let began = Instant::now();
            let left = deadline.saturating_duration_since(began);
            let result = tokio::time::timeout(left, cycle(&args, i)).await;
            drop(permit);
            match result {
                Ok(Ok(())) => Ok(began.elapsed()),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err("the run's time was up".to_owned()),
            }
        });
    }
    let mut latencies_us = Vec::with_capacity(args.connections);
    let (mut failures, mut first_failure) = (0u64, None);
    while let Some(result) = tasks.join_next().await {
        match result.context("cycle task")? {
            Ok(took) => latencies_us.push(u64::try_from(took.as_micros()).unwrap_or(u64::MAX)),
            Err(why) => {
                failures += 1;
                first_failure.get_or_insert(why);
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies_us.sort_unstable();
    let completed = latencies_us.len();
    let rate = completed as f64 / elapsed;
    let latency = latency_json(&latencies_us);
    println!("scenario storm: connect + subscribe + one request with a fresh token + disconnect");
    println!(
        "  {completed} cycles in {elapsed:.2}s ({rate:.0}/s), {} at once, failures {failures}",
        args.window
    );
    println!("  cycle latency: {latency}");
    if let Some(why) = &first_failure {
        println!("  first failure: {why}");
    }
    let summary = json!({
        "scenario": "storm",
        "connections": args.connections,
        "window": args.window,
        "completed": completed,
        "failures": failures,
        "elapsed_s": round3(elapsed),
        "cycles_per_s": round3(rate),
    });
    Ok(merged(summary, latency))
}

/// One connect cycle with token `i`.
async fn cycle(args: &Args, i: usize) -> anyhow::Result<()> {
    let topic = args.request_topic(i);
    let mut conn = connect(args, i, &topic, true).await?;
    let timeout = Duration::from_secs_f64(args.timeout);
    conn.client
        .publish(format!("{topic}/1"), args.qos(), false, payload(i, 1))
        .await?;
    let reply = tokio::time::timeout(timeout, conn.rx.recv()).await;
    let outcome = match reply {
        Ok(Some(Incoming::Reply {
            topic: t, payload, ..
        })) => {
            let t = String::from_utf8_lossy(&t);
            match t.ends_with("/status") {
                true => Ok(()),
                false => Err(anyhow::anyhow!("{t}: {}", String::from_utf8_lossy(&payload))),
            }
        }
        Ok(Some(Incoming::Closed(why))) => Err(anyhow::anyhow!("closed: {why}")),
        Ok(None) => Err(anyhow::anyhow!("the event loop ended")),
        Err(_) => Err(anyhow::anyhow!("no reply within {timeout:?}")),
    };
    conn.close().await;
    outcome
}
