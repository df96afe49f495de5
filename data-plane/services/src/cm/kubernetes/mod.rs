//! CM's Kubernetes backend: endpoint tokens and client credentials as Secrets ([`SecretStore`]).
//!
//! Reads never call the API server: a kube-runtime reflector watches this instance's Secrets
//! (label `kaa-rs.dev/cm=<instance>`) and every event updates an in-memory index
//! (token hash -> token, username -> credential, issuer + serial -> credential, ...), so validating
//! a token or a password is a memory lookup. [`SecretStore::start`] returns only after the initial
//! list is in memory, so CM never answers "unknown" for a credential that exists.
//!
//! Writes go to the API server with optimistic concurrency: read the Secret (the reflector's copy
//! first, a fresh `GET` after a conflict), change it, `replace` it with the read `resourceVersion`
//! as precondition (or `create`, or `delete` with a resourceVersion precondition), and start over
//! on `409 Conflict`. A write returns once the watch has delivered it, so CM reads its own writes.
//!
//! Revocations come from the watch, whoever made the change: a token that disappears (its entry,
//! its Secret) or turns `Suspended` / `Revoked`, a credential that disappears, turns `Revoked` or
//! changes its identity or password hash. Each CM replica watches, so with N replicas gateways may
//! hear of one revocation N times; handling an announcement is idempotent, and a missed one would
//! be worse than a repeated one (at-least-once by design). An edit made while the watch is down is
//! found by the re-list that follows.
//!
//! Secret data (token hashes, password hashes) is never logged: log lines name Secrets, token ids
//! and credential ids only.
//!
//! - [`layout`]: names, labels and data keys (the documented layout), Secret <-> record.
//! - `index`: the in-memory view and the revocation diff.
//! - `write`: the optimistic-concurrency write loop and waiting to read one's own write.
//! - `watching`: the reflector task feeding the index and announcing revocations.

use std::{
    fmt,
    sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard},
    time::Duration,
};

use k8s_openapi::api::core::v1::Secret;
use kaa_store::{
    ClientCredential, CmError, CredentialKind, CredentialPage, EndpointToken, NewCredential, NewToken,
    PasswordCredential, TokenStatus, Transition, token_hash,
};
use kube::{Api, runtime::reflector};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::storage::{Revocation, StorageError};

mod index;
pub mod layout;
mod watching;
mod write;

use index::Index;
use layout::{CredentialEntry, Parsed, StoredToken, put_token, token_in};
pub use layout::{Layout, LayoutError};
use watching::watch_secrets;
use write::Write;

/// How long [`SecretStore::connect`] waits for the initial list by default.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors of the Kubernetes backend (the domain errors are [`CmError`]s).
#[derive(Debug, thiserror::Error)]
pub enum SecretStoreError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("cannot configure a Kubernetes client (in-cluster service account or KUBECONFIG): {0}")]
    Connect(#[source] kube::Error),
    #[error("cannot {action} Secret {name}: {source}")]
    Api {
        action: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "the credential Secrets in namespace {namespace} were not listed within {timeout:?}{}",
        last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default()
    )]
    NotReady {
        namespace: String,
        timeout: Duration,
        last_error: Option<String>,
    },
    #[error("Secret {0} changed too often concurrently; try again")]
    Contended(String),
}

impl SecretStoreError {
    /// Whether the API server could not be reached or failed (rather than refused the request).
    pub fn is_unavailable(&self) -> bool {
        match self {
            SecretStoreError::Api { source, .. } => match source {
                kube::Error::Api(status) => status.code >= 500 || status.code == 429,
                _ => true,
            },
            SecretStoreError::NotReady { .. } | SecretStoreError::Connect(_) => true,
            SecretStoreError::Layout(_) | SecretStoreError::Contended(_) => false,
        }
    }
}

/// CM's tokens and credentials in Kubernetes Secrets of one namespace. Cheap to clone; the watch
/// stops when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct SecretStore {
    inner: Arc<Inner>,
}

struct Inner {
    api: Api<Secret>,
    namespace: String,
    layout: Layout,
    shared: Arc<Shared>,
    /// The reflector's copies: the first guess of a write's current Secret.
    cache: reflector::Store<Secret>,
    /// Serialises this replica's inserts, so that two cannot both find a value free.
    inserts: tokio::sync::Mutex<()>,
    revocations: Mutex<Option<mpsc::UnboundedReceiver<Revocation>>>,
    _stop: DropGuard,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretStore")
            .field("namespace", &self.namespace)
            .field("selector", &self.layout.selector())
            .finish_non_exhaustive()
    }
}

/// What the watch task and the store share.
#[derive(Debug)]
struct Shared {
    index: RwLock<Index>,
    /// Bumped after every applied watch event (writers wait on it).
    applied: watch::Sender<u64>,
    /// True once the initial list is in the index.
    ready: watch::Sender<bool>,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, Index> {
        // The index is only written by the watch task; a panic there leaves it consistent enough
        // to read (each update is one call), so keep serving rather than poison every reader.
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl SecretStore {
    /// Connects like `kubectl` (in-cluster service account, else `KUBECONFIG` / `~/.kube/config`)
    /// and starts watching in `namespace`, or the client's default namespace (in a pod: its own).
    pub async fn connect(
        instance: &str,
        namespace: Option<&str>,
        ready_timeout: Duration,
    ) -> Result<SecretStore, SecretStoreError> {
        // Check the name before touching the cluster: a bad one is a config error.
        Layout::new(instance)?;
        let client = kube::Client::try_default()
            .await
            .map_err(SecretStoreError::Connect)?;
        let namespace = namespace.map_or_else(|| client.default_namespace().to_owned(), str::to_owned);
        Self::start(client, &namespace, instance, ready_timeout).await
    }

    /// Starts watching `instance`'s Secrets in `namespace` and returns once the initial list is
    /// in memory (or fails after `ready_timeout`, with the last API error).
    pub async fn start(
        client: kube::Client,
        namespace: &str,
        instance: &str,
        ready_timeout: Duration,
    ) -> Result<SecretStore, SecretStoreError> {
        let layout = Layout::new(instance)?;
        let api: Api<Secret> = Api::namespaced(client, namespace);
        let (cache, writer) = reflector::store();
        let shared = Arc::new(Shared {
            index: RwLock::new(Index::default()),
            applied: watch::Sender::new(0),
            ready: watch::Sender::new(false),
            last_error: Mutex::new(None),
        });
        let (revocations, receiver) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let mut ready = shared.ready.subscribe();
        tokio::spawn(watch_secrets(
            api.clone(),
            layout.clone(),
            shared.clone(),
            writer,
            revocations,
            stop.clone(),
        ));
        let store = SecretStore {
            inner: Arc::new(Inner {
                api,
                namespace: namespace.to_owned(),
                layout,
                shared: shared.clone(),
                cache,
                inserts: tokio::sync::Mutex::new(()),
                revocations: Mutex::new(Some(receiver)),
                _stop: stop.drop_guard(),
            }),
        };
        match tokio::time::timeout(ready_timeout, ready.wait_for(|ready| *ready)).await {
            Ok(Ok(_)) => {
                tracing::info!(
                    namespace,
                    selector = %store.inner.layout.selector(),
                    "credential Secrets loaded"
                );
                Ok(store)
            }
            _ => Err(SecretStoreError::NotReady {
                namespace: namespace.to_owned(),
                timeout: ready_timeout,
                last_error: shared
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            }),
        }
    }

    /// The layout this store reads and writes.
    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    pub(crate) fn take_revocations(&self) -> Option<mpsc::UnboundedReceiver<Revocation>> {
        self.inner
            .revocations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.inner.shared.read()
    }

    // --- endpoint tokens -------------------------------------------------------------------

    pub async fn insert_token(&self, new: NewToken) -> Result<EndpointToken, StorageError> {
        let layout = &self.inner.layout;
        let name = layout.endpoint_secret_name(&new.endpoint_id);
        let hash = token_hash(&new.token);
        let _one_insert_at_a_time = self.inner.inserts.lock().await;
        if self.index().hash_taken(&hash) {
            return Err(CmError::DuplicateToken.into());
        }
        let stored = StoredToken {
            token: new.issue(),
            hash,
        };
        self.write(&name, |current| {
            Ok(match current {
                None => Write::Create(layout.new_endpoint_secret(&name, &stored), ()),
                Some(current) => {
                    let mut secret = current.clone();
                    layout.claim_endpoint_secret(&mut secret, &stored.token.endpoint_id);
                    put_token(&mut secret, &stored);
                    Write::Replace(secret, ())
                }
            })
        })
        .await?;
        Ok(stored.token)
    }

    pub async fn token_by_value(&self, token: &str) -> Result<Option<EndpointToken>, StorageError> {
        Ok(self.index().token_by_hash(&token_hash(token)))
    }

    pub async fn token(&self, id: &str) -> Result<EndpointToken, StorageError> {
        self.index()
            .token(id)
            .ok_or_else(|| CmError::TokenNotFound(id.to_owned()).into())
    }

    pub async fn endpoint_tokens(&self, endpoint_id: &str) -> Result<Vec<EndpointToken>, StorageError> {
        Ok(self.index().endpoint_tokens(endpoint_id))
    }

    /// The Secret and endpoint of token `id`, from the index.
    fn locate_token(&self, id: &str) -> Option<(String, String)> {
        let index = self.index();
        let name = index.token_secret(id)?.to_owned();
        let endpoint_id = index.token(id)?.endpoint_id;
        Some((name, endpoint_id))
    }

    pub async fn transition_token(&self, id: &str, to: TokenStatus) -> Result<Transition, StorageError> {
        let not_found = || StorageError::from(CmError::TokenNotFound(id.to_owned()));
        let (name, endpoint_id) = self.locate_token(id).ok_or_else(not_found)?;
        self.write(&name, |current| {
            let current = current.ok_or_else(not_found)?;
            let stored = token_in(current, &endpoint_id, id).ok_or_else(not_found)?;
            let from = stored.token.status;
            if !from.can_become(to) {
                return Err(CmError::InvalidTransition {
                    token_id: id.to_owned(),
                    from,
                    to,
                }
                .into());
            }
            if from == to {
                return Ok(Write::Nothing(Transition {
                    previous: to,
                    token: stored.token,
                }));
            }
            let mut changed = stored;
            changed.token.status = to;
            let mut secret = current.clone();
            put_token(&mut secret, &changed);
            Ok(Write::Replace(
                secret,
                Transition {
                    previous: from,
                    token: changed.token,
                },
            ))
        })
        .await
    }

    pub async fn activate_token(&self, id: &str) -> Result<bool, StorageError> {
        let Some((name, endpoint_id)) = self.locate_token(id) else {
            return Ok(false);
        };
        self.write(&name, |current| {
            // Gone meanwhile, or no longer Inactive: someone else changed it; the caller re-reads.
            let Some((current, mut stored)) = current.and_then(|c| Some((c, token_in(c, &endpoint_id, id)?)))
            else {
                return Ok(Write::Nothing(false));
            };
            if stored.token.status != TokenStatus::Inactive {
                return Ok(Write::Nothing(false));
            }
            stored.token.status = TokenStatus::Active;
            let mut secret = current.clone();
            put_token(&mut secret, &stored);
            Ok(Write::Replace(secret, true))
        })
        .await
    }

    pub async fn delete_endpoint_tokens(
        &self,
        endpoint_id: &str,
    ) -> Result<Vec<EndpointToken>, StorageError> {
        let layout = &self.inner.layout;
        let name = layout.endpoint_secret_name(endpoint_id);
        self.write(&name, |current| {
            let Some(current) = current else {
                return Ok(Write::Nothing(Vec::new()));
            };
            let mut tokens: Vec<EndpointToken> = match layout.read(current).parsed {
                Parsed::Endpoint(entry) => entry.tokens.into_values().map(|t| t.token).collect(),
                _ => Vec::new(),
            };
            tokens.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            Ok(Write::Delete(tokens))
        })
        .await
    }

    // --- client credentials ----------------------------------------------------------------

    pub async fn insert_credential(&self, new: NewCredential) -> Result<ClientCredential, StorageError> {
        let layout = &self.inner.layout;
        let (kind, password_hash) = new.auth.into_parts();
        let _one_insert_at_a_time = self.inner.inserts.lock().await;
        {
            let index = self.index();
            match &kind {
                CredentialKind::Password { username } if index.username_taken(username) => {
                    return Err(CmError::DuplicateUsername(username.clone()).into());
                }
                CredentialKind::Certificate { issuer, serial } if index.certificate_taken(issuer, serial) => {
                    return Err(CmError::DuplicateCertificate {
                        issuer: issuer.clone(),
                        serial: serial.clone(),
                    }
                    .into());
                }
                _ => {}
            }
        }
        let entry = CredentialEntry {
            credential: ClientCredential::issue(new.client_id, kind),
            password_hash,
        };
        let name = layout
            .credential_secret_name(&entry.credential.id)
            .map_err(SecretStoreError::from)?;
        self.write(&name, |current| match current {
            None => Ok(Write::Create(layout.new_credential_secret(&name, &entry), ())),
            // A fresh UUID already taken: not worth more than an error.
            Some(_) => Err(SecretStoreError::Contended(name.clone()).into()),
        })
        .await?;
        Ok(entry.credential)
    }

    pub async fn credential(&self, id: &str) -> Result<ClientCredential, StorageError> {
        self.index()
            .credential(id)
            .ok_or_else(|| CmError::CredentialNotFound(id.to_owned()).into())
    }

    pub async fn credentials(
        &self,
        client_id: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> Result<CredentialPage, StorageError> {
        let (items, total) = self.index().credentials(client_id, offset, limit);
        Ok(CredentialPage { items, total })
    }

    pub async fn password_credential(
        &self,
        username: &str,
    ) -> Result<Option<PasswordCredential>, StorageError> {
        Ok(self.index().password_credential(username))
    }

    pub async fn certificate_credential(
        &self,
        issuer: &str,
        serial: &str,
    ) -> Result<Option<ClientCredential>, StorageError> {
        Ok(self.index().certificate_credential(issuer, serial))
    }

    pub async fn delete_credential(&self, id: &str) -> Result<ClientCredential, StorageError> {
        let layout = &self.inner.layout;
        let not_found = || StorageError::from(CmError::CredentialNotFound(id.to_owned()));
        let name = layout.credential_secret_name(id).map_err(|_| not_found())?;
        self.write(&name, |current| match current.map(|c| layout.read(c).parsed) {
            Some(Parsed::Credential(entry)) => Ok(Write::Delete(entry.credential)),
            _ => Err(not_found()),
        })
        .await
    }
}
