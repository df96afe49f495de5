//! [`AppError`]: every EPR failure as an HTTP status plus a message safe to show a caller.
//!
//! REST handlers return it directly (it implements [`IntoResponse`] with a JSON body
//! `{"error": "<kind>", "message": "<text>"}`); the bus handlers use [`AppError::status`] and
//! [`AppError::message`] for the `statusCode` / `reasonPhrase` of their Avro replies, so both faces
//! of EPR report the same condition the same way. Internal errors are logged here, once, and
//! reach the caller only as "internal error".

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use kaa_store::EprError;
use serde_json::json;

/// An EPR failure.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Something broke inside (database, corrupt data); details go to the log only.
    #[error("internal error")]
    Internal(#[source] EprError),
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Machine-readable kind, the `error` field of the JSON body.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::PreconditionFailed(_) => "precondition_failed",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Internal(_) => "internal",
        }
    }

    /// The text for the caller (never internals); logs internal errors as a side effect.
    pub fn message(&self) -> String {
        if let Self::Internal(cause) = self {
            tracing::error!(error = %cause, "EPR internal error");
        }
        self.to_string()
    }
}

impl From<EprError> for AppError {
    fn from(err: EprError) -> Self {
        match err {
            EprError::EndpointNotFound(_) | EprError::KeyNotFound(_) => Self::NotFound(err.to_string()),
            EprError::DuplicateToken | EprError::DuplicateEndpoint(_) | EprError::Contended(_) => {
                Self::Conflict(err.to_string())
            }
            // A patch that is well-formed but cannot be applied to the current document
            // (missing path, failed "test") is a conflict with the resource state (RFC 5789).
            EprError::Patch(_) => Self::Conflict(err.to_string()),
            EprError::VersionMismatch { .. } => Self::PreconditionFailed(err.to_string()),
            EprError::InvalidMetadata(_) => Self::BadRequest(err.to_string()),
            EprError::Corrupt { .. } | EprError::Database(_) => Self::Internal(err),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.kind(), "message": self.message() });
        (self.status(), Json(body)).into_response()
    }
}
