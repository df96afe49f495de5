//! `kaa render`: a Blueprint -> one config file per service instance (`{instance}.json`).

use std::path::PathBuf;

use anyhow::Context;
use kaa_blueprint::Blueprint;

/// Write the config file of every service instance of a Blueprint.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Blueprint file (YAML).
    blueprint: PathBuf,
    /// Directory to write `{instance}.json` files into (created if missing).
    #[arg(long)]
    out: PathBuf,
}

pub fn render(args: Args) -> anyhow::Result<()> {
    let blueprint = load(&args.blueprint)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    for service in kaa_blueprint::render(&blueprint)? {
        let path = args.out.join(format!("{}.json", service.config.instance()));
        let json = serde_json::to_string_pretty(&service.config)?;
        std::fs::write(&path, json).with_context(|| format!("cannot write {}", path.display()))?;
        tracing::info!(path = %path.display(), kind = %service.config.kind(), "wrote");
    }
    Ok(())
}

/// Reads and validates a Blueprint file.
pub fn load(path: &std::path::Path) -> anyhow::Result<Blueprint> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Blueprint::from_yaml(&text).with_context(|| format!("{} is not a usable Blueprint", path.display()))
}
