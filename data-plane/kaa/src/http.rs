//! The HTTP listener: `/health`, `/metrics`, the REST routers of the services running in this
//! process, and the admin authentication in front of all of them.
//!
//! Every request needs `Authorization: Bearer <admin token>` except the routes in
//! [`OPEN_ROUTES`] (probes and scrapers carry no token) and [`OPEN_PREFIXES`] (devices, which
//! authenticate with their endpoint token). The check is one middleware over the
//! whole app, so a REST route added later is protected without anyone remembering to.
//! The token and the `Authorization` header are never logged.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kaa_bus::Bus;
use kaa_bus::metrics::{self, Metrics};
use kaa_store::Store;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::live::LiveConfigs;

/// Routes served without the admin token: Kubernetes probes, (issue 4) metrics scrapers and the
/// dashboard's page, which holds no data (it calls the APIs with the token the user enters).
/// Matched on the exact method and raw path, the same string the router matches.
/// BCX uploads are open too: the device's upload token (`X-Auth-Token`) is their credential.
pub const OPEN_ROUTES: &[(Method, &str)] = &[
    (Method::GET, "/health"),
    (Method::GET, "/metrics"),
    (Method::GET, "/"),
    (Method::POST, kaa_services::bcx::rest::UPLOAD_PATH),
];

/// Path prefixes served without the admin token, for one method: 1/KP over HTTP, where a device
/// presents its endpoint token in the path (and the gateway checks it), and the dashboard's static
/// files (no data in them).
pub const OPEN_PREFIXES: &[(Method, &str)] = &[
    (Method::POST, crate::kp_http::PREFIX),
    (Method::GET, crate::web::ASSET_PREFIX),
];

/// The admin API's bearer token. Only its SHA-256 digest is kept: comparing fixed-size digests in
/// constant time reveals neither the token's bytes nor its length through timing.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// A token as clients send it. It must be usable in an HTTP header: visible ASCII, no spaces.
    pub fn new(token: &str) -> anyhow::Result<AdminToken> {
        anyhow::ensure!(!token.is_empty(), "the admin token is empty");
        anyhow::ensure!(
            token.bytes().all(|b| b.is_ascii_graphic()),
            "the admin token must be printable ASCII without spaces (it is sent in an HTTP header)"
        );
        Ok(AdminToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// Reads a token file (a mounted Secret or `kaa up`'s `admin-token`). Surrounding whitespace,
    /// such as the newline `echo` or an editor adds, is not part of the token.
    pub fn read(path: &Path) -> anyhow::Result<AdminToken> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the admin token file {}", path.display()))?;
        AdminToken::new(text.trim()).with_context(|| format!("in the admin token file {}", path.display()))
    }

    fn matches(&self, presented: &[u8]) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented).into();
        presented.ct_eq(&self.digest).into()
    }
}

/// Why a request was refused; each says what to do, none echoes what was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Missing,
    NotBearer,
    WrongToken,
    NoTokenConfigured,
}

impl Refusal {
    fn message(self) -> &'static str {
        match self {
            Refusal::Missing => "this API needs the header `Authorization: Bearer <admin token>`",
            Refusal::NotBearer => "the Authorization header must be `Bearer <admin token>`",
            Refusal::WrongToken => "the bearer token is not the admin token",
            Refusal::NoTokenConfigured => {
                "this process has no admin token (--admin-token-file), so its API is closed"
            }
        }
    }

    /// RFC 6750 section 3: a challenge, with `invalid_token` when a token was sent but is wrong.
    fn challenge(self) -> &'static str {
        match self {
            Refusal::WrongToken => r#"Bearer error="invalid_token""#,
            _ => "Bearer",
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({ "error": "unauthorized", "message": self.message() });
        let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(self.challenge()),
        );
        response
    }
}

fn is_open(method: &Method, path: &str) -> bool {
    OPEN_ROUTES.iter().any(|(m, p)| m == method && *p == path)
        || OPEN_PREFIXES
            .iter()
            .any(|(m, p)| m == method && path.starts_with(p))
}

fn check(expected: Option<&AdminToken>, headers: &HeaderMap) -> Result<(), Refusal> {
    let expected = expected.ok_or(Refusal::NoTokenConfigured)?;
    let value = headers.get(header::AUTHORIZATION).ok_or(Refusal::Missing)?;
    // auth-scheme is case-insensitive (RFC 9110 section 11.1); the token follows one or more spaces.
    let (scheme, token) = value.as_bytes().split_at_checked(6).ok_or(Refusal::NotBearer)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || token.first() != Some(&b' ') {
        return Err(Refusal::NotBearer);
    }
    let token = token.trim_ascii();
    if expected.matches(token) {
        Ok(())
    } else {
        Err(Refusal::WrongToken)
    }
}

async fn require_admin_token(
    State(expected): State<Option<Arc<AdminToken>>>,
    request: Request,
    next: Next,
) -> Response {
    if is_open(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    match check(expected.as_deref(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            // Method and path only: the header and the token stay out of the logs.
            tracing::debug!(method = %request.method(), path = request.uri().path(), ?refusal, "API request refused");
            refusal.into_response()
        }
    }
}

/// The whole HTTP app of a process: `/health`, `/metrics`, the services' REST routers, and the
/// admin token check in front of everything not in [`OPEN_ROUTES`]. Without a token (`None`) only
/// the open routes answer: a process never serves its API unauthenticated.
pub fn app(health: Health, metrics: Metrics, rest: Router, admin_token: Option<AdminToken>) -> Router {
    health
        .router()
        .merge(metrics_router(metrics))
        .merge(rest)
        .layer(axum::middleware::from_fn_with_state(
            admin_token.map(Arc::new),
            require_admin_token,
        ))
}

/// How long `/health` waits for the database: a probe must answer well within its own timeout
/// (Kubernetes' default is 1 s).
const STORE_PING_TIMEOUT: Duration = Duration::from_millis(500);

/// What `/health` checks: the bus, and the database for processes that have one.
#[derive(Debug, Clone)]
pub struct Health {
    pub bus: Bus,
    pub store: Option<Store>,
    /// The configs the instances run, reported (not checked: a refused config change leaves the
    /// process healthy on its previous config).
    pub live: Option<LiveConfigs>,
}

impl Health {
    /// Human-readable problems that keep this process from working; empty when healthy.
    pub async fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.bus.is_connected() {
            problems.push("the message bus (NATS) is disconnected".to_owned());
        }
        if let Some(store) = &self.store
            && let Err(e) = store.ping(STORE_PING_TIMEOUT).await
        {
            problems.push(format!("the database is unreachable: {e}"));
        }
        problems
    }

    /// The config part of `/health`: `configs` maps each instance to `{"version","error"}`, and
    /// a process of one instance (`kaa run`) has that object as `config` too.
    fn configs(&self, body: &mut serde_json::Value) {
        let Some(live) = &self.live else { return };
        let statuses = live.statuses();
        if statuses.len() == 1
            && let Some(status) = statuses.values().next()
        {
            body["config"] = status.to_json();
        }
        let configs: serde_json::Map<String, serde_json::Value> = statuses
            .iter()
            .map(|(name, s)| (name.clone(), s.to_json()))
            .collect();
        body["configs"] = configs.into();
    }

    /// `GET /health`: 200 `{"status":"ok"}` when the process can do its work, else 500
    /// `{"status":"failing","problems":[...]}`; both with the configs the instances run.
    pub fn router(self) -> Router {
        Router::new().route(
            "/health",
            get(move || {
                let health = self.clone();
                async move {
                    let problems = health.problems().await;
                    if problems.is_empty() {
                        let mut body = json!({ "status": "ok" });
                        health.configs(&mut body);
                        (StatusCode::OK, axum::Json(body)).into_response()
                    } else {
                        for problem in &problems {
                            tracing::warn!(problem, "health check failing");
                        }
                        let mut body = json!({ "status": "failing", "problems": problems });
                        health.configs(&mut body);
                        (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
                    }
                }
            }),
        )
    }
}

/// `GET /metrics`: the process's registry in the OpenMetrics text format Prometheus scrapes.
fn metrics_router(metrics: Metrics) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(metrics::CONTENT_TYPE),
                    )],
                    metrics.encode(),
                )
            }
        }),
    )
}

/// Binds `addr` for [`serve`]. Connections made before serving starts wait in the socket's
/// backlog, so whatever is printed in between (`kaa up`'s banner) comes before the first answer.
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for HTTP on {addr}: {e}"))
}

/// Serves `app` on `listener` until `shutdown` is cancelled.
pub fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // The peer address feeds the gateway's failed-authentication rate limit (1/KP over HTTP).
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP server failed");
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use axum::body::Body;
    use axum::routing::post;
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;

    const TOKEN: &str = "s3cret-Admin_token";

    fn test_app(token: Option<&str>) -> Router {
        let rest = Router::new().route(
            "/epr/api/v1/endpoints",
            get(|| async { "listed" }).post(|| async { (StatusCode::CREATED, "created") }),
        );
        let rest = rest.route("/cm/api/v1/tokens", post(|| async { "issued" }));
        let health = Health {
            bus: Bus::in_process(),
            store: None,
            live: None,
        };
        app(
            health,
            Metrics::new(),
            rest,
            token.map(|t| AdminToken::new(t).unwrap()),
        )
    }

    /// `GET /epr/api/v1/endpoints` on an app guarded by `TOKEN`, with the given header.
    async fn list_endpoints(auth: Option<&str>) -> (StatusCode, HeaderMap, Vec<u8>) {
        call(test_app(Some(TOKEN)), Method::GET, "/epr/api/v1/endpoints", auth).await
    }

    async fn call(
        app: Router,
        method: Method,
        path: &str,
        auth: Option<&str>,
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        let response = app.oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, headers, body.to_vec())
    }

    fn assert_unauthorized((status, headers, body): (StatusCode, HeaderMap, Vec<u8>), challenge: &str) {
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers[header::WWW_AUTHENTICATE], challenge);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "unauthorized");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
        assert!(
            !body.to_string().contains(TOKEN),
            "the refusal echoes no token: {body}"
        );
    }

    #[tokio::test]
    async fn the_right_token_passes_on_every_method() {
        let auth = format!("Bearer {TOKEN}");
        let got = list_endpoints(Some(&auth)).await;
        assert_eq!((got.0, got.2.as_slice()), (StatusCode::OK, b"listed".as_slice()));
        let got = call(
            test_app(Some(TOKEN)),
            Method::POST,
            "/epr/api/v1/endpoints",
            Some(&auth),
        )
        .await;
        assert_eq!(got.0, StatusCode::CREATED);
        let got = call(
            test_app(Some(TOKEN)),
            Method::POST,
            "/cm/api/v1/tokens",
            Some(&auth),
        )
        .await;
        assert_eq!(got.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn the_scheme_is_case_insensitive_and_spaces_around_the_token_are_ignored() {
        for auth in [format!("bearer {TOKEN}"), format!("BEARER   {TOKEN} ")] {
            let got = list_endpoints(Some(&auth)).await;
            assert_eq!(got.0, StatusCode::OK, "{auth}");
        }
    }

    #[tokio::test]
    async fn a_missing_header_is_refused_with_a_bearer_challenge() {
        let got = list_endpoints(None).await;
        assert_unauthorized(got, "Bearer");
        let got = call(test_app(Some(TOKEN)), Method::POST, "/epr/api/v1/endpoints", None).await;
        assert_unauthorized(got, "Bearer");
    }

    #[tokio::test]
    async fn a_wrong_token_is_refused_as_invalid() {
        let wrong = [
            format!("Bearer {TOKEN}x"),
            format!("Bearer {}", &TOKEN[1..]),
            "Bearer ".to_owned() + &TOKEN.to_uppercase(),
            "Bearer x".to_owned(),
        ];
        for auth in wrong {
            let got = list_endpoints(Some(&auth)).await;
            assert_unauthorized(got, r#"Bearer error="invalid_token""#);
        }
    }

    #[tokio::test]
    async fn other_schemes_and_malformed_headers_are_refused() {
        for auth in [
            format!("Basic {TOKEN}"),
            TOKEN.to_owned(),
            format!("Bearer{TOKEN}"),
            "Bearer".to_owned(),
            "Bearer ".to_owned(),
            String::new(),
        ] {
            let got = list_endpoints(Some(&auth)).await;
            assert_eq!(got.0, StatusCode::UNAUTHORIZED, "{auth:?}");
        }
    }

    #[tokio::test]
    async fn health_is_open_and_nothing_else_is() {
        let got = call(test_app(Some(TOKEN)), Method::GET, "/health", None).await;
        assert_eq!(got.0, StatusCode::OK);
        // Unknown paths are refused before routing: no probing for which APIs exist.
        for path in ["/nope", "/health/", "/%68ealth", "/epr/api/v1/endpoints/x"] {
            let got = call(test_app(Some(TOKEN)), Method::GET, path, None).await;
            assert_unauthorized(got, "Bearer");
        }
        let got = call(test_app(Some(TOKEN)), Method::POST, "/health", None).await;
        assert_unauthorized(got, "Bearer");
    }

    #[tokio::test]
    async fn metrics_are_open_and_in_the_openmetrics_text_format() {
        let got = call(test_app(Some(TOKEN)), Method::GET, "/metrics", None).await;
        assert_eq!(got.0, StatusCode::OK);
        assert_eq!(got.1[header::CONTENT_TYPE], metrics::CONTENT_TYPE);
        assert!(String::from_utf8(got.2).unwrap().ends_with("# EOF\n"));
        let got = call(test_app(Some(TOKEN)), Method::POST, "/metrics", None).await;
        assert_unauthorized(got, "Bearer");
    }

    #[tokio::test]
    async fn health_lists_an_unreachable_database_as_a_problem() {
        let store = Store::open_in_memory().await.unwrap();
        let health = Health {
            bus: Bus::in_process(),
            store: Some(store.clone()),
            live: None,
        };
        assert!(health.problems().await.is_empty());
        let rest = Router::new();
        let router = app(health.clone(), Metrics::new(), rest, None);
        assert_eq!(
            call(router.clone(), Method::GET, "/health", None).await.0,
            StatusCode::OK
        );

        store.close().await;
        let problems = health.problems().await;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("the database is unreachable"),
            "{problems:?}"
        );
        let (status, _, body) = call(router, Method::GET, "/health", None).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["status"], "failing");
        assert_eq!(body["problems"], serde_json::json!(problems));
    }

    #[tokio::test]
    async fn without_a_configured_token_only_the_open_routes_answer() {
        let got = call(test_app(None), Method::GET, "/health", None).await;
        assert_eq!(got.0, StatusCode::OK);
        let got = call(
            test_app(None),
            Method::GET,
            "/epr/api/v1/endpoints",
            Some("Bearer anything"),
        )
        .await;
        assert_unauthorized(got, "Bearer");
    }

    #[test]
    fn tokens_must_fit_in_a_header_and_never_show_in_debug_output() {
        assert!(AdminToken::new("").is_err());
        assert!(AdminToken::new("two words").is_err());
        assert!(AdminToken::new("tab\there").is_err());
        assert!(AdminToken::new("caf\u{e9}").is_err());
        let token = AdminToken::new(TOKEN).unwrap();
        assert!(!format!("{token:?}").contains(TOKEN));
    }

    #[test]
    fn token_files_are_trimmed_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
        let token = AdminToken::read(&path).unwrap();
        assert!(token.matches(TOKEN.as_bytes()));
        std::fs::write(&path, " \n").unwrap();
        let err = format!("{:#}", AdminToken::read(&path).unwrap_err());
        assert!(err.contains("empty") && err.contains("token"), "{err}");
        let err = format!("{:#}", AdminToken::read(&dir.path().join("absent")).unwrap_err());
        assert!(err.contains("cannot read the admin token file"), "{err}");
    }
}
