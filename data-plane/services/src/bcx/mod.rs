//! BCX, binary data upload (no Kaa RFC; what the official client does, digest 10.2).
//!
//! - Device side, 1/KP: `kp1/{av}/{bcx}/{token}/token` (any payload) answers
//!   `{"token": "<upload token>"}` on `.../token/status`, also without request id: the official
//!   client sends it on connect without one and waits for the answer. Each request issues a new
//!   random token (256 bits), valid for `tokenTtlMs`; only its SHA-256 is stored.
//! - REST ([`rest`]): `POST /bcx/api/v1/binary-data?name=...` with `X-Auth-Token: <upload token>`
//!   stores the body as the endpoint's blob `name` (no admin token: the upload token is the
//!   credential); listing and download per endpoint need the admin token.
//!
//! Blobs live in the service's database (base64 text) in both modes, `kaa up` and cluster: one
//! place to back up, the same code on SQLite and PostgreSQL. Uploads are limited to
//! `maxUploadBytes` (413 beyond).

use std::sync::Arc;

use kaa_blueprint::config::Live;
use kaa_bus::Bus;
use kaa_protocol::{
    esp::{ClientData, ExtensionData},
    subject,
};
use kaa_store::{Store, bcx::UploadGrant};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{
    extension::{self, Failure},
    worker,
};

pub mod rest;

pub use rest::router;

/// BCX configuration ([`kaa_blueprint::config::BcxConfig`]).
pub use kaa_blueprint::config::BcxConfig as Config;

pub use crate::ServeError;

/// What the bus handler and the REST API share.
#[derive(Debug, Clone)]
pub struct BcxState {
    store: Store,
    bus: Bus,
    /// Read once per request ([`Self::config`]); replaced by a live config change.
    config: Live<Config>,
}

impl BcxState {
    pub fn new(store: Store, bus: Bus, config: Config) -> Result<Self, ServeError> {
        if !subject::is_valid_token(&config.instance) {
            return Err(ServeError::config(
                "BCX",
                "instance must be a non-empty NATS subject token",
            ));
        }
        Ok(BcxState {
            store,
            bus,
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

    fn token_ttl_ms(&self) -> i64 {
        i64::try_from(self.config().token_ttl_ms).unwrap_or(i64::MAX)
    }
}

/// Answers one device request.
pub async fn handle(state: &BcxState, data: ClientData) -> ExtensionData {
    let outcome = match (&data.endpoint_id, data.resource_path.as_str()) {
        (None, _) => Err(Failure::new(
            400,
            "BCX is endpoint-aware: the request carries no endpoint (token)",
        )),
        (Some(endpoint_id), "/token") => issue(state, endpoint_id, &data.app_version_name).await,
        (Some(_), other) => Err(Failure::new(
            404,
            format!("unknown BCX resource path {other:?}; supported: /token"),
        )),
    };
    extension::answer(data, &state.config().instance, outcome)
}

async fn issue(state: &BcxState, endpoint_id: &str, app_version: &str) -> Result<Option<Vec<u8>>, Failure> {
    let token = crate::cm::generate_token();
    let grant = UploadGrant {
        endpoint_id: endpoint_id.to_owned(),
        app_version: app_version.to_owned(),
    };
    state
        .store
        .add_upload_token(
            &state.config().instance,
            token.expose(),
            &grant,
            state.token_ttl_ms(),
        )
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot store an upload token");
            Failure::new(500, "internal error")
        })?;
    Ok(Some(json!({ "token": token.expose() }).to_string().into_bytes()))
}

/// Runs the device side of BCX until `shutdown` is cancelled.
pub async fn serve(state: BcxState, shutdown: CancellationToken) -> Result<(), ServeError> {
    let config = state.config().clone();
    let subject = subject::esp_client_data(&config.instance);
    let requests = worker::subscribe(&state.bus, subject, &config.instance, |subject, source| {
        ServeError::Subscribe { subject, source }
    })
    .await?;
    tracing::info!(instance = %config.instance, "BCX ready");
    extension::serve_client_data(
        "bcx.esp.ClientData",
        &state.bus,
        requests,
        config.max_in_flight,
        &shutdown,
        |_msg, data| {
            let state = state.clone();
            async move { handle(&state, data).await }
        },
    )
    .await;
    Ok(())
}
