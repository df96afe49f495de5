//! The fake API server against kube's own `Api<Secret>`, watcher and reflector: if kube-rs accepts
//! its answers, components tested against it will behave the same against a real cluster.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

use std::{collections::BTreeMap, time::Duration};

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Secret},
};
use kaa_testkit::{FakeApiServer, ObjectKey, eventually};
use kube::{
    Api,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions},
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef},
        watcher,
    },
};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(10);

fn secret(name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

fn api_status(err: kube::Error) -> (u16, String) {
    match err {
        kube::Error::Api(status) => (status.code, status.reason),
        other => panic!("expected an API error, got {other}"),
    }
}

fn value(s: &Secret, key: &str) -> String {
    String::from_utf8(s.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

#[tokio::test]
async fn crud_with_conflicts_like_the_real_server() {
    let server = FakeApiServer::start().await;
    let api: Api<Secret> = Api::default_namespaced(server.client());
    let pp = PostParams::default();

    let created = api
        .create(&pp, &secret("a", &[("app", "kaa")], &[("k", "v1")]))
        .await
        .unwrap();
    let rv1 = created.metadata.resource_version.clone().unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some("default"));
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(value(&created, "k"), "v1");
    let (code, reason) = api_status(api.create(&pp, &secret("a", &[], &[])).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));
    api.create(&pp, &secret("b", &[("app", "other")], &[]))
        .await
        .unwrap();

    // Get and list with a label selector.
    assert_eq!(
        api.get("a").await.unwrap().metadata.resource_version,
        Some(rv1.clone())
    );
    let (code, reason) = api_status(api.get("nope").await.unwrap_err());
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    assert!(api.get_opt("nope").await.unwrap().is_none());
    let listed = api.list(&ListParams::default().labels("app=kaa")).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].metadata.name.as_deref(), Some("a"));
    assert_eq!(
        listed.metadata.resource_version.as_deref(),
        Some(server.revision().to_string().as_str())
    );
    assert_eq!(api.list(&ListParams::default()).await.unwrap().items.len(), 2);
    let other_ns: Api<Secret> = Api::namespaced(server.client(), "elsewhere");
    assert!(
        other_ns
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Replace: with the current resourceVersion it wins, with a stale one it is a conflict.
    let mut update = created.clone();
    update.data = Some(BTreeMap::from([("k".into(), ByteString(b"v2".to_vec()))]));
    let replaced = api.replace("a", &pp, &update).await.unwrap();
    let rv2 = replaced.metadata.resource_version.clone().unwrap();
    assert!(rv2.parse::<u64>().unwrap() > rv1.parse::<u64>().unwrap());
    assert_eq!(replaced.metadata.uid, created.metadata.uid, "uid is kept");
    let (code, reason) = api_status(api.replace("a", &pp, &update).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (409, "Conflict"));

    // Merge patch: adds one key, removes another with null; a stale resourceVersion conflicts.
    let patched = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"extra": "eA==", "k": null}})),
        )
        .await
        .unwrap();
    let data = patched.data.clone().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["extra"]);
    assert_eq!(value(&patched, "extra"), "x");
    let stale = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": rv2}, "data": {"y": "eQ=="}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_status(stale).0, 409);

    // stringData is folded into data, as the real server does.
    let mut with_string_data = secret("c", &[], &[]);
    with_string_data.string_data = Some(BTreeMap::from([("plain".into(), "text".into())]));
    let c = api.create(&pp, &with_string_data).await.unwrap();
    assert_eq!(value(&c, "plain"), "text");
    assert!(c.string_data.is_none());

    // Delete: a precondition on a stale resourceVersion conflicts; then it is gone.
    let stale_delete = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: Some(rv1),
            uid: None,
        }),
        ..Default::default()
    };
    assert_eq!(
        api_status(api.delete("a", &stale_delete).await.unwrap_err()).0,
        409
    );
    let deleted = api.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(deleted.is_right(), "a success Status, like the real server");
    assert_eq!(
        api_status(api.delete("a", &DeleteParams::default()).await.unwrap_err()).0,
        404
    );
    assert!(
        server
            .object(&ObjectKey::core("secrets", "default", "a"))
            .is_none()
    );
    assert!(
        server
            .object(&ObjectKey::core("secrets", "default", "b"))
            .is_some()
    );
}

#[tokio::test]
async fn other_kinds_work_too() {
    let server = FakeApiServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "ops");
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("settings".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("a".into(), "1".into())])),
        ..Default::default()
    };
    api.create(&PostParams::default(), &cm).await.unwrap();
    let got = api.get("settings").await.unwrap();
    assert_eq!(got.data.unwrap()["a"], "1");
    assert_eq!(server.objects("", "v1", "configmaps", Some("ops")).len(), 1);
    assert!(server.objects("", "v1", "secrets", None).is_empty());
}

#[tokio::test]
async fn watcher_and_reflector_see_every_change() {
    let server = FakeApiServer::start().await;
    let api: Api<Secret> = Api::default_namespaced(server.client());
    let pp = PostParams::default();
    api.create(&pp, &secret("before", &[("app", "kaa")], &[]))
        .await
        .unwrap();
    api.create(&pp, &secret("unrelated", &[("app", "other")], &[]))
        .await
        .unwrap();

    let (reader, writer) = reflector::store::<Secret>();
    let config = watcher::Config::default().labels("app=kaa");
    let mut events = reflector::reflector(writer, watcher(api.clone(), config).default_backoff())
        .applied_objects()
        .boxed();
    let first = events.try_next().await.unwrap().unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("before"));
    // The stream must keep being polled for the reflector to finish its initial list.
    tokio::spawn(async move { while events.next().await.is_some() {} });
    reader.wait_until_ready().await.unwrap();
    let names = |reader: &reflector::Store<Secret>| {
        let mut names: Vec<String> = reader
            .state()
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&reader), ["before"]);

    api.create(&pp, &secret("after", &[("app", "kaa")], &[("k", "v")]))
        .await
        .unwrap();
    eventually(DEADLINE, "the new Secret in the reflector", || async {
        (names(&reader) == ["after", "before"]).then_some(())
    })
    .await;

    // A change is seen with its new resourceVersion.
    let patched = api
        .patch(
            "after",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "dzI="}})),
        )
        .await
        .unwrap();
    let key = ObjectRef::new("after").within("default");
    eventually(DEADLINE, "the patch in the reflector", || async {
        let seen = reader.get(&key)?;
        (seen.metadata.resource_version == patched.metadata.resource_version).then_some(())
    })
    .await;

    // Leaving the selector is a deletion for this watch, entering it an addition.
    api.patch(
        "before",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "gone"}}})),
    )
    .await
    .unwrap();
    api.patch(
        "unrelated",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "kaa"}}})),
    )
    .await
    .unwrap();
    eventually(DEADLINE, "relabelled Secrets in the reflector", || async {
        (names(&reader) == ["after", "unrelated"]).then_some(())
    })
    .await;

    api.delete("after", &DeleteParams::default()).await.unwrap();
    eventually(DEADLINE, "the deletion in the reflector", || async {
        (names(&reader) == ["unrelated"]).then_some(())
    })
    .await;

    // Changes made while the watch is down and then compacted away: the resumed watch is told
    // 410 Expired, kube lists again, and the reflector ends up right all the same.
    server.block_watches(true);
    api.create(&pp, &secret("late", &[("app", "kaa")], &[]))
        .await
        .unwrap();
    api.delete("unrelated", &DeleteParams::default()).await.unwrap();
    server.compact();
    let lists = || {
        server
            .requests()
            .iter()
            .filter(|r| r.starts_with("GET ") && !r.contains("watch="))
            .count()
    };
    let lists_before = lists();
    server.block_watches(false);
    eventually(DEADLINE, "the changes made while the watch was down", || async {
        (names(&reader) == ["late"]).then_some(())
    })
    .await;
    assert!(lists() > lists_before, "kube listed again after 410");
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.starts_with("GET /api/v1/namespaces/default/secrets?") && r.contains("watch=true")),
        "{:?}",
        server.requests()
    );
}

#[tokio::test]
async fn watch_resumes_from_a_resource_version() {
    let server = FakeApiServer::start().await;
    let api: Api<Secret> = Api::default_namespaced(server.client());
    let pp = PostParams::default();
    api.create(&pp, &secret("one", &[], &[])).await.unwrap();
    let rv = server.revision().to_string();
    api.create(&pp, &secret("two", &[], &[])).await.unwrap();
    api.delete("one", &DeleteParams::default()).await.unwrap();

    let params = kube::api::WatchParams::default().timeout(1);
    let events: Vec<_> = api
        .watch(&params, &rv)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|e| match e {
            kube::api::WatchEvent::Added(s) => ("ADDED".into(), s.metadata.name.clone().unwrap()),
            kube::api::WatchEvent::Deleted(s) => ("DELETED".into(), s.metadata.name.clone().unwrap()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        seen,
        [("ADDED".into(), "two".into()), ("DELETED".into(), "one".into())]
    );
    // The deletion carries a resourceVersion newer than the object's last one.
    let kube::api::WatchEvent::Deleted(gone) = &events[1] else {
        unreachable!()
    };
    assert_eq!(
        gone.metadata.resource_version.as_deref(),
        Some(server.revision().to_string().as_str())
    );
}

#[tokio::test]
async fn a_write_that_changes_nothing_is_a_no_op() {
    let server = FakeApiServer::start().await;
    let api: Api<Secret> = Api::namespaced(server.client(), "default");
    let created = api
        .create(&PostParams::default(), &secret("same", &[], &[("k", "v")]))
        .await
        .unwrap();
    let revision = server.revision();
    let patch = json!({"data": {"k": "dg=="}});
    let patched = api
        .patch("same", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(
        patched.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(server.revision(), revision, "no new revision, no watch event");
    let changed = json!({"data": {"k": "dw=="}});
    let patched = api
        .patch("same", &PatchParams::default(), &Patch::Merge(&changed))
        .await
        .unwrap();
    assert_ne!(
        patched.metadata.resource_version,
        created.metadata.resource_version
    );
}
