//! `kaa-bench`: the side-by-side comparison of kaa-rs with a plain MQTT broker plus a service of
//! one's own (Mosquitto + `kaa-responder`), the whole of it in one command.
//!
//! Each round starts every target afresh, in turn, and runs every scenario of `kaa-load` against
//! it: `up` (`kaa up` with blueprints/bench.yaml), `cluster` (one `kaa run` process per service on
//! a real nats-server, as the e2e harness starts them) and `peer`. The order of the targets
//! rotates from round to round, so that a slow moment of the shared machine does not always hit
//! the same one. At the end: each figure's median and range per target, and the ratio kaa-rs /
//! peer per round (median and range), printed as a Markdown table and written to
//! `--out`/results.md and results.json (with every run's JSON line). The `kaa` binary is
//! `$KAA_BIN` (scripts/bench.sh builds it); `kaa-load` and `kaa-responder` are looked up next to
//! this binary.
//!
//! # Layout
//! - this file: arguments, the rounds, running `kaa-load`.
//! - [`peer`]: Mosquitto and the responder.
//! - [`report`]: medians, ranges, ratios, the table.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a CLI tool: stdout is its output

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use kaa_e2e::Platform;
use serde_json::{Value, json};

mod peer;
mod report;

use report::Run;

/// In this order: the overload of `ingest-qos0` last (its backlog takes a while to clear).
/// `reqresp80-qos1` is `reqresp-qos1` paced at 80% of the rate the target reached in it, in the
/// same round, for `--sustained` seconds: whether it holds that without errors or timeouts.
const SCENARIOS: [&str; 7] = [
    "reqresp-qos1",
    "reqresp80-qos1",
    "reqresp-qos0",
    "storm",
    "conns",
    "ingest-qos1",
    "ingest-qos0",
];

#[derive(Debug, Parser)]
#[command(about = "Runs kaa-load against kaa-rs (kaa up, cluster mode) and Mosquitto + a responder")]
struct Args {
    /// Rounds (each target and scenario once per round).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// A smoke run: one round, tiny loads of about a second each.
    #[arg(long)]
    quick: bool,
    /// Targets, comma-separated: up, cluster, peer.
    #[arg(long, value_delimiter = ',', default_value = "up,cluster,peer")]
    targets: Vec<String>,
    /// Scenarios, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', default_values_t = SCENARIOS.map(String::from))]
    scenarios: Vec<String>,
    /// Measured seconds of reqresp and ingest.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Measured seconds of reqresp80 (at 80% of the peak).
    #[arg(long, default_value_t = 60.0)]
    sustained: f64,
    /// Warmup seconds of reqresp.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Connections of reqresp and ingest.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Requests in flight per connection in reqresp.
    #[arg(long, default_value_t = 16)]
    window: u16,
    /// Idle connections of conns (the open-file limit, 20,000 per process here, caps it).
    #[arg(long, default_value_t = 19_000)]
    idle: usize,
    /// Connect cycles of storm, and how many at once.
    #[arg(long, default_value_t = 2_000)]
    storm_cycles: usize,
    #[arg(long, default_value_t = 32)]
    storm_window: u16,
    /// Where results.json and results.md go.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// The Blueprint of the kaa-rs targets.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../blueprints/bench.yaml"))]
    blueprint: PathBuf,
}

impl Args {
    fn apply_quick(&mut self) {
        if self.quick {
            self.rounds = 1;
            self.duration = 1.0;
            self.sustained = 1.0;
            self.warmup = 0.5;
            self.connections = 4;
            self.window = 4;
            self.idle = 20;
            self.storm_cycles = 20;
            self.storm_window = 4;
        }
    }
}

/// Where kaa-load sends its load for one target.
struct Endpoint {
    mqtt: String,
    http: String,
    admin_token_file: Option<PathBuf>,
    metrics_url: Option<String>,
    count_file: Option<PathBuf>,
    server_pid: u32,
    /// Every process of the target, to wait until they are idle between scenarios.
    pids: Vec<u32>,
}

/// A running target, kept alive while its scenarios run (dropping it stops it).
enum Running {
    Kaa { _platform: Box<Platform> },
    Peer { _peer: peer::Peer },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    args.apply_quick();
    for target in &args.targets {
        if !["up", "cluster", "peer"].contains(&target.as_str()) {
            bail!("unknown target {target:?} (up, cluster, peer)");
        }
    }
    for scenario in &args.scenarios {
        if !SCENARIOS.contains(&scenario.as_str()) {
            bail!("unknown scenario {scenario:?} ({})", SCENARIOS.join(", "));
        }
    }
    let blueprint = std::fs::read_to_string(&args.blueprint)
        .with_context(|| format!("reading {}", args.blueprint.display()))?;
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("the binary's directory")?
        .to_path_buf();
    std::fs::create_dir_all(&args.out)?;
    let work = tempfile::tempdir()?;

    let mut runs = Vec::new();
    for round in 0..args.rounds {
        let mut order = args.targets.clone();
        let shift = round % order.len().max(1);
        order.rotate_left(shift);
        for target in &order {
            eprintln!("== round {} of {}: {target}", round + 1, args.rounds);
            let dir = work.path().join(format!("{target}-{round}"));
            std::fs::create_dir_all(&dir)?;
            let (running, endpoint) = start(target, &blueprint, &dir, &bin_dir).await?;
            // This target's reqresp-qos1 rate in this round, which reqresp80 paces at 80% of.
            let mut peak = None;
            for scenario in &args.scenarios {
                wait_idle(&endpoint.pids).await;
                let rate = match scenario.as_str() {
                    "reqresp80-qos1" => match peak {
                        Some(rps) => Some(0.8 * rps),
                        None => {
                            eprintln!("   {scenario}: skipped (needs reqresp-qos1 in the same round)");
                            continue;
                        }
                    },
                    _ => None,
                };
                let result = run_load(&args, &bin_dir, &endpoint, scenario, rate).await;
                if scenario == "reqresp-qos1" {
                    peak = result.as_ref().ok().and_then(|v| v["rps"].as_f64());
                }
                match &result {
                    Ok(value) => eprintln!("   {scenario}: {value}"),
                    Err(why) => eprintln!("   {scenario}: FAILED: {why}"),
                }
                runs.push(Run {
                    round,
                    target: target.clone(),
                    scenario: scenario.clone(),
                    result,
                });
            }
            drop(running);
        }
    }

    let rows = report::summarize(&runs, &args.targets, &args.scenarios, args.rounds);
    let table = report::markdown(&rows, &args.targets);
    let machine = machine();
    let header = format!(
        "{} round(s); reqresp/ingest {} connections, {} s measured (reqresp: window {}, {} s warmup; \
         reqresp80: {} s at 80% of reqresp-qos1's rate); conns {}; storm {} cycles, {} at once. Machine: {machine}. Cells: median (min–max) over \
         rounds; ratios per round, kaa-rs / peer; ⚠n: errors, timeouts, failures or lost messages summed.\n",
        args.rounds,
        args.connections,
        args.duration,
        args.window,
        args.warmup,
        args.sustained,
        args.idle,
        args.storm_cycles,
        args.storm_window
    );
    let markdown = format!("{header}\n{table}");
    std::fs::write(args.out.join("results.md"), &markdown)?;
    let document = json!({
        "machine": machine,
        "rounds": args.rounds,
        "settings": {
            "connections": args.connections, "window": args.window, "duration_s": args.duration,
            "warmup_s": args.warmup, "sustained_s": args.sustained, "idle": args.idle, "storm_cycles": args.storm_cycles,
            "storm_window": args.storm_window, "blueprint": args.blueprint,
        },
        "summary": rows,
        "runs": runs,
    });
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&document)?,
    )?;
    println!("{markdown}");
    println!(
        "{}",
        serde_json::to_string(&json!({ "summary": document["summary"] }))?
    );
    Ok(())
}

/// Starts `target` in `dir`.
async fn start(
    target: &str,
    blueprint: &str,
    dir: &Path,
    bin_dir: &Path,
) -> anyhow::Result<(Running, Endpoint)> {
    // Warnings only: the gateway's debug lines would cost more than the work measured.
    const LOG: &str = "warn";
    let platform = match target {
        "up" | "cluster" => start_platform(target, blueprint, LOG).await?,
        _ => {
            let peer = peer::Peer::start(dir, &bin_dir.join("kaa-responder")).await?;
            let endpoint = Endpoint {
                mqtt: format!("127.0.0.1:{}", peer.mqtt_port),
                http: "http://127.0.0.1:1".to_owned(),
                admin_token_file: None,
                metrics_url: None,
                count_file: Some(peer.count_file.clone()),
                server_pid: peer.broker_pid,
                pids: peer.pids(),
            };
            return Ok((Running::Peer { _peer: peer }, endpoint));
        }
    };
    let token_file = dir.join("admin-token");
    std::fs::write(&token_file, &platform.admin_token)?;
    let gateway = platform
        .processes
        .iter()
        .find(|p| p.name() == "kaa-up" || p.name() == "kaa-run-kpc")
        .context("the gateway's process")?;
    let metrics_base = platform.service_http.get("kpc").unwrap_or(&platform.http);
    let endpoint = Endpoint {
        mqtt: format!("127.0.0.1:{}", platform.mqtt_port),
        http: platform.http.clone(),
        admin_token_file: Some(token_file),
        metrics_url: Some(format!("{metrics_base}/metrics")),
        count_file: None,
        server_pid: gateway.pid(),
        pids: platform.processes.iter().map(|p| p.pid()).collect(),
    };
    Ok((
        Running::Kaa {
            _platform: Box::new(platform),
        },
        endpoint,
    ))
}

/// Starts `kaa up` or cluster mode, up to three times: the harness picks free ports by binding
/// and releasing them, and another process may take one in between (it panics then).
async fn start_platform(target: &str, blueprint: &str, log: &'static str) -> anyhow::Result<Platform> {
    let mut last = String::new();
    for _ in 0..3 {
        let (name, blueprint) = (target.to_owned(), blueprint.to_owned());
        let started = tokio::spawn(async move {
            match name.as_str() {
                "up" => Platform::up_with_logging(&blueprint, log).await,
                _ => Platform::cluster_logging(&blueprint, 1, log).await,
            }
        })
        .await;
        match started {
            Ok(platform) => return Ok(platform),
            Err(e) => {
                last = e.to_string();
                eprintln!("   could not start {target}, trying again: {last}");
            }
        }
    }
    bail!("could not start {target}: {last}")
}

/// Runs one scenario with kaa-load, paced at `rate` requests/s if given; its last stdout line,
/// parsed.
async fn run_load(
    args: &Args,
    bin_dir: &Path,
    endpoint: &Endpoint,
    scenario: &str,
    rate: Option<f64>,
) -> Result<Value, String> {
    let (name, qos) = match scenario.split_once("-qos") {
        Some((name, qos)) => (name, qos),
        None => (scenario, "1"),
    };
    // reqresp80 is kaa-load's reqresp, paced.
    let load = if name == "reqresp80" { "reqresp" } else { name };
    let mut command = tokio::process::Command::new(bin_dir.join("kaa-load"));
    command
        .arg(load)
        .args(["--mqtt", &endpoint.mqtt, "--http", &endpoint.http, "--qos", qos])
        .args(["--token-prefix", &format!("{scenario}-")])
        .arg(format!("--server-pid={}", endpoint.server_pid))
        .kill_on_drop(true);
    // Ingest: time to store a backlog of up to 128 requests per connection after the sending.
    let timeout = if name == "ingest" { 30.0 } else { 5.0 };
    command.arg(format!("--timeout={timeout}"));
    let (connections, window, duration) = match name {
        "conns" => (args.idle, args.window, 60.0_f64.max(args.duration)),
        "storm" => (args.storm_cycles, args.storm_window, 60.0_f64.max(args.duration)),
        "reqresp80" => (args.connections, args.window, args.sustained),
        _ => (args.connections, args.window, args.duration),
    };
    if name == "conns" {
        // Each source address has its own ephemeral ports: the previous round's connections
        // still hold theirs (TIME_WAIT) for a minute.
        command.arg("--source-addrs=4");
    }
    if let Some(rate) = rate {
        command.arg(format!("--rate={rate:.0}"));
    }
    command
        .arg(format!("--connections={connections}"))
        .arg(format!("--window={window}"))
        .arg(format!("--duration={duration}"))
        .arg(format!("--warmup={}", args.warmup));
    match (
        &endpoint.admin_token_file,
        &endpoint.metrics_url,
        &endpoint.count_file,
    ) {
        (Some(token), Some(metrics), _) => {
            command
                .arg("--admin-token-file")
                .arg(token)
                .args(["--metrics-url", metrics]);
        }
        (_, _, Some(count)) => {
            command.arg("--peer").arg("--count-file").arg(count);
        }
        _ => {}
    }
    // Registration, connecting and draining come on top of the measured time.
    let limit = Duration::from_secs_f64(duration + args.warmup + 180.0);
    let output = tokio::time::timeout(limit, command.output())
        .await
        .map_err(|_| format!("kaa-load {scenario} did not end within {limit:?}"))?
        .map_err(|e| format!("kaa-load: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(format!("{}: {}", output.status, tail.join(" | ")));
    }
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).map_err(|e| format!("last line {last:?}: {e}"))
}

/// Waits (at most a minute) until the processes together use less than a tenth of a core: the
/// work a scenario left queued must not slow the next one down.
async fn wait_idle(pids: &[u32]) {
    let cpu_ticks = || -> u64 { pids.iter().filter_map(|pid| cpu_ticks(*pid)).sum() };
    let start = std::time::Instant::now();
    let mut before = cpu_ticks();
    while start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = cpu_ticks();
        // Clock ticks are 1/100 s: under 5 ticks in half a second is under a tenth of a core.
        if now.saturating_sub(before) < 5 {
            return;
        }
        before = now;
    }
    eprintln!("   (the target did not become idle within 60 s)");
}

/// User plus system CPU time of a process, in clock ticks (/proc/<pid>/stat fields 14 and 15).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

/// `nproc` and the CPU model.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cpus} CPUs ({model}), shared with the load generator")
}
