//! `kaa-operator provide`: the config provider for a Blueprint file, without Kubernetes. It
//! serves the rendered configs, re-reads the file when its content changes (polled), announces
//! what changed on NATS, and prints one JSON line per event on stdout:
//! - `{"event":"listening","url":"http://127.0.0.1:8090"}` once the API is up;
//! - `{"event":"served","generation":2,"upserted":["kpc"],"deleted":[],"versions":{"kpc":"..."}}`
//!   after every valid edit (and at start);
//! - `{"event":"invalid","error":"..."}` for an edit that does not validate (the previous
//!   configs keep being served);
//! - `{"event":"rollout","blueprint":"default/x","generation":2,"status":"True",...}` whenever
//!   the aggregated `ConfigApplied` state changes.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use kaa_blueprint::config::ServiceConfig;
use serde_json::json;

use super::{BlueprintKey, Provider, http};
use crate::apply;

/// How often the Blueprint file is looked at.
const POLL: Duration = Duration::from_millis(500);

/// Serve a Blueprint file's configs (17/SCMP provider) without Kubernetes.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Blueprint file (YAML); edits are served and announced.
    #[arg(long)]
    blueprint: PathBuf,
    /// The NATS server changes are announced on and reports come from.
    #[arg(long, env = "KAA_NATS_URL")]
    nats_url: String,
    /// Where the HTTP API listens (port 0: any free port; the `listening` line says which).
    #[arg(long, default_value = "127.0.0.1:8090", env = "KAA_PROVIDER_ADDR")]
    addr: String,
    /// The config-reader token services present; a new random one is written when the file
    /// does not exist.
    #[arg(long)]
    token_file: PathBuf,
}

pub async fn provide(args: Args) -> anyhow::Result<()> {
    let token = token(&args.token_file)?;
    let mut text = read(&args.blueprint)?;
    let (key, configs) =
        load(&text).with_context(|| format!("{} is not a usable Blueprint", args.blueprint.display()))?;
    let provider = Provider::new(&format!("kaa-operator-provide-{}", std::process::id()));
    let mut changes = provider
        .take_changes()
        .context("a fresh provider hands out its changes")?;
    let mut generation = 1;
    serve(&provider, &key, generation, &args.nats_url, &token, &configs);

    let listener = tokio::net::TcpListener::bind(&args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = http::app(provider.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    tracing::info!(%url, blueprint = %key, "provider running");
    emit(&json!({"event": "listening", "url": url}));

    let mut printed = None;
    let mut poll = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            _ = poll.tick() => {
                // A file being rewritten may be missing or empty for a moment: try again later.
                let Ok(now) = read(&args.blueprint) else { continue };
                if now == text {
                    continue;
                }
                text = now;
                match load(&text) {
                    Ok((_, configs)) => {
                        generation += 1;
                        serve(&provider, &key, generation, &args.nats_url, &token, &configs);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "the edited Blueprint is invalid: still serving the previous configs");
                        emit(&json!({"event": "invalid", "error": format!("{error:#}")}));
                    }
                }
            }
            Some(_) = changes.recv() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        let rollout = provider.rollout(&key);
        if rollout != printed {
            if let Some(r) = &rollout {
                let mut line = serde_json::to_value(r)?;
                line["event"] = "rollout".into();
                line["blueprint"] = key.to_string().into();
                emit(&line);
            }
            printed = rollout;
        }
    }
    server.abort();
    Ok(())
}

fn serve(
    provider: &Provider,
    key: &BlueprintKey,
    generation: i64,
    nats_url: &str,
    token: &str,
    configs: &[ServiceConfig],
) {
    let changes = provider.feed(key, generation, nats_url, Some(token.to_owned()), configs);
    let versions: serde_json::Map<String, serde_json::Value> = configs
        .iter()
        .map(|c| (c.instance().to_owned(), c.version().into()))
        .collect();
    emit(&json!({
        "event": "served",
        "generation": generation,
        "upserted": changes.upserted,
        "deleted": changes.deleted,
        "versions": versions,
    }));
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The Blueprint's key and rendered configs, with every rule `kaa up` applies.
fn load(text: &str) -> anyhow::Result<(BlueprintKey, Vec<ServiceConfig>)> {
    let blueprint = kaa_blueprint::Blueprint::from_yaml(text)?;
    let configs = kaa_blueprint::render(&blueprint)?
        .into_iter()
        .map(|r| r.config)
        .collect();
    let key = BlueprintKey {
        namespace: blueprint
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
        name: blueprint.metadata.name.clone(),
    };
    Ok((key, configs))
}

/// The token in `path`, or a new one written there (readable by the owner only).
fn token(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_owned()),
        Ok(_) => anyhow::bail!("{} is empty", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let token = apply::new_token().map_err(anyhow::Error::msg)?;
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))?
    };
    file.write_all(token.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(token)
}

/// One line of the command's output.
#[allow(clippy::print_stdout)] // the command's output
fn emit(line: &serde_json::Value) {
    println!("{line}");
}
