//! CMX REST API: Kaa's ECR paths under `/ecr/api/v1` (digest 11.6), for every CMX instance of the
//! process; `?name=` picks the configuration name (absent: `default`, the instance `cmx`).
//!
//! | Method | Path | Success |
//! |---|---|---|
//! | PUT / GET / DELETE | `/app-versions/{ver}?name=` | the version's default: 200 EndpointConfiguration + `ETag` / 204 |
//! | PUT / GET / DELETE | `/endpoints/{endpointId}/app-versions/{ver}?name=` | one endpoint's override |
//! | GET | `/statuses?endpointId&appVersionName&configId&name` | page of ConfigurationStatus |
//!
//! A PUT body is the configuration itself (any JSON, at most `maxConfigBytes`: 413 beyond).
//! EndpointConfiguration = `{"configId","name","appVersionName","endpointId"?,"config":<the JSON
//! as a string, as ECR has it>,"createdDate","updatedDate"}` (ms). A changed document is pushed at
//! once to the online endpoints it applies to.
//!
//! ConfigurationStatus = `{"name","endpointId","appVersionName","configId","status",
//! "lastDispatchedDate"?,"lastConfirmedDate"?,"confirmationStatusCode"?,
//! "confirmationReasonPhrase"?,"dispatchedConfigId"?,"appliedConfigId"?}`; `status` is `APPLIED`
//! or `FAILED` (the endpoint's last report, 2xx or not) when that report is newer than the last
//! dispatch, else `DISPATCHED`; `configId` is the configuration that status is about.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{
        DefaultBodyLimit, Path, Query, State,
        rejection::{BytesRejection, QueryRejection},
    },
    http::{HeaderMap, HeaderValue, StatusCode, header::ETAG},
    response::{IntoResponse, Response},
    routing::get,
};
use kaa_store::cmx::{ConfigDoc, ConfigKey, ConfigStatus, StatusFilter};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::CmxState;
use crate::rest::{AppError, Media, limited_body, parse_json, query};

/// Path prefix of every route.
pub const PREFIX: &str = "/ecr/api/v1";

/// The CMX instances of a process, by configuration name.
#[derive(Debug, Clone)]
struct Instances(Arc<BTreeMap<String, CmxState>>);

impl Instances {
    fn get(&self, name: Option<&str>) -> Result<&CmxState, AppError> {
        let name = name.unwrap_or(kaa_blueprint::config::DEFAULT_CONFIG_NAME);
        self.0.get(name).ok_or_else(|| {
            let served: Vec<&str> = self.0.keys().map(String::as_str).collect();
            AppError::NotFound(format!(
                "no configuration named {name:?} here; served: {}",
                served.join(", ")
            ))
        })
    }
}

/// The ECR routes for these CMX instances (absolute paths), ready to merge into the binary's app.
pub fn router(states: Vec<CmxState>) -> Router {
    // The body limit is checked by the handlers (413 in the one error shape); axum's own default
    // (2 MiB) must not cut in first.
    let limit = states
        .iter()
        .map(|s| s.config().max_config_bytes)
        .max()
        .unwrap_or(0);
    let instances = Instances(Arc::new(
        states.into_iter().map(|s| (s.name().to_owned(), s)).collect(),
    ));
    Router::new()
        .route(
            "/ecr/api/v1/app-versions/{app_version}",
            get(get_default).put(put_default).delete(delete_default),
        )
        .route(
            "/ecr/api/v1/endpoints/{endpoint_id}/app-versions/{app_version}",
            get(get_override).put(put_override).delete(delete_override),
        )
        .route("/ecr/api/v1/statuses", get(statuses))
        .layer(DefaultBodyLimit::max(limit.saturating_add(1)))
        .with_state(instances)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NameQuery {
    name: Option<String>,
    /// Sent by Kaa's REST client on every call; kaa-rs is single-tenant.
    #[serde(rename = "tenantId")]
    _tenant_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StatusQuery {
    name: Option<String>,
    endpoint_id: Option<String>,
    app_version_name: Option<String>,
    config_id: Option<String>,
    #[serde(rename = "tenantId")]
    _tenant_id: Option<String>,
}

fn storage(e: kaa_store::cmx::CmxError) -> AppError {
    AppError::internal(e)
}

fn doc_json(doc: &ConfigDoc) -> Response {
    let mut body = json!({
        "configId": doc.config_id,
        "name": doc.config_name,
        "appVersionName": doc.app_version,
        "config": doc.body.to_string(),
        "createdDate": doc.created_at,
        "updatedDate": doc.updated_at,
    });
    if let Some(endpoint_id) = &doc.endpoint_id {
        body["endpointId"] = json!(endpoint_id);
    }
    let mut response = Json(body).into_response();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", doc.config_id)) {
        response.headers_mut().insert(ETAG, etag);
    }
    response
}

async fn put(
    instances: &Instances,
    name: Option<&str>,
    target: Target<'_>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let state = instances.get(name)?;
    let body = limited_body(
        body,
        state.config().max_config_bytes,
        "a configuration (maxConfigBytes)",
    )?;
    let config: Value = parse_json(headers, &body, Media::Json)?;
    let key = target.key(state.name());
    let (doc, changed) = state.store.put_config(key, &config).await.map_err(storage)?;
    if changed {
        let endpoints = match key.endpoint_id {
            Some(endpoint_id) => vec![endpoint_id.to_owned()],
            None => state.presence.endpoints_of(key.app_version),
        };
        for endpoint_id in endpoints {
            state.offer(&endpoint_id).await;
        }
    }
    Ok(doc_json(&doc))
}

async fn get_doc(
    instances: &Instances,
    name: Option<&str>,
    target: Target<'_>,
) -> Result<Response, AppError> {
    let state = instances.get(name)?;
    let key = target.key(state.name());
    let doc = state.store.config(key).await.map_err(storage)?;
    doc.map(|d| doc_json(&d))
        .ok_or_else(|| AppError::NotFound(not_found(&key)))
}

async fn delete_doc(
    instances: &Instances,
    name: Option<&str>,
    target: Target<'_>,
) -> Result<Response, AppError> {
    let state = instances.get(name)?;
    let key = target.key(state.name());
    if !state.store.delete_config(key).await.map_err(storage)? {
        return Err(AppError::NotFound(not_found(&key)));
    }
    // Without its override the endpoint falls back to its version's default: offer that.
    if let Some(endpoint_id) = key.endpoint_id {
        state.offer(endpoint_id).await;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn not_found(key: &ConfigKey<'_>) -> String {
    match key.endpoint_id {
        Some(e) => format!(
            "no configuration {:?} for endpoint {e} in application version {:?}",
            key.config_name, key.app_version
        ),
        None => format!(
            "no default configuration {:?} for application version {:?}",
            key.config_name, key.app_version
        ),
    }
}

/// Which document a request is about; the configuration name comes from the instance.
#[derive(Debug, Clone, Copy)]
struct Target<'a> {
    app_version: &'a str,
    endpoint_id: Option<&'a str>,
}

impl<'a> Target<'a> {
    fn key(self, config_name: &'a str) -> ConfigKey<'a> {
        ConfigKey {
            config_name,
            app_version: self.app_version,
            endpoint_id: self.endpoint_id,
        }
    }
}

fn default_key(app_version: &str) -> Target<'_> {
    Target {
        app_version,
        endpoint_id: None,
    }
}

fn override_key<'a>(endpoint_id: &'a str, app_version: &'a str) -> Target<'a> {
    Target {
        app_version,
        endpoint_id: Some(endpoint_id),
    }
}

async fn put_default(
    State(instances): State<Instances>,
    Path(app_version): Path<String>,
    q: Result<Query<NameQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let q = query(q)?;
    put(
        &instances,
        q.name.as_deref(),
        default_key(&app_version),
        &headers,
        body,
    )
    .await
}

async fn get_default(
    State(instances): State<Instances>,
    Path(app_version): Path<String>,
    q: Result<Query<NameQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let q = query(q)?;
    get_doc(&instances, q.name.as_deref(), default_key(&app_version)).await
}

async fn delete_default(
    State(instances): State<Instances>,
    Path(app_version): Path<String>,
    q: Result<Query<NameQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let q = query(q)?;
    delete_doc(&instances, q.name.as_deref(), default_key(&app_version)).await
}

async fn put_override(
    State(instances): State<Instances>,
    Path((endpoint_id, app_version)): Path<(String, String)>,
    q: Result<Query<NameQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let q = query(q)?;
    put(
        &instances,
        q.name.as_deref(),
        override_key(&endpoint_id, &app_version),
        &headers,
        body,
    )
    .await
}

async fn get_override(
    State(instances): State<Instances>,
    Path((endpoint_id, app_version)): Path<(String, String)>,
    q: Result<Query<NameQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let q = query(q)?;
    get_doc(
        &instances,
        q.name.as_deref(),
        override_key(&endpoint_id, &app_version),
    )
    .await
}

async fn delete_override(
    State(instances): State<Instances>,
    Path((endpoint_id, app_version)): Path<(String, String)>,
    q: Result<Query<NameQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let q = query(q)?;
    delete_doc(
        &instances,
        q.name.as_deref(),
        override_key(&endpoint_id, &app_version),
    )
    .await
}

fn status_json(s: &ConfigStatus) -> Value {
    // A report about the configuration last dispatched settles it, whichever was recorded
    // last (a push on connect may be recorded after the device already applied that config).
    let reported_last = match (s.applied_at, s.dispatched_at) {
        (Some(applied), Some(dispatched)) => {
            applied >= dispatched || s.applied_config_id == s.dispatched_config_id
        }
        (Some(_), None) => true,
        (None, _) => false,
    };
    let (status, config_id) = if reported_last {
        let ok = s.status_code.is_some_and(|c| (200..300).contains(&c));
        (if ok { "APPLIED" } else { "FAILED" }, &s.applied_config_id)
    } else {
        ("DISPATCHED", &s.dispatched_config_id)
    };
    let mut body = Map::new();
    body.insert("name".into(), json!(s.config_name));
    body.insert("endpointId".into(), json!(s.endpoint_id));
    body.insert("appVersionName".into(), json!(s.app_version));
    body.insert("configId".into(), json!(config_id));
    body.insert("status".into(), json!(status));
    let optional = [
        ("lastDispatchedDate", s.dispatched_at.map(Value::from)),
        ("lastConfirmedDate", s.applied_at.map(Value::from)),
        ("confirmationStatusCode", s.status_code.map(Value::from)),
        (
            "confirmationReasonPhrase",
            s.reason_phrase.clone().map(Value::from),
        ),
        (
            "dispatchedConfigId",
            s.dispatched_config_id.clone().map(Value::from),
        ),
        ("appliedConfigId", s.applied_config_id.clone().map(Value::from)),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            body.insert(key.into(), value);
        }
    }
    Value::Object(body)
}

async fn statuses(
    State(instances): State<Instances>,
    q: Result<Query<StatusQuery>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    let q = query(q)?;
    let state = instances.get(q.name.as_deref())?;
    let filter = StatusFilter {
        config_name: Some(state.name().to_owned()),
        endpoint_id: q.endpoint_id,
        app_version: q.app_version_name,
        config_id: q.config_id,
    };
    let content: Vec<Value> = state
        .store
        .config_statuses(&filter)
        .await
        .map_err(storage)?
        .iter()
        .map(status_json)
        .collect();
    let n = content.len();
    // A Spring page, as Kaa's ECR answers (one page holding everything).
    Ok(Json(json!({
        "content": content,
        "totalElements": n,
        "totalPages": 1,
        "numberOfElements": n,
        "size": n,
        "number": 0,
        "first": true,
        "last": true,
        "empty": n == 0,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(dispatched: (&str, i64), applied: (&str, i64)) -> ConfigStatus {
        ConfigStatus {
            config_name: "default".into(),
            endpoint_id: "e".into(),
            app_version: "v1".into(),
            dispatched_config_id: Some(dispatched.0.into()),
            dispatched_at: Some(dispatched.1),
            applied_config_id: Some(applied.0.into()),
            applied_at: Some(applied.1),
            status_code: Some(200),
            reason_phrase: None,
        }
    }

    #[test]
    fn a_report_settles_the_config_it_names_whatever_was_recorded_last() {
        // The device applied `a`; a push of `a` on connect was recorded a moment later.
        assert_eq!(status_json(&status(("a", 2), ("a", 1)))["status"], "APPLIED");
        // A newer config went out after the report: waiting for the device again.
        let newer = status_json(&status(("b", 2), ("a", 1)));
        assert_eq!(
            (newer["status"].as_str(), newer["configId"].as_str()),
            (Some("DISPATCHED"), Some("b"))
        );
        assert_eq!(status_json(&status(("b", 1), ("a", 2)))["status"], "APPLIED");
    }
}
