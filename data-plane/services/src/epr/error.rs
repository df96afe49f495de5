//! How EPR's store errors become [`AppError`]s (the crate's one error shape, see
//! [`crate::rest`]); REST handlers return them directly, the bus handlers turn them into
//! `statusCode` / `reasonPhrase`.

use kaa_store::EprError;

pub use crate::rest::AppError;

impl From<EprError> for AppError {
    fn from(err: EprError) -> Self {
        match err {
            EprError::EndpointNotFound(_) | EprError::KeyNotFound(_) => Self::NotFound(err.to_string()),
            EprError::DuplicateEndpoint(_) => Self::Conflict(err.to_string()),
            // A patch that is well-formed but cannot be applied to the current document
            // (missing path, failed "test") is a conflict with the resource state (RFC 5789).
            EprError::Patch(_) => Self::Conflict(err.to_string()),
            EprError::VersionMismatch { .. } => Self::PreconditionFailed(err.to_string()),
            EprError::InvalidMetadata(_) => Self::BadRequest(err.to_string()),
            EprError::Corrupt { .. } | EprError::Database(_) => Self::internal(err),
        }
    }
}
