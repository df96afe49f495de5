//! CM's REST APIs (endpoint tokens, client credentials) through `oneshot`, EPR's registration
//! path through CM, and secrets kept out of the logs. Storage-backed tests run on both backends,
//! as in `cm`.

use axum::http::StatusCode;
use bytes::Bytes;
use kaa_protocol::{ecap, subject};
use serde_json::json;

use crate::support::*;

use crate::cm::*;

// --- REST --------------------------------------------------------------------------------------

async fn issuing_tokens_over_rest(backend: Backend) {
    let stack = Stack::on(backend).await;
    let id = register(&stack.epr, APP_V2, None).await;
    let path = format!("/cm/api/v1/endpoints/{id}/tokens");

    // No body: a random token, shown once.
    let random = call(&stack.cm, "POST", &path, None, &[]).await;
    assert_eq!(random.status, StatusCode::CREATED, "{:?}", random.body);
    let value = random.body["token"].as_str().unwrap().to_owned();
    assert_eq!(value.len(), 43, "256 bits, base64url");
    let token_id = random.body["tokenId"].as_str().unwrap().to_owned();
    assert_eq!(
        random.headers["location"],
        format!("/cm/api/v1/tokens/{token_id}").as_str()
    );
    assert_eq!(random.body["appName"], APP);
    assert_eq!(random.body["appVersion"], APP_V2);
    assert_eq!(random.body["status"], "Inactive");

    let chosen = json(&stack.cm, "POST", &path, &json!({"token": "my-meter"})).await;
    assert_eq!(chosen.status, StatusCode::CREATED, "{:?}", chosen.body);
    assert_eq!(chosen.body["token"], "my-meter");

    // Listing never shows values.
    let listed = call(&stack.cm, "GET", &path, None, &[]).await;
    assert_eq!(listed.status, StatusCode::OK);
    let tokens = listed.body.as_array().unwrap();
    assert_eq!(tokens.len(), 2);
    assert!(tokens.iter().all(|t| t.get("token").is_none()), "{tokens:?}");
    assert!(!listed.body.to_string().contains(&value));
    assert!(!listed.body.to_string().contains("my-meter"));
    let one = get_token(&stack, &token_id).await;
    assert!(one.body.get("token").is_none());

    assert_error(
        &json(&stack.cm, "POST", &path, &json!({"token": "my-meter"})).await,
        StatusCode::CONFLICT,
        "already in use",
    );
    assert_error(
        &json(&stack.cm, "POST", &path, &json!({"token": "a/b"})).await,
        StatusCode::BAD_REQUEST,
        "token",
    );
    assert_error(
        &json(&stack.cm, "POST", &path, &json!({"value": "x"})).await,
        StatusCode::BAD_REQUEST,
        "unknown field",
    );
    assert_error(
        &call(&stack.cm, "POST", "/cm/api/v1/endpoints/ghost/tokens", None, &[]).await,
        StatusCode::NOT_FOUND,
        "endpoint ghost not found",
    );
    assert_error(
        &call(&stack.cm, "GET", "/cm/api/v1/tokens/ghost", None, &[]).await,
        StatusCode::NOT_FOUND,
        "ghost",
    );
    assert_error(
        &put_status(&stack, "ghost", "Active").await,
        StatusCode::NOT_FOUND,
        "ghost",
    );
    assert_error(
        &put_status(&stack, &token_id, "Inactive").await,
        StatusCode::BAD_REQUEST,
        "Active, Suspended, Revoked",
    );
    stack.stop().await;
}

async fn issuing_a_token_needs_epr(backend: Backend) {
    let stack = Stack::start_on(backend, false, true).await;
    let reply = call(&stack.cm, "POST", "/cm/api/v1/endpoints/any/tokens", None, &[]).await;
    assert_error(&reply, StatusCode::SERVICE_UNAVAILABLE, "`epr`");
    assert_eq!(reply.body["error"], "service_unavailable");
    stack.stop().await;
}

async fn client_credentials_rest(backend: Backend) {
    let stack = Stack::on(backend).await;
    for (client, user) in [("a", "a1"), ("a", "a2"), ("b", "b1")] {
        let reply = create_client(
            &stack,
            json!({"clientId": client, "username": user, "password": "pw"}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    }
    let all = call(&stack.cm, "GET", "/ccm/api/v1/clients", None, &[]).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.body["totalElements"], 3);
    assert_eq!(
        (all.body["offset"].as_u64(), all.body["limit"].as_u64()),
        (Some(0), Some(100))
    );
    assert!(!all.body.to_string().contains("argon2"));
    let of_a = call(
        &stack.cm,
        "GET",
        "/ccm/api/v1/clients?clientId=a&limit=1",
        None,
        &[],
    )
    .await;
    assert_eq!(of_a.body["totalElements"], 2);
    assert_eq!(of_a.body["content"].as_array().unwrap().len(), 1);
    assert_eq!(of_a.body["content"][0]["clientId"], "a");
    let id = of_a.body["content"][0]["credentialId"].as_str().unwrap();
    let one = call(&stack.cm, "GET", &format!("/ccm/api/v1/clients/{id}"), None, &[]).await;
    assert_eq!(one.body["status"], "Active");
    assert!(one.body["createdAt"].as_i64().unwrap() > 0);

    assert_error(
        &create_client(
            &stack,
            json!({"clientId": "c", "username": "a1", "password": "x"}),
        )
        .await,
        StatusCode::CONFLICT,
        "already taken",
    );
    for (body, why) in [
        (json!({"clientId": "c", "username": "u"}), "exactly one of"),
        (
            json!({"clientId": "c", "username": "u", "password": "p", "issuer": "CN=x"}),
            "exactly one of",
        ),
        (json!({"clientId": "c", "issuer": "CN=x"}), "exactly one of"),
        (
            json!({"clientId": "", "username": "u", "password": "p"}),
            "clientId",
        ),
        (
            json!({"clientId": "c", "username": "u", "password": ""}),
            "password",
        ),
        (
            json!({"clientId": "c", "issuer": "CN=x", "serialNumber": "12a"}),
            "base-10",
        ),
        (
            json!({"clientId": "c", "certificate": "not a pem"}),
            "certificate",
        ),
        (json!({"username": "u", "password": "p"}), "clientId"),
        (json!({"clientId": "c", "user": "u"}), "unknown field"),
    ] {
        assert_error(
            &create_client(&stack, body.clone()).await,
            StatusCode::BAD_REQUEST,
            why,
        );
    }
    assert_error(
        &call(&stack.cm, "GET", "/ccm/api/v1/clients?page=2", None, &[]).await,
        StatusCode::BAD_REQUEST,
        "page",
    );
    stack.stop().await;
}

// --- EPR registration through CM -----------------------------------------------------------------

#[tokio::test]
async fn registration_without_cm_is_503_and_leaves_nothing() {
    let stack = Stack::start_with(true, false).await;
    let reply = try_register(&stack.epr, APP_V1, Some("t")).await;
    assert_error(&reply, StatusCode::SERVICE_UNAVAILABLE, "credential service `cm`");
    let list = call(&stack.epr, "GET", "/epr/api/v1/endpoints", None, &[]).await;
    assert_eq!(list.body["totalElements"], 0);
    // Without a token CM is not needed.
    register(&stack.epr, APP_V1, None).await;
    stack.stop().await;
}

#[tokio::test]
async fn registration_with_a_silent_cm_times_out_as_503() {
    let stack = Stack::start_with(true, false).await;
    // A CM that takes the request and never answers.
    let mut silent = stack
        .bus
        .subscribe(
            &subject::ecap_request("cm", ecap::EP_TOKEN_PROVISION_REQUEST),
            Some("cm"),
        )
        .await
        .unwrap();
    let mut unregistered = stack
        .bus
        .subscribe(&subject::elce_unregistered("epr"), None)
        .await
        .unwrap();
    // The timeout comes from EprConfig::cm_timeout_ms; shorten it for this test.
    let mut config = epr_config();
    config.cm_timeout_ms = 300;
    let epr = kaa_services::epr::router(
        kaa_services::epr::EprState::new(stack.store.clone(), stack.bus.clone(), config).unwrap(),
    );
    let body = json!({"appVersion": {"name": APP_V1}, "endpointToken": "t"});
    let request = json(&epr, "POST", "/epr/api/v1/endpoints", &body);
    let (reply, msg) = tokio::join!(request, silent.next());
    assert!(msg.is_some());
    assert_error(
        &reply,
        StatusCode::SERVICE_UNAVAILABLE,
        "did not answer within 300 ms",
    );
    // The half-done registration is undone and announced, so a late CM write is cleaned up too.
    let event: kaa_protocol::elce::UnregisteredEvent = next_event(&mut unregistered).await;
    assert_eq!(event.app_version_name, APP_V1);
    assert_eq!(
        call(&epr, "GET", "/epr/api/v1/endpoints", None, &[]).await.body["totalElements"],
        0
    );
    stack.stop().await;
}

// --- secrets stay out of logs --------------------------------------------------------------------

async fn secrets_never_reach_the_logs(backend: Backend) {
    // A current-thread test runtime: every task of this test logs through this subscriber.
    let (logs, _guard) = kaa_testkit::capture_logs();

    let stack = Stack::on(backend).await;
    let id = register(&stack.epr, APP_V1, Some("tok-SECRET-1")).await;
    validate_token(&stack.bus, APP, "tok-SECRET-1").await;
    validate_token(&stack.bus, APP, "tok-SECRET-2").await;
    let issued = json(
        &stack.cm,
        "POST",
        &format!("/cm/api/v1/endpoints/{id}/tokens"),
        &json!({"token": "tok-SECRET-3"}),
    )
    .await;
    assert_eq!(issued.status, StatusCode::CREATED);
    transition(&stack.bus, APP, "tok-SECRET-1", "Revoked").await;
    // A duplicate token and a bad one fail without quoting them.
    let dup = try_register(&stack.epr, APP_V1, Some("tok-SECRET-3")).await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert!(!dup.body.to_string().contains("SECRET"), "{:?}", dup.body);
    let bad = try_register(&stack.epr, APP_V1, Some("tok/SECRET-4")).await;
    assert!(!bad.body.to_string().contains("SECRET"), "{:?}", bad.body);

    create_client(
        &stack,
        json!({"clientId": "c", "username": "u", "password": "pw-SECRET-5"}),
    )
    .await;
    login(&stack.bus, Some("u"), Some("pw-SECRET-5")).await;
    login(&stack.bus, Some("u"), Some("pw-SECRET-6")).await;
    login(&stack.bus, Some("nobody"), Some("pw-SECRET-7")).await;
    let typo = create_client(
        &stack,
        json!({"clientId": "c", "username": "v", "password": 12345678}),
    )
    .await;
    assert_eq!(typo.status, StatusCode::BAD_REQUEST);
    assert!(!typo.body.to_string().contains("12345678"), "{:?}", typo.body);
    let provision = stack
        .bus
        .request(
            &subject::ecap_request("cm", ecap::EP_TOKEN_PROVISION_REQUEST),
            Bytes::from_static(br#"{"token":"tok-SECRET-8","oops":1}"#),
            TIMEOUT,
        )
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&provision.payload).contains("SECRET"));
    stack.stop().await;

    let text = logs.text();
    assert!(
        text.contains("endpoint token activated"),
        "the capture works: {text}"
    );
    assert!(!text.contains("SECRET"), "a secret was logged:\n{text}");
    assert!(
        !text.contains("12345678"),
        "a mistyped password was logged:\n{text}"
    );
}

on_both_backends!(
    issuing_tokens_over_rest,
    issuing_a_token_needs_epr,
    client_credentials_rest,
    secrets_never_reach_the_logs,
);
