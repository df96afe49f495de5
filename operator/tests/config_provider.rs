//! The config provider as a reconcile drives it, against the fake API server: the token Secret,
//! the pods' wiring, what a config-only edit changes, the HTTP API, and `ConfigApplied` from
//! replicas' reports on a real nats-server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use async_nats::Client;
use bytes::Bytes;
use kaa_blueprint::config::ServiceConfig;
use kaa_operator::{
    build::Settings,
    controller::{Context, run},
    crd::Blueprint,
    metrics::Metrics,
    provider::{Provider, Refused, http},
};
use kaa_protocol::{avro::AvroRecord, scmp::ConfigAppliedEvent, subject};
use kaa_testkit::{FakeApiServer, NatsServer, ObjectKey, eventually, free_port};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

const NS: &str = "kaa";
const WAIT: Duration = Duration::from_secs(10);

/// The fake API server with the operator running, and the operator's provider.
struct Operator {
    server: FakeApiServer,
    provider: Provider,
    blueprints: Api<Blueprint>,
}

impl Operator {
    async fn start() -> Operator {
        let server = FakeApiServer::start().await;
        let provider = Provider::new("operator-test");
        let ctx = Context {
            client: server.client_in(NS),
            settings: Settings::default(),
            metrics: Metrics::default(),
            provider: provider.clone(),
        };
        tokio::spawn(async move { run(ctx, Some(NS)).await });
        let blueprints = Api::namespaced(server.client_in(NS), NS);
        Operator {
            server,
            provider,
            blueprints,
        }
    }

    /// Creates the quickstart sample announcing on `nats_url`, and waits for its first status.
    async fn create(&self, nats_url: &str) -> Value {
        let mut bp = common::sample("quickstart");
        (bp.metadata.uid, bp.metadata.generation) = (None, None);
        bp.spec.blueprint.cluster.get_or_insert_default().nats_url = Some(nats_url.to_owned());
        self.blueprints.create(&PostParams::default(), &bp).await.unwrap();
        self.observed(1).await
    }

    /// Changes the Blueprint (to generation 2) and waits for its status.
    async fn edit(&self, change: impl FnOnce(&mut Blueprint)) {
        let mut bp = self.blueprints.get("quickstart").await.unwrap();
        change(&mut bp);
        self.blueprints
            .replace("quickstart", &PostParams::default(), &bp)
            .await
            .unwrap();
        self.observed(2).await;
    }

    async fn observed(&self, generation: i64) -> Value {
        eventually(WAIT, "the status to describe the generation", || async {
            let bp = self.blueprint();
            (bp["status"]["observedGeneration"] == generation).then_some(bp)
        })
        .await
    }

    fn blueprint(&self) -> Value {
        self.object("kaa-rs.dev", "v1alpha1", "blueprints", "quickstart")
            .unwrap()
    }

    fn object(&self, group: &str, version: &str, plural: &str, name: &str) -> Option<Value> {
        self.server.object(&ObjectKey {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            namespace: NS.into(),
            name: name.into(),
        })
    }

    fn template(&self, instance: &str) -> Value {
        let name = format!("quickstart-{instance}");
        self.object("apps", "v1", "deployments", &name).unwrap()["spec"]["template"].clone()
    }

    /// The config the ConfigMap of `instance` holds.
    fn config_map(&self, instance: &str) -> ServiceConfig {
        let name = format!("quickstart-{instance}");
        let cm = self.object("", "v1", "configmaps", &name).unwrap();
        serde_json::from_str(cm["data"]["config.json"].as_str().unwrap()).unwrap()
    }

    /// The token pods read, from the Secret.
    fn token(&self) -> String {
        let secret = self
            .object("", "v1", "secrets", "quickstart-config-token")
            .unwrap();
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["token"].as_str().unwrap())
            .unwrap();
        String::from_utf8(bytes).unwrap()
    }

    async fn condition(&self, status: &str, reason: &str) -> Value {
        eventually(WAIT, &format!("ConfigApplied {status} {reason}"), || async {
            let bp = self.blueprint();
            let c = config_applied(&bp);
            (c["status"] == status && c["reason"] == reason).then_some(bp)
        })
        .await
    }
}

fn config_applied(bp: &Value) -> Value {
    bp["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "ConfigApplied").cloned())
        .unwrap_or(Value::Null)
}

fn service<'a>(bp: &'a Value, name: &str) -> &'a Value {
    bp["status"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

/// A NATS URL nobody listens on.
fn closed_port() -> String {
    format!("nats://127.0.0.1:{}", free_port())
}

#[tokio::test]
async fn the_config_token_secret_is_created_once_and_never_replaced() {
    let operator = Operator::start().await;
    operator.create(&closed_port()).await;
    let token = operator.token();
    assert!(token.len() >= 40, "a long random token");
    assert!(operator.provider.config(&token, "kpc").is_ok());
    // An edit reconciles again: the token pods hold stays.
    operator
        .edit(|bp| bp.spec.blueprint.services[0].replicas = 2)
        .await;
    assert_eq!(operator.token(), token);

    // A Secret that exists before the Blueprint is used as it is.
    let other = Operator::start().await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(other.server.client_in(NS), NS);
    let mine = serde_json::from_value(json!({
        "metadata": {"name": "quickstart-config-token"},
        "stringData": {"token": "my-own-token"},
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &mine).await.unwrap();
    other.create(&closed_port()).await;
    assert_eq!(other.token(), "my-own-token");
    assert!(other.provider.config("my-own-token", "epr").is_ok());
}

#[tokio::test]
async fn every_deployment_reads_its_config_from_the_provider() {
    let operator = Operator::start().await;
    operator.create(&closed_port()).await;
    for instance in ["kpc", "epmx", "cmx-ota"] {
        let template = operator.template(instance);
        let container = &template["spec"]["containers"][0];
        let env: Vec<(&str, &str)> = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
            .collect();
        let url = env.iter().find(|(n, _)| *n == "KAA_CONFIG_URL").unwrap().1;
        let name = instance.replace('-', "_");
        assert_eq!(
            url,
            format!(
                "http://kaa-operator-config.kaa-system.svc:8090/tekton/api/v1/service-instances/{name}/config"
            )
        );
        let file = env.iter().find(|(n, _)| *n == "KAA_CONFIG_TOKEN_FILE").unwrap().1;
        let mount = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "config-token")
            .unwrap();
        assert_eq!(mount["readOnly"], true);
        assert!(file.starts_with(mount["mountPath"].as_str().unwrap()), "{file}");
        let volume = template["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "config-token")
            .unwrap();
        assert_eq!(volume["secret"]["secretName"], "quickstart-config-token");
    }
}

#[tokio::test]
async fn the_http_api_serves_what_the_config_map_holds() {
    let operator = Operator::start().await;
    operator.create(&closed_port()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = http::app(operator.provider.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    let get = |instance: &str, token: Option<&str>| {
        let mut request = client.get(format!(
            "{base}/tekton/api/v1/service-instances/{instance}/config"
        ));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let token = operator.token();

    for (response, status) in [
        (get("kpc", None).await.unwrap(), 401),
        (get("kpc", Some("not-the-token")).await.unwrap(), 401),
        (get("nope", Some(&token)).await.unwrap(), 404),
    ] {
        assert_eq!(response.status(), status);
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    }

    let response = get("kpc", Some(&token)).await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let in_config_map = operator.config_map("kpc");
    assert_eq!(body["serviceInstanceName"], "kpc");
    assert_eq!(body["blueprint"], "kaa/quickstart");
    assert_eq!(body["generation"], 1);
    assert_eq!(body["version"], in_config_map.version().as_str());
    let served: ServiceConfig = serde_json::from_value(body["config"].clone()).unwrap();
    assert_eq!(served, in_config_map);
    let health = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn a_config_only_edit_changes_one_version_and_no_pod_template() {
    let operator = Operator::start().await;
    operator.create(&closed_port()).await;
    let token = operator.token();
    let version = |instance: &str| operator.provider.config(&token, instance).unwrap().version;
    let instances = ["kpc", "epr", "epmx", "cm", "dcx", "cmx_ota"];
    let before: Vec<String> = instances.iter().map(|i| version(i)).collect();
    let templates: Vec<Value> = ["kpc", "epmx"].iter().map(|i| operator.template(i)).collect();

    operator
        .edit(|bp| {
            bp.spec.blueprint.services[0]
                .config
                .insert("limits".into(), json!({"maxConnections": 5}));
        })
        .await;

    let after: Vec<String> = instances.iter().map(|i| version(i)).collect();
    assert_ne!(after[0], before[0], "kpc's version changes");
    assert_eq!(after[1..], before[1..], "the others' stay");
    assert_eq!(after[0], operator.config_map("kpc").version());
    assert_eq!(operator.provider.config(&token, "kpc").unwrap().generation, 2);
    let now: Vec<Value> = ["kpc", "epmx"].iter().map(|i| operator.template(i)).collect();
    assert_eq!(now, templates, "no pod restarts for a config-only edit");
}

/// Publishes a replica's report as a service would.
async fn report(nats: &Client, instance: &str, replica: &str, version: &str, rejected: Option<(&str, &str)>) {
    let event = ConfigAppliedEvent {
        correlation_id: format!("{replica}-{version}"),
        timestamp: 1,
        service_instance_name: instance.into(),
        originator_replica_id: replica.into(),
        version: version.into(),
        error: rejected.map(|(e, _)| e.to_owned()),
        rejected_version: rejected.map(|(_, v)| v.to_owned()),
    };
    nats.publish(
        subject::scmp_config_applied(instance),
        Bytes::from(event.to_avro()),
    )
    .await
    .unwrap();
    nats.flush().await.unwrap();
}

#[tokio::test]
async fn config_applied_follows_the_replicas_reports() {
    let nats_server = NatsServer::start().await;
    let nats = async_nats::connect(&nats_server.url).await.unwrap();
    let operator = Operator::start().await;
    operator.create(&nats_server.url).await;
    // Connected, nobody reported yet: nothing is behind.
    operator.condition("True", "Applied").await;
    let current = operator.config_map("kpc").version();

    report(&nats, "kpc", "kpc-a", &current, None).await;
    report(&nats, "kpc", "kpc-b", "000000000000", None).await;
    let bp = operator.condition("False", "RollingOut").await;
    let message = config_applied(&bp)["message"].as_str().unwrap().to_owned();
    assert_eq!(message, format!("kpc: 1/2 replicas run {current}"));
    assert_eq!(service(&bp, "kpc")["configVersion"], current.as_str());
    assert_eq!(service(&bp, "kpc")["configApplied"], 1);

    report(&nats, "kpc", "kpc-b", &current, None).await;
    let bp = operator.condition("True", "Applied").await;
    assert_eq!(service(&bp, "kpc")["configApplied"], 2);

    let error = "limits.maxConnections: must be at least 1";
    report(&nats, "kpc", "kpc-b", "000000000000", Some((error, &current))).await;
    let bp = operator.condition("False", "Rejected").await;
    let message = config_applied(&bp)["message"].as_str().unwrap().to_owned();
    assert!(message.contains("kpc") && message.contains(error), "{message}");
    // The rest of the status is as a reconcile left it.
    assert_eq!(bp["status"]["observedGeneration"], 1);
}

#[tokio::test]
async fn without_nats_objects_are_reconciled_and_config_applied_is_unknown() {
    let operator = Operator::start().await;
    operator.create(&closed_port()).await;
    let bp = operator.condition("Unknown", "NatsUnreachable").await;
    assert!(
        operator
            .object("apps", "v1", "deployments", "quickstart-kpc")
            .is_some()
    );
    assert!(
        operator
            .object("", "v1", "configmaps", "quickstart-kpc")
            .is_some()
    );
    assert_eq!(bp["status"]["servicesReady"], "0/11");
    assert!(service(&bp, "kpc")["configVersion"].is_string());
}

#[tokio::test]
async fn a_deleted_blueprint_s_configs_and_token_are_forgotten() {
    let operator = Operator::start().await;
    operator.create(&closed_port()).await;
    let token = operator.token();
    assert!(operator.provider.config(&token, "kpc").is_ok());

    operator
        .blueprints
        .delete("quickstart", &Default::default())
        .await
        .unwrap();
    assert!(operator.blueprints.get("quickstart").await.is_err(), "deleted");
    eventually(
        WAIT,
        "the provider to refuse the deleted Blueprint's token",
        || async { (operator.provider.config(&token, "kpc") == Err(Refused::Unauthorized)).then_some(()) },
    )
    .await;
}
