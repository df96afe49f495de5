//! The kaa-rs operator: reconciles `Blueprint` custom resources into a running platform.
//!
//! # Layout
//! - [`crd`]: the `Blueprint` resource (kaa-blueprint's spec types) and its status.
pub mod crd;
