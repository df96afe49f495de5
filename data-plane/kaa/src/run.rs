//! `kaa run`: one service instance against NATS, configured by a file `kaa render` (or the
//! operator) wrote. This is what a cluster pod runs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use kaa_blueprint::ServiceKind;
use kaa_blueprint::config::{CmStorage, ServiceConfig};
use kaa_bus::Bus;
use kaa_bus::metrics::Metrics;
use kaa_store::Store;

use crate::config_sync::{ConfigSync, Provider, Source};
use crate::http::{AdminToken, Health};
use crate::services::{Platform, ServiceContext};

/// Run one service instance against NATS.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The kind of service the config file is for.
    #[arg(value_parser = kind_parser())]
    kind: ServiceKind,
    /// The instance's config file (JSON or YAML), as written by `kaa render`. Without
    /// --config-url, edits of it are applied while the service runs.
    #[arg(long)]
    config: PathBuf,
    /// The config provider (17/SCMP; the operator's `http://HOST:8090`): the instance's config is
    /// fetched from it at start, on every announcement on NATS and every --config-check-secs.
    #[arg(long, env = "KAA_CONFIG_URL")]
    config_url: Option<String>,
    /// The file holding the config provider's bearer token (in Kubernetes, a mounted Secret).
    #[arg(long, env = "KAA_CONFIG_TOKEN_FILE")]
    config_token_file: Option<PathBuf>,
    /// How often the config provider is asked even without an announcement (one may be lost).
    #[arg(long, default_value_t = 30, env = "KAA_CONFIG_CHECK_SECS", value_parser = clap::value_parser!(u64).range(1..))]
    config_check_secs: u64,
    /// NATS server URL.
    #[arg(long, default_value = "nats://127.0.0.1:4222", env = "KAA_NATS_URL")]
    nats_url: String,
    /// The database of services that keep state (the register, the credential service, the time series service): a
    /// PostgreSQL URL (`postgres://user:password@host:5432/db`; prefer the environment variable
    /// for one with a password) or an SQLite file, created if missing.
    #[arg(long, env = "KAA_DATABASE", value_name = "FILE|URL")]
    database: Option<String>,
    /// Management listener: `/health`, `/metrics` and the service's REST API.
    #[arg(long, default_value = "0.0.0.0:9000", env = "KAA_HTTP_ADDR")]
    http_addr: String,
    /// The file holding the admin API's bearer token (in Kubernetes, a mounted Secret). Required
    /// for services with a REST API (epr, cm, epts); without it the others answer only `/health`.
    #[arg(long, env = "KAA_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// This replica's id (names its bus subjects); defaults to the host name plus a random suffix.
    #[arg(long, env = "KAA_REPLICA_ID")]
    replica_id: Option<String>,
    /// Kubernetes namespace of the credential Secrets (a `cm` with `storage: kubernetes`);
    /// defaults to the client's namespace: the pod's own in a cluster, KUBECONFIG's context outside.
    #[arg(long, env = "KAA_NAMESPACE")]
    namespace: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let text =
        std::fs::read(&args.config).with_context(|| format!("cannot read {}", args.config.display()))?;
    let file = args.config.display().to_string();
    let mut config =
        crate::config_sync::parse(&text).with_context(|| format!("{file} is not a valid service config"))?;
    check(&config, &file, &args)?;
    let provider = match &args.config_url {
        Some(url) => Some(Provider::new(
            url,
            config.instance(),
            args.config_token_file.clone(),
        )?),
        None => None,
    };
    // The provider's config is newer than a mounted file that has not caught up yet.
    if let Some(provider) = &provider {
        let fetched = provider.fetch().await;
        match fetched.and_then(|c| check(&c, "the provider's config", &args).map(|()| c)) {
            Ok(fetched) if fetched.instance() == config.instance() => config = fetched,
            Ok(fetched) => tracing::warn!(
                instance = fetched.instance(),
                "the config provider answered for another instance; starting with {}",
                args.config.display()
            ),
            Err(e) => tracing::warn!("starting with {}: {e:#}", args.config.display()),
        }
    }
    let admin_token = match &args.admin_token_file {
        Some(path) => Some(AdminToken::read(path)?),
        None if config.kind().serves_rest() => anyhow::bail!(
            "a `{}` service serves a REST API and needs --admin-token-file FILE (or \
             KAA_ADMIN_TOKEN_FILE): the file holds the bearer token API clients must send",
            config.kind()
        ),
        None => None,
    };
    let store = match (&args.database, config.kind()) {
        (Some(database), _) => Some(
            Store::connect(database)
                .await
                .with_context(|| format!("cannot open the database {}", kaa_store::redacted(database)))?,
        ),
        (None, kind) if kind.keeps_state() && !state_in_kubernetes(&config) => anyhow::bail!(
            "a `{kind}` service keeps its state in a database and needs --database FILE or URL (or \
             KAA_DATABASE): an SQLite file, created if missing, or a postgres:// URL"
        ),
        (None, _) => None,
    };
    let metrics = Metrics::new();
    let bus = Bus::connect_nats(&args.nats_url)
        .await
        .with_context(|| format!("cannot connect to NATS at {}", args.nats_url))?
        .with_metrics(&metrics);
    let replica = args.replica_id.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| config.instance().to_owned());
        format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
    });
    let mut context = ServiceContext::new(bus.clone(), store.clone(), &replica, metrics.clone());
    context.namespace = args.namespace.clone().filter(|ns| !ns.is_empty());
    let instance = config.instance().to_owned();
    let platform = Platform::start(vec![config], &context).await?;
    let source = match provider {
        Some(provider) => Source::Provider {
            provider,
            check_every: Duration::from_secs(args.config_check_secs),
        },
        None => Source::File(args.config.clone()),
    };
    let sync = ConfigSync {
        instance,
        replica: replica.clone(),
        bus: bus.clone(),
        live: platform.live().clone(),
        source,
        started_with: text,
    };
    sync.start(context.shutdown.clone()).await?;
    let health = Health {
        bus,
        store: store.clone(),
        live: Some(platform.live().clone()),
    };
    let app = crate::http::app(health, metrics, platform.router(), admin_token);
    let listener = crate::http::bind(&args.http_addr).await?;
    let http_addr = listener.local_addr()?;
    let http = crate::http::serve(listener, app, context.shutdown.clone());
    tracing::info!(%http_addr, replica, kind = %args.kind, "service running");

    crate::shutdown_signal().await;
    platform.stop(&context).await;
    let _ = http.await;
    if let Some(store) = store {
        store.close().await;
    }
    Ok(())
}

/// Checks a config before start: the kind `kaa run` was asked for, and (a hand-written config
/// skips Blueprint validation) no limits that would refuse everyone.
fn check(config: &ServiceConfig, source: &str, args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.kind() == args.kind,
        "{source} configures a `{}` service, not `{}`",
        config.kind(),
        args.kind
    );
    if let ServiceConfig::Kpc(kpc) = config
        && let Some((key, why)) = kpc.limits.problems().into_iter().next()
    {
        anyhow::bail!("{source}: limits.{key}: {why}");
    }
    Ok(())
}

/// The `<KIND>` argument: every [`ServiceKind`], listed in `--help` and in the error for an
/// unknown one.
fn kind_parser() -> impl clap::builder::TypedValueParser<Value = ServiceKind> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(ServiceKind::ALL.map(ServiceKind::as_str))
        .try_map(|kind| kind.parse::<ServiceKind>())
}

/// Whether the instance keeps its state in Kubernetes rather than a database (CM with
/// `storage: kubernetes`).
fn state_in_kubernetes(config: &ServiceConfig) -> bool {
    matches!(config, ServiceConfig::Cm(cm) if cm.storage == CmStorage::Kubernetes)
}
