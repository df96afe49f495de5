//! MQTT 3.1.1 and 5 over TCP, TLS, WebSocket and WebSocket over TLS: accept loops and one task
//! per connection.
//!
//! Not a broker: every PUBLISH goes to the [`Gateway`](crate::gateway::Gateway), and the only
//! messages a client receives are the answers and pushes the gateway addresses to its session.
//! The accept loop only accepts: the TLS handshake, the WebSocket upgrade, CONNECT and client
//! authentication all run in the connection's own task under the connect deadline, so a stalled
//! client delays no one else.

mod session;
mod wire;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kaa_blueprint::config::ClientAuthMode;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::CertificateIdentity;
use crate::gateway::{Gateway, Limit};
use crate::tls::{HandshakeError, TlsFiles};

/// What every connection of one listener shares.
#[derive(Debug)]
pub(crate) struct Listener {
    /// For logs: `mqtt`, `mqtts`, `ws` or `wss`.
    pub name: &'static str,
    /// Its open sessions (`kaa_kpc_connections{transport=name}`).
    pub connections: Gauge,
    pub gateway: Arc<Gateway>,
    pub auth: ClientAuthMode,
    /// Present on the TLS listeners.
    pub tls: Option<Arc<TlsFiles>>,
    /// The upgrade path, on the WebSocket listeners.
    pub websocket: Option<String>,
    /// Cancelled when the replica drains: stop accepting; sessions end once nothing is in flight.
    pub shutdown: CancellationToken,
    /// Cancelled when the drain is over: sessions end now.
    pub stop_now: CancellationToken,
}

/// Accepts connections until shutdown, each served in its own task tracked by `sessions`.
pub(crate) async fn accept_loop(socket: TcpListener, listener: Arc<Listener>, sessions: TaskTracker) {
    let connect_timeout = Duration::from_millis(listener.gateway.config().limits.connect_timeout_ms);
    loop {
        let accepted = tokio::select! {
            _ = listener.shutdown.cancelled() => return,
            accepted = socket.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let deadline = Instant::now() + connect_timeout;
                let _ = stream.set_nodelay(true);
                let listener = listener.clone();
                sessions.spawn(async move { connection(stream, peer, deadline, &listener).await });
            }
            // Out of file descriptors or similar: keep serving the clients we have.
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One connection: the TLS handshake (TLS listeners), then the session.
async fn connection(stream: TcpStream, peer: SocketAddr, deadline: Instant, listener: &Listener) {
    let served = match &listener.tls {
        None => over(stream, peer, None, deadline, listener).await,
        // Boxed: only TLS connections need the handshake's (large) state, and only while it runs.
        Some(tls) => match until_shutdown(listener, Box::pin(tls.handshake(stream, deadline))).await {
            None => return,
            Some(Ok((tls, certificate))) => Box::pin(over(tls, peer, certificate, deadline, listener)).await,
            Some(Err(e)) => {
                if matches!(e, HandshakeError::TimedOut) {
                    listener.gateway.count_refusal(Limit::ConnectTimeout);
                }
                tracing::debug!(%peer, listener = listener.name, error = %e, "no TLS connection");
                return;
            }
        },
    };
    if let Err(e) = served {
        tracing::debug!(%peer, listener = listener.name, error = %e, "MQTT connection ended");
    }
}

/// The session over `stream`, through the WebSocket upgrade on WebSocket listeners.
async fn over<S>(
    stream: S,
    peer: SocketAddr,
    certificate: Option<CertificateIdentity>,
    deadline: Instant,
    listener: &Listener,
) -> Result<(), session::SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let Some(path) = &listener.websocket else {
        return session::serve(stream, peer, certificate, deadline, listener).await;
    };
    let max_packet = listener.gateway.config().limits.max_packet_bytes;
    let upgrade = timeout_at(deadline, Box::pin(ws::accept(stream, path, max_packet)));
    let upgraded = match until_shutdown(listener, upgrade).await {
        None => return Err(session::SessionError::Shutdown),
        Some(Ok(Ok(ws))) => ws,
        Some(Ok(Err(e))) => {
            tracing::debug!(%peer, listener = listener.name, error = %e, "WebSocket upgrade refused or failed");
            return Ok(());
        }
        Some(Err(_)) => {
            listener.gateway.count_refusal(Limit::ConnectTimeout);
            return Err(session::SessionError::ConnectTimeout);
        }
    };
    Box::pin(session::serve(upgraded, peer, certificate, deadline, listener)).await
}

/// `step` (a handshake before the session), or `None` at shutdown. Sessions see shutdown
/// themselves, to say goodbye.
async fn until_shutdown<T>(listener: &Listener, step: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        _ = listener.shutdown.cancelled() => None,
        done = step => Some(done),
    }
}
