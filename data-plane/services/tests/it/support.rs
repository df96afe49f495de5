//! Fixtures shared by the integration tests.

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode, header::HeaderMap},
};
use http_body_util::BodyExt;
use kaa_services::epr::{self, Application, EprState};
use kaa_store::Store;
use serde_json::Value;
use tower::ServiceExt;

pub const APP: &str = "smart-meter";
pub const APP_V1: &str = "smart-meter-v1";
pub const APP_V2: &str = "smart-meter-v2";
pub const OTHER_APP: &str = "lamp";
pub const OTHER_V1: &str = "lamp-v1";

pub fn epr_config() -> epr::Config {
    epr::Config {
        instance: "epr".into(),
        applications: vec![
            Application {
                name: APP.into(),
                versions: vec![APP_V1.into(), APP_V2.into()],
            },
            Application {
                name: OTHER_APP.into(),
                versions: vec![OTHER_V1.into()],
            },
        ],
    }
}

pub async fn epr_state() -> EprState {
    EprState::new(Store::open_in_memory().await.unwrap(), epr_config()).unwrap()
}

/// A response, decoded.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// Sends one request through the router; `body` is sent as-is with `content_type` when given.
pub async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    body: Option<(&str, &str)>,
    extra: &[(&str, &str)],
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let req = match body {
        Some((content_type, text)) => req
            .header("content-type", content_type)
            .body(Body::from(text.to_owned())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = match bytes.is_empty() {
        true => Value::Null,
        false => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{method} {uri}: non-JSON body {:?}: {e}",
                String::from_utf8_lossy(&bytes)
            )
        }),
    };
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn json(app: &Router, method: &str, uri: &str, body: &Value) -> Reply {
    call(
        app,
        method,
        uri,
        Some(("application/json", &body.to_string())),
        &[],
    )
    .await
}

/// Registers an endpoint over REST and returns its id.
pub async fn register(app: &Router, app_version: &str, token: Option<&str>) -> String {
    let mut body = serde_json::json!({"appVersion": {"name": app_version}});
    if let Some(token) = token {
        body["endpointToken"] = token.into();
    }
    let reply = json(app, "POST", "/epr/api/v1/endpoints", &body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    reply.body["endpointId"].as_str().unwrap().to_owned()
}
