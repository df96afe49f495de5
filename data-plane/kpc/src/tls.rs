//! TLS listeners (MQTT over TLS, MQTT over secure WebSocket, 1/KP over HTTPS): the rustls server
//! configuration (ring is the only crypto provider), reloaded when the certificate, key or CA
//! files change; the handshake; and what KPC takes from a verified client certificate for 16/ECAP.
//!
//! Client certificates are verified by rustls' `WebPkiClientVerifier` against `clientCaFile`
//! (chain, signature, validity period) during the handshake; the credential provider then only
//! maps issuer + serial number to a credential. Key material is never logged.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use kaa_blueprint::config::{ClientCertMode, TlsSettings};
use rustls::RootCertStore;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio::time::timeout_at;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::auth::CertificateIdentity;

/// How often accepting a connection may look at the files' modification times.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Pem { path: String, message: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: String },
    #[error("clientCerts is `{0}` but no clientCaFile is set")]
    NoClientCa(&'static str),
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Why a TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake failed: {0}")]
    Failed(std::io::Error),
    #[error("TLS handshake timed out")]
    TimedOut,
}

/// The TLS acceptor of one listener, rebuilt when its files change.
#[derive(Debug)]
pub struct TlsFiles {
    settings: TlsSettings,
    loaded: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    config: Arc<ServerConfig>,
    stamps: Vec<Stamp>,
    checked: Instant,
}

/// A file's modification time and length: either changes when a file is rewritten.
type Stamp = Option<(SystemTime, u64)>;

impl TlsFiles {
    /// Loads the files once; an error here stops KPC from starting.
    pub fn load(settings: TlsSettings) -> Result<TlsFiles, TlsError> {
        let stamps = stamps(&settings);
        let config = server_config(&settings)?;
        Ok(TlsFiles {
            settings,
            loaded: Mutex::new(Loaded {
                config,
                stamps,
                checked: Instant::now(),
            }),
        })
    }

    fn loaded(&self) -> MutexGuard<'_, Loaded> {
        // Only a finished configuration is ever stored, so a poisoned lock still holds a good one.
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The acceptor for a new connection. At most once per second it checks whether the files
    /// changed and, if so, rebuilds the configuration; a broken new file keeps the old one.
    pub fn acceptor(&self) -> TlsAcceptor {
        let mut loaded = self.loaded();
        if loaded.checked.elapsed() >= RELOAD_CHECK_INTERVAL {
            loaded.checked = Instant::now();
            let now = stamps(&self.settings);
            if now != loaded.stamps {
                // Remember the stamps even on failure: one warning per change, not per connection.
                loaded.stamps = now;
                match server_config(&self.settings) {
                    Ok(config) => {
                        loaded.config = config;
                        tracing::info!(
                            cert_file = self.settings.cert_file,
                            "reloaded the TLS certificate"
                        );
                    }
                    Err(e) => tracing::warn!(
                        error = %e,
                        "the TLS files changed but cannot be used; keeping the previous ones"
                    ),
                }
            }
        }
        TlsAcceptor::from(loaded.config.clone())
    }

    /// Runs the server handshake on `stream` until `deadline` (in the connection's own task, so
    /// a stalled client holds up no one else); returns the TLS stream and the identity of the
    /// client certificate rustls verified, if one was presented.
    pub async fn handshake(
        &self,
        stream: TcpStream,
        deadline: tokio::time::Instant,
    ) -> Result<(TlsStream<TcpStream>, Option<CertificateIdentity>), HandshakeError> {
        let tls = timeout_at(deadline, self.acceptor().accept(stream))
            .await
            .map_err(|_| HandshakeError::TimedOut)?
            .map_err(HandshakeError::Failed)?;
        let certificate = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| certificate_identity(leaf));
        Ok((tls, certificate))
    }
}

fn stamps(s: &TlsSettings) -> Vec<Stamp> {
    let stamp = |path: &str| {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    let mut files = vec![stamp(&s.cert_file), stamp(&s.key_file)];
    if let Some(ca) = &s.client_ca_file {
        files.push(stamp(ca));
    }
    files
}

/// Builds the server configuration from the files, with the ring provider explicitly.
pub(crate) fn server_config(s: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&s.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&s.key_file).map_err(|e| TlsError::Pem {
        path: s.key_file.clone(),
        // pem errors describe the file's structure, never its content.
        message: e.to_string(),
    })?;
    let builder =
        ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match s.client_certs {
        ClientCertMode::None => builder.with_no_client_auth(),
        mode @ (ClientCertMode::Optional | ClientCertMode::Required) => {
            let optional = mode == ClientCertMode::Optional;
            let ca = s
                .client_ca_file
                .as_deref()
                .ok_or(TlsError::NoClientCa(if optional {
                    "optional"
                } else {
                    "required"
                }))?;
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots.add(cert)?;
            }
            let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if optional {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier.build().map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    Ok(Arc::new(builder.with_single_cert(certs, key)?))
}

fn read_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |e: rustls_pki_types::pem::Error| TlsError::Pem {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(Path::new(path))
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Issuer and serial number of a (verified) client certificate, derived exactly as the
/// credential provider derives them from an uploaded certificate; `None` if it does not parse.
fn certificate_identity(der: &[u8]) -> Option<CertificateIdentity> {
    CertificateIdentity::from_der(der).ok()
}
