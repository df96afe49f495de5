//! Events on Blueprints, recorded against the stateful fake API server: what `kubectl describe
//! bp` and `kubectl events` show.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use common::cluster::{NS, WAIT, create, observed, operator, remove_bcx};
use kaa_testkit::{FakeApiServer, eventually};
use serde_json::Value;

fn events_of(server: &FakeApiServer, blueprint: &str) -> Vec<Value> {
    server
        .objects("events.k8s.io", "v1", "events", Some(NS))
        .into_iter()
        .filter(|e| e["regarding"]["kind"] == "Blueprint" && e["regarding"]["name"] == blueprint)
        .collect()
}

fn with_reason(server: &FakeApiServer, blueprint: &str, reason: &str) -> Vec<Value> {
    events_of(server, blueprint)
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .collect()
}

#[tokio::test]
async fn an_invalid_spec_gets_one_warning_naming_the_field() {
    let server = operator().await;
    create(&server, "invalid").await;
    observed(&server, "invalid", 1).await;
    let warnings = eventually(WAIT, "a Warning event", || async {
        let found = with_reason(&server, "invalid", "InvalidSpec");
        (!found.is_empty()).then_some(found)
    })
    .await;
    let warning = &warnings[0];
    assert_eq!(warning["type"], "Warning");
    assert_eq!(warning["reportingController"], "kaa-operator");
    let note = warning["note"].as_str().unwrap();
    assert!(note.contains("replicas"), "the note names the field: {note}");
    // Later reconciles of the same generation (resyncs, owned objects) repeat nothing.
    assert_eq!(with_reason(&server, "invalid", "InvalidSpec").len(), 1);
}

#[tokio::test]
async fn created_and_pruned_objects_are_summed_up_in_normal_events() {
    let server = operator().await;
    let api = create(&server, "quickstart").await;
    observed(&server, "quickstart", 1).await;
    let created = eventually(WAIT, "an Applied event", || async {
        with_reason(&server, "quickstart", "Applied").pop()
    })
    .await;
    assert_eq!(created["type"], "Normal");
    let note = created["note"].as_str().unwrap();
    assert!(note.starts_with("created "), "{note}");
    assert!(note.contains("Deployment/quickstart-kpc"), "{note}");

    remove_bcx(&api).await;
    observed(&server, "quickstart", 2).await;
    let pruned = eventually(WAIT, "an event naming the pruned objects", || async {
        with_reason(&server, "quickstart", "Applied")
            .into_iter()
            .find(|e| e["note"].as_str().is_some_and(|n| n.contains("pruned")))
    })
    .await;
    let note = pruned["note"].as_str().unwrap();
    assert!(note.contains("Deployment/quickstart-bcx"), "{note}");
    assert!(!note.contains("created"), "nothing new was created: {note}");
}

#[tokio::test]
async fn events_never_carry_the_admin_token() {
    let server = operator().await;
    create(&server, "quickstart").await;
    observed(&server, "quickstart", 1).await;
    let secret = server
        .object(&kaa_testkit::ObjectKey::core(
            "secrets",
            NS,
            "quickstart-admin-token",
        ))
        .unwrap();
    let token = secret["data"]["token"].as_str().unwrap().to_owned();
    eventually(WAIT, "events", || async {
        (!events_of(&server, "quickstart").is_empty()).then_some(())
    })
    .await;
    let all = serde_json::to_string(&server.objects("events.k8s.io", "v1", "events", None)).unwrap();
    assert!(!all.contains(&token));
}
