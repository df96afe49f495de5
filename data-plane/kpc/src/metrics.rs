//! The gateway's Prometheus metrics, registered in the process's
//! [`Metrics`](kaa_bus::metrics::Metrics) registry when KPC starts (one KPC per registry).
//!
//! The hot path never formats a label: each configured extension instance's counters and
//! histogram are resolved once at start ([`ExtensionMetrics`]), as is each limit's refusal
//! counter; each listener's connection gauge when the listener starts. Labels never come from device input: a request for an extension the
//! configuration does not route counts under `extension="unrouted"`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use kaa_blueprint::config::KpcConfig;
use kaa_bus::metrics::{Metrics, latency_histogram};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::gateway::Limit;

/// The `extension` label of requests that name no routed extension (bad topic, unknown
/// application version or extension).
pub const UNROUTED: &str = "unrouted";

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Transport {
    transport: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Message {
    extension: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Reply {
    extension: String,
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Extension {
    extension: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

/// Why a client or a request was not authenticated (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    /// CONNECT: wrong username or password.
    BadCredentials,
    /// CONNECT: the credential or certificate is not allowed.
    NotAuthorized,
    /// CONNECT: the credential provider did not answer.
    ProviderUnavailable,
    /// CONNECT: too many failed CONNECTs from the address.
    RateLimited,
    /// CONNECT: the credential was revoked while it was being checked.
    Revoked,
    /// Request: the endpoint token is unknown or invalid.
    UnknownToken,
    /// Request: the endpoint token is known but refused (e.g. suspended).
    TokenRefused,
    /// Request: the token provider did not answer.
    TokenUnavailable,
}

impl AuthFailure {
    fn label(self) -> &'static str {
        match self {
            AuthFailure::BadCredentials => "bad_credentials",
            AuthFailure::NotAuthorized => "not_authorized",
            AuthFailure::ProviderUnavailable => "provider_unavailable",
            AuthFailure::RateLimited => "rate_limited",
            AuthFailure::Revoked => "revoked",
            AuthFailure::UnknownToken => "unknown_token",
            AuthFailure::TokenRefused => "token_refused",
            AuthFailure::TokenUnavailable => "token_unavailable",
        }
    }
}

/// What the gateway sends a client (the `kind` label of `kaa_kpc_replies_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyKind {
    Status,
    Error,
    Push,
}

/// One extension instance's series, resolved once.
#[derive(Debug)]
pub(crate) struct ExtensionMetrics {
    forwarded: Counter,
    rejected_4xx: Counter,
    rejected_5xx: Counter,
    status: Counter,
    error: Counter,
    push: Counter,
    duration: Histogram,
}

impl ExtensionMetrics {
    /// A request went to the extension.
    pub(crate) fn forwarded(&self) {
        self.forwarded.inc();
    }

    /// The gateway refused a request with `status_code` (it never reached the extension).
    pub(crate) fn rejected(&self, status_code: u16) {
        if status_code < 500 {
            self.rejected_4xx.inc();
        } else {
            self.rejected_5xx.inc();
        }
    }

    pub(crate) fn replied(&self, kind: ReplyKind) {
        match kind {
            ReplyKind::Status => self.status.inc(),
            ReplyKind::Error => self.error.inc(),
            ReplyKind::Push => self.push.inc(),
        };
    }

    /// The extension answered a request the client published at `started`.
    pub(crate) fn answered(&self, started: Instant) {
        self.duration.observe(started.elapsed().as_secs_f64());
    }
}

/// All of one KPC's metrics.
#[derive(Debug)]
pub(crate) struct KpcMetrics {
    connections: Family<Transport, Gauge>,
    extensions: HashMap<String, Arc<ExtensionMetrics>>,
    unrouted: Arc<ExtensionMetrics>,
    auth_failures: Family<Reason, Counter>,
    timeouts: Counter,
    dropped: Counter,
    /// One counter per limit, in the order of `Limit::ALL`.
    limit_refusals: [Counter; Limit::ALL.len()],
}

impl KpcMetrics {
    /// Registers the gateway's metrics and resolves the series of every extension `config` routes.
    pub(crate) fn register(metrics: &Metrics, config: &KpcConfig) -> KpcMetrics {
        let connections = Family::<Transport, Gauge>::default();
        let messages = Family::<Message, Counter>::default();
        let replies = Family::<Reply, Counter>::default();
        let durations: Family<Extension, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let auth_failures = Family::<Reason, Counter>::default();
        let timeouts = Counter::default();
        let dropped = Counter::default();
        let limit_refusals = Family::<LimitLabel, Counter>::default();
        metrics.register(
            "kaa_kpc_connections",
            "Open MQTT sessions (authenticated, CONNACK sent), by transport",
            connections.clone(),
        );
        metrics.register(
            "kaa_kpc_messages",
            "1/KP requests from devices, by extension instance and outcome (forwarded, rejected_4xx, rejected_5xx)",
            messages.clone(),
        );
        metrics.register(
            "kaa_kpc_replies",
            "Messages to devices, by extension instance and kind (status, error, push)",
            replies.clone(),
        );
        metrics.register(
            "kaa_kpc_request_duration_seconds",
            "From a device's request to the extension's answer, by extension instance",
            durations.clone(),
        );
        metrics.register(
            "kaa_kpc_auth_failures",
            "Refused CONNECTs and endpoint tokens, by reason",
            auth_failures.clone(),
        );
        metrics.register(
            "kaa_kpc_request_timeouts",
            "Requests the extension did not answer in time (answered 504)",
            timeouts.clone(),
        );
        metrics.register(
            "kaa_kpc_dropped_messages",
            "Messages to a device dropped because its outbound queue was full (a slow client)",
            dropped.clone(),
        );
        metrics.register(
            "kaa_kpc_limit_refusals",
            "Connections and requests refused or closed by a gateway limit, by limit",
            limit_refusals.clone(),
        );
        let resolve = |name: &str| {
            let message = |outcome| Message {
                extension: name.to_owned(),
                outcome,
            };
            let reply = |kind| Reply {
                extension: name.to_owned(),
                kind,
            };
            Arc::new(ExtensionMetrics {
                forwarded: messages.get_or_create_owned(&message("forwarded")),
                rejected_4xx: messages.get_or_create_owned(&message("rejected_4xx")),
                rejected_5xx: messages.get_or_create_owned(&message("rejected_5xx")),
                status: replies.get_or_create_owned(&reply("status")),
                error: replies.get_or_create_owned(&reply("error")),
                push: replies.get_or_create_owned(&reply("push")),
                duration: durations.get_or_create_owned(&Extension {
                    extension: name.to_owned(),
                }),
            })
        };
        let extensions = config
            .app_versions
            .values()
            .flat_map(|route| &route.extensions)
            .map(|name| (name.clone(), resolve(name)))
            .collect();
        KpcMetrics {
            connections,
            extensions,
            unrouted: resolve(UNROUTED),
            auth_failures,
            timeouts,
            dropped,
            // Every series exists from the start (at 0), so a dashboard sees a limit before it bites.
            limit_refusals: Limit::ALL
                .map(|limit| limit_refusals.get_or_create_owned(&LimitLabel { limit: limit.label() })),
        }
    }

    /// The series of a routed extension instance (`unrouted` for any other name).
    pub(crate) fn extension(&self, name: &str) -> &Arc<ExtensionMetrics> {
        self.extensions.get(name).unwrap_or(&self.unrouted)
    }

    pub(crate) fn unrouted(&self) -> &Arc<ExtensionMetrics> {
        &self.unrouted
    }

    /// The open-connections gauge of the listener `transport` (`mqtt`, `mqtts`).
    pub(crate) fn connections(&self, transport: &'static str) -> Gauge {
        self.connections.get_or_create_owned(&Transport { transport })
    }

    pub(crate) fn auth_failure(&self, why: AuthFailure) {
        self.auth_failures
            .get_or_create(&Reason { reason: why.label() })
            .inc();
    }

    pub(crate) fn timed_out(&self) {
        self.timeouts.inc();
    }

    pub(crate) fn dropped(&self) {
        self.dropped.inc();
    }

    pub(crate) fn limit_refused(&self, limit: Limit) {
        if let Some(counter) = self.limit_refusals.get(limit as usize) {
            counter.inc();
        }
    }
}

/// Counts one open connection in a gauge for as long as it lives.
#[derive(Debug)]
pub(crate) struct Connected(Gauge);

impl Connected {
    pub(crate) fn new(gauge: &Gauge) -> Connected {
        gauge.inc();
        Connected(gauge.clone())
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.dec();
    }
}
