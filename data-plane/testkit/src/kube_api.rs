//! A stateful fake Kubernetes API server: enough of the real one's REST semantics for kube-rs
//! clients, watchers and reflectors to run against it in a test, with no cluster.
//!
//! It keeps JSON objects keyed by group / version / plural / namespace / name, so any kind works
//! without registering it (core `v1` Secrets today; ConfigMaps, Deployments or custom resources
//! for the operator tomorrow). Served, with the real server's status codes and `Status` bodies:
//!
//! | request | |
//! |---|---|
//! | `GET` collection | list; `labelSelector` (`=`, `==`, `!=`, `in`, `notin`, exists, `!`), `fieldSelector` (`metadata.name`, `metadata.namespace`); the list's `resourceVersion` is the current one |
//! | `GET` collection `?watch=true` | newline-delimited `{"type":"ADDED"\|"MODIFIED"\|"DELETED","object":..}` after `resourceVersion`, filtered like a list (an object leaving the selector is `DELETED`, entering it `ADDED`); `timeoutSeconds` ends the stream, `allowWatchBookmarks` is accepted; a `resourceVersion` older than [`FakeApiServer::compact`] left gets `410 Expired` |
//! | `POST` collection | create; `409 AlreadyExists`; `generateName` |
//! | `GET` object | `404 NotFound` |
//! | `PUT` object | replace; `409 Conflict` when `metadata.resourceVersion` is set and stale |
//! | `PATCH` object | JSON merge patch (also for `strategic-merge-patch` and, simplified to a merge that creates if missing, `apply-patch`); a `resourceVersion` in the patch is a precondition |
//! | `DELETE` object | `DeleteOptions.preconditions` (`resourceVersion`, `uid`) -> `409 Conflict`; answers a success `Status` |
//! | `.../{name}/status` | `GET`, `PUT`, `PATCH` of the status subresource (only `status` changes) |
//!
//! The server sets `resourceVersion` from one global counter (like etcd's revision), `uid`,
//! `creationTimestamp` and `generation` (bumped when anything but metadata and status changes), and
//! folds a Secret's `stringData` into `data`. Not modelled: pagination (`limit` is ignored and
//! everything returned in one page), admission, validation of object schemas, finalizers and
//! graceful deletion, managed fields and server-side apply conflicts, authentication.
//!
//! [`FakeApiServer::client`] builds a `kube::Client` for it; [`FakeApiServer::requests`] tells a
//! test which calls a component made (for example that a cache answered without the server).

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use futures_util::{StreamExt, stream};
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// How many changes a live watch may fall behind before its stream is closed (the client then
/// re-watches from its last resourceVersion and is replayed from the history).
const LIVE_BUFFER: usize = 4096;

/// A running fake API server on 127.0.0.1; stops (and ends every watch) when dropped.
#[derive(Debug)]
pub struct FakeApiServer {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    pub addr: SocketAddr,
    state: Arc<Shared>,
    shutdown: CancellationToken,
}

/// One stored object's identity: which resource, where, what name. `namespace` is empty for
/// cluster-scoped objects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    /// A core `v1` object, e.g. `ObjectKey::core("secrets", "default", "my-secret")`.
    pub fn core(plural: &str, namespace: &str, name: &str) -> ObjectKey {
        ObjectKey {
            group: String::new(),
            version: "v1".into(),
            plural: plural.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    fn same_collection(&self, resource: &Resource, namespace: Option<&str>) -> bool {
        self.group == resource.group
            && self.version == resource.version
            && self.plural == resource.plural
            && namespace.is_none_or(|ns| ns == self.namespace)
    }
}

#[derive(Debug, Default)]
struct Shared {
    store: Mutex<Store>,
    live: Option<broadcast::Sender<Arc<Change>>>,
}

/// Whether watches are being refused ([`FakeApiServer::block_watches`]), and the signal that ends
/// the open ones.
#[derive(Debug, Default)]
struct WatchGate {
    blocked: bool,
    open: CancellationToken,
}

#[derive(Debug, Default)]
struct Store {
    /// The last resourceVersion handed out.
    revision: u64,
    objects: BTreeMap<ObjectKey, Value>,
    /// Every change after `compacted`, oldest first.
    history: VecDeque<Arc<Change>>,
    /// Watches from a resourceVersion below this get 410 Expired.
    compacted: u64,
    gate: WatchGate,
    /// `METHOD path?query` of every request, in order.
    requests: Vec<String>,
}

#[derive(Debug)]
enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

#[derive(Debug)]
struct Change {
    revision: u64,
    key: ObjectKey,
    kind: ChangeKind,
    /// The object before the change (none for an addition).
    old: Option<Value>,
    /// The object after it; for a deletion, its last state stamped with the deletion's revision.
    new: Value,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock already failed the test; keep serving the others.
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a change and tells live watches, under the lock so that a watch that snapshots the
    /// history and subscribes under the same lock sees every change exactly once.
    fn record(&self, store: &mut Store, change: Change) {
        let change = Arc::new(change);
        store.history.push_back(change.clone());
        if let Some(live) = &self.live {
            // No receivers is fine: nobody watches.
            let _ = live.send(change);
        }
    }
}

impl FakeApiServer {
    /// Binds 127.0.0.1:0 and serves until dropped.
    pub async fn start() -> FakeApiServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("fake API server: cannot bind 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("fake API server: no local address: {e}"));
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        let state = Arc::new(Shared {
            store: Mutex::default(),
            live: Some(live),
        });
        let shutdown = CancellationToken::new();
        let app = Router::new().fallback(handle).with_state(Handler {
            state: state.clone(),
            shutdown: shutdown.clone(),
        });
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = server.await {
                panic!("fake API server stopped: {e}");
            }
        });
        FakeApiServer {
            url: format!("http://{addr}"),
            addr,
            state,
            shutdown,
        }
    }

    /// A client for this server whose default namespace is `default`.
    pub fn client(&self) -> kube::Client {
        self.client_in("default")
    }

    /// A client for this server whose default namespace is `namespace`.
    pub fn client_in(&self, namespace: &str) -> kube::Client {
        let uri = self
            .url
            .parse()
            .unwrap_or_else(|e| panic!("fake API server URL {}: {e}", self.url));
        let mut config = kube::Config::new(uri);
        config.default_namespace = namespace.to_owned();
        kube::Client::try_from(config).unwrap_or_else(|e| panic!("kube client for the fake API server: {e}"))
    }

    /// The stored object, as the server would return it.
    pub fn object(&self, key: &ObjectKey) -> Option<Value> {
        self.state.lock().objects.get(key).cloned()
    }

    /// Every stored object of one resource in one namespace (all namespaces with `None`).
    pub fn objects(&self, group: &str, version: &str, plural: &str, namespace: Option<&str>) -> Vec<Value> {
        let resource = Resource {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
        };
        self.state
            .lock()
            .objects
            .iter()
            .filter(|(k, _)| k.same_collection(&resource, namespace))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The current (last handed out) resourceVersion.
    pub fn revision(&self) -> u64 {
        self.state.lock().revision
    }

    /// `METHOD path?query` of every request served so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().requests.clone()
    }

    /// While `blocked`, ends every open watch and answers new ones `503` (as an API server that is
    /// restarting would): watchers back off and retry, other requests are served as usual. With
    /// [`Self::compact`] this forces clients to list again after missing changes.
    pub fn block_watches(&self, blocked: bool) {
        let mut store = self.state.lock();
        store.gate.blocked = blocked;
        if blocked {
            store.gate.open.cancel();
            store.gate.open = CancellationToken::new();
        }
    }

    /// Forgets the change history, like etcd compaction: a watch resuming from an older
    /// resourceVersion gets `410 Expired` and its client must list again.
    pub fn compact(&self) {
        let mut store = self.state.lock();
        store.history.clear();
        store.compacted = store.revision;
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[derive(Debug, Clone)]
struct Handler {
    state: Arc<Shared>,
    shutdown: CancellationToken,
}

// --- routing ---------------------------------------------------------------------------------

/// group/version/plural of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resource {
    group: String,
    version: String,
    plural: String,
}

#[derive(Debug)]
enum Target {
    /// A collection; `namespace: None` is "all namespaces" (or a cluster-scoped collection).
    Collection {
        resource: Resource,
        namespace: Option<String>,
    },
    Object {
        key: ObjectKey,
        status: bool,
    },
}

fn parse_target(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let resource = |plural: &str| Resource {
        group: group.into(),
        version: version.into(),
        plural: plural.into(),
    };
    let object = |namespace: &str, plural: &str, name: &str, status: bool| Target::Object {
        key: ObjectKey {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            namespace: namespace.into(),
            name: name.into(),
        },
        status,
    };
    Some(match rest {
        ["namespaces", ns, plural] => Target::Collection {
            resource: resource(plural),
            namespace: Some((*ns).to_owned()),
        },
        ["namespaces", ns, plural, name] => object(ns, plural, name, false),
        ["namespaces", ns, plural, name, "status"] => object(ns, plural, name, true),
        [plural] => Target::Collection {
            resource: resource(plural),
            namespace: None,
        },
        [plural, name] => object("", plural, name, false),
        [plural, name, "status"] => object("", plural, name, true),
        _ => return None,
    })
}

async fn handle(
    State(handler): State<Handler>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path_and_query = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    handler
        .state
        .lock()
        .requests
        .push(format!("{method} {path_and_query}"));
    let query = Query::parse(uri.query().unwrap_or(""));
    let Some(target) = parse_target(uri.path()) else {
        return failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("no route for {}", uri.path()),
        )
        .into_response();
    };
    let result = match (target, method) {
        (Target::Collection { resource, namespace }, Method::GET) if query.is_watch() => {
            return watch(&handler, &resource, namespace.as_deref(), &query);
        }
        (Target::Collection { resource, namespace }, Method::GET) => {
            list(&handler.state, &resource, namespace.as_deref(), &query)
        }
        (
            Target::Collection {
                resource,
                namespace: Some(ns),
            },
            Method::POST,
        ) => parse_body(&body).and_then(|obj| create(&handler.state, &resource, &ns, obj)),
        (Target::Collection { resource, .. }, Method::POST) => {
            // Cluster-scoped create.
            parse_body(&body).and_then(|obj| create(&handler.state, &resource, "", obj))
        }
        (Target::Object { key, .. }, Method::GET) => get(&handler.state, &key),
        (Target::Object { key, status }, Method::PUT) => {
            parse_body(&body).and_then(|obj| replace(&handler.state, &key, obj, status))
        }
        (Target::Object { key, status }, Method::PATCH) => {
            let content_type = headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            parse_body(&body).and_then(|p| patch(&handler.state, &key, content_type, p, status))
        }
        (Target::Object { key, status: false }, Method::DELETE) => {
            let options = match body.is_empty() {
                true => Ok(Value::Null),
                false => parse_body(&body),
            };
            options.and_then(|o| delete(&handler.state, &key, &o))
        }
        (_, method) => Err(failure(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("{method} is not supported here"),
        )),
    };
    match result {
        Ok((code, value)) => (code, axum::Json(value)).into_response(),
        Err(failure) => failure.into_response(),
    }
}

type Answer = Result<(StatusCode, Value), Failure>;

fn parse_body(body: &[u8]) -> Result<Value, Failure> {
    serde_json::from_slice(body).map_err(|e| {
        failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("invalid JSON body: {e}"),
        )
    })
}

/// A refused request: answered with a `Status` failure body, as the real server does.
#[derive(Debug)]
struct Failure {
    code: StatusCode,
    reason: String,
    message: String,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = status_body(self.code, &self.reason, &self.message);
        (self.code, axum::Json(body)).into_response()
    }
}

fn failure(code: StatusCode, reason: &str, message: &str) -> Failure {
    Failure {
        code,
        reason: reason.to_owned(),
        message: message.to_owned(),
    }
}

fn status_body(code: StatusCode, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    })
}

fn not_found(key: &ObjectKey) -> Failure {
    failure(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{} \"{}\" not found", key.plural, key.name),
    )
}

fn conflict(key: &ObjectKey) -> Failure {
    failure(
        StatusCode::CONFLICT,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply \
             your changes to the latest version and try again",
            key.plural, key.name
        ),
    )
}

// --- query parameters ------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Query {
    params: BTreeMap<String, String>,
}

impl Query {
    fn parse(query: &str) -> Query {
        let params = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        Query { params }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    fn is_watch(&self) -> bool {
        matches!(self.get("watch"), Some("true" | "1"))
    }

    fn selector(&self) -> Result<Selector, Failure> {
        let labels = parse_label_selector(self.get("labelSelector").unwrap_or(""))
            .map_err(|e| failure(StatusCode::BAD_REQUEST, "BadRequest", &e))?;
        let fields = parse_field_selector(self.get("fieldSelector").unwrap_or(""))
            .map_err(|e| failure(StatusCode::BAD_REQUEST, "BadRequest", &e))?;
        Ok(Selector { labels, fields })
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// --- selectors -------------------------------------------------------------------------------

#[derive(Debug)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Debug, Default)]
struct Selector {
    labels: Vec<Requirement>,
    /// (field path, value, equal?)
    fields: Vec<(String, String, bool)>,
}

impl Selector {
    fn matches(&self, object: &Value) -> bool {
        let labels = object["metadata"]["labels"].as_object();
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|r| match r {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
        });
        let fields_ok = self.fields.iter().all(|(path, value, equal)| {
            let actual = match path.as_str() {
                "metadata.name" => object["metadata"]["name"].as_str(),
                "metadata.namespace" => object["metadata"]["namespace"].as_str(),
                _ => None,
            };
            (actual == Some(value.as_str())) == *equal
        });
        labels_ok && fields_ok
    }
}

/// Splits on commas outside parentheses.
fn split_terms(selector: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn parse_label_selector(selector: &str) -> Result<Vec<Requirement>, String> {
    split_terms(selector)
        .into_iter()
        .map(|term| {
            let set = |rest: &str| -> Result<Vec<String>, String> {
                let inner = rest
                    .trim()
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| format!("invalid set in label selector term {term:?}"))?;
                Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
            };
            if let Some((k, v)) = term.split_once("!=") {
                Ok(Requirement::NotEquals(k.trim().into(), v.trim().into()))
            } else if let Some((k, v)) = term.split_once("==") {
                Ok(Requirement::Equals(k.trim().into(), v.trim().into()))
            } else if let Some((k, v)) = term.split_once('=') {
                Ok(Requirement::Equals(k.trim().into(), v.trim().into()))
            } else if let Some((k, rest)) = term.split_once(" notin ") {
                Ok(Requirement::NotIn(k.trim().into(), set(rest)?))
            } else if let Some((k, rest)) = term.split_once(" in ") {
                Ok(Requirement::In(k.trim().into(), set(rest)?))
            } else if let Some(k) = term.strip_prefix('!') {
                Ok(Requirement::NotExists(k.trim().into()))
            } else if term.contains([' ', '(', ')']) {
                Err(format!("unable to parse label selector term {term:?}"))
            } else {
                Ok(Requirement::Exists(term.into()))
            }
        })
        .collect()
}

fn parse_field_selector(selector: &str) -> Result<Vec<(String, String, bool)>, String> {
    split_terms(selector)
        .into_iter()
        .map(|term| {
            let (path, value, equal) = if let Some((k, v)) = term.split_once("!=") {
                (k, v, false)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, v, true)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, v, true)
            } else {
                return Err(format!("invalid field selector term {term:?}"));
            };
            match path.trim() {
                p @ ("metadata.name" | "metadata.namespace") => {
                    Ok((p.to_owned(), value.trim().to_owned(), equal))
                }
                other => Err(format!("field label not supported: {other}")),
            }
        })
        .collect()
}

// --- verbs -----------------------------------------------------------------------------------

fn list(state: &Shared, resource: &Resource, namespace: Option<&str>, query: &Query) -> Answer {
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

fn get(state: &Shared, key: &ObjectKey) -> Answer {
    match state.lock().objects.get(key) {
        Some(object) => Ok((StatusCode::OK, object.clone())),
        None => Err(not_found(key)),
    }
}

fn create(state: &Shared, resource: &Resource, namespace: &str, mut object: Value) -> Answer {
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

fn replace(state: &Shared, key: &ObjectKey, body: Value, status_only: bool) -> Answer {
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

fn patch(state: &Shared, key: &ObjectKey, content_type: &str, patch: Value, status_only: bool) -> Answer {
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
fn merge(target: &mut Value, patch: &Value) {
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

fn commit_update(
    state: &Shared,
    store: &mut Store,
    key: &ObjectKey,
    current: Value,
    mut updated: Value,
) -> Value {
    store.revision += 1;
    let revision = store.revision;
    normalize(&mut updated, key, revision, Some(&current));
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

fn delete(state: &Shared, key: &ObjectKey, options: &Value) -> Answer {
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

/// Server-owned fields: identity, resourceVersion, uid, creationTimestamp, generation; a Secret's
/// `stringData` folded into `data`.
fn normalize(object: &mut Value, key: &ObjectKey, revision: u64, previous: Option<&Value>) {
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
fn spec_of(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

fn api_version(group: &str, version: &str) -> String {
    match group.is_empty() {
        true => version.to_owned(),
        false => format!("{group}/{version}"),
    }
}

/// Now as RFC 3339 UTC with second precision (`2026-01-02T03:04:05Z`), the API's timestamp form.
fn rfc3339_now() -> String {
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
fn civil_from_days(days: i64) -> (i64, u32, u32) {
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

// --- watch -----------------------------------------------------------------------------------

fn watch(handler: &Handler, resource: &Resource, namespace: Option<&str>, query: &Query) -> Response {
    let selector = match query.selector() {
        Ok(s) => s,
        Err(failure) => return failure.into_response(),
    };
    let since: u64 = match query.get("resourceVersion") {
        None | Some("" | "0") => 0,
        Some(rv) => match rv.parse() {
            Ok(rv) => rv,
            Err(_) => {
                return failure(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("invalid resourceVersion {rv:?}"),
                )
                .into_response();
            }
        },
    };
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let (replay, live, gate) = {
        let store = handler.state.lock();
        if store.gate.blocked {
            return failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "watches are blocked by the test",
            )
            .into_response();
        }
        if since != 0 && since < store.compacted {
            let expired = status_body(
                StatusCode::GONE,
                "Expired",
                &format!("too old resource version: {since} ({})", store.compacted),
            );
            let line = event_line("ERROR", &expired);
            return Response::new(Body::from(line));
        }
        let replay: Vec<Arc<Change>> = match since {
            // From "now": only what happens next (the caller listed first).
            0 => Vec::new(),
            _ => store
                .history
                .iter()
                .filter(|c| c.revision > since)
                .cloned()
                .collect(),
        };
        let live = handler.state.live.as_ref().map(broadcast::Sender::subscribe);
        (replay, live, store.gate.open.clone())
    };
    let filter = Arc::new(WatchFilter {
        resource: resource.clone(),
        namespace: namespace.map(str::to_owned),
        selector,
    });
    let replayed = {
        let filter = filter.clone();
        stream::iter(replay).filter_map(move |c| std::future::ready(filter.event(&c)))
    };
    let live_events = stream::unfold(live, |live| async move {
        let mut live = live?;
        // Fell behind or the server is gone: the stream ends and the client re-watches.
        let change = live.recv().await.ok()?;
        Some((change, Some(live)))
    })
    .filter_map({
        let filter = filter.clone();
        move |c| std::future::ready(filter.event(&c))
    });
    let stop = handler.shutdown.clone();
    let deadline = async move {
        let ended = async {
            tokio::select! {
                () = stop.cancelled() => {}
                () = gate.cancelled() => {}
            }
        };
        match timeout {
            Some(t) => {
                let _ = tokio::time::timeout(t, ended).await;
            }
            None => ended.await,
        }
    };
    let events = replayed
        .chain(live_events)
        .map(Ok::<Bytes, std::convert::Infallible>)
        .take_until(Box::pin(deadline));
    Response::builder()
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from_stream(events))
        .unwrap_or_else(|e| {
            failure(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &e.to_string()).into_response()
        })
}

struct WatchFilter {
    resource: Resource,
    namespace: Option<String>,
    selector: Selector,
}

impl WatchFilter {
    /// The line a watcher of this collection sees for `change`, if any.
    fn event(&self, change: &Change) -> Option<Bytes> {
        if !change
            .key
            .same_collection(&self.resource, self.namespace.as_deref())
        {
            return None;
        }
        let was = change.old.as_ref().is_some_and(|o| self.selector.matches(o));
        let is = self.selector.matches(&change.new);
        let kind = match (&change.kind, was, is) {
            (ChangeKind::Added, _, true) => "ADDED",
            (ChangeKind::Modified, true, true) => "MODIFIED",
            (ChangeKind::Modified, false, true) => "ADDED",
            (ChangeKind::Modified, true, false) => "DELETED",
            (ChangeKind::Deleted, true, _) => "DELETED",
            _ => return None,
        };
        Some(Bytes::from(event_line(kind, &change.new)))
    }
}

fn event_line(kind: &str, object: &Value) -> String {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
