//! The verbs on stored objects: list, get, create, replace, patch (JSON merge patch) and delete,
//! with the real server's preconditions and conflicts.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::{
    ObjectKey,
    routes::{Answer, conflict, failure, not_found},
    selector::Query,
    store::{Change, ChangeKind, Resource, Shared, api_version, commit_update, normalize},
};

pub(super) fn list(state: &Shared, resource: &Resource, namespace: Option<&str>, query: &Query) -> Answer {
    let selector = query.selector()?;
    let store = state.lock();
    let items: Vec<Value> = store
        .objects
        .iter()
        .filter(|(k, v)| k.same_collection(resource, namespace) && selector.matches(v))
        .map(|(_, v)| v.clone())
        .collect();
    Ok((
        StatusCode::OK,
        json!({
            "apiVersion": api_version(&resource.group, &resource.version),
            "kind": "List",
            "metadata": {"resourceVersion": store.revision.to_string()},
            "items": items,
        }),
    ))
}

pub(super) fn get(state: &Shared, key: &ObjectKey) -> Answer {
    match state.lock().objects.get(key) {
        Some(object) => Ok((StatusCode::OK, object.clone())),
        None => Err(not_found(key)),
    }
}

pub(super) fn create(state: &Shared, resource: &Resource, namespace: &str, mut object: Value) -> Answer {
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return Err(failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "metadata is required",
        ));
    };
    if let Some(ns) = meta.get("namespace").and_then(Value::as_str)
        && !ns.is_empty()
        && ns != namespace
    {
        return Err(failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let mut store = state.lock();
    let name = match (
        meta.get("name").and_then(Value::as_str),
        meta.get("generateName").and_then(Value::as_str),
    ) {
        (Some(name), _) if !name.is_empty() => name.to_owned(),
        (_, Some(prefix)) => format!("{prefix}{:05x}", store.revision + 1),
        _ => {
            return Err(failure(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                "metadata.name: Required value: name or generateName is required",
            ));
        }
    };
    let key = ObjectKey {
        group: resource.group.clone(),
        version: resource.version.clone(),
        plural: resource.plural.clone(),
        namespace: namespace.to_owned(),
        name,
    };
    if store.objects.contains_key(&key) {
        return Err(failure(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("{} \"{}\" already exists", key.plural, key.name),
        ));
    }
    store.revision += 1;
    let revision = store.revision;
    normalize(&mut object, &key, revision, None);
    store.objects.insert(key.clone(), object.clone());
    state.record(
        &mut store,
        Change {
            revision,
            key,
            kind: ChangeKind::Added,
            old: None,
            new: object.clone(),
        },
    );
    Ok((StatusCode::CREATED, object))
}

pub(super) fn replace(state: &Shared, key: &ObjectKey, body: Value, status_only: bool) -> Answer {
    let mut store = state.lock();
    let Some(current) = store.objects.get(key).cloned() else {
        return Err(not_found(key));
    };
    if let Some(expected) = body["metadata"]["resourceVersion"].as_str()
        && !expected.is_empty()
        && Some(expected) != current["metadata"]["resourceVersion"].as_str()
    {
        return Err(conflict(key));
    }
    let updated = match status_only {
        true => {
            let mut updated = current.clone();
            updated["status"] = body.get("status").cloned().unwrap_or(Value::Null);
            updated
        }
        false => {
            if body["metadata"]["name"].as_str().is_some_and(|n| n != key.name) {
                return Err(failure(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "the name of the object does not match the name on the URL",
                ));
            }
            let mut updated = body;
            // The status subresource owns status: a main-resource update keeps it.
            if let Some(status) = current.get("status") {
                updated["status"] = status.clone();
            }
            updated
        }
    };
    Ok((
        StatusCode::OK,
        commit_update(state, &mut store, key, current, updated),
    ))
}

pub(super) fn patch(
    state: &Shared,
    key: &ObjectKey,
    content_type: &str,
    patch: Value,
    status_only: bool,
) -> Answer {
    let media = content_type.split(';').next().unwrap_or("").trim();
    let create_if_missing = match media {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => false,
        "application/apply-patch+yaml" => true,
        other => {
            return Err(failure(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                &format!("the fake API server does not support patches of type {other:?}"),
            ));
        }
    };
    let mut store = state.lock();
    let current = match store.objects.get(key).cloned() {
        Some(current) => current,
        None if create_if_missing && !status_only => {
            drop(store);
            let resource = Resource {
                group: key.group.clone(),
                version: key.version.clone(),
                plural: key.plural.clone(),
            };
            let mut object = patch;
            object["metadata"]["name"] = key.name.clone().into();
            return create(state, &resource, &key.namespace, object);
        }
        None => return Err(not_found(key)),
    };
    if let Some(expected) = patch["metadata"]["resourceVersion"].as_str()
        && Some(expected) != current["metadata"]["resourceVersion"].as_str()
    {
        return Err(conflict(key));
    }
    let mut updated = current.clone();
    match status_only {
        true => merge(
            &mut updated["status"],
            patch.get("status").unwrap_or(&Value::Null),
        ),
        false => {
            merge(&mut updated, &patch);
            if let Some(status) = current.get("status") {
                updated["status"] = status.clone();
            }
        }
    }
    Ok((
        StatusCode::OK,
        commit_update(state, &mut store, key, current, updated),
    ))
}

/// RFC 7386 JSON merge patch.
pub(super) fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (k, v) in patch {
            if v.is_null() {
                map.remove(k);
            } else {
                merge(map.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

pub(super) fn delete(state: &Shared, key: &ObjectKey, options: &Value) -> Answer {
    let mut store = state.lock();
    let Some(current) = store.objects.get(key).cloned() else {
        return Err(not_found(key));
    };
    let preconditions = &options["preconditions"];
    let mismatch = |field: &str, actual: &Value| {
        preconditions[field]
            .as_str()
            .is_some_and(|expected| Some(expected) != actual.as_str())
    };
    if mismatch("resourceVersion", &current["metadata"]["resourceVersion"])
        || mismatch("uid", &current["metadata"]["uid"])
    {
        return Err(conflict(key));
    }
    store.objects.remove(key);
    store.revision += 1;
    let revision = store.revision;
    let mut last = current.clone();
    last["metadata"]["resourceVersion"] = revision.to_string().into();
    state.record(
        &mut store,
        Change {
            revision,
            key: key.clone(),
            kind: ChangeKind::Deleted,
            old: Some(current),
            new: last.clone(),
        },
    );
    // Like the real server for kinds without graceful deletion: a success Status.
    Ok((
        StatusCode::OK,
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {
                "name": key.name,
                "group": key.group,
                "kind": key.plural,
                "uid": last["metadata"]["uid"],
            },
        }),
    ))
}
