//! 1/KP over HTTP: `POST /kp1/{appVersion}/{extension}/{token}/{path}` with the device payload
//! as the body, answered synchronously.
//!
//! This module owns only the HTTP mapping; the 1/KP logic is the gateway's
//! ([`Gateway::request`]): the URL path (percent-decoded) is the request topic, the answer's
//! `/status` payload becomes a 200 body and an `/error` becomes its status code with the 1/KP
//! error JSON. No request id is needed; a path whose last level is a number is read as one, as
//! over MQTT. Devices authenticate with their endpoint token (and, where the listener
//! authenticates clients, HTTP Basic or, over HTTPS, a TLS client certificate), never with the
//! admin token. Over plain HTTP clients authenticate as on the plain MQTT listener; the HTTPS
//! listener (`kp_https`) has its own mode.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use futures_util::StreamExt as _;
use kaa_blueprint::config::ClientAuthMode;
use kaa_kpc::auth::CertificateIdentity;
use kaa_kpc::gateway::{Answer, BasicCredentials, Caller, Gateway};
use kaa_protocol::error::KpError;

/// The path prefix of 1/KP requests; open to devices (see `http::OPEN_PREFIXES`).
pub const PREFIX: &str = "/kp1/";

/// A TLS client: its address and the client certificate rustls verified, if any. The HTTPS
/// listener's connection info (plain HTTP connections carry a bare `SocketAddr`).
#[derive(Debug, Clone)]
pub struct TlsClient {
    pub addr: SocketAddr,
    pub certificate: Option<CertificateIdentity>,
}

#[derive(Debug, Clone)]
struct Listener {
    gateway: Arc<Gateway>,
    auth: ClientAuthMode,
}

/// The 1/KP routes of `gateway` on a listener that authenticates clients with `auth`.
pub fn router(gateway: Arc<Gateway>, auth: ClientAuthMode) -> Router {
    let limit = gateway.config().limits.max_payload_bytes;
    Router::new()
        .route("/kp1/{*path}", post(handle))
        // The handler reads at most `limit + 1` bytes itself; this keeps any extractor added
        // later from buffering more.
        .layer(DefaultBodyLimit::max(limit.saturating_add(1)))
        .with_state(Listener { gateway, auth })
}

async fn handle(State(listener): State<Listener>, Path(path): Path<String>, request: Request) -> Response {
    let Listener { gateway, auth } = listener;
    let extensions = request.extensions();
    let (peer, certificate) = match extensions.get::<ConnectInfo<TlsClient>>() {
        Some(ConnectInfo(tls)) => (tls.addr.ip(), tls.certificate.clone()),
        None => {
            let addr = extensions.get::<ConnectInfo<SocketAddr>>();
            (addr.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip()), None)
        }
    };
    let (parts, body) = request.into_parts();
    let basic = match basic_credentials(&parts.headers) {
        Ok(basic) => basic,
        Err(error) => return error_response(&error),
    };
    // Held until the answer; taken before the body is read, so refused requests hold no memory.
    let _admitted = match gateway.admit_http_request() {
        Ok(admitted) => admitted,
        Err(error) => return error_response(&error),
    };
    let limit = gateway.config().limits.max_payload_bytes;
    let payload = match read_limited(body, &parts.headers, limit).await {
        Ok(payload) => payload,
        Err(error) => {
            if error.status_code == 413 {
                gateway.count_refusal(kaa_kpc::gateway::Limit::Payload);
            }
            return error_response(&error);
        }
    };
    let credentials = basic
        .as_ref()
        .map(|(username, password)| BasicCredentials { username, password });
    let topic = format!("kp1/{path}");
    let caller = Caller {
        peer,
        auth,
        credentials,
        certificate: certificate.as_ref(),
    };
    match gateway.request(caller, &topic, payload).await {
        Answer::Status(payload) => {
            let content_type = if serde_json::from_slice::<serde::de::IgnoredAny>(&payload).is_ok() {
                "application/json"
            } else {
                "application/octet-stream"
            };
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
                payload,
            )
                .into_response()
        }
        Answer::Error(error) => error_response(&error),
    }
}

/// Reads the body, refusing with 413 as soon as it exceeds `limit`: a huge body is never held.
async fn read_limited(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, KpError> {
    let too_large = |size: &dyn std::fmt::Display| {
        KpError::new(
            413,
            format!("payload of {size} bytes exceeds the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(declared) = declared
        && declared > limit as u64
    {
        return Err(too_large(&declared));
    }
    let mut stream = body.into_data_stream();
    let mut payload = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| KpError::new(400, format!("cannot read the request body: {e}")))?;
        if payload.len() + chunk.len() > limit {
            return Err(too_large(&format!("more than {limit}")));
        }
        payload.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(payload))
}

/// `Authorization: Basic ...` as (username, password); `None` without one (other schemes are
/// not for this API and are ignored).
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, Vec<u8>)>, KpError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || {
        KpError::new(
            401,
            "the Authorization header must be `Basic base64(username:password)`",
        )
    };
    let Some((scheme, encoded)) = value.as_bytes().split_at_checked(6) else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return Ok(None);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim_ascii())
        .map_err(|_| malformed())?;
    let colon = decoded.iter().position(|b| *b == b':').ok_or_else(malformed)?;
    let username = std::str::from_utf8(&decoded[..colon]).map_err(|_| malformed())?;
    Ok(Some((username.to_owned(), decoded[colon + 1..].to_vec())))
}

fn error_response(error: &KpError) -> Response {
    let status = StatusCode::from_u16(error.status_code)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        error.to_json(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn auth(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn basic_credentials_are_decoded_and_other_schemes_ignored() {
        // "meter:pa:ss" — the password may hold colons.
        let got = basic_credentials(&auth("Basic bWV0ZXI6cGE6c3M=")).unwrap();
        assert_eq!(got, Some(("meter".to_owned(), b"pa:ss".to_vec())));
        assert_eq!(basic_credentials(&HeaderMap::new()).unwrap(), None);
        assert_eq!(basic_credentials(&auth("Bearer x")).unwrap(), None);
        assert_eq!(
            basic_credentials(&auth("Basic !!!")).unwrap_err().status_code,
            401
        );
        // "nocolon"
        assert_eq!(
            basic_credentials(&auth("Basic bm9jb2xvbg=="))
                .unwrap_err()
                .status_code,
            401
        );
    }

    /// Status and body of `POST /kp1/av1/ext/tok-1/x` with `body` on the 1/KP routes of `gateway`.
    async fn post(gateway: &Arc<Gateway>, body: &'static [u8]) -> (StatusCode, serde_json::Value) {
        use tower::ServiceExt as _;
        let request = Request::post("/kp1/av1/ext/tok-1/x")
            .body(Body::from(body))
            .unwrap();
        let response = router(gateway.clone(), ClientAuthMode::None)
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn requests_beyond_the_in_flight_limit_get_429_before_their_body_is_read() {
        use kaa_bus::metrics::Metrics;
        // From JSON: fields other branches add to KpcConfig keep their defaults.
        let config = serde_json::from_value(serde_json::json!({
            "instance": "kpc", "tokenProvider": "cm", "appVersions": {},
            "limits": { "maxHttpRequestsInFlight": 1, "maxPayloadBytes": 4 },
        }))
        .unwrap();
        let metrics = Metrics::new();
        let gateway = Gateway::new(config, kaa_bus::Bus::in_process(), "kpc-0".into(), &metrics);
        let refusals = |limit: &str| {
            let series = format!(r#"kaa_kpc_limit_refusals_total{{limit="{limit}"}} "#);
            let text = metrics.encode();
            text.lines()
                .find_map(|l| l.strip_prefix(series.as_str()).map(str::to_owned))
                .unwrap_or_default()
        };

        let held = gateway.admit_http_request().unwrap();
        let (status, body) = post(&gateway, b"a body too large anyway").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert_eq!(body["statusCode"], 429);
        assert!(
            body["reasonPhrase"]
                .as_str()
                .is_some_and(|r| r.contains("maxHttpRequestsInFlight")),
            "{body}"
        );
        assert_eq!(refusals("http_in_flight"), "1");

        drop(held);
        let (status, body) = post(&gateway, b"too large").await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert_eq!(refusals("payload"), "1");
        assert_eq!(refusals("http_in_flight"), "1");
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_without_reading_them_whole() {
        let got = read_limited(Body::from(vec![0u8; 11]), &HeaderMap::new(), 10).await;
        assert_eq!(got.unwrap_err().status_code, 413);
        let got = read_limited(Body::from(vec![0u8; 10]), &HeaderMap::new(), 10).await;
        assert_eq!(got.unwrap().len(), 10);
        let mut declared = HeaderMap::new();
        declared.insert(header::CONTENT_LENGTH, HeaderValue::from_static("1048576"));
        let got = read_limited(Body::empty(), &declared, 10).await;
        assert_eq!(got.unwrap_err().status_code, 413);
    }
}
