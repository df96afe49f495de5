//! EPR, the endpoint register: the one owner of endpoints, their tokens and their metadata.
//!
//! # Layout
//! - this file: [`Config`] (which applications and versions exist) and [`EprState`], the
//!   store plus config shared by both faces of the service.
//! - [`error`]: [`AppError`], the one mapping from store errors to HTTP-style statuses, used by
//!   the REST API and, as status codes, by the bus replies.
//! - [`rest`]: the REST API under `/epr/api/v1` ([`router`]).
//! - [`bus`]: the bus handlers ([`serve`]): 19/EPMMP metadata get / patch / keys-get and the
//!   16/ECAP `ep-token-request` (token -> endpoint; EPR holds the tokens until a credential
//!   service exists).
//!
//! Applications are configuration, not data: an endpoint is registered against an application
//! version, and an application is the set of versions the config lists under its name. Listing
//! by `applicationName` and checking ECAP's `appName` both go through that mapping.

use std::sync::Arc;

use kaa_store::Store;
use serde::{Deserialize, Serialize};

pub mod bus;
pub mod error;
pub mod rest;

pub use bus::{ServeError, serve};
pub use error::AppError;
pub use rest::router;

/// EPR configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Service instance name: the `{instance}` of the bus subjects and the queue group.
    pub instance: String,
    /// Applications and their versions; endpoints can only be registered against these versions.
    pub applications: Vec<Application>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            instance: "epr".to_owned(),
            applications: Vec::new(),
        }
    }
}

/// An application and its versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Application {
    pub name: String,
    pub versions: Vec<String>,
}

/// An inconsistent [`Config`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("the EPR instance name must be a non-empty NATS subject token (no '.', '*', '>' or spaces)")]
    BadInstance,
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

impl Config {
    /// Checks that names are non-empty and every version belongs to exactly one application.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !kaa_protocol::subject::is_valid_token(&self.instance) {
            return Err(ConfigError::BadInstance);
        }
        for (i, app) in self.applications.iter().enumerate() {
            if app.name.is_empty() {
                return Err(ConfigError::EmptyApplicationName(i));
            }
            if self.applications[..i].iter().any(|a| a.name == app.name) {
                return Err(ConfigError::DuplicateApplication(app.name.clone()));
            }
            for version in &app.versions {
                if version.is_empty() {
                    return Err(ConfigError::EmptyVersionName(app.name.clone()));
                }
                let owners: Vec<&str> = self.owners_of(version).collect();
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

    /// The application an application version belongs to.
    pub fn application_of(&self, app_version: &str) -> Option<&str> {
        self.owners_of(app_version).next()
    }

    /// The versions of an application (`None` if no such application is configured).
    pub fn versions_of(&self, application: &str) -> Option<&[String]> {
        self.applications
            .iter()
            .find(|a| a.name == application)
            .map(|a| a.versions.as_slice())
    }

    fn owners_of<'a>(&'a self, app_version: &str) -> impl Iterator<Item = &'a str> {
        self.applications
            .iter()
            .filter(move |a| a.versions.iter().any(|v| v == app_version))
            .map(|a| a.name.as_str())
    }
}

/// What the REST API and the bus handlers share: the store and the (validated) config.
#[derive(Debug, Clone)]
pub struct EprState {
    store: Store,
    config: Arc<Config>,
}

impl EprState {
    /// Validates `config` and bundles it with the store.
    pub fn new(store: Store, config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            store,
            config: Arc::new(config),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &Config {
        &self.config
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
        let cfg: Config = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg, Config::default());
        assert_eq!(cfg.instance, "epr");
        let err = serde_json::from_str::<Config>(r#"{"instances":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = serde_json::from_str::<Config>(r#"{"applications":[{"name":"a","versions":[],"x":1}]}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn config_maps_versions_to_applications() {
        let cfg = Config {
            applications: vec![app("meter", &["meter-v1", "meter-v2"]), app("lamp", &["lamp-v1"])],
            ..Default::default()
        };
        cfg.validate().unwrap();
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
            dup.validate(),
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
            twice.validate(),
            Err(ConfigError::DuplicateApplication("a".into()))
        );
        let empty = Config {
            applications: vec![app("a", &[""])],
            ..Default::default()
        };
        assert_eq!(empty.validate(), Err(ConfigError::EmptyVersionName("a".into())));
        let bad = Config {
            instance: "ep.r".into(),
            ..Default::default()
        };
        assert_eq!(bad.validate(), Err(ConfigError::BadInstance));
    }
}
