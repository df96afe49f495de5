//! Kaa platform and extension services of kaa-rs.
//!
//! # Layout
//! - [`epr`]: the endpoint register. Owns endpoints, endpoint tokens and endpoint metadata
//!   (through [`kaa_store::Store`]); serves them over REST (`/epr/api/v1`, [`epr::router`]) and
//!   over the bus ([`epr::serve`]: 19/EPMMP metadata provider and 16/ECAP `ep-token-request`
//!   provider).
//! - [`epmx`]: the endpoint metadata extension. Answers devices' 10/EPMP requests that the
//!   gateway forwards as 4/ESP `ClientData`, reading and writing metadata only through EPR's
//!   19/EPMMP requests on the bus ([`epmx::serve`]).
//! - `worker` (private): the loop every bus handler shares: read a subscription, handle each
//!   message in its own task with bounded concurrency, stop on the shutdown signal.
//!
//! Every service has one `Config` (kaa-blueprint's typed config, re-exported), a `serve(..)` future that
//! runs its bus handlers until a [`tokio_util::sync::CancellationToken`] is cancelled, and,
//! where it has a REST API, a `router(state) -> axum::Router` that the binary mounts.

pub mod epmx;
pub mod epr;
mod worker;
