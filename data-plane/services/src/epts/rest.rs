//! EPTS REST API, Kaa's paths under `/epts/api/v1`.
//!
//! | Method | Path | Success |
//! |---|---|---|
//! | GET | `/time-series/config?applicationNames=a,b` | `{"<app>": [{"name","values":[..]}]}` |
//! | GET | `/applications/{app}/time-series/data?timeSeriesName=t1,t2&fromDate&toDate&endpointId=e1,e2&sort=ASC\|DESC&limit&includeTime` | points, see below |
//! | GET | `/applications/{app}/time-series/last?timeSeriesName&endpointId&beforeDate` | the latest point of each endpoint and series |
//! | POST | `/applications/{app}/time-series/last` with `{"timeSeriesNames"?,"endpointIDs"?,"beforeDate"?,"offset"?,"limit"?}` | same |
//!
//! Points come as Kaa shows them: one object per endpoint, series name -> points,
//! `[{"<endpointId>": {"<series>": [{"timestamp": "<ISO 8601>", "values": {"value": 21.5}}]}}]`.
//! Dates are ISO 8601, ms since the epoch, `now` or `now-7d` style (see [`super::dates`]);
//! `fromDate` defaults to the epoch and `toDate` to now. `limit` (default 1000, at most 10000)
//! counts the points of each series; `includeTime` (`both` by default, `from`, `to`, `none`) says
//! which bounds are inclusive. The config lists the configured series and every series stored
//! for the application (auto-extracted `auto~...` ones, EPL's `connectivity`).

use std::collections::BTreeMap;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::HeaderMap,
    routing::get,
};
use kaa_protocol::now_millis;
use kaa_store::{EptsError, Order, PointQuery, StoredPoint};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{EptsState, dates};
use crate::rest::{AppError, Media, parse_json};

const DEFAULT_LIMIT: u64 = 1_000;
const MAX_LIMIT: u64 = 10_000;

impl From<EptsError> for AppError {
    fn from(err: EptsError) -> Self {
        Self::internal(err)
    }
}

/// The EPTS REST routes (absolute paths), ready to merge into the binary's app.
pub fn router(state: EptsState) -> Router {
    Router::new()
        .route("/epts/api/v1/time-series/config", get(config))
        .route("/epts/api/v1/applications/{app}/time-series/data", get(data))
        .route(
            "/epts/api/v1/applications/{app}/time-series/last",
            get(last).post(last_with_body),
        )
        .with_state(state)
}

/// A comma-separated list parameter; empty items are ignored.
fn list(param: Option<&str>) -> Vec<String> {
    param
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn date(name: &str, value: Option<&str>, default: i64, now: i64) -> Result<i64, AppError> {
    match value {
        None => Ok(default),
        Some(v) => dates::parse_date(v, now).map_err(|e| AppError::BadRequest(format!("{name}: {e}"))),
    }
}

fn known_app(state: &EptsState, app: &str) -> Result<(), AppError> {
    match state.has_application(app) {
        true => Ok(()),
        false => Err(AppError::NotFound(format!("application {app} not found"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigQuery {
    application_names: Option<String>,
}

async fn config(
    State(state): State<EptsState>,
    query: Result<Query<ConfigQuery>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    let Query(q) = query.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let mut names = list(q.application_names.as_deref());
    if names.is_empty() {
        names = state
            .config()
            .app_versions
            .iter()
            .map(|a| a.name.clone())
            .collect();
    }
    let mut out = Map::new();
    for app in names {
        known_app(&state, &app)?;
        let mut series: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if let Some(settings) = state.config().applications.get(&app) {
            for s in &settings.time_series {
                series.insert(s.name.clone(), s.values.iter().map(|v| v.name.clone()).collect());
            }
        }
        // Series seen in the data (auto-extracted, from other transmitters): their value names
        // are those of their latest points.
        let stored = state.store().series_names(&app).await?;
        let unknown: Vec<String> = stored.into_iter().filter(|s| !series.contains_key(s)).collect();
        if !unknown.is_empty() {
            for p in state.store().last_points(&app, &unknown, None, i64::MAX).await? {
                let values = series.entry(p.series).or_default();
                for name in p.values.keys() {
                    if !values.contains(name) {
                        values.push(name.clone());
                    }
                }
            }
        }
        let list: Vec<Value> = series
            .into_iter()
            .map(|(name, values)| json!({"name": name, "values": values}))
            .collect();
        out.insert(app, Value::Array(list));
    }
    Ok(Json(Value::Object(out)))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DataQuery {
    time_series_name: Option<String>,
    from_date: Option<String>,
    to_date: Option<String>,
    endpoint_id: Option<String>,
    sort: Option<String>,
    limit: Option<u64>,
    include_time: Option<String>,
}

async fn data(
    State(state): State<EptsState>,
    Path(app): Path<String>,
    query: Result<Query<DataQuery>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    let Query(q) = query.map_err(|e| AppError::BadRequest(e.body_text()))?;
    known_app(&state, &app)?;
    let series = list(q.time_series_name.as_deref());
    if series.is_empty() {
        return Err(AppError::BadRequest(
            "timeSeriesName is required (one or more, comma-separated)".into(),
        ));
    }
    let now = now_millis();
    let mut from = date("fromDate", q.from_date.as_deref(), 0, now)?;
    let mut to = date("toDate", q.to_date.as_deref(), now, now)?;
    match q
        .include_time
        .as_deref()
        .unwrap_or("both")
        .to_ascii_lowercase()
        .as_str()
    {
        "both" => {}
        "from" => to = to.saturating_sub(1),
        "to" => from = from.saturating_add(1),
        "none" => (from, to) = (from.saturating_add(1), to.saturating_sub(1)),
        other => {
            return Err(AppError::BadRequest(format!(
                "includeTime must be both, from, to or none, not {other:?}"
            )));
        }
    }
    let order = match q.sort.as_deref().unwrap_or("ASC").to_ascii_uppercase().as_str() {
        "ASC" => Order::Ascending,
        "DESC" => Order::Descending,
        other => {
            return Err(AppError::BadRequest(format!(
                "sort must be ASC or DESC, not {other:?}"
            )));
        }
    };
    let endpoints = list(q.endpoint_id.as_deref());
    let mut points = Vec::new();
    for name in series {
        let query = PointQuery {
            app_name: app.clone(),
            series: name,
            endpoint_ids: (!endpoints.is_empty()).then(|| endpoints.clone()),
            from,
            to,
            order,
            limit: q.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT),
        };
        points.extend(state.store().points(&query).await?);
    }
    Ok(Json(by_endpoint(points)))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LastQuery {
    time_series_name: Option<String>,
    endpoint_id: Option<String>,
    before_date: Option<String>,
}

async fn last(
    State(state): State<EptsState>,
    Path(app): Path<String>,
    query: Result<Query<LastQuery>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    let Query(q) = query.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let request = LastRequest {
        time_series_names: Some(list(q.time_series_name.as_deref())),
        endpoint_ids: Some(list(q.endpoint_id.as_deref())).filter(|e| !e.is_empty()),
        before_date: q.before_date,
        offset: None,
        limit: None,
    };
    last_points(&state, &app, request).await
}

/// The POST body of `/time-series/last` (Kaa spells `endpointIDs` with capitals).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LastRequest {
    time_series_names: Option<Vec<String>>,
    #[serde(rename = "endpointIDs")]
    endpoint_ids: Option<Vec<String>>,
    before_date: Option<String>,
    /// Paging over endpoints (sorted by id).
    offset: Option<u64>,
    limit: Option<u64>,
}

async fn last_with_body(
    State(state): State<EptsState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, AppError> {
    let request = match body.is_empty() {
        true => LastRequest::default(),
        false => parse_json(&headers, &body, Media::Json)?,
    };
    last_points(&state, &app, request).await
}

async fn last_points(state: &EptsState, app: &str, r: LastRequest) -> Result<Json<Value>, AppError> {
    known_app(state, app)?;
    let now = now_millis();
    let before = date("beforeDate", r.before_date.as_deref(), now, now)?;
    let series = r.time_series_names.unwrap_or_default();
    let mut points = state
        .store()
        .last_points(app, &series, r.endpoint_ids.as_deref(), before)
        .await?;
    if r.offset.is_some() || r.limit.is_some() {
        // Points come sorted by endpoint: page over the distinct endpoints.
        let mut endpoints: Vec<&str> = points.iter().map(|p| p.endpoint_id.as_str()).collect();
        endpoints.dedup();
        let offset = usize::try_from(r.offset.unwrap_or(0)).unwrap_or(usize::MAX);
        let limit = usize::try_from(r.limit.unwrap_or(MAX_LIMIT)).unwrap_or(usize::MAX);
        let page: Vec<String> = endpoints
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(str::to_owned)
            .collect();
        points.retain(|p| page.contains(&p.endpoint_id));
    }
    Ok(Json(by_endpoint(points)))
}

/// `[{"<endpointId>": {"<series>": [{"timestamp","values"}]}}]`, endpoints in order of their first
/// point, points in the order given.
fn by_endpoint(points: Vec<StoredPoint>) -> Value {
    let mut order: Vec<String> = Vec::new();
    let mut grouped: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for p in points {
        if !grouped.contains_key(&p.endpoint_id) {
            order.push(p.endpoint_id.clone());
        }
        let series = grouped.entry(p.endpoint_id).or_default();
        let entry = series.entry(p.series).or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = entry {
            list.push(json!({"timestamp": dates::format_iso(p.ts), "values": p.values}));
        }
    }
    Value::Array(
        order
            .into_iter()
            .filter_map(|id| {
                let series = grouped.remove(&id)?;
                Some(Value::Object(Map::from_iter([(id, Value::Object(series))])))
            })
            .collect(),
    )
}
