//! CM, the credential service: 16/ECAP over `Bus::in_process()` the way the gateway asks, and its
//! revocation broadcasts; its REST APIs and EPR's registration path through it are in `cm_rest`.
//! Every test that involves CM's storage runs on both backends (`sql::*`, `kubernetes::*`): the
//! same statuses, events and answers are expected from both.

use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use kaa_bus::{Bus, Subscription};
use kaa_protocol::{
    avro::AvroRecord,
    ecap::{
        self, ClientCertificateValidationRequest, ClientCertificateValidationResponse,
        ClientCredentialRevokedEvent, ClientUsernamePasswordValidationRequest,
        ClientUsernamePasswordValidationResponse, EndpointTokenRevokedEvent,
        EndpointTokenStatusTransitionRequest, EndpointTokenStatusTransitionResponse,
        EndpointTokenValidationRequest, EndpointTokenValidationResponse,
    },
    now_millis, subject,
};
use serde_json::{Value, json};

use crate::support::*;

pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn ecap<Req: AvroRecord, Resp: AvroRecord>(
    bus: &Bus,
    message_type: &str,
    req: &Req,
) -> Resp {
    let reply = bus
        .request(
            &subject::ecap_request("cm", message_type),
            Bytes::from(req.to_avro()),
            TIMEOUT,
        )
        .await
        .unwrap();
    Resp::from_avro(&reply.payload).unwrap()
}

pub(crate) async fn validate_token(bus: &Bus, app: &str, token: &str) -> EndpointTokenValidationResponse {
    let resp: EndpointTokenValidationResponse = ecap(
        bus,
        ecap::EP_TOKEN_REQUEST,
        &EndpointTokenValidationRequest {
            correlation_id: "cid-validate".into(),
            timestamp: now_millis(),
            timeout: 3_000,
            app_name: app.into(),
            token: token.into(),
        },
    )
    .await;
    assert_eq!(resp.correlation_id, "cid-validate");
    resp
}

pub(crate) async fn transition(
    bus: &Bus,
    app: &str,
    token: &str,
    to: &str,
) -> EndpointTokenStatusTransitionResponse {
    ecap(
        bus,
        ecap::EP_TOKEN_STATUS_TRANSITION_REQUEST,
        &EndpointTokenStatusTransitionRequest {
            correlation_id: "cid-transition".into(),
            timestamp: now_millis(),
            timeout: 3_000,
            app_name: app.into(),
            token: token.into(),
            target_status: to.into(),
        },
    )
    .await
}

pub(crate) async fn login(
    bus: &Bus,
    username: Option<&str>,
    password: Option<&str>,
) -> ClientUsernamePasswordValidationResponse {
    ecap(
        bus,
        ecap::CLIENT_USERNAME_PASSWORD_REQUEST,
        &ClientUsernamePasswordValidationRequest {
            correlation_id: "cid-login".into(),
            timestamp: now_millis(),
            timeout: 3_000,
            username: username.map(Into::into),
            password: password.map(Into::into),
        },
    )
    .await
}

pub(crate) async fn present_certificate(
    bus: &Bus,
    issuer: &str,
    serial: &str,
) -> ClientCertificateValidationResponse {
    ecap(
        bus,
        ecap::CLIENT_CERTIFICATE_REQUEST,
        &ClientCertificateValidationRequest {
            correlation_id: "cid-cert".into(),
            timestamp: now_millis(),
            timeout: 3_000,
            issuer: issuer.into(),
            serial_number: serial.into(),
        },
    )
    .await
}

/// The next message on `sub`, decoded, within the deadline.
pub(crate) async fn next_event<T: AvroRecord>(sub: &mut Subscription) -> T {
    let msg = tokio::time::timeout(TIMEOUT, sub.next())
        .await
        .expect("an event within the deadline")
        .expect("subscription open");
    T::from_avro(&msg.payload).unwrap()
}

/// Nothing more arrives on `sub` (after a round trip through CM has flushed its work).
pub(crate) async fn assert_no_event(sub: &mut Subscription) {
    let extra = tokio::time::timeout(Duration::from_millis(200), sub.next()).await;
    assert!(extra.is_err(), "unexpected event {extra:?}");
}

/// `GET /cm/api/v1/tokens/{token_id}`.
pub(crate) async fn get_token(stack: &Stack, token_id: &str) -> Reply {
    let uri = format!("/cm/api/v1/tokens/{token_id}");
    call(&stack.cm, "GET", &uri, None, &[]).await
}

pub(crate) async fn token_status(stack: &Stack, token_id: &str) -> String {
    let reply = get_token(stack, token_id).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body["status"].as_str().unwrap().to_owned()
}

pub(crate) async fn put_status(stack: &Stack, token_id: &str, status: &str) -> Reply {
    json(
        &stack.cm,
        "PUT",
        &format!("/cm/api/v1/tokens/{token_id}/status"),
        &json!({ "status": status }),
    )
    .await
}

pub(crate) async fn create_client(stack: &Stack, body: Value) -> Reply {
    json(&stack.cm, "POST", "/ccm/api/v1/clients", &body).await
}

#[track_caller]
pub(crate) fn assert_error(reply: &Reply, status: StatusCode, message_contains: &str) {
    assert_eq!(reply.status, status, "{:?}", reply.body);
    assert!(reply.body["error"].is_string(), "{:?}", reply.body);
    let message = reply.body["message"].as_str().unwrap();
    assert!(
        message.contains(message_contains),
        "message {message:?} lacks {message_contains:?}"
    );
}

// --- endpoint tokens over 16/ECAP --------------------------------------------------------------

async fn token_lifecycle_inactive_active_suspended_active_revoked(backend: Backend) {
    let stack = Stack::on(backend).await;
    let mut revoked = stack
        .bus
        .subscribe(&subject::ecap_token_revoked("cm"), None)
        .await
        .unwrap();
    let reply = try_register(&stack.epr, APP_V1, Some("meter-7")).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let endpoint_id = reply.body["endpointId"].as_str().unwrap().to_owned();
    let token_id = reply.body["tokenId"].as_str().unwrap().to_owned();
    assert_eq!(token_status(&stack, &token_id).await, "Inactive");

    // First use activates it.
    let ok = validate_token(&stack.bus, APP, "meter-7").await;
    assert_eq!(ok.status_code, 200, "{:?}", ok.reason_phrase);
    assert_eq!(ok.endpoint_id.as_deref(), Some(endpoint_id.as_str()));
    assert_eq!(ok.token_id.as_deref(), Some(token_id.as_str()));
    assert_eq!(token_status(&stack, &token_id).await, "Active");
    assert_eq!(validate_token(&stack.bus, APP, "meter-7").await.status_code, 200);

    // Suspended over REST: refused with 403, and every gateway hears about it.
    let suspended = put_status(&stack, &token_id, "Suspended").await;
    assert_eq!(suspended.status, StatusCode::OK, "{:?}", suspended.body);
    assert_eq!(suspended.body["status"], "Suspended");
    let event: EndpointTokenRevokedEvent = next_event(&mut revoked).await;
    assert_eq!(event.token_ids, [token_id.as_str()]);
    assert_eq!(
        (event.app_name.as_str(), event.endpoint_id.as_str()),
        (APP, endpoint_id.as_str())
    );
    assert_eq!(event.originator_replica_id, "cm");
    let refused = validate_token(&stack.bus, APP, "meter-7").await;
    assert_eq!(
        (refused.status_code, refused.reason_phrase.as_deref()),
        (403, Some("token suspended"))
    );
    assert_eq!(refused.token_id.as_deref(), Some(token_id.as_str()));
    // Suspending again changes nothing and announces nothing.
    assert_eq!(
        put_status(&stack, &token_id, "Suspended").await.status,
        StatusCode::OK
    );

    // Reactivated over 16/ECAP.
    let back = transition(&stack.bus, APP, "meter-7", "Active").await;
    assert_eq!(back.status_code, 200, "{:?}", back.reason_phrase);
    assert_eq!(back.correlation_id, "cid-transition");
    assert_eq!(validate_token(&stack.bus, APP, "meter-7").await.status_code, 200);

    // Revoked over 16/ECAP: terminal.
    assert_eq!(
        transition(&stack.bus, APP, "meter-7", "Revoked")
            .await
            .status_code,
        200
    );
    let event: EndpointTokenRevokedEvent = next_event(&mut revoked).await;
    assert_eq!(event.token_ids, [token_id.as_str()]);
    let refused = validate_token(&stack.bus, APP, "meter-7").await;
    assert_eq!(
        (refused.status_code, refused.reason_phrase.as_deref()),
        (403, Some("token revoked"))
    );
    let again = transition(&stack.bus, APP, "meter-7", "Active").await;
    assert_eq!(again.status_code, 409, "{:?}", again.reason_phrase);
    assert_error(
        &put_status(&stack, &token_id, "Active").await,
        StatusCode::CONFLICT,
        "Revoked",
    );
    assert_eq!(token_status(&stack, &token_id).await, "Revoked");
    assert_no_event(&mut revoked).await;
    stack.stop().await;
}

async fn unknown_and_foreign_tokens_and_bad_requests(backend: Backend) {
    let stack = Stack::on(backend).await;
    register(&stack.epr, OTHER_V1, Some("lamp-token")).await;

    let unknown = validate_token(&stack.bus, APP, "nope").await;
    assert_eq!(
        (unknown.status_code, unknown.token_id, unknown.endpoint_id),
        (404, None, None)
    );
    assert!(unknown.reason_phrase.unwrap().contains("unknown endpoint token"));
    // Another application's token is as unknown as no token.
    let foreign = validate_token(&stack.bus, APP, "lamp-token").await;
    assert_eq!((foreign.status_code, foreign.token_id), (404, None));
    assert_eq!(
        transition(&stack.bus, APP, "lamp-token", "Revoked")
            .await
            .status_code,
        404
    );
    assert_eq!(
        validate_token(&stack.bus, OTHER_APP, "lamp-token")
            .await
            .status_code,
        200
    );

    for bad in ["Inactive", "revoked", ""] {
        let resp = transition(&stack.bus, OTHER_APP, "lamp-token", bad).await;
        assert_eq!(resp.status_code, 400, "{bad:?}: {:?}", resp.reason_phrase);
    }

    // Garbage on every ECAP subject is answered 400, not crashed on.
    for message_type in [
        ecap::EP_TOKEN_REQUEST,
        ecap::EP_TOKEN_STATUS_TRANSITION_REQUEST,
        ecap::CLIENT_USERNAME_PASSWORD_REQUEST,
        ecap::CLIENT_CERTIFICATE_REQUEST,
    ] {
        let reply = stack
            .bus
            .request(
                &subject::ecap_request("cm", message_type),
                Bytes::from_static(&[0xff, 0xff]),
                TIMEOUT,
            )
            .await
            .unwrap();
        // All four responses start with correlationId, timestamp, timeout; statusCode differs in
        // position, so decode each properly.
        let status = match message_type {
            ecap::EP_TOKEN_REQUEST => {
                EndpointTokenValidationResponse::from_avro(&reply.payload)
                    .unwrap()
                    .status_code
            }
            ecap::EP_TOKEN_STATUS_TRANSITION_REQUEST => {
                EndpointTokenStatusTransitionResponse::from_avro(&reply.payload)
                    .unwrap()
                    .status_code
            }
            ecap::CLIENT_USERNAME_PASSWORD_REQUEST => {
                ClientUsernamePasswordValidationResponse::from_avro(&reply.payload)
                    .unwrap()
                    .status_code
            }
            _ => {
                ClientCertificateValidationResponse::from_avro(&reply.payload)
                    .unwrap()
                    .status_code
            }
        };
        assert_eq!(status, 400, "{message_type}");
    }
    stack.stop().await;
}

async fn deleting_an_endpoint_deletes_and_revokes_its_tokens(backend: Backend) {
    let stack = Stack::on(backend).await;
    let mut revoked = stack
        .bus
        .subscribe(&subject::ecap_token_revoked("cm"), None)
        .await
        .unwrap();
    let id = register(&stack.epr, APP_V1, Some("first")).await;
    let second = json(
        &stack.cm,
        "POST",
        &format!("/cm/api/v1/endpoints/{id}/tokens"),
        &json!({}),
    )
    .await;
    assert_eq!(second.status, StatusCode::CREATED, "{:?}", second.body);
    let second_value = second.body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        validate_token(&stack.bus, APP, &second_value).await.status_code,
        200
    );

    let deleted = call(
        &stack.epr,
        "DELETE",
        &format!("/epr/api/v1/endpoints/{id}"),
        None,
        &[],
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let event: EndpointTokenRevokedEvent = next_event(&mut revoked).await;
    assert_eq!(
        (event.endpoint_id.as_str(), event.app_name.as_str()),
        (id.as_str(), APP)
    );
    assert_eq!(event.token_ids.len(), 2, "{event:?}");
    assert!(
        event
            .token_ids
            .contains(&second.body["tokenId"].as_str().unwrap().to_owned())
    );
    assert_eq!(validate_token(&stack.bus, APP, "first").await.status_code, 404);
    assert_eq!(
        validate_token(&stack.bus, APP, &second_value).await.status_code,
        404
    );
    let listed = call(
        &stack.cm,
        "GET",
        &format!("/cm/api/v1/endpoints/{id}/tokens"),
        None,
        &[],
    )
    .await;
    assert_eq!(listed.body, json!([]));
    // The value is free for another endpoint.
    register(&stack.epr, APP_V1, Some("first")).await;
    stack.stop().await;
}

// --- client credentials over 16/ECAP -----------------------------------------------------------

async fn username_and_password(backend: Backend) {
    let stack = Stack::on(backend).await;
    let created = create_client(
        &stack,
        json!({"clientId": "gateway-1", "username": "gw1", "password": "s3cret-pa55"}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let credential_id = created.body["credentialId"].as_str().unwrap().to_owned();
    assert_eq!(
        created.headers["location"],
        format!("/ccm/api/v1/clients/{credential_id}").as_str()
    );
    assert_eq!(created.body["kind"], "password");
    assert_eq!(created.body["username"], "gw1");
    assert!(created.body.get("password").is_none());

    let ok = login(&stack.bus, Some("gw1"), Some("s3cret-pa55")).await;
    assert_eq!(ok.status_code, 200, "{:?}", ok.reason_phrase);
    assert_eq!(ok.correlation_id, "cid-login");
    assert_eq!(ok.credential_id.as_deref(), Some(credential_id.as_str()));
    assert_eq!(ok.client_id.as_deref(), Some("gateway-1"));

    // Wrong password and unknown user get the same answer.
    let wrong = login(&stack.bus, Some("gw1"), Some("s3cret-pa56")).await;
    let unknown = login(&stack.bus, Some("gw2"), Some("s3cret-pa55")).await;
    for resp in [&wrong, &unknown] {
        assert_eq!(
            (resp.status_code, resp.reason_phrase.as_deref()),
            (401, Some("bad username or password"))
        );
        assert_eq!((&resp.credential_id, &resp.client_id), (&None, &None));
    }
    assert_eq!(login(&stack.bus, Some("gw1"), None).await.status_code, 401);
    assert_eq!(login(&stack.bus, None, None).await.status_code, 401);

    // The store holds an argon2id hash, not the password.
    let found = stack
        .cm_state
        .store()
        .password_credential("gw1")
        .await
        .unwrap()
        .unwrap();
    assert!(found.password_hash.starts_with("$argon2id$"));
    assert!(!found.password_hash.contains("s3cret"));
    stack.stop().await;
}

async fn deleting_a_credential_revokes_it_at_once(backend: Backend) {
    let stack = Stack::on(backend).await;
    let mut revoked = stack
        .bus
        .subscribe(&subject::ecap_credential_revoked("cm"), None)
        .await
        .unwrap();
    let created = create_client(&stack, json!({"clientId": "c", "username": "u", "password": "p"})).await;
    let credential_id = created.body["credentialId"].as_str().unwrap().to_owned();
    assert_eq!(login(&stack.bus, Some("u"), Some("p")).await.status_code, 200);

    let path = format!("/ccm/api/v1/clients/{credential_id}");
    assert_eq!(
        call(&stack.cm, "DELETE", &path, None, &[]).await.status,
        StatusCode::NO_CONTENT
    );
    let event: ClientCredentialRevokedEvent = next_event(&mut revoked).await;
    assert_eq!(event.credential_id, credential_id);
    assert_eq!(event.originator_replica_id, "cm");
    assert_eq!(login(&stack.bus, Some("u"), Some("p")).await.status_code, 401);
    assert_error(
        &call(&stack.cm, "GET", &path, None, &[]).await,
        StatusCode::NOT_FOUND,
        "not found",
    );
    assert_error(
        &call(&stack.cm, "DELETE", &path, None, &[]).await,
        StatusCode::NOT_FOUND,
        "not found",
    );
    assert_no_event(&mut revoked).await;
    stack.stop().await;
}

async fn certificates_by_issuer_and_serial_or_by_upload(backend: Backend) {
    let stack = Stack::on(backend).await;
    let typed = create_client(
        &stack,
        json!({"clientId": "meter-1", "issuer": "CN=Devices CA, O=Example", "serialNumber": "004660"}),
    )
    .await;
    assert_eq!(typed.status, StatusCode::CREATED, "{:?}", typed.body);
    assert_eq!(typed.body["kind"], "certificate");
    assert_eq!(typed.body["serialNumber"], "4660", "stored canonical");

    let ok = present_certificate(&stack.bus, "CN=Devices CA, O=Example", "4660").await;
    assert_eq!(ok.status_code, 200, "{:?}", ok.reason_phrase);
    assert_eq!(ok.client_id.as_deref(), Some("meter-1"));
    assert_eq!(
        ok.credential_id,
        typed.body["credentialId"].as_str().map(String::from)
    );
    assert_eq!(
        present_certificate(&stack.bus, "CN=Devices CA, O=Example", "04660")
            .await
            .status_code,
        200
    );
    let unregistered = present_certificate(&stack.bus, "CN=Devices CA, O=Example", "4661").await;
    assert_eq!((unregistered.status_code, unregistered.client_id), (404, None));
    assert_eq!(
        present_certificate(&stack.bus, "CN=Other CA", "4660")
            .await
            .status_code,
        404
    );
    assert_eq!(
        present_certificate(&stack.bus, "CN=Devices CA, O=Example", "0x1234")
            .await
            .status_code,
        400
    );

    // Upload: issuer and serial come from the certificate.
    let mut params = rcgen::CertificateParams::new(vec!["meter-2".to_owned()]).unwrap();
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x30, 0x39]));
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "Upload CA");
    params.distinguished_name = dn;
    let cert = params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap();
    let uploaded = create_client(&stack, json!({"clientId": "meter-2", "certificate": cert.pem()})).await;
    assert_eq!(uploaded.status, StatusCode::CREATED, "{:?}", uploaded.body);
    assert_eq!(uploaded.body["issuer"], "CN=Upload CA");
    assert_eq!(uploaded.body["serialNumber"], "12345");
    let ok = present_certificate(&stack.bus, "CN=Upload CA", "12345").await;
    assert_eq!(ok.client_id.as_deref(), Some("meter-2"));

    // The same certificate twice is a conflict.
    let again = create_client(&stack, json!({"clientId": "x", "certificate": cert.pem()})).await;
    assert_error(&again, StatusCode::CONFLICT, "already registered");
    stack.stop().await;
}

on_both_backends!(
    token_lifecycle_inactive_active_suspended_active_revoked,
    unknown_and_foreign_tokens_and_bad_requests,
    deleting_an_endpoint_deletes_and_revokes_its_tokens,
    username_and_password,
    deleting_a_credential_revokes_it_at_once,
    certificates_by_issuer_and_serial_or_by_upload,
);
