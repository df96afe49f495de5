//! Configs of the device-control extensions: CMX (7/CMP configuration), CEX (11/CEP commands) and
//! BCX (binary data upload). Kept apart from the other kinds' configs; re-exported by
//! [`crate::config`].

use serde::{Deserialize, Serialize};

use crate::ServiceKind;

/// Device requests handled concurrently by one replica of an extension.
fn default_max_in_flight() -> usize {
    256
}

// ---------------------------------------------------------------------------------------------
// CMX

/// CMX, the 7/CMP configuration extension. Every instance (`cmx`, `cmx_ota`, ...) keeps its own
/// configurations: one per application version (the default) and one per endpoint (an override).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CmxConfig {
    /// Extension instance name (topic level 3, subject `{instance}`, queue group).
    pub instance: String,
    /// Gateways whose 9/ELCE connectivity events say which replica holds an endpoint: configs are
    /// pushed through it.
    pub kpc_instances: Vec<String>,
    /// The configuration name the REST API (`/ecr/api/v1/...?name=`) serves this instance under:
    /// `default` for the instance `cmx`, else the instance name.
    pub config_name: String,
    /// Largest configuration document accepted over REST (bytes of JSON); larger: 413.
    #[serde(default = "default_max_config_bytes")]
    pub max_config_bytes: usize,
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

impl Default for CmxConfig {
    /// Instance `cmx` serving `default`, following gateway `kpc`.
    fn default() -> Self {
        CmxConfig {
            instance: ServiceKind::Cmx.as_str().to_owned(),
            kpc_instances: vec![ServiceKind::Kpc.as_str().to_owned()],
            config_name: DEFAULT_CONFIG_NAME.to_owned(),
            max_config_bytes: default_max_config_bytes(),
            max_in_flight: default_max_in_flight(),
        }
    }
}

/// The configuration name Kaa's REST client sends when none is given.
pub const DEFAULT_CONFIG_NAME: &str = "default";

impl CmxConfig {
    /// The configuration name of an instance without an explicit `configName`.
    pub fn config_name_of(instance: &str) -> String {
        if instance == ServiceKind::Cmx.as_str() {
            DEFAULT_CONFIG_NAME.to_owned()
        } else {
            instance.to_owned()
        }
    }
}

/// What a Blueprint may set on a `cmx` service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CmxSettings {
    /// See [`CmxConfig::config_name`]; absent: derived from the instance name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_name: Option<String>,
    #[serde(default = "default_max_config_bytes")]
    pub max_config_bytes: usize,
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

fn default_max_config_bytes() -> usize {
    64 * 1024
}

// ---------------------------------------------------------------------------------------------
// CEX

/// CEX, the 11/CEP command execution extension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CexConfig {
    /// Extension instance name (topic level 3, subject `{instance}`, queue group).
    pub instance: String,
    /// Gateways whose 9/ELCE connectivity events say which replica holds an endpoint.
    pub kpc_instances: Vec<String>,
    /// The endpoint register, asked (19/EPMMP) whether a command's endpoint exists.
    pub epr_instance: String,
    /// How long to wait for EPR.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// A command's time to live when the caller gives no `commandTtl`.
    #[serde(default = "default_command_ttl_ms")]
    pub default_command_ttl_ms: u64,
    /// Longest `awaitTimeout` a REST caller may ask for (longer ones are shortened to this).
    #[serde(default = "default_max_await_ms")]
    pub max_await_ms: u64,
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

impl Default for CexConfig {
    fn default() -> Self {
        let CexSettings {
            request_timeout_ms,
            default_command_ttl_ms,
            max_await_ms,
            max_in_flight,
        } = CexSettings::default();
        CexConfig {
            instance: ServiceKind::Cex.as_str().to_owned(),
            kpc_instances: vec![ServiceKind::Kpc.as_str().to_owned()],
            epr_instance: ServiceKind::Epr.as_str().to_owned(),
            request_timeout_ms,
            default_command_ttl_ms,
            max_await_ms,
            max_in_flight,
        }
    }
}

/// What a Blueprint may set on a `cex` service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CexSettings {
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    #[serde(default = "default_command_ttl_ms")]
    pub default_command_ttl_ms: u64,
    #[serde(default = "default_max_await_ms")]
    pub max_await_ms: u64,
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

impl Default for CexSettings {
    fn default() -> Self {
        CexSettings {
            request_timeout_ms: default_request_timeout_ms(),
            default_command_ttl_ms: default_command_ttl_ms(),
            max_await_ms: default_max_await_ms(),
            max_in_flight: default_max_in_flight(),
        }
    }
}

fn default_request_timeout_ms() -> u64 {
    5_000
}

/// Kaa's documented default `commandTtl`.
fn default_command_ttl_ms() -> u64 {
    60_000
}

fn default_max_await_ms() -> u64 {
    60_000
}

// ---------------------------------------------------------------------------------------------
// BCX

/// BCX, binary data upload: hands devices an upload token over 1/KP (`/token`) and takes their
/// uploads over REST (`POST /bcx/api/v1/binary-data`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BcxConfig {
    /// Extension instance name (topic level 3, subject `{instance}`, queue group).
    pub instance: String,
    /// Largest upload accepted; larger: 413.
    #[serde(default = "default_max_upload_bytes")]
    pub max_upload_bytes: usize,
    /// How long an upload token stays valid after it was issued.
    #[serde(default = "default_token_ttl_ms")]
    pub token_ttl_ms: u64,
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

impl Default for BcxConfig {
    fn default() -> Self {
        let BcxSettings {
            max_upload_bytes,
            token_ttl_ms,
            max_in_flight,
        } = BcxSettings::default();
        BcxConfig {
            instance: ServiceKind::Bcx.as_str().to_owned(),
            max_upload_bytes,
            token_ttl_ms,
            max_in_flight,
        }
    }
}

/// What a Blueprint may set on a `bcx` service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BcxSettings {
    #[serde(default = "default_max_upload_bytes")]
    pub max_upload_bytes: usize,
    #[serde(default = "default_token_ttl_ms")]
    pub token_ttl_ms: u64,
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

impl Default for BcxSettings {
    fn default() -> Self {
        BcxSettings {
            max_upload_bytes: default_max_upload_bytes(),
            token_ttl_ms: default_token_ttl_ms(),
            max_in_flight: default_max_in_flight(),
        }
    }
}

fn default_max_upload_bytes() -> usize {
    16 * 1024 * 1024
}

fn default_token_ttl_ms() -> u64 {
    24 * 60 * 60 * 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_and_reject_unknown_fields() {
        let cmx: CmxSettings = serde_json::from_str(r#"{"maxConfigBytes": 10}"#).unwrap();
        assert_eq!((cmx.max_config_bytes, cmx.config_name), (10, None));
        assert!(serde_json::from_str::<CmxSettings>(r#"{"max": 1}"#).is_err());
        let cex: CexSettings = serde_json::from_str(r#"{"defaultCommandTtlMs": 5}"#).unwrap();
        assert_eq!(cex.default_command_ttl_ms, 5);
        assert_eq!(cex.max_await_ms, 60_000);
        assert!(serde_json::from_str::<CexSettings>(r#"{"ttl": 1}"#).is_err());
        let bcx: BcxSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(bcx, BcxSettings::default());
        assert!(serde_json::from_str::<BcxSettings>(r#"{"maxUpload": 1}"#).is_err());
        assert_eq!(CmxConfig::config_name_of("cmx"), "default");
        assert_eq!(CmxConfig::config_name_of("cmx_ota"), "cmx_ota");
    }
}
