//! The typed configuration of every service kind: what a running service loads from its config
//! file (rendered from a Blueprint), and the kind-specific `settings` a Blueprint may give it.
//!
//! Unknown fields are rejected everywhere so that a typo is an error, not a silently ignored line.

use serde::{Deserialize, Serialize};

use crate::ServiceKind;

mod control;
pub use control::*;
mod live;
mod version;
pub use live::Live;

/// The rendered configuration of one service instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[expect(
    clippy::large_enum_variant,
    reason = "one value per service instance, loaded once: boxing would buy nothing"
)]
pub enum ServiceConfig {
    Kpc(KpcConfig),
    Epr(EprConfig),
    Epmx(EpmxConfig),
    Cm(CmConfig),
    Epl(EplConfig),
    Dcx(DcxConfig),
    Epts(EptsConfig),
    Cmx(CmxConfig),
    Cex(CexConfig),
    Bcx(BcxConfig),
}

impl ServiceConfig {
    pub fn instance(&self) -> &str {
        match self {
            ServiceConfig::Kpc(c) => &c.instance,
            ServiceConfig::Epr(c) => &c.instance,
            ServiceConfig::Epmx(c) => &c.instance,
            ServiceConfig::Cm(c) => &c.instance,
            ServiceConfig::Epl(c) => &c.instance,
            ServiceConfig::Dcx(c) => &c.instance,
            ServiceConfig::Epts(c) => &c.instance,
            ServiceConfig::Cmx(c) => &c.instance,
            ServiceConfig::Cex(c) => &c.instance,
            ServiceConfig::Bcx(c) => &c.instance,
        }
    }

    pub fn kind(&self) -> ServiceKind {
        match self {
            ServiceConfig::Kpc(_) => ServiceKind::Kpc,
            ServiceConfig::Epr(_) => ServiceKind::Epr,
            ServiceConfig::Epmx(_) => ServiceKind::Epmx,
            ServiceConfig::Cm(_) => ServiceKind::Cm,
            ServiceConfig::Epl(_) => ServiceKind::Epl,
            ServiceConfig::Dcx(_) => ServiceKind::Dcx,
            ServiceConfig::Epts(_) => ServiceKind::Epts,
            ServiceConfig::Cmx(_) => ServiceKind::Cmx,
            ServiceConfig::Cex(_) => ServiceKind::Cex,
            ServiceConfig::Bcx(_) => ServiceKind::Bcx,
        }
    }
}

// KPC, the 1/KP gateway.
mod kpc;
pub use kpc::*;

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
    /// The credential service that stores the `endpointToken` given at registration.
    #[serde(default = "default_cm_instance")]
    pub cm_instance: String,
    /// How long registration waits for the credential service (then answers 503).
    #[serde(default = "default_request_timeout")]
    pub cm_timeout_ms: u64,
}

impl Default for EprConfig {
    /// Instance `epr` with credential service `cm`, no applications.
    fn default() -> Self {
        EprConfig {
            instance: ServiceKind::Epr.as_str().to_owned(),
            applications: Vec::new(),
            cm_instance: default_cm_instance(),
            cm_timeout_ms: default_request_timeout(),
        }
    }
}

fn default_cm_instance() -> String {
    ServiceKind::Cm.as_str().to_owned()
}

fn default_request_timeout() -> u64 {
    5_000
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
    /// Metadata keys other services maintain (EPL's connectivity keys): devices neither see nor
    /// write them, and a full `/update` keeps them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platform_keys: Vec<String>,
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
            platform_keys: Vec::new(),
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

// ---------------------------------------------------------------------------------------------
// CM

/// CM, the credential service: endpoint tokens and client credentials, the 16/ECAP provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CmConfig {
    /// Service instance name: the `{instance}` of the bus subjects, the queue group and the
    /// originator of revocation events.
    pub instance: String,
    /// The endpoint register: asked (19/EPMMP) which application an endpoint belongs to when a
    /// token is issued over REST; its `unregistered` events delete the endpoint's tokens.
    pub epr_instance: String,
    /// Applications and their versions (as EPR has them): maps an endpoint's version to the
    /// application that 16/ECAP requests name.
    pub applications: Vec<EprApplication>,
    /// How long to wait for EPR.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    #[serde(default)]
    pub password_hash: PasswordHashSettings,
    /// Where tokens and credentials live (`sql`: the service's database; `kubernetes`: Secrets).
    #[serde(default)]
    pub storage: CmStorage,
}

impl Default for CmConfig {
    /// Instance `cm` backed by EPR instance `epr`, no applications, default settings.
    fn default() -> Self {
        let CmSettings {
            request_timeout_ms,
            password_hash,
            storage,
        } = CmSettings::default();
        CmConfig {
            instance: ServiceKind::Cm.as_str().to_owned(),
            epr_instance: ServiceKind::Epr.as_str().to_owned(),
            applications: Vec::new(),
            request_timeout_ms,
            password_hash,
            storage,
        }
    }
}

impl CmConfig {
    /// The application an application version belongs to.
    pub fn application_of(&self, app_version: &str) -> Option<&str> {
        self.applications
            .iter()
            .find(|a| a.versions.iter().any(|v| v == app_version))
            .map(|a| a.name.as_str())
    }
}

/// What a Blueprint may set on a `cm` service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CmSettings {
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    #[serde(default)]
    pub password_hash: PasswordHashSettings,
    #[serde(default)]
    pub storage: CmStorage,
}

impl Default for CmSettings {
    fn default() -> Self {
        CmSettings {
            request_timeout_ms: default_request_timeout(),
            password_hash: PasswordHashSettings::default(),
            storage: CmStorage::default(),
        }
    }
}

/// Where CM keeps endpoint tokens and client credentials.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CmStorage {
    /// The service's SQL database (`kaa up`'s data dir, `kaa run --database`).
    #[default]
    Sql,
    /// Kubernetes Secrets in the pod's namespace, read through a watch (cluster mode).
    Kubernetes,
}

/// Cost of the argon2id hash of client passwords. The defaults are OWASP's minimum for argon2id
/// (19 MiB, 2 passes, 1 lane); tests lower them, production may raise them. Changing them affects
/// new passwords only: each stored hash records its own parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PasswordHashSettings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for PasswordHashSettings {
    fn default() -> Self {
        PasswordHashSettings {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

// EPL, DCX, EPTS: endpoint connectivity and telemetry.
mod telemetry;
pub use telemetry::*;

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
        let cm = CmConfig::default();
        assert_eq!((cm.instance.as_str(), cm.epr_instance.as_str()), ("cm", "epr"));
        assert_eq!(EprConfig::default().cm_instance, "cm");
    }

    #[test]
    fn cm_config_defaults_its_settings_and_rejects_unknown_fields() {
        let cfg: CmConfig = serde_json::from_str(
            r#"{"instance":"cm","eprInstance":"epr","applications":[{"name":"a","versions":["a1"]}],
                "passwordHash":{"memoryKib":64,"iterations":1}}"#,
        )
        .unwrap();
        assert_eq!(cfg.request_timeout_ms, 5_000);
        assert_eq!(
            cfg.password_hash,
            PasswordHashSettings {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1
            }
        );
        assert_eq!(cfg.application_of("a1"), Some("a"));
        assert_eq!(cfg.application_of("b1"), None);
        assert!(serde_json::from_str::<CmSettings>(r#"{"passwordHash":{"memory":1}}"#).is_err());
        assert!(serde_json::from_str::<CmSettings>(r#"{"timeout":1}"#).is_err());
        assert_eq!(cfg.storage, CmStorage::Sql, "SQL unless asked");
        let k8s: CmSettings = serde_json::from_str(r#"{"storage":"kubernetes"}"#).unwrap();
        assert_eq!(k8s.storage, CmStorage::Kubernetes);
        assert!(serde_json::from_str::<CmSettings>(r#"{"storage":"etcd"}"#).is_err());
        let epr: EprConfig = serde_json::from_str(r#"{"instance":"epr","applications":[]}"#).unwrap();
        assert_eq!(epr, EprConfig::default());
    }

    #[test]
    fn kpc_listeners_default_their_addresses_and_reject_unknown_fields() {
        let s: KpcSettings = serde_json::from_str(
            r#"{"ws":{},"wss":{"certFile":"c.pem","keyFile":"k.pem"},
                "https":{"certFile":"c.pem","keyFile":"k.pem","clientCerts":"optional","clientCaFile":"ca.pem"},
                "mqtts":{"certFile":"c.pem","keyFile":"k.pem"}}"#,
        )
        .unwrap();
        let ws = s.ws.unwrap();
        assert_eq!((ws.listen.as_str(), ws.path.as_str()), ("0.0.0.0:8080", "/mqtt"));
        assert_eq!(ws.auth, ClientAuthMode::Password);
        let wss = s.wss.unwrap();
        assert_eq!(
            (wss.listen.as_str(), wss.path.as_str()),
            ("0.0.0.0:8443", "/mqtt")
        );
        assert_eq!(
            (wss.tls.cert_file.as_str(), wss.tls.client_certs),
            ("c.pem", ClientCertMode::None)
        );
        let https = s.https.unwrap();
        assert_eq!(https.listen, "0.0.0.0:8444");
        assert_eq!(https.tls.client_ca_file.as_deref(), Some("ca.pem"));
        assert_eq!(https.tls.client_certs, ClientCertMode::Optional);
        assert_eq!(s.mqtts.unwrap().listen, "0.0.0.0:8883");
        let none: KpcSettings = serde_json::from_str("{}").unwrap();
        assert_eq!((none.ws, none.wss, none.https), (None, None, None));

        for bad in [
            r#"{"ws":{"port":8080}}"#,
            r#"{"wss":{"certFile":"c","keyFile":"k","certfile":"c"}}"#,
            r#"{"https":{"certFile":"c","keyFile":"k","path":"/kp1"}}"#,
            r#"{"mqtts":{"certFile":"c","keyFile":"k","clientCert":"none"}}"#,
            r#"{"wss":{"keyFile":"k"}}"#,
            r#"{"websocket":{}}"#,
        ] {
            assert!(serde_json::from_str::<KpcSettings>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tls_listeners_survive_a_round_trip() {
        let s: KpcSettings = serde_json::from_str(
            r#"{"wss":{"listen":"127.0.0.1:1","path":"/ws","certFile":"c","keyFile":"k","auth":"certificate"}}"#,
        )
        .unwrap();
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["wss"]["certFile"], "c", "flattened: {json}");
        assert_eq!(serde_json::from_value::<KpcSettings>(json).unwrap(), s);
    }

    #[test]
    fn websocket_paths_must_be_plain_absolute_paths() {
        assert!(check_ws_path("/mqtt").is_ok());
        assert!(check_ws_path("/").is_ok());
        for bad in ["mqtt", "", "/mqtt?x=1", "/a b", "/a#b"] {
            assert!(check_ws_path(bad).is_err(), "{bad}");
        }
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
