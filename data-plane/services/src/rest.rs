//! REST plumbing shared by every service API: [`AppError`], the one error shape, and
//! [`parse_json`], which reads request bodies so that even bad JSON comes back in that shape.
//!
//! Every failure is an HTTP status plus `{"error": "<kind>", "message": "<text>"}`. The bus
//! handlers of a service use [`AppError::rfc_status`] (the same status and message) for the
//! `statusCode` / `reasonPhrase` of their replies, so both faces of a service report a condition
//! the same way.
//! Internal errors are logged here, once, and reach the caller only as "internal error".

use axum::{
    Json,
    http::{HeaderMap, StatusCode, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
};
use serde::de::DeserializeOwned;
use serde_json::json;

mod etag;
pub use etag::json_with_etag;

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    /// Missing or invalid credentials of a device-facing route (not the admin token).
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A service this one depends on (over the bus) is unreachable or too slow.
    #[error("{0}")]
    ServiceUnavailable(String),
    /// Something broke inside (database, corrupt data); details go to the log only.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl AppError {
    pub fn internal(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(err))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ServiceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Machine-readable kind, the `error` field of the JSON body.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::PreconditionFailed(_) => "precondition_failed",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::ServiceUnavailable(_) => "service_unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// The text for the caller (never internals); logs internal errors as a side effect.
    pub fn message(&self) -> String {
        if let Self::Internal(cause) = self {
            tracing::error!(error = %cause, "internal error");
        }
        self.to_string()
    }

    /// [`Self::status`] as the `statusCode` of an RFC reply.
    pub fn status_code(&self) -> i32 {
        i32::from(self.status().as_u16())
    }

    /// The `(statusCode, reasonPhrase)` of an RFC reply that reports this error.
    pub fn rfc_status(&self) -> (i32, Option<String>) {
        (self.status_code(), Some(self.message()))
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.kind(), "message": self.message() });
        (self.status(), Json(body)).into_response()
    }
}

/// The query string of a request, or a 400 saying what is wrong with it.
pub fn query<T>(
    q: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, AppError> {
    q.map(|axum::extract::Query(q)| q)
        .map_err(|e| AppError::BadRequest(format!("invalid query: {}", e.body_text())))
}

/// A request body of at most `limit` bytes (else 413). Routes using it raise axum's own body
/// limit above `limit` (`DefaultBodyLimit::max(limit + 1)`), so that this check, with its error
/// shape, is the one that answers.
pub fn limited_body(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
    limit: usize,
    what: &str,
) -> Result<axum::body::Bytes, AppError> {
    let too_large = || AppError::PayloadTooLarge(format!("{what} takes at most {limit} bytes"));
    match body {
        Ok(body) if body.len() > limit => Err(too_large()),
        Ok(body) => Ok(body),
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(too_large()),
        Err(e) => Err(AppError::BadRequest(format!(
            "cannot read the request body: {}",
            e.body_text()
        ))),
    }
}

/// Which request media types a body may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    /// `application/json` or any `+json` type; a missing Content-Type is accepted.
    Json,
    /// Exactly `application/json-patch+json` (RFC 6902), so a merge patch is never misread.
    JsonPatch,
}

/// Checks the Content-Type and decodes the body; every failure is an [`AppError`].
pub fn parse_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
    media: Media,
) -> Result<T, AppError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    let accepted = match (media, content_type.as_deref()) {
        (Media::Json, None) => true,
        (Media::Json, Some(ct)) => {
            ct == "application/json" || (ct.starts_with("application/") && ct.ends_with("+json"))
        }
        (Media::JsonPatch, ct) => ct == Some("application/json-patch+json"),
    };
    if !accepted {
        let wanted = match media {
            Media::Json => "application/json",
            Media::JsonPatch => "application/json-patch+json (an RFC 6902 JSON Patch)",
        };
        return Err(AppError::UnsupportedMediaType(format!(
            "Content-Type {} is not supported here; send {wanted}",
            content_type.as_deref().unwrap_or("(none)")
        )));
    }
    serde_json::from_slice(body).map_err(|e| AppError::BadRequest(format!("invalid request body: {e}")))
}

/// Request headers from `(name, value)` pairs, for handler tests.
#[cfg(test)]
pub(crate) fn test_headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, axum::http::HeaderValue::from_static(v));
    }
    h
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::{test_headers as headers, *};

    #[test]
    fn content_types() {
        let ok: Value = parse_json(
            &headers(&[("content-type", "application/json; charset=utf-8")]),
            b"1",
            Media::Json,
        )
        .unwrap();
        assert_eq!(ok, Value::from(1));
        parse_json::<Value>(&headers(&[]), b"1", Media::Json).unwrap();
        parse_json::<Value>(
            &headers(&[("content-type", "application/merge-patch+json")]),
            b"{}",
            Media::Json,
        )
        .unwrap();
        assert!(matches!(
            parse_json::<Value>(&headers(&[("content-type", "text/plain")]), b"1", Media::Json),
            Err(AppError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            parse_json::<Value>(
                &headers(&[("content-type", "application/json")]),
                b"[]",
                Media::JsonPatch
            ),
            Err(AppError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            parse_json::<Value>(&headers(&[]), b"{nope", Media::Json),
            Err(AppError::BadRequest(m)) if m.contains("invalid request body")
        ));
    }

    #[test]
    fn statuses_and_kinds() {
        let e = AppError::ServiceUnavailable("cm is down".into());
        assert_eq!((e.status_code(), e.kind()), (503, "service_unavailable"));
        let e = AppError::internal(std::io::Error::other("disk on fire"));
        assert_eq!(e.message(), "internal error", "internals never reach the caller");
        assert_eq!(e.status_code(), 500);
    }
}
