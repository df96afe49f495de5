//! `kaa up`: every service of a Blueprint in this process, on the in-process bus, with SQLite
//! in a data directory. The same service code as a cluster, minus NATS and Kubernetes.

use std::path::PathBuf;

use anyhow::Context;
use kaa_blueprint::Blueprint;
use kaa_blueprint::config::ServiceConfig;
use kaa_bus::Bus;
use kaa_store::Store;

use crate::services::{Platform, ServiceContext};

/// Run a whole Blueprint in this process (no NATS, no cluster needed).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Blueprint file to run; without it, the bundled quickstart (blueprints/quickstart.yaml).
    blueprint: Option<PathBuf>,
    /// Where endpoints, tokens and metadata are kept between runs.
    #[arg(long, default_value = "kaa-data", env = "KAA_DATA_DIR")]
    data_dir: PathBuf,
    /// MQTT listener (plain TCP) of the gateway.
    #[arg(long, default_value = "127.0.0.1:1883", env = "KAA_MQTT_ADDR")]
    mqtt_addr: String,
    /// HTTP listener: REST APIs and `/health`.
    #[arg(long, default_value = "127.0.0.1:8000", env = "KAA_HTTP_ADDR")]
    http_addr: String,
}

pub async fn up(args: Args) -> anyhow::Result<()> {
    let blueprint = match &args.blueprint {
        Some(path) => crate::render::load(path)?,
        None => Blueprint::quickstart(),
    };
    let mut configs: Vec<ServiceConfig> = kaa_blueprint::render(&blueprint)?
        .into_iter()
        .map(|r| r.config)
        .collect();
    let mut gateways = configs.iter_mut().filter_map(|c| match c {
        ServiceConfig::Kpc(kpc) => Some(kpc),
        _ => None,
    });
    if let Some(kpc) = gateways.next() {
        kpc.mqtt.listen = args.mqtt_addr.clone();
    }
    anyhow::ensure!(
        gateways.next().is_none(),
        "`kaa up` runs one kpc instance; this Blueprint declares several"
    );

    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create the data directory {}", args.data_dir.display()))?;
    let db = args.data_dir.join("kaa.db");
    let store = Store::open(&db)
        .await
        .with_context(|| format!("cannot open {}", db.display()))?;
    let bus = Bus::in_process();
    let context = ServiceContext::new(bus.clone(), Some(store.clone()), "local");
    let platform = Platform::start(configs, &context).await?;

    let app = crate::http::health(bus).merge(platform.router());
    let (http_addr, http) = crate::http::serve(&args.http_addr, app, context.shutdown.clone()).await?;
    print_banner(&blueprint, &platform, http_addr, &args);

    crate::shutdown_signal().await;
    platform.stop(&context).await;
    let _ = http.await;
    store.close().await;
    Ok(())
}

#[allow(clippy::print_stdout)] // the banner is the command's output
fn print_banner(blueprint: &Blueprint, platform: &Platform, http: std::net::SocketAddr, args: &Args) {
    let mqtt = platform
        .mqtt_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "(no kpc)".into());
    let (host, port) = platform
        .mqtt_addr()
        .map(|a| (a.ip().to_string(), a.port()))
        .unwrap_or_default();
    let app_version = blueprint
        .spec
        .applications
        .iter()
        .flat_map(|a| &a.versions)
        .find(|v| v.extensions.iter().any(|e| e == "epmx"))
        .map(|v| v.name.as_str())
        .unwrap_or("APP_VERSION");
    println!(
        r#"kaa-rs is up: Blueprint `{name}`
  MQTT  {mqtt}   (client authentication is OFF: for local development only)
  HTTP  http://{http}   REST /epr/api/v1, health /health
  data  {data}

Connect a device (Ctrl-C stops the platform):
  curl -s -X POST http://{http}/epr/api/v1/endpoints -H 'Content-Type: application/json' \
    -d '{{"appVersion":{{"name":"{app_version}"}},"endpointToken":"my-meter"}}'
  mosquitto_rr -h {host} -p {port} -t kp1/{app_version}/epmx/my-meter/update/keys/1 \
    -e kp1/{app_version}/epmx/my-meter/update/keys/1/status -W 5 \
    -m '{{"model":"MySmartMeter A300","mac":"00-14-22-01-23-45"}}'
  curl -s http://{http}/epr/api/v1/endpoints?applicationVersionName={app_version}"#,
        name = blueprint.metadata.name,
        data = args.data_dir.display(),
    );
}
