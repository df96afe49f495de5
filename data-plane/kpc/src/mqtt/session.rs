//! One MQTT connection: CONNECT handshake, then a loop over client packets, gateway output,
//! keepalive and shutdown. Each step of the loop is short; 1/KP logic lives in the gateway.

use std::collections::HashSet;
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rmqtt_codec::error::{DecodeError, EncodeError};
use rmqtt_codec::types::QoS;
use rmqtt_codec::v5::DisconnectReasonCode;
use rmqtt_codec::version::{ProtocolVersion, VersionCodec};
use rmqtt_codec::{MqttCodec, MqttPacket};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::wire::{Incoming, Refusal, Wire};
use crate::gateway::{Gateway, Outbound, SessionId};

#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("no CONNECT within the connect timeout")]
    ConnectTimeout,
    #[error("the first packet was not CONNECT")]
    NotConnect,
    #[error("closed by the client")]
    Closed,
    #[error("keepalive expired")]
    KeepaliveExpired,
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("malformed packet: {0}")]
    Decode(#[from] DecodeError),
    #[error("could not write: {0}")]
    Encode(#[from] EncodeError),
}

type Conn = Framed<TcpStream, MqttCodec>;

pub(crate) async fn serve(
    stream: TcpStream,
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
) -> Result<(), SessionError> {
    let limits = gateway.config().limits.clone();
    let max_packet = u32::try_from(limits.max_packet_bytes).unwrap_or(u32::MAX);
    let mut conn = Framed::new(stream, MqttCodec::Version(VersionCodec));
    let deadline = Duration::from_millis(limits.connect_timeout_ms);

    // The version probe peeks at CONNECT without consuming it; the versioned codec then reads it.
    let version = match timeout(deadline, conn.next()).await {
        Err(_) => return Err(SessionError::ConnectTimeout),
        Ok(None) => return Err(SessionError::Closed),
        Ok(Some(Err(e))) => return Err(e.into()),
        Ok(Some(Ok((MqttPacket::Version(v), _)))) => v,
        Ok(Some(Ok(_))) => return Err(SessionError::NotConnect),
    };
    let wire = Wire(version);
    *conn.codec_mut() = wire.codec(max_packet);
    let connect = match timeout(deadline, conn.next()).await {
        Err(_) => return Err(SessionError::ConnectTimeout),
        Ok(None) => return Err(SessionError::Closed),
        Ok(Some(Err(e))) => return Err(e.into()),
        Ok(Some(Ok((packet, _)))) => Wire::connect(packet).ok_or(SessionError::NotConnect)?,
    };
    // MQTT 3.1.1 [MQTT-3.1.3-8]: an empty client id needs a clean session.
    if connect.client_id.is_empty() && !connect.clean_session && version == ProtocolVersion::MQTT3 {
        conn.send(wire.refuse(Refusal::ClientIdRejected)).await?;
        return Err(SessionError::Protocol(
            "empty client id without clean session".into(),
        ));
    }
    // The client id is only informative: endpoint state is keyed by session, never by client id
    // (the official Kaa client sends empty or shared ids).
    let assigned = connect
        .client_id
        .is_empty()
        .then(|| format!("kaa-{}", uuid::Uuid::new_v4().simple()).into());
    conn.send(wire.connack(assigned, max_packet)).await?;

    let (id, outbound) = gateway.open_session();
    let keepalive =
        (connect.keep_alive > 0).then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    let mut session = Session {
        id,
        wire,
        gateway: gateway.clone(),
        conn,
        outbound,
        next_packet_id: 0,
        awaiting_release: HashSet::new(),
    };
    let result = session.run(keepalive, &shutdown).await;
    gateway.close_session(id).await;
    result
}

struct Session {
    id: SessionId,
    wire: Wire,
    gateway: Arc<Gateway>,
    conn: Conn,
    outbound: tokio::sync::mpsc::Receiver<Outbound>,
    next_packet_id: u16,
    /// QoS 2 publishes received but not yet released: a resend must not be forwarded twice.
    awaiting_release: HashSet<NonZeroU16>,
}

impl Session {
    async fn run(
        &mut self,
        keepalive: Option<Duration>,
        shutdown: &CancellationToken,
    ) -> Result<(), SessionError> {
        let far_future = Duration::from_secs(365 * 24 * 3600);
        let mut deadline = Instant::now() + keepalive.unwrap_or(far_future);
        loop {
            tokio::select! {
                packet = self.conn.next() => {
                    let packet = match packet {
                        None => return Err(SessionError::Closed),
                        Some(Err(e)) => {
                            if let DecodeError::MaxSizeExceeded { .. } = e {
                                self.goodbye(DisconnectReasonCode::PacketTooLarge).await;
                            }
                            return Err(e.into());
                        }
                        Some(Ok((packet, _))) => packet,
                    };
                    deadline = Instant::now() + keepalive.unwrap_or(far_future);
                    if !self.on_packet(Wire::incoming(packet)).await? {
                        return Ok(());
                    }
                }
                Some(out) = self.outbound.recv() => {
                    self.write(out).await?;
                    // Batch whatever else is ready into one flush.
                    while let Ok(out) = self.outbound.try_recv() {
                        self.write(out).await?;
                    }
                    self.conn.flush().await?;
                }
                _ = sleep_until(deadline) => {
                    self.goodbye(DisconnectReasonCode::KeepAliveTimeout).await;
                    return Err(SessionError::KeepaliveExpired);
                }
                _ = shutdown.cancelled() => {
                    self.goodbye(DisconnectReasonCode::ServerShuttingDown).await;
                    return Ok(());
                }
            }
        }
    }

    /// Handles one client packet; `false` means the client said goodbye.
    async fn on_packet(&mut self, packet: Incoming) -> Result<bool, SessionError> {
        let wire = self.wire;
        match packet {
            Incoming::Publish(p) => {
                let fresh = match (p.qos, p.packet_id) {
                    (QoS::ExactlyOnce, Some(pid)) => self.awaiting_release.insert(pid),
                    _ => true,
                };
                if fresh {
                    self.gateway
                        .handle_publish(self.id, &p.topic, p.payload, p.qos)
                        .await;
                }
                match (p.qos, p.packet_id) {
                    (QoS::AtLeastOnce, Some(pid)) => self.conn.send(wire.puback(pid)).await?,
                    (QoS::ExactlyOnce, Some(pid)) => self.conn.send(wire.pubrec(pid)).await?,
                    _ => {}
                }
            }
            Incoming::PubRel(pid) => {
                self.awaiting_release.remove(&pid);
                self.conn.send(wire.pubcomp(pid)).await?;
            }
            Incoming::PubRec(pid) => self.conn.send(wire.pubrel(pid)).await?,
            Incoming::PubAck | Incoming::PubComp => {}
            Incoming::Subscribe { packet_id, qos } => self.conn.send(wire.suback(packet_id, &qos)).await?,
            Incoming::Unsubscribe { packet_id, count } => {
                self.conn.send(wire.unsuback(packet_id, count)).await?
            }
            Incoming::PingReq => self.conn.send(wire.pingresp()).await?,
            Incoming::Disconnect => return Ok(false),
            Incoming::Unexpected(what) => {
                self.goodbye(DisconnectReasonCode::ProtocolError).await;
                return Err(SessionError::Protocol(format!("a client may not send {what}")));
            }
        }
        Ok(true)
    }

    async fn write(&mut self, out: Outbound) -> Result<(), SessionError> {
        let packet_id = match out.qos {
            QoS::AtMostOnce => None,
            _ => Some(self.packet_id()),
        };
        self.conn
            .feed(self.wire.publish(out.topic, out.payload, out.qos, packet_id))
            .await?;
        Ok(())
    }

    fn packet_id(&mut self) -> NonZeroU16 {
        self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
        NonZeroU16::new(self.next_packet_id).unwrap_or(NonZeroU16::MIN)
    }

    /// Tells an MQTT 5 client why the server ends the connection (best effort).
    async fn goodbye(&mut self, reason: DisconnectReasonCode) {
        if let Some(packet) = self.wire.disconnect(reason) {
            let _ = self.conn.send(packet).await;
        }
    }
}
