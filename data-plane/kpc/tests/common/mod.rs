//! Fixtures shared by the KPC authentication, TLS and revocation tests: a scripted credential
//! service (16/ECAP) and echo extension on the in-process bus, an MQTT over TLS client
//! (tokio-rustls + rmqtt-codec) and a throwaway PKI (rcgen). Plain MQTT clients, with or without
//! credentials, are kaa-testkit's `Device`.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use kaa_blueprint::config::{
    AppVersionRoute, ClientAuthMode, ClientCertMode, KpcConfig, KpcLimits, MqttSettings, MqttsSettings,
    TlsSettings,
};
use kaa_bus::Bus;
use kaa_protocol::avro::AvroRecord;
use kaa_protocol::ecap::{
    ClientCertificateValidationRequest, ClientCertificateValidationResponse, ClientCredentialRevokedEvent,
    ClientUsernamePasswordValidationRequest, ClientUsernamePasswordValidationResponse,
    EndpointTokenRevokedEvent, EndpointTokenValidationRequest, EndpointTokenValidationResponse,
};
use kaa_protocol::esp::{ClientData, ExtensionData};
use kaa_protocol::subject;
use kaa_testkit::DEADLINE;
use rmqtt_codec::types::{Protocol, Publish, QoS};
use rmqtt_codec::v3;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Framed;

pub const PROVIDER: &str = "cm";

/// KPC serving `av1` (application `app`, extension `ext`) on a loopback port, asking `cm`.
pub fn config(auth: ClientAuthMode) -> KpcConfig {
    KpcConfig {
        instance: "kpc".into(),
        token_provider: PROVIDER.into(),
        app_versions: BTreeMap::from([(
            "av1".to_owned(),
            AppVersionRoute {
                application: "app".into(),
                extensions: vec!["ext".into()],
            },
        )]),
        mqtt: MqttSettings {
            listen: "127.0.0.1:0".into(),
            auth,
        },
        mqtts: None,
        ws: None,
        wss: None,
        https: None,
        limits: KpcLimits {
            auth_timeout_ms: 500,
            ..KpcLimits::default()
        },
    }
}

/// The value of one sample line `series value` in a scrape (0 when absent).
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------------
// The credential service

/// A scripted 16/ECAP provider: users, certificates and tokens are set by the test.
#[derive(Clone, Debug)]
pub struct FakeCm {
    bus: Bus,
    state: Arc<Mutex<CmState>>,
}

#[derive(Debug, Default)]
struct CmState {
    /// username -> (password, credential id)
    users: HashMap<String, (String, String)>,
    /// (issuer, serial) -> credential id
    certs: HashMap<(String, String), String>,
    /// token value -> token
    tokens: HashMap<String, Token>,
    /// Receives requests but never answers.
    silent: bool,
    credential_requests: usize,
    token_requests: usize,
}

#[derive(Debug, Clone)]
struct Token {
    endpoint_id: String,
    token_id: String,
    status: Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Active,
    Suspended,
    Revoked,
}

impl FakeCm {
    pub async fn start(bus: &Bus) -> FakeCm {
        let cm = FakeCm {
            bus: bus.clone(),
            state: Arc::default(),
        };
        cm.serve("ep-token-request", |s, payload| {
            let r = EndpointTokenValidationRequest::from_avro(&payload).unwrap();
            s.token_requests += 1;
            assert_eq!(r.app_name, "app");
            let (status_code, reason, token) = match s.tokens.get(&r.token) {
                None => (404, "unknown token", None),
                Some(t) if t.status == Status::Suspended => (403, "token suspended", None),
                Some(t) if t.status == Status::Revoked => (403, "token revoked", None),
                Some(t) => (200, "OK", Some(t.clone())),
            };
            EndpointTokenValidationResponse {
                correlation_id: r.correlation_id,
                token_id: token.as_ref().map(|t| t.token_id.clone()),
                endpoint_id: token.map(|t| t.endpoint_id),
                status_code,
                reason_phrase: Some(reason.into()),
                ..Default::default()
            }
            .to_avro()
        })
        .await;
        cm.serve("client-username-password-request", |s, payload| {
            let r = ClientUsernamePasswordValidationRequest::from_avro(&payload).unwrap();
            s.credential_requests += 1;
            let found = r.username.as_ref().and_then(|u| s.users.get(u));
            let credential = match found {
                Some((password, id)) if r.password.as_ref() == Some(password) => Some(id.clone()),
                _ => None,
            };
            ClientUsernamePasswordValidationResponse {
                correlation_id: r.correlation_id,
                status_code: if credential.is_some() { 200 } else { 401 },
                client_id: credential.as_ref().map(|c| format!("client-of-{c}")),
                credential_id: credential,
                ..Default::default()
            }
            .to_avro()
        })
        .await;
        cm.serve("client-certificate-request", |s, payload| {
            let r = ClientCertificateValidationRequest::from_avro(&payload).unwrap();
            s.credential_requests += 1;
            let credential = s.certs.get(&(r.issuer, r.serial_number)).cloned();
            ClientCertificateValidationResponse {
                correlation_id: r.correlation_id,
                status_code: if credential.is_some() { 200 } else { 404 },
                client_id: None,
                credential_id: credential,
                ..Default::default()
            }
            .to_avro()
        })
        .await;
        cm
    }

    async fn serve(&self, message_type: &str, answer: fn(&mut CmState, Bytes) -> Vec<u8>) {
        let mut requests = self
            .bus
            .subscribe(&subject::ecap_request(PROVIDER, message_type), Some(PROVIDER))
            .await
            .unwrap();
        let (bus, state) = (self.bus.clone(), self.state.clone());
        tokio::spawn(async move {
            while let Some(msg) = requests.next().await {
                let reply = {
                    let mut s = state.lock().unwrap();
                    let reply = answer(&mut s, msg.payload.clone());
                    (!s.silent).then_some(reply)
                };
                if let (Some(reply), Some(to)) = (reply, msg.reply_to.as_deref()) {
                    let _ = bus.publish(to, Bytes::from(reply)).await;
                }
            }
        });
    }

    fn with<T>(&self, f: impl FnOnce(&mut CmState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    pub fn add_user(&self, username: &str, password: &str, credential_id: &str) {
        self.with(|s| {
            s.users
                .insert(username.into(), (password.into(), credential_id.into()))
        });
    }

    pub fn add_cert(&self, issuer: &str, serial: &str, credential_id: &str) {
        self.with(|s| {
            s.certs
                .insert((issuer.into(), serial.into()), credential_id.into())
        });
    }

    pub fn add_token(&self, token: &str, endpoint_id: &str, token_id: &str) {
        let t = Token {
            endpoint_id: endpoint_id.into(),
            token_id: token_id.into(),
            status: Status::Active,
        };
        self.with(|s| s.tokens.insert(token.into(), t));
    }

    pub fn set_silent(&self, silent: bool) {
        self.with(|s| s.silent = silent);
    }

    pub fn credential_requests(&self) -> usize {
        self.with(|s| s.credential_requests)
    }

    pub fn token_requests(&self) -> usize {
        self.with(|s| s.token_requests)
    }

    /// Suspends the token and broadcasts that it is no longer usable, as CM does.
    pub async fn suspend_token(&self, token: &str) {
        self.transition(token, Status::Suspended).await;
    }

    pub async fn revoke_token(&self, token: &str) {
        self.transition(token, Status::Revoked).await;
    }

    /// Reactivation needs no broadcast: no gateway holds a suspended token.
    pub fn reactivate_token(&self, token: &str) {
        self.with(|s| {
            if let Some(t) = s.tokens.get_mut(token) {
                t.status = Status::Active;
            }
        });
    }

    async fn transition(&self, token: &str, status: Status) {
        let t = self.with(|s| {
            let t = s.tokens.get_mut(token).unwrap();
            t.status = status;
            t.clone()
        });
        let event = EndpointTokenRevokedEvent {
            correlation_id: "revoked".into(),
            app_name: "app".into(),
            endpoint_id: t.endpoint_id,
            token_ids: vec![t.token_id],
            originator_replica_id: "cm-0".into(),
            ..Default::default()
        };
        self.bus
            .publish(
                &subject::ecap_token_revoked(PROVIDER),
                Bytes::from(event.to_avro()),
            )
            .await
            .unwrap();
    }

    /// Deletes every way in with this credential and broadcasts the revocation.
    pub async fn revoke_credential(&self, credential_id: &str) {
        self.with(|s| {
            s.users.retain(|_, (_, id)| id != credential_id);
            s.certs.retain(|_, id| id != credential_id);
        });
        let event = ClientCredentialRevokedEvent {
            correlation_id: "revoked".into(),
            credential_id: credential_id.into(),
            originator_replica_id: "cm-0".into(),
            ..Default::default()
        };
        self.bus
            .publish(
                &subject::ecap_credential_revoked(PROVIDER),
                Bytes::from(event.to_avro()),
            )
            .await
            .unwrap();
    }
}

/// Extension `ext`: answers every request with its payload.
pub async fn echo_extension(bus: &Bus) {
    let mut requests = bus
        .subscribe("kaa.v1.service.ext.esp.ClientData", Some("ext"))
        .await
        .unwrap();
    let bus = bus.clone();
    tokio::spawn(async move {
        while let Some(msg) = requests.next().await {
            let data = ClientData::from_avro(&msg.payload).unwrap();
            let reply = ExtensionData {
                correlation_id: data.correlation_id.clone(),
                app_version_name: Some(data.app_version_name.clone()),
                extension_instance_name: Some("ext".into()),
                endpoint_id: data.endpoint_id.clone(),
                resource_path: data.resource_path.clone(),
                request_id: data.request_id,
                payload: Some(data.payload.clone()),
                status_code: 200,
                ..Default::default()
            };
            let _ = bus
                .publish(msg.reply_to.as_deref().unwrap(), Bytes::from(reply.to_avro()))
                .await;
        }
    });
}

// ---------------------------------------------------------------------------------------------
// PKI and MQTT over TLS

/// A CA, a server certificate for `localhost` and files for KPC, in a temporary directory.
#[derive(Debug)]
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    /// The issuer DN of certificates this CA signs, as KPC reports it.
    pub issuer: String,
}

/// A client certificate and its key.
#[derive(Debug)]
pub struct ClientCert {
    pub cert: rustls_pki_types::CertificateDer<'static>,
    pub key: rustls_pki_types::PrivateKeyDer<'static>,
    pub serial: String,
}

impl Pki {
    pub fn new(ca_name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca(ca_name);
        let pki = Pki {
            dir,
            ca,
            issuer: format!("CN={ca_name}"),
        };
        pki.write_server_cert("first");
        std::fs::write(pki.path("ca.pem"), pki.ca.pem()).unwrap();
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// (Re)writes server.pem and server.key with a new certificate whose O is `label`.
    pub fn write_server_cert(&self, label: &str) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, label);
        let cert = params.signed_by(&key, &self.ca).unwrap();
        // Key first: a reload between the two writes sees a mismatch and keeps the old pair.
        write_atomically(&self.path("server.key"), &key.serialize_pem());
        write_atomically(&self.path("server.pem"), &cert.pem());
    }

    /// A client certificate with this serial, valid from `not_before` to `not_after` (years).
    pub fn client_cert(&self, serial: u64, years: (i32, i32)) -> ClientCert {
        client_cert_from(&self.ca, serial, years)
    }

    pub fn mqtts(&self, client_certs: ClientCertMode, auth: ClientAuthMode) -> MqttsSettings {
        MqttsSettings {
            listen: "127.0.0.1:0".into(),
            tls: self.tls(client_certs),
            auth,
        }
    }

    /// The server side of a TLS listener: this PKI's server certificate, clients checked
    /// against its CA.
    pub fn tls(&self, client_certs: ClientCertMode) -> TlsSettings {
        TlsSettings {
            cert_file: self.path("server.pem").display().to_string(),
            key_file: self.path("server.key").display().to_string(),
            client_ca_file: Some(self.path("ca.pem").display().to_string()),
            client_certs,
        }
    }
}

fn write_atomically(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub fn ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

pub fn client_cert_from(
    ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    serial: u64,
    (from, to): (i32, i32),
) -> ClientCert {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("device-{serial}"));
    params.serial_number = Some(rcgen::SerialNumber::from(serial));
    params.not_before = rcgen::date_time_ymd(from, 1, 1);
    params.not_after = rcgen::date_time_ymd(to, 1, 1);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, ca).unwrap();
    ClientCert {
        cert: cert.der().clone(),
        key: rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        serial: serial.to_string(),
    }
}

pub type TlsConn = Framed<TlsStream<TcpStream>, v3::Codec>;

/// How an MQTT over TLS attempt ended.
#[derive(Debug)]
pub enum TlsOutcome {
    /// The TLS handshake failed or the server closed before answering CONNECT.
    Rejected(String),
    Connack(v3::ConnectAckReason, Box<TlsConn>),
}

impl TlsOutcome {
    pub fn code(&self) -> Option<v3::ConnectAckReason> {
        match self {
            TlsOutcome::Connack(code, _) => Some(*code),
            TlsOutcome::Rejected(_) => None,
        }
    }
}

/// The server certificate's O of the connection (to see reloads).
pub fn server_label(conn: &TlsConn) -> String {
    let chain = conn.get_ref().get_ref().1.peer_certificates().unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    cert.subject()
        .iter_organization()
        .next()
        .and_then(|o| o.as_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// TLS to `addr` trusting `pki`'s CA, optionally with a client certificate, then MQTT 3.1.1
/// CONNECT with optional credentials.
pub async fn tls_connect(
    addr: SocketAddr,
    pki: &Pki,
    client: Option<&ClientCert>,
    credentials: Option<(&str, &str)>,
) -> TlsOutcome {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some(c) => builder
            .with_client_auth_cert(vec![c.cert.clone()], c.key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let attempt = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let mut conn = Framed::new(tls, v3::Codec::new(1 << 20));
        let connect = v3::Connect {
            protocol: Protocol::default(),
            clean_session: true,
            keep_alive: 30,
            last_will: None,
            client_id: "tls-client".into(),
            username: credentials.map(|(u, _)| u.into()),
            password: credentials.map(|(_, p)| Bytes::copy_from_slice(p.as_bytes())),
            cert: None,
        };
        // With TLS 1.3 a rejected client certificate shows up here, as an alert instead of data.
        conn.send(v3::Packet::Connect(Box::new(connect)))
            .await
            .map_err(|e| format!("send: {e}"))?;
        match conn.next().await {
            Some(Ok((v3::Packet::ConnectAck(ack), _))) => Ok((ack.return_code, conn)),
            Some(Ok((other, _))) => Err(format!("unexpected {other:?}")),
            Some(Err(e)) => Err(format!("read: {e}")),
            None => Err("closed".into()),
        }
    };
    match tokio::time::timeout(DEADLINE, attempt)
        .await
        .expect("an outcome in time")
    {
        Ok((code, conn)) => TlsOutcome::Connack(code, Box::new(conn)),
        Err(why) => TlsOutcome::Rejected(why),
    }
}

/// A QoS 0 request over a raw connection; returns the answer's topic suffix and JSON body.
pub async fn tls_request(conn: &mut TlsConn, topic: &str, payload: &str) -> (String, Value) {
    let publish = Publish {
        dup: false,
        retain: false,
        qos: QoS::AtMostOnce,
        topic: topic.into(),
        packet_id: None,
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        properties: None,
    };
    conn.send(v3::Packet::Publish(Box::new(publish))).await.unwrap();
    let answer = tokio::time::timeout(DEADLINE, conn.next())
        .await
        .expect("an answer");
    match answer {
        Some(Ok((v3::Packet::Publish(p), _))) => {
            let reply = p.topic.to_string();
            assert!(reply.starts_with(topic), "{reply} is not under {topic}");
            (
                reply[topic.len()..].to_owned(),
                serde_json::from_slice(&p.payload).unwrap_or(Value::Null),
            )
        }
        other => panic!("expected a PUBLISH, got {other:?}"),
    }
}
