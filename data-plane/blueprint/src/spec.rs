//! The Blueprint resource as users write it. Field names are camelCase, as in every Kubernetes API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "kaa-rs.dev/v1alpha1";
pub const KIND: &str = "Blueprint";

/// A whole kaa-rs platform: applications and the service instances that serve them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Blueprint {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: BlueprintSpec,
}

/// The subset of Kubernetes object metadata a Blueprint file uses.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlueprintSpec {
    /// Applications; each has versions, and each version is served by extension instances.
    pub applications: Vec<Application>,
    /// Service instances; at least one `kpc`, exactly one `epr` and exactly one `cm`.
    pub services: Vec<ServiceInstance>,
}

/// An IoT application, e.g. `smart_meter`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Application {
    pub name: String,
    pub versions: Vec<AppVersion>,
}

/// One version of an application. Its name is what devices put in the 1/KP topic and is unique
/// across the whole Blueprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppVersion {
    pub name: String,
    /// Names of the extension service instances that serve this version (e.g. `epmx`).
    #[serde(default)]
    pub extensions: Vec<String>,
}

/// One service instance: a kind of service, its instance name, and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceInstance {
    pub kind: ServiceKind,
    /// Instance name, unique in the Blueprint; it names NATS subjects and 1/KP extension levels.
    /// Defaults to the kind's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Replicas in a cluster (ignored by `kaa up`, which runs one of each).
    #[serde(default = "one")]
    pub replicas: u32,
    /// Kind-specific settings; see [`crate::config`] for each kind's fields.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub config: serde_json::Map<String, serde_json::Value>,
}

fn one() -> u32 {
    1
}

impl ServiceInstance {
    /// The instance name: the explicit one, else the kind's name.
    pub fn instance_name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.kind.as_str())
    }
}

/// The service kinds this build knows how to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// The 1/KP gateway.
    Kpc,
    /// The endpoint register.
    Epr,
    /// The 10/EPMP endpoint metadata extension.
    Epmx,
    /// The credential service: endpoint tokens and client credentials (the 16/ECAP provider).
    Cm,
    /// Endpoint lifecycle: 9/ELCE connectivity events -> EPR metadata and a `connectivity` series.
    Epl,
    /// The 2/DCP data collection extension (13/DSTP transmitter).
    Dcx,
    /// Endpoint time series: stores 13/DSTP samples and 14/TSTP points, REST `/epts/api/v1`.
    Epts,
    /// The 7/CMP configuration extension (instances `cmx`, `cmx_ota`, ...).
    Cmx,
    /// The 11/CEP command execution extension.
    Cex,
    /// The binary data upload extension (`/token` over 1/KP, uploads over REST).
    Bcx,
}

impl ServiceKind {
    pub const ALL: [ServiceKind; 10] = [
        ServiceKind::Kpc,
        ServiceKind::Epr,
        ServiceKind::Epmx,
        ServiceKind::Cm,
        ServiceKind::Epl,
        ServiceKind::Dcx,
        ServiceKind::Epts,
        ServiceKind::Cmx,
        ServiceKind::Cex,
        ServiceKind::Bcx,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Kpc => "kpc",
            ServiceKind::Epr => "epr",
            ServiceKind::Epmx => "epmx",
            ServiceKind::Cm => "cm",
            ServiceKind::Epl => "epl",
            ServiceKind::Dcx => "dcx",
            ServiceKind::Epts => "epts",
            ServiceKind::Cmx => "cmx",
            ServiceKind::Cex => "cex",
            ServiceKind::Bcx => "bcx",
        }
    }

    /// Whether devices reach this kind as a 1/KP extension instance.
    pub fn is_extension(self) -> bool {
        matches!(
            self,
            ServiceKind::Epmx | ServiceKind::Dcx | ServiceKind::Cmx | ServiceKind::Cex | ServiceKind::Bcx
        )
    }
}

impl std::fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ServiceKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ServiceKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<_> = ServiceKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown service kind `{s}` (known: {})", known.join(", "))
            })
    }
}
