//! The process's Prometheus metrics: one registry per process ([`Metrics`]), created by the
//! `kaa` binary and handed to the services it starts, each of which registers its own metrics in
//! it; `GET /metrics` encodes it. Also the bus's own metric, the request/reply round trip time
//! ([`Bus::with_metrics`](crate::Bus::with_metrics)).
//!
//! It lives in the bus crate because every service already depends on it and holds a `Bus`; no
//! global registry, so tests can run several platforms in one process without sharing counters.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

pub use prometheus_client;

/// The `Content-Type` of [`Metrics::encode`]'s output (Prometheus scrapes OpenMetrics text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics registry of one process. Cheap to clone; clones share the registry.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Registers `metric` as `name` (counters get the `_total` suffix when encoded). Names must be
    /// unique in the process: register at start-up, once per process-wide component.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry().register(name, help, metric);
    }

    /// Everything registered, in the OpenMetrics text format (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug in a metric.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry()) {
            tracing::error!(error = %e, "could not encode the metrics");
        }
        out
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // Registration and encoding never leave the registry half-updated.
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Latency buckets from 0.5 ms to about 16 s (doubling): bus round trips and device requests.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0005, 2.0, 16)
}

/// A histogram with [`latency_buckets`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SubjectKind {
    subject_kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Failure {
    subject_kind: String,
    reason: &'static str,
}

/// The bus's metrics, shared by every clone of an instrumented [`Bus`](crate::Bus).
#[derive(Debug)]
pub(crate) struct BusMetrics {
    request_duration: Family<SubjectKind, Histogram, fn() -> Histogram>,
    request_failures: Family<Failure, Counter>,
}

impl BusMetrics {
    pub(crate) fn register(metrics: &Metrics) -> BusMetrics {
        let request_duration: Family<SubjectKind, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let request_failures = Family::<Failure, Counter>::default();
        metrics.register(
            "kaa_bus_request_duration_seconds",
            "Bus request/reply round trips that got an answer, by protocol message type",
            request_duration.clone(),
        );
        metrics.register(
            "kaa_bus_request_failures",
            "Bus requests that got no answer (timeout, no_responders, error), by protocol message type",
            request_failures.clone(),
        );
        BusMetrics {
            request_duration,
            request_failures,
        }
    }

    pub(crate) fn observe(&self, subject: &str, elapsed: Duration, outcome: Result<(), &crate::BusError>) {
        let subject_kind = subject_kind(subject).to_owned();
        match outcome {
            Ok(()) => self
                .request_duration
                .get_or_create(&SubjectKind { subject_kind })
                .observe(elapsed.as_secs_f64()),
            Err(e) => {
                let reason = match e {
                    crate::BusError::Timeout => "timeout",
                    crate::BusError::NoResponders(_) => "no_responders",
                    _ => "error",
                };
                self.request_failures
                    .get_or_create(&Failure { subject_kind, reason })
                    .inc();
            }
        }
    }
}

/// The label of a request subject: `{protocol}.{message type}` of a 3/ISM service subject
/// (`kaa.v1.service.{instance}.ecap.ep-token-request` -> `ecap.ep-token-request`), so that the
/// label set stays small however many instances there are; `other` for anything else.
pub fn subject_kind(subject: &str) -> &str {
    let Some(rest) = subject.strip_prefix("kaa.v1.service.") else {
        return "other";
    };
    match rest.split_once('.') {
        Some((_instance, kind)) if kind.contains('.') => kind,
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_kinds_drop_the_instance() {
        assert_eq!(
            subject_kind("kaa.v1.service.cm.ecap.ep-token-request"),
            "ecap.ep-token-request"
        );
        assert_eq!(
            subject_kind("kaa.v1.service.epr-2.epmmp.EndpointMetadataGetRequest"),
            "epmmp.EndpointMetadataGetRequest"
        );
        assert_eq!(subject_kind("kaa.v1.service.cm.ecap"), "other");
        assert_eq!(subject_kind("svc.echo"), "other");
        assert_eq!(subject_kind(""), "other");
    }

    #[test]
    fn the_registry_encodes_what_was_registered() {
        let metrics = Metrics::new();
        let bus = BusMetrics::register(&metrics);
        bus.observe(
            "kaa.v1.service.cm.ecap.ep-token-request",
            Duration::from_millis(3),
            Ok(()),
        );
        bus.observe("svc.x", Duration::ZERO, Err(&crate::BusError::Timeout));
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"kaa_bus_request_duration_seconds_count{subject_kind="ecap.ep-token-request"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"kaa_bus_request_failures_total{subject_kind="other",reason="timeout"} 1"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
