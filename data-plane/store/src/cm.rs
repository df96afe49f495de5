//! CM repository: endpoint tokens and client credentials.
//!
//! Owned by the credential service (CM). Nothing here holds a secret in clear:
//! - an endpoint token is stored as the SHA-256 of its value ([`token_hash`]) and looked up by
//!   that hash. Equality on a hash is safe to leave to the database index (not constant-time):
//!   timing can at most reveal a prefix of the *hash* of a guess, which says nothing about the
//!   token (preimage resistance);
//! - a password credential stores the password hash string the service computed (argon2id PHC
//!   format); verifying it is the service's job, this module only hands it over
//!   ([`crate::Store::password_credential`]).
//!
//! Token status follows CM's state machine ([`TokenStatus`]): `Inactive` (issued, never used) ->
//! `Active` (on the first successful validation) <-> `Suspended`; any live state -> `Revoked`,
//! which is terminal. Status changes are compare-and-set (`UPDATE ... WHERE status = <read>`), so
//! two concurrent transitions cannot both believe they moved the token, which keeps revocation
//! events exactly one per real transition, on SQLite and PostgreSQL alike.

mod credentials;
mod tokens;

pub use credentials::{
    ClientCredential, CredentialKind, CredentialPage, CredentialStatus, NewAuth, NewCredential,
    PasswordCredential,
};
pub use tokens::{EndpointToken, NewToken, TokenStatus, Transition, token_hash};

/// Errors of the CM repository.
#[derive(Debug, thiserror::Error)]
pub enum CmError {
    #[error("endpoint token {0} not found")]
    TokenNotFound(String),
    #[error("endpoint token is already in use")]
    DuplicateToken,
    #[error("endpoint token {token_id} is {from}; it cannot become {to}")]
    InvalidTransition {
        token_id: String,
        from: TokenStatus,
        to: TokenStatus,
    },
    #[error("endpoint token {0} changed too often concurrently; try again")]
    Contended(String),
    #[error("client credential {0} not found")]
    CredentialNotFound(String),
    #[error("username {0:?} is already taken")]
    DuplicateUsername(String),
    #[error("a certificate with issuer {issuer:?} and serial number {serial} is already registered")]
    DuplicateCertificate { issuer: String, serial: String },
    #[error("stored {what} is corrupt: {value:?}")]
    Corrupt { what: &'static str, value: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}
