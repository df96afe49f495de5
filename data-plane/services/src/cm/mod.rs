//! CM, the credential service: the one owner of endpoint tokens and client credentials, and the
//! platform's 16/ECAP provider.
//!
//! Two kinds of secrets, two questions the gateway asks:
//! - **endpoint tokens** identify an endpoint in 1/KP topics ("which endpoint is `my-meter`?");
//!   states `Inactive` -> `Active` (first successful validation) <-> `Suspended`, any -> `Revoked`
//!   (terminal); suspended and revoked tokens validate as 403;
//! - **client credentials** say who may connect: MQTT username + password (argon2id hash) or a TLS
//!   client certificate (issuer + serial number, after the gateway verified the chain), each
//!   mapped to a client id.
//!
//! Whenever a token stops being usable (-> `Suspended` / `Revoked`, or deleted with its endpoint)
//! CM broadcasts an `EndpointTokenRevokedEvent`; whenever a credential is deleted, a
//! `ClientCredentialRevokedEvent`. Gateways drop caches and cut sessions on them.
//!
//! # Layout
//! - this file: [`Config`] and its [`validate`], [`CmState`] (storage, bus, config, password
//!   hasher: what both faces share), the status change every path goes through
//!   ([`CmState::set_token_status`]) and the revocation broadcasts.
//! - [`storage`]: the storage seam, [`CredentialStore`]: SQL ([`kaa_store::Store`]) or
//!   Kubernetes Secrets ([`kubernetes::SecretStore`]), chosen by `storage` in the config.
//! - [`kubernetes`]: the Secret backend: a reflector-fed in-memory index, writes with optimistic
//!   concurrency, revocations seen by its watch; the Secret layout ([`kubernetes::layout`]).
//! - [`bus`]: the bus face ([`serve`]): the four 16/ECAP providers, the kaa-rs
//!   `ep-token-provision-request` EPR uses at registration, and EPR's `unregistered` events.
//! - [`rest`]: `/cm/api/v1` (tokens) and `/ccm/api/v1` (client credentials) ([`router`]).
//! - `secret`: [`Secret`] (a value whose `Debug` is `***`), token generation and token rules.
//! - `password`: argon2id hashing and verification, off the async threads and bounded.
//! - `error`: store errors as [`AppError`]s.
//!
//! Secrets never reach logs, errors or `Debug` output: requests carry them as [`Secret`]s, the
//! store keeps only hashes, and log lines name tokens and credentials by their ids.
//!
//! Revocations are announced by whoever sees them happen: with SQL, CM as it makes the change;
//! with Kubernetes Secrets, which `kubectl` or the operator may change too, the backend's watch
//! (for every change, CM's own included), published by [`serve`].

use std::sync::Arc;

use kaa_blueprint::config::Live;
use kaa_bus::Bus;
use kaa_protocol::{
    avro::AvroRecord,
    ecap::{ClientCredentialRevokedEvent, EndpointTokenRevokedEvent},
    now_millis, subject,
};
use kaa_store::{EndpointToken, TokenStatus, Transition};

pub mod bus;
mod error;
pub mod kubernetes;
mod password;
pub mod rest;
mod secret;
pub mod storage;

pub use bus::{ServeError, serve};
pub use password::PasswordError;
pub use rest::router;
pub use secret::{MAX_TOKEN_LEN, Secret, check_token_value, generate_token};
pub use storage::{CredentialStore, Revocation, StorageError};

use crate::rest::AppError;
use password::Passwords;

/// CM configuration: the one typed config rendered from a Blueprint
/// ([`kaa_blueprint::config::CmConfig`]).
pub use kaa_blueprint::config::{CmConfig as Config, CmSettings, CmStorage, PasswordHashSettings};

/// An unusable [`Config`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the CM instance name must be a non-empty NATS subject token (no '.', '*', '>' or spaces)")]
    BadInstance,
    #[error("eprInstance must be a non-empty NATS subject token (no '.', '*', '>' or spaces)")]
    BadEprInstance,
    #[error(transparent)]
    PasswordHash(#[from] PasswordError),
}

/// Checks the names and the password hash cost.
pub fn validate(config: &Config) -> Result<(), ConfigError> {
    check_names(config)?;
    Passwords::new(&config.password_hash)?;
    Ok(())
}

fn check_names(config: &Config) -> Result<(), ConfigError> {
    if !subject::is_valid_token(&config.instance) {
        return Err(ConfigError::BadInstance);
    }
    if !subject::is_valid_token(&config.epr_instance) {
        return Err(ConfigError::BadEprInstance);
    }
    Ok(())
}

/// What the REST API and the bus handlers share.
#[derive(Debug, Clone)]
pub struct CmState {
    store: CredentialStore,
    bus: Bus,
    /// Read once per request ([`Self::config`]); replaced by a live config change.
    config: Live<Config>,
    /// Follows `passwordHash`: rebuilt when a live config change alters it.
    passwords: Live<Passwords>,
    replica: Arc<str>,
}

impl CmState {
    /// Validates `config` and bundles it with the storage backend (a [`kaa_store::Store`] or a
    /// [`kubernetes::SecretStore`]) and the bus. The replica id (the `originatorReplicaId` of
    /// revocation events) defaults to the instance name; see [`Self::with_replica`].
    pub fn new(store: impl Into<CredentialStore>, bus: Bus, config: Config) -> Result<Self, ConfigError> {
        check_names(&config)?;
        let passwords = Passwords::new(&config.password_hash)?;
        Ok(CmState {
            store: store.into(),
            bus,
            passwords: Live::new(passwords),
            replica: Arc::from(config.instance.as_str()),
            config: Live::new(config),
        })
    }

    /// Names this replica in the events it publishes.
    pub fn with_replica(mut self, replica: &str) -> Self {
        self.replica = Arc::from(replica);
        self
    }

    pub fn store(&self) -> &CredentialStore {
        &self.store
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The current config: read it once per request and keep that snapshot.
    pub fn config(&self) -> Arc<Config> {
        self.config.get()
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    pub(crate) fn passwords(&self) -> Arc<Passwords> {
        self.passwords.get()
    }

    /// Replaces the config while the service runs (the instance names must stay); a changed
    /// `passwordHash` applies to passwords set from now on.
    pub fn apply_config(&self, config: Config) -> Result<(), ConfigError> {
        check_names(&config)?;
        if config.password_hash != self.config().password_hash {
            self.passwords.set(Passwords::new(&config.password_hash)?);
        }
        self.config.set(config);
        Ok(())
    }

    /// Moves a token to `to` (see [`TokenStatus::can_become`]; a forbidden move is a 409), and
    /// broadcasts the revocation when it becomes unusable. REST and 16/ECAP both come here.
    pub async fn set_token_status(&self, token_id: &str, to: TokenStatus) -> Result<Transition, AppError> {
        let transition = self.store.transition_token(token_id, to).await?;
        if transition.changed() {
            let token = &transition.token;
            tracing::info!(
                token_id = %token.id,
                endpoint_id = %token.endpoint_id,
                from = %transition.previous,
                to = %token.status,
                "endpoint token status changed"
            );
            if !token.status.is_usable() {
                self.token_revoked(&token.app_name, &token.endpoint_id, vec![token.id.clone()])
                    .await;
            }
        }
        Ok(transition)
    }

    /// Broadcasts that `token_ids` of one endpoint no longer identify it, unless the backend
    /// announces its changes itself.
    pub(crate) async fn token_revoked(&self, app_name: &str, endpoint_id: &str, token_ids: Vec<String>) {
        if !self.store.announces_revocations() {
            self.announce_token_revoked(app_name, endpoint_id, token_ids)
                .await;
        }
    }

    async fn announce_token_revoked(&self, app_name: &str, endpoint_id: &str, token_ids: Vec<String>) {
        let event = EndpointTokenRevokedEvent {
            correlation_id: uuid::Uuid::new_v4().to_string(),
            timestamp: now_millis(),
            timeout: 0,
            app_name: app_name.to_owned(),
            endpoint_id: endpoint_id.to_owned(),
            token_ids,
            originator_replica_id: self.replica.to_string(),
        };
        self.broadcast(subject::ecap_token_revoked(&self.config().instance), event)
            .await;
    }

    /// Broadcasts that a client credential no longer authenticates anyone, unless the backend
    /// announces its changes itself.
    pub(crate) async fn credential_revoked(&self, credential_id: &str) {
        if !self.store.announces_revocations() {
            self.announce_credential_revoked(credential_id).await;
        }
    }

    async fn announce_credential_revoked(&self, credential_id: &str) {
        let event = ClientCredentialRevokedEvent {
            correlation_id: uuid::Uuid::new_v4().to_string(),
            timestamp: now_millis(),
            timeout: 0,
            credential_id: credential_id.to_owned(),
            originator_replica_id: self.replica.to_string(),
        };
        self.broadcast(subject::ecap_credential_revoked(&self.config().instance), event)
            .await;
    }

    /// Publishes what the backend saw (see [`CredentialStore::take_revocations`]).
    pub(crate) async fn announce(&self, revocation: Revocation) {
        match revocation {
            Revocation::Tokens {
                app_name,
                endpoint_id,
                token_ids,
            } => {
                tracing::info!(
                    endpoint_id,
                    tokens = token_ids.len(),
                    "announcing endpoint token revocation"
                );
                self.announce_token_revoked(&app_name, &endpoint_id, token_ids)
                    .await;
            }
            Revocation::Credential { credential_id } => {
                tracing::info!(credential_id, "announcing client credential revocation");
                self.announce_credential_revoked(&credential_id).await;
            }
        }
    }

    /// Best effort: the change is stored either way; a gateway that misses the event still
    /// re-validates when its token cache entry expires.
    async fn broadcast(&self, subject: String, event: impl AvroRecord) {
        if let Err(e) = self.bus.publish(&subject, event.to_avro().into()).await {
            tracing::warn!(%subject, error = %e, "cannot publish revocation event");
        }
    }

    /// Deletes every token of an endpoint (it left the register) and broadcasts their revocation.
    pub(crate) async fn delete_endpoint_tokens(
        &self,
        endpoint_id: &str,
    ) -> Result<Vec<EndpointToken>, AppError> {
        let deleted = self.store.delete_endpoint_tokens(endpoint_id).await?;
        // One endpoint's tokens share its application; group anyway, the event names one app.
        let mut by_app: Vec<(&str, Vec<String>)> = Vec::new();
        for token in &deleted {
            match by_app.iter_mut().find(|(app, _)| *app == token.app_name) {
                Some((_, ids)) => ids.push(token.id.clone()),
                None => by_app.push((&token.app_name, vec![token.id.clone()])),
            }
        }
        for (app, ids) in by_app {
            tracing::info!(
                endpoint_id,
                tokens = ids.len(),
                "endpoint tokens deleted with their endpoint"
            );
            self.token_revoked(app, endpoint_id, ids).await;
        }
        Ok(deleted)
    }
}
