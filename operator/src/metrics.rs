//! The operator's Prometheus metrics: reconciles, their failures by reason, their durations.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Reason {
    reason: String,
}

/// Cheap to clone; clones share the counters.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    reconciles: Counter,
    failures: Family<Reason, Counter>,
    duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let reconciles = Counter::default();
        let failures = Family::<Reason, Counter>::default();
        // 1 ms to about 16 s: a reconcile is a few API round trips.
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register("kaa_operator_reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "kaa_operator_reconcile_errors",
            "Reconciles failed, by reason",
            failures.clone(),
        );
        registry.register(
            "kaa_operator_reconcile_duration_seconds",
            "How long reconciles took",
            duration.clone(),
        );
        Metrics {
            registry: Arc::new(Mutex::new(registry)),
            reconciles,
            failures,
            duration,
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, took: Duration, failure: Option<&str>) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(reason) = failure {
            self.failures
                .get_or_create(&Reason {
                    reason: reason.to_owned(),
                })
                .inc();
        }
    }

    /// Everything, in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::error!(error = %e, "could not encode the metrics");
        }
        out
    }
}
