//! `kaa`: run a kaa-rs platform.
//!
//! - `kaa up [BLUEPRINT]`: every service of a Blueprint in this one process, on an in-process bus
//!   with SQLite in a data directory (no NATS, no cluster).
//! - `kaa run <kind> --config FILE`: one service instance against NATS (what a cluster pod runs).
//! - `kaa render BLUEPRINT --out DIR`: the per-instance config files `kaa run` takes.

mod config_sync;
mod http;
mod kp_http;
mod kp_https;
mod live;
mod render;
mod run;
mod services;
mod up;
mod watch;
mod web;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: messages are allocated on one runtime thread and freed on
/// another, and glibc's free of another thread's chunk takes that arena's lock. Under
/// `kaa-load reqresp` those lock waits were the largest cause of the runtime threads sleeping.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "kaa",
    version,
    about = "kaa-rs: a Kaa-compatible IoT device-communication platform"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Up(up::Args),
    Run(run::Args),
    Render(render::Args),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Up(args) => up::up(args).await,
            Command::Run(args) => run::run(args).await,
            Command::Render(args) => render::render(args),
        }
    })
}

/// Resolves on Ctrl-C or SIGTERM: the one shutdown signal of every command.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
