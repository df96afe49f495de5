//! 13/DSTP data samples and 14/TSTP data points -> stored points, and the receiver's answer.
//!
//! An answer goes out only when the event has a `replyTo` (the transmitter waits for it) and only
//! after the points are committed. Statuses: 200 stored (skipped values named in the
//! `reasonPhrase`), 400 undecodable event, 404 unknown application version, 415 samples not
//! JSON, 500 the database failed. Samples that are not valid JSON are skipped like values of the
//! wrong type: the rest of the batch is stored.

use bytes::Bytes;
use kaa_bus::{Bus, Message};
use kaa_protocol::{
    avro::AvroRecord,
    collection::{
        self, DataSamplesEvent, DataSamplesProcessed, PointValue, TimeSeriesEvent, TimeSeriesProcessed,
    },
    now_millis,
};
use kaa_store::NewPoint;
use serde_json::{Map, Value};

use super::{
    EptsState,
    extract::{self, Skipped},
};

/// Outcome of one event: status and reason for the answer.
type Outcome = (i32, Option<String>);

/// Handles one `DataSamplesEvent`.
pub async fn data_samples(bus: Bus, state: EptsState, msg: Message) {
    let (correlation_id, (status_code, reason_phrase)) = match DataSamplesEvent::from_avro(&msg.payload) {
        Ok(event) => (event.correlation_id.clone(), store_samples(&state, event).await),
        Err(e) => (
            String::new(),
            (400, Some(format!("undecodable DataSamplesEvent: {e}"))),
        ),
    };
    let answer = DataSamplesProcessed {
        correlation_id,
        timestamp: now_millis(),
        timeout: 0,
        receiver_service_instance_name: state.config().instance.clone(),
        status_code,
        reason_phrase,
    };
    answer_if_asked(&bus, &msg, answer.to_avro()).await;
}

/// Handles one `TimeSeriesEvent`.
pub async fn time_series(bus: Bus, state: EptsState, msg: Message) {
    let (correlation_id, (status_code, reason_phrase)) = match TimeSeriesEvent::from_avro(&msg.payload) {
        Ok(event) => (event.correlation_id.clone(), store_series(&state, event).await),
        Err(e) => (
            String::new(),
            (400, Some(format!("undecodable TimeSeriesEvent: {e}"))),
        ),
    };
    let answer = TimeSeriesProcessed {
        correlation_id,
        timestamp: now_millis(),
        timeout: 0,
        status_code,
        reason_phrase,
    };
    answer_if_asked(&bus, &msg, answer.to_avro()).await;
}

async fn answer_if_asked(bus: &Bus, msg: &Message, payload: Vec<u8>) {
    if let Some(reply_to) = &msg.reply_to
        && let Err(e) = bus.publish(reply_to, Bytes::from(payload)).await
    {
        tracing::warn!(subject = %reply_to, error = %e, "cannot answer a transmitter");
    }
}

async fn store_samples(state: &EptsState, event: DataSamplesEvent) -> Outcome {
    let Some(app) = state.application_of(&event.app_version_name) else {
        return unknown_version(&event.app_version_name);
    };
    if event.content_type != collection::JSON {
        return (
            415,
            Some(format!(
                "content type {:?} is not {}",
                event.content_type,
                collection::JSON
            )),
        );
    }
    let config = state.config();
    let Some(settings) = config.applications.get(&app) else {
        // Nothing to extract for this application: stored (as nothing), not an error.
        return (
            200,
            Some(format!("no time series configured for application {app}")),
        );
    };
    let mut skipped = Skipped::default();
    let samples: Vec<Value> = event
        .data_samples
        .iter()
        .enumerate()
        .filter_map(|(i, bytes)| match serde_json::from_slice(bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                skipped.add(|| format!("sample {i} is not JSON: {e}"));
                None
            }
        })
        .collect();
    // The transmitter's timestamp is when the platform received the samples.
    let (points, more) = extract::extract(settings, &samples, event.timestamp);
    skipped.count += more.count;
    skipped.reasons.extend(more.reasons);
    let ingested_at = now_millis();
    let rows: Vec<NewPoint> = points
        .into_iter()
        .map(|p| NewPoint {
            app_name: app.to_owned(),
            series: p.series,
            endpoint_id: event.endpoint_id.clone(),
            ts: p.ts,
            seq: i64::try_from(p.sample).unwrap_or(i64::MAX),
            ingested_at,
            values: p.values,
        })
        .collect();
    let summary = skipped.summary();
    if let Some(summary) = &summary {
        tracing::warn!(
            correlation_id = %event.correlation_id,
            endpoint_id = %event.endpoint_id,
            skipped = skipped.count,
            "data samples partly unusable: {summary}"
        );
    }
    insert(state, rows, &event.correlation_id)
        .await
        .map_or_else(|e| e, |()| (200, summary))
}

async fn store_series(state: &EptsState, event: TimeSeriesEvent) -> Outcome {
    let Some(app) = state.application_of(&event.app_version_name) else {
        return unknown_version(&event.app_version_name);
    };
    let rows: Vec<NewPoint> = event
        .data_points
        .iter()
        .enumerate()
        .map(|(i, p)| NewPoint {
            app_name: app.to_owned(),
            series: event.time_series_name.clone(),
            endpoint_id: event.endpoint_id.clone(),
            ts: p.timestamp,
            seq: i64::try_from(i).unwrap_or(i64::MAX),
            ingested_at: p.ingestion_timestamp,
            values: p
                .values
                .iter()
                .map(|(k, v)| (k.clone(), json_of(v)))
                .collect::<Map<_, _>>(),
        })
        .collect();
    insert(state, rows, &event.correlation_id)
        .await
        .map_or_else(|e| e, |()| (200, None))
}

async fn insert(state: &EptsState, rows: Vec<NewPoint>, correlation_id: &str) -> Result<(), Outcome> {
    state.insert_points(rows).await.map_err(|e| {
        tracing::error!(%correlation_id, error = %e, "cannot store time series points");
        (500, Some("time series storage failed".to_owned()))
    })
}

fn unknown_version(version: &str) -> Outcome {
    (404, Some(format!("unknown application version {version}")))
}

/// A 14/TSTP value as JSON; bytes become an array of numbers (JSON has no bytes).
fn json_of(value: &PointValue) -> Value {
    match value {
        PointValue::Boolean(b) => Value::Bool(*b),
        PointValue::Int(i) => Value::from(*i),
        PointValue::Long(l) => Value::from(*l),
        PointValue::Float(f) => Value::from(f64::from(*f)),
        PointValue::Double(d) => Value::from(*d),
        PointValue::String(s) => Value::String(s.clone()),
        PointValue::Bytes(b) => Value::from(b.clone()),
        PointValue::Null => Value::Null,
    }
}
