//! Integration tests of kaa-services, in one binary (one link instead of one per file).
//!
//! - `epr_rest`: the EPR REST API through `router(state)` + tower `oneshot` (no socket).
//! - `bus`: EPR, CM and EPMX serving over `Bus::in_process()`: the smart-meter tutorial flow, bad
//!   input, EPR unavailable.
//! - `cm`: the credential service: 16/ECAP token lifecycle and client authentication, revocation
//!   events, its REST APIs, EPR registration through it, and no secrets in logs.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

mod bus;
mod cm;
mod epr_rest;
mod support;
