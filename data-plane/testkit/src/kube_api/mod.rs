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
//! | any update that changes nothing | a no-op, as on the real server: the resourceVersion stays, no watch event |
//!
//! The server sets `resourceVersion` from one global counter (like etcd's revision), `uid`,
//! `creationTimestamp` and `generation` (bumped when anything but metadata and status changes), and
//! folds a Secret's `stringData` into `data`. Not modelled: pagination (`limit` is ignored and
//! everything returned in one page), admission, validation of object schemas, finalizers and
//! graceful deletion, managed fields and server-side apply conflicts, authentication.
//!
//! [`FakeApiServer::client`] builds a `kube::Client` for it; [`FakeApiServer::requests`] tells a
//! test which calls a component made (for example that a cache answered without the server).
//!
//! # Layout
//! - this module: [`FakeApiServer`] (start, client builders, test controls) and [`ObjectKey`].
//! - `store`: the object store, resourceVersions, change history and server-owned fields.
//! - `routes`: request routing and the `Status` failure answers.
//! - `selector`: query parameters and label / field selectors.
//! - `verbs`: list, get, create, replace, patch and delete.
//! - `watch`: watch streams (history replay, then live changes).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::Router;
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use routes::{Handler, handle};
use store::{Resource, Shared};

mod routes;
mod selector;
mod store;
mod verbs;
mod watch;

#[cfg(test)]
mod tests;

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
            // Revision 1, like a fresh etcd: a list of an empty collection then says "1", and a
            // watch from it replays what was created in between. (From "0" a watch starts "now"
            // and would miss it, as the real server's does.)
            store: Mutex::new(store::Store {
                revision: 1,
                ..store::Store::default()
            }),
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
