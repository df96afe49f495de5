//! The typed configuration of every service kind: what a running service loads from its config
//! file (rendered from a Blueprint), and the kind-specific `settings` a Blueprint may give it.
//!
//! Unknown fields are rejected everywhere so that a typo is an error, not a silently ignored line.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The rendered configuration of one service instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ServiceConfig {
    Kpc(KpcConfig),
    Epr(EprConfig),
    Epmx(EpmxConfig),
}

impl ServiceConfig {
    pub fn instance(&self) -> &str {
        match self {
            ServiceConfig::Kpc(c) => &c.instance,
            ServiceConfig::Epr(c) => &c.instance,
            ServiceConfig::Epmx(c) => &c.instance,
        }
    }

    pub fn kind(&self) -> crate::ServiceKind {
        match self {
            ServiceConfig::Kpc(_) => crate::ServiceKind::Kpc,
            ServiceConfig::Epr(_) => crate::ServiceKind::Epr,
            ServiceConfig::Epmx(_) => crate::ServiceKind::Epmx,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// KPC

/// KPC, the 1/KP gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KpcConfig {
    /// Instance name: originator of 9/ELCE events.
    pub instance: String,
    /// Service instance that answers 16/ECAP endpoint token validation.
    pub token_provider: String,
    /// Every application version devices may use, with its application and extension instances.
    pub app_versions: BTreeMap<String, AppVersionRoute>,
    #[serde(default)]
    pub mqtt: MqttSettings,
    #[serde(default)]
    pub limits: KpcLimits,
}

/// Where a 1/KP application version goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppVersionRoute {
    pub application: String,
    /// Extension instances serving this version; all are endpoint-aware (token after the extension).
    pub extensions: Vec<String>,
}

/// What a Blueprint may set on a `kpc` service (`spec.services[].config`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KpcSettings {
    #[serde(default)]
    pub mqtt: MqttSettings,
    #[serde(default)]
    pub limits: KpcLimits,
}

/// Plain MQTT (3.1.1 and 5) over TCP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MqttSettings {
    /// Listen address, `host:port`.
    #[serde(default = "default_mqtt_listen")]
    pub listen: String,
}

impl Default for MqttSettings {
    fn default() -> Self {
        MqttSettings {
            listen: default_mqtt_listen(),
        }
    }
}

fn default_mqtt_listen() -> String {
    "0.0.0.0:1883".into()
}

/// Limits that protect the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KpcLimits {
    /// Largest 1/KP payload forwarded to an extension; larger ones get `/error` 413.
    pub max_payload_bytes: usize,
    /// Largest MQTT packet read at all; a larger one closes the connection (MQTT 5: DISCONNECT 0x95).
    pub max_packet_bytes: usize,
    /// Time a client has to send CONNECT after the TCP connection opens.
    pub connect_timeout_ms: u64,
    /// Time an extension has to answer a request before the device gets `/error` 504.
    pub request_timeout_ms: u64,
    /// Time the token provider has to validate an endpoint token before the device gets `/error` 503.
    pub token_timeout_ms: u64,
}

impl Default for KpcLimits {
    fn default() -> Self {
        KpcLimits {
            max_payload_bytes: 256 * 1024,
            max_packet_bytes: 2 * 1024 * 1024,
            connect_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            token_timeout_ms: 5_000,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// EPR

/// EPR, the endpoint register.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EprConfig {
    pub instance: String,
    pub applications: Vec<EprApplication>,
}

/// An application and the names of its versions, as EPR knows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EprApplication {
    pub name: String,
    pub versions: Vec<String>,
}

/// What a Blueprint may set on an `epr` service: nothing yet.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EprSettings {}

// ---------------------------------------------------------------------------------------------
// EPMX

/// EPMX, the 10/EPMP endpoint metadata extension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EpmxConfig {
    pub instance: String,
    /// The EPR instance that owns metadata (reached over 19/EPMMP).
    pub epr_instance: String,
    #[serde(default = "default_epmx_timeout")]
    pub request_timeout_ms: u64,
}

/// What a Blueprint may set on an `epmx` service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EpmxSettings {
    #[serde(default = "default_epmx_timeout")]
    pub request_timeout_ms: u64,
}

impl Default for EpmxSettings {
    fn default() -> Self {
        EpmxSettings {
            request_timeout_ms: default_epmx_timeout(),
        }
    }
}

fn default_epmx_timeout() -> u64 {
    5_000
}
