//! The write path: read a Secret (the reflector's copy first), decide what to write, write it with
//! the read resourceVersion as precondition, start over on a conflict, and return once the watch
//! has delivered the write, so that CM reads its own writes.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    api::{DeleteParams, PostParams, Preconditions},
    runtime::reflector::ObjectRef,
};
use tokio::time::Instant;

use super::{SecretStore, SecretStoreError, index::Index};
use crate::cm::storage::StorageError;

/// Attempts at one write before giving up as contended.
const WRITE_ATTEMPTS: usize = 16;

/// How long a write waits for the watch to deliver it before answering anyway.
const READ_YOUR_WRITE: Duration = Duration::from_secs(10);

/// What one write does, decided from the current Secret.
pub(super) enum Write<T> {
    /// Nothing to change; answer `T`.
    Nothing(T),
    Create(Secret, T),
    /// The changed copy of the current Secret (its resourceVersion is the precondition).
    Replace(Secret, T),
    /// Delete the current Secret (precondition: its resourceVersion).
    Delete(T),
}

fn api_error(action: &'static str, name: &str) -> impl FnOnce(kube::Error) -> StorageError {
    let name = name.to_owned();
    move |source| SecretStoreError::Api { action, name, source }.into()
}

/// `409 Conflict` / `AlreadyExists`, or `404` (deleted meanwhile): read again and retry.
fn is_race(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409 || status.code == 404)
}

impl SecretStore {
    fn cached(&self, name: &str) -> Option<Secret> {
        let key = ObjectRef::new(name).within(&self.inner.namespace);
        self.inner.cache.get(&key).map(|s| Secret::clone(&s))
    }

    /// Reads `name`, lets `decide` say what to write, writes it with the read resourceVersion as
    /// precondition, and starts over (reading from the API this time) when someone else changed
    /// the Secret in between. `decide` may run several times.
    pub(super) async fn write<T>(
        &self,
        name: &str,
        mut decide: impl FnMut(Option<&Secret>) -> Result<Write<T>, StorageError>,
    ) -> Result<T, StorageError> {
        let api = &self.inner.api;
        let mut fresh = false;
        for _ in 0..WRITE_ATTEMPTS {
            let current = match fresh {
                false => self.cached(name),
                true => api.get_opt(name).await.map_err(api_error("read", name))?,
            };
            fresh = true;
            let current_version = current.as_ref().and_then(|s| s.metadata.resource_version.clone());
            match decide(current.as_ref())? {
                Write::Nothing(answer) => return Ok(answer),
                Write::Create(secret, answer) => match api.create(&PostParams::default(), &secret).await {
                    Ok(written) => {
                        self.await_version(name, &written).await;
                        return Ok(answer);
                    }
                    Err(e) if is_race(&e) => continue,
                    Err(e) => return Err(api_error("create", name)(e)),
                },
                Write::Replace(secret, answer) => {
                    match api.replace(name, &PostParams::default(), &secret).await {
                        Ok(written) => {
                            self.await_version(name, &written).await;
                            return Ok(answer);
                        }
                        Err(e) if is_race(&e) => continue,
                        Err(e) => return Err(api_error("update", name)(e)),
                    }
                }
                Write::Delete(answer) => {
                    let Some(version) = current_version else {
                        // Nothing to delete (decide saw no Secret): the answer stands.
                        return Ok(answer);
                    };
                    let params = DeleteParams {
                        preconditions: Some(Preconditions {
                            resource_version: Some(version.clone()),
                            uid: None,
                        }),
                        ..DeleteParams::default()
                    };
                    match api.delete(name, &params).await {
                        Ok(_) => {
                            self.await_deletion(name, &version).await;
                            return Ok(answer);
                        }
                        Err(e) if is_race(&e) => continue,
                        Err(e) => return Err(api_error("delete", name)(e)),
                    }
                }
            }
        }
        Err(SecretStoreError::Contended(name.to_owned()).into())
    }

    async fn await_version(&self, name: &str, written: &Secret) {
        if let Some(version) = written.metadata.resource_version.as_deref() {
            self.await_index(name, |index| index.has_seen(name, version))
                .await;
        }
    }

    async fn await_deletion(&self, name: &str, version: &str) {
        self.await_index(name, |index| index.has_seen_deletion(name, version))
            .await;
    }

    /// Until the watch has delivered this replica's write: then reads (here and in every other
    /// handler) see it. If the watch lags too long the write is answered anyway (it is stored).
    async fn await_index(&self, name: &str, delivered: impl Fn(&Index) -> bool) {
        let mut applied = self.inner.shared.applied.subscribe();
        let deadline = Instant::now() + READ_YOUR_WRITE;
        loop {
            if delivered(&self.index()) {
                return;
            }
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                // The watch task ended (shutting down) or lags: the write is stored regardless.
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::warn!(
                        secret = name,
                        "the watch has not delivered this write within {READ_YOUR_WRITE:?}; answering anyway"
                    );
                    return;
                }
            }
        }
    }
}
