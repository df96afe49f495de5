//! EPL, the endpoint lifecycle service: endpoint connectivity from 9/ELCE events.
//!
//! Subscribes to every gateway's connectivity events (`kaa.v1.events.*.endpoint.connectivity.*`,
//! queue group = instance, so each event is handled once per EPL instance however many replicas
//! run) and, for every endpoint of an event:
//! - writes `{connected: true|false, connectivity_ts: <event time, ms>}` (keys configurable) into
//!   the endpoint's EPR metadata over 19/EPMMP, unless the stored `connectivity_ts` is newer: a
//!   late or re-delivered event never overrides a newer one (at equal times the one handled
//!   later wins: one endpoint's changes are applied in the order received, see [`serve`], and a
//!   gateway announces a session's connect before its disconnect). The write is a JSON Patch
//!   whose `test` op checks the `connectivity_ts` just read (or, when there is none yet, a write
//!   conditional on the metadata's ETag), so two replicas racing on one endpoint cannot reorder
//!   it; a lost race is re-read and retried, a bounded number of times.
//! - broadcasts a 14/TSTP `connectivity` data point (value 1 or 0 at the event time) on
//!   `kaa.v1.events.{instance}.endpoint.data-collection.data-points-received.connectivity`,
//!   every event, stale ones included: they are true history, and EPTS stores points by time.
//!
//! Endpoints EPR does not know (deleted meanwhile) are skipped.

use std::{
    collections::BTreeMap,
    hash::{Hash, Hasher},
    time::Duration,
};

use bytes::Bytes;
use kaa_blueprint::config::Live;
use kaa_bus::Bus;
use kaa_protocol::{
    avro::AvroRecord,
    collection::{DataPoint, PointValue, TimeSeriesEvent},
    elce::{ConnectedEvent, DisconnectedEvent},
    now_millis, subject,
};
use serde_json::{Value, json};
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    epmx::epr_client::{EprClient, Failure},
    worker,
};

pub use kaa_blueprint::config::{EplConfig as Config, EplSettings as Settings};

/// The 14/TSTP series EPL transmits.
pub const CONNECTIVITY_SERIES: &str = "connectivity";

/// How often a metadata write that lost a race is retried.
const RETRIES: usize = 5;

/// Changes queued per lane before reading events waits.
const LANE_DEPTH: usize = 64;

pub use crate::ServeError;

/// Checks names, keys and the timeout.
pub fn validate(config: &Config) -> Result<(), ServeError> {
    let fail = |m: &str| Err(ServeError::config("EPL", m.to_owned()));
    if !subject::is_valid_token(&config.instance) || !subject::is_valid_token(&config.epr_instance) {
        return fail("instance and eprInstance must be non-empty NATS subject tokens");
    }
    let s = &config.settings;
    if !kaa_store::is_valid_metadata_key(&s.connected_key)
        || !kaa_store::is_valid_metadata_key(&s.connectivity_ts_key)
        || s.connected_key == s.connectivity_ts_key
    {
        return fail(
            "connectedKey and connectivityTsKey must be two different metadata keys (^[a-zA-Z0-9_]+$)",
        );
    }
    if s.request_timeout_ms == 0 {
        return fail("requestTimeoutMs must be greater than 0");
    }
    Ok(())
}

/// A connectivity change of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub endpoint_id: String,
    pub app_version: String,
    pub connected: bool,
    /// The event's time, ms.
    pub at: i64,
}

/// The changes an ELCE event on `subject` carries (`None`: not a connectivity event).
pub fn changes(subject: &str, payload: &[u8]) -> Option<Vec<Change>> {
    let (connected, at, endpoints) = if subject.ends_with(".connected") {
        let e = ConnectedEvent::from_avro(payload).ok()?;
        (true, e.timestamp, e.endpoints)
    } else if subject.ends_with(".disconnected") {
        let e = DisconnectedEvent::from_avro(payload).ok()?;
        (false, e.timestamp, e.endpoints)
    } else {
        return None;
    };
    Some(
        endpoints
            .into_iter()
            .map(|(endpoint_id, app_version)| Change {
                endpoint_id,
                app_version,
                connected,
                at,
            })
            .collect(),
    )
}

/// Whether a change at `at` supersedes the stored state last changed at `stored`: a newer one
/// does, an older one does not, one of the same millisecond does (it was handled later).
pub fn supersedes(at: i64, stored: Option<i64>) -> bool {
    stored.is_none_or(|stored| at >= stored)
}

/// Runs EPL until `shutdown` is cancelled (then finishes the changes already read).
///
/// Events are read in order and each endpoint's changes go to one of `maxInFlight` lanes (by a
/// hash of its id) that applies them one after the other: one endpoint's changes are applied in
/// the order this replica received them, different endpoints' concurrently.
///
/// The settings (keys, timeout) are read from the live config once per change recorded; the
/// instance names and `maxInFlight` are fixed at start.
pub async fn serve(
    bus: Bus,
    config: impl Into<Live<Config>>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let live = config.into();
    let config = live.get();
    validate(&config)?;
    let mut sub = worker::subscribe(
        &bus,
        subject::elce_connectivity_any(),
        &config.instance,
        |subject, source| ServeError::Subscribe { subject, source },
    )
    .await?;
    tracing::info!(instance = %config.instance, epr = %config.epr_instance, "EPL ready");
    let mut lanes = Vec::new();
    let mut workers = JoinSet::new();
    for _ in 0..config.settings.max_in_flight.max(1) {
        let (tx, mut rx) = mpsc::channel::<Change>(LANE_DEPTH);
        let (bus, live) = (bus.clone(), live.clone());
        workers.spawn(async move {
            while let Some(change) = rx.recv().await {
                let config = live.get();
                let epr = EprClient::new(
                    bus.clone(),
                    config.epr_instance.clone(),
                    Duration::from_millis(config.settings.request_timeout_ms),
                );
                if let Err(f) = record(&epr, &config.settings, &change).await {
                    tracing::warn!(endpoint_id = %change.endpoint_id, error = %f, "connectivity not recorded");
                }
                transmit(&bus, &config.instance, &change).await;
            }
        });
        lanes.push(tx);
    }
    loop {
        let msg = tokio::select! {
            () = shutdown.cancelled() => break,
            msg = sub.next() => match msg {
                Some(msg) => msg,
                None => break,
            },
        };
        let Some(changes) = changes(&msg.subject, &msg.payload) else {
            tracing::warn!(subject = %msg.subject, "undecodable connectivity event dropped");
            continue;
        };
        for change in changes {
            let lane = &lanes[lane_of(&change.endpoint_id, lanes.len())];
            if lane.send(change).await.is_err() {
                tracing::error!("an EPL lane stopped");
            }
        }
    }
    drop(sub);
    drop(lanes);
    while let Some(done) = workers.join_next().await {
        if let Err(e) = done {
            tracing::error!(error = %e, "EPL lane failed");
        }
    }
    Ok(())
}

/// The lane of an endpoint: the same for all its changes.
fn lane_of(endpoint_id: &str, lanes: usize) -> usize {
    let mut hasher = std::hash::DefaultHasher::new();
    endpoint_id.hash(&mut hasher);
    usize::try_from(hasher.finish() % u64::try_from(lanes.max(1)).unwrap_or(1)).unwrap_or(0)
}

/// Writes `change` into the endpoint's metadata unless a newer change is stored there.
pub async fn record(epr: &EprClient, settings: &Settings, change: &Change) -> Result<(), Failure> {
    let cid = uuid::Uuid::new_v4().to_string();
    let (connected, ts) = (&settings.connected_key, &settings.connectivity_ts_key);
    let keys = [connected.clone(), ts.clone()];
    for _ in 0..RETRIES {
        let snapshot = match epr.get(&cid, &change.endpoint_id, &keys).await {
            Err(f) if f.status_code == 404 => {
                tracing::debug!(endpoint_id = %change.endpoint_id, "connectivity of an unknown endpoint ignored");
                return Ok(());
            }
            other => other?,
        };
        let stored = snapshot.body.get(ts.as_str());
        let stored_ts = stored.and_then(Value::as_i64);
        if !supersedes(change.at, stored_ts) {
            return Ok(());
        }
        let mut ops = Vec::new();
        // The guard: the time read must still be there when the patch applies.
        let if_match = match stored {
            Some(value) => {
                ops.push(json!({"op": "test", "path": format!("/{ts}"), "value": value}));
                None
            }
            None => snapshot.e_tag,
        };
        ops.push(json!({"op": "add", "path": format!("/{connected}"), "value": change.connected}));
        ops.push(json!({"op": "add", "path": format!("/{ts}"), "value": change.at}));
        match epr.patch(&cid, &change.endpoint_id, if_match, ops).await {
            // 409: the test failed; 412: the ETag is stale. Someone else wrote: look again.
            Err(f) if f.status_code == 409 || f.status_code == 412 => continue,
            Err(f) if f.status_code == 404 => return Ok(()),
            other => return other,
        }
    }
    Err(Failure::new(409, "connectivity kept changing concurrently"))
}

/// Broadcasts the change as one 14/TSTP `connectivity` point (1 connected, 0 disconnected).
async fn transmit(bus: &Bus, instance: &str, change: &Change) {
    let now = now_millis();
    let event = TimeSeriesEvent {
        correlation_id: uuid::Uuid::new_v4().to_string(),
        timestamp: now,
        timeout: 0,
        app_version_name: change.app_version.clone(),
        endpoint_id: change.endpoint_id.clone(),
        time_series_name: CONNECTIVITY_SERIES.to_owned(),
        data_points: vec![DataPoint {
            ingestion_timestamp: now,
            timestamp: change.at,
            values: BTreeMap::from([("value".to_owned(), PointValue::Int(i32::from(change.connected)))]),
        }],
    };
    let subject = subject::tstp_data_points(instance, CONNECTIVITY_SERIES);
    if let Err(e) = bus.publish(&subject, Bytes::from(event.to_avro())).await {
        tracing::warn!(error = %e, "cannot publish a connectivity data point");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_changes_win_and_ties_go_to_the_later_one() {
        assert!(supersedes(10, None));
        assert!(supersedes(11, Some(10)));
        assert!(!supersedes(9, Some(10)));
        assert!(supersedes(10, Some(10)));
    }

    #[test]
    fn an_endpoint_always_gets_the_same_lane() {
        for lanes in [1, 7, 256] {
            let lane = lane_of("endpoint-1", lanes);
            assert!(lane < lanes);
            assert_eq!(lane_of("endpoint-1", lanes), lane);
        }
    }

    #[test]
    fn events_become_one_change_per_endpoint() {
        let event = DisconnectedEvent {
            correlation_id: "c".into(),
            timestamp: 42,
            timeout: 0,
            endpoints: BTreeMap::from([("a".into(), "v1".into()), ("b".into(), "v2".into())]),
            originator_replica_id: "kpc-0".into(),
        };
        let got = changes(
            "kaa.v1.events.kpc.endpoint.connectivity.disconnected",
            &event.to_avro(),
        )
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[1],
            Change {
                endpoint_id: "b".into(),
                app_version: "v2".into(),
                connected: false,
                at: 42
            }
        );
        assert!(changes("kaa.v1.events.kpc.endpoint.connectivity.connected", b"junk").is_none());
        assert!(changes("kaa.v1.events.kpc.endpoint.connectivity.other", &event.to_avro()).is_none());
    }

    #[test]
    fn config_is_checked() {
        validate(&Config::default()).unwrap();
        let mut same = Config::default();
        same.settings.connectivity_ts_key = "connected".into();
        assert!(validate(&same).is_err());
        let mut bad = Config::default();
        bad.settings.connected_key = "on-line".into();
        assert!(validate(&bad).is_err());
    }
}
