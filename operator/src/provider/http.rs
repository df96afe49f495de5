//! The provider's HTTP API: `GET /tekton/api/v1/service-instances/{instance}/config` with the
//! Blueprint's config-reader token as bearer token, and `GET /health`.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use super::{Provider, Refused};

pub fn app(provider: Provider) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(&super::config_path("{instance}"), get(config))
        .with_state(provider)
}

async fn config(
    State(provider): State<Provider>,
    Path(instance): Path<String>,
    headers: HeaderMap,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return unauthorized("a bearer token (the Blueprint's config-reader token) is required");
    };
    match provider.config(token, &instance) {
        Ok(config) => Json(config).into_response(),
        Err(Refused::Unauthorized) => unauthorized("unknown token"),
        Err(refused @ Refused::NotFound { .. }) => error(StatusCode::NOT_FOUND, &refused.to_string()),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}
