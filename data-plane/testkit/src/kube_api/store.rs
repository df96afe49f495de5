//! The object store: objects by key, the global resourceVersion counter, the change history watches
//! replay, and the fields the server owns on every object it stores.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::ObjectKey;

/// group/version/plural of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Resource {
    pub(super) group: String,
    pub(super) version: String,
    pub(super) plural: String,
}

#[derive(Debug, Default)]
pub(super) struct Shared {
    pub(super) store: Mutex<Store>,
    pub(super) live: Option<broadcast::Sender<Arc<Change>>>,
}

/// Whether watches are being refused ([`FakeApiServer::block_watches`]), and the signal that ends
/// the open ones.
#[derive(Debug, Default)]
pub(super) struct WatchGate {
    pub(super) blocked: bool,
    pub(super) open: CancellationToken,
}

#[derive(Debug, Default)]
pub(super) struct Store {
    /// The last resourceVersion handed out.
    pub(super) revision: u64,
    pub(super) objects: BTreeMap<ObjectKey, Value>,
    /// Every change after `compacted`, oldest first.
    pub(super) history: VecDeque<Arc<Change>>,
    /// Watches from a resourceVersion below this get 410 Expired.
    pub(super) compacted: u64,
    pub(super) gate: WatchGate,
    /// `METHOD path?query` of every request, in order.
    pub(super) requests: Vec<String>,
}

#[derive(Debug)]
pub(super) enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

#[derive(Debug)]
pub(super) struct Change {
    pub(super) revision: u64,
    pub(super) key: ObjectKey,
    pub(super) kind: ChangeKind,
    /// The object before the change (none for an addition).
    pub(super) old: Option<Value>,
    /// The object after it; for a deletion, its last state stamped with the deletion's revision.
    pub(super) new: Value,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock already failed the test; keep serving the others.
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a change and tells live watches, under the lock so that a watch that snapshots the
    /// history and subscribes under the same lock sees every change exactly once.
    pub(super) fn record(&self, store: &mut Store, change: Change) {
        let change = Arc::new(change);
        store.history.push_back(change.clone());
        if let Some(live) = &self.live {
            // No receivers is fine: nobody watches.
            let _ = live.send(change);
        }
    }
}

pub(super) fn commit_update(
    state: &Shared,
    store: &mut Store,
    key: &ObjectKey,
    current: Value,
    mut updated: Value,
) -> Value {
    let revision = store.revision + 1;
    normalize(&mut updated, key, revision, Some(&current));
    // Like the real server, a write that changes nothing is a no-op: same resourceVersion, no
    // watch event.
    let mut unchanged = updated.clone();
    unchanged["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
    if unchanged == current {
        return current;
    }
    store.revision = revision;
    store.objects.insert(key.clone(), updated.clone());
    state.record(
        store,
        Change {
            revision,
            key: key.clone(),
            kind: ChangeKind::Modified,
            old: Some(current),
            new: updated.clone(),
        },
    );
    updated
}

/// Server-owned fields: identity, resourceVersion, uid, creationTimestamp, generation; a Secret's
/// `stringData` folded into `data`.
pub(super) fn normalize(object: &mut Value, key: &ObjectKey, revision: u64, previous: Option<&Value>) {
    if object.get("apiVersion").is_none_or(Value::is_null) {
        object["apiVersion"] = api_version(&key.group, &key.version).into();
    }
    if key.group.is_empty()
        && key.plural == "secrets"
        && let Some(string_data) = object.get_mut("stringData").map(Value::take)
    {
        if let Value::Object(entries) = string_data {
            for (k, v) in entries {
                let text = v.as_str().unwrap_or_default();
                object["data"][k] = STANDARD.encode(text).into();
            }
        }
        if let Some(map) = object.as_object_mut() {
            map.remove("stringData");
        }
    }
    let generation = match previous {
        None => 1,
        Some(prev) => {
            let old_generation = prev["metadata"]["generation"].as_i64().unwrap_or(1);
            match spec_of(prev) == spec_of(object) {
                true => old_generation,
                false => old_generation + 1,
            }
        }
    };
    let meta = &mut object["metadata"];
    meta["name"] = key.name.clone().into();
    if key.namespace.is_empty() {
        if let Some(m) = meta.as_object_mut() {
            m.remove("namespace");
        }
    } else {
        meta["namespace"] = key.namespace.clone().into();
    }
    meta["resourceVersion"] = revision.to_string().into();
    meta["generation"] = generation.into();
    match previous {
        Some(prev) => {
            meta["uid"] = prev["metadata"]["uid"].clone();
            meta["creationTimestamp"] = prev["metadata"]["creationTimestamp"].clone();
        }
        None => {
            meta["uid"] = format!("00000000-0000-4000-8000-{revision:012x}").into();
            meta["creationTimestamp"] = rfc3339_now().into();
        }
    }
}

/// Everything but metadata and status: what `generation` counts changes of.
pub(super) fn spec_of(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

pub(super) fn api_version(group: &str, version: &str) -> String {
    match group.is_empty() {
        true => version.to_owned(),
        false => format!("{group}/{version}"),
    }
}

/// Now as RFC 3339 UTC with second precision (`2026-01-02T03:04:05Z`), the API's timestamp form.
pub(super) fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 -> (year, month, day) in the proleptic Gregorian calendar (H. Hinnant's
/// algorithm).
pub(super) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}
