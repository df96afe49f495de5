//! One MQTT connection over any byte stream (TCP or TLS): CONNECT and client authentication,
//! then a loop over client packets, gateway output, keepalive, revocation and shutdown. Each step
//! of the loop is short; 1/KP logic lives in the gateway.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use flume::r#async::RecvStream;
use futures_util::{FutureExt, SinkExt, StreamExt};
use rmqtt_codec::error::{DecodeError, EncodeError};
use rmqtt_codec::types::QoS;
use rmqtt_codec::v5::DisconnectReasonCode;
use rmqtt_codec::version::{ProtocolVersion, VersionCodec};
use rmqtt_codec::{MqttCodec, MqttPacket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, sleep_until, timeout_at};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::Listener;
use super::wire::{Incoming, Refusal, Wire};
use crate::auth::{AuthError, CertificateIdentity, Presented};
use crate::gateway::{End, Gateway, Limit, Outbound, SessionId, Slot};
use crate::metrics::{AuthFailure, Connected};
use crate::tls::HandshakeError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("no CONNECT within the connect timeout")]
    ConnectTimeout,
    #[error("the first packet was not CONNECT")]
    NotConnect,
    #[error("closed by the client")]
    Closed,
    #[error("shutting down")]
    Shutdown,
    #[error("CONNECT refused: {0}")]
    Refused(AuthError),
    #[error("CONNECT refused: maxConnections sessions are open")]
    TooManyConnections,
    #[error("the client's credential or only endpoint token was revoked")]
    Revoked,
    #[error("every endpoint of the session reconnected through another replica")]
    TakenOver,
    #[error("keepalive expired")]
    KeepaliveExpired,
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error(transparent)]
    Tls(#[from] HandshakeError),
    #[error("WebSocket upgrade refused or failed: {0}")]
    WebSocket(String),
    #[error("malformed packet: {0}")]
    Decode(#[from] DecodeError),
    #[error("could not write: {0}")]
    Encode(#[from] EncodeError),
}

/// Initial read buffer of a connection, bytes: most CONNECTs fit.
const READ_BUFFER: usize = 128;

/// How long a server DISCONNECT may take to write before the connection is just dropped.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

/// Opens a session on `stream`: reads CONNECT, authenticates the client and answers CONNACK.
/// `deadline` bounds everything up to a decoded CONNECT (the TLS handshake included);
/// `certificate` is the verified client certificate, if any. Awaited boxed by its caller: what
/// it needs (the CONNECT, authentication) is gone once the session runs.
pub(crate) async fn open<S>(
    stream: S,
    peer: SocketAddr,
    certificate: Option<CertificateIdentity>,
    deadline: Instant,
    listener: &Listener,
) -> Result<Opened<S>, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let gateway = &listener.gateway;
    let shutdown = &listener.shutdown;
    let limits = &gateway.config().limits;
    let max_packet = u32::try_from(limits.max_packet_bytes).unwrap_or(u32::MAX);
    // Buffers as small as can be: an idle session keeps them for its whole life, and a busy one
    // grows them as its traffic needs (the write buffer from nothing, as packets are encoded).
    // tokio-util gives every Framed 8 KiB each (even one built from parts with smaller ones), so
    // they are swapped after construction.
    let mut conn = Framed::new(stream, MqttCodec::Version(VersionCodec));
    *conn.read_buffer_mut() = BytesMut::with_capacity(READ_BUFFER);
    *conn.write_buffer_mut() = BytesMut::new();

    // The version probe peeks at CONNECT without consuming it; the versioned codec then reads it.
    let version = match until(deadline, listener, conn.next()).await? {
        None => return Err(SessionError::Closed),
        Some(Err(e)) => return Err(decode_failed(gateway, e)),
        Some(Ok((MqttPacket::Version(v), _))) => v,
        Some(Ok(_)) => return Err(SessionError::NotConnect),
    };
    let wire = Wire(version);
    *conn.codec_mut() = wire.codec(max_packet);
    let mut connect = match until(deadline, listener, conn.next()).await? {
        None => return Err(SessionError::Closed),
        Some(Err(e)) => return Err(decode_failed(gateway, e)),
        Some(Ok((packet, _))) => Wire::connect(packet).ok_or(SessionError::NotConnect)?,
    };
    // MQTT 3.1.1 [MQTT-3.1.3-8]: an empty client id needs a clean session.
    if connect.client_id.is_empty() && !connect.clean_session && version == ProtocolVersion::MQTT3 {
        conn.send(wire.refuse(Refusal::ClientIdRejected)).await?;
        return Err(SessionError::Protocol(
            "empty client id without clean session".into(),
        ));
    }
    // Before authentication, so a full replica does not ask the credential provider either.
    // Held as long as the session, whichever way it ends.
    let Some(slot) = gateway.admit_connection() else {
        tracing::debug!(%peer, listener = listener.name, "CONNECT refused: maxConnections reached");
        conn.send(wire.refuse(Refusal::TooManyConnections)).await?;
        return Err(SessionError::TooManyConnections);
    };

    // Out of the CONNECT, so it is gone once authentication is done.
    let password = connect.password.take();
    let presented = Presented {
        username: connect.username.as_deref(),
        password: password.as_deref(),
        certificate: certificate.as_ref(),
    };
    // Bounded by the provider timeout inside; shutdown must not wait for it.
    let verdict = tokio::select! {
        _ = shutdown.cancelled() => return Err(SessionError::Shutdown),
        v = gateway.authenticator().authenticate(listener.auth, peer.ip(), presented) => v,
    };
    drop(password);
    let client = match verdict {
        Ok(client) => client,
        Err(why) => {
            tracing::debug!(%peer, listener = listener.name, reason = %why, "CONNECT refused");
            let (refusal, failure) = match why {
                AuthError::BadCredentials => (Refusal::BadCredentials, AuthFailure::BadCredentials),
                AuthError::NotAuthorized => (Refusal::NotAuthorized, AuthFailure::NotAuthorized),
                AuthError::Unavailable => (Refusal::ServerUnavailable, AuthFailure::ProviderUnavailable),
                AuthError::RateLimited => (Refusal::RateLimited, AuthFailure::RateLimited),
            };
            gateway.metrics().auth_failure(failure);
            conn.send(wire.refuse(refusal)).await?;
            return Err(SessionError::Refused(why));
        }
    };
    if let Some(c) = &client {
        tracing::debug!(
            %peer,
            listener = listener.name,
            credential_id = c.credential_id,
            client_id = c.client_id.as_deref().unwrap_or(""),
            "client authenticated"
        );
    }
    let Some(handle) = gateway.open_session(client) else {
        gateway.metrics().auth_failure(AuthFailure::Revoked);
        conn.send(wire.refuse(Refusal::NotAuthorized)).await?;
        return Err(SessionError::Revoked);
    };
    // Counted until the session is closed (or its task ends some other way).
    let connected = Connected::new(&listener.connections);

    // The client id is only informative: endpoint state is keyed by session, never by client id
    // (the official Kaa client sends empty or shared ids).
    let assigned = connect
        .client_id
        .is_empty()
        .then(|| format!("kaa-{}", uuid::Uuid::new_v4().simple()).into());
    let keepalive_secs = keepalive_secs(connect.keep_alive, limits.max_keepalive_secs);
    // MQTT 5 clients must use the server's keepalive when told one [MQTT-3.2.2-21]; 3.1.1
    // clients cannot be told, so a shorter one is just enforced.
    let server_keepalive = (keepalive_secs != connect.keep_alive).then_some(keepalive_secs);
    let mut session = Session {
        id: handle.id,
        wire,
        gateway: gateway.clone(),
        conn,
        outbound: handle.outbound.into_stream(),
        next_packet_id: 0,
        awaiting_release: HashSet::new(),
        keepalive: Duration::from_millis(u64::from(keepalive_secs) * 1500),
        _open: (slot, connected),
    };
    let ends = Ends {
        ended: handle.ended,
        drain: listener.shutdown.clone(),
        stop_now: listener.stop_now.clone(),
    };
    let connack = wire.connack(assigned, max_packet, server_keepalive);
    if let Err(e) = session.conn.send(connack).await {
        gateway.close_session(session.id).await;
        return Err(e.into());
    }
    Ok(Opened { session, ends })
}

/// A session whose CONNECT was accepted: all it keeps while it runs.
pub(crate) struct Opened<S> {
    session: Session<S>,
    ends: Ends,
}

impl<S> Opened<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// Serves the client until it or the server ends the session.
    pub(crate) async fn run(self) -> Result<(), SessionError> {
        let Opened { mut session, ends } = self;
        let result = session.run(ends).await;
        Box::pin(session.gateway.close_session(session.id)).await;
        result
    }
}

/// Awaits `f` unless the connect deadline passes (counted) or the replica shuts down first.
async fn until<F: Future>(deadline: Instant, listener: &Listener, f: F) -> Result<F::Output, SessionError> {
    tokio::select! {
        _ = listener.shutdown.cancelled() => Err(SessionError::Shutdown),
        r = timeout_at(deadline, f) => r.map_err(|_| {
            listener.gateway.count_refusal(Limit::ConnectTimeout);
            SessionError::ConnectTimeout
        }),
    }
}

/// The error of an undecodable packet; one over `maxPacketBytes` is counted.
fn decode_failed(gateway: &Gateway, e: DecodeError) -> SessionError {
    if let DecodeError::MaxSizeExceeded { .. } = e {
        gateway.count_refusal(Limit::Packet);
    }
    e.into()
}

/// The keepalive a session gets: what the client asked for, unless it asked for none (0) or for
/// more than `max`; then `max`, so that no silent connection is kept for ever.
fn keepalive_secs(asked: u16, max: u16) -> u16 {
    if asked == 0 { max } else { asked.min(max) }
}

struct Session<S> {
    id: SessionId,
    wire: Wire,
    gateway: Arc<Gateway>,
    conn: Framed<S, MqttCodec>,
    outbound: RecvStream<'static, Outbound>,
    next_packet_id: u16,
    /// QoS 2 publishes received but not yet released: a resend must not be forwarded twice.
    awaiting_release: HashSet<NonZeroU16>,
    /// How long the client may stay silent.
    keepalive: Duration,
    /// Released when the session ends: its place under `maxConnections` and in the gauge.
    _open: (Slot, Connected),
}

/// What ends a session from the server's side. Few on purpose: an idle session waits on each.
struct Ends {
    /// Its credential or only endpoint token was revoked, or it was taken over (the gateway
    /// tells which).
    ended: CancellationToken,
    /// The replica drains: end once nothing is in flight.
    drain: CancellationToken,
    /// The drain is over: end now (looked at while draining).
    stop_now: CancellationToken,
}

/// Packets handled after a read before the session flushes its answers and looks at its other
/// duties again.
const READ_BATCH: usize = 64;

/// How often a draining session checks whether its requests were answered.
const DRAIN_POLL: Duration = Duration::from_millis(20);

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// The session's loop. Its state is what an idle session costs, so the work of each wake-up
    /// is awaited boxed: it needs memory only while it runs.
    async fn run(&mut self, ends: Ends) -> Result<(), SessionError> {
        let mut deadline = Instant::now() + self.keepalive;
        let mut draining = false;
        loop {
            // One timer: the keepalive, and while draining also the next look at the drain.
            let wake = match draining {
                true => deadline.min(Instant::now() + DRAIN_POLL),
                false => deadline,
            };
            tokio::select! {
                packet = self.conn.next() => {
                    deadline = Instant::now() + self.keepalive;
                    if !Box::pin(self.on_readable(packet)).await? {
                        return Ok(());
                    }
                }
                Some(out) = self.outbound.next() => Box::pin(self.deliver(out)).await?,
                _ = ends.ended.cancelled() => {
                    let (reason, error) = match self.gateway.why_ended(self.id) {
                        Some(End::TakenOver) => (DisconnectReasonCode::SessionTakenOver, SessionError::TakenOver),
                        _ => (DisconnectReasonCode::NotAuthorized, SessionError::Revoked),
                    };
                    Box::pin(self.goodbye(reason)).await;
                    return Err(error);
                }
                _ = ends.drain.cancelled(), if !draining => draining = true,
                _ = sleep_until(wake) => {
                    if draining && (ends.stop_now.is_cancelled() || !self.gateway.has_pending(self.id)) {
                        Box::pin(self.flush_outbound()).await?;
                        Box::pin(self.goodbye(DisconnectReasonCode::ServerShuttingDown)).await;
                        return Ok(());
                    }
                    if Instant::now() >= deadline {
                        self.gateway.count_refusal(Limit::Keepalive);
                        Box::pin(self.goodbye(DisconnectReasonCode::KeepAliveTimeout)).await;
                        return Err(SessionError::KeepaliveExpired);
                    }
                }
            }
        }
    }

    /// Handles `first` and the packets already received after it (up to a batch), then flushes
    /// the acknowledgements and answers once: fed, not written one syscall each. `false` means
    /// the client said goodbye.
    async fn on_readable(
        &mut self,
        first: Option<Result<(MqttPacket, u32), DecodeError>>,
    ) -> Result<bool, SessionError> {
        if !self.on_read(first).await? {
            return Ok(false);
        }
        for _ in 0..READ_BATCH {
            let Some(packet) = self.conn.next().now_or_never() else {
                break;
            };
            if !self.on_read(packet).await? {
                return Ok(false);
            }
        }
        self.flush_outbound().await?;
        Ok(true)
    }

    /// Writes `out` and whatever else is queued, with one flush.
    async fn deliver(&mut self, out: Outbound) -> Result<(), SessionError> {
        self.write(out).await?;
        self.flush_outbound().await
    }

    /// Writes every answer already queued (a draining session's last ones).
    async fn flush_outbound(&mut self) -> Result<(), SessionError> {
        while let Some(Some(out)) = self.outbound.next().now_or_never() {
            self.write(out).await?;
        }
        self.conn.flush().await?;
        Ok(())
    }

    /// Handles what one read of the connection gave; `false` means the client said goodbye
    /// (what was fed for it is flushed then).
    async fn on_read(
        &mut self,
        packet: Option<Result<(MqttPacket, u32), DecodeError>>,
    ) -> Result<bool, SessionError> {
        let packet = match packet {
            None => return Err(SessionError::Closed),
            Some(Err(e)) => {
                if let DecodeError::MaxSizeExceeded { .. } = e {
                    self.goodbye(DisconnectReasonCode::PacketTooLarge).await;
                }
                return Err(decode_failed(&self.gateway, e));
            }
            Some(Ok((packet, _))) => packet,
        };
        if self.on_packet(Wire::incoming(packet)).await? {
            return Ok(true);
        }
        self.conn.flush().await?;
        Ok(false)
    }

    /// Handles one client packet, feeding (not flushing) what it answers; `false` means the
    /// client said goodbye.
    async fn on_packet(&mut self, packet: Incoming) -> Result<bool, SessionError> {
        let wire = self.wire;
        match packet {
            Incoming::Publish(p) => {
                let fresh = match (p.qos, p.packet_id) {
                    (QoS::ExactlyOnce, Some(pid)) => self.awaiting_release.insert(pid),
                    _ => true,
                };
                if fresh {
                    // Boxed: the request path (token validation, the bus) is deep; see `serve`.
                    Box::pin(self.gateway.handle_publish(self.id, &p.topic, p.payload, p.qos)).await;
                }
                match (p.qos, p.packet_id) {
                    (QoS::AtLeastOnce, Some(pid)) => self.conn.feed(wire.puback(pid)).await?,
                    (QoS::ExactlyOnce, Some(pid)) => self.conn.feed(wire.pubrec(pid)).await?,
                    _ => {}
                }
            }
            Incoming::PubRel(pid) => {
                self.awaiting_release.remove(&pid);
                self.conn.feed(wire.pubcomp(pid)).await?;
            }
            Incoming::PubRec(pid) => self.conn.feed(wire.pubrel(pid)).await?,
            Incoming::PubAck | Incoming::PubComp => {}
            Incoming::Subscribe { packet_id, qos } => self.conn.feed(wire.suback(packet_id, &qos)).await?,
            Incoming::Unsubscribe { packet_id, count } => {
                self.conn.feed(wire.unsuback(packet_id, count)).await?
            }
            Incoming::PingReq => self.conn.feed(wire.pingresp()).await?,
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
            // A client that stopped reading must not hold the session open.
            let _ = tokio::time::timeout(GOODBYE_TIMEOUT, self.conn.send(packet)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::keepalive_secs;

    #[test]
    fn keepalive_is_capped_and_none_means_the_cap() {
        assert_eq!(keepalive_secs(30, 3600), 30);
        assert_eq!(keepalive_secs(3600, 3600), 3600);
        assert_eq!(keepalive_secs(0, 3600), 3600, "no keepalive is not allowed");
        assert_eq!(keepalive_secs(u16::MAX, 3600), 3600);
    }
}
