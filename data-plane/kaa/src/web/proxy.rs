//! `kaa run web`: the dashboard's REST calls forwarded to the instances that own them.
//!
//! In a cluster every service runs in its own Deployment behind its own Service; the browser
//! talks to this one origin (same-origin CSP, no CORS) and each call is forwarded, as it came, to
//! the instance owning its path: `/epr/api/v1/...` to EPR, `/ecr/api/v1/...?name=X` to the CMX
//! instance serving configuration X, and so on. The admin token check of [`crate::http::app`]
//! runs first, so nothing unauthenticated reaches an upstream (but BCX's open upload path); the
//! upstream checks the token again, as it does for every client.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::uri::{Authority, Scheme};
use axum::http::{HeaderName, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kaa_blueprint::ServiceKind;
use kaa_blueprint::config::{DEFAULT_CONFIG_NAME, WebConfig, WebUpstream};
use kaa_services::{cex, cm, cmx, epr};
use serde_json::json;

/// The REST path prefixes an instance of `kind` serves.
fn prefixes(kind: ServiceKind) -> &'static [&'static str] {
    match kind {
        ServiceKind::Epr => &[epr::rest::PREFIX],
        ServiceKind::Cm => &[cm::rest::CM_PREFIX, cm::rest::CCM_PREFIX],
        ServiceKind::Epts => &["/epts/api/v1"],
        ServiceKind::Cmx => &[cmx::rest::PREFIX],
        ServiceKind::Cex => &[cex::rest::PREFIX],
        ServiceKind::Bcx => &["/bcx/api/v1"],
        ServiceKind::Kpc | ServiceKind::Epmx | ServiceKind::Epl | ServiceKind::Dcx | ServiceKind::Web => &[],
    }
}

/// Headers of one hop (RFC 9110 section 7.6.1), never forwarded; `host` is the upstream's own.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// One upstream instance, parsed.
#[derive(Debug)]
struct Upstream {
    instance: String,
    prefixes: &'static [&'static str],
    config_name: Option<String>,
    scheme: Scheme,
    authority: Authority,
    /// The base URL's path, if any (`http://host/kaa` -> `/kaa`), put before the request's.
    base_path: String,
}

#[derive(Debug)]
struct Proxy {
    client: Client<HttpConnector, Body>,
    upstreams: Vec<Upstream>,
    timeout: Duration,
}

/// Routes for every path prefix of the config's upstreams, forwarding to them.
pub fn router(config: &WebConfig) -> anyhow::Result<Router> {
    let upstreams = config
        .upstreams
        .iter()
        .map(parse)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut served: Vec<&'static str> = upstreams
        .iter()
        .flat_map(|u| u.prefixes.iter().copied())
        .collect();
    served.sort_unstable();
    served.dedup();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    let proxy = Arc::new(Proxy {
        client: Client::builder(TokioExecutor::new()).build(connector),
        upstreams,
        timeout: Duration::from_millis(config.upstream_timeout_ms),
    });
    let router = served.into_iter().fold(Router::new(), |router, prefix| {
        router
            .route(prefix, any(forward))
            .route(&format!("{prefix}/{{*rest}}"), any(forward))
    });
    Ok(router.with_state(proxy))
}

fn parse(upstream: &WebUpstream) -> anyhow::Result<Upstream> {
    let what = || {
        format!(
            "upstream `{}`: `{}` is not an http:// URL",
            upstream.instance, upstream.url
        )
    };
    let uri: Uri = upstream.url.parse().with_context(what)?;
    let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
        anyhow::bail!(what());
    };
    anyhow::ensure!(*scheme == Scheme::HTTP, what());
    Ok(Upstream {
        instance: upstream.instance.clone(),
        prefixes: prefixes(upstream.kind),
        config_name: upstream.config_name.clone(),
        scheme: scheme.clone(),
        authority: authority.clone(),
        base_path: uri.path().trim_end_matches('/').to_owned(),
    })
}

impl Proxy {
    /// The instance owning `uri`: the one serving its prefix (for `/ecr`, the one serving the
    /// configuration named by `?name=`, `default` when none is).
    fn upstream_for(&self, uri: &Uri) -> Result<&Upstream, (StatusCode, String)> {
        let path = uri.path();
        let owns = |u: &&Upstream| {
            u.prefixes.iter().any(|p| {
                path.strip_prefix(p)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
        };
        let mut owners = self.upstreams.iter().filter(owns).peekable();
        let first = owners.peek().copied();
        let wanted = query_value(uri, "name");
        let wanted = wanted.as_deref().unwrap_or(DEFAULT_CONFIG_NAME);
        match first {
            Some(u) if u.config_name.is_none() => Ok(u),
            Some(_) => owners
                .find(|u| u.config_name.as_deref() == Some(wanted))
                .ok_or_else(|| {
                    let served: Vec<&str> = self
                        .upstreams
                        .iter()
                        .filter_map(|u| u.config_name.as_deref())
                        .collect();
                    (
                        StatusCode::NOT_FOUND,
                        format!("no configuration named {wanted:?}; served: {}", served.join(", ")),
                    )
                }),
            None => Err((StatusCode::NOT_FOUND, format!("no service serves {path}"))),
        }
    }
}

/// The first value of `key` in the URI's query, decoded.
fn query_value(uri: &Uri, key: &str) -> Option<String> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri).ok()?;
    pairs.into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let upstream = match proxy.upstream_for(request.uri()) {
        Ok(u) => u,
        Err((status, message)) => return error(status, message),
    };
    let (mut parts, body) = request.into_parts();
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let uri = Uri::builder()
        .scheme(upstream.scheme.clone())
        .authority(upstream.authority.clone())
        .path_and_query(format!("{}{path_and_query}", upstream.base_path))
        .build();
    let Ok(uri) = uri else {
        return error(
            StatusCode::BAD_REQUEST,
            "the request path cannot be forwarded".into(),
        );
    };
    parts.uri = uri;
    parts.headers.remove(header::HOST);
    for name in &HOP_BY_HOP {
        parts.headers.remove(name);
    }
    let outgoing = Request::from_parts(parts, body);
    let answer = tokio::time::timeout(proxy.timeout, proxy.client.request(outgoing)).await;
    match answer {
        Ok(Ok(response)) => {
            let (mut parts, body) = response.into_parts();
            for name in &HOP_BY_HOP {
                parts.headers.remove(name);
            }
            Response::from_parts(parts, Body::new(body))
        }
        Ok(Err(e)) => {
            tracing::warn!(instance = upstream.instance, error = %e, "upstream unreachable");
            error(
                StatusCode::BAD_GATEWAY,
                format!("the service `{}` does not answer", upstream.instance),
            )
        }
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the service `{}` did not answer within {} ms",
                upstream.instance,
                proxy.timeout.as_millis()
            ),
        ),
    }
}

/// The error shape of the REST APIs, for answers the proxy gives itself.
fn error(status: StatusCode, message: String) -> Response {
    let reason = status
        .canonical_reason()
        .unwrap_or_default()
        .to_ascii_lowercase()
        .replace(' ', "_");
    (status, axum::Json(json!({ "error": reason, "message": message }))).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn upstream(kind: ServiceKind, instance: &str, config_name: Option<&str>) -> WebUpstream {
        WebUpstream {
            kind,
            instance: instance.into(),
            url: format!("http://{instance}:9000"),
            config_name: config_name.map(Into::into),
        }
    }

    fn proxy() -> Proxy {
        let config = [
            upstream(ServiceKind::Epr, "epr", None),
            upstream(ServiceKind::Cm, "cm", None),
            upstream(ServiceKind::Cmx, "cmx", Some("default")),
            upstream(ServiceKind::Cmx, "cmx_ota", Some("ota")),
        ];
        Proxy {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            upstreams: config.iter().map(parse).collect::<anyhow::Result<_>>().unwrap(),
            timeout: Duration::from_secs(1),
        }
    }

    fn owner(proxy: &Proxy, uri: &str) -> Result<String, StatusCode> {
        proxy
            .upstream_for(&uri.parse().unwrap())
            .map(|u| u.instance.clone())
            .map_err(|(status, _)| status)
    }

    #[test]
    fn each_path_goes_to_the_instance_that_owns_it() {
        let p = proxy();
        assert_eq!(owner(&p, "/epr/api/v1/endpoints?limit=1").unwrap(), "epr");
        assert_eq!(owner(&p, "/ccm/api/v1/clients").unwrap(), "cm");
        assert_eq!(owner(&p, "/cm/api/v1/tokens/x").unwrap(), "cm");
        assert_eq!(owner(&p, "/ecr/api/v1/statuses?endpointId=e").unwrap(), "cmx");
        assert_eq!(
            owner(&p, "/ecr/api/v1/app-versions/v1?name=ota").unwrap(),
            "cmx_ota"
        );
        assert_eq!(
            owner(&p, "/ecr/api/v1/app-versions/v1?name=o%74a").unwrap(),
            "cmx_ota"
        );
        assert_eq!(
            owner(&p, "/ecr/api/v1/statuses?name=nope"),
            Err(StatusCode::NOT_FOUND)
        );
        assert_eq!(owner(&p, "/eprx/api/v1"), Err(StatusCode::NOT_FOUND));
    }

    #[test]
    fn only_http_urls_are_upstreams() {
        for bad in ["https://epr:9000", "epr:9000", "http://", "not a url"] {
            let mut u = upstream(ServiceKind::Epr, "epr", None);
            u.url = bad.into();
            assert!(parse(&u).is_err(), "{bad}");
        }
    }
}
