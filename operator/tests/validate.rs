//! `validate`: the cluster's rules on top of kaa-blueprint's, each error naming its field.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use common::sample;
use kaa_operator::validate::validate;

fn errors(bp: &kaa_operator::crd::Blueprint) -> Vec<String> {
    validate(bp)
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn every_sample_but_the_invalid_one_passes() {
    for name in ["quickstart", "smart-energy", "scaled", "secured"] {
        validate(&sample(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn the_invalid_sample_names_its_fields() {
    let errs = errors(&sample("invalid"));
    assert!(
        errs.iter().any(|e| e.starts_with("spec.services[1].replicas: ")),
        "{errs:#?}"
    );
    assert!(
        errs.iter().any(|e| e.starts_with("spec.services: needs a `kpc`")),
        "{errs:#?}"
    );
}

#[test]
fn ports_must_parse_and_differ() {
    let mut bp = sample("quickstart");
    bp.spec.blueprint.services[0].config["ws"]["listen"] = "0.0.0.0:1883".into();
    assert_eq!(
        errors(&bp),
        ["spec.services[0].config.ws.listen: port 1883 is taken by `mqtt` already"]
    );
    bp.spec.blueprint.services[0].config["ws"]["listen"] = "0.0.0.0:9000".into();
    assert!(errors(&bp)[0].contains("management port"));
    bp.spec.blueprint.services[0].config["ws"]["listen"] = "nowhere".into();
    assert!(errors(&bp)[0].starts_with("spec.services[0].config.ws.listen: `nowhere` must be `host:port`"));
}

#[test]
fn names_that_collide_in_kubernetes_are_refused() {
    let mut bp = sample("quickstart");
    let mut twin = bp.spec.blueprint.services[8].clone(); // `cmx_ota`
    twin.name = Some("cmx-ota".into());
    twin.config.insert("configName".into(), "ota2".into());
    bp.spec.blueprint.services.push(twin);
    assert_eq!(
        errors(&bp),
        [
            "spec.services[11].name: `cmx-ota` and `cmx_ota` both become the Kubernetes name `quickstart-cmx-ota`"
        ]
    );
}

#[test]
fn shared_state_needs_a_database() {
    let mut bp = sample("scaled");
    bp.spec.blueprint.cluster = None;
    let errs = errors(&bp);
    assert!(
        errs[0]
            .starts_with("spec.services[1].replicas: more than one replica of a `epr` service share state"),
        "{errs:#?}"
    );
}
