//! CM on Kubernetes Secrets, against the fake API server: what the SQL backend has no counterpart
//! for. Changes "by kubectl" go through kube's `Api<Secret>` with a client of their own.

use std::{collections::BTreeMap, time::Duration};

use argon2::{
    Algorithm, Argon2, Params, PasswordHasher, Version,
    password_hash::{SaltString, rand_core::OsRng},
};
use axum::http::StatusCode;
use base64::{Engine, engine::general_purpose::STANDARD};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kaa_bus::Bus;
use kaa_protocol::{
    ecap::{ClientCredentialRevokedEvent, EndpointTokenRevokedEvent},
    subject,
};
use kaa_services::cm::{
    self, CmState,
    kubernetes::{
        SecretStore, SecretStoreError,
        layout::{CLIENT_CREDENTIAL, CM_LABEL, ENDPOINT_TOKENS, KIND_LABEL},
    },
};
use kaa_store::{NewToken, TokenStatus, token_hash};
use kaa_testkit::{FakeApiServer, ObjectKey};
use kube::{
    Api,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    cm::{assert_no_event, create_client, login, next_event, present_certificate, validate_token},
    support::*,
};

/// A Secret as the fake API server stores it.
fn stored_secret(api: &FakeApiServer, name: &str) -> Option<Value> {
    api.object(&ObjectKey::core("secrets", NAMESPACE, name))
}

/// A data value of a stored Secret, decoded.
fn data(secret: &Value, key: &str) -> String {
    let encoded = secret["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no data key {key}"));
    String::from_utf8(STANDARD.decode(encoded).unwrap()).unwrap()
}

/// The Secrets of CM instance `cm`, by name.
fn cm_secrets(api: &FakeApiServer) -> BTreeMap<String, Value> {
    api.objects("", "v1", "secrets", Some(NAMESPACE))
        .into_iter()
        .filter(|s| s["metadata"]["labels"][CM_LABEL] == "cm")
        .map(|s| (s["metadata"]["name"].as_str().unwrap().to_owned(), s))
        .collect()
}

/// What `kubectl` would use.
fn kubectl(api: &FakeApiServer) -> Api<Secret> {
    Api::namespaced(api.client(), NAMESPACE)
}

fn kube_stack(stack: &Stack) -> &FakeApiServer {
    stack.kube.as_ref().expect("a Kubernetes-backed stack")
}

#[tokio::test]
async fn the_secret_layout_is_as_documented() {
    let stack = Stack::on(Backend::Kubernetes).await;
    let api = kube_stack(&stack);
    let endpoint_id = register(&stack.epr, APP_V1, Some("tok-VALUE-1")).await;
    let password = create_client(
        &stack,
        json!({"clientId": "gw-1", "username": "gw", "password": "pw-VALUE-2"}),
    )
    .await;
    let password_id = password.body["credentialId"].as_str().unwrap().to_owned();
    let certificate = create_client(
        &stack,
        json!({"clientId": "meter-1", "issuer": "CN=Devices CA", "serialNumber": "0042"}),
    )
    .await;
    let certificate_id = certificate.body["credentialId"].as_str().unwrap().to_owned();

    let secrets = cm_secrets(api);
    let endpoint_name = format!("kaa-cm-cm-ep-{endpoint_id}");
    assert_eq!(secrets.keys().cloned().collect::<Vec<_>>(), {
        let mut names = vec![
            endpoint_name.clone(),
            format!("kaa-ccm-cm-{password_id}"),
            format!("kaa-ccm-cm-{certificate_id}"),
        ];
        names.sort();
        names
    });

    let endpoint = &secrets[&endpoint_name];
    assert_eq!(endpoint["type"], "kaa-rs.dev/endpoint-tokens");
    assert_eq!(
        endpoint["metadata"]["labels"],
        json!({"app.kubernetes.io/managed-by": "kaa-rs", "kaa-rs.dev/cm": "cm",
               "kaa-rs.dev/kind": "endpoint-tokens"})
    );
    assert_eq!(
        endpoint["metadata"]["annotations"]["kaa-rs.dev/endpoint-id"],
        endpoint_id.as_str()
    );
    let token_id = stack
        .cm_state
        .store()
        .endpoint_tokens(&endpoint_id)
        .await
        .unwrap()[0]
        .id
        .clone();
    let record: Value = serde_json::from_str(&data(endpoint, &token_id)).unwrap();
    assert_eq!(record["sha256"], token_hash("tok-VALUE-1"));
    assert_eq!(
        (&record["appName"], &record["appVersion"], &record["status"]),
        (&json!(APP), &json!(APP_V1), &json!("Inactive"))
    );
    assert!(record["createdAt"].as_i64().unwrap() > 0);

    let password = &secrets[&format!("kaa-ccm-cm-{password_id}")];
    assert_eq!(password["type"], "kaa-rs.dev/client-credential");
    assert_eq!(password["metadata"]["labels"][KIND_LABEL], CLIENT_CREDENTIAL);
    assert_eq!(data(password, "clientId"), "gw-1");
    assert_eq!(data(password, "username"), "gw");
    assert_eq!(data(password, "status"), "Active");
    assert!(data(password, "passwordHash").starts_with("$argon2id$"));
    let certificate = &secrets[&format!("kaa-ccm-cm-{certificate_id}")];
    assert_eq!(data(certificate, "issuer"), "CN=Devices CA");
    assert_eq!(data(certificate, "serial"), "42");
    assert!(certificate["data"].get("passwordHash").is_none());

    // No value in clear anywhere, not even base64-encoded.
    let everything: String = secrets
        .values()
        .flat_map(|s| s["data"].as_object().unwrap().values())
        .map(|v| String::from_utf8_lossy(&STANDARD.decode(v.as_str().unwrap()).unwrap()).into_owned())
        .collect();
    assert!(!everything.contains("VALUE"), "{everything}");
    stack.stop().await;
}

#[tokio::test]
async fn secrets_deleted_through_the_api_revoke_at_once() {
    let stack = Stack::on(Backend::Kubernetes).await;
    let api = kube_stack(&stack);
    let mut tokens_revoked = stack
        .bus
        .subscribe(&subject::ecap_token_revoked("cm"), None)
        .await
        .unwrap();
    let mut credentials_revoked = stack
        .bus
        .subscribe(&subject::ecap_credential_revoked("cm"), None)
        .await
        .unwrap();
    let endpoint_id = register(&stack.epr, APP_V1, Some("meter-token")).await;
    let valid = validate_token(&stack.bus, APP, "meter-token").await;
    assert_eq!(valid.status_code, 200);
    let created = create_client(
        &stack,
        json!({"clientId": "gw", "username": "u", "password": "p"}),
    )
    .await;
    let credential_id = created.body["credentialId"].as_str().unwrap().to_owned();
    assert_eq!(login(&stack.bus, Some("u"), Some("p")).await.status_code, 200);

    // `kubectl delete secret kaa-cm-cm-ep-<id>`: the gateways hear of it, validation fails.
    kubectl(api)
        .delete(&format!("kaa-cm-cm-ep-{endpoint_id}"), &DeleteParams::default())
        .await
        .unwrap();
    let event: EndpointTokenRevokedEvent = next_event(&mut tokens_revoked).await;
    assert_eq!(
        (event.app_name.as_str(), event.endpoint_id.as_str()),
        (APP, endpoint_id.as_str())
    );
    assert_eq!(event.token_ids, [valid.token_id.unwrap()]);
    let refused = validate_token(&stack.bus, APP, "meter-token").await;
    assert_eq!(refused.status_code, 404, "{:?}", refused.reason_phrase);

    // `kubectl delete secret kaa-ccm-cm-<id>`.
    kubectl(api)
        .delete(&format!("kaa-ccm-cm-{credential_id}"), &DeleteParams::default())
        .await
        .unwrap();
    let event: ClientCredentialRevokedEvent = next_event(&mut credentials_revoked).await;
    assert_eq!(event.credential_id, credential_id);
    assert_eq!(login(&stack.bus, Some("u"), Some("p")).await.status_code, 401);
    let gone = call(
        &stack.cm,
        "GET",
        &format!("/ccm/api/v1/clients/{credential_id}"),
        None,
        &[],
    )
    .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_no_event(&mut tokens_revoked).await;
    assert_no_event(&mut credentials_revoked).await;
    stack.stop().await;
}

#[tokio::test]
async fn secrets_edited_through_the_api_suspend_and_revoke() {
    let stack = Stack::on(Backend::Kubernetes).await;
    let api = kube_stack(&stack);
    let mut tokens_revoked = stack
        .bus
        .subscribe(&subject::ecap_token_revoked("cm"), None)
        .await
        .unwrap();
    let mut credentials_revoked = stack
        .bus
        .subscribe(&subject::ecap_credential_revoked("cm"), None)
        .await
        .unwrap();
    let endpoint_id = register(&stack.epr, APP_V1, Some("meter-token")).await;
    let token_id = validate_token(&stack.bus, APP, "meter-token")
        .await
        .token_id
        .unwrap();
    let name = format!("kaa-cm-cm-ep-{endpoint_id}");
    let set_status = |status: &str| {
        let mut record: Value =
            serde_json::from_str(&data(&stored_secret(api, &name).unwrap(), &token_id)).unwrap();
        record["status"] = status.into();
        json!({"data": {token_id.clone(): STANDARD.encode(record.to_string())}})
    };

    // `kubectl edit`: Suspended.
    kubectl(api)
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(set_status("Suspended")),
        )
        .await
        .unwrap();
    let event: EndpointTokenRevokedEvent = next_event(&mut tokens_revoked).await;
    assert_eq!(event.token_ids, [token_id.as_str()]);
    let refused = validate_token(&stack.bus, APP, "meter-token").await;
    assert_eq!(
        (refused.status_code, refused.reason_phrase.as_deref()),
        (403, Some("token suspended"))
    );
    // Back to Active: no announcement, usable again.
    kubectl(api)
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(set_status("Active")),
        )
        .await
        .unwrap();
    cm_eventually_validates(&stack.bus, "meter-token", 200).await;
    assert_no_event(&mut tokens_revoked).await;
    // An entry that no longer parses authenticates nothing, and is announced.
    kubectl(api)
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {token_id.clone(): STANDARD.encode("garbage")}})),
        )
        .await
        .unwrap();
    let event: EndpointTokenRevokedEvent = next_event(&mut tokens_revoked).await;
    assert_eq!(event.token_ids, [token_id.as_str()]);
    assert_eq!(
        validate_token(&stack.bus, APP, "meter-token").await.status_code,
        404
    );

    // A credential set to Revoked by hand.
    let created = create_client(
        &stack,
        json!({"clientId": "gw", "username": "u", "password": "p"}),
    )
    .await;
    let credential_id = created.body["credentialId"].as_str().unwrap().to_owned();
    kubectl(api)
        .patch(
            &format!("kaa-ccm-cm-{credential_id}"),
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"status": STANDARD.encode("Revoked")}})),
        )
        .await
        .unwrap();
    let event: ClientCredentialRevokedEvent = next_event(&mut credentials_revoked).await;
    assert_eq!(event.credential_id, credential_id);
    let refused = login(&stack.bus, Some("u"), Some("p")).await;
    assert_eq!(
        (refused.status_code, refused.reason_phrase.as_deref()),
        (403, Some("credential revoked"))
    );
    stack.stop().await;
}

/// Until a validation of `token` answers `status` (a change by someone else arrives through the
/// watch; there is no announcement to wait for when a token becomes usable again).
async fn cm_eventually_validates(bus: &Bus, token: &str, status: i32) {
    kaa_testkit::eventually(Duration::from_secs(5), "the validation to change", || async {
        (validate_token(bus, APP, token).await.status_code == status).then_some(())
    })
    .await;
}

/// CM (bus handlers and REST) on `api`'s Secrets, without EPR.
struct Cm {
    state: CmState,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Cm {
    async fn start(api: &FakeApiServer, bus: &Bus, replica: &str) -> Cm {
        let state = CmState::new(secret_store(api).await, bus.clone(), cm_config())
            .unwrap()
            .with_replica(replica);
        let shutdown = CancellationToken::new();
        let (s, stop) = (state.clone(), shutdown.clone());
        let task = tokio::spawn(async move { cm::serve(s, stop).await.unwrap() });
        Cm {
            state,
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
    }
}

fn secret(name: &str, kind: &str, annotations: &[(&str, &str)], data: &[(&str, String)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([
                (CM_LABEL.to_owned(), "cm".to_owned()),
                (KIND_LABEL.to_owned(), kind.to_owned()),
            ])),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.clone().into_bytes())))
                .collect(),
        ),
        ..Default::default()
    }
}

#[tokio::test]
async fn credentials_written_before_cm_starts_validate_at_once_without_api_calls() {
    // What the operator will do: write Secrets from the Blueprint before CM runs.
    let api = FakeApiServer::start().await;
    let endpoint_id = "7d0f7c3e-2a41-4d7e-9a55-0c8e3f1b2a6d";
    let record = json!({"sha256": token_hash("provisioned-token"), "appName": APP,
                        "appVersion": APP_V1, "status": "Active", "createdAt": 1});
    let hash = Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(64, 1, 1, None).unwrap(),
    )
    .hash_password(b"operator-pw", &SaltString::generate(&mut OsRng))
    .unwrap()
    .to_string();
    let pp = PostParams::default();
    for secret in [
        secret(
            &format!("kaa-cm-cm-ep-{endpoint_id}"),
            ENDPOINT_TOKENS,
            &[],
            &[("token-1", record.to_string())],
        ),
        secret(
            "kaa-ccm-cm-gateway-1",
            CLIENT_CREDENTIAL,
            &[],
            &[
                ("clientId", "gateway-1".into()),
                ("username", "gw".into()),
                ("passwordHash", hash),
            ],
        ),
        secret(
            "kaa-ccm-cm-meter-1",
            CLIENT_CREDENTIAL,
            &[],
            &[
                ("clientId", "meter-1".into()),
                ("issuer", "CN=Devices CA".into()),
                ("serial", "4660".into()),
            ],
        ),
    ] {
        kubectl(&api).create(&pp, &secret).await.unwrap();
    }

    let bus = Bus::in_process();
    let cm = Cm::start(&api, &bus, "cm-0").await;
    wait_for_cm(&bus).await;
    let calls_after_start = api.requests().len();

    // The very first answers are right: the initial list was loaded before serving.
    let token = validate_token(&bus, APP, "provisioned-token").await;
    assert_eq!(
        (
            token.status_code,
            token.endpoint_id.as_deref(),
            token.token_id.as_deref()
        ),
        (200, Some(endpoint_id), Some("token-1"))
    );
    let password = login(&bus, Some("gw"), Some("operator-pw")).await;
    assert_eq!(
        (
            password.status_code,
            password.client_id.as_deref(),
            password.credential_id.as_deref()
        ),
        (200, Some("gateway-1"), Some("gateway-1"))
    );
    let certificate = present_certificate(&bus, "CN=Devices CA", "4660").await;
    assert_eq!(
        (certificate.status_code, certificate.client_id.as_deref()),
        (200, Some("meter-1"))
    );
    assert_eq!(login(&bus, Some("gw"), Some("wrong")).await.status_code, 401);
    assert_eq!(validate_token(&bus, APP, "unknown").await.status_code, 404);
    // ...and none of them asked the API server.
    assert_eq!(
        api.requests()[calls_after_start..],
        [] as [String; 0],
        "validation must be a memory lookup"
    );
    cm.stop().await;
}

#[tokio::test]
async fn two_replicas_writing_one_secret_lose_nothing() {
    let api = FakeApiServer::start().await;
    let bus = Bus::in_process();
    let a = Cm::start(&api, &bus, "cm-a").await;
    let b = Cm::start(&api, &bus, "cm-b").await;
    let endpoint_id = "0b7e7a2e-3c1d-4f5a-8e6b-9d2c1a0f4e3b";

    // Both issue tokens for one endpoint at once: every write lands (409s are retried).
    let issue = |state: CmState, i: usize| async move {
        state
            .store()
            .insert_token(NewToken {
                endpoint_id: endpoint_id.into(),
                app_name: APP.into(),
                app_version: APP_V1.into(),
                token: format!("token-{i}"),
            })
            .await
            .unwrap()
            .id
    };
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let state = if i % 2 == 0 {
                a.state.clone()
            } else {
                b.state.clone()
            };
            tokio::spawn(issue(state, i))
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    ids.sort();
    let stored = stored_secret(&api, &format!("kaa-cm-cm-ep-{endpoint_id}")).unwrap();
    let mut keys: Vec<String> = stored["data"].as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ids, "no write lost another");
    for state in [&a.state, &b.state] {
        kaa_testkit::eventually(
            Duration::from_secs(5),
            "both replicas to see all tokens",
            || async {
                (state.store().endpoint_tokens(endpoint_id).await.unwrap().len() == 12).then_some(())
            },
        )
        .await;
    }

    // Both revoke the same token at once: exactly one of them moved it.
    let target = ids[0].clone();
    let revoke = |state: CmState, id: String| async move {
        state
            .store()
            .transition_token(&id, TokenStatus::Revoked)
            .await
            .unwrap()
            .changed()
    };
    let (x, y) = tokio::join!(
        tokio::spawn(revoke(a.state.clone(), target.clone())),
        tokio::spawn(revoke(b.state.clone(), target.clone()))
    );
    assert_eq!(
        u8::from(x.unwrap()) + u8::from(y.unwrap()),
        1,
        "one real transition"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn changes_missed_while_the_watch_was_down_are_revoked_after_relisting() {
    let stack = Stack::on(Backend::Kubernetes).await;
    let api = kube_stack(&stack);
    let mut revoked = stack
        .bus
        .subscribe(&subject::ecap_token_revoked("cm"), None)
        .await
        .unwrap();
    let endpoint_id = register(&stack.epr, APP_V1, Some("meter-token")).await;
    assert_eq!(
        validate_token(&stack.bus, APP, "meter-token").await.status_code,
        200
    );

    // The API server stops serving watches; the Secret is deleted and the history compacted, so
    // the resumed watch is told 410 and CM must list again to notice.
    api.block_watches(true);
    kubectl(api)
        .delete(&format!("kaa-cm-cm-ep-{endpoint_id}"), &DeleteParams::default())
        .await
        .unwrap();
    api.compact();
    api.block_watches(false);
    let event: EndpointTokenRevokedEvent = next_event(&mut revoked).await;
    assert_eq!(event.endpoint_id, endpoint_id);
    assert_eq!(
        validate_token(&stack.bus, APP, "meter-token").await.status_code,
        404
    );
    stack.stop().await;
}

#[tokio::test]
async fn endpoint_ids_that_cannot_name_a_secret_are_hashed() {
    let stack = Stack::on(Backend::Kubernetes).await;
    let api = kube_stack(&stack);
    // EPR accepts a caller's UUID as written, upper case included.
    let upper = "5F1C3A4E-9B0D-4C7E-8A21-3D6F0B9E1C2A";
    let reply = json(
        &stack.epr,
        "POST",
        "/epr/api/v1/endpoints",
        &json!({"appVersion": {"name": APP_V1}, "endpointId": upper, "endpointToken": "upper-token"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let valid = validate_token(&stack.bus, APP, "upper-token").await;
    assert_eq!(
        (valid.status_code, valid.endpoint_id.as_deref()),
        (200, Some(upper))
    );
    let names: Vec<String> = cm_secrets(api).into_keys().collect();
    assert_eq!(names.len(), 1);
    assert!(names[0].starts_with("kaa-cm-cm-ep."), "{names:?}");
    let deleted = call(
        &stack.epr,
        "DELETE",
        &format!("/epr/api/v1/endpoints/{upper}"),
        None,
        &[],
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    kaa_testkit::eventually(Duration::from_secs(5), "the endpoint's Secret to go", || async {
        cm_secrets(api).is_empty().then_some(())
    })
    .await;
    stack.stop().await;
}

#[tokio::test]
async fn cm_does_not_start_without_its_secrets() {
    // Nothing listens where the API server was.
    let gone = {
        let api = FakeApiServer::start().await;
        api.url.clone()
    };
    let mut config = kube::Config::new(gone.parse().unwrap());
    config.connect_timeout = Some(Duration::from_millis(200));
    let client = kube::Client::try_from(config).unwrap();
    let err = SecretStore::start(client.clone(), NAMESPACE, "cm", Duration::from_millis(700))
        .await
        .unwrap_err();
    assert!(matches!(err, SecretStoreError::NotReady { .. }), "{err}");
    assert!(err.is_unavailable());
    assert!(err.to_string().contains("not listed within"), "{err}");

    // An instance name that cannot label a Secret is refused before any call.
    let err = SecretStore::start(client, NAMESPACE, "CM_1", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, SecretStoreError::Layout(_)), "{err}");
}

#[tokio::test]
async fn a_tls_client_builds_with_the_one_crypto_provider() {
    // Two rustls providers in one binary make kube panic here; the workspace enables ring only.
    let config = kube::Config::new("https://127.0.0.1:6443".parse().unwrap());
    kube::Client::try_from(config).unwrap();
}
