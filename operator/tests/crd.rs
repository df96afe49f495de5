//! The checked-in CRD is what the code generates, and the schema says what the rules say.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use kaa_operator::crd::crd_yaml;

const CHECKED_IN: &str = include_str!("../../crds/blueprint.yaml");
const IN_THE_CHART: &str = include_str!("../../charts/kaa-operator/crds/blueprint.yaml");

#[test]
fn the_checked_in_crd_matches_the_code() {
    let generated = crd_yaml().unwrap();
    assert!(
        generated == CHECKED_IN,
        "crds/blueprint.yaml is stale: run `cargo run -p kaa-operator -- crd > crds/blueprint.yaml`"
    );
}

#[test]
fn the_helm_chart_ships_the_checked_in_crd() {
    assert!(
        IN_THE_CHART == CHECKED_IN,
        "charts/kaa-operator/crds/blueprint.yaml differs from crds/blueprint.yaml: run `make generate`"
    );
}

#[test]
fn every_spec_field_has_a_description() {
    let crd: serde_json::Value = serde_saphyr::from_str(CHECKED_IN).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut missing = Vec::new();
    walk(spec, "spec", &mut missing);
    assert!(missing.is_empty(), "fields without a description: {missing:#?}");
}

fn walk(schema: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
    if let Some(props) = schema["properties"].as_object() {
        for (name, field) in props {
            let at = format!("{path}.{name}");
            if field["description"].as_str().is_none_or(str::is_empty) {
                missing.push(at.clone());
            }
            walk(field, &at, missing);
        }
    }
    if schema["items"].is_object() {
        walk(&schema["items"], &format!("{path}[]"), missing);
    }
}

#[test]
fn cel_rules_cover_the_cross_field_mistakes() {
    let crd: serde_json::Value = serde_saphyr::from_str(CHECKED_IN).unwrap();
    let version = &crd["spec"]["versions"][0];
    let rules = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"]
        .as_array()
        .unwrap();
    let messages: Vec<&str> = rules.iter().filter_map(|r| r["message"].as_str()).collect();
    for needle in ["`kpc`", "`epr`", "`cm`", "unique", "extensions", "maxReplicas"] {
        assert!(
            messages.iter().any(|m| m.contains(needle)),
            "no rule about {needle}: {messages:?}"
        );
    }
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "bp");
    assert_eq!(version["subresources"]["status"], serde_json::json!({}));
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(columns, ["Ready", "Reason", "Services", "Age"]);
}
