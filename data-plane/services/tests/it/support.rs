//! Fixtures shared by the integration tests.

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode, header::HeaderMap},
};
use http_body_util::BodyExt;
use std::time::Duration;

use bytes::Bytes;
use kaa_bus::Bus;
use kaa_protocol::{
    avro::AvroRecord,
    ecap,
    epmmp::{self, EndpointMetadataGetRequest},
    subject,
};
use kaa_services::{
    cm::{self, CmState, CredentialStore, PasswordHashSettings, kubernetes::SecretStore},
    epr::{self, Application, EprState},
};
use kaa_store::Store;
use kaa_testkit::{FakeApiServer, eventually};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub const APP: &str = "smart-meter";
pub const APP_V1: &str = "smart-meter-v1";
pub const APP_V2: &str = "smart-meter-v2";
pub const OTHER_APP: &str = "lamp";
pub const OTHER_V1: &str = "lamp-v1";

pub fn epr_config() -> epr::Config {
    epr::Config {
        instance: "epr".into(),
        applications: vec![
            Application {
                name: APP.into(),
                versions: vec![APP_V1.into(), APP_V2.into()],
            },
            Application {
                name: OTHER_APP.into(),
                versions: vec![OTHER_V1.into()],
            },
        ],
        ..Default::default()
    }
}

/// CM for the same applications, with a password hash cheap enough for tests.
pub fn cm_config() -> cm::Config {
    cm::Config {
        instance: "cm".into(),
        epr_instance: "epr".into(),
        applications: epr_config().applications,
        request_timeout_ms: 2_000,
        password_hash: PasswordHashSettings {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
        ..Default::default()
    }
}

/// Where CM keeps its tokens and credentials in a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The in-memory SQLite store EPR uses too.
    Sql,
    /// Secrets in namespace `default` of a fake Kubernetes API server.
    Kubernetes,
}

/// The namespace the Kubernetes backend uses in tests.
pub const NAMESPACE: &str = "default";

/// Runs each named `async fn(Backend)` test once per backend, as `sql::name` and
/// `kubernetes::name`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sql {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::support::Backend::Sql).await
                }
            )*
        }
        mod kubernetes {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::support::Backend::Kubernetes).await
                }
            )*
        }
    };
}
pub(crate) use on_both_backends;

/// A SecretStore for CM instance `cm` on `api`, with its initial list loaded.
pub async fn secret_store(api: &FakeApiServer) -> SecretStore {
    SecretStore::start(api.client(), NAMESPACE, "cm", READY)
        .await
        .unwrap()
}

const READY: Duration = Duration::from_secs(10);

/// EPR (REST + bus) and CM (REST + bus) on one in-process bus; EPR on an in-memory store, CM on
/// the same store or on Secrets of a fake Kubernetes API server.
pub struct Stack {
    pub bus: Bus,
    /// EPR's store (and CM's, on [`Backend::Sql`]).
    pub store: Store,
    pub epr: Router,
    pub cm: Router,
    pub cm_state: CmState,
    /// The API server CM's Secrets live in, on [`Backend::Kubernetes`].
    pub kube: Option<FakeApiServer>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Stack {
    /// Only the services asked for run on the bus (REST routers exist either way).
    pub async fn start_with(with_epr: bool, with_cm: bool) -> Stack {
        Self::start_on(Backend::Sql, with_epr, with_cm).await
    }

    /// EPR and CM, CM on `backend`.
    pub async fn on(backend: Backend) -> Stack {
        Self::start_on(backend, true, true).await
    }

    pub async fn start_on(backend: Backend, with_epr: bool, with_cm: bool) -> Stack {
        let bus = Bus::in_process();
        let store = Store::open_in_memory().await.unwrap();
        let epr_state = EprState::new(store.clone(), bus.clone(), epr_config()).unwrap();
        let (credentials, kube): (CredentialStore, _) = match backend {
            Backend::Sql => (store.clone().into(), None),
            Backend::Kubernetes => {
                let api = FakeApiServer::start().await;
                (secret_store(&api).await.into(), Some(api))
            }
        };
        let cm_state = CmState::new(credentials, bus.clone(), cm_config()).unwrap();
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        if with_epr {
            let (b, store, stop) = (bus.clone(), store.clone(), shutdown.clone());
            tasks.push(tokio::spawn(async move {
                epr::serve(b, store, epr_config(), stop).await.unwrap()
            }));
            wait_for_epr(&bus).await;
        }
        if with_cm {
            let (state, stop) = (cm_state.clone(), shutdown.clone());
            tasks.push(tokio::spawn(async move { cm::serve(state, stop).await.unwrap() }));
            wait_for_cm(&bus).await;
        }
        Stack {
            epr: epr::router(epr_state),
            cm: cm::router(cm_state.clone()),
            cm_state,
            kube,
            bus,
            store,
            shutdown,
            tasks,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("service stops on shutdown")
                .unwrap();
        }
    }
}

/// Until EPR answers a metadata request (404 for an unknown endpoint).
pub async fn wait_for_epr(bus: &Bus) {
    let req = EndpointMetadataGetRequest {
        endpoint_id: "ghost".into(),
        ..Default::default()
    };
    let subject = subject::epmmp_request("epr", epmmp::GET_REQUEST);
    eventually(READY, "EPR to answer", || async {
        bus.request(&subject, Bytes::from(req.to_avro()), Duration::from_millis(500))
            .await
            .ok()
    })
    .await;
}

/// Until CM answers on its provisioning subject, which it subscribes to last.
pub async fn wait_for_cm(bus: &Bus) {
    let subject = subject::ecap_request("cm", ecap::EP_TOKEN_PROVISION_REQUEST);
    eventually(READY, "CM to answer", || async {
        bus.request(&subject, Bytes::from_static(b"{}"), Duration::from_millis(500))
            .await
            .ok()
    })
    .await;
}

/// EPR's REST API with CM serving on the bus behind it (tokens given at registration go there).
pub async fn epr_app() -> Router {
    // Dropping the rest of the stack detaches its tasks: they live as long as the test's runtime.
    Stack::start_with(false, true).await.epr
}

/// A response, decoded.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// Sends one request through the router; `body` is sent as-is with `content_type` when given.
pub async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    body: Option<(&str, &str)>,
    extra: &[(&str, &str)],
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let req = match body {
        Some((content_type, text)) => req
            .header("content-type", content_type)
            .body(Body::from(text.to_owned())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = match bytes.is_empty() {
        true => Value::Null,
        false => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{method} {uri}: non-JSON body {:?}: {e}",
                String::from_utf8_lossy(&bytes)
            )
        }),
    };
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn json(app: &Router, method: &str, uri: &str, body: &Value) -> Reply {
    call(
        app,
        method,
        uri,
        Some(("application/json", &body.to_string())),
        &[],
    )
    .await
}

/// Registers an endpoint over REST and returns its id.
pub async fn register(app: &Router, app_version: &str, token: Option<&str>) -> String {
    let reply = try_register(app, app_version, token).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    reply.body["endpointId"].as_str().unwrap().to_owned()
}

/// `POST /epr/api/v1/endpoints` for a new endpoint of `app_version` (with `token`, if any),
/// whatever the answer.
pub async fn try_register(app: &Router, app_version: &str, token: Option<&str>) -> Reply {
    let mut body = serde_json::json!({"appVersion": {"name": app_version}});
    if let Some(token) = token {
        body["endpointToken"] = token.into();
    }
    json(app, "POST", "/epr/api/v1/endpoints", &body).await
}
