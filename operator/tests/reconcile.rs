//! The controller against a stateful fake API server: what a user sees after `kubectl apply`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use common::cluster::{
    NS, WAIT, blueprint, condition, config_map, create, create_scaled, deployment, edit, hash, key, observed,
    operator, remove_bcx,
};
use kaa_operator::{
    build::Settings,
    controller::{Context, run},
    metrics::Metrics,
};
use kaa_testkit::{FakeApiServer, ObjectKey, eventually};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn a_new_blueprint_gets_every_object_and_a_status() {
    let server = operator().await;
    create(&server, "quickstart").await;
    let bp = observed(&server, "quickstart", 1).await;
    for kind in [
        "kpc", "epr", "cm", "epmx", "epl", "dcx", "epts", "cmx", "cmx-ota", "cex", "bcx",
    ] {
        let name = format!("quickstart-{kind}");
        assert!(deployment(&server, &name).is_some(), "Deployment {name}");
        assert!(config_map(&server, &name).is_some(), "ConfigMap {name}");
        assert!(
            server.object(&ObjectKey::core("services", NS, &name)).is_some(),
            "Service {name}"
        );
    }
    let secret = server
        .object(&ObjectKey::core("secrets", NS, "quickstart-admin-token"))
        .expect("the admin token Secret");
    assert!(secret["data"]["token"].as_str().is_some_and(|t| !t.is_empty()));
    // No pods run here: not ready, and the reason says so.
    let ready = condition(&bp, "Ready");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("ServicesNotReady"))
    );
    assert!(ready["message"].as_str().unwrap().contains("kpc 0/1"), "{ready}");
    assert_eq!(condition(&bp, "Stalled")["status"], "False");
    assert_eq!(bp["status"]["servicesReady"], "0/11");
    assert_eq!(bp["status"]["services"].as_array().unwrap().len(), 11);
}

#[tokio::test]
async fn ready_follows_the_deployments() {
    let server = operator().await;
    create(&server, "smart-energy").await;
    observed(&server, "smart-energy", 1).await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(server.client_in(NS), NS);
    for d in server.objects("apps", "v1", "deployments", Some(NS)) {
        let name = d["metadata"]["name"].as_str().unwrap();
        let status = json!({"status": {"replicas": 1, "readyReplicas": 1}});
        deployments
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }
    eventually(WAIT, "Ready=True", || async {
        let bp = blueprint(&server, "smart-energy");
        (condition(&bp, "Ready")["status"] == "True").then_some(())
    })
    .await;
    assert_eq!(
        blueprint(&server, "smart-energy")["status"]["servicesReady"],
        "10/10"
    );
}

#[tokio::test]
async fn config_changes_roll_pods_only_when_they_need_a_restart() {
    let server = operator().await;
    let api = create(&server, "quickstart").await;
    observed(&server, "quickstart", 1).await;
    let before = hash(&deployment(&server, "quickstart-kpc").unwrap());
    let config_before = config_map(&server, "quickstart-kpc").unwrap()["data"]["config.json"].clone();

    edit(&api, "quickstart", |bp| {
        bp.spec.blueprint.services[0]
            .config
            .insert("limits".into(), json!({"maxConnections": 5}));
    })
    .await;
    observed(&server, "quickstart", 2).await;
    let config = config_map(&server, "quickstart-kpc").unwrap()["data"]["config.json"].clone();
    assert_ne!(config, config_before, "the new limit reaches the ConfigMap");
    assert!(config.as_str().unwrap().contains("\"maxConnections\": 5"));
    assert_eq!(
        hash(&deployment(&server, "quickstart-kpc").unwrap()),
        before,
        "no restart for a limit"
    );

    edit(&api, "quickstart", |bp| {
        bp.spec.blueprint.services[0].config["mqtt"]["listen"] = "0.0.0.0:1884".into();
    })
    .await;
    observed(&server, "quickstart", 3).await;
    let kpc = deployment(&server, "quickstart-kpc").unwrap();
    assert_ne!(hash(&kpc), before, "a new port rolls the pods");
    let ports = &kpc["spec"]["template"]["spec"]["containers"][0]["ports"];
    assert!(
        ports
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["containerPort"] == 1884),
        "{ports}"
    );
}

#[tokio::test]
async fn removing_a_service_prunes_its_objects() {
    let server = operator().await;
    let api = create(&server, "quickstart").await;
    observed(&server, "quickstart", 1).await;
    assert!(deployment(&server, "quickstart-bcx").is_some());
    remove_bcx(&api).await;
    observed(&server, "quickstart", 2).await;
    assert!(
        deployment(&server, "quickstart-bcx").is_none(),
        "Deployment pruned"
    );
    assert!(
        config_map(&server, "quickstart-bcx").is_none(),
        "ConfigMap pruned"
    );
    assert!(
        server
            .object(&ObjectKey::core("services", NS, "quickstart-bcx"))
            .is_none(),
        "Service pruned"
    );
    assert!(deployment(&server, "quickstart-bcx").is_none());
    assert!(deployment(&server, "quickstart-cex").is_some(), "the others stay");
}

#[tokio::test]
async fn an_autoscaled_deployment_keeps_the_replicas_the_hpa_set() {
    let server = operator().await;
    let api = create_scaled(&server).await;
    observed(&server, "scaled", 1).await;
    let kpc = deployment(&server, "scaled-kpc").unwrap();
    assert_eq!(
        kpc["spec"].get("replicas"),
        None,
        "the operator never writes replicas"
    );
    assert!(
        server
            .object(&key(
                "autoscaling",
                "v2",
                "horizontalpodautoscalers",
                "scaled-kpc"
            ))
            .is_some()
    );
    assert!(
        server
            .object(&key("policy", "v1", "poddisruptionbudgets", "scaled-kpc"))
            .is_some()
    );
    // The HPA scales the Deployment; then the Blueprint changes and is reconciled again.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(server.client_in(NS), NS);
    let scale = json!({"spec": {"replicas": 7}});
    deployments
        .patch("scaled-kpc", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .unwrap();
    edit(&api, "scaled", |bp| {
        bp.spec.blueprint.services[0].config["limits"]["maxConnections"] = 30000.into();
    })
    .await;
    observed(&server, "scaled", 2).await;
    assert!(
        config_map(&server, "scaled-kpc").unwrap()["data"]["config.json"]
            .as_str()
            .unwrap()
            .contains("30000")
    );
    assert_eq!(deployment(&server, "scaled-kpc").unwrap()["spec"]["replicas"], 7);
}

#[tokio::test]
async fn an_invalid_blueprint_stalls_with_the_field_and_applies_nothing() {
    let server = operator().await;
    create(&server, "invalid").await;
    let bp = observed(&server, "invalid", 1).await;
    let stalled = condition(&bp, "Stalled");
    assert_eq!(
        (stalled["status"].as_str(), stalled["reason"].as_str()),
        (Some("True"), Some("InvalidSpec"))
    );
    let message = stalled["message"].as_str().unwrap();
    assert!(
        message.contains("spec.services[1].replicas: must be between 1 and 1000"),
        "{message}"
    );
    assert!(
        message.contains("spec.applications[0].versions[0].extensions[1]"),
        "{message}"
    );
    assert_eq!(condition(&bp, "Ready")["status"], "False");
    assert_eq!(condition(&bp, "Stalled")["observedGeneration"], 1);
    assert!(server.objects("apps", "v1", "deployments", Some(NS)).is_empty());
    assert!(server.objects("", "v1", "configmaps", Some(NS)).is_empty());
}

#[tokio::test]
async fn an_existing_admin_token_is_never_replaced() {
    let server = operator().await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(server.client_in(NS), NS);
    let mine: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "quickstart-admin-token"},
        "stringData": {"token": "my-own-token"},
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &mine).await.unwrap();
    create(&server, "quickstart").await;
    observed(&server, "quickstart", 1).await;
    let secret = server
        .object(&ObjectKey::core("secrets", NS, "quickstart-admin-token"))
        .unwrap();
    // "my-own-token", base64
    assert_eq!(secret["data"]["token"], "bXktb3duLXRva2Vu");
}

#[tokio::test]
async fn metrics_count_reconciles_and_health_answers() {
    use tower::ServiceExt;
    let server = FakeApiServer::start().await;
    let metrics = Metrics::default();
    let ctx = Context {
        client: server.client_in(NS),
        settings: Settings::default(),
        metrics: metrics.clone(),
        provider: kaa_operator::provider::Provider::default(),
    };
    tokio::spawn(async move { run(ctx, Some(NS)).await });
    create(&server, "invalid").await;
    observed(&server, "invalid", 1).await;
    let app = kaa_operator::http::app(metrics);
    let get = |path: &str| {
        axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let health = app.clone().oneshot(get("/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    // The reconcile is counted when it returns, just after it wrote the status seen above.
    let text = eventually(WAIT, "a counted reconcile", || {
        let (app, get) = (app.clone(), &get);
        async move {
            let body = app.oneshot(get("/metrics")).await.ok()?.into_body();
            let text = String::from_utf8(axum::body::to_bytes(body, 1 << 20).await.ok()?.to_vec()).ok()?;
            let count = text
                .lines()
                .find_map(|l| l.strip_prefix("kaa_operator_reconciles_total "))
                .and_then(|n| n.parse::<u64>().ok());
            count.is_some_and(|n| n >= 1).then_some(text)
        }
    })
    .await;
    assert!(
        text.contains("kaa_operator_reconcile_duration_seconds_count"),
        "{text}"
    );
}
