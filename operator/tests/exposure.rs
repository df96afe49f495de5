//! How devices reach a kpc (`expose`) and its TLS Secret (`tlsSecret`): the objects the operator
//! writes to the stateful fake API server, and the mistakes it refuses.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use common::cluster::{
    NS, condition, config_map, create, create_scaled, deployment, edit, hash, observed, operator,
};
use kaa_blueprint::spec::{Exposure, ListenerPorts, NodePorts, ServiceType};
use kaa_testkit::{FakeApiServer, ObjectKey};
use serde_json::Value;

const CHECKED_IN_CRD: &str = include_str!("../../crds/blueprint.yaml");

fn service(server: &FakeApiServer, name: &str) -> Value {
    server.object(&ObjectKey::core("services", NS, name)).unwrap()
}

fn port<'a>(service: &'a Value, name: &str) -> &'a Value {
    service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or(&Value::Null)
}

fn pod(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]
}

#[tokio::test]
async fn a_kpc_behind_a_load_balancer_with_its_tls_secret() {
    let server = operator().await;
    create_scaled(&server).await;
    observed(&server, "scaled", 1).await;

    let devices = service(&server, "scaled-kpc-devices");
    assert_eq!(devices["spec"]["type"], "LoadBalancer");
    assert_eq!(
        devices["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-type"],
        "nlb"
    );
    assert_eq!(port(&devices, "mqtt")["port"], 1883);
    assert_eq!(port(&devices, "mqtts")["port"], 8883);
    assert_eq!(port(&devices, "wss")["port"], 443, "the declared Service port");
    assert_eq!(port(&devices, "wss")["targetPort"], "wss");
    assert!(
        port(&devices, "http").is_null(),
        "no management port on the load balancer"
    );
    // In-cluster clients keep the ClusterIP Service.
    assert_eq!(service(&server, "scaled-kpc")["spec"]["type"], "ClusterIP");

    let kpc = deployment(&server, "scaled-kpc").unwrap();
    let volume = pod(&kpc)["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tls")
        .unwrap()
        .clone();
    assert_eq!(volume["secret"]["secretName"], "kpc-tls");
    let mount = pod(&kpc)["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "tls")
        .unwrap()
        .clone();
    assert_eq!(mount["mountPath"], "/etc/kaa/tls");
    let config: Value = serde_json::from_str(
        config_map(&server, "scaled-kpc").unwrap()["data"]["config.json"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    for listener in ["mqtts", "wss"] {
        assert_eq!(config[listener]["certFile"], "/etc/kaa/tls/tls.crt", "{listener}");
        assert_eq!(config[listener]["keyFile"], "/etc/kaa/tls/tls.key", "{listener}");
    }
    assert_eq!(config["mqtts"]["clientCaFile"], "/etc/kaa/tls/ca.crt");
}

#[tokio::test]
async fn another_tls_secret_rolls_the_pods_and_node_ports_reach_the_service() {
    let server = operator().await;
    let api = create_scaled(&server).await;
    observed(&server, "scaled", 1).await;
    let before = deployment(&server, "scaled-kpc").unwrap();

    edit(&api, "scaled", |bp| {
        let kpc = &mut bp.spec.blueprint.services[0];
        kpc.tls_secret = Some("kpc-tls-2026".into());
        kpc.expose = Some(Exposure {
            type_: Some(ServiceType::NodePort),
            node_ports: Some(NodePorts {
                mqtts: Some(30883),
                ..NodePorts::default()
            }),
            ..Exposure::default()
        });
    })
    .await;
    observed(&server, "scaled", 2).await;
    let after = deployment(&server, "scaled-kpc").unwrap();
    let annotations = |d: &Value| d["spec"]["template"]["metadata"]["annotations"].clone();
    assert_ne!(
        annotations(&after),
        annotations(&before),
        "a new Secret rolls the pods"
    );
    assert_eq!(annotations(&after)["kaa-rs.dev/tls-secret"], "kpc-tls-2026");
    assert_eq!(hash(&after), hash(&before), "the same config");
    let devices = service(&server, "scaled-kpc-devices");
    assert_eq!(devices["spec"]["type"], "NodePort");
    assert_eq!(port(&devices, "mqtts")["nodePort"], 30883);
    assert_eq!(port(&devices, "wss")["port"], 8443, "back to the listener's port");
}

async fn stalled_message(
    server: &FakeApiServer,
    change: impl FnOnce(&mut kaa_operator::crd::Blueprint),
) -> String {
    let api = create_scaled(server).await;
    observed(server, "scaled", 1).await;
    edit(&api, "scaled", change).await;
    let bp = observed(server, "scaled", 2).await;
    let stalled = condition(&bp, "Stalled");
    assert_eq!(stalled["status"], "True", "{stalled}");
    stalled["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_tls_listener_without_a_secret_stalls_naming_the_field() {
    let server = operator().await;
    let message = stalled_message(&server, |bp| bp.spec.blueprint.services[0].tls_secret = None).await;
    assert!(
        message.contains("spec.services[0].tlsSecret: TLS listeners (mqtts, wss) need a certificate"),
        "{message}"
    );
}

#[tokio::test]
async fn ports_of_listeners_that_do_not_exist_or_collide_stall() {
    let server = operator().await;
    let message = stalled_message(&server, |bp| {
        bp.spec.blueprint.services[0].expose = Some(Exposure {
            ports: Some(ListenerPorts {
                https: Some(443),
                mqtts: Some(1883),
                ..ListenerPorts::default()
            }),
            node_ports: Some(NodePorts {
                mqtt: Some(31883),
                ..NodePorts::default()
            }),
            ..Exposure::default()
        });
    })
    .await;
    for expected in [
        "spec.services[0].expose.ports.mqtts: port 1883 is taken by `mqtt` already",
        "spec.services[0].expose.ports.https: the kpc has no `https` listener",
        "spec.services[0].expose.nodePorts: node ports need type NodePort or LoadBalancer",
    ] {
        assert!(message.contains(expected), "{expected} in {message}");
    }
}

#[test]
fn the_schema_refuses_bad_ports_at_apply_time() {
    let crd: Value = serde_saphyr::from_str(CHECKED_IN_CRD).unwrap();
    let instance = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["services"]["items"];
    let expose = &instance["properties"]["expose"];
    let mqtt = &expose["properties"]["ports"]["properties"]["mqtt"];
    assert_eq!(
        (mqtt["minimum"].as_f64(), mqtt["maximum"].as_f64()),
        (Some(1.0), Some(65535.0))
    );
    let node = &expose["properties"]["nodePorts"]["properties"]["mqtt"];
    assert_eq!(
        (node["minimum"].as_f64(), node["maximum"].as_f64()),
        (Some(30000.0), Some(32767.0))
    );
    let rules = serde_json::to_string(&[
        &instance["x-kubernetes-validations"],
        &expose["x-kubernetes-validations"],
    ])
    .unwrap();
    for message in [
        "only a kpc has expose",
        "only a kpc has tlsSecret",
        "nodePorts need type NodePort or LoadBalancer",
    ] {
        assert!(rules.contains(message), "{message}: {rules}");
    }
}

fn addresses(bp: &Value, instance: &str) -> Vec<String> {
    bp["status"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == instance)
        .and_then(|s| s["addresses"].as_array())
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_status_tells_devices_where_to_connect() {
    let server = operator().await;
    create(&server, "quickstart").await;
    let bp = observed(&server, "quickstart", 1).await;
    let kpc = addresses(&bp, "kpc");
    assert!(
        kpc.contains(&"mqtt://quickstart-kpc.kaa.svc:1883".to_owned()),
        "{kpc:?}"
    );
    assert!(addresses(&bp, "epr").is_empty(), "only a kpc serves devices");

    // Behind a load balancer: nothing until the cloud assigns an address, then that address.
    let server = operator().await;
    create_scaled(&server).await;
    let bp = observed(&server, "scaled", 1).await;
    assert!(addresses(&bp, "kpc").is_empty(), "the load balancer is pending");
    let services: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(server.client_in(NS), NS);
    let ingress = serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}});
    services
        .patch_status(
            "scaled-kpc-devices",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&ingress),
        )
        .await
        .unwrap();
    let kpc = kaa_testkit::eventually(common::cluster::WAIT, "the load balancer's address", || async {
        let kpc = addresses(&common::cluster::blueprint(&server, "scaled"), "kpc");
        (!kpc.is_empty()).then_some(kpc)
    })
    .await;
    assert_eq!(
        kpc,
        [
            "mqtt://203.0.113.7:1883",
            "mqtts://203.0.113.7:8883",
            "wss://203.0.113.7:443/mqtt"
        ]
    );
}

#[tokio::test]
async fn node_ports_with_a_host_name_give_that_host() {
    let server = operator().await;
    let api = create_scaled(&server).await;
    observed(&server, "scaled", 1).await;
    edit(&api, "scaled", |bp| {
        bp.spec.blueprint.services[0].expose = Some(Exposure {
            type_: Some(ServiceType::NodePort),
            node_ports: Some(NodePorts {
                mqtt: Some(31883),
                mqtts: Some(30883),
                wss: Some(30443),
                ..NodePorts::default()
            }),
            host: Some("devices.example.com".into()),
            ..Exposure::default()
        });
    })
    .await;
    let bp = observed(&server, "scaled", 2).await;
    assert_eq!(
        addresses(&bp, "kpc"),
        [
            "mqtt://devices.example.com:31883",
            "mqtts://devices.example.com:30883",
            "wss://devices.example.com:30443/mqtt"
        ]
    );
}
