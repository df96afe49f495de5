//! Unit tests of the parsing and patching helpers; the server end to end is tested against kube's
//! own client in `tests/kube_api.rs`.

use serde_json::json;

use super::{
    routes::{Target, parse_target},
    selector::{Selector, parse_label_selector, percent_decode},
    store::{civil_from_days, rfc3339_now},
    verbs::merge,
};

#[test]
fn targets() {
    assert!(matches!(
        parse_target("/api/v1/namespaces/ns/secrets"),
        Some(Target::Collection { resource, namespace: Some(ns) }) if resource.plural == "secrets" && ns == "ns"
    ));
    assert!(matches!(
        parse_target("/apis/apps/v1/namespaces/ns/deployments/web/status"),
        Some(Target::Object { key, status: true }) if key.group == "apps" && key.name == "web"
    ));
    assert!(matches!(
        parse_target("/api/v1/namespaces/ns"),
        Some(Target::Object { key, status: false }) if key.plural == "namespaces" && key.name == "ns" && key.namespace.is_empty()
    ));
    assert!(matches!(
        parse_target("/api/v1/secrets"),
        Some(Target::Collection { namespace: None, .. })
    ));
    assert!(parse_target("/healthz").is_none());
}

#[test]
fn label_selectors() {
    let obj = json!({"metadata": {"labels": {"app": "kaa", "tier": "cm"}}});
    let matches = |s: &str| {
        Selector {
            labels: parse_label_selector(s).unwrap(),
            fields: Vec::new(),
        }
        .matches(&obj)
    };
    assert!(matches(""));
    assert!(matches("app=kaa"));
    assert!(matches("app==kaa,tier=cm"));
    assert!(!matches("app=kaa,tier=kpc"));
    assert!(matches("tier!=kpc"));
    assert!(matches("tier in (cm, kpc)"));
    assert!(!matches("tier notin (cm,kpc)"));
    assert!(matches("app,!missing"));
    assert!(!matches("missing"));
    assert!(parse_label_selector("tier in cm").is_err());
}

#[test]
fn merge_patch_follows_rfc_7386() {
    let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}});
    merge(&mut target, &json!({"a": "z", "c": {"f": null}}));
    assert_eq!(target, json!({"a": "z", "c": {"d": "e"}}));
    merge(&mut target, &json!({"a": ["x"]}));
    assert_eq!(target["a"], json!(["x"]));
}

#[test]
fn dates() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(19_723), (2024, 1, 1));
    assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    assert!(rfc3339_now().ends_with('Z'));
}

#[test]
fn percent_decoding() {
    assert_eq!(percent_decode("a%3Db%2Cc"), "a=b,c");
    assert_eq!(percent_decode("kaa-rs.dev%2Fcm%3Dcm"), "kaa-rs.dev/cm=cm");
    assert_eq!(percent_decode("100%"), "100%");
    assert_eq!(percent_decode("a+b"), "a b");
}
