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
//! - [`tls`]: the rustls server configuration of the TLS listeners, reloaded on change, and the
//!   handshake (shared with 1/KP over HTTPS, served by the `kaa` binary).
//! - `mqtt`: MQTT 3.1.1/5 over TCP, TLS, WebSocket and WebSocket over TLS (accept loops, one task
//!   per connection, v3/v5 mapping).
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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kaa_blueprint::config::{ClientAuthMode, ClientCertMode, KpcConfig, TlsSettings, check_ws_path};
use kaa_bus::metrics::Metrics;
use kaa_bus::{Bus, BusError, Subscription};
use kaa_protocol::avro::AvroRecord;
use kaa_protocol::ecap::{ClientCredentialRevokedEvent, EndpointTokenRevokedEvent};
use kaa_protocol::elce::ConnectedEvent;
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
    #[error("{listener}: {source}")]
    Tls {
        listener: &'static str,
        source: TlsError,
    },
    #[error("{listener}.path {why}")]
    WebSocketPath { listener: &'static str, why: String },
}

/// A running KPC replica.
#[derive(Debug)]
pub struct Kpc {
    gateway: Arc<Gateway>,
    mqtt_addr: SocketAddr,
    /// Every listener's address, by name (`mqtt`, `mqtts`, `ws`, `wss`).
    addrs: BTreeMap<&'static str, SocketAddr>,
    /// Cancelled first: stop accepting, drain the sessions.
    shutdown: CancellationToken,
    /// Cancelled when the drain is over (or timed out): end every session now, stop routing.
    stop_now: CancellationToken,
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
        // Fail before binding anything if the TLS files or paths are unusable.
        let plain = ListenerSpec::plain(&config);
        let optional = ListenerSpec::optional(&config)?;
        let gateway = Gateway::new(config, bus.clone(), replica_id, metrics);
        let config = gateway.config();
        let (mqtt_socket, mqtt_addr) = bind(&plain.listen).await?;
        let mut bound = vec![((mqtt_socket, mqtt_addr), plain)];
        for spec in optional {
            bound.push((bind(&spec.listen).await?, spec));
        }
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
        // The other replicas' announcements: endpoints that roamed away from this one.
        let connected_elsewhere = bus
            .subscribe(&subject::elce_connected(&config.instance), None)
            .await?;

        let (shutdown, stop_now) = (CancellationToken::new(), CancellationToken::new());
        let tasks = TaskTracker::new();
        let sessions = TaskTracker::new();
        // Routing runs until the sessions are gone: answers must reach draining sessions.
        tasks.spawn(route_replies(gateway.clone(), replies, stop_now.clone()));
        tasks.spawn(apply_revocations(
            gateway.clone(),
            token_revocations,
            credential_revocations,
            stop_now.clone(),
        ));
        tasks.spawn(follow_roaming(
            gateway.clone(),
            connected_elsewhere,
            stop_now.clone(),
        ));
        let (g, stop) = (gateway.clone(), stop_now.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    at = tick.tick() => g.expire_pending(at.into_std()),
                }
            }
        });

        let mut addrs = BTreeMap::new();
        for ((socket, addr), spec) in bound {
            warn_about_auth(spec.name, addr, spec.auth, spec.client_certs);
            tracing::info!(
                listener = spec.name,
                %addr,
                instance = config.instance,
                auth = ?spec.auth,
                client_certs = ?spec.client_certs,
                websocket_path = spec.websocket,
                "KPC listening"
            );
            let listener = Listener {
                name: spec.name,
                connections: gateway.metrics().connections(spec.name),
                gateway: gateway.clone(),
                auth: spec.auth,
                tls: spec.tls,
                websocket: spec.websocket,
                shutdown: shutdown.clone(),
                stop_now: stop_now.clone(),
            };
            tasks.spawn(mqtt::accept_loop(socket, Arc::new(listener), sessions.clone()));
            addrs.insert(spec.name, addr);
        }
        Ok(Kpc {
            gateway,
            mqtt_addr,
            addrs,
            shutdown,
            stop_now,
            tasks,
            sessions,
        })
    }

    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    /// The MQTT over TLS listener's address, if `mqtts` is configured.
    pub fn mqtts_addr(&self) -> Option<SocketAddr> {
        self.addrs.get("mqtts").copied()
    }

    /// The MQTT over WebSocket listener's address, if `ws` is configured.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.addrs.get("ws").copied()
    }

    /// The MQTT over WebSocket over TLS listener's address, if `wss` is configured.
    pub fn wss_addr(&self) -> Option<SocketAddr> {
        self.addrs.get("wss").copied()
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Drains the replica: stops accepting, refuses new requests with 503, lets the requests in
    /// flight be answered (up to `limits.drainTimeoutMs`) while each MQTT session ends once it
    /// has nothing in flight (MQTT 5 clients are told the server is shutting down), announces
    /// the sessions' endpoints as disconnected, then stops routing.
    pub async fn shutdown(self) {
        self.gateway.begin_drain();
        self.shutdown.cancel();
        self.sessions.close();
        let drain = Duration::from_millis(self.gateway.config().limits.drain_timeout_ms);
        let drained = tokio::time::timeout(drain, async {
            self.sessions.wait().await;
            // One-request (HTTP) sessions are not tracked here: wait for their answers too.
            while self.gateway.any_pending() {
                tokio::time::sleep(DRAIN_POLL).await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                sessions = self.sessions.len(),
                "drain timeout: ending the remaining sessions with requests still in flight"
            );
        }
        self.stop_now.cancel();
        self.sessions.wait().await;
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// How often a drain checks for requests still in flight.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// One configured MQTT listener, before it is bound.
struct ListenerSpec {
    name: &'static str,
    listen: String,
    auth: ClientAuthMode,
    /// TLS listeners only.
    tls: Option<Arc<TlsFiles>>,
    client_certs: Option<ClientCertMode>,
    /// WebSocket listeners only: the upgrade path.
    websocket: Option<String>,
}

impl ListenerSpec {
    /// The plain MQTT listener, always there.
    fn plain(config: &KpcConfig) -> ListenerSpec {
        ListenerSpec {
            name: "mqtt",
            listen: config.mqtt.listen.clone(),
            auth: config.mqtt.auth,
            tls: None,
            client_certs: None,
            websocket: None,
        }
    }

    /// The other listeners `config` asks for; loads their TLS files.
    fn optional(config: &KpcConfig) -> Result<Vec<ListenerSpec>, KpcError> {
        let tls = |listener, settings: &TlsSettings| match TlsFiles::load(settings.clone()) {
            Ok(files) => Ok((Some(Arc::new(files)), Some(settings.client_certs))),
            Err(source) => Err(KpcError::Tls { listener, source }),
        };
        let path = |listener, path: &str| match check_ws_path(path) {
            Ok(()) => Ok(Some(path.to_owned())),
            Err(why) => Err(KpcError::WebSocketPath { listener, why }),
        };
        let mut specs = Vec::new();
        if let Some(s) = &config.mqtts {
            let (tls, client_certs) = tls("mqtts", &s.tls)?;
            specs.push(ListenerSpec {
                name: "mqtts",
                listen: s.listen.clone(),
                auth: s.auth,
                tls,
                client_certs,
                websocket: None,
            });
        }
        if let Some(s) = &config.ws {
            specs.push(ListenerSpec {
                name: "ws",
                listen: s.listen.clone(),
                auth: s.auth,
                tls: None,
                client_certs: None,
                websocket: path("ws", &s.path)?,
            });
        }
        if let Some(s) = &config.wss {
            let (tls, client_certs) = tls("wss", &s.tls)?;
            specs.push(ListenerSpec {
                name: "wss",
                listen: s.listen.clone(),
                auth: s.auth,
                tls,
                client_certs,
                websocket: path("wss", &s.path)?,
            });
        }
        Ok(specs)
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

/// Applies the other replicas' 9/ELCE `connected` events (see `gateway::roaming`).
async fn follow_roaming(gateway: Arc<Gateway>, mut events: Subscription, stop: CancellationToken) {
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return,
            msg = events.next() => match msg { Some(m) => m, None => return },
        };
        match ConnectedEvent::from_avro(&msg.payload) {
            Ok(event) => {
                gateway.endpoints_connected_elsewhere(&event);
            }
            Err(e) => tracing::warn!(error = %e, "dropping a malformed ConnectedEvent"),
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
