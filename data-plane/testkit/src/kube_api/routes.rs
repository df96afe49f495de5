//! Request routing: which collection or object a path names, which verb a method is, and the
//! `Status` bodies the real server answers failures with.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{
    ObjectKey,
    selector::Query,
    store::{Resource, Shared},
    verbs::{create, delete, get, list, patch, replace},
    watch::watch,
};

#[derive(Debug, Clone)]
pub(super) struct Handler {
    pub(super) state: Arc<Shared>,
    pub(super) shutdown: CancellationToken,
}

#[derive(Debug)]
pub(super) enum Target {
    /// A collection; `namespace: None` is "all namespaces" (or a cluster-scoped collection).
    Collection {
        resource: Resource,
        namespace: Option<String>,
    },
    Object {
        key: ObjectKey,
        status: bool,
    },
}

pub(super) fn parse_target(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let resource = |plural: &str| Resource {
        group: group.into(),
        version: version.into(),
        plural: plural.into(),
    };
    let object = |namespace: &str, plural: &str, name: &str, status: bool| Target::Object {
        key: ObjectKey {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            namespace: namespace.into(),
            name: name.into(),
        },
        status,
    };
    Some(match rest {
        ["namespaces", ns, plural] => Target::Collection {
            resource: resource(plural),
            namespace: Some((*ns).to_owned()),
        },
        ["namespaces", ns, plural, name] => object(ns, plural, name, false),
        ["namespaces", ns, plural, name, "status"] => object(ns, plural, name, true),
        [plural] => Target::Collection {
            resource: resource(plural),
            namespace: None,
        },
        [plural, name] => object("", plural, name, false),
        [plural, name, "status"] => object("", plural, name, true),
        _ => return None,
    })
}

pub(super) async fn handle(
    State(handler): State<Handler>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path_and_query = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    handler
        .state
        .lock()
        .requests
        .push(format!("{method} {path_and_query}"));
    let query = Query::parse(uri.query().unwrap_or(""));
    let Some(target) = parse_target(uri.path()) else {
        return failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("no route for {}", uri.path()),
        )
        .into_response();
    };
    let result = match (target, method) {
        (Target::Collection { resource, namespace }, Method::GET) if query.is_watch() => {
            return watch(&handler, &resource, namespace.as_deref(), &query);
        }
        (Target::Collection { resource, namespace }, Method::GET) => {
            list(&handler.state, &resource, namespace.as_deref(), &query)
        }
        (
            Target::Collection {
                resource,
                namespace: Some(ns),
            },
            Method::POST,
        ) => parse_body(&body).and_then(|obj| create(&handler.state, &resource, &ns, obj)),
        (Target::Collection { resource, .. }, Method::POST) => {
            // Cluster-scoped create.
            parse_body(&body).and_then(|obj| create(&handler.state, &resource, "", obj))
        }
        (Target::Object { key, .. }, Method::GET) => get(&handler.state, &key),
        (Target::Object { key, status }, Method::PUT) => {
            parse_body(&body).and_then(|obj| replace(&handler.state, &key, obj, status))
        }
        (Target::Object { key, status }, Method::PATCH) => {
            let content_type = headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            parse_body(&body).and_then(|p| patch(&handler.state, &key, content_type, p, status))
        }
        (Target::Object { key, status: false }, Method::DELETE) => {
            let options = match body.is_empty() {
                true => Ok(Value::Null),
                false => parse_body(&body),
            };
            options.and_then(|o| delete(&handler.state, &key, &o))
        }
        (_, method) => Err(failure(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("{method} is not supported here"),
        )),
    };
    match result {
        Ok((code, value)) => (code, axum::Json(value)).into_response(),
        Err(failure) => failure.into_response(),
    }
}

pub(super) type Answer = Result<(StatusCode, Value), Failure>;

pub(super) fn parse_body(body: &[u8]) -> Result<Value, Failure> {
    serde_json::from_slice(body).map_err(|e| {
        failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("invalid JSON body: {e}"),
        )
    })
}

/// A refused request: answered with a `Status` failure body, as the real server does.
#[derive(Debug)]
pub(super) struct Failure {
    code: StatusCode,
    reason: String,
    message: String,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = status_body(self.code, &self.reason, &self.message);
        (self.code, axum::Json(body)).into_response()
    }
}

pub(super) fn failure(code: StatusCode, reason: &str, message: &str) -> Failure {
    Failure {
        code,
        reason: reason.to_owned(),
        message: message.to_owned(),
    }
}

pub(super) fn status_body(code: StatusCode, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    })
}

pub(super) fn not_found(key: &ObjectKey) -> Failure {
    failure(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{} \"{}\" not found", key.plural, key.name),
    )
}

pub(super) fn conflict(key: &ObjectKey) -> Failure {
    failure(
        StatusCode::CONFLICT,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply \
             your changes to the latest version and try again",
            key.plural, key.name
        ),
    )
}
