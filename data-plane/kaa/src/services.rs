//! Starting and stopping service instances from their rendered configs: the one piece of wiring
//! shared by `kaa up` (all instances, in-process bus) and `kaa run` (one instance, NATS).

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use kaa_blueprint::config::{Live, ServiceConfig};
use kaa_bus::Bus;
use kaa_bus::metrics::Metrics;
use kaa_kpc::Kpc;
use kaa_services::{bcx, cex, cm, cmx, dcx, epl, epmx, epr, epts};
use kaa_store::Store;

use crate::live::{Handle, LiveConfigs};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What every service instance of this process shares.
#[derive(Debug)]
pub struct ServiceContext {
    pub bus: Bus,
    pub store: Option<Store>,
    /// Distinguishes this process's replicas on the bus.
    pub replica: String,
    /// Namespace of Kubernetes-backed state (CM's `storage: kubernetes`); `None`: the Kubernetes
    /// client's default (in a pod, its own namespace).
    pub namespace: Option<String>,
    /// The process's metrics registry (the bus records into it too: [`Bus::with_metrics`]).
    pub metrics: Metrics,
    pub shutdown: CancellationToken,
}

impl ServiceContext {
    pub fn new(bus: Bus, store: Option<Store>, replica: &str, metrics: Metrics) -> Self {
        ServiceContext {
            bus,
            store,
            replica: replica.to_owned(),
            namespace: None,
            metrics,
            shutdown: CancellationToken::new(),
        }
    }

    fn store(&self, instance: &str) -> anyhow::Result<Store> {
        self.store
            .clone()
            .with_context(|| format!("service `{instance}` needs a database"))
    }
}

/// The running service instances of this process.
#[derive(Debug)]
pub struct Platform {
    kpc: Option<Kpc>,
    /// The gateway's 1/KP over HTTPS listener, if it has one.
    https_addr: Option<SocketAddr>,
    router: Router,
    tasks: TaskTracker,
    /// Where config changes are applied while the instances run.
    live: LiveConfigs,
}

impl Platform {
    /// Starts every instance; extensions and the register first, the gateway last, so that the
    /// first device request finds its extension listening.
    pub async fn start(mut configs: Vec<ServiceConfig>, ctx: &ServiceContext) -> anyhow::Result<Platform> {
        configs.sort_by_key(|c| matches!(c, ServiceConfig::Kpc(_)));
        let mut platform = Platform {
            kpc: None,
            https_addr: None,
            router: Router::new(),
            tasks: TaskTracker::new(),
            live: LiveConfigs::new(&ctx.metrics),
        };
        // One ECR router serves every CMX instance of the process (`?name=` picks one).
        let mut cmx_states = Vec::new();
        for config in configs {
            let instance = config.instance().to_owned();
            let running = config.clone();
            let handle = match config {
                ServiceConfig::Epr(config) => {
                    let store = ctx.store(&instance)?;
                    let state = epr::EprState::new(store.clone(), ctx.bus.clone(), config.clone())?
                        .with_replica(&format!("{instance}-{}", ctx.replica));
                    let handle = Handle::Epr(state.live_config().clone());
                    platform.router = platform.router.merge(epr::router(state.clone()));
                    platform.spawn_serving("EPR", epr::serve_state(state, ctx.shutdown.clone()));
                    handle
                }
                ServiceConfig::Cm(config) => {
                    let store: cm::CredentialStore = match config.storage {
                        cm::CmStorage::Sql => ctx.store(&instance)?.into(),
                        cm::CmStorage::Kubernetes => cm::kubernetes::SecretStore::connect(
                            &instance,
                            ctx.namespace.as_deref(),
                            cm::kubernetes::DEFAULT_READY_TIMEOUT,
                        )
                        .await
                        .with_context(|| {
                            format!("service `{instance}` keeps its credentials in Kubernetes Secrets")
                        })?
                        .into(),
                    };
                    let state = cm::CmState::new(store, ctx.bus.clone(), config)?
                        .with_replica(&format!("{instance}-{}", ctx.replica));
                    platform.router = platform.router.merge(cm::router(state.clone()));
                    platform.spawn_serving("CM", cm::serve(state.clone(), ctx.shutdown.clone()));
                    Handle::Cm(Box::new(state))
                }
                ServiceConfig::Epmx(config) => {
                    let live = Live::new(config);
                    let serving = epmx::serve(ctx.bus.clone(), live.clone(), ctx.shutdown.clone());
                    platform.spawn_serving("EPMX", serving);
                    Handle::Epmx(live)
                }
                ServiceConfig::Epl(config) => {
                    let live = Live::new(config);
                    let serving = epl::serve(ctx.bus.clone(), live.clone(), ctx.shutdown.clone());
                    platform.spawn_serving("EPL", serving);
                    Handle::Epl(live)
                }
                ServiceConfig::Dcx(config) => {
                    dcx::validate(&config)?;
                    let live = Live::new(config);
                    let (bus, stop, serving) = (ctx.bus.clone(), ctx.shutdown.clone(), live.clone());
                    let replica = format!("{instance}-{}", ctx.replica);
                    platform.spawn_serving(
                        "DCX",
                        async move { dcx::serve(bus, serving, &replica, stop).await },
                    );
                    Handle::Dcx(live)
                }
                ServiceConfig::Epts(config) => {
                    let state = epts::EptsState::new(ctx.store(&instance)?, config)?;
                    platform.router = platform.router.merge(epts::router(state.clone()));
                    let handle = Handle::Epts(state.live_config().clone());
                    platform.spawn_serving("EPTS", epts::serve(ctx.bus.clone(), state, ctx.shutdown.clone()));
                    handle
                }
                ServiceConfig::Cmx(config) => {
                    let state = cmx::CmxState::new(ctx.store(&instance)?, ctx.bus.clone(), config)?;
                    cmx_states.push(state.clone());
                    let handle = Handle::Cmx(state.live_config().clone());
                    platform.spawn_serving("CMX", cmx::serve(state, ctx.shutdown.clone()));
                    handle
                }
                ServiceConfig::Cex(config) => {
                    let state = cex::CexState::new(ctx.store(&instance)?, ctx.bus.clone(), config)?;
                    platform.router = platform.router.merge(cex::router(state.clone()));
                    let handle = Handle::Cex(state.live_config().clone());
                    platform.spawn_serving("CEX", cex::serve(state, ctx.shutdown.clone()));
                    handle
                }
                ServiceConfig::Bcx(config) => {
                    let state = bcx::BcxState::new(ctx.store(&instance)?, ctx.bus.clone(), config)?;
                    platform.router = platform.router.merge(bcx::router(state.clone()));
                    let handle = Handle::Bcx(state.live_config().clone());
                    platform.spawn_serving("BCX", bcx::serve(state, ctx.shutdown.clone()));
                    handle
                }
                // The dashboard, in front of the other instances' REST APIs (`kaa run web`).
                ServiceConfig::Web(config) => {
                    platform.router = platform
                        .router
                        .merge(crate::web::router())
                        .merge(crate::web::proxy::router(&config)?);
                    Handle::Web
                }
                ServiceConfig::Kpc(c) => {
                    let replica = format!("{instance}-{}", ctx.replica);
                    let (plain_auth, https) = (c.mqtt.auth, c.https.clone());
                    let kpc = Kpc::start(c, ctx.bus.clone(), replica, &ctx.metrics).await?;
                    // 1/KP over HTTP, on this process's HTTP listener, authenticated like plain MQTT.
                    platform.router = platform
                        .router
                        .merge(crate::kp_http::router(kpc.gateway().clone(), plain_auth));
                    if let Some(settings) = &https {
                        let (addr, server) =
                            crate::kp_https::serve(settings, kpc.gateway().clone(), ctx.shutdown.clone())
                                .await?;
                        platform.https_addr = Some(addr);
                        platform.tasks.spawn(async move {
                            let _ = server.await;
                        });
                    }
                    let handle = Handle::Kpc(kpc.gateway().live_config().clone());
                    platform.kpc = Some(kpc);
                    handle
                }
            };
            platform.live.insert(running, handle);
        }
        if !cmx_states.is_empty() {
            platform.router = platform.router.merge(cmx::router(cmx_states));
        }
        Ok(platform)
    }

    /// Runs a service's bus handlers until shutdown, logging why they stopped early.
    fn spawn_serving<E: std::fmt::Display>(
        &self,
        name: &'static str,
        serving: impl std::future::Future<Output = Result<(), E>> + Send + 'static,
    ) {
        self.tasks.spawn(async move {
            if let Err(e) = serving.await {
                tracing::error!(error = %e, "{name} stopped");
            }
        });
    }

    /// The instances' configs, to change while they run.
    pub fn live(&self) -> &LiveConfigs {
        &self.live
    }

    /// The REST APIs of the running instances, to be served next to `/health`.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.kpc.as_ref().map(Kpc::mqtt_addr)
    }

    /// The gateway's MQTT over TLS address, if it has that listener.
    pub fn mqtts_addr(&self) -> Option<SocketAddr> {
        self.kpc.as_ref().and_then(Kpc::mqtts_addr)
    }

    /// The gateway's MQTT over WebSocket address, if it has that listener.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.kpc.as_ref().and_then(Kpc::ws_addr)
    }

    /// The gateway's MQTT over secure WebSocket address, if it has that listener.
    pub fn wss_addr(&self) -> Option<SocketAddr> {
        self.kpc.as_ref().and_then(Kpc::wss_addr)
    }

    /// The gateway's 1/KP over HTTPS address, if it has that listener.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// Stops the gateway first (its clients are told, their endpoints announced disconnected),
    /// then everything else, waiting for requests in flight.
    pub async fn stop(self, ctx: &ServiceContext) {
        if let Some(kpc) = self.kpc {
            kpc.shutdown().await;
        }
        ctx.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}
