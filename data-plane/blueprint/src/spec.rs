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

/// What the platform consists of: the `spec` of a Blueprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BlueprintSpec {
    /// Applications; each has versions, and each version is served by extension instances.
    #[cfg_attr(feature = "schema", schemars(length(max = 16)))]
    pub applications: Vec<Application>,
    /// Service instances; at least one `kpc`, exactly one `epr` and exactly one `cm`.
    #[cfg_attr(feature = "schema", schemars(length(max = 32)))]
    pub services: Vec<ServiceInstance>,
    /// How the services reach NATS and their database in a cluster (ignored by `kaa up`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Cluster>,
    /// Client credentials and endpoint tokens the operator provisions for the `cm` instance
    /// (cluster only, with `storage: kubernetes`; ignored by `kaa up`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
}

/// Credentials declared in the Blueprint: the operator writes each into a Secret in the layout
/// the `cm` instance watches, once; afterwards the credential service owns it (status changes
/// such as a revocation are kept). Values come from Secrets the user creates; the Blueprint only
/// names them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Credentials {
    /// MQTT client credentials: a username and a password from a Secret, or a certificate's issuer
    /// and serial number.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 256)))]
    pub clients: Vec<ClientCredentialSpec>,
    /// Endpoint tokens issued before the device first connects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 1024)))]
    pub endpoint_tokens: Vec<EndpointTokenSpec>,
}

/// One client credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.username) == has(self.passwordSecret) && has(self.username) != has(self.certificate)",
    "message": "give either username and passwordSecret, or certificate",
}])))]
pub struct ClientCredentialSpec {
    /// Credential id, unique in the Blueprint; names the Secret `kaa-ccm-<cm>-<id>` (lowercase
    /// letters, digits and `-`).
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 40)))]
    pub id: String,
    /// The MQTT client id the credential is for.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 1024)))]
    pub client_id: String,
    /// MQTT username (with `passwordSecret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 1024)))]
    pub username: Option<String>,
    /// The Secret key holding the password (with `username`); the operator stores only its
    /// argon2id hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretKeyRef>,
    /// A client certificate, by issuer and serial number (instead of username and password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateId>,
}

/// A key of a Secret in the Blueprint's namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SecretKeyRef {
    /// Secret name.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 253)))]
    pub name: String,
    /// Key in the Secret's data.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 253)))]
    pub key: String,
}

/// A client certificate as the credential service identifies it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CertificateId {
    /// Issuer distinguished name (RFC 4514), e.g. `CN=Devices CA,O=Example`.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 1024)))]
    pub issuer: String,
    /// Serial number, base 10.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[0-9]{1,64}$")))]
    pub serial_number: String,
}

/// An endpoint token issued ahead of time (e.g. flashed into devices at the factory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EndpointTokenSpec {
    /// Token id, unique in the Blueprint (lowercase letters, digits and `-`).
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 63)))]
    pub id: String,
    /// The endpoint the token belongs to: a lowercase UUID.
    #[cfg_attr(
        feature = "schema",
        schemars(regex(pattern = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"))
    )]
    pub endpoint_id: String,
    /// The application version the endpoint runs (one of `spec.applications[].versions[].name`).
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 63)))]
    pub app_version: String,
    /// The Secret key holding the token value; the operator stores only its SHA-256.
    pub token_secret: SecretKeyRef,
}

/// Cluster wiring of a Blueprint: what the operator gives every pod.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Cluster {
    /// NATS URL every service connects to (default `nats://nats:4222`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_url: Option<String>,
    /// The data-plane image (default: the operator's `--image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A Secret holding the PostgreSQL URL of the stateful services (key `url`). Without it each
    /// stateful pod keeps an SQLite file on an emptyDir: for trying things out only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_secret: Option<String>,
}

/// An IoT application, e.g. `smart_meter`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Application {
    /// Application name, unique in the Blueprint (letters, digits, `_`, `-`).
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 63)))]
    pub name: String,
    /// Its versions; at least one.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 16)))]
    pub versions: Vec<AppVersion>,
}

/// One version of an application. Its name is what devices put in the 1/KP topic and is unique
/// across the whole Blueprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AppVersion {
    /// Version name as devices write it in 1/KP topics, e.g. `smart_meter_v1`.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 63)))]
    pub name: String,
    /// Names of the extension service instances that serve this version (e.g. `epmx`).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(max = 16), inner(length(max = 63))))]
    pub extensions: Vec<String>,
}

/// One service instance: a kind of service, its instance name, and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.expose) || self.kind == 'kpc'", "message": "only a kpc has expose"},
    {"rule": "!has(self.tlsSecret) || self.kind == 'kpc'", "message": "only a kpc has tlsSecret"},
])))]
pub struct ServiceInstance {
    /// The kind of service.
    pub kind: ServiceKind,
    /// Instance name, unique in the Blueprint; it names NATS subjects and 1/KP extension levels.
    /// Defaults to the kind's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 63)))]
    pub name: Option<String>,
    /// Replicas in a cluster (ignored by `kaa up`, which runs one of each).
    #[serde(default = "one")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 1000)))]
    pub replicas: u32,
    /// Scale between bounds on CPU load instead of a fixed `replicas` (cluster only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// CPU and memory of each replica (cluster only); Kubernetes quantities, e.g. `100m`, `128Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Kind-specific settings (the README lists each kind's fields; [`crate::config`] has their types).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[cfg_attr(feature = "schema", schemars(schema_with = "free_form"))]
    pub config: serde_json::Map<String, serde_json::Value>,
    /// How devices reach this `kpc` (cluster only): the Service's type, ports and annotations.
    /// Default: a ClusterIP Service with each listener's own port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose: Option<Exposure>,
    /// A `kubernetes.io/tls` Secret with this `kpc`'s server certificate (`tls.crt`, `tls.key`,
    /// and `ca.crt` when a listener checks client certificates), used by its mqtts, wss and https
    /// listeners in a cluster (`kaa up` reads the config's file paths instead). A certificate
    /// renewed in the same Secret is picked up without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 253)))]
    pub tls_secret: Option<String>,
}

/// The Service in front of a `kpc`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.nodePorts) || (has(self.type) && self.type != 'ClusterIP')",
    "message": "nodePorts need type NodePort or LoadBalancer",
}])))]
pub struct Exposure {
    /// `ClusterIP` (default: reachable inside the cluster only), `NodePort` or `LoadBalancer`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<ServiceType>,
    /// The Service's port for each listener (default: the listener's own port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<ListenerPorts>,
    /// A fixed node port for each listener (NodePort and LoadBalancer; default: Kubernetes
    /// picks one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_ports: Option<NodePorts>,
    /// Annotations of the Service, e.g. a cloud load balancer's settings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The host name devices use (e.g. a DNS name of the load balancer); the status shows it in
    /// device addresses instead of what the Service reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 253)))]
    pub host: Option<String>,
}

/// Kubernetes Service types a `kpc` can be exposed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ServiceType {
    /// Inside the cluster only.
    ClusterIP,
    /// On a port of every node.
    NodePort,
    /// Through the cloud's load balancer (and node ports).
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// A port per `kpc` listener.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ListenerPorts {
    /// MQTT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 65535)))]
    pub mqtt: Option<u16>,
    /// MQTT over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 65535)))]
    pub mqtts: Option<u16>,
    /// MQTT over WebSocket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 65535)))]
    pub ws: Option<u16>,
    /// MQTT over secure WebSocket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 65535)))]
    pub wss: Option<u16>,
    /// 1/KP over HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 65535)))]
    pub https: Option<u16>,
}

/// A node port per `kpc` listener, in Kubernetes' default node port range.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct NodePorts {
    /// MQTT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 30000, max = 32767)))]
    pub mqtt: Option<u16>,
    /// MQTT over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 30000, max = 32767)))]
    pub mqtts: Option<u16>,
    /// MQTT over WebSocket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 30000, max = 32767)))]
    pub ws: Option<u16>,
    /// MQTT over secure WebSocket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 30000, max = 32767)))]
    pub wss: Option<u16>,
    /// 1/KP over HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 30000, max = 32767)))]
    pub https: Option<u16>,
}

impl ListenerPorts {
    /// The port given for listener `name` (`mqtt`, `mqtts`, `ws`, `wss`, `https`).
    pub fn get(&self, name: &str) -> Option<u16> {
        match name {
            "mqtt" => self.mqtt,
            "mqtts" => self.mqtts,
            "ws" => self.ws,
            "wss" => self.wss,
            "https" => self.https,
            _ => None,
        }
    }
}

impl NodePorts {
    /// The node port given for listener `name`.
    pub fn get(&self, name: &str) -> Option<u16> {
        ListenerPorts {
            mqtt: self.mqtt,
            mqtts: self.mqtts,
            ws: self.ws,
            wss: self.wss,
            https: self.https,
        }
        .get(name)
    }
}

/// Kind-specific settings are checked by the renderer, which names the field at fault; the
/// schema only says "an object".
#[cfg(feature = "schema")]
fn free_form(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "Kind-specific settings (see the README for each kind's fields).",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Horizontal autoscaling of one service instance on CPU utilisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Autoscaling {
    /// The fewest replicas.
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 1000)))]
    pub min_replicas: u32,
    /// The most replicas; at least `minReplicas`.
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 1000)))]
    pub max_replicas: u32,
    /// Average CPU utilisation (percent of the request) to keep replicas at (default 70).
    #[serde(default = "seventy")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 100)))]
    pub target_cpu_percent: u32,
}

fn seventy() -> u32 {
    70
}

/// Requests and limits of one replica.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Resources {
    /// What the scheduler reserves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<Quantities>,
    /// The most a replica may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Quantities>,
}

/// CPU and memory quantities.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Quantities {
    /// CPU, e.g. `100m` or `1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Memory, e.g. `128Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
    /// The web dashboard in a cluster, in front of the other instances' REST APIs (`kaa up`
    /// serves the dashboard itself).
    Web,
}

impl ServiceKind {
    pub const ALL: [ServiceKind; 11] = [
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
        ServiceKind::Web,
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
            ServiceKind::Web => "web",
        }
    }

    /// Whether instances of this kind serve a REST API (and so need the admin token).
    /// Deny-by-default: a new kind needs the token until it is listed here as having no API.
    pub fn serves_rest(self) -> bool {
        !matches!(
            self,
            ServiceKind::Kpc | ServiceKind::Epmx | ServiceKind::Epl | ServiceKind::Dcx
        )
    }

    /// Whether instances of this kind keep state in a database. Deny-by-default, like
    /// [`Self::serves_rest`].
    pub fn keeps_state(self) -> bool {
        !matches!(
            self,
            ServiceKind::Kpc | ServiceKind::Epmx | ServiceKind::Epl | ServiceKind::Dcx | ServiceKind::Web
        )
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
