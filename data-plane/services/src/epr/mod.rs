//! EPR, the endpoint register: the one owner of endpoints and their metadata.
//!
//! # Layout
//! - this file: [`Config`] (which applications and versions exist), its [`validate`], and
//!   [`EprState`], what both faces of the service share (store, config, bus).
//! - [`error`]: the mapping from store errors to [`AppError`] (HTTP-style statuses), used by the
//!   REST API and, as status codes, by the bus replies.
//! - [`rest`]: the REST API under `/epr/api/v1` ([`router`]). Registering with an
//!   `endpointToken` hands the token to the credential service (`cm`) over the bus; registering
//!   and deleting publish 9/ELCE lifecycle events (the credential service deletes a deleted
//!   endpoint's tokens on `unregistered`).
//! - [`bus`]: the bus handlers ([`serve`]): 19/EPMMP metadata get / patch / keys-get.
//!
//! Applications are configuration, not data: an endpoint is registered against an application
//! version, and an application is the set of versions the config lists under its name. Listing
//! by `applicationName` goes through that mapping.

use std::sync::Arc;

use kaa_blueprint::config::Live;
use kaa_bus::Bus;
use kaa_store::Store;

pub mod bus;
pub mod error;
pub mod rest;

pub use bus::{ServeError, serve, serve_state};
pub use error::AppError;
pub use rest::router;

/// EPR configuration: the one typed config rendered from a Blueprint (see
/// [`kaa_blueprint::config::EprConfig`], which also answers [`Config::application_of`] and
/// [`Config::versions_of`]).
pub use kaa_blueprint::config::{EprApplication as Application, EprConfig as Config};

/// An inconsistent [`Config`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("the EPR instance name must be a non-empty NATS subject token (no '.', '*', '>' or spaces)")]
    BadInstance,
    #[error("cmInstance must be a non-empty NATS subject token (no '.', '*', '>' or spaces)")]
    BadCmInstance,
    #[error("application #{0} has an empty name")]
    EmptyApplicationName(usize),
    #[error("application {0:?} is listed twice")]
    DuplicateApplication(String),
    #[error("application {0:?} has an empty version name")]
    EmptyVersionName(String),
    #[error("application version {version:?} is listed under both {first:?} and {second:?}")]
    DuplicateVersion {
        version: String,
        first: String,
        second: String,
    },
}

/// Checks that names are non-empty and every version belongs to exactly one application.
pub fn validate(config: &Config) -> Result<(), ConfigError> {
    if !kaa_protocol::subject::is_valid_token(&config.instance) {
        return Err(ConfigError::BadInstance);
    }
    if !kaa_protocol::subject::is_valid_token(&config.cm_instance) {
        return Err(ConfigError::BadCmInstance);
    }
    for (i, app) in config.applications.iter().enumerate() {
        if app.name.is_empty() {
            return Err(ConfigError::EmptyApplicationName(i));
        }
        if config.applications[..i].iter().any(|a| a.name == app.name) {
            return Err(ConfigError::DuplicateApplication(app.name.clone()));
        }
        for version in &app.versions {
            if version.is_empty() {
                return Err(ConfigError::EmptyVersionName(app.name.clone()));
            }
            let owners: Vec<&str> = config.owners_of(version).collect();
            if let [first, second, ..] = owners[..] {
                return Err(ConfigError::DuplicateVersion {
                    version: version.clone(),
                    first: first.to_owned(),
                    second: second.to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// What the REST API and the bus handlers share: the store, the (validated) config and the bus
/// (to reach the credential service and to publish lifecycle events).
#[derive(Debug, Clone)]
pub struct EprState {
    store: Store,
    bus: Bus,
    /// Read once per request ([`Self::config`]); replaced by a live config change.
    config: Live<Config>,
    replica: Arc<str>,
}

impl EprState {
    /// Validates `config` and bundles it with the store and the bus. The replica id (the
    /// `originatorReplicaId` of lifecycle events) defaults to the instance name; see
    /// [`Self::with_replica`].
    pub fn new(store: Store, bus: Bus, config: Config) -> Result<Self, ConfigError> {
        validate(&config)?;
        Ok(Self {
            store,
            bus,
            replica: Arc::from(config.instance.as_str()),
            config: Live::new(config),
        })
    }

    /// Names this replica in the events it publishes.
    pub fn with_replica(mut self, replica: &str) -> Self {
        self.replica = Arc::from(replica);
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The current config: read it once per request and keep that snapshot.
    pub fn config(&self) -> Arc<Config> {
        self.config.get()
    }

    /// The handle that replaces the config while the service runs.
    pub fn live_config(&self) -> &Live<Config> {
        &self.config
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str, versions: &[&str]) -> Application {
        Application {
            name: name.into(),
            versions: versions.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn config_defaults_and_rejects_unknown_fields() {
        let cfg: Config = serde_json::from_str(r#"{"instance":"epr","applications":[]}"#).unwrap();
        assert_eq!(cfg, Config::default());
        assert_eq!(cfg.instance, "epr");
        validate(&cfg).unwrap();
        let err = serde_json::from_str::<Config>(r#"{"instances":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = serde_json::from_str::<Config>(
            r#"{"instance":"epr","applications":[{"name":"a","versions":[],"x":1}]}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn config_maps_versions_to_applications() {
        let cfg = Config {
            applications: vec![app("meter", &["meter-v1", "meter-v2"]), app("lamp", &["lamp-v1"])],
            ..Default::default()
        };
        validate(&cfg).unwrap();
        assert_eq!(cfg.application_of("meter-v2"), Some("meter"));
        assert_eq!(cfg.application_of("lamp-v1"), Some("lamp"));
        assert_eq!(cfg.application_of("nope"), None);
        assert_eq!(cfg.versions_of("lamp"), Some(&["lamp-v1".to_string()][..]));
        assert_eq!(cfg.versions_of("nope"), None);
    }

    #[test]
    fn config_validation_names_the_problem() {
        let dup = Config {
            applications: vec![app("a", &["v1"]), app("b", &["v1"])],
            ..Default::default()
        };
        assert_eq!(
            validate(&dup),
            Err(ConfigError::DuplicateVersion {
                version: "v1".into(),
                first: "a".into(),
                second: "b".into()
            })
        );
        let twice = Config {
            applications: vec![app("a", &[]), app("a", &[])],
            ..Default::default()
        };
        assert_eq!(
            validate(&twice),
            Err(ConfigError::DuplicateApplication("a".into()))
        );
        let empty = Config {
            applications: vec![app("a", &[""])],
            ..Default::default()
        };
        assert_eq!(validate(&empty), Err(ConfigError::EmptyVersionName("a".into())));
        let bad = Config {
            instance: "ep.r".into(),
            ..Default::default()
        };
        assert_eq!(validate(&bad), Err(ConfigError::BadInstance));
        let bad = Config {
            cm_instance: "".into(),
            ..Default::default()
        };
        assert_eq!(validate(&bad), Err(ConfigError::BadCmInstance));
    }
}
