//! CMX, the 7/CMP configuration extension. Each instance (`cmx`, `cmx_ota`, ...) serves one
//! configuration name and keeps, per application version, a default document and per-endpoint
//! overrides.
//!
//! # Layout
//! - this file: [`Config`], [`CmxState`], [`serve`] (4/ESP ClientData in queue group = instance;
//!   9/ELCE connectivity of the gateways on every replica) and [`CmxState::offer`], the one
//!   place that decides whether a device gets a configuration pushed.
//! - [`device`]: `config/json` (pull) and `applied/json` (report) from devices.
//! - [`rest`]: the ECR-style REST API under `/ecr/api/v1` (one router for every CMX instance of
//!   a process; `?name=` selects the instance by its configuration name).
//!
//! Pushes go to `kp1/{av}/{instance}/{token}/config/json/status` without request id, as
//! `{"configId", "config"}`, when an endpoint connects and when its effective configuration
//! (its override, else its version's default) changes while it is online. Never pushed: no
//! configuration (the official client iterates `config`), or one the endpoint reported applied.

use std::sync::Arc;

use kaa_blueprint::config::Live;
use kaa_bus::Bus;
use kaa_protocol::subject;
use kaa_store::{Store, cmx::ConfigDoc};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::presence::{self, Presence};

pub mod device;
pub mod rest;

pub use rest::router;

/// CMX configuration ([`kaa_blueprint::config::CmxConfig`]).
pub use kaa_blueprint::config::CmxConfig as Config;

pub use crate::ServeError;

/// Checks names and limits.
pub fn validate(config: &Config) -> Result<(), ServeError> {
    let names = std::iter::once(&config.instance).chain(&config.kpc_instances);
    if let Some(bad) = names.into_iter().find(|n| !subject::is_valid_token(n)) {
        return Err(ServeError::config(
            "CMX",
            format!("{bad:?} is not a valid instance name (a non-empty NATS subject token)"),
        ));
    }
    if config.config_name.is_empty() {
        return Err(ServeError::config("CMX", "configName must not be empty"));
    }
    if config.max_config_bytes == 0 {
        return Err(ServeError::config("CMX", "maxConfigBytes must be greater than 0"));
    }
    Ok(())
}

/// What the bus handlers and the REST API of one CMX instance share.
#[derive(Debug, Clone)]
pub struct CmxState {
    store: Store,
    /// Read once per request ([`Self::config`]); replaced by a live config change.
    config: Live<Config>,
    /// `configName`, fixed at start: it keys the REST routes and the stored documents.
    name: Arc<str>,
    presence: Presence,
}

impl CmxState {
    pub fn new(store: Store, bus: Bus, config: Config) -> Result<Self, ServeError> {
        validate(&config)?;
        Ok(CmxState {
            store,
            presence: Presence::new(bus.clone(), &config.instance),
            name: Arc::from(config.config_name.as_str()),
            config: Live::new(config),
        })
    }

    /// The current config: read it once per request and keep that snapshot.
    pub fn config(&self) -> Arc<Config> {
        self.config.get()
    }

    /// The handle that replaces the config while the service runs.
    pub fn live_config(&self) -> &Live<Config> {
        &self.config
    }

    pub fn presence(&self) -> &Presence {
        &self.presence
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Pushes the endpoint's effective configuration if it is online, has one, and has not
    /// reported it applied; records the dispatch.
    pub async fn offer(&self, endpoint_id: &str) {
        let Some(online) = self.presence.get(endpoint_id) else {
            return;
        };
        if let Err(e) = self.try_offer(endpoint_id, &online.app_version).await {
            tracing::warn!(endpoint_id, error = %e, "cannot offer a configuration");
        }
    }

    async fn try_offer(
        &self,
        endpoint_id: &str,
        app_version: &str,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let Some(doc) = self
            .store
            .effective_config(self.name(), app_version, endpoint_id)
            .await?
        else {
            return Ok(());
        };
        let status = self.store.config_status(self.name(), endpoint_id).await?;
        if status.is_some_and(|s| s.has_applied(&doc.config_id)) {
            return Ok(());
        }
        if self
            .presence
            .push(endpoint_id, "/config/json", config_json(&doc))
            .await?
        {
            self.store
                .config_dispatched(self.name(), endpoint_id, app_version, &doc.config_id)
                .await?;
        }
        Ok(())
    }
}

/// What a device gets: `{"configId", "config"}`.
fn config_json(doc: &ConfigDoc) -> Vec<u8> {
    json!({ "configId": doc.config_id, "config": doc.body })
        .to_string()
        .into_bytes()
}

/// Runs the device side of one CMX instance until `shutdown` is cancelled.
///
/// Returns early only if a subscription cannot be made.
pub async fn serve(state: CmxState, shutdown: CancellationToken) -> Result<(), ServeError> {
    let config = state.config().clone();
    presence::serve_extension(
        "cmx",
        &config.instance,
        &state.presence,
        &config.kpc_instances,
        config.max_in_flight,
        &shutdown,
        |reply_to, data| {
            let state = state.clone();
            async move { device::handle(&state, reply_to.as_deref(), data).await }
        },
        |connected| {
            let state = state.clone();
            async move { state.offer(&connected.endpoint_id).await }
        },
    )
    .await
}
