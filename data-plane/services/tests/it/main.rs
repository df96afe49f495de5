//! Integration tests of kaa-services, in one binary (one link instead of one per file).
//!
//! - `epr_rest`: the EPR REST API through `router(state)` + tower `oneshot` (no socket).
//! - `bus`: EPR and EPMX serving over `Bus::in_process()`: the smart-meter tutorial flow, bad input,
//!   ECAP token validation, EPR unavailable.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

mod bus;
mod epr_rest;
mod support;
