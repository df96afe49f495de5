//! EPTS, the endpoint time series service: the one owner of time series data points.
//!
//! # Layout
//! - this file: [`Config`], its [`validate`], [`EptsState`] (what the bus handlers and the REST
//!   API share) and [`serve`] (the bus subscriptions plus the retention loop).
//! - [`ingest`]: 13/DSTP `DataSamplesEvent`s (from the configured data sample transmitters, DCX)
//!   and 14/TSTP `TimeSeriesEvent`s (from the configured time series transmitters, EPL) -> points
//!   in the store; answers `DataSamplesProcessed` / `TimeSeriesProcessed` on `replyTo` once the
//!   points are committed.
//! - [`writer`]: group commit of the bus handlers' points (one transaction for the events that
//!   arrive while the previous one is written).
//! - [`extract`]: data samples -> points, by the application's settings (pure).
//! - [`dates`]: the REST API's time parameters and ISO 8601 output (pure).
//! - [`rest`]: Kaa's REST API under `/epts/api/v1` ([`router`]).
//!
//! Events name an application version; points belong to its application (the Blueprint's
//! applications map one to the other). Subscriptions use the instance name as queue group, so
//! each event is stored once per EPTS instance however many replicas run.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use kaa_blueprint::config::Live;
use kaa_bus::Bus;
use kaa_protocol::subject;
use kaa_store::Store;
use tokio_util::sync::CancellationToken;

pub mod dates;
pub mod extract;
mod feeds;
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
    /// Read once per request ([`Self::config`]); replaced by a live config change.
    config: Live<Config>,
    /// The group-commit writer of the bus handlers, started by [`serve`]; without it points are
    /// written directly.
    writer: Arc<OnceLock<writer::Writer>>,
}

impl EptsState {
    /// Validates `config` and bundles it with the store.
    pub fn new(store: Store, config: Config) -> Result<Self, ServeError> {
        validate(&config)?;
        Ok(Self {
            store,
            config: Live::new(config),
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

    /// The current config: read it once per request and keep that snapshot.
    pub fn config(&self) -> Arc<Config> {
        self.config.get()
    }

    /// The handle that replaces the config while the service runs.
    pub fn live_config(&self) -> &Live<Config> {
        &self.config
    }

    /// The application of an application version.
    pub fn application_of(&self, app_version: &str) -> Option<String> {
        let config = self.config();
        let app = config
            .app_versions
            .iter()
            .find(|a| a.versions.iter().any(|v| v == app_version));
        app.map(|a| a.name.clone())
    }

    /// Whether the Blueprint has this application.
    pub fn has_application(&self, name: &str) -> bool {
        self.config().app_versions.iter().any(|a| a.name == name)
    }
}

/// How often the transmitter subscriptions are compared with the live config.
const FEEDS_CHECK: Duration = Duration::from_secs(1);

/// Runs the subscriptions and the retention loop until `shutdown` is cancelled. Both follow
/// the live config: the transmitters (checked every [`FEEDS_CHECK`]) and the retention interval.
pub async fn serve(bus: Bus, state: EptsState, shutdown: CancellationToken) -> Result<(), ServeError> {
    state
        .writer
        .get_or_init(|| writer::Writer::spawn(state.store.clone()));
    let mut feeds = feeds::Feeds::default();
    feeds.sync(&bus, &state, &shutdown).await?;
    let config = state.config();
    tracing::info!(
        instance = %config.instance,
        samples_from = ?config.data_sample_transmitters,
        points_from = ?config.time_series_transmitters,
        "EPTS ready"
    );
    let mut next_retention = tokio::time::Instant::now() + retention_interval(&state);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep_until(next_retention) => {
                enforce_retention(&state, kaa_protocol::now_millis()).await;
                next_retention = tokio::time::Instant::now() + retention_interval(&state);
            }
            () = tokio::time::sleep(FEEDS_CHECK) => {
                if let Err(e) = feeds.sync(&bus, &state, &shutdown).await {
                    tracing::warn!(error = %e, "EPTS cannot follow a transmitter; retrying");
                }
            }
        }
    }
    feeds.wait().await;
    Ok(())
}

/// Every `retentionIntervalMs`, each application's points older than its `retentionDays` are
/// deleted, in bounded rounds.
fn retention_interval(state: &EptsState) -> Duration {
    Duration::from_millis(state.config().retention_interval_ms)
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
