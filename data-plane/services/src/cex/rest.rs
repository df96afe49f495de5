//! CEX REST API, Kaa's paths under `/cex/api/v1`.
//!
//! | Method | Path | Success |
//! |---|---|---|
//! | POST | `/endpoints/{endpointId}/commands/{commandType}?awaitTimeout=S&commandTtl=ms` | 200 command with its `result` when the device answered within `awaitTimeout` seconds, else 202 command + `Location` |
//! | GET | `/endpoints/{endpointId}/commands/{commandType}/{commandId}` | 200 command |
//!
//! The POST body is the command's payload: any JSON (`application/json`, or no Content-Type), a
//! `text/plain` body (a JSON string), or none (`null`). A command is
//! `{"id","endpointId","commandType","payload","state","createdAt","expiresAt","deliveredAt"?,
//! "result"?:{"statusCode","reasonPhrase"?,"payload"?,"completedAt"}}` with `state` one of
//! `pending` (not sent yet), `delivered` (sent, no result), `completed`, `expired` (no result
//! before its TTL ran out; never sent after that). The endpoint must be registered (asked of EPR
//! over 19/EPMMP): 404 otherwise.

use std::time::Duration;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{
        HeaderMap, HeaderValue, StatusCode,
        header::{CONTENT_TYPE, LOCATION},
    },
    response::{IntoResponse, Response},
    routing::{get, post},
};
use kaa_protocol::now_millis;
use kaa_store::cex::Command;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{CexState, is_valid_command_type};
use crate::{
    extension::is_blank,
    rest::{AppError, Media, parse_json, query},
};

/// Path prefix of every CEX route.
pub const PREFIX: &str = "/cex/api/v1";

/// How often an awaiting caller re-reads the command besides being woken by a result here (a
/// result recorded by another replica of a shared database wakes no one in this process).
const AWAIT_POLL: Duration = Duration::from_millis(250);

/// The CEX REST routes (absolute paths), ready to merge into the binary's app.
pub fn router(state: CexState) -> Router {
    Router::new()
        .route(
            "/cex/api/v1/endpoints/{endpoint_id}/commands/{command_type}",
            post(invoke),
        )
        .route(
            "/cex/api/v1/endpoints/{endpoint_id}/commands/{command_type}/{command_id}",
            get(get_command),
        )
        .with_state(state)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InvokeQuery {
    /// Seconds to wait for the device's result.
    await_timeout: Option<f64>,
    /// Milliseconds the command may wait for delivery and a result.
    command_ttl: Option<u64>,
}

fn storage(e: impl std::error::Error + Send + Sync + 'static) -> AppError {
    AppError::internal(e)
}

fn check_type(command_type: &str) -> Result<(), AppError> {
    if is_valid_command_type(command_type) {
        Ok(())
    } else {
        Err(AppError::BadRequest(format!(
            "invalid command type {command_type:?}: 1-64 letters, digits, '_' or '-'"
        )))
    }
}

/// The command as REST shows it.
fn command_json(c: &Command, now: i64) -> Value {
    let state = match (&c.result, c.delivered_at) {
        (Some(_), _) => "completed",
        (None, _) if c.expires_at <= now => "expired",
        (None, Some(_)) => "delivered",
        (None, None) => "pending",
    };
    let mut body = Map::new();
    body.insert("id".into(), json!(c.id));
    body.insert("endpointId".into(), json!(c.endpoint_id));
    body.insert("commandType".into(), json!(c.command_type));
    body.insert("payload".into(), c.payload.clone().unwrap_or(Value::Null));
    body.insert("state".into(), json!(state));
    body.insert("createdAt".into(), json!(c.created_at));
    body.insert("expiresAt".into(), json!(c.expires_at));
    if let Some(at) = c.delivered_at {
        body.insert("deliveredAt".into(), json!(at));
    }
    if let Some(r) = &c.result {
        body.insert(
            "result".into(),
            json!({
                "statusCode": r.status_code,
                "reasonPhrase": r.reason_phrase,
                "payload": r.payload,
                "completedAt": r.completed_at,
            }),
        );
    }
    Value::Object(body)
}

/// The command payload from the request body.
fn payload(headers: &HeaderMap, body: &[u8]) -> Result<Option<Value>, AppError> {
    if is_blank(body) {
        return Ok(None);
    }
    let text_plain = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/plain"));
    if text_plain {
        let text = std::str::from_utf8(body)
            .map_err(|_| AppError::BadRequest("a text/plain command payload must be UTF-8".into()))?;
        return Ok(Some(Value::String(text.to_owned())));
    }
    parse_json(headers, body, Media::Json).map(Some)
}

async fn invoke(
    State(state): State<CexState>,
    Path((endpoint_id, command_type)): Path<(String, String)>,
    q: Result<Query<InvokeQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let q = query(q)?;
    check_type(&command_type)?;
    let payload = payload(&headers, &body)?;
    let await_for = match q.await_timeout {
        Some(s) if !s.is_finite() || s < 0.0 => {
            return Err(AppError::BadRequest(
                "awaitTimeout must be a number of seconds >= 0".into(),
            ));
        }
        Some(s) => Duration::from_secs_f64(s).min(Duration::from_millis(state.config().max_await_ms)),
        None => Duration::ZERO,
    };
    let ttl = q.command_ttl.unwrap_or(state.config().default_command_ttl_ms);
    let ttl = i64::try_from(ttl).unwrap_or(i64::MAX);
    let cid = uuid::Uuid::new_v4().to_string();
    state
        .epr
        .keys(&cid, &endpoint_id)
        .await
        .map_err(|f| match f.status_code {
            404 => AppError::NotFound(format!("endpoint {endpoint_id} is not registered")),
            400..=499 => AppError::BadRequest(f.reason),
            _ => AppError::ServiceUnavailable(f.reason),
        })?;
    let scope = state.scope(&endpoint_id, &command_type);
    let command = state
        .store
        .add_command(scope, payload.as_ref(), ttl)
        .await
        .map_err(storage)?;
    state
        .deliver(&endpoint_id, &command_type, std::slice::from_ref(&command))
        .await;
    let id = command.id;
    let mut results = state.results.subscribe();
    let deadline = tokio::time::Instant::now() + await_for;
    let command = loop {
        let current = state.store.command(scope, id).await.map_err(storage)?;
        let current = current.unwrap_or_else(|| command.clone());
        if current.result.is_some() || tokio::time::Instant::now() >= deadline {
            break current;
        }
        // Woken by any result recorded here, else re-read after a short while.
        let _ = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + AWAIT_POLL),
            results.changed(),
        )
        .await;
    };
    let body = Json(command_json(&command, now_millis()));
    if command.result.is_some() {
        return Ok((StatusCode::OK, body).into_response());
    }
    let location = format!("{PREFIX}/endpoints/{endpoint_id}/commands/{command_type}/{id}");
    let mut response = (StatusCode::ACCEPTED, body).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, value);
    }
    Ok(response)
}

async fn get_command(
    State(state): State<CexState>,
    Path((endpoint_id, command_type, command_id)): Path<(String, String, String)>,
) -> Result<Json<Value>, AppError> {
    check_type(&command_type)?;
    let not_found = || {
        AppError::NotFound(format!(
            "no {command_type:?} command {command_id} for endpoint {endpoint_id}"
        ))
    };
    let id: i64 = command_id.parse().map_err(|_| not_found())?;
    let command = state
        .store
        .command(state.scope(&endpoint_id, &command_type), id)
        .await
        .map_err(storage)?
        .ok_or_else(not_found)?;
    Ok(Json(command_json(&command, now_millis())))
}
