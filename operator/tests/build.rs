//! `build`: the objects each sample Blueprint becomes (snapshots), and the rules that matter
//! most, asserted one by one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{UID, assert_snapshot, sample};
use kaa_operator::{
    build::{Object, RESTART_HASH, Settings, admin_secret, build},
    crd::Blueprint,
    validate::validate,
};

fn objects(bp: &Blueprint) -> Vec<Object> {
    build(bp, &validate(bp).unwrap(), &Settings::default()).objects
}

fn yaml(objects: &[Object]) -> String {
    objects
        .iter()
        .map(|o| format!("---\n{}", serde_saphyr::to_string(&o.to_json().unwrap()).unwrap()))
        .collect()
}

#[test]
fn samples_build_the_objects_in_their_snapshots() {
    for name in ["quickstart", "smart-energy", "scaled"] {
        assert_snapshot(&format!("{name}.yaml"), &yaml(&objects(&sample(name))));
    }
}

fn deployment<'a>(objects: &'a [Object], name: &str) -> &'a k8s_openapi::api::apps::v1::Deployment {
    objects
        .iter()
        .find_map(|o| match o {
            Object::Deployment(d) if d.metadata.name.as_deref() == Some(name) => Some(d),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Deployment {name}"))
}

fn restart_hash(objects: &[Object], name: &str) -> String {
    let d = deployment(objects, name);
    let template = d.spec.as_ref().unwrap().template.metadata.as_ref().unwrap();
    template.annotations.as_ref().unwrap()[RESTART_HASH].clone()
}

#[test]
fn every_object_is_owned_by_the_blueprint() {
    for o in objects(&sample("scaled")) {
        let json = o.to_json().unwrap();
        let owner = &json["metadata"]["ownerReferences"][0];
        assert_eq!(
            (owner["uid"].as_str(), owner["controller"].as_bool()),
            (Some(UID), Some(true)),
            "{}",
            o.name()
        );
        assert_eq!(
            json["metadata"]["labels"]["kaa-rs.dev/blueprint"],
            "scaled",
            "{}",
            o.name()
        );
        assert_eq!(json["metadata"]["namespace"], "kaa");
    }
}

#[test]
fn autoscaled_instances_get_an_hpa_and_a_pdb_and_no_replicas() {
    let objects = objects(&sample("scaled"));
    let kpc = deployment(&objects, "scaled-kpc");
    assert_eq!(kpc.spec.as_ref().unwrap().replicas, None, "the HPA owns replicas");
    assert!(objects.iter().any(|o| matches!(o, Object::HorizontalPodAutoscaler(h)
        if h.spec.as_ref().unwrap().min_replicas == Some(3) && h.metadata.name.as_deref() == Some("scaled-kpc"))));
    let pdbs: Vec<&str> = objects
        .iter()
        .filter(|o| matches!(o, Object::PodDisruptionBudget(_)))
        .map(Object::name)
        .collect();
    assert_eq!(
        pdbs,
        [
            "scaled-kpc",
            "scaled-epr",
            "scaled-cm",
            "scaled-epmx",
            "scaled-dcx",
            "scaled-epts"
        ]
    );
    assert_eq!(
        deployment(&objects, "scaled-epr").spec.as_ref().unwrap().replicas,
        Some(2)
    );
}

#[test]
fn single_replicas_get_no_pdb_and_no_hpa() {
    assert!(!objects(&sample("quickstart")).iter().any(|o| matches!(
        o,
        Object::PodDisruptionBudget(_) | Object::HorizontalPodAutoscaler(_)
    )));
}

#[test]
fn only_restart_requiring_config_changes_the_pod_template_hash() {
    let before = sample("quickstart");
    let hashes = |bp: &Blueprint| {
        let objects = objects(bp);
        ["quickstart-kpc", "quickstart-epts"].map(|n| restart_hash(&objects, n))
    };
    let mut live = before.clone();
    live.spec.blueprint.applications[0].versions[0].extensions.pop();
    live.spec.blueprint.services[0]
        .config
        .insert("limits".into(), serde_json::json!({"maxConnections": 5}));
    live.spec.blueprint.services[6].config["applications"]["demo_application"]["retentionDays"] = 7.into();
    assert_eq!(
        hashes(&live),
        hashes(&before),
        "routes, limits and retention are applied live"
    );
    let mut ported = before.clone();
    ported.spec.blueprint.services[0].config["mqtt"]["listen"] = "0.0.0.0:1884".into();
    let (old, new) = (hashes(&before), hashes(&ported));
    assert_ne!(old[0], new[0], "a new port needs a restart");
    assert_eq!(old[1], new[1], "other instances keep theirs");
}

#[test]
fn the_admin_secret_is_owned_and_holds_the_token() {
    let secret = admin_secret(&sample("quickstart"), "t0ken");
    assert_eq!(secret.metadata.name.as_deref(), Some("quickstart-admin-token"));
    assert_eq!(secret.string_data.unwrap()["token"], "t0ken");
    assert_eq!(secret.metadata.owner_references.unwrap()[0].uid, UID);
}
