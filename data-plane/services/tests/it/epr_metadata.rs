//! EPR's endpoint metadata REST API through the router, no socket: replace, JSON Patch and
//! ETags, single keys and key listing.

use axum::{Router, http::StatusCode};
use serde_json::json;

use crate::epr_rest::{app, assert_error};
use crate::support::*;

/// A JSON Patch (`application/json-patch+json`) of the metadata at `uri`.
async fn patch(app: &Router, uri: &str, patch: &str, extra: &[(&str, &str)]) -> Reply {
    call(
        app,
        "PATCH",
        uri,
        Some(("application/json-patch+json", patch)),
        extra,
    )
    .await
}

#[tokio::test]
async fn metadata_replace_patch_and_etags() {
    let app = app().await;
    let id = register(&app, APP_V1, None).await;
    let md = format!("/epr/api/v1/endpoints/{id}/metadata");

    let empty = call(&app, "GET", &md, None, &[]).await;
    assert_eq!((empty.status, empty.body.clone()), (StatusCode::OK, json!({})));
    assert_eq!(empty.headers["etag"], "\"1\"");

    let put = json(&app, "PUT", &md, &json!({"model": "A300", "floor": 2})).await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    assert_eq!(put.body, json!({"model": "A300", "floor": 2}));
    assert_eq!(put.headers["etag"], "\"2\"");

    let stale = call(
        &app,
        "PUT",
        &md,
        Some(("application/json", "{\"a\":1}")),
        &[("if-match", "\"1\"")],
    )
    .await;
    assert_error(
        &stale,
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
        "version",
    );

    let changes =
        r#"[{"op":"replace","path":"/floor","value":3},{"op":"add","path":"/mac","value":"00-14"}]"#;
    let patched = patch(&app, &md, changes, &[("if-match", "\"2\"")]).await;
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
    assert_eq!(patched.body, json!({"model": "A300", "floor": 3, "mac": "00-14"}));
    assert_eq!(patched.headers["etag"], "\"3\"");

    let plain_json = call(&app, "PATCH", &md, Some(("application/json", "[]")), &[]).await;
    assert_error(
        &plain_json,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "json-patch+json",
    );
    let not_a_patch = patch(&app, &md, "{\"op\":1}", &[]).await;
    assert_error(
        &not_a_patch,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "invalid request body",
    );
    let cannot_apply = patch(&app, &md, r#"[{"op":"remove","path":"/ghost"}]"#, &[]).await;
    assert_error(&cannot_apply, StatusCode::CONFLICT, "conflict", "patch");
    let failed_test = r#"[{"op":"test","path":"/floor","value":99},{"op":"remove","path":"/floor"}]"#;
    let failed_test = patch(&app, &md, failed_test, &[]).await;
    assert_eq!(failed_test.status, StatusCode::CONFLICT);
    let bad_key = r#"[{"op":"add","path":"/bad key","value":1}]"#;
    let bad_key = patch(&app, &md, bad_key, &[]).await;
    assert_error(&bad_key, StatusCode::BAD_REQUEST, "bad_request", "bad key");

    let not_object = call(&app, "PUT", &md, Some(("application/json", "[1]")), &[]).await;
    assert_error(
        &not_object,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "invalid request body",
    );
    let invalid = call(&app, "PUT", &md, Some(("application/json", "{")), &[]).await;
    assert_error(
        &invalid,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "invalid request body",
    );

    let filtered = call(&app, "GET", &format!("{md}?include=model,mac"), None, &[]).await;
    assert_eq!(filtered.body, json!({"model": "A300", "mac": "00-14"}));
    let now = call(&app, "GET", &md, None, &[]).await;
    assert_eq!(
        now.headers["etag"], "\"3\"",
        "failed writes did not bump the version"
    );
}

#[tokio::test]
async fn single_keys_and_key_listing() {
    let app = app().await;
    let id = register(&app, APP_V1, None).await;
    let key = |k: &str| format!("/epr/api/v1/endpoints/{id}/metadata/{k}");
    let keys_path = format!("/epr/api/v1/endpoints/{id}/metadata-keys");

    let put = call(
        &app,
        "PUT",
        &key("location"),
        Some(("application/json", r#"{"lat":1.5,"lon":2}"#)),
        &[],
    )
    .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    assert_eq!(put.headers["etag"], "\"2\"");
    json(&app, "PUT", &key("name"), &json!("kitchen")).await;

    let got = call(&app, "GET", &key("location"), None, &[]).await;
    assert_eq!(
        (got.status, got.body.clone()),
        (StatusCode::OK, json!({"lat": 1.5, "lon": 2}))
    );
    assert_eq!(got.headers["etag"], "\"3\"");

    let keys = call(&app, "GET", &keys_path, None, &[]).await;
    assert_eq!(keys.body, json!(["location", "name"]));

    assert_error(
        &call(&app, "GET", &key("bad-key"), None, &[]).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "bad-key",
    );
    assert_error(
        &call(&app, "PUT", &key("a.b"), Some(("application/json", "1")), &[]).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "^[a-zA-Z0-9_]+$",
    );
    assert_error(
        &call(&app, "GET", &key("ghost"), None, &[]).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "ghost",
    );
    let invalid = call(
        &app,
        "PUT",
        &key("name"),
        Some(("application/json", "kitchen")),
        &[],
    )
    .await;
    assert_error(
        &invalid,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "invalid request body",
    );

    let stale = call(&app, "DELETE", &key("name"), None, &[("if-match", "\"1\"")]).await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    let deleted = call(&app, "DELETE", &key("name"), None, &[("if-match", "\"3\"")]).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_error(
        &call(&app, "DELETE", &key("name"), None, &[]).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "name",
    );
    let keys = call(&app, "GET", &keys_path, None, &[]).await;
    assert_eq!(keys.body, json!(["location"]));
}
