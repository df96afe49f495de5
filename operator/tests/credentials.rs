//! `spec.credentials` against the stateful fake API server: the operator writes the Secrets the
//! cm's Kubernetes backend watches, once, with hashes only.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64::Engine;
use common::cluster::{
    NS, WAIT, blueprint, condition, create, deployment, edit, key, observed, operator, user_secret,
};
use k8s_openapi::api::core::v1::Secret;
use kaa_testkit::{FakeApiServer, ObjectKey, eventually};
use kube::api::{Api, PostParams};
use serde_json::Value;
use sha2::{Digest, Sha256};

const PASSWORD: &str = "s3cret-meter-pass";
const TOKEN: &str = "factory-token-value-0001";
const ENDPOINT: &str = "2f1b7a52-8d36-4c1e-9a0b-5e4f3c2d1a00";

fn secret(server: &FakeApiServer, name: &str) -> Option<Value> {
    server.object(&ObjectKey::core("secrets", NS, name))
}

fn decoded(secret: &Value, key: &str) -> String {
    let b64 = secret["data"][key].as_str().unwrap();
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap()
}

async fn materialised(server: &FakeApiServer, name: &str) -> Value {
    eventually(WAIT, "the credential Secret", || async { secret(server, name) }).await
}

#[tokio::test]
async fn declared_credentials_become_cm_secrets_with_hashes_only() {
    let server = operator().await;
    user_secret(&server, "meter-gateway", "password", PASSWORD).await;
    user_secret(&server, "factory-tokens", "meter-0001", TOKEN).await;
    create(&server, "scaled").await;
    observed(&server, "scaled", 1).await;

    let password = materialised(&server, "kaa-ccm-cm-meter-gateway").await;
    assert_eq!(password["type"], "kaa-rs.dev/client-credential");
    assert_eq!(password["metadata"]["labels"]["kaa-rs.dev/cm"], "cm");
    assert_eq!(
        password["metadata"]["labels"]["kaa-rs.dev/kind"],
        "client-credential"
    );
    assert_eq!(decoded(&password, "clientId"), "meter-gateway-01");
    assert_eq!(decoded(&password, "username"), "meter-gateway");
    let hash = decoded(&password, "passwordHash");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    Argon2::default()
        .verify_password(PASSWORD.as_bytes(), &PasswordHash::new(&hash).unwrap())
        .expect("the stored hash verifies the referenced password");

    let certificate = materialised(&server, "kaa-ccm-cm-line-controller").await;
    assert_eq!(decoded(&certificate, "issuer"), "CN=Devices CA,O=Example");
    assert_eq!(decoded(&certificate, "serial"), "4096");

    let tokens = materialised(&server, &format!("kaa-cm-cm-ep-{ENDPOINT}")).await;
    assert_eq!(tokens["type"], "kaa-rs.dev/endpoint-tokens");
    assert_eq!(
        tokens["metadata"]["annotations"]["kaa-rs.dev/endpoint-id"],
        ENDPOINT
    );
    let record: Value = serde_json::from_str(&decoded(&tokens, "factory-0001")).unwrap();
    let sha: String = Sha256::digest(TOKEN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(record["sha256"], sha);
    assert_eq!(record["appName"], "smart_meter");
    assert_eq!(record["appVersion"], "smart_meter_v1");
    assert_eq!(record["status"], "Inactive");

    // The cm may read and write Secrets through its own account.
    let cm = deployment(&server, "scaled-cm").unwrap();
    assert_eq!(cm["spec"]["template"]["spec"]["serviceAccountName"], "scaled-cm");
    let role = server
        .object(&key("rbac.authorization.k8s.io", "v1", "roles", "scaled-cm"))
        .unwrap();
    assert_eq!(role["rules"][0]["resources"][0], "secrets");
    assert!(
        server
            .object(&key(
                "rbac.authorization.k8s.io",
                "v1",
                "rolebindings",
                "scaled-cm"
            ))
            .is_some()
    );
    assert!(
        server
            .object(&ObjectKey::core("serviceaccounts", NS, "scaled-cm"))
            .is_some()
    );

    // No value in plain text anywhere the operator writes but the user's own Secrets.
    let everything = serde_json::to_string(&[
        blueprint(&server, "scaled"),
        Value::Array(server.objects("events.k8s.io", "v1", "events", None)),
        Value::Array(
            server
                .objects("", "v1", "secrets", Some(NS))
                .into_iter()
                .filter(|s| s["metadata"]["labels"]["kaa-rs.dev/cm"] == "cm")
                .collect(),
        ),
    ])
    .unwrap();
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    for value in [PASSWORD, TOKEN] {
        assert!(!everything.contains(value) && !everything.contains(&b64(value)));
    }
}

#[tokio::test]
async fn what_the_cm_changed_is_never_overwritten() {
    let server = operator().await;
    user_secret(&server, "meter-gateway", "password", PASSWORD).await;
    user_secret(&server, "factory-tokens", "meter-0001", TOKEN).await;
    let api = create(&server, "scaled").await;
    observed(&server, "scaled", 1).await;
    let name = format!("kaa-cm-cm-ep-{ENDPOINT}");
    materialised(&server, &name).await;

    // The device used the token: the cm marked it Active; a platform operator revoked the
    // gateway's credential.
    let secrets: Api<Secret> = Api::namespaced(server.client_in(NS), NS);
    let mut tokens = secrets.get(&name).await.unwrap();
    let entry = tokens.data.as_mut().unwrap().get_mut("factory-0001").unwrap();
    let mut record: Value = serde_json::from_slice(&entry.0).unwrap();
    record["status"] = "Active".into();
    entry.0 = record.to_string().into_bytes();
    secrets
        .replace(&name, &PostParams::default(), &tokens)
        .await
        .unwrap();
    let mut credential = secrets.get("kaa-ccm-cm-meter-gateway").await.unwrap();
    credential
        .data
        .as_mut()
        .unwrap()
        .insert("status".into(), k8s_openapi::ByteString(b"Revoked".to_vec()));
    secrets
        .replace("kaa-ccm-cm-meter-gateway", &PostParams::default(), &credential)
        .await
        .unwrap();

    // A new token for the same endpoint joins the existing Secret; the rest stays as the cm left it.
    user_secret(&server, "more-tokens", "t2", "second-token-value").await;
    edit(&api, "scaled", |bp| {
        let credentials = bp.spec.blueprint.credentials.as_mut().unwrap();
        let mut second = credentials.endpoint_tokens[0].clone();
        second.id = "factory-0002".into();
        second.token_secret.name = "more-tokens".into();
        second.token_secret.key = "t2".into();
        credentials.endpoint_tokens.push(second);
    })
    .await;
    observed(&server, "scaled", 2).await;
    let tokens = eventually(WAIT, "the second token entry", || async {
        secret(&server, &name).filter(|s| s["data"]["factory-0002"].is_string())
    })
    .await;
    let first: Value = serde_json::from_str(&decoded(&tokens, "factory-0001")).unwrap();
    assert_eq!(first["status"], "Active");
    let credential = secret(&server, "kaa-ccm-cm-meter-gateway").unwrap();
    assert_eq!(decoded(&credential, "status"), "Revoked");
}

#[tokio::test]
async fn a_missing_source_secret_is_named_and_retried() {
    let server = operator().await;
    user_secret(&server, "factory-tokens", "meter-0001", TOKEN).await;
    create(&server, "scaled").await;
    let ready = eventually(WAIT, "Ready=False naming the missing Secret", || async {
        let ready = condition(&blueprint(&server, "scaled"), "Ready");
        ready["message"]
            .as_str()
            .is_some_and(|m| m.contains("Secret `meter-gateway` key `password`"))
            .then_some(ready)
    })
    .await;
    assert_eq!(ready["reason"], "ApplyFailed");
    user_secret(&server, "meter-gateway", "password", PASSWORD).await;
    // Retried (error backoff) until the Secret exists.
    materialised(&server, "kaa-ccm-cm-meter-gateway").await;
}

#[tokio::test]
async fn credentials_need_a_cm_with_kubernetes_storage() {
    let server = operator().await;
    let mut bp = common::sample("scaled");
    bp.metadata.uid = None;
    bp.metadata.generation = None;
    for service in &mut bp.spec.blueprint.services {
        service.config.remove("storage");
    }
    let api: Api<kaa_operator::crd::Blueprint> = Api::namespaced(server.client_in(NS), NS);
    api.create(&PostParams::default(), &bp).await.unwrap();
    let bp = observed(&server, "scaled", 1).await;
    let stalled = condition(&bp, "Stalled");
    assert_eq!(stalled["status"], "True");
    assert!(
        stalled["message"]
            .as_str()
            .unwrap()
            .contains("spec.credentials: needs the `cm` service to keep credentials in Kubernetes Secrets"),
        "{stalled}"
    );
}

#[test]
fn credential_mistakes_are_named_by_field() {
    let mut bp = common::sample("scaled");
    let credentials = bp.spec.blueprint.credentials.as_mut().unwrap();
    credentials.clients[1].id = "meter-gateway".into();
    credentials.clients[0].certificate = credentials.clients[1].certificate.clone();
    credentials.endpoint_tokens[0].endpoint_id = "2F1B7A52-8D36-4C1E-9A0B-5E4F3C2D1A00".into();
    credentials.endpoint_tokens[0].app_version = "smart_meter_v9".into();
    let errors: Vec<String> = kaa_operator::validate::validate(&bp)
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        [
            "spec.credentials.clients[0]: give either username and passwordSecret, or certificate",
            "spec.credentials.clients[1].id: `meter-gateway` is the id of clients[0] already",
            "spec.credentials.endpointTokens[0].endpointId: `2F1B7A52-8D36-4C1E-9A0B-5E4F3C2D1A00` must be a lowercase UUID",
            "spec.credentials.endpointTokens[0].appVersion: `smart_meter_v9` is not a version in spec.applications",
        ]
    );
}
