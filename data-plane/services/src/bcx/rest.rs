//! BCX REST API under `/bcx/api/v1`.
//!
//! | Method | Path | Auth | Success |
//! |---|---|---|---|
//! | POST | `/binary-data?name=NAME` | `X-Auth-Token: <upload token>` (no admin token) | 201 `{"endpointId","name","size","contentType","uploadedAt"}` |
//! | GET | `/endpoints/{endpointId}/binary-data` | admin | 200 `{"content":[{"name","size","contentType","uploadedAt"}]}` |
//! | GET | `/endpoints/{endpointId}/binary-data/{name}` | admin | 200 the bytes, with the upload's Content-Type |
//!
//! An upload under an existing name replaces it. Missing or unknown / expired upload tokens get
//! 401, a missing or empty `name` 400, a body above `maxUploadBytes` 413.

use axum::{
    Json, Router,
    body::Bytes,
    extract::{
        DefaultBodyLimit, Path, Query, State,
        rejection::{BytesRejection, QueryRejection},
    },
    http::{HeaderMap, HeaderValue, StatusCode, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use kaa_store::bcx::BlobInfo;
use serde::Deserialize;
use serde_json::{Value, json};

use super::BcxState;
use crate::rest::{AppError, limited_body, query};

/// The upload route, which takes the upload token instead of the admin token.
pub const UPLOAD_PATH: &str = "/bcx/api/v1/binary-data";

/// The header carrying the upload token.
const AUTH_HEADER: &str = "x-auth-token";

/// Longest blob name.
const MAX_NAME_LEN: usize = 255;

/// The BCX REST routes (absolute paths), ready to merge into the binary's app.
pub fn router(state: BcxState) -> Router {
    let limit = state.config().max_upload_bytes;
    Router::new()
        .route(UPLOAD_PATH, post(upload))
        .route("/bcx/api/v1/endpoints/{endpoint_id}/binary-data", get(list))
        .route(
            "/bcx/api/v1/endpoints/{endpoint_id}/binary-data/{name}",
            get(download),
        )
        .layer(DefaultBodyLimit::max(limit.saturating_add(1)))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    name: Option<String>,
}

fn storage(e: kaa_store::bcx::BcxError) -> AppError {
    AppError::internal(e)
}

fn info_json(info: &BlobInfo) -> Value {
    json!({
        "endpointId": info.endpoint_id,
        "name": info.name,
        "size": info.size,
        "contentType": info.content_type,
        "uploadedAt": info.uploaded_at,
    })
}

async fn upload(
    State(state): State<BcxState>,
    q: Result<Query<UploadQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let token = headers
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            AppError::Unauthorized(
                "uploads need the header `X-Auth-Token: <upload token>` (the device gets one from its /token resource)".into(),
            )
        })?;
    let grant = state
        .store
        .upload_grant(&state.config().instance, token, state.token_ttl_ms())
        .await
        .map_err(storage)?
        .ok_or_else(|| AppError::Unauthorized("the upload token is unknown or expired".into()))?;
    let name = query(q)?.name.unwrap_or_default();
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(AppError::BadRequest(format!(
            "the query parameter `name` must be 1-{MAX_NAME_LEN} bytes without control characters"
        )));
    }
    let body = limited_body(
        body,
        state.config().max_upload_bytes,
        "an upload (maxUploadBytes)",
    )?;
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream");
    let info = state
        .store
        .put_blob(
            &state.config().instance,
            &grant.endpoint_id,
            &name,
            content_type,
            &body,
        )
        .await
        .map_err(storage)?;
    Ok((StatusCode::CREATED, Json(info_json(&info))).into_response())
}

async fn list(
    State(state): State<BcxState>,
    Path(endpoint_id): Path<String>,
) -> Result<Json<Value>, AppError> {
    let blobs = state
        .store
        .blobs(&state.config().instance, &endpoint_id)
        .await
        .map_err(storage)?;
    Ok(Json(
        json!({ "content": blobs.iter().map(info_json).collect::<Vec<_>>() }),
    ))
}

async fn download(
    State(state): State<BcxState>,
    Path((endpoint_id, name)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let (info, content) = state
        .store
        .blob(&state.config().instance, &endpoint_id, &name)
        .await
        .map_err(storage)?
        .ok_or_else(|| AppError::NotFound(format!("endpoint {endpoint_id} has no upload named {name:?}")))?;
    let content_type = HeaderValue::from_str(&info.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    Ok(([(CONTENT_TYPE, content_type)], content).into_response())
}
