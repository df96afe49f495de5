//! KPC: the 1/KP gateway between devices and extension services.
//!
//! # Layout
//! - [`gateway`]: transport-independent 1/KP -> 4/ESP routing, sessions, replies, 9/ELCE events,
//!   16/ECAP revocations.
//! - [`tokens`]: endpoint token -> endpoint id through the 16/ECAP provider, with a TTL cache.
//! - [`auth`]: client authentication at CONNECT (username/password, TLS client certificate).
//! - `metrics`: the gateway's Prometheus metrics (connections, messages, replies, latency, auth
//!   failures, timeouts, drops), registered in the process's registry.
//! - `ratelimit`: failed-CONNECT token buckets per source address.
//! - [`tls`]: the rustls server configuration of the MQTT over TLS listener, reloaded on change.
//! - `mqtt`: MQTT 3.1.1/5 over TCP and TLS (accept loops, one task per connection, v3/v5 mapping).
//!
//! A message's path: MQTT PUBLISH -> `mqtt::session` -> [`gateway::Gateway::handle_publish`] ->
//! bus `kaa.v1.service.{ext}.esp.ClientData` -> extension -> bus replica subject ->
//! [`gateway::Gateway::handle_extension_data`] -> the session's outbound queue -> PUBLISH `/status`.

pub mod auth;
pub mod gateway;
mod metrics;
mod mqtt;
mod ratelimit;
pub mod tls;
pub mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kaa_blueprint::config::{ClientAuthMode, ClientCertMode, KpcConfig};
use kaa_bus::metrics::Metrics;
use kaa_bus::{Bus, BusError, Subscription};
use kaa_protocol::avro::AvroRecord;
use kaa_protocol::ecap::{ClientCredentialRevokedEvent, EndpointTokenRevokedEvent};
use kaa_protocol::esp::ExtensionData;
use kaa_protocol::subject;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gateway::Gateway;
use crate::mqtt::Listener;
use crate::tls::{TlsError, TlsFiles};

#[derive(Debug, thiserror::Error)]
pub enum KpcError {
    #[error("cannot listen for MQTT on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("cannot subscribe on the bus: {0}")]
    Bus(#[from] BusError),
    #[error("MQTT over TLS: {0}")]
    Tls(#[from] TlsError),
}

/// A running KPC replica.
#[derive(Debug)]
pub struct Kpc {
    gateway: Arc<Gateway>,
    mqtt_addr: SocketAddr,
    mqtts_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    sessions: TaskTracker,
}

impl Kpc {
    /// Binds the listeners and starts routing. `replica_id` names this replica's bus subjects; the
    /// gateway's metrics are registered in `metrics` (one KPC per registry).
    pub async fn start(
        config: KpcConfig,
        bus: Bus,
        replica_id: String,
        metrics: &Metrics,
    ) -> Result<Kpc, KpcError> {
        // Fail before binding anything if the TLS files are unusable.
        let tls = match &config.mqtts {
            Some(settings) => Some(Arc::new(TlsFiles::load(settings.clone())?)),
            None => None,
        };
        let gateway = Gateway::new(config, bus.clone(), replica_id, metrics);
        let config = gateway.config();
        let (mqtt_listener, mqtt_addr) = bind(&config.mqtt.listen).await?;
        let mqtts = match (&config.mqtts, tls) {
            (Some(settings), Some(tls)) => Some((bind(&settings.listen).await?, settings.auth, tls)),
            _ => None,
        };
        // Subscribed before the listeners serve anyone, so no answer or revocation is missed.
        let replies = bus.subscribe(gateway.reply_subject(), None).await?;
        // Every replica must see every revocation: no queue group.
        let provider = &config.token_provider;
        let token_revocations = bus
            .subscribe(&subject::ecap_token_revoked(provider), None)
            .await?;
        let credential_revocations = bus
            .subscribe(&subject::ecap_credential_revoked(provider), None)
            .await?;

        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let sessions = TaskTracker::new();
        tasks.spawn(route_replies(gateway.clone(), replies, shutdown.clone()));
        tasks.spawn(apply_revocations(
            gateway.clone(),
            token_revocations,
            credential_revocations,
            shutdown.clone(),
        ));
        let (g, stop) = (gateway.clone(), shutdown.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    at = tick.tick() => g.expire_pending(at.into_std()),
                }
            }
        });

        warn_about_auth("mqtt", mqtt_addr, config.mqtt.auth, None);
        let plain = Listener {
            name: "mqtt",
            connections: gateway.metrics().connections("mqtt"),
            gateway: gateway.clone(),
            auth: config.mqtt.auth,
            tls: None,
            shutdown: shutdown.clone(),
        };
        tasks.spawn(mqtt::accept_loop(
            mqtt_listener,
            Arc::new(plain),
            sessions.clone(),
        ));
        tracing::info!(%mqtt_addr, instance = config.instance, auth = ?config.mqtt.auth, "KPC listening for MQTT");

        let mut mqtts_addr = None;
        if let Some(((socket, addr), auth, tls)) = mqtts {
            let client_certs = config.mqtts.as_ref().map(|s| s.client_certs);
            warn_about_auth("mqtts", addr, auth, client_certs);
            let secure = Listener {
                name: "mqtts",
                connections: gateway.metrics().connections("mqtts"),
                gateway: gateway.clone(),
                auth,
                tls: Some(tls),
                shutdown: shutdown.clone(),
            };
            tasks.spawn(mqtt::accept_loop(socket, Arc::new(secure), sessions.clone()));
            tracing::info!(mqtts_addr = %addr, auth = ?auth, client_certs = ?client_certs, "KPC listening for MQTT over TLS");
            mqtts_addr = Some(addr);
        }
        Ok(Kpc {
            gateway,
            mqtt_addr,
            mqtts_addr,
            shutdown,
            tasks,
            sessions,
        })
    }

    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    /// The MQTT over TLS listener's address, if `mqtts` is configured.
    pub fn mqtts_addr(&self) -> Option<SocketAddr> {
        self.mqtts_addr
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Stops accepting, ends every session (MQTT 5 clients are told why) and announces their
    /// endpoints as disconnected, then stops routing.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.sessions.close();
        self.sessions.wait().await;
        self.tasks.close();
        self.tasks.wait().await;
    }
}

async fn bind(addr: &str) -> Result<(TcpListener, SocketAddr), KpcError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| KpcError::Listen {
        addr: addr.to_owned(),
        source,
    })?;
    let local = listener.local_addr().map_err(|source| KpcError::Listen {
        addr: addr.to_owned(),
        source,
    })?;
    Ok((listener, local))
}

/// Says loudly when a listener lets anyone in, or can let no one in.
fn warn_about_auth(name: &str, addr: SocketAddr, auth: ClientAuthMode, client_certs: Option<ClientCertMode>) {
    match (auth, client_certs) {
        (ClientAuthMode::None, _) => tracing::warn!(
            listener = name,
            %addr,
            "CLIENT AUTHENTICATION IS OFF: any MQTT client that reaches {addr} may connect. \
             For local development only; set `auth: password` (or certificate) anywhere else."
        ),
        (ClientAuthMode::Certificate, None | Some(ClientCertMode::None)) => tracing::warn!(
            listener = name,
            %addr,
            "`auth: certificate` on a listener that takes no client certificates: every CONNECT \
             will be refused"
        ),
        _ => {}
    }
}

async fn route_replies(gateway: Arc<Gateway>, mut replies: Subscription, stop: CancellationToken) {
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return,
            msg = replies.next() => match msg { Some(m) => m, None => return },
        };
        match ExtensionData::from_avro(&msg.payload) {
            Ok(data) => gateway.handle_extension_data(data),
            Err(e) => tracing::warn!(error = %e, "dropping a malformed ExtensionData"),
        }
    }
}

/// Applies the credential provider's revocation broadcasts as they come.
async fn apply_revocations(
    gateway: Arc<Gateway>,
    mut tokens: Subscription,
    mut credentials: Subscription,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            msg = tokens.next() => {
                let Some(msg) = msg else { return };
                match EndpointTokenRevokedEvent::from_avro(&msg.payload) {
                    Ok(event) => {
                        gateway.revoke_tokens(&event.endpoint_id, &event.token_ids).await;
                    }
                    Err(e) => tracing::warn!(error = %e, "dropping a malformed EndpointTokenRevokedEvent"),
                }
            }
            msg = credentials.next() => {
                let Some(msg) = msg else { return };
                match ClientCredentialRevokedEvent::from_avro(&msg.payload) {
                    Ok(event) => {
                        gateway.revoke_credential(&event.credential_id);
                    }
                    Err(e) => tracing::warn!(error = %e, "dropping a malformed ClientCredentialRevokedEvent"),
                }
            }
        }
    }
}
