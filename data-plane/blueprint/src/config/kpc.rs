//! KPC's config: the 1/KP gateway's listeners (MQTT, MQTTS, WebSocket, HTTPS), client
//! authentication and limits. Re-exported by [`crate::config`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// KPC, the 1/KP gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KpcConfig {
    /// Instance name: originator of 9/ELCE events.
    pub instance: String,
    /// The credential service (16/ECAP provider): validates endpoint tokens and, at CONNECT,
    /// client credentials; KPC follows its token and credential revocation events.
    pub token_provider: String,
    /// Every application version devices may use, with its application and extension instances.
    pub app_versions: BTreeMap<String, AppVersionRoute>,
    #[serde(default)]
    pub mqtt: MqttSettings,
    /// MQTT over TLS; absent: no TLS listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtts: Option<MqttsSettings>,
    /// MQTT over WebSocket; absent: no WebSocket listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws: Option<WsSettings>,
    /// MQTT over WebSocket over TLS; absent: no such listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wss: Option<WssSettings>,
    /// 1/KP over HTTPS; absent: no HTTPS listener (1/KP over plain HTTP is always served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https: Option<HttpsSettings>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtts: Option<MqttsSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws: Option<WsSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wss: Option<WssSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https: Option<HttpsSettings>,
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
    /// How clients authenticate at CONNECT (default `password`).
    #[serde(default)]
    pub auth: ClientAuthMode,
}

impl Default for MqttSettings {
    fn default() -> Self {
        MqttSettings {
            listen: default_mqtt_listen(),
            auth: ClientAuthMode::default(),
        }
    }
}

fn default_mqtt_listen() -> String {
    "0.0.0.0:1883".into()
}

/// The server side of a TLS listener (MQTT over TLS, WebSocket over TLS, HTTPS): certificate,
/// key and client certificates. The files are PEM and re-read when they change.
///
/// Flattened into each listener's settings, so a Blueprint writes `certFile` next to `listen`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsSettings {
    /// The server certificate chain (PEM, leaf first).
    pub cert_file: String,
    /// The server private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// CA bundle (PEM) that client certificates must chain to; needed unless `clientCerts: none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<String>,
    /// Whether clients present a certificate (default `none`).
    #[serde(default)]
    pub client_certs: ClientCertMode,
}

/// MQTT (3.1.1 and 5) over TLS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MqttsSettings {
    /// Listen address, `host:port`.
    #[serde(default = "default_mqtts_listen")]
    pub listen: String,
    #[serde(flatten)]
    pub tls: TlsSettings,
    /// How clients authenticate at CONNECT (default `password`).
    #[serde(default)]
    pub auth: ClientAuthMode,
}

fn default_mqtts_listen() -> String {
    "0.0.0.0:8883".into()
}

/// MQTT (3.1.1 and 5) over WebSocket (subprotocol `mqtt`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WsSettings {
    /// Listen address, `host:port`.
    #[serde(default = "default_ws_listen")]
    pub listen: String,
    /// The HTTP path of the WebSocket upgrade; other paths get 404.
    #[serde(default = "default_ws_path")]
    pub path: String,
    /// How clients authenticate at CONNECT (default `password`).
    #[serde(default)]
    pub auth: ClientAuthMode,
}

fn default_ws_listen() -> String {
    "0.0.0.0:8080".into()
}

fn default_ws_path() -> String {
    "/mqtt".into()
}

/// MQTT (3.1.1 and 5) over WebSocket over TLS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WssSettings {
    /// Listen address, `host:port`.
    #[serde(default = "default_wss_listen")]
    pub listen: String,
    /// The HTTP path of the WebSocket upgrade; other paths get 404.
    #[serde(default = "default_ws_path")]
    pub path: String,
    #[serde(flatten)]
    pub tls: TlsSettings,
    /// How clients authenticate at CONNECT (default `password`).
    #[serde(default)]
    pub auth: ClientAuthMode,
}

fn default_wss_listen() -> String {
    "0.0.0.0:8443".into()
}

/// 1/KP over HTTPS (`POST /kp1/...`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpsSettings {
    /// Listen address, `host:port`.
    #[serde(default = "default_https_listen")]
    pub listen: String,
    #[serde(flatten)]
    pub tls: TlsSettings,
    /// How requests authenticate: HTTP Basic for passwords, the TLS client certificate
    /// (default `password`).
    #[serde(default)]
    pub auth: ClientAuthMode,
}

fn default_https_listen() -> String {
    "0.0.0.0:8444".into()
}

/// Why a WebSocket path is unusable, if it is: it is compared with the request's path as is.
pub fn check_ws_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("`{path}` must start with `/`"));
    }
    if path.contains(['?', '#']) || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{path}` must be a plain URL path (no query, fragment, spaces or control characters)"
        ));
    }
    Ok(())
}

/// How a listener authenticates MQTT clients at CONNECT (asked of the credential provider over
/// 16/ECAP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuthMode {
    /// Anyone may connect: local development only (KPC warns loudly at start).
    None,
    /// MQTT username and password.
    #[default]
    Password,
    /// A verified TLS client certificate (issuer + serial number), TLS listener only.
    Certificate,
    /// The certificate when one was presented, else username and password.
    PasswordOrCertificate,
}

/// Whether the TLS listener asks clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertMode {
    /// Never asked for.
    #[default]
    None,
    /// Verified against `clientCaFile` when presented; clients without one may still connect.
    Optional,
    /// A client without a valid certificate fails the TLS handshake.
    Required,
}

/// Limits that protect the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KpcLimits {
    /// Largest 1/KP payload forwarded to an extension; larger ones get `/error` 413.
    pub max_payload_bytes: usize,
    /// Largest MQTT packet read at all; a larger one closes the connection (MQTT 5: DISCONNECT 0x95).
    pub max_packet_bytes: usize,
    /// MQTT sessions one replica serves at once, over all its listeners (TCP, TLS, WebSocket);
    /// one more is refused at CONNECT (MQTT 5: 0x97 quota exceeded; MQTT 3.1.1: 3 server
    /// unavailable). Keep it well under the process's open-file limit.
    pub max_connections: usize,
    /// Requests of one connection waiting for their extension's answer; one more gets `/error`
    /// 429 and is not forwarded.
    pub max_in_flight_per_connection: usize,
    /// Sustained 1/KP requests per connection and second (a token bucket of `publishBurst`);
    /// beyond it requests get `/error` 429, while MQTT acknowledgements still flow. 0: no limit.
    pub max_publishes_per_second: u32,
    /// Requests a connection may send at once above the sustained rate (the bucket's size).
    pub publish_burst: u32,
    /// Distinct endpoint tokens one connection may act for (a gateway device acts for many); a
    /// further token gets `/error` 429 while the connection keeps serving the ones it has.
    pub max_tokens_per_connection: usize,
    /// Longest keepalive a client may choose, in seconds; a client asking for none (0) or more
    /// gets this one (MQTT 5 clients are told in CONNACK), and is closed after 1.5 times it idle.
    pub max_keepalive_secs: u16,
    /// 1/KP over HTTP requests one replica serves at once; one more gets HTTP 429.
    pub max_http_requests_in_flight: usize,
    /// Time a client has to send CONNECT after the TCP connection opens.
    pub connect_timeout_ms: u64,
    /// Time an extension has to answer a request before the device gets `/error` 504.
    pub request_timeout_ms: u64,
    /// Time the token provider has to validate an endpoint token before the device gets `/error` 503.
    pub token_timeout_ms: u64,
    /// Time the credential provider has to validate a client at CONNECT before the client is
    /// refused with "server unavailable".
    pub auth_timeout_ms: u64,
    /// Failed CONNECTs allowed per source address (IPv6: per /64) and minute, as a token bucket;
    /// beyond it CONNECTs are refused without asking the credential provider. 0: no limit.
    pub failed_connects_per_minute: u32,
    /// How long a validated endpoint token is reused across sessions before it is validated
    /// again (revocation events drop it at once).
    pub token_cache_ttl_ms: u64,
    /// On shutdown, how long requests in flight may take to be answered before the remaining
    /// connections are closed anyway (keep it below the pod's termination grace period).
    pub drain_timeout_ms: u64,
}

impl Default for KpcLimits {
    fn default() -> Self {
        KpcLimits {
            max_payload_bytes: 256 * 1024,
            max_packet_bytes: 2 * 1024 * 1024,
            // Half the 20,000 files a process may open: TLS, the bus, HTTP and files need the rest.
            max_connections: 10_000,
            // Above rumqttc's default of 100 unacknowledged publishes: a client pipelining up to
            // its own flow-control window is not refused.
            max_in_flight_per_connection: 128,
            max_publishes_per_second: 100,
            publish_burst: 200,
            max_tokens_per_connection: 1_000,
            // An hour: MQTT 3.1.1 clients cannot be told a shorter one, and one pinging less often
            // than the cap would be dropped and reconnect forever. A dead socket costs one
            // connection slot for at most 1.5 h.
            max_keepalive_secs: 3_600,
            max_http_requests_in_flight: 1_000,
            connect_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            token_timeout_ms: 5_000,
            auth_timeout_ms: 3_000,
            failed_connects_per_minute: 30,
            token_cache_ttl_ms: 60_000,
            drain_timeout_ms: 10_000,
        }
    }
}

impl KpcLimits {
    /// The limits that cannot work, as (Blueprint key, why): a limit of 0 would refuse every
    /// client or request, so only the publish rate may be 0 (off).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        let positive = [
            ("maxConnections", self.max_connections),
            ("maxInFlightPerConnection", self.max_in_flight_per_connection),
            ("maxTokensPerConnection", self.max_tokens_per_connection),
            ("maxKeepaliveSecs", usize::from(self.max_keepalive_secs)),
            ("maxHttpRequestsInFlight", self.max_http_requests_in_flight),
        ];
        for (key, value) in positive {
            if value == 0 {
                problems.push((key, "must be at least 1".to_owned()));
            }
        }
        if self.max_publishes_per_second > 0 && self.publish_burst == 0 {
            problems.push((
                "publishBurst",
                "must be at least 1 while maxPublishesPerSecond is on (0 refuses every request)".to_owned(),
            ));
        }
        problems
    }
}
