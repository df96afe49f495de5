//! How the CM repository's errors become [`AppError`]s (the crate's one error shape). Messages
//! name tokens and credentials by id, never by value.

use kaa_store::CmError;

use super::{kubernetes::SecretStoreError, storage::StorageError};
use crate::rest::AppError;

impl From<StorageError> for AppError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::Cm(e) => e.into(),
            StorageError::Kubernetes(e) => e.into(),
        }
    }
}

impl From<SecretStoreError> for AppError {
    fn from(err: SecretStoreError) -> Self {
        match err {
            SecretStoreError::Contended(_) => Self::Conflict(err.to_string()),
            e if e.is_unavailable() => {
                // Details (which call, the API server's answer) go to the log; the caller
                // learns that it may retry.
                tracing::warn!(error = %e, "the Kubernetes API failed");
                Self::ServiceUnavailable(
                    "the credential store (Kubernetes API) is unavailable; try again".to_owned(),
                )
            }
            e => Self::internal(e),
        }
    }
}

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
