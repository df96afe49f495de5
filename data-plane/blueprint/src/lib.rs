//! The `Blueprint` resource: what a kaa-rs platform consists of.
//!
//! # Layout
//! - [`spec`]: the resource as users write it (`apiVersion: kaa-rs.dev/v1alpha1`, `kind: Blueprint`).
//!   The same types are the operator's custom resource and the file `kaa up` reads.
//! - [`validate`]: every rule a Blueprint must satisfy, reported all at once with the field path.
//! - [`config`]: the typed configuration of each service kind (what a running service loads).
//! - [`render`]: Blueprint -> one [`config::ServiceConfig`] per service instance. The one renderer
//!   shared by `kaa up` and the operator, so a Blueprint means the same thing everywhere.

pub mod config;
pub mod render;
pub mod spec;
pub mod validate;

pub use render::render;
pub use spec::{Blueprint, BlueprintSpec, ServiceKind};
pub use validate::{Invalid, ValidationError};

/// The quickstart Blueprint that `kaa up` runs when given no file.
pub const QUICKSTART_YAML: &str = include_str!("../../../blueprints/quickstart.yaml");

/// Why a Blueprint file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BlueprintError {
    #[error("the Blueprint is not valid YAML of the expected shape: {0}")]
    Parse(String),
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

impl Blueprint {
    /// Parses and validates a Blueprint written in YAML (or JSON, which is YAML too).
    pub fn from_yaml(text: &str) -> Result<Self, BlueprintError> {
        let blueprint: Blueprint =
            serde_saphyr::from_str(text).map_err(|e| BlueprintError::Parse(e.to_string()))?;
        blueprint.validate()?;
        Ok(blueprint)
    }

    /// The bundled quickstart Blueprint.
    pub fn quickstart() -> Self {
        #[allow(clippy::expect_used)] // checked by the `quickstart_is_valid` test
        Self::from_yaml(QUICKSTART_YAML).expect("the bundled quickstart Blueprint is valid")
    }
}
