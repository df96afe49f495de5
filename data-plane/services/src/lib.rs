//! Kaa platform and extension services of kaa-rs.
//!
//! # Layout
//! - [`epr`]: the endpoint register. Owns endpoints and endpoint metadata (through
//!   [`kaa_store::Store`]); serves them over REST (`/epr/api/v1`, [`epr::router`]) and over the
//!   bus ([`epr::serve`]: 19/EPMMP metadata provider). A registration's `endpointToken` is handed
//!   to `cm`.
//! - [`cm`]: the credential service. Owns endpoint tokens and client credentials (in the database,
//!   or as Kubernetes Secrets read through a watch: [`cm::CredentialStore`]); the 16/ECAP
//!   provider on the bus ([`cm::serve`]) and REST under `/cm/api/v1` and `/ccm/api/v1`
//!   ([`cm::router`]); broadcasts token and credential revocations.
//! - [`epmx`]: the endpoint metadata extension. Answers devices' 10/EPMP requests that the
//!   gateway forwards as 4/ESP `ClientData`, reading and writing metadata only through EPR's
//!   19/EPMMP requests on the bus ([`epmx::serve`]).
//! - [`epl`]: endpoint lifecycle. Turns 9/ELCE connectivity events into EPR metadata
//!   (`connected`, `connectivity_ts`, over 19/EPMMP) and 14/TSTP `connectivity` points.
//! - [`dcx`]: the 2/DCP data collection extension. Forwards devices' samples as 13/DSTP events
//!   and answers once the reliable receivers confirmed them.
//! - [`epts`]: endpoint time series. Owns data points (13/DSTP samples by per-application
//!   extraction, 14/TSTP points) and serves them over REST (`/epts/api/v1`), with retention.
//! - [`cmx`]: the 7/CMP configuration extension (instances `cmx`, `cmx_ota`, ...): configuration
//!   documents per application version and per endpoint, pushed to devices, REST under
//!   `/ecr/api/v1`.
//! - [`cex`]: the 11/CEP command execution extension: commands over REST (`/cex/api/v1`),
//!   delivered to devices (pushed, or on their next connection), their results back over REST.
//! - [`bcx`]: binary data upload: a 1/KP `/token` resource hands devices an upload token, REST
//!   (`/bcx/api/v1`) takes their uploads and lists / serves them.
//! - [`presence`]: which endpoints are online through which gateway replica (9/ELCE), and pushes
//!   to them; shared by CMX and CEX.
//! - [`extension`]: what every 1/KP extension shares: the ClientData loop and the answer to a
//!   device request.
//! - [`rest`]: what every REST API shares: [`rest::AppError`] (one JSON error shape) and body
//!   parsing.
//! - `worker` (private): the loop every bus handler shares: read a subscription, handle each
//!   message in its own task with bounded concurrency, stop on the shutdown signal.
//!
//! Every service has one `Config` (kaa-blueprint's typed config, re-exported), a `serve(..)` future that
//! runs its bus handlers until a [`tokio_util::sync::CancellationToken`] is cancelled, and,
//! where it has a REST API, a `router(state) -> axum::Router` that the binary mounts.

pub mod bcx;
pub mod cex;
pub mod cm;
pub mod cmx;
pub mod dcx;
pub mod epl;
pub mod epmx;
pub mod epr;
pub mod epts;
pub mod extension;
pub mod presence;
pub mod rest;
mod worker;

/// Why an extension service could not start: its config is unusable, or the bus refused a
/// subscription.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid {service} config: {reason}")]
    Config { service: &'static str, reason: String },
    #[error("cannot subscribe to {subject}: {source}")]
    Subscribe {
        subject: String,
        #[source]
        source: kaa_bus::BusError,
    },
}

impl ServeError {
    /// An unusable config of `service` (e.g. `DCX`).
    pub fn config(service: &'static str, reason: impl Into<String>) -> ServeError {
        ServeError::Config {
            service,
            reason: reason.into(),
        }
    }
}
