//! The operator running against a stateful fake API server, and what tests read back from it.

use std::time::Duration;

use kaa_operator::{
    build::RESTART_HASH,
    controller::{Context, run},
    crd::Blueprint,
};
use kaa_testkit::{FakeApiServer, ObjectKey, eventually};
use kube::api::{Api, PostParams};
use serde_json::Value;

pub const NS: &str = "kaa";
pub const WAIT: Duration = Duration::from_secs(10);

/// A fake API server with the operator running against it.
pub async fn operator() -> FakeApiServer {
    let server = FakeApiServer::start().await;
    let ctx = Context::new(server.client_in(NS));
    tokio::spawn(async move { run(ctx, Some(NS)).await });
    server
}

pub async fn create(server: &FakeApiServer, name: &str) -> Api<Blueprint> {
    let mut bp = super::sample(name);
    bp.metadata.uid = None;
    bp.metadata.generation = None;
    let api: Api<Blueprint> = Api::namespaced(server.client_in(NS), NS);
    api.create(&PostParams::default(), &bp).await.unwrap();
    api
}

pub fn key(group: &str, version: &str, plural: &str, name: &str) -> ObjectKey {
    ObjectKey {
        group: group.into(),
        version: version.into(),
        plural: plural.into(),
        namespace: NS.into(),
        name: name.into(),
    }
}

pub fn deployment(server: &FakeApiServer, name: &str) -> Option<Value> {
    server.object(&key("apps", "v1", "deployments", name))
}

pub fn config_map(server: &FakeApiServer, name: &str) -> Option<Value> {
    server.object(&ObjectKey::core("configmaps", NS, name))
}

pub fn hash(deployment: &Value) -> String {
    deployment["spec"]["template"]["metadata"]["annotations"][RESTART_HASH]
        .as_str()
        .unwrap()
        .to_owned()
}

pub fn blueprint(server: &FakeApiServer, name: &str) -> Value {
    server
        .object(&key("kaa-rs.dev", "v1alpha1", "blueprints", name))
        .unwrap()
}

pub fn condition(bp: &Value, type_: &str) -> Value {
    bp["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or(Value::Null)
}

/// Waits until the Blueprint's status describes `generation`, and returns the Blueprint.
pub async fn observed(server: &FakeApiServer, name: &str, generation: i64) -> Value {
    eventually(WAIT, "the status to describe the generation", || async {
        let bp = blueprint(server, name);
        (bp["status"]["observedGeneration"] == generation).then_some(bp)
    })
    .await
}

pub async fn edit(api: &Api<Blueprint>, name: &str, change: impl FnOnce(&mut Blueprint)) {
    let mut bp = api.get(name).await.unwrap();
    change(&mut bp);
    api.replace(name, &PostParams::default(), &bp).await.unwrap();
}

/// A Secret with one key, as a user creates it (e.g. a password `spec.credentials` names).
pub async fn user_secret(server: &FakeApiServer, name: &str, key: &str, value: &str) {
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(server.client_in(NS), NS);
    let secret = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        string_data: Some(std::collections::BTreeMap::from([(
            key.to_owned(),
            value.to_owned(),
        )])),
        ..Default::default()
    };
    api.create(&PostParams::default(), &secret).await.unwrap();
}

/// The scaled sample with the Secrets its credentials name.
pub async fn create_scaled(server: &FakeApiServer) -> Api<Blueprint> {
    user_secret(server, "meter-gateway", "password", "s3cret-meter-pass").await;
    user_secret(server, "factory-tokens", "meter-0001", "factory-token-value-0001").await;
    create(server, "scaled").await
}

/// Removes the quickstart's `bcx` instance (and the version's use of it), as a user would.
pub async fn remove_bcx(api: &Api<Blueprint>) {
    edit(api, "quickstart", |bp| {
        let spec = &mut bp.spec.blueprint;
        spec.services.retain(|s| s.instance_name() != "bcx");
        spec.applications[0].versions[0].extensions.retain(|e| e != "bcx");
    })
    .await;
}
