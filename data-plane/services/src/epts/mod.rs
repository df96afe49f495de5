//! EPTS, the endpoint time series service: the one owner of time series data points.
//!
//! # Layout
//! - this file: [`Config`], its [`validate`], [`EptsState`] (what the bus handlers and the REST
//!   API share) and [`serve`] (the bus subscriptions plus the retention loop).
//! - [`ingest`]: 13/DSTP `DataSamplesEvent`s (from the configured data sample transmitters, DCX)
//!   and 14/TSTP `TimeSeriesEvent`s (from the configured time series transmitters, EPL) -> points
//!   in the store; answers `DataSamplesProcessed` / `TimeSeriesProcessed` on `replyTo` once the
//!   points are committed.
//! - [`extract`]: data samples -> points, by the application's settings (pure).
//! - [`dates`]: the REST API's time parameters and ISO 8601 output (pure).
//! - [`rest`]: Kaa's REST API under `/epts/api/v1` ([`router`]).
//! - [`writer`]: group commit of the bus handlers' points (one transaction for the events that
//!   arrive while the previous one is written).
//!
//! Events name an application version; points belong to its application (the Blueprint's
//! applications map one to the other). Subscriptions use the instance name as queue group, so
//! each event is stored once per EPTS instance however many replicas run.

use std::{
    collections::BTreeMap,
    sync::{Arc, OnceLock},
    time::Duration,
};

use kaa_bus::Bus;
use kaa_protocol::subject;
use kaa_store::Store;
use tokio_util::sync::CancellationToken;

use crate::worker;

pub mod dates;
pub mod extract;
pub mod ingest;
pub mod rest;
pub mod writer;

pub use kaa_blueprint::config::{EptsApplication as Application, EptsConfig as Config};
pub use rest::router;

/// Most points deleted per statement by the retention loop, and statements per application and
/// round: bounds the time the write lock is held and the work per round.
const RETENTION_BATCH: u64 = 5_000;
const RETENTION_ROUNDS: usize = 20;
const DAY_MS: i64 = 86_400_000;

pub use crate::ServeError;

/// Checks names, paths and retention.
pub fn validate(config: &Config) -> Result<(), ServeError> {
    let fail = |m: String| Err(ServeError::config("EPTS", m));
    if !subject::is_valid_token(&config.instance) {
        return fail("instance must be a non-empty NATS subject token".into());
    }
    let transmitters = config
        .data_sample_transmitters
        .iter()
        .chain(&config.time_series_transmitters);
    if let Some(bad) = transmitters.into_iter().find(|t| !subject::is_valid_token(t)) {
        return fail(format!("transmitter {bad:?} is not a NATS subject token"));
    }
    if config.retention_interval_ms == 0 {
        return fail("retentionIntervalMs must be greater than 0".into());
    }
    for (name, app) in &config.applications {
        if app.retention_days == Some(0) {
            return fail(format!("{name}: retentionDays must be at least 1"));
        }
        if let Some(path) = app
            .timestamp_path
            .as_deref()
            .filter(|p| !extract::is_valid_path(p))
        {
            return fail(format!(
                "{name}: timestampPath {path:?} is not a JSON pointer or dotted path"
            ));
        }
        for (i, series) in app.time_series.iter().enumerate() {
            let at = format!("{name}: timeSeries[{i}]");
            if series.name.is_empty() || app.time_series[..i].iter().any(|s| s.name == series.name) {
                return fail(format!("{at}: name {:?} is empty or used twice", series.name));
            }
            if series.values.is_empty() {
                return fail(format!("{at}: needs at least one value"));
            }
            for (j, v) in series.values.iter().enumerate() {
                if v.name.is_empty() || series.values[..j].iter().any(|w| w.name == v.name) {
                    return fail(format!("{at}: value name {:?} is empty or used twice", v.name));
                }
                if !extract::is_valid_path(&v.path) {
                    return fail(format!(
                        "{at}: path {:?} is not a JSON pointer or dotted path",
                        v.path
                    ));
                }
            }
            if let Some(path) = series
                .timestamp_path
                .as_deref()
                .filter(|p| !extract::is_valid_path(p))
            {
                return fail(format!(
                    "{at}: timestampPath {path:?} is not a JSON pointer or dotted path"
                ));
            }
        }
    }
    Ok(())
}

/// What the bus handlers and the REST API share.
#[derive(Debug, Clone)]
pub struct EptsState {
    store: Store,
    config: Arc<Config>,
    /// Application version -> application.
    applications: Arc<BTreeMap<String, String>>,
    /// The group-commit writer of the bus handlers, started by [`serve`]; without it points are
    /// written directly.
    writer: Arc<OnceLock<writer::Writer>>,
}

impl EptsState {
    /// Validates `config` and bundles it with the store.
    pub fn new(store: Store, config: Config) -> Result<Self, ServeError> {
        validate(&config)?;
        let applications = config
            .app_versions
            .iter()
            .flat_map(|a| a.versions.iter().map(|v| (v.clone(), a.name.clone())))
            .collect();
        Ok(Self {
            store,
            config: Arc::new(config),
            applications: Arc::new(applications),
            writer: Arc::default(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stores points (all or none): through the group-commit writer once [`serve`] runs.
    pub async fn insert_points(&self, rows: Vec<kaa_store::NewPoint>) -> Result<(), String> {
        match self.writer.get() {
            Some(writer) => writer.insert(rows).await,
            None => self.store.insert_points(&rows).await.map_err(|e| e.to_string()),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The application of an application version.
    pub fn application_of(&self, app_version: &str) -> Option<&str> {
        self.applications.get(app_version).map(String::as_str)
    }

    /// Whether the Blueprint has this application.
    pub fn has_application(&self, name: &str) -> bool {
        self.config.app_versions.iter().any(|a| a.name == name)
    }
}

/// Runs the subscriptions and the retention loop until `shutdown` is cancelled.
pub async fn serve(bus: Bus, state: EptsState, shutdown: CancellationToken) -> Result<(), ServeError> {
    state
        .writer
        .get_or_init(|| writer::Writer::spawn(state.store.clone()));
    let config = state.config().clone();
    let mut handlers = Vec::new();
    let subscribe = |subject: String| {
        worker::subscribe(&bus, subject, &config.instance, |subject, source| {
            ServeError::Subscribe { subject, source }
        })
    };
    for t in &config.data_sample_transmitters {
        let sub = subscribe(subject::dstp_data_samples(t)).await?;
        let (bus, state, stop) = (bus.clone(), state.clone(), shutdown.clone());
        handlers.push(tokio::spawn(async move {
            worker::run("epts.dstp", sub, config_limit(&state), &stop, move |msg| {
                ingest::data_samples(bus.clone(), state.clone(), msg)
            })
            .await;
        }));
    }
    for t in &config.time_series_transmitters {
        let sub = subscribe(subject::tstp_data_points(t, "*")).await?;
        let (bus, state, stop) = (bus.clone(), state.clone(), shutdown.clone());
        handlers.push(tokio::spawn(async move {
            worker::run("epts.tstp", sub, config_limit(&state), &stop, move |msg| {
                ingest::time_series(bus.clone(), state.clone(), msg)
            })
            .await;
        }));
    }
    tracing::info!(
        instance = %config.instance,
        samples_from = ?config.data_sample_transmitters,
        points_from = ?config.time_series_transmitters,
        "EPTS ready"
    );
    retention(&state, &shutdown).await;
    for handler in handlers {
        if let Err(e) = handler.await {
            tracing::error!(error = %e, "EPTS handler failed");
        }
    }
    Ok(())
}

fn config_limit(state: &EptsState) -> usize {
    state.config().max_in_flight
}

/// Every `retentionIntervalMs`, deletes each application's points older than its `retentionDays`,
/// in bounded rounds; returns on shutdown.
async fn retention(state: &EptsState, shutdown: &CancellationToken) {
    let interval = Duration::from_millis(state.config().retention_interval_ms);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        enforce_retention(state, kaa_protocol::now_millis()).await;
    }
}

/// One retention round at time `now` (ms); returns how many points were deleted.
pub async fn enforce_retention(state: &EptsState, now: i64) -> u64 {
    let mut total = 0;
    for (app, settings) in &state.config().applications {
        let Some(days) = settings.retention_days else {
            continue;
        };
        let cutoff = now.saturating_sub(i64::from(days).saturating_mul(DAY_MS));
        for _ in 0..RETENTION_ROUNDS {
            match state
                .store()
                .delete_points_before(app, cutoff, RETENTION_BATCH)
                .await
            {
                Ok(n) => {
                    total += n;
                    if n < RETENTION_BATCH {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(application = %app, error = %e, "retention delete failed");
                    break;
                }
            }
        }
    }
    if total > 0 {
        tracing::info!(deleted = total, "expired time series points deleted");
    }
    total
}
