//! CM's storage seam: the token and credential operations CM needs, over one of two backends
//! chosen by `storage` in its config.
//!
//! - [`CredentialStore::Sql`]: the service's database ([`kaa_store::Store`]); `kaa up` and
//!   `kaa run --database`.
//! - [`CredentialStore::Kubernetes`]: Secrets in the pod's namespace ([`SecretStore`]), read
//!   through a watch into memory; cluster mode.
//!
//! Both answer with the same records and the same domain errors ([`CmError`]'s not-found,
//! duplicate and transition variants), so CM's statuses, REST answers and events do not depend on
//! the backend. One difference is inherent and handled here: Secrets can change behind CM's back
//! (`kubectl`, the operator), so the Kubernetes backend announces revocations itself, from what its
//! watch sees, for CM's own changes and everyone else's alike ([`CredentialStore::take_revocations`],
//! published by [`super::serve`]); with SQL, CM announces its own changes as it makes them.

use kaa_store::{
    ClientCredential, CmError, CredentialPage, EndpointToken, NewCredential, NewToken, PasswordCredential,
    Store, TokenStatus, Transition,
};
use tokio::sync::mpsc;

use super::kubernetes::{SecretStore, SecretStoreError};

/// Where CM's tokens and credentials live. Cheap to clone.
#[derive(Debug, Clone)]
pub enum CredentialStore {
    Sql(Store),
    Kubernetes(SecretStore),
}

impl From<Store> for CredentialStore {
    fn from(store: Store) -> Self {
        CredentialStore::Sql(store)
    }
}

impl From<SecretStore> for CredentialStore {
    fn from(store: SecretStore) -> Self {
        CredentialStore::Kubernetes(store)
    }
}

/// Tokens or a credential that stopped authenticating, as a backend saw it happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// Tokens of one endpoint (and one application) no longer identify it.
    Tokens {
        app_name: String,
        endpoint_id: String,
        token_ids: Vec<String>,
    },
    /// A client credential no longer authenticates anyone.
    Credential { credential_id: String },
}

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Not found, duplicate, forbidden transition, corrupt, or a database error.
    #[error(transparent)]
    Cm(#[from] CmError),
    #[error(transparent)]
    Kubernetes(#[from] SecretStoreError),
}

impl StorageError {
    /// The domain error inside, if it is one.
    pub fn as_cm(&self) -> Option<&CmError> {
        match self {
            StorageError::Cm(e) => Some(e),
            StorageError::Kubernetes(_) => None,
        }
    }
}

/// One backend call: the SQL arm converts [`CmError`], the Kubernetes arm answers as it is.
macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            CredentialStore::Sql($store) => Ok($call.await?),
            CredentialStore::Kubernetes($store) => $call.await,
        }
    };
}

impl CredentialStore {
    /// Whether the backend announces revocations itself (see the module docs); CM then leaves
    /// the announcing to it.
    pub fn announces_revocations(&self) -> bool {
        matches!(self, CredentialStore::Kubernetes(_))
    }

    /// The revocations the backend announces, for the one consumer that publishes them (`None`
    /// for SQL, and once taken).
    pub fn take_revocations(&self) -> Option<mpsc::UnboundedReceiver<Revocation>> {
        match self {
            CredentialStore::Sql(_) => None,
            CredentialStore::Kubernetes(store) => store.take_revocations(),
        }
    }

    // --- endpoint tokens -------------------------------------------------------------------

    /// Stores a new `Inactive` token; [`CmError::DuplicateToken`] if the value is taken.
    pub async fn insert_token(&self, new: NewToken) -> Result<EndpointToken, StorageError> {
        dispatch!(self, s => s.insert_token(new))
    }

    /// The token whose value is `token`, if any.
    pub async fn token_by_value(&self, token: &str) -> Result<Option<EndpointToken>, StorageError> {
        dispatch!(self, s => s.token_by_value(token))
    }

    pub async fn token(&self, id: &str) -> Result<EndpointToken, StorageError> {
        dispatch!(self, s => s.token(id))
    }

    /// Every token of an endpoint, oldest first.
    pub async fn endpoint_tokens(&self, endpoint_id: &str) -> Result<Vec<EndpointToken>, StorageError> {
        dispatch!(self, s => s.endpoint_tokens(endpoint_id))
    }

    /// Moves a token to `to` if [`TokenStatus::can_become`] allows it; compare-and-set on both
    /// backends, so concurrent callers see one real transition.
    pub async fn transition_token(&self, id: &str, to: TokenStatus) -> Result<Transition, StorageError> {
        dispatch!(self, s => s.transition_token(id, to))
    }

    /// `Inactive` -> `Active`; `false` if it was not `Inactive` (any more).
    pub async fn activate_token(&self, id: &str) -> Result<bool, StorageError> {
        dispatch!(self, s => s.activate_token(id))
    }

    /// Deletes every token of an endpoint and returns them.
    pub async fn delete_endpoint_tokens(
        &self,
        endpoint_id: &str,
    ) -> Result<Vec<EndpointToken>, StorageError> {
        dispatch!(self, s => s.delete_endpoint_tokens(endpoint_id))
    }

    // --- client credentials ----------------------------------------------------------------

    /// Stores a new `Active` credential; a taken username or issuer+serial is a conflict.
    pub async fn insert_credential(&self, new: NewCredential) -> Result<ClientCredential, StorageError> {
        dispatch!(self, s => s.insert_credential(new))
    }

    pub async fn credential(&self, id: &str) -> Result<ClientCredential, StorageError> {
        dispatch!(self, s => s.credential(id))
    }

    /// A page of credentials, oldest first; only those of `client_id` when given.
    pub async fn credentials(
        &self,
        client_id: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> Result<CredentialPage, StorageError> {
        dispatch!(self, s => s.credentials(client_id, offset, limit))
    }

    /// The password credential with this username, with its hash.
    pub async fn password_credential(
        &self,
        username: &str,
    ) -> Result<Option<PasswordCredential>, StorageError> {
        dispatch!(self, s => s.password_credential(username))
    }

    /// The certificate credential with this issuer and (canonical) serial.
    pub async fn certificate_credential(
        &self,
        issuer: &str,
        serial: &str,
    ) -> Result<Option<ClientCredential>, StorageError> {
        dispatch!(self, s => s.certificate_credential(issuer, serial))
    }

    /// Deletes a credential and returns it.
    pub async fn delete_credential(&self, id: &str) -> Result<ClientCredential, StorageError> {
        dispatch!(self, s => s.delete_credential(id))
    }
}
