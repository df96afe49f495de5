//! The contract between the operator and the credential service: the Secrets the operator writes
//! from `spec.credentials` (blueprints/scaled.yaml) are read by the cm's real Kubernetes backend,
//! both against one stateful fake API server, and authenticate what the Blueprint declared.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kaa_operator::{
    controller::{self, Context},
    crd::Blueprint,
};
use kaa_services::cm::kubernetes::SecretStore;
use kaa_testkit::{FakeApiServer, ObjectKey, eventually};
use kube::api::{Api, ObjectMeta, PostParams};

const NS: &str = "kaa";
const WAIT: Duration = Duration::from_secs(10);
const PASSWORD: &str = "correct horse battery staple";
const TOKEN: &str = "factory-token-value-0001";

async fn user_secret(server: &FakeApiServer, name: &str, key: &str, value: &str) {
    let api: Api<Secret> = Api::namespaced(server.client_in(NS), NS);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
        ..Secret::default()
    };
    api.create(&PostParams::default(), &secret).await.unwrap();
}

#[tokio::test]
async fn the_cm_authenticates_what_the_operator_provisioned() {
    let server = FakeApiServer::start().await;
    let ctx = Context::new(server.client_in(NS));
    tokio::spawn(async move { controller::run(ctx, Some(NS)).await });
    user_secret(&server, "meter-gateway", "password", PASSWORD).await;
    user_secret(&server, "factory-tokens", "meter-0001", TOKEN).await;
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../blueprints/scaled.yaml")).unwrap();
    let sample: Blueprint = serde_saphyr::from_str(&text).unwrap();
    let blueprints: Api<Blueprint> = Api::namespaced(server.client_in(NS), NS);
    blueprints.create(&PostParams::default(), &sample).await.unwrap();
    let endpoint = "2f1b7a52-8d36-4c1e-9a0b-5e4f3c2d1a00";
    eventually(WAIT, "the provisioned Secrets", || async {
        let names = [
            "kaa-ccm-cm-meter-gateway".to_owned(),
            "kaa-ccm-cm-line-controller".to_owned(),
            format!("kaa-cm-cm-ep-{endpoint}"),
        ];
        names
            .iter()
            .all(|n| server.object(&ObjectKey::core("secrets", NS, n)).is_some())
            .then_some(())
    })
    .await;

    // The cm instance `cm` of scaled.yaml, as `kaa run cm` with `storage: kubernetes` starts it.
    let store = SecretStore::start(server.client_in(NS), NS, "cm", WAIT)
        .await
        .unwrap();
    let token = store
        .token_by_value(TOKEN)
        .await
        .unwrap()
        .expect("the token is known");
    assert_eq!(token.endpoint_id, endpoint);
    assert_eq!(token.app_version, "smart_meter_v1");
    assert_eq!(token.app_name, "smart_meter");
    assert!(store.token_by_value("another value").await.unwrap().is_none());
    let password = store
        .password_credential("meter-gateway")
        .await
        .unwrap()
        .expect("the password credential is known");
    assert_eq!(password.credential.client_id, "meter-gateway-01");
    use argon2::{PasswordHash, PasswordVerifier};
    argon2::Argon2::default()
        .verify_password(
            PASSWORD.as_bytes(),
            &PasswordHash::new(&password.password_hash).unwrap(),
        )
        .expect("the cm verifies the password from the referenced Secret");
    let certificate = store
        .certificate_credential("CN=Devices CA,O=Example", "4096")
        .await
        .unwrap()
        .expect("the certificate credential is known");
    assert_eq!(certificate.client_id, "line-controller-07");
}
