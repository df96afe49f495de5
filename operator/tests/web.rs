//! The `web` kind in a cluster: the dashboard's proxy is pointed at the Services the operator
//! builds for the other instances, and the pod needs the admin token but no database.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use common::sample;
use kaa_operator::{
    build::{HTTP_PORT, Object, Settings, build},
    validate::validate,
};

#[test]
fn the_dashboard_proxy_reaches_every_rest_service_by_its_kubernetes_service() {
    let bp = sample("smart-energy");
    let objects = build(&bp, &validate(&bp).unwrap(), &Settings::default()).objects;
    let services: Vec<(&str, Vec<i32>)> = objects
        .iter()
        .filter_map(|o| match o {
            Object::Service(s) => Some((
                s.metadata.name.as_deref().unwrap(),
                s.spec
                    .as_ref()
                    .unwrap()
                    .ports
                    .iter()
                    .flatten()
                    .map(|p| p.port)
                    .collect(),
            )),
            _ => None,
        })
        .collect();
    let config = objects
        .iter()
        .find_map(|o| match o {
            Object::ConfigMap(c) if c.metadata.name.as_deref() == Some("smart-energy-web") => {
                Some(c.data.as_ref().unwrap()["config.json"].clone())
            }
            _ => None,
        })
        .expect("a ConfigMap for the web instance");
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    let upstreams = config["upstreams"].as_array().unwrap();
    let kinds: Vec<&str> = upstreams.iter().map(|u| u["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["epr", "cm", "epts", "cmx", "cex"]);
    for upstream in upstreams {
        let url = upstream["url"].as_str().unwrap();
        let (host, port) = url.strip_prefix("http://").unwrap().split_once(':').unwrap();
        let ports = &services
            .iter()
            .find(|(name, _)| *name == host)
            .unwrap_or_else(|| panic!("{url} names no Service of {services:?}"))
            .1;
        assert!(
            ports.contains(&port.parse().unwrap()) && port == HTTP_PORT.to_string(),
            "{url}"
        );
    }

    let deployment = objects
        .iter()
        .find_map(|o| match o {
            Object::Deployment(d) if d.metadata.name.as_deref() == Some("smart-energy-web") => Some(d),
            _ => None,
        })
        .unwrap();
    let pod = deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let env: Vec<&str> = pod.containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    assert!(
        env.contains(&"KAA_ADMIN_TOKEN_FILE") && !env.contains(&"KAA_DATABASE"),
        "{env:?}"
    );
    assert_eq!(pod.containers[0].args.as_ref().unwrap()[..2], ["run", "web"]);
}
