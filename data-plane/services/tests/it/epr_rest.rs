//! EPR REST API through the router, no socket.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

pub(crate) async fn app() -> axum::Router {
    epr_app().await
}

pub(crate) fn assert_error(reply: &Reply, status: StatusCode, kind: &str, message_contains: &str) {
    assert_eq!(reply.status, status, "{:?}", reply.body);
    assert_eq!(reply.body["error"], kind, "{:?}", reply.body);
    let message = reply.body["message"].as_str().unwrap();
    assert!(
        message.contains(message_contains),
        "message {message:?} lacks {message_contains:?}"
    );
}

#[tokio::test]
async fn register_returns_201_with_location_and_get_finds_it() {
    let app = app().await;
    let body = json!({
        "appVersion": {"name": APP_V1},
        "endpointToken": "meter-token-1",
        "metadata": {"serial": "A300-1"}
    });
    let reply = json(&app, "POST", "/epr/api/v1/endpoints", &body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let id = reply.body["endpointId"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    assert_eq!(reply.body["appVersion"], json!({"name": APP_V1}));
    assert_eq!(reply.body["endpointToken"], "meter-token-1");
    assert_eq!(
        reply.headers["location"],
        format!("/epr/api/v1/endpoints/{id}").as_str()
    );

    let got = call(&app, "GET", &format!("/epr/api/v1/endpoints/{id}"), None, &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["endpointId"], id.as_str());
    assert_eq!(got.body["appVersion"]["name"], APP_V1);
    assert_eq!(got.body["applicationName"], APP);
    assert!(got.body["createdAt"].as_i64().unwrap() > 0);
    assert!(got.body.get("metadata").is_none());
    assert!(
        got.body.get("endpointToken").is_none(),
        "tokens are secrets and are not listed"
    );

    let with_md = call(
        &app,
        "GET",
        &format!("/epr/api/v1/endpoints/{id}?include=metadata&tenantId=t"),
        None,
        &[],
    )
    .await;
    assert_eq!(with_md.body["metadata"], json!({"serial": "A300-1"}));
}

#[tokio::test]
async fn register_without_token_and_with_caller_id() {
    let app = app().await;
    let reply = json(
        &app,
        "POST",
        "/epr/api/v1/endpoints",
        &json!({"appVersion": {"name": APP_V2}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert!(reply.body.get("endpointToken").is_none());

    let id = "0b9e2a8e-2f0e-4d7e-9a43-3c1f7b7a9f10";
    let body = json!({"appVersion": {"name": APP_V1}, "endpointId": id});
    let reply = json(&app, "POST", "/epr/api/v1/endpoints", &body).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.body["endpointId"], id);
    let again = json(&app, "POST", "/epr/api/v1/endpoints", &body).await;
    assert_error(&again, StatusCode::CONFLICT, "conflict", id);
    let not_uuid = json(
        &app,
        "POST",
        "/epr/api/v1/endpoints",
        &json!({"appVersion": {"name": APP_V1}, "endpointId": "x"}),
    )
    .await;
    assert_error(&not_uuid, StatusCode::BAD_REQUEST, "bad_request", "not a UUID");
}

#[tokio::test]
async fn register_rejects_bad_input_with_clear_messages() {
    let app = app().await;
    let unknown = json(
        &app,
        "POST",
        "/epr/api/v1/endpoints",
        &json!({"appVersion": {"name": "nope-v9"}}),
    )
    .await;
    assert_error(
        &unknown,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "\"nope-v9\" is not configured",
    );
    assert!(
        unknown.body["message"].as_str().unwrap().contains(APP_V1),
        "lists the known versions"
    );

    let broken = call(
        &app,
        "POST",
        "/epr/api/v1/endpoints",
        Some(("application/json", "{\"appVersion\":")),
        &[],
    )
    .await;
    assert_error(
        &broken,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "invalid request body",
    );

    let missing = json(&app, "POST", "/epr/api/v1/endpoints", &json!({})).await;
    assert_error(&missing, StatusCode::BAD_REQUEST, "bad_request", "appVersion");

    let extra = json(
        &app,
        "POST",
        "/epr/api/v1/endpoints",
        &json!({"appVersion": {"name": APP_V1}, "relations": []}),
    )
    .await;
    assert_error(&extra, StatusCode::BAD_REQUEST, "bad_request", "relations");

    let form = call(
        &app,
        "POST",
        "/epr/api/v1/endpoints",
        Some(("application/x-www-form-urlencoded", "a=b")),
        &[],
    )
    .await;
    assert_error(
        &form,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "application/json",
    );

    let slash = json(
        &app,
        "POST",
        "/epr/api/v1/endpoints",
        &json!({"appVersion": {"name": APP_V1}, "endpointToken": "a/b"}),
    )
    .await;
    assert_error(&slash, StatusCode::BAD_REQUEST, "bad_request", "endpointToken");

    let bad_md = json(
        &app,
        "POST",
        "/epr/api/v1/endpoints",
        &json!({"appVersion": {"name": APP_V1}, "metadata": {"a-b": 1}}),
    )
    .await;
    assert_error(&bad_md, StatusCode::BAD_REQUEST, "bad_request", "a-b");

    let list = call(&app, "GET", "/epr/api/v1/endpoints", None, &[]).await;
    assert_eq!(
        list.body["totalElements"], 0,
        "nothing was registered by the failures"
    );
}

#[tokio::test]
async fn duplicate_token_is_409() {
    let app = app().await;
    register(&app, APP_V1, Some("shared")).await;
    let dup = json(
        &app,
        "POST",
        "/epr/api/v1/endpoints",
        &json!({"appVersion": {"name": APP_V2}, "endpointToken": "shared"}),
    )
    .await;
    assert_error(&dup, StatusCode::CONFLICT, "conflict", "token");
}

#[tokio::test]
async fn list_filters_and_pages() {
    let app = app().await;
    let mut v1 = Vec::new();
    for _ in 0..3 {
        v1.push(register(&app, APP_V1, None).await);
    }
    let v2 = register(&app, APP_V2, None).await;
    let lamp = register(&app, OTHER_V1, None).await;

    let all = call(&app, "GET", "/epr/api/v1/endpoints", None, &[]).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.body["totalElements"], 5);
    assert_eq!(all.body["offset"], 0);
    assert_eq!(all.body["limit"], 100);
    assert_eq!(all.body["content"].as_array().unwrap().len(), 5);

    let ids = |reply: &Reply| -> Vec<String> {
        reply.body["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["endpointId"].as_str().unwrap().to_owned())
            .collect()
    };
    let by_app = call(
        &app,
        "GET",
        &format!("/epr/api/v1/endpoints?applicationName={APP}"),
        None,
        &[],
    )
    .await;
    assert_eq!(by_app.body["totalElements"], 4);
    assert!(!ids(&by_app).contains(&lamp));

    let by_version = call(
        &app,
        "GET",
        &format!("/epr/api/v1/endpoints?applicationVersionName={APP_V2}"),
        None,
        &[],
    )
    .await;
    assert_eq!(ids(&by_version), vec![v2.clone()]);

    let both = format!("/epr/api/v1/endpoints?applicationName={OTHER_APP}&applicationVersionName={APP_V2}");
    assert_eq!(
        call(&app, "GET", &both, None, &[]).await.body["totalElements"],
        0,
        "version of another app"
    );

    let unknown_app = call(
        &app,
        "GET",
        "/epr/api/v1/endpoints?applicationName=ghost",
        None,
        &[],
    )
    .await;
    assert_eq!(
        (unknown_app.status, unknown_app.body["totalElements"].clone()),
        (StatusCode::OK, json!(0))
    );

    let page1 = call(
        &app,
        "GET",
        &format!("/epr/api/v1/endpoints?applicationVersionName={APP_V1}&limit=2"),
        None,
        &[],
    )
    .await;
    let page2 = call(
        &app,
        "GET",
        &format!("/epr/api/v1/endpoints?applicationVersionName={APP_V1}&limit=2&offset=2"),
        None,
        &[],
    )
    .await;
    assert_eq!(page1.body["totalElements"], 3);
    assert_eq!(
        (page2.body["offset"].clone(), page2.body["limit"].clone()),
        (json!(2), json!(2))
    );
    let mut seen = [ids(&page1), ids(&page2)].concat();
    seen.sort();
    v1.sort();
    assert_eq!(seen, v1);

    let with_md = call(
        &app,
        "GET",
        "/epr/api/v1/endpoints?include=metadata&limit=1",
        None,
        &[],
    )
    .await;
    assert_eq!(with_md.body["content"][0]["metadata"], json!({}));

    let clamped = call(&app, "GET", "/epr/api/v1/endpoints?limit=100000", None, &[]).await;
    assert_eq!(clamped.body["limit"], 1000);

    let bad = call(&app, "GET", "/epr/api/v1/endpoints?metadataFilter=x", None, &[]).await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "bad_request", "metadataFilter");
    let bad = call(&app, "GET", "/epr/api/v1/endpoints?limit=ten", None, &[]).await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "bad_request", "limit");
    let bad = call(&app, "GET", "/epr/api/v1/endpoints?include=relations", None, &[]).await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "bad_request", "relations");
}

#[tokio::test]
async fn unknown_endpoint_is_404_everywhere() {
    let app = app().await;
    let base = "/epr/api/v1/endpoints/4a0e7b8e-0000-4000-8000-000000000000";
    for (method, path, body) in [
        ("GET", String::new(), None),
        ("DELETE", String::new(), None),
        ("GET", "/metadata".into(), None),
        ("PUT", "/metadata".into(), Some(("application/json", "{}"))),
        (
            "PATCH",
            "/metadata".into(),
            Some(("application/json-patch+json", "[]")),
        ),
        ("GET", "/metadata/key".into(), None),
        ("PUT", "/metadata/key".into(), Some(("application/json", "1"))),
        ("DELETE", "/metadata/key".into(), None),
        ("GET", "/metadata-keys".into(), None),
    ] {
        let reply = call(&app, method, &format!("{base}{path}"), body, &[]).await;
        assert_error(&reply, StatusCode::NOT_FOUND, "not_found", "not found");
    }
}

#[tokio::test]
async fn delete_endpoint_removes_everything() {
    let app = app().await;
    let id = register(&app, APP_V1, Some("tok-del")).await;
    json(
        &app,
        "PUT",
        &format!("/epr/api/v1/endpoints/{id}/metadata"),
        &json!({"a": 1}),
    )
    .await;
    let deleted = call(&app, "DELETE", &format!("/epr/api/v1/endpoints/{id}"), None, &[]).await;
    assert_eq!(
        (deleted.status, deleted.body.clone()),
        (StatusCode::NO_CONTENT, Value::Null)
    );
    let gone = call(
        &app,
        "GET",
        &format!("/epr/api/v1/endpoints/{id}/metadata"),
        None,
        &[],
    )
    .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    // The token can be used again.
    register(&app, APP_V1, Some("tok-del")).await;
}

#[tokio::test]
async fn an_endpoint_moves_between_versions_of_its_application_and_extensions_hear_of_it() {
    use kaa_protocol::avro::AvroRecord;
    use kaa_protocol::elce::AppVersionUpdatedEvent;

    let stack = Stack::start_with(false, true).await;
    let app = &stack.epr;
    let mut events = stack
        .bus
        .subscribe(&kaa_protocol::subject::elce_app_version_updated("epr"), None)
        .await
        .unwrap();
    let id = register(app, APP_V1, Some("moving-token")).await;
    let path = format!("/epr/api/v1/endpoints/{id}/app-version");

    let moved = json(app, "PUT", &path, &json!({"name": APP_V2})).await;
    assert_eq!(moved.status, StatusCode::OK, "{:?}", moved.body);
    assert_eq!(moved.body["appVersion"]["name"], APP_V2);
    assert_eq!(moved.body["applicationName"], APP);
    let got = call(app, "GET", &format!("/epr/api/v1/endpoints/{id}"), None, &[]).await;
    assert_eq!(got.body["appVersion"]["name"], APP_V2);
    let msg = tokio::time::timeout(kaa_testkit::DEADLINE, events.next())
        .await
        .unwrap()
        .unwrap();
    let event = AppVersionUpdatedEvent::from_avro(&msg.payload).unwrap();
    assert_eq!(
        (
            event.endpoint_id.as_str(),
            event.previous_app_version_name.as_str(),
            event.app_version_name.as_str()
        ),
        (id.as_str(), APP_V1, APP_V2)
    );

    // Bad moves change nothing.
    let other_app = json(app, "PUT", &path, &json!({"name": OTHER_V1})).await;
    assert_error(
        &other_app,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "its own application",
    );
    let unknown = json(app, "PUT", &path, &json!({"name": "nope"})).await;
    assert_error(&unknown, StatusCode::BAD_REQUEST, "bad_request", "not configured");
    let malformed = json(app, "PUT", &path, &json!({"version": APP_V1})).await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST, "{:?}", malformed.body);
    let missing = json(
        app,
        "PUT",
        "/epr/api/v1/endpoints/0b9e2a8e-2f0e-4d7e-9a43-3c1f7b7a9f10/app-version",
        &json!({"name": APP_V2}),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let got = call(app, "GET", &format!("/epr/api/v1/endpoints/{id}"), None, &[]).await;
    assert_eq!(got.body["appVersion"]["name"], APP_V2);
}

#[tokio::test]
async fn applications_lists_the_configured_versions() {
    let app = app().await;
    let got = call(&app, "GET", "/epr/api/v1/applications", None, &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    let apps = got.body.as_array().unwrap();
    let ours = apps.iter().find(|a| a["name"] == APP).unwrap();
    assert_eq!(ours["versions"], json!([APP_V1, APP_V2]));
}

#[tokio::test]
async fn list_searches_ids_and_metadata() {
    let app = app().await;
    let body = json!({"appVersion": {"name": APP_V1}, "metadata": {"meterDescription": "Kitchen meter"}});
    let kitchen = json(&app, "POST", "/epr/api/v1/endpoints", &body).await;
    assert_eq!(kitchen.status, StatusCode::CREATED, "{:?}", kitchen.body);
    register(&app, APP_V1, None).await;
    let found = call(
        &app,
        "GET",
        "/epr/api/v1/endpoints?search=KITCHEN&include=metadata",
        None,
        &[],
    )
    .await;
    assert_eq!(found.status, StatusCode::OK, "{:?}", found.body);
    assert_eq!(found.body["totalElements"], 1);
    assert_eq!(found.body["content"][0]["endpointId"], kitchen.body["endpointId"]);
    let blank = call(&app, "GET", "/epr/api/v1/endpoints?search=%20", None, &[]).await;
    assert_eq!(
        blank.body["totalElements"], 2,
        "a blank search matches everything"
    );
}
