//! Unit tests of the EPR repository, each on a fresh SQLite store and a fresh PostgreSQL store.

use serde_json::json;

use super::*;
use crate::testing::on_both;

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

async fn register(store: &Store, app_version: &str) -> Endpoint {
    store
        .register(NewEndpoint {
            app_version: app_version.into(),
            ..Default::default()
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn register_assigns_a_uuid_and_get_returns_it() {
    on_both(|store| async move {
        let ep = register(&store, "smart-meter-v1").await;
        assert!(uuid::Uuid::parse_str(&ep.id).is_ok(), "{}", ep.id);
        assert!(ep.created_at > 0);
        assert_eq!(store.endpoint(&ep.id).await.unwrap(), ep);
        let md = store.metadata(&ep.id).await.unwrap();
        assert!(md.body.is_empty());
        assert_eq!(md.version, 1);
        assert_eq!(md.app_version, "smart-meter-v1");
    })
    .await;
}

#[tokio::test]
async fn register_with_caller_id_and_metadata() {
    on_both(|store| async move {
        let ep = store
            .register(NewEndpoint {
                id: Some("ep-1".into()),
                app_version: "v1".into(),
                metadata: Some(obj(json!({"model": "A300"}))),
            })
            .await
            .unwrap();
        assert_eq!(ep.id, "ep-1");
        assert_eq!(
            store.metadata("ep-1").await.unwrap().body,
            obj(json!({"model": "A300"}))
        );
        let again = store
            .register(NewEndpoint {
                id: Some("ep-1".into()),
                ..Default::default()
            })
            .await;
        assert!(matches!(again, Err(EprError::DuplicateEndpoint(id)) if id == "ep-1"));
    })
    .await;
}

#[tokio::test]
async fn register_rejects_bad_metadata_keys_and_stores_nothing() {
    on_both(|store| async move {
        let res = store
            .register(NewEndpoint {
                app_version: "v1".into(),
                metadata: Some(obj(json!({"bad-key": 1}))),
                ..Default::default()
            })
            .await;
        assert!(matches!(res, Err(EprError::InvalidMetadata(_))), "{res:?}");
        let page = store
            .list_endpoints(&ListFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.total, 0);
    })
    .await;
}

#[tokio::test]
async fn delete_removes_the_endpoint_and_its_metadata() {
    on_both(|store| async move {
        let ep = register(&store, "v1").await;
        assert_eq!(store.delete_endpoint(&ep.id).await.unwrap(), ep);
        assert!(matches!(
            store.endpoint(&ep.id).await,
            Err(EprError::EndpointNotFound(_))
        ));
        assert!(matches!(
            store.metadata(&ep.id).await,
            Err(EprError::EndpointNotFound(_))
        ));
        assert!(matches!(
            store.delete_endpoint(&ep.id).await,
            Err(EprError::EndpointNotFound(_))
        ));
    })
    .await;
}

#[tokio::test]
async fn list_filters_by_app_version_and_pages() {
    on_both(|store| async move {
        let mut v1 = Vec::new();
        for _ in 0..5 {
            v1.push(register(&store, "v1").await.id);
        }
        let v2 = register(&store, "v2").await.id;
        register(&store, "other").await;

        let all = store
            .list_endpoints(&ListFilter {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all.total, 7);
        assert_eq!(all.items.len(), 7);

        let filter = |versions: &[&str], offset, limit| ListFilter {
            app_versions: Some(versions.iter().map(|s| s.to_string()).collect()),
            offset,
            limit,
            ..Default::default()
        };
        let page = store.list_endpoints(&filter(&["v1"], 0, 2)).await.unwrap();
        assert_eq!(page.total, 5);
        let mut seen: Vec<String> = page.items.into_iter().map(|e| e.endpoint.id).collect();
        let page = store.list_endpoints(&filter(&["v1"], 2, 2)).await.unwrap();
        seen.extend(page.items.into_iter().map(|e| e.endpoint.id));
        let page = store.list_endpoints(&filter(&["v1"], 4, 2)).await.unwrap();
        assert_eq!((page.items.len(), page.total), (1, 5), "the last page counts all");
        seen.extend(page.items.into_iter().map(|e| e.endpoint.id));
        let mut expected = v1.clone();
        expected.sort();
        seen.sort();
        assert_eq!(seen, expected, "pages cover each endpoint exactly once");

        let both = store
            .list_endpoints(&filter(&["v1", "v2"], 0, 100))
            .await
            .unwrap();
        assert_eq!(both.total, 6);
        assert!(both.items.iter().any(|e| e.endpoint.id == v2));
        let none = store.list_endpoints(&filter(&[], 0, 100)).await.unwrap();
        assert_eq!(
            none,
            EndpointPage {
                items: vec![],
                total: 0
            }
        );
        let past_end = store.list_endpoints(&filter(&["v1"], 50, 10)).await.unwrap();
        assert_eq!((past_end.items.len(), past_end.total), (0, 5));
    })
    .await;
}

#[tokio::test]
async fn replace_and_key_operations_bump_the_version() {
    on_both(|store| async move {
        let ep = register(&store, "v1").await;
        let up = store
            .replace_metadata(&ep.id, obj(json!({"a": 1, "b": [1, 2]})), None)
            .await
            .unwrap();
        assert_eq!(up.previous, Map::new());
        assert_eq!(up.current.version, 2);
        let up = store
            .set_metadata_key(&ep.id, "c", json!({"x": null}), Some(2))
            .await
            .unwrap();
        assert_eq!(up.current.version, 3);
        assert_eq!(store.metadata_keys(&ep.id).await.unwrap(), vec!["a", "b", "c"]);
        let up = store.delete_metadata_key(&ep.id, "a", None).await.unwrap();
        assert_eq!(up.current.body, obj(json!({"b": [1, 2], "c": {"x": null}})));
        assert_eq!(up.current.version, 4);
        assert!(matches!(
            store.delete_metadata_key(&ep.id, "a", None).await,
            Err(EprError::KeyNotFound(k)) if k == "a"
        ));
        assert!(matches!(
            store.set_metadata_key(&ep.id, "no-dash", json!(1), None).await,
            Err(EprError::InvalidMetadata(_))
        ));
        assert!(matches!(
            store.replace_metadata(&ep.id, obj(json!({"": 1})), None).await,
            Err(EprError::InvalidMetadata(_))
        ));
        assert!(matches!(
            store.set_metadata_key("missing", "k", json!(1), None).await,
            Err(EprError::EndpointNotFound(_))
        ));
        assert_eq!(
            store.metadata(&ep.id).await.unwrap().version,
            4,
            "failed writes change nothing"
        );
    })
    .await;
}

#[tokio::test]
async fn if_match_rejects_a_stale_version() {
    on_both(|store| async move {
        let ep = register(&store, "v1").await;
        store
            .set_metadata_key(&ep.id, "a", json!(1), Some(1))
            .await
            .unwrap();
        let stale = store.set_metadata_key(&ep.id, "a", json!(2), Some(1)).await;
        assert!(
            matches!(
                stale,
                Err(EprError::VersionMismatch {
                    expected: 1,
                    current: 2
                })
            ),
            "{stale:?}"
        );
        assert_eq!(store.metadata(&ep.id).await.unwrap().body, obj(json!({"a": 1})));
    })
    .await;
}

#[tokio::test]
async fn json_patch_is_applied_atomically() {
    on_both(|store| async move {
        let ep = register(&store, "v1").await;
        store
            .replace_metadata(&ep.id, obj(json!({"a": 1, "b": 2})), None)
            .await
            .unwrap();
        let patch: Patch = serde_json::from_value(json!([
            {"op": "add", "path": "/c", "value": "x"},
            {"op": "remove", "path": "/a"},
            {"op": "replace", "path": "/b", "value": 3}
        ]))
        .unwrap();
        let up = store.patch_metadata(&ep.id, &patch, Some(2)).await.unwrap();
        assert_eq!(up.current.body, obj(json!({"b": 3, "c": "x"})));
        assert_eq!(up.previous, obj(json!({"a": 1, "b": 2})));

        // The second op fails, so the first must not stick.
        let failing: Patch = serde_json::from_value(json!([
            {"op": "add", "path": "/d", "value": 1},
            {"op": "remove", "path": "/missing"}
        ]))
        .unwrap();
        assert!(matches!(
            store.patch_metadata(&ep.id, &failing, None).await,
            Err(EprError::Patch(_))
        ));
        let bad_key: Patch =
            serde_json::from_value(json!([{"op": "add", "path": "/bad key", "value": 1}])).unwrap();
        assert!(matches!(
            store.patch_metadata(&ep.id, &bad_key, None).await,
            Err(EprError::InvalidMetadata(_))
        ));
        let not_object: Patch =
            serde_json::from_value(json!([{"op": "replace", "path": "", "value": [1]}])).unwrap();
        assert!(matches!(
            store.patch_metadata(&ep.id, &not_object, None).await,
            Err(EprError::InvalidMetadata(_))
        ));
        let md = store.metadata(&ep.id).await.unwrap();
        assert_eq!((md.body, md.version), (obj(json!({"b": 3, "c": "x"})), 3));
    })
    .await;
}

#[tokio::test]
async fn concurrent_writers_do_not_lose_updates() {
    on_both(|store| async move {
        let ep = register(&store, "v1").await;
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                let id = ep.id.clone();
                tokio::spawn(async move {
                    store
                        .set_metadata_key(&id, &format!("k{i}"), json!(i), None)
                        .await
                })
            })
            .collect();
        let mut versions = Vec::new();
        for t in tasks {
            let update = t.await.unwrap().unwrap();
            // Each write changed the object it read: one key more than before.
            assert_eq!(update.current.body.len(), update.previous.len() + 1);
            assert_eq!(
                i64::try_from(update.previous.len()).unwrap(),
                update.current.version - 2
            );
            versions.push(update.current.version);
        }
        versions.sort();
        assert_eq!(
            versions,
            (2..=9).collect::<Vec<i64>>(),
            "each write got its own version"
        );
        let md = store.metadata(&ep.id).await.unwrap();
        assert_eq!(md.body.len(), 8, "{:?}", md.body);
        assert_eq!(md.version, 9);
    })
    .await;
}

#[tokio::test]
async fn concurrent_moves_each_see_the_previous_version() {
    on_both(|store| async move {
        let ep = register(&store, "v0").await;
        let tasks: Vec<_> = (1..=8)
            .map(|i| {
                let (store, id) = (store.clone(), ep.id.clone());
                tokio::spawn(async move { store.move_endpoint(&id, &format!("v{i}")).await })
            })
            .collect();
        let mut before = Vec::new();
        for t in tasks {
            before.push(t.await.unwrap().unwrap().app_version);
        }
        // Serialised moves: each replaced a different version, and exactly one replaced v0.
        before.sort();
        before.dedup();
        assert_eq!(before.len(), 8, "{before:?}");
        assert!(before.contains(&"v0".to_owned()));
    })
    .await;
}

#[tokio::test]
async fn deleting_while_writing_metadata_never_deadlocks() {
    on_both(|store| async move {
        for _ in 0..5 {
            let ep = register(&store, "v1").await;
            let writer = {
                let (store, id) = (store.clone(), ep.id.clone());
                tokio::spawn(async move {
                    for i in 0..10 {
                        match store.set_metadata_key(&id, "k", json!(i), None).await {
                            Ok(_) | Err(EprError::EndpointNotFound(_)) => {}
                            Err(e) => panic!("write failed: {e}"),
                        }
                    }
                })
            };
            store.delete_endpoint(&ep.id).await.unwrap();
            writer.await.unwrap();
        }
    })
    .await;
}

#[test]
fn key_pattern() {
    for ok in ["a", "Model_2", "_", "ABC123"] {
        assert!(is_valid_metadata_key(ok), "{ok}");
    }
    for bad in ["", "a-b", "a b", "ключ", "a.b", "a/b", "~"] {
        assert!(!is_valid_metadata_key(bad), "{bad}");
    }
}

#[tokio::test]
async fn search_matches_ids_and_metadata_ignoring_case_and_wildcards() {
    on_both(|store| async move {
        let kitchen = store
            .register(NewEndpoint {
                app_version: "v1".into(),
                metadata: Some(obj(json!({"meterDescription": "Kitchen Meter", "model": "A300"}))),
                ..Default::default()
            })
            .await
            .unwrap();
        let percent = store
            .register(NewEndpoint {
                app_version: "v1".into(),
                metadata: Some(obj(json!({"note": "100% charged"}))),
                ..Default::default()
            })
            .await
            .unwrap();
        register(&store, "v2").await;
        let search = |text: &str, versions: Option<Vec<String>>| ListFilter {
            app_versions: versions,
            search: Some(text.to_owned()),
            limit: 100,
            ..Default::default()
        };
        let ids = |page: EndpointPage| page.items.into_iter().map(|e| e.endpoint.id).collect::<Vec<_>>();
        let page = store
            .list_endpoints(&search("kitchen meter", None))
            .await
            .unwrap();
        assert_eq!(page.total, 1);
        assert_eq!(ids(page), std::slice::from_ref(&kitchen.id));
        let by_id = &kitchen.id[..8];
        assert_eq!(
            ids(store
                .list_endpoints(&search(&by_id.to_uppercase(), None))
                .await
                .unwrap()),
            std::slice::from_ref(&kitchen.id)
        );
        // `%` and `_` are text, not wildcards.
        assert_eq!(
            ids(store.list_endpoints(&search("100%", None)).await.unwrap()),
            std::slice::from_ref(&percent.id)
        );
        assert_eq!(store.list_endpoints(&search("a_3", None)).await.unwrap().total, 0);
        // With the version filter too.
        let none = store
            .list_endpoints(&search("kitchen", Some(vec!["v2".into()])))
            .await
            .unwrap();
        assert_eq!(none.total, 0);
    })
    .await;
}
