//! The kaa-rs operator: reconciles `Blueprint` custom resources into a running platform.
//!
//! # Layout
//! A reconcile is a pipeline, one module per step, each with its own error type:
//! - [`crd`]: the `Blueprint` resource (kaa-blueprint's spec types) and its status.
//! - [`validate`]: the resource -> a Blueprint `kaa up` would accept, plus the cluster's rules.
//! - [`build`]: pure, validated Blueprint -> desired Kubernetes objects.

pub mod build;
pub mod crd;
pub mod validate;
