//! `kaa-operator provide` as a process on a real nats-server: it serves a Blueprint file's configs,
//! announces a saved edit (17/SCMP), keeps serving the previous configs through an invalid edit,
//! and prints the rollout the replicas' reports add up to.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::path::Path;

use bytes::Bytes;
use kaa_bus::{Bus, Subscription};
use kaa_e2e::{DEADLINE, provide::ConfigProvider};
use kaa_protocol::{
    avro::AvroRecord,
    scmp::{ConfigAppliedEvent, PROVIDER, UPSERT},
    subject,
};
use kaa_testkit::NatsServer;
use serde_json::Value;

const V1: &str = "          extensions: [epmx, dcx, cmx, cmx_ota, cex, bcx]\n";

fn quickstart() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../blueprints/quickstart.yaml"))
        .unwrap()
}

/// The quickstart with a second application version.
pub fn with_v2(quickstart: &str) -> String {
    assert!(quickstart.contains(V1));
    quickstart.replace(
        V1,
        &format!("{V1}        - name: demo_application_v2\n          extensions: [epmx]\n"),
    )
}

async fn fetch(provider: &ConfigProvider, instance: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(provider.config_url(instance))
        .bearer_auth(provider.token())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Announcement subjects up to and including the next broadcast.
async fn batch(announcements: &mut Subscription) -> Vec<String> {
    let broadcast = subject::scmp_broadcast_configuration(PROVIDER, UPSERT);
    let mut subjects = Vec::new();
    while subjects.last() != Some(&broadcast) {
        let message = tokio::time::timeout(DEADLINE, announcements.next())
            .await
            .expect("an announcement")
            .unwrap();
        subjects.push(message.subject);
    }
    subjects
}

async fn report(bus: &Bus, replica: &str, version: &str) {
    let event = ConfigAppliedEvent {
        correlation_id: replica.into(),
        timestamp: 1,
        service_instance_name: "kpc".into(),
        originator_replica_id: replica.into(),
        version: version.into(),
        error: None,
        rejected_version: None,
    };
    bus.publish(&subject::scmp_config_applied("kpc"), Bytes::from(event.to_avro()))
        .await
        .unwrap();
}

#[tokio::test]
async fn provide_serves_announces_and_reports_a_blueprint_file() {
    let nats = NatsServer::start().await;
    let bus = Bus::connect_nats(&nats.url).await.unwrap();
    let mut announcements = bus.subscribe("kaa.v1.*.*.*.configuration.*", None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let quickstart = quickstart();
    let provider = ConfigProvider::start(dir.path(), &quickstart, &nats.url).await;
    let first = provider.event("served", |e| e["generation"] == 1).await;
    let (status, body) = fetch(&provider, "kpc").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], first["versions"]["kpc"]);
    assert_eq!(body["blueprint"], "default/quickstart");

    // Connected, nobody reported: True. Then the edit.
    provider.event("rollout", |e| e["status"] == "True").await;
    provider.edit(&with_v2(&quickstart));
    let second = provider.event("served", |e| e["generation"] == 2).await;
    let v2 = second["versions"]["kpc"].as_str().unwrap().to_owned();
    assert_ne!(v2, first["versions"]["kpc"].as_str().unwrap());
    assert!(
        second["upserted"].as_array().unwrap().contains(&"kpc".into()),
        "{second}"
    );
    let (_, body) = fetch(&provider, "kpc").await;
    assert_eq!(
        (body["version"].as_str(), body["generation"].as_i64()),
        (Some(v2.as_str()), Some(2))
    );
    let first_batch = batch(&mut announcements).await;
    assert_eq!(
        first_batch.len(),
        12,
        "every instance at start, then the broadcast: {first_batch:?}"
    );
    let edited = batch(&mut announcements).await;
    assert!(
        edited.contains(&subject::scmp_service_configuration("kpc", "upsert")),
        "{edited:?}"
    );

    // Replicas report: one behind, then both on the new version.
    report(&bus, "kpc-0", &v2).await;
    report(&bus, "kpc-1", first["versions"]["kpc"].as_str().unwrap()).await;
    let rolling = provider
        .event("rollout", |e| e["reason"] == "RollingOut" && e["generation"] == 2)
        .await;
    assert_eq!(rolling["message"], format!("kpc: 1/2 replicas run {v2}"));
    report(&bus, "kpc-1", &v2).await;
    let done = provider
        .event("rollout", |e| {
            e["status"] == "True"
                && e["generation"] == 2
                && e["instances"].to_string().contains("\"applied\":2")
        })
        .await;
    assert_eq!(done["blueprint"], "default/quickstart");

    // An invalid edit is refused; the previous configs stay served.
    provider.edit(&quickstart.replace("kind: epr", "kind: nope"));
    let invalid = provider.event("invalid", |_| true).await;
    assert!(invalid["error"].as_str().unwrap().contains("nope"), "{invalid}");
    let (_, body) = fetch(&provider, "kpc").await;
    assert_eq!(body["version"], v2.as_str());
}
