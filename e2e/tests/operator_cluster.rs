//! The operator against a real cluster: only when `KUBECONFIG` is set, else reported skipped.
//! Installs the CRD, runs the operator in this process (out of cluster) for one temporary,
//! labelled namespace, behind leader election with a Lease there, applies the smart-energy
//! sample and checks objects, status (device addresses included), events, the Lease and garbage
//! collection. It assumes no pod can run (a cluster without nodes is a valid target): Ready stays
//! False with a reason that says pods are not ready.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code

use std::time::Duration;

use k8s_openapi::{
    api::{apps::v1::Deployment, coordination::v1::Lease, core::v1::Namespace, events::v1::Event},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kaa_operator::{
    controller,
    crd::Blueprint,
    leader::{Elector, LeaseSettings},
};
use kaa_testkit::eventually;
use kube::{
    Api, Client, CustomResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn e2e_smart_energy_is_reconciled_and_collected() {
    if std::env::var_os("KUBECONFIG").is_none() {
        println!("skipped: KUBECONFIG is not set (no cluster to test the operator against)");
        return;
    }
    let client = Client::try_default().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "blueprints.kaa-rs.dev",
        &PatchParams::apply("kaa-e2e").force(),
        &Patch::Apply(Blueprint::crd()),
    )
    .await
    .unwrap();
    let ns = format!("kaa-e2e-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": ns, "labels": {"kaa-rs.dev/e2e": "true"}}
    }))
    .unwrap();
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let ctx = controller::Context::new(client.clone());
    let operator_ns = ns.clone();
    let mut elector = Elector::new(client.clone(), LeaseSettings::new("kaa-operator", &ns, "kaa-e2e"));
    let operator = tokio::spawn(async move {
        elector
            .run(
                || controller::run(ctx.clone(), Some(&operator_ns)),
                std::future::pending(),
            )
            .await
    });
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    eventually(WAIT, "the operator to hold the Lease", || async {
        let lease = leases.get_opt("kaa-operator").await.ok()??;
        (lease.spec?.holder_identity.as_deref() == Some("kaa-e2e")).then_some(())
    })
    .await;

    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../blueprints/smart-energy.yaml"
    ))
    .unwrap();
    let sample: Blueprint = serde_saphyr::from_str(&text).unwrap();
    // The CRD may take a moment to be served after it is created.
    let blueprints: Api<Blueprint> = Api::namespaced(client.clone(), &ns);
    eventually(WAIT, "the Blueprint to be accepted", || async {
        blueprints.create(&PostParams::default(), &sample).await.ok()
    })
    .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    eventually(WAIT, "nine Deployments", || async {
        let list = deployments.list(&ListParams::default()).await.ok()?;
        (list.items.len() == 9).then_some(())
    })
    .await;
    let bp = eventually(WAIT, "a status for generation 1", || async {
        let bp = blueprints.get("smart-energy").await.ok()?;
        (bp.status.as_ref()?.observed_generation == Some(1)).then_some(bp)
    })
    .await;
    let status = bp.status.unwrap();
    let kpc = status.services.iter().find(|s| s.kind == "kpc").unwrap();
    assert!(
        kpc.addresses
            .contains(&format!("mqtt://smart-energy-kpc.{ns}.svc:1883")),
        "{kpc:?}"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    eventually(WAIT, "an Applied event on the Blueprint", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("Applied")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("smart-energy")
            })
            .then_some(())
    })
    .await;
    let ready = status
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    if ready.status == "False" {
        assert_eq!(ready.reason, "ServicesNotReady", "{ready:?}");
    }
    // Garbage collection: deleting the Blueprint deletes what it owns.
    blueprints
        .delete("smart-energy", &DeleteParams::foreground())
        .await
        .unwrap();
    eventually(WAIT, "the Deployments to be collected", || async {
        let list = deployments.list(&ListParams::default()).await.ok()?;
        list.items.is_empty().then_some(())
    })
    .await;
    operator.abort();
    namespaces.delete(&ns, &DeleteParams::default()).await.unwrap();
}
