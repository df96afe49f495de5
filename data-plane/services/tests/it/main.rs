//! Integration tests of kaa-services, in one binary (one link instead of one per file).
//!
//! - `epr_rest`: the EPR REST API through `router(state)` + tower `oneshot` (no socket);
//!   `epr_metadata`: its metadata part.
//! - `bus`: EPR, CM and EPMX serving over `Bus::in_process()`: the smart-meter tutorial flow, bad
//!   input, EPR unavailable.
//! - `cm`: the credential service: 16/ECAP token lifecycle and client authentication, revocation
//!   events; on both storage backends (SQL, Kubernetes Secrets).
//! - `cm_rest`: CM's REST APIs, EPR registration through it, and no secrets in logs; on both
//!   backends where storage is involved.
//! - `control`: CMX, CEX and BCX against a fake gateway replica: pushes on connect and on change,
//!   command results back over REST, upload tokens without request id.
//! - `cm_kubernetes`: what only the Secret backend has: the documented layout, Secrets changed or
//!   deleted behind CM's back (revoked at once), credentials present before CM starts, validation
//!   without API calls, two replicas writing one Secret, a watch that missed changes.
//! - `telemetry`: DCX, EPTS and EPL on the bus: batches stored before DCX answers, failing and
//!   silent receivers, connectivity kept newest-first whatever the event order.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

mod bus;
mod cm;
mod cm_kubernetes;
mod cm_rest;
mod control;
mod epr_metadata;
mod epr_rest;
mod support;
mod telemetry;
