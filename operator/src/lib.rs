//! The kaa-rs operator: reconciles `Blueprint` custom resources into a running platform.
//!
//! # Layout
//! A reconcile is a pipeline, one module per step, each with its own error type:
//! - [`crd`]: the `Blueprint` resource (kaa-blueprint's spec types) and its status.
//! - [`validate`]: the resource -> a Blueprint `kaa up` would accept, plus the cluster's rules.
//! - [`build`]: pure, validated Blueprint -> desired Kubernetes objects.
//! - [`apply`]: server-side apply of the desired objects, the admin Secret, pruning.
//! - [`status`]: conditions and per-service replicas.
//! - [`addresses`]: the device addresses of a kpc, from its Service.
//! - [`credentials`]: `spec.credentials` -> the Secrets the cm's Kubernetes backend watches.
//! - [`events`]: Kubernetes Events on the Blueprint (invalid spec, apply failures, changes).
//! - [`controller`]: the pipeline (`reconcile`) and the kube-runtime Controller (`run`).
//! - [`metrics`]: reconcile counts, errors and durations for `/metrics`.
//! - [`http`]: `/health` and `/metrics`.
//! - [`provider`]: the config provider (17/SCMP): each instance's config over HTTP, change
//!   announcements on NATS, and the `ConfigApplied` rollout from the replicas' reports.
//! - [`leader`]: leader election with a Lease (only the holder reconciles).

pub mod addresses;
pub mod apply;
pub mod build;
pub mod controller;
pub mod crd;
pub mod credentials;
pub mod events;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod provider;
pub mod status;
pub mod validate;
