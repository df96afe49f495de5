//! How the CM repository's errors become [`AppError`]s (the crate's one error shape). Messages
//! name tokens and credentials by id, never by value.

use kaa_store::CmError;

use crate::rest::AppError;

impl From<CmError> for AppError {
    fn from(err: CmError) -> Self {
        match err {
            CmError::TokenNotFound(_) | CmError::CredentialNotFound(_) => Self::NotFound(err.to_string()),
            CmError::DuplicateToken
            | CmError::DuplicateUsername(_)
            | CmError::DuplicateCertificate { .. }
            | CmError::InvalidTransition { .. }
            | CmError::Contended(_) => Self::Conflict(err.to_string()),
            CmError::Corrupt { .. } | CmError::Database(_) => Self::internal(err),
        }
    }
}
