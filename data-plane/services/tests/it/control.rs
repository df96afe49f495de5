//! The device-control extensions on the in-process bus, with a fake gateway replica `kpc-0`: it
//! announces endpoints (9/ELCE `connected`), sends ClientData with its replica subject as replyTo,
//! and reads what arrives on that subject (answers and pushes).

use std::{collections::BTreeMap, time::Duration};

use axum::http::StatusCode;
use bytes::Bytes;
use kaa_bus::{Bus, Subscription};
use kaa_protocol::{
    avro::AvroRecord,
    elce::ConnectedEvent,
    esp::{ClientData, ExtensionData},
    subject,
};
use kaa_services::{bcx, cex, cmx};
use kaa_testkit::{DEADLINE, eventually};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::{APP_V1, Stack, call, json, register};

const REPLICA: &str = "kpc-0";

/// The fake gateway replica.
struct Gateway {
    bus: Bus,
    replies: Subscription,
}

impl Gateway {
    async fn start(bus: &Bus) -> Gateway {
        let replies = bus
            .subscribe(&subject::esp_extension_data_replica(REPLICA), None)
            .await
            .unwrap();
        Gateway {
            bus: bus.clone(),
            replies,
        }
    }

    async fn connected(&self, endpoint_id: &str) {
        let event = ConnectedEvent {
            endpoints: BTreeMap::from([(endpoint_id.to_owned(), APP_V1.to_owned())]),
            originator_replica_id: REPLICA.into(),
            ..Default::default()
        };
        self.bus
            .publish(&subject::elce_connected("kpc"), Bytes::from(event.to_avro()))
            .await
            .unwrap();
    }

    async fn send(
        &self,
        extension: &str,
        endpoint_id: &str,
        path: &str,
        request_id: Option<i32>,
        payload: &str,
    ) {
        let data = ClientData {
            correlation_id: format!("c-{path}"),
            app_version_name: APP_V1.into(),
            endpoint_id: Some(endpoint_id.into()),
            resource_path: path.into(),
            request_id,
            payload: payload.as_bytes().to_vec(),
            ..Default::default()
        };
        self.bus
            .publish_with_reply(
                &subject::esp_client_data(extension),
                &subject::esp_extension_data_replica(REPLICA),
                Bytes::from(data.to_avro()),
            )
            .await
            .unwrap();
    }

    async fn next(&mut self, within: Duration) -> Option<ExtensionData> {
        let msg = tokio::time::timeout(within, self.replies.next()).await.ok()??;
        Some(ExtensionData::from_avro(&msg.payload).unwrap())
    }

    async fn expect(&mut self) -> (ExtensionData, Value) {
        let data = self.next(DEADLINE).await.expect("an ExtensionData");
        let body = data
            .payload
            .as_deref()
            .filter(|p| !p.is_empty())
            .map_or(Value::Null, |p| serde_json::from_slice(p).unwrap());
        (data, body)
    }
}

#[tokio::test]
async fn cex_pushes_to_a_connected_endpoint_and_returns_its_result() {
    let stack = Stack::start_with(true, true).await;
    let endpoint_id = register(&stack.epr, APP_V1, None).await;
    let state = cex::CexState::new(stack.store.clone(), stack.bus.clone(), cex::Config::default()).unwrap();
    let mut gateway = Gateway::start(&stack.bus).await;
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(cex::serve(state.clone(), shutdown.clone()));
    let app = cex::router(state.clone());
    eventually(DEADLINE, "CEX to follow the gateway", || {
        let (gateway, state, endpoint_id) = (&gateway, &state, &endpoint_id);
        async move {
            gateway.connected(endpoint_id).await;
            state.presence().get(endpoint_id).map(|_| ())
        }
    })
    .await;

    let uri = format!("/cex/api/v1/endpoints/{endpoint_id}/commands/reboot?awaitTimeout=5");
    let invocation = tokio::spawn(async move { json(&app, "POST", &uri, &json!({"delay": 1})).await });
    let (push, body) = gateway.expect().await;
    assert_eq!(
        (push.resource_path.as_str(), push.request_id),
        ("/command/reboot", None)
    );
    assert_eq!(body, json!([{"id": 1, "payload": {"delay": 1}}]));

    gateway
        .send(
            "cex",
            &endpoint_id,
            "/result/reboot",
            None,
            r#"[{"id":1,"statusCode":200,"payload":"ok"}]"#,
        )
        .await;
    let (answer, _) = gateway.expect().await;
    assert_eq!(answer.status_code, 200);
    let reply = invocation.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["result"]["payload"], "ok");

    // A pull lists outstanding commands only; unknown types and paths are refused.
    gateway
        .send("cex", &endpoint_id, "/command/reboot", Some(3), "")
        .await;
    let (pulled, body) = gateway.expect().await;
    assert_eq!((pulled.request_id, body), (Some(3), json!([])));
    gateway
        .send("cex", &endpoint_id, "/command/re.boot", Some(4), "")
        .await;
    assert_eq!(gateway.expect().await.0.status_code, 400);
    gateway.send("cex", &endpoint_id, "/commands", Some(5), "").await;
    assert_eq!(gateway.expect().await.0.status_code, 404);

    let unknown = "00000000-0000-4000-8000-000000000000";
    let reply = call(
        &cex::router(state),
        "POST",
        &format!("/cex/api/v1/endpoints/{unknown}/commands/reboot"),
        None,
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
    shutdown.cancel();
    serving.await.unwrap().unwrap();
    stack.stop().await;
}

#[tokio::test]
async fn cmx_offers_a_configuration_on_connect_until_the_endpoint_applied_it() {
    let stack = Stack::start_with(false, false).await;
    let state = cmx::CmxState::new(stack.store.clone(), stack.bus.clone(), cmx::Config::default()).unwrap();
    let mut gateway = Gateway::start(&stack.bus).await;
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(cmx::serve(state.clone(), shutdown.clone()));
    let app = cmx::router(vec![state.clone()]);
    let reply = json(
        &app,
        "PUT",
        &format!("/ecr/api/v1/app-versions/{APP_V1}"),
        &json!({"rate": 1}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let config_id = reply.body["configId"].clone();

    // Connecting gets the configuration pushed, without request id.
    eventually(DEADLINE, "CMX to follow the gateway", || {
        let (gateway, state) = (&gateway, &state);
        async move {
            gateway.connected("e1").await;
            state.presence().get("e1").map(|_| ())
        }
    })
    .await;
    let (push, body) = gateway.expect().await;
    assert_eq!(
        (push.resource_path.as_str(), push.request_id),
        ("/config/json", None)
    );
    assert_eq!(body, json!({"configId": config_id, "config": {"rate": 1}}));
    while gateway.next(Duration::from_millis(100)).await.is_some() {} // repeated connects

    gateway
        .send(
            "cmx",
            "e1",
            "/applied/json",
            None,
            &json!({"configId": config_id, "statusCode": null}).to_string(),
        )
        .await;
    assert_eq!(gateway.expect().await.0.status_code, 200);
    gateway.connected("e1").await;
    assert!(
        gateway.next(Duration::from_millis(300)).await.is_none(),
        "applied: not pushed again"
    );

    // A changed default reaches the online endpoint at once.
    json(
        &app,
        "PUT",
        &format!("/ecr/api/v1/app-versions/{APP_V1}"),
        &json!({"rate": 2}),
    )
    .await;
    let (_, body) = gateway.expect().await;
    assert_eq!(body["config"], json!({"rate": 2}));
    shutdown.cancel();
    serving.await.unwrap().unwrap();
    stack.stop().await;
}

#[tokio::test]
async fn bcx_answers_token_requests_without_request_id_and_takes_uploads() {
    let stack = Stack::start_with(false, false).await;
    let state = bcx::BcxState::new(stack.store.clone(), stack.bus.clone(), bcx::Config::default()).unwrap();
    let mut gateway = Gateway::start(&stack.bus).await;
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(bcx::serve(state.clone(), shutdown.clone()));
    // The subscription is made by the spawned task: ask until it answers (bounded).
    let mut answer = None;
    for _ in 0..100 {
        gateway.send("bcx", "e1", "/token", None, "").await;
        answer = gateway.next(Duration::from_millis(100)).await;
        if answer.is_some() {
            break;
        }
    }
    let answer = answer.expect("BCX answers /token");
    let body: Value = serde_json::from_slice(answer.payload.as_deref().unwrap()).unwrap();
    assert_eq!((answer.status_code, answer.request_id), (200, None));
    let token = body["token"].as_str().unwrap();
    let app = bcx::router(state);
    let reply = call(
        &app,
        "POST",
        "/bcx/api/v1/binary-data?name=a.bin",
        Some(("application/octet-stream", "abc")),
        &[("x-auth-token", token)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["endpointId"], "e1");
    let reply = call(
        &app,
        "POST",
        "/bcx/api/v1/binary-data",
        Some(("text/plain", "abc")),
        &[("x-auth-token", token)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "a name is needed");
    let reply = call(
        &app,
        "POST",
        "/bcx/api/v1/binary-data?name=a",
        Some(("text/plain", "abc")),
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    shutdown.cancel();
    serving.await.unwrap().unwrap();
    stack.stop().await;
}

#[tokio::test]
async fn an_endpoint_moved_to_another_version_gets_that_versions_configuration() {
    use crate::support::APP_V2;
    use kaa_protocol::elce::AppVersionUpdatedEvent;

    let stack = Stack::start_with(false, false).await;
    let state = cmx::CmxState::new(stack.store.clone(), stack.bus.clone(), cmx::Config::default()).unwrap();
    let mut gateway = Gateway::start(&stack.bus).await;
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(cmx::serve(state.clone(), shutdown.clone()));
    let app = cmx::router(vec![state.clone()]);
    for (version, rate) in [(APP_V1, 1), (APP_V2, 2)] {
        let path = format!("/ecr/api/v1/app-versions/{version}");
        let reply = json(&app, "PUT", &path, &json!({ "rate": rate })).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    eventually(DEADLINE, "CMX to follow the gateway", || {
        let (gateway, state) = (&gateway, &state);
        async move {
            gateway.connected("e1").await;
            state.presence().get("e1").map(|_| ())
        }
    })
    .await;
    let (push, body) = gateway.expect().await;
    assert_eq!(push.app_version_name.as_deref(), Some(APP_V1));
    assert_eq!(body["config"], json!({"rate": 1}));
    while gateway.next(Duration::from_millis(100)).await.is_some() {} // repeated connects

    let moved = AppVersionUpdatedEvent {
        app_version_name: APP_V2.into(),
        previous_app_version_name: APP_V1.into(),
        endpoint_id: "e1".into(),
        originator_replica_id: "epr-0".into(),
        ..Default::default()
    };
    stack
        .bus
        .publish(
            &subject::elce_app_version_updated("epr"),
            Bytes::from(moved.to_avro()),
        )
        .await
        .unwrap();
    let (push, body) = gateway.expect().await;
    assert_eq!(
        (push.app_version_name.as_deref(), push.resource_path.as_str()),
        (Some(APP_V2), "/config/json"),
        "pushed on the new version's topic"
    );
    assert_eq!(body["config"], json!({"rate": 2}));
    shutdown.cancel();
    serving.await.unwrap().unwrap();
    stack.stop().await;
}
