//! EPR REST API, Kaa's paths under `/epr/api/v1`.
//!
//! | Method | Path | Success |
//! |---|---|---|
//! | POST | `/endpoints` | 201 `{"endpointId","appVersion":{"name"},"endpointToken"?,"tokenId"?}` + `Location` |
//! | GET | `/endpoints?applicationName&applicationVersionName&offset&limit&include=metadata` | 200 `{"content":[endpoint..],"offset","limit","totalElements"}` |
//! | GET / DELETE | `/endpoints/{id}` (`?include=metadata` on GET) | 200 endpoint / 204 |
//! | GET / PUT / PATCH | `/endpoints/{id}/metadata` (`?include=k1,k2` on GET) | 200 metadata object + `ETag` |
//! | GET / PUT / DELETE | `/endpoints/{id}/metadata/{key}` | 200 value + `ETag` / 204 |
//! | GET | `/endpoints/{id}/metadata-keys` | 200 array of keys |
//! | GET | `/applications` | 200 `[{"name","versions":[..]}]` (kaa-rs: the configured ones, for pickers) |
//!
//! An endpoint is `{"endpointId","appVersion":{"name"},"applicationName"?,"createdAt"(ms),
//! "metadata"?}`. Metadata writes accept `If-Match` with the `ETag` of a previous read (412 on a
//! mismatch). PATCH takes an RFC 6902 JSON Patch with `Content-Type: application/json-patch+json`.
//! Bodies are parsed here rather than with axum's `Json` extractor so that every failure, bad
//! JSON included, comes back in the one [`AppError`] JSON shape.
//!
//! An `endpointToken` given at registration is stored by the credential service, not here: after
//! the endpoint is written, EPR sends a (kaa-rs, non-RFC) JSON `ep-token-provision-request` to
//! `kaa.v1.service.{cmInstance}.ecap.ep-token-provision-request` and waits `cmTimeoutMs`. If the
//! token is taken (409), unusable (400) or CM does not answer (503), the endpoint is deleted
//! again, so a failed registration leaves nothing behind. Registration and deletion publish
//! 9/ELCE `registered` / `unregistered` events.

use std::time::Duration;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{
        HeaderMap, HeaderValue, StatusCode,
        header::{ETAG, IF_MATCH, LOCATION},
    },
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use kaa_bus::BusError;
use kaa_protocol::{
    avro::AvroRecord,
    ecap::{self, EndpointTokenProvisionRequest, EndpointTokenProvisionResponse},
    elce::{AppVersionUpdatedEvent, RegisteredEvent, UnregisteredEvent},
    now_millis, subject,
};
use kaa_store::{Endpoint, ListFilter, Metadata, NewEndpoint, is_valid_metadata_key};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{AppError, EprState};
use crate::{
    cm::Secret,
    rest::{Media, parse_json},
};

/// Path prefix of every EPR route.
mod metadata;

use metadata::*;

pub const PREFIX: &str = "/epr/api/v1";
/// Page size when the caller gives no `limit`.
const DEFAULT_LIMIT: u64 = 100;
/// Largest page served; larger `limit`s are clamped (the response echoes the effective limit).
const MAX_LIMIT: u64 = 1000;

/// The EPR REST routes (absolute paths under [`PREFIX`]), ready to merge into the binary's app.
pub fn router(state: EprState) -> Router {
    Router::new()
        .route("/epr/api/v1/endpoints", post(register).get(list))
        .route(
            "/epr/api/v1/endpoints/{id}",
            get(get_endpoint).delete(delete_endpoint),
        )
        .route(
            "/epr/api/v1/endpoints/{id}/metadata",
            get(get_metadata).put(put_metadata).patch(patch_metadata),
        )
        .route(
            "/epr/api/v1/endpoints/{id}/metadata/{key}",
            get(get_metadata_key)
                .put(put_metadata_key)
                .delete(delete_metadata_key),
        )
        .route("/epr/api/v1/endpoints/{id}/metadata-keys", get(metadata_keys))
        .route("/epr/api/v1/endpoints/{id}/app-version", put(move_endpoint))
        .route("/epr/api/v1/applications", get(applications))
        .with_state(state)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppVersionRef {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RegisterRequest {
    app_version: AppVersionRef,
    endpoint_token: Option<Secret>,
    endpoint_id: Option<String>,
    metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Registered {
    endpoint_id: String,
    app_version: AppVersionRef,
    /// Echoed because the caller chose it; never shown again after this response.
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint_token: Option<String>,
    /// The credential service's id of the token (for suspending or revoking it there).
    #[serde(skip_serializing_if = "Option::is_none")]
    token_id: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EndpointJson {
    endpoint_id: String,
    app_version: AppVersionRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    application_name: Option<String>,
    created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    content: Vec<EndpointJson>,
    offset: u64,
    limit: u64,
    total_elements: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListQuery {
    application_name: Option<String>,
    application_version_name: Option<String>,
    offset: Option<u64>,
    limit: Option<u64>,
    include: Option<String>,
    /// Text the endpoint id or metadata must contain (ASCII case ignored); a kaa-rs addition.
    search: Option<String>,
    /// Sent by Kaa's REST client on every call; kaa-rs is single-tenant, so it is accepted and ignored.
    #[serde(rename = "tenantId")]
    _tenant_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EndpointQuery {
    include: Option<String>,
    #[serde(rename = "tenantId")]
    _tenant_id: Option<String>,
}

async fn register(
    State(state): State<EprState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let req: RegisterRequest = parse_json(&headers, &body, Media::Json)?;
    let app_version = req.app_version.name;
    if state.config().application_of(&app_version).is_none() {
        return Err(AppError::BadRequest(format!(
            "application version {app_version:?} is not configured in EPR; known versions: {}",
            known_versions(&state)
        )));
    }
    let app_name = state
        .config()
        .application_of(&app_version)
        .unwrap_or_default()
        .to_owned();
    if let Some(token) = &req.endpoint_token {
        crate::cm::check_token_value(token.expose())
            .map_err(|m| AppError::BadRequest(format!("endpointToken: {m}")))?;
    }
    if let Some(id) = &req.endpoint_id
        && uuid::Uuid::parse_str(id).is_err()
    {
        return Err(AppError::BadRequest(format!("endpointId {id:?} is not a UUID")));
    }
    let endpoint = state
        .store()
        .register(NewEndpoint {
            id: req.endpoint_id,
            app_version: app_version.clone(),
            metadata: req.metadata,
        })
        .await?;
    let token_id = match &req.endpoint_token {
        None => None,
        Some(token) => match provision_token(&state, &endpoint, &app_name, token).await {
            Ok(token_id) => Some(token_id),
            Err(e) => {
                // Undo the registration so that a failed request leaves nothing behind; the
                // `unregistered` event also removes a token CM stored after our timeout.
                undo_register(&state, &endpoint).await;
                return Err(e);
            }
        },
    };
    publish_lifecycle(
        &state,
        subject::elce_registered(&state.config().instance),
        RegisteredEvent {
            correlation_id: uuid::Uuid::new_v4().to_string(),
            timestamp: now_millis(),
            timeout: 0,
            app_version_name: endpoint.app_version.clone(),
            endpoint_id: endpoint.id.clone(),
            originator_replica_id: state.replica().to_owned(),
        },
    )
    .await;
    let location = HeaderValue::try_from(format!("{PREFIX}/endpoints/{}", endpoint.id))
        .map_err(|_| AppError::BadRequest("endpointId is not usable in a URL".to_owned()))?;
    let body = Registered {
        endpoint_id: endpoint.id,
        app_version: AppVersionRef { name: app_version },
        endpoint_token: req.endpoint_token.map(Secret::into_inner),
        token_id,
    };
    Ok((StatusCode::CREATED, [(LOCATION, location)], Json(body)).into_response())
}

async fn list(
    State(state): State<EprState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Page>, AppError> {
    let Query(q) = query.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let with_metadata = includes_metadata(q.include.as_deref())?;
    let offset = q.offset.unwrap_or(0);
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);

    // An application is the set of its configured versions; intersect with the version filter.
    let app_versions = match (&q.application_name, q.application_version_name) {
        (None, None) => None,
        (None, Some(version)) => Some(vec![version]),
        (Some(app), version) => {
            let config = state.config();
            let versions = config.versions_of(app).unwrap_or_default();
            Some(match version {
                Some(v) => versions.iter().filter(|x| **x == v).cloned().collect(),
                None => versions.to_vec(),
            })
        }
    };
    let page = state
        .store()
        .list_endpoints(&ListFilter {
            app_versions,
            search: q.search.filter(|s| !s.trim().is_empty()),
            offset,
            limit,
        })
        .await?;
    let mut content = Vec::with_capacity(page.items.len());
    for endpoint in page.items {
        content.push(endpoint_json(&state, endpoint, with_metadata).await?);
    }
    Ok(Json(Page {
        content,
        offset,
        limit,
        total_elements: page.total,
    }))
}

async fn get_endpoint(
    State(state): State<EprState>,
    Path(id): Path<String>,
    query: Result<Query<EndpointQuery>, QueryRejection>,
) -> Result<Json<EndpointJson>, AppError> {
    let Query(q) = query.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let with_metadata = includes_metadata(q.include.as_deref())?;
    let endpoint = state.store().endpoint(&id).await?;
    Ok(Json(endpoint_json(&state, endpoint, with_metadata).await?))
}

async fn delete_endpoint(
    State(state): State<EprState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    let endpoint = state.store().delete_endpoint(&id).await?;
    publish_unregistered(&state, &endpoint).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT .../endpoints/{id}/app-version` with `{"name": version}`: moves the endpoint to another
/// version of its application (a 9/ELCE `appversion-updated` event tells the extensions). Its
/// tokens stay valid: they belong to the application, not to a version.
async fn move_endpoint(
    State(state): State<EprState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<EndpointJson>, AppError> {
    let target: AppVersionRef = parse_json(&headers, &body, Media::Json)?;
    let current = state.store().endpoint(&id).await?;
    let config = state.config();
    let (from, to) = (
        config.application_of(&current.app_version),
        config.application_of(&target.name),
    );
    match (from, to) {
        (_, None) => {
            return Err(AppError::BadRequest(format!(
                "application version {:?} is not configured in EPR; known versions: {}",
                target.name,
                known_versions(&state)
            )));
        }
        (Some(from), Some(to)) if from != to => {
            return Err(AppError::BadRequest(format!(
                "{:?} belongs to application {to:?}, the endpoint to {from:?}: an endpoint \
                 moves between versions of its own application only",
                target.name
            )));
        }
        _ => {}
    }
    if current.app_version != target.name {
        let before = state.store().move_endpoint(&id, &target.name).await?;
        publish_lifecycle(
            &state,
            subject::elce_app_version_updated(&state.config().instance),
            AppVersionUpdatedEvent {
                correlation_id: uuid::Uuid::new_v4().to_string(),
                timestamp: now_millis(),
                timeout: 0,
                app_version_name: target.name.clone(),
                previous_app_version_name: before.app_version,
                endpoint_id: id.clone(),
                originator_replica_id: state.replica().to_owned(),
            },
        )
        .await;
    }
    let moved = state.store().endpoint(&id).await?;
    Ok(Json(endpoint_json(&state, moved, false).await?))
}

/// Asks the credential service to store `token` for the new endpoint; returns its token id.
async fn provision_token(
    state: &EprState,
    endpoint: &Endpoint,
    app_name: &str,
    token: &Secret,
) -> Result<String, AppError> {
    let config = state.config();
    let request = EndpointTokenProvisionRequest {
        correlation_id: uuid::Uuid::new_v4().to_string(),
        timestamp: now_millis(),
        timeout: i64::try_from(config.cm_timeout_ms).unwrap_or(i64::MAX),
        endpoint_id: endpoint.id.clone(),
        app_name: app_name.to_owned(),
        app_version: endpoint.app_version.clone(),
        token: token.expose().to_owned(),
    };
    let subject = subject::ecap_request(&config.cm_instance, ecap::EP_TOKEN_PROVISION_REQUEST);
    let unavailable = |why: String| {
        AppError::ServiceUnavailable(format!(
            "the credential service `{}` {why}; the endpoint was not registered, try again",
            config.cm_instance
        ))
    };
    let reply = state
        .bus()
        .request(
            &subject,
            request.to_json().into(),
            Duration::from_millis(config.cm_timeout_ms),
        )
        .await
        .map_err(|e| match e {
            BusError::Timeout => unavailable(format!("did not answer within {} ms", config.cm_timeout_ms)),
            BusError::NoResponders(_) => unavailable("is not running".to_owned()),
            other => unavailable(format!("is unreachable ({other})")),
        })?;
    let response = EndpointTokenProvisionResponse::from_json(&reply.payload)
        .map_err(|e| unavailable(format!("sent an unreadable answer ({e})")))?;
    let reason = response.reason_phrase.unwrap_or_default();
    match (response.status_code, response.token_id) {
        (200..=299, Some(token_id)) => Ok(token_id),
        (409, _) => Err(AppError::Conflict(format!("endpointToken: {reason}"))),
        (400, _) => Err(AppError::BadRequest(format!("endpointToken: {reason}"))),
        (status, _) => Err(unavailable(format!(
            "could not store the token ({status} {reason})"
        ))),
    }
}

async fn undo_register(state: &EprState, endpoint: &Endpoint) {
    match state.store().delete_endpoint(&endpoint.id).await {
        Ok(_) => publish_unregistered(state, endpoint).await,
        Err(e) => {
            tracing::error!(endpoint_id = %endpoint.id, error = %e, "cannot undo a failed registration")
        }
    }
}

async fn publish_unregistered(state: &EprState, endpoint: &Endpoint) {
    publish_lifecycle(
        state,
        subject::elce_unregistered(&state.config().instance),
        UnregisteredEvent {
            correlation_id: uuid::Uuid::new_v4().to_string(),
            timestamp: now_millis(),
            timeout: 0,
            app_version_name: endpoint.app_version.clone(),
            endpoint_id: endpoint.id.clone(),
            originator_replica_id: state.replica().to_owned(),
        },
    )
    .await;
}

/// Best effort: the write is done whether or not anyone hears about it.
async fn publish_lifecycle(state: &EprState, subject: String, event: impl AvroRecord) {
    if let Err(e) = state.bus().publish(&subject, event.to_avro().into()).await {
        tracing::warn!(%subject, error = %e, "cannot publish endpoint lifecycle event");
    }
}

#[derive(Debug, Serialize)]
struct ApplicationJson {
    name: String,
    versions: Vec<String>,
}

/// Not in Kaa's EPR (its applications live in a separate service): the applications and versions
/// this EPR accepts, so that clients such as the dashboard can offer them without guessing.
async fn applications(State(state): State<EprState>) -> Json<Vec<ApplicationJson>> {
    let config = state.config();
    let apps = config.applications.iter();
    Json(
        apps.map(|a| ApplicationJson {
            name: a.name.clone(),
            versions: a.versions.clone(),
        })
        .collect(),
    )
}

async fn endpoint_json(
    state: &EprState,
    endpoint: Endpoint,
    with_metadata: bool,
) -> Result<EndpointJson, AppError> {
    let metadata = match with_metadata {
        true => Some(state.store().metadata(&endpoint.id).await?.body),
        false => None,
    };
    Ok(EndpointJson {
        application_name: state
            .config()
            .application_of(&endpoint.app_version)
            .map(str::to_owned),
        endpoint_id: endpoint.id,
        app_version: AppVersionRef {
            name: endpoint.app_version,
        },
        created_at: endpoint.created_at,
        metadata,
    })
}

fn includes_metadata(include: Option<&str>) -> Result<bool, AppError> {
    let mut metadata = false;
    for part in include
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match part {
            "metadata" => metadata = true,
            other => {
                return Err(AppError::BadRequest(format!(
                    "include={other} is not supported; the only value is \"metadata\""
                )));
            }
        }
    }
    Ok(metadata)
}

fn known_versions(state: &EprState) -> String {
    let config = state.config();
    let all: Vec<&str> = config
        .applications
        .iter()
        .flat_map(|a| a.versions.iter().map(String::as_str))
        .collect();
    match all.is_empty() {
        true => "none (add applications to the EPR config)".to_owned(),
        false => all.join(", "),
    }
}
