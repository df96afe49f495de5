//! The typed configuration of every service kind: what a running service loads from its config
//! file (rendered from a Blueprint), and the kind-specific `settings` a Blueprint may give it.
//!
//! Unknown fields are rejected everywhere so that a typo is an error, not a silently ignored line.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ServiceKind;

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

    pub fn kind(&self) -> ServiceKind {
        match self {
            ServiceConfig::Kpc(_) => ServiceKind::Kpc,
            ServiceConfig::Epr(_) => ServiceKind::Epr,
            ServiceConfig::Epmx(_) => ServiceKind::Epmx,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EprConfig {
    /// Service instance name: the `{instance}` of the bus subjects and the queue group.
    pub instance: String,
    /// Applications and their versions; endpoints can only be registered against these versions.
    pub applications: Vec<EprApplication>,
}

impl Default for EprConfig {
    /// Instance `epr`, no applications.
    fn default() -> Self {
        EprConfig {
            instance: ServiceKind::Epr.as_str().to_owned(),
            applications: Vec::new(),
        }
    }
}

impl EprConfig {
    /// The application an application version belongs to (the first, if listed under several).
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

    /// Every application that lists `app_version`, in config order (one in a valid config).
    pub fn owners_of<'a>(&'a self, app_version: &str) -> impl Iterator<Item = &'a str> {
        self.applications
            .iter()
            .filter(move |a| a.versions.iter().any(|v| v == app_version))
            .map(|a| a.name.as_str())
    }
}

/// An application and the names of its versions, as EPR knows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EpmxConfig {
    /// Extension instance name (topic level 3, subject `{instance}`, queue group).
    pub instance: String,
    /// The EPR instance that owns metadata (reached over 19/EPMMP).
    pub epr_instance: String,
    /// How long to wait for each 19/EPMMP answer from EPR.
    #[serde(default = "default_epmx_timeout")]
    pub request_timeout_ms: u64,
    /// Device requests handled concurrently by one replica.
    #[serde(default = "default_epmx_max_in_flight")]
    pub max_in_flight: usize,
}

impl Default for EpmxConfig {
    /// Instance `epmx` backed by EPR instance `epr`, default settings.
    fn default() -> Self {
        let EpmxSettings {
            request_timeout_ms,
            max_in_flight,
        } = EpmxSettings::default();
        EpmxConfig {
            instance: ServiceKind::Epmx.as_str().to_owned(),
            epr_instance: ServiceKind::Epr.as_str().to_owned(),
            request_timeout_ms,
            max_in_flight,
        }
    }
}

/// What a Blueprint may set on an `epmx` service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EpmxSettings {
    #[serde(default = "default_epmx_timeout")]
    pub request_timeout_ms: u64,
    #[serde(default = "default_epmx_max_in_flight")]
    pub max_in_flight: usize,
}

impl Default for EpmxSettings {
    fn default() -> Self {
        EpmxSettings {
            request_timeout_ms: default_epmx_timeout(),
            max_in_flight: default_epmx_max_in_flight(),
        }
    }
}

fn default_epmx_timeout() -> u64 {
    5_000
}

fn default_epmx_max_in_flight() -> usize {
    256
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str, versions: &[&str]) -> EprApplication {
        EprApplication {
            name: name.into(),
            versions: versions.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn epr_config_maps_versions_to_applications() {
        let cfg = EprConfig {
            applications: vec![app("meter", &["meter-v1", "meter-v2"]), app("lamp", &["lamp-v1"])],
            ..Default::default()
        };
        assert_eq!(cfg.application_of("meter-v2"), Some("meter"));
        assert_eq!(cfg.application_of("lamp-v1"), Some("lamp"));
        assert_eq!(cfg.application_of("nope"), None);
        assert_eq!(cfg.versions_of("lamp"), Some(&["lamp-v1".to_string()][..]));
        assert_eq!(cfg.versions_of("nope"), None);
        let dup = EprConfig {
            applications: vec![app("a", &["v1"]), app("b", &["v1"])],
            ..Default::default()
        };
        assert_eq!(dup.owners_of("v1").collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn defaults_name_the_kinds() {
        assert_eq!(EprConfig::default().instance, "epr");
        let epmx = EpmxConfig::default();
        assert_eq!(
            (epmx.instance.as_str(), epmx.epr_instance.as_str()),
            ("epmx", "epr")
        );
        assert_eq!((epmx.request_timeout_ms, epmx.max_in_flight), (5_000, 256));
    }

    #[test]
    fn epmx_config_defaults_its_settings_and_rejects_unknown_fields() {
        let cfg: EpmxConfig =
            serde_json::from_str(r#"{"instance":"epmx","eprInstance":"epr","requestTimeoutMs":250}"#)
                .unwrap();
        assert_eq!(cfg.request_timeout_ms, 250);
        assert_eq!(cfg.max_in_flight, 256);
        let settings: EpmxSettings = serde_json::from_str(r#"{"maxInFlight":8}"#).unwrap();
        assert_eq!(settings.max_in_flight, 8);
        assert_eq!(settings.request_timeout_ms, 5_000);
        assert!(serde_json::from_str::<EpmxSettings>(r#"{"max_in_flight":8}"#).is_err());
    }
}
