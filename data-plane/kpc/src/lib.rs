//! KPC: the 1/KP gateway between devices and extension services.
//!
//! # Layout
//! - [`gateway`]: transport-independent 1/KP -> 4/ESP routing, sessions, replies, 9/ELCE events.
//! - [`tokens`]: endpoint token -> endpoint id through the 16/ECAP provider.
//! - `mqtt`: MQTT 3.1.1/5 over TCP (accept loop, one task per connection, v3/v5 packet mapping).
//!
//! A message's path: MQTT PUBLISH -> `mqtt::session` -> [`gateway::Gateway::handle_publish`] ->
//! bus `kaa.v1.service.{ext}.esp.ClientData` -> extension -> bus replica subject ->
//! [`gateway::Gateway::handle_extension_data`] -> the session's outbound queue -> PUBLISH `/status`.

pub mod gateway;
mod mqtt;
pub mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kaa_blueprint::config::KpcConfig;
use kaa_bus::{Bus, BusError};
use kaa_protocol::avro::AvroRecord;
use kaa_protocol::esp::ExtensionData;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gateway::Gateway;

#[derive(Debug, thiserror::Error)]
pub enum KpcError {
    #[error("cannot listen for MQTT on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("cannot subscribe to the reply subject: {0}")]
    Bus(#[from] BusError),
}

/// A running KPC replica.
#[derive(Debug)]
pub struct Kpc {
    gateway: Arc<Gateway>,
    mqtt_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    sessions: TaskTracker,
}

impl Kpc {
    /// Binds the listeners and starts routing. `replica_id` names this replica's bus subjects.
    pub async fn start(config: KpcConfig, bus: Bus, replica_id: String) -> Result<Kpc, KpcError> {
        let gateway = Gateway::new(config, bus.clone(), replica_id);
        let addr = gateway.config().mqtt.listen.clone();
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| KpcError::Listen { addr, source })?;
        let mqtt_addr = listener.local_addr().map_err(|source| KpcError::Listen {
            addr: "?".into(),
            source,
        })?;
        let mut replies = bus.subscribe(gateway.reply_subject(), None).await?;

        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let sessions = TaskTracker::new();
        let (g, stop) = (gateway.clone(), shutdown.clone());
        tasks.spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => return,
                    msg = replies.next() => match msg { Some(m) => m, None => return },
                };
                match ExtensionData::from_avro(&msg.payload) {
                    Ok(data) => g.handle_extension_data(data),
                    Err(e) => tracing::warn!(error = %e, "dropping a malformed ExtensionData"),
                }
            }
        });
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
        tasks.spawn(mqtt::accept_loop(
            listener,
            gateway.clone(),
            shutdown.clone(),
            sessions.clone(),
        ));
        tracing::info!(%mqtt_addr, instance = gateway.config().instance, "KPC listening for MQTT");
        Ok(Kpc {
            gateway,
            mqtt_addr,
            shutdown,
            tasks,
            sessions,
        })
    }

    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
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
