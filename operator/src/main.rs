//! `kaa-operator`: `crd` prints the CustomResourceDefinition; `run` reconciles Blueprints;
//! `provide` serves a Blueprint file's configs (17/SCMP) without Kubernetes.

use anyhow::Context as _;
use clap::Parser;
use kaa_operator::{
    build::Settings,
    controller,
    leader::{Elector, LeaseSettings},
    metrics::Metrics,
    provider::{self, Provider},
};

#[derive(Debug, Parser)]
#[command(version, about = "The kaa-rs Kubernetes operator")]
enum Command {
    /// Print the CustomResourceDefinition of `Blueprint` (YAML), e.g. for `kubectl apply -f -`.
    Crd,
    /// Watch Blueprints and the objects they own, and reconcile them (in cluster, or with
    /// KUBECONFIG's context from outside).
    Run(RunArgs),
    /// Serve the configs of a Blueprint file to `kaa run --config-url` services and announce
    /// its edits on NATS (the operator's config provider, without Kubernetes).
    Provide(provider::file::Args),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Only Blueprints in this namespace (default: all namespaces).
    #[arg(long, env = "KAA_OPERATOR_NAMESPACE")]
    namespace: Option<String>,
    /// The data-plane image pods run, unless a Blueprint sets `spec.cluster.image`.
    #[arg(long, env = "KAA_IMAGE")]
    image: Option<String>,
    /// NATS URL given to pods, unless a Blueprint sets `spec.cluster.natsUrl`.
    #[arg(long, env = "KAA_NATS_URL")]
    nats_url: Option<String>,
    /// `/health` and `/metrics`.
    #[arg(long, default_value = "0.0.0.0:8080", env = "KAA_OPERATOR_HTTP_ADDR")]
    http_addr: String,
    /// The config provider's API (services fetch their config there).
    #[arg(long, default_value = "0.0.0.0:8090", env = "KAA_PROVIDER_ADDR")]
    provider_addr: String,
    /// The provider's base URL as pods reach it (default:
    /// `http://kaa-operator-config.<the operator's namespace>.svc:8090`).
    #[arg(long, env = "KAA_PROVIDER_URL")]
    provider_url: Option<String>,
    #[command(flatten)]
    leader: LeaderArgs,
}

/// Leader election: with two or more replicas, only the holder of a Lease reconciles.
#[derive(Debug, clap::Args)]
struct LeaderArgs {
    /// Reconcile only while holding the Lease (`--leader-election` or `--leader-election=true`).
    #[arg(
        long,
        env = "KAA_OPERATOR_LEADER_ELECTION",
        num_args = 0..=1,
        default_missing_value = "true",
        default_value = "false"
    )]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "kaa-operator", env = "KAA_OPERATOR_LEASE_NAME")]
    lease_name: String,
    /// Namespace of the Lease (default: the pod's namespace, `POD_NAMESPACE`, else `default`).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's identity in the Lease (default: the pod name, `POD_NAME`, else the
    /// host name plus a random suffix).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Command::parse() {
        Command::Crd => {
            #[allow(clippy::print_stdout)] // the command's output
            {
                print!("{}", kaa_operator::crd::crd_yaml()?);
            }
            Ok(())
        }
        Command::Run(args) => {
            logs();
            run(args).await
        }
        Command::Provide(args) => {
            logs();
            provider::file::provide(args).await
        }
    }
}

/// Logs on stderr (stdout is a command's output).
fn logs() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("cannot reach the Kubernetes API (in cluster, or KUBECONFIG)")?;
    let defaults = Settings::default();
    let settings = Settings {
        image: args.image.unwrap_or(defaults.image),
        nats_url: args.nats_url.unwrap_or(defaults.nats_url),
        // In cluster, the client's default namespace is the operator's own.
        provider_url: args
            .provider_url
            .unwrap_or_else(|| provider::cluster::provider_url(client.default_namespace())),
    };
    let metrics = Metrics::default();
    let listener = tokio::net::TcpListener::bind(&args.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.http_addr))?;
    let app = kaa_operator::http::app(metrics.clone());
    let http = tokio::spawn(async move { axum::serve(listener, app).await });
    let provider = Provider::default();
    let provider_listener = tokio::net::TcpListener::bind(&args.provider_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.provider_addr))?;
    let provider_app = provider::http::app(provider.clone());
    let provider_http = tokio::spawn(async move { axum::serve(provider_listener, provider_app).await });
    tracing::info!(http_addr = %args.http_addr, provider_addr = %args.provider_addr, namespace = ?args.namespace, "operator running");
    let ctx = controller::Context {
        client,
        settings,
        metrics,
        provider,
    };
    let namespace = args.namespace.as_deref();
    if args.leader.leader_election {
        let leader = args.leader;
        let settings = LeaseSettings::new(
            &leader.lease_name,
            leader.lease_namespace.as_deref().unwrap_or("default"),
            &leader.identity.map_or_else(default_identity, Ok)?,
        );
        tracing::info!(lease = %settings.name, lease_namespace = %settings.namespace, identity = %settings.identity, "leader election on");
        let mut elector = Elector::new(ctx.client.clone(), settings);
        elector
            .run(|| controller::run(ctx.clone(), namespace), shutdown_signal())
            .await;
    } else {
        // Ends on SIGTERM / ctrl-c (the controller's own signal handling).
        controller::run(ctx, namespace).await;
    }
    http.abort();
    provider_http.abort();
    Ok(())
}

/// `$HOSTNAME` (or `host`) plus a random suffix: unique even for two replicas on one host.
fn default_identity() -> anyhow::Result<String> {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for the identity: {e}"))?;
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    Ok(format!("{host}-{:08x}", u32::from_be_bytes(bytes)))
}

/// SIGTERM (Kubernetes stopping the pod) or ctrl-c.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
