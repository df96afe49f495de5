//! EPR + EPMX (+ CM) over the in-process bus, driven the way the gateway drives them: 4/ESP
//! ClientData requests on `kaa.v1.service.epmx.esp.ClientData` and 16/ECAP token requests to CM.
//! The flows that resolve tokens run with CM on both storage backends.

use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use kaa_bus::{Bus, BusError};
use kaa_protocol::{
    avro::AvroRecord,
    ecap::{EndpointTokenValidationRequest, EndpointTokenValidationResponse},
    epmmp::{EndpointMetadataGetRequest, EndpointMetadataGetResponse},
    esp::{ClientData, ExtensionData},
    now_millis, subject,
};
use kaa_services::epmx;
use kaa_testkit::eventually;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::*;

const READY: Duration = Duration::from_secs(10);

/// EPR (bus + REST on one store), CM and EPMX on one in-process bus.
struct Platform {
    bus: Bus,
    rest: axum::Router,
    stack: Stack,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Platform {
    async fn start() -> Platform {
        Self::on(Backend::Sql).await
    }

    /// With CM on `backend`.
    async fn on(backend: Backend) -> Platform {
        Self::start_on(
            backend,
            true,
            epmx::Config {
                request_timeout_ms: 2_000,
                ..Default::default()
            },
        )
        .await
    }

    async fn start_with(with_epr: bool, epmx_config: epmx::Config) -> Platform {
        Self::start_on(Backend::Sql, with_epr, epmx_config).await
    }

    async fn start_on(backend: Backend, with_epr: bool, epmx_config: epmx::Config) -> Platform {
        let stack = Stack::start_on(backend, with_epr, true).await;
        let bus = stack.bus.clone();
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        let (b, s) = (bus.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            epmx::serve(b, epmx_config, s).await.unwrap()
        }));
        let platform = Platform {
            bus,
            rest: stack.epr.clone(),
            stack,
            shutdown,
            tasks,
        };
        // Ready when a request for an unknown endpoint makes the full trip: EPMX -> EPR -> 404.
        let expected = if with_epr { 404 } else { 503 };
        eventually(READY, "EPMX (and EPR) to answer", || async {
            match platform
                .try_epmp(
                    &client_data("ghost", "/get/keys", b""),
                    Duration::from_millis(500),
                )
                .await
            {
                Ok(reply) if reply.status_code == expected => Some(()),
                _ => None,
            }
        })
        .await;
        platform
    }

    async fn try_epmp(&self, data: &ClientData, timeout: Duration) -> Result<ExtensionData, BusError> {
        let reply = self
            .bus
            .request(
                &subject::esp_client_data("epmx"),
                Bytes::from(data.to_avro()),
                timeout,
            )
            .await?;
        Ok(ExtensionData::from_avro(&reply.payload).unwrap())
    }

    async fn epmp(&self, endpoint_id: &str, path: &str, payload: &str) -> ExtensionData {
        self.try_epmp(
            &client_data(endpoint_id, path, payload.as_bytes()),
            Duration::from_secs(5),
        )
        .await
        .unwrap()
    }

    async fn token(&self, app_name: &str, token: &str) -> EndpointTokenValidationResponse {
        let req = EndpointTokenValidationRequest {
            correlation_id: "cid-token".into(),
            timestamp: now_millis(),
            timeout: 5_000,
            app_name: app_name.into(),
            token: token.into(),
        };
        let reply = self
            .bus
            .request(
                &subject::ecap_token_request("cm"),
                Bytes::from(req.to_avro()),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        let resp = EndpointTokenValidationResponse::from_avro(&reply.payload).unwrap();
        assert_eq!(resp.correlation_id, "cid-token");
        resp
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("service stops on shutdown")
                .unwrap();
        }
        self.stack.stop().await;
    }
}

fn client_data(endpoint_id: &str, path: &str, payload: &[u8]) -> ClientData {
    ClientData {
        correlation_id: format!("cid-{path}"),
        timestamp: now_millis(),
        timeout: 5_000,
        app_version_name: APP_V1.into(),
        endpoint_id: Some(endpoint_id.into()),
        resource_path: path.into(),
        request_id: Some(42),
        payload: payload.to_vec(),
        config_name: None,
    }
}

fn payload_json(reply: &ExtensionData) -> Value {
    serde_json::from_slice(reply.payload.as_deref().expect("a payload")).unwrap()
}

#[track_caller]
fn assert_ok(reply: &ExtensionData) {
    assert_eq!(reply.status_code, 200, "{:?}", reply.reason_phrase);
    assert_eq!(reply.reason_phrase, None);
}

#[track_caller]
fn assert_failed(reply: &ExtensionData, status: i32, reason_contains: &str) {
    assert_eq!(reply.status_code, status, "{:?}", reply.reason_phrase);
    let reason = reply.reason_phrase.as_deref().unwrap_or_default();
    assert!(
        reason.contains(reason_contains),
        "reason {reason:?} lacks {reason_contains:?}"
    );
}

async fn tutorial_flow_register_update_keys_get(backend: Backend) {
    let p = Platform::on(backend).await;
    register(&p.rest, APP_V1, Some("MY_TOKEN")).await;

    // The gateway resolves the token through 16/ECAP first.
    let resolved = p.token(APP, "MY_TOKEN").await;
    assert_eq!(resolved.status_code, 200, "{:?}", resolved.reason_phrase);
    let endpoint_id = resolved.endpoint_id.unwrap();
    assert!(resolved.token_id.is_some());

    let update = p
        .epmp(
            &endpoint_id,
            "/update/keys",
            r#"{"model":"MySmartMeter A300","mac":"00-14-22-01-23-45"}"#,
        )
        .await;
    assert_ok(&update);
    // Everything the gateway needs to route the reply is echoed.
    assert_eq!(update.correlation_id, "cid-/update/keys");
    assert_eq!(update.app_version_name.as_deref(), Some(APP_V1));
    assert_eq!(update.extension_instance_name.as_deref(), Some("epmx"));
    assert_eq!(update.endpoint_id.as_deref(), Some(endpoint_id.as_str()));
    assert_eq!(update.resource_path, "/update/keys");
    assert_eq!(update.request_id, Some(42));
    assert!(update.timestamp > 0);

    let expected = json!({"model": "MySmartMeter A300", "mac": "00-14-22-01-23-45"});
    let get = p.epmp(&endpoint_id, "/get", "").await;
    assert_ok(&get);
    assert_eq!(payload_json(&get), expected);

    let some = p
        .epmp(&endpoint_id, "/get", r#"{"keys":["model","absent"]}"#)
        .await;
    assert_eq!(payload_json(&some), json!({"model": "MySmartMeter A300"}));
    let none = p.epmp(&endpoint_id, "/get", r#"{"keys":[]}"#).await;
    assert_eq!(payload_json(&none), json!({}));
    let keys = p.epmp(&endpoint_id, "/get/keys", "").await;
    assert_eq!(payload_json(&keys), json!(["mac", "model"]));

    // The application developer sees the same metadata over REST.
    let rest = call(
        &p.rest,
        "GET",
        &format!("/epr/api/v1/endpoints/{endpoint_id}/metadata"),
        None,
        &[],
    )
    .await;
    assert_eq!((rest.status, rest.body), (StatusCode::OK, expected));

    // A partial update keeps the other keys.
    assert_ok(
        &p.epmp(&endpoint_id, "/update/keys", r#"{"model":"A301","fw":{"v":2}}"#)
            .await,
    );
    let get = p.epmp(&endpoint_id, "/get", "").await;
    assert_eq!(
        payload_json(&get),
        json!({"model": "A301", "mac": "00-14-22-01-23-45", "fw": {"v": 2}})
    );
    p.stop().await;
}

#[tokio::test]
async fn full_update_and_delete_keys() {
    let p = Platform::start().await;
    let id = register(&p.rest, APP_V1, None).await;
    assert_ok(&p.epmp(&id, "/update/keys", r#"{"a":1,"b":2,"c":3}"#).await);

    let update = p.epmp(&id, "/update", r#"{"b":20,"d":4}"#).await;
    assert_ok(&update);
    assert_eq!(update.payload, None, "update answers with an empty payload");
    assert_eq!(
        payload_json(&p.epmp(&id, "/get", "").await),
        json!({"b": 20, "d": 4})
    );

    // Deleting an absent key is fine: the end state is what was asked for.
    assert_ok(&p.epmp(&id, "/delete/keys", r#"["b","ghost"]"#).await);
    assert_eq!(payload_json(&p.epmp(&id, "/get", "").await), json!({"d": 4}));
    assert_ok(&p.epmp(&id, "/delete/keys", r#"["ghost"]"#).await);

    // REST sees every write as a new version.
    let rest = call(
        &p.rest,
        "GET",
        &format!("/epr/api/v1/endpoints/{id}/metadata"),
        None,
        &[],
    )
    .await;
    assert_eq!(rest.headers["etag"], "\"4\"");
    p.stop().await;
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let p = Platform::start().await;
    let id = register(&p.rest, APP_V1, None).await;

    let invalid = p.epmp(&id, "/update/keys", "{\"model\":").await;
    assert_failed(&invalid, 400, "not valid JSON");
    assert_eq!(invalid.payload, None);
    assert_eq!(invalid.request_id, Some(42), "errors are routed like successes");
    assert_eq!(invalid.resource_path, "/update/keys");

    assert_failed(
        &p.epmp(&id, "/update/keys", r#"{"bad-key":1}"#).await,
        400,
        "\"bad-key\"",
    );
    assert_failed(
        &p.epmp(&id, "/update", r#"{"a b":1}"#).await,
        400,
        "^[a-zA-Z0-9_]+$",
    );
    assert_failed(
        &p.epmp(&id, "/update/keys", "{}").await,
        400,
        "at least one property",
    );
    assert_failed(&p.epmp(&id, "/update", "[]").await, 400, "JSON object");
    assert_failed(&p.epmp(&id, "/delete/keys", "[]").await, 400, "at least 1");
    assert_failed(&p.epmp(&id, "/delete/keys", r#"["a","a"]"#).await, 400, "twice");
    assert_failed(&p.epmp(&id, "/get", r#"{"keys":["x-y"]}"#).await, 400, "x-y");
    assert_failed(
        &p.epmp(&id, "/get", r#"{"key":["x"]}"#).await,
        400,
        "unexpected property",
    );
    assert_failed(
        &p.epmp(&id, "/metadata", "").await,
        404,
        "unknown 10/EPMP resource path",
    );
    assert_failed(&p.epmp(&id, "/get/keys/extra", "").await, 404, "/get/keys/extra");

    let ghost = "7f2c1a34-0000-4000-8000-000000000000";
    assert_failed(&p.epmp(ghost, "/get", "").await, 404, ghost);
    assert_failed(&p.epmp(ghost, "/get/keys", "").await, 404, "not found");
    assert_failed(
        &p.epmp(ghost, "/update/keys", r#"{"a":1}"#).await,
        404,
        "not found",
    );
    assert_failed(&p.epmp(ghost, "/update", r#"{"a":1}"#).await, 404, "not found");
    assert_failed(&p.epmp(ghost, "/delete/keys", r#"["a"]"#).await, 404, "not found");

    let mut unaware = client_data(&id, "/get", b"");
    unaware.endpoint_id = None;
    let reply = p.try_epmp(&unaware, Duration::from_secs(5)).await.unwrap();
    assert_failed(&reply, 400, "endpoint");

    // Nothing above changed the metadata.
    assert_eq!(payload_json(&p.epmp(&id, "/get", "").await), json!({}));
    p.stop().await;
}

async fn ecap_token_validation(backend: Backend) {
    let p = Platform::on(backend).await;
    let id = register(&p.rest, APP_V2, Some("tok-a")).await;

    let ok = p.token(APP, "tok-a").await;
    assert_eq!(
        (ok.status_code, ok.endpoint_id.as_deref()),
        (200, Some(id.as_str()))
    );
    let again = p.token(APP, "tok-a").await;
    assert_eq!(again.token_id, ok.token_id, "a token keeps its id");

    let other_app = p.token(OTHER_APP, "tok-a").await;
    assert_eq!(
        (other_app.status_code, other_app.endpoint_id, other_app.token_id),
        (404, None, None)
    );
    let unknown = p.token(APP, "nope").await;
    assert_eq!(unknown.status_code, 404);
    assert!(unknown.reason_phrase.unwrap().contains("unknown endpoint token"));

    // Garbage on the subject is answered, not crashed on.
    let reply = p
        .bus
        .request(
            &subject::ecap_token_request("cm"),
            Bytes::from_static(&[0xff, 0xff]),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(
        EndpointTokenValidationResponse::from_avro(&reply.payload)
            .unwrap()
            .status_code,
        400
    );
    p.stop().await;
}

#[tokio::test]
async fn epmmp_get_reports_etag_and_app_version() {
    let p = Platform::start().await;
    let id = register(&p.rest, APP_V1, None).await;
    assert_ok(&p.epmp(&id, "/update/keys", r#"{"a":1,"b":2}"#).await);
    let req = EndpointMetadataGetRequest {
        correlation_id: "c1".into(),
        timestamp: now_millis(),
        endpoint_id: id.clone(),
        include: vec!["b".into()],
        ..Default::default()
    };
    let subject = subject::epmmp_request("epr", "ep-metadata-get-request");
    let reply = p
        .bus
        .request(&subject, Bytes::from(req.to_avro()), Duration::from_secs(5))
        .await
        .unwrap();
    let resp = EndpointMetadataGetResponse::from_avro(&reply.payload).unwrap();
    assert_eq!(resp.status_code, 200);
    assert_eq!(resp.correlation_id, "c1");
    assert_eq!(resp.e_tag.as_deref(), Some("2"));
    assert_eq!(resp.app_version_name.as_deref(), Some(APP_V1));
    assert_eq!(
        serde_json::from_slice::<Value>(&resp.payload.unwrap()).unwrap(),
        json!({"b": 2})
    );

    let no_body = EndpointMetadataGetRequest {
        include_metadata: false,
        ..req
    };
    let reply = p
        .bus
        .request(&subject, Bytes::from(no_body.to_avro()), Duration::from_secs(5))
        .await
        .unwrap();
    let resp = EndpointMetadataGetResponse::from_avro(&reply.payload).unwrap();
    assert_eq!((resp.status_code, resp.payload), (200, None));
    p.stop().await;
}

#[tokio::test]
async fn epr_missing_is_503() {
    let p = Platform::start_with(
        false,
        epmx::Config {
            request_timeout_ms: 500,
            ..Default::default()
        },
    )
    .await;
    assert_failed(&p.epmp("any", "/get", "").await, 503, "not available");
    p.stop().await;
}

#[tokio::test]
async fn silent_epr_is_504_and_does_not_block_other_requests() {
    let p = Platform::start_with(
        false,
        epmx::Config {
            request_timeout_ms: 1_000,
            ..Default::default()
        },
    )
    .await;
    // A stand-in EPR that answers metadata gets at once and never answers keys requests.
    let mut gets = p
        .bus
        .subscribe(
            &subject::epmmp_request("epr", "ep-metadata-get-request"),
            Some("epr"),
        )
        .await
        .unwrap();
    let mut silent = p
        .bus
        .subscribe(
            &subject::epmmp_request("epr", "ep-metadata-keys-get-request"),
            Some("epr"),
        )
        .await
        .unwrap();
    let bus = p.bus.clone();
    let fake = tokio::spawn(async move {
        while let Some(msg) = gets.next().await {
            let req = EndpointMetadataGetRequest::from_avro(&msg.payload).unwrap();
            let resp = EndpointMetadataGetResponse {
                correlation_id: req.correlation_id,
                endpoint_id: req.endpoint_id,
                status_code: 200,
                payload: Some(b"{\"k\":1}".to_vec()),
                ..Default::default()
            };
            bus.publish(msg.reply_to.as_deref().unwrap(), Bytes::from(resp.to_avro()))
                .await
                .unwrap();
        }
    });

    let slow = {
        let bus = p.bus.clone();
        let data = client_data("ep", "/get/keys", b"");
        tokio::spawn(async move {
            let subject = subject::esp_client_data("epmx");
            let reply = bus
                .request(&subject, Bytes::from(data.to_avro()), Duration::from_secs(5))
                .await;
            ExtensionData::from_avro(&reply.unwrap().payload).unwrap()
        })
    };
    // EPMX has forwarded the slow request and is waiting on it before the fast one is sent.
    tokio::time::timeout(Duration::from_secs(5), silent.next())
        .await
        .unwrap()
        .unwrap();
    let fast = p.epmp("ep", "/get", "").await;
    assert_ok(&fast);
    assert_eq!(payload_json(&fast), json!({"k": 1}));
    assert!(
        !slow.is_finished(),
        "the fast request was not queued behind the slow one"
    );
    assert_failed(&slow.await.unwrap(), 504, "did not answer within 1000 ms");
    fake.abort();
    p.stop().await;
}

on_both_backends!(tutorial_flow_register_update_keys_get, ecap_token_validation);
