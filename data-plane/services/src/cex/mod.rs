//! CEX, the 11/CEP command execution extension.
//!
//! # Layout
//! - this file: [`Config`], [`CexState`] (what the bus handlers and REST share), [`serve`] (the
//!   device side: 4/ESP ClientData in queue group = instance, and every 9/ELCE connectivity event
//!   of the gateways, on every replica) and the delivery of commands.
//! - [`device`]: the device's requests: `command/<type>` (pull the outstanding commands) and
//!   `result/<type>` (an array of results, as the official client sends, or one object).
//! - [`rest`]: `POST /cex/api/v1/endpoints/{id}/commands/{type}?awaitTimeout=S&commandTtl=ms`
//!   and `GET .../{commandId}`.
//!
//! A command lives in the database from its invocation on. It is pushed at once when its
//! endpoint is online ([`crate::presence`]), and again (with every other outstanding command of
//! the endpoint) whenever the endpoint connects, until the device answers with a result or the
//! command's TTL passes: an expired command is never sent. Pushes go to
//! `kp1/{av}/{cex}/{token}/command/{type}/status` without request id, as a JSON array
//! `[{"id": n, "payload": ...}]`; ids start at 1 (the official client drops a falsy 0).

use std::{sync::Arc, time::Duration};

use kaa_blueprint::config::Live;
use kaa_bus::Bus;
use kaa_protocol::subject;
use kaa_store::{Store, cex::Command};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    epmx::epr_client::EprClient,
    presence::{self, Presence},
};

pub mod device;
pub mod rest;

pub use rest::router;

/// CEX configuration ([`kaa_blueprint::config::CexConfig`]).
pub use kaa_blueprint::config::CexConfig as Config;

pub use crate::ServeError;

/// Checks names and limits.
pub fn validate(config: &Config) -> Result<(), ServeError> {
    let names = std::iter::once(&config.instance)
        .chain(&config.kpc_instances)
        .chain(std::iter::once(&config.epr_instance));
    if let Some(bad) = names.into_iter().find(|n| !subject::is_valid_token(n)) {
        return Err(ServeError::config(
            "CEX",
            format!("{bad:?} is not a valid instance name (a non-empty NATS subject token)"),
        ));
    }
    if config.request_timeout_ms == 0 {
        return Err(ServeError::config(
            "CEX",
            "requestTimeoutMs must be greater than 0",
        ));
    }
    Ok(())
}

/// Whether `command_type` can be one: 1-64 letters, digits, `_` or `-` (11/CEP: alphanumeric;
/// it is a topic level and a REST path segment).
pub fn is_valid_command_type(command_type: &str) -> bool {
    !command_type.is_empty()
        && command_type.len() <= 64
        && command_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What the bus handlers and the REST API of one CEX instance share.
#[derive(Debug, Clone)]
pub struct CexState {
    store: Store,
    /// Read once per request ([`Self::config`]); replaced by a live config change.
    config: Live<Config>,
    presence: Presence,
    epr: EprClient,
    /// Bumped on every recorded result, so that REST callers awaiting one wake up.
    results: Arc<watch::Sender<u64>>,
}

impl CexState {
    pub fn new(store: Store, bus: Bus, config: Config) -> Result<Self, ServeError> {
        validate(&config)?;
        let epr = EprClient::new(
            bus.clone(),
            config.epr_instance.clone(),
            Duration::from_millis(config.request_timeout_ms),
        );
        Ok(CexState {
            store,
            presence: Presence::new(bus.clone(), &config.instance),
            config: Live::new(config),
            epr,
            results: Arc::new(watch::channel(0).0),
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

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn presence(&self) -> &Presence {
        &self.presence
    }

    fn scope<'a>(&'a self, endpoint_id: &'a str, command_type: &'a str) -> kaa_store::cex::CommandScope<'a> {
        kaa_store::cex::CommandScope {
            instance: self.presence.instance(),
            endpoint_id,
            command_type,
        }
    }

    /// Pushes `commands` (all of one type) to their endpoint if it is online, and records them as
    /// delivered when the push went out.
    async fn deliver(&self, endpoint_id: &str, command_type: &str, commands: &[Command]) {
        if commands.is_empty() {
            return;
        }
        let payload = commands_json(commands).to_string().into_bytes();
        let path = format!("/command/{command_type}");
        match self.presence.push(endpoint_id, &path, payload).await {
            Ok(true) => {
                let ids: Vec<i64> = commands.iter().map(|c| c.id).collect();
                if let Err(e) = self
                    .store
                    .commands_delivered(self.scope(endpoint_id, command_type), &ids)
                    .await
                {
                    tracing::warn!(endpoint_id, error = %e, "cannot record command delivery");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(endpoint_id, error = %e, "cannot push commands"),
        }
    }

    /// An endpoint connected: send it every outstanding command, per type.
    async fn on_connect(&self, endpoint_id: &str) {
        let outstanding = match self
            .store
            .outstanding_commands(&self.config().instance, endpoint_id, None)
            .await
        {
            Ok(commands) => commands,
            Err(e) => {
                tracing::warn!(endpoint_id, error = %e, "cannot read outstanding commands");
                return;
            }
        };
        // Sorted by type then id: one push per type.
        for group in outstanding.chunk_by(|a, b| a.command_type == b.command_type) {
            self.deliver(endpoint_id, &group[0].command_type, group).await;
        }
    }
}

/// The device's view of commands: `[{"id": n, "payload": ...}]`.
fn commands_json(commands: &[Command]) -> Value {
    Value::Array(
        commands
            .iter()
            .map(|c| json!({ "id": c.id, "payload": c.payload }))
            .collect(),
    )
}

/// Runs the device side of CEX until `shutdown` is cancelled (then waits for requests in flight).
///
/// Returns early only if a subscription cannot be made.
pub async fn serve(state: CexState, shutdown: CancellationToken) -> Result<(), ServeError> {
    let config = state.config().clone();
    presence::serve_extension(
        "cex",
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
            async move { state.on_connect(&connected.endpoint_id).await }
        },
    )
    .await
}
