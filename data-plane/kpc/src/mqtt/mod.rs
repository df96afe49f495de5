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
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kaa_blueprint::config::ClientAuthMode;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::session::SessionError;
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

/// One connection: everything up to a running session, then the session.
async fn connection(stream: TcpStream, peer: SocketAddr, deadline: Instant, listener: &Listener) {
    // Boxed, and gone once the session runs: the handshakes need far more memory than an idle
    // session, and a task would keep its largest state for its whole life.
    let served = match Box::pin(open(stream, peer, deadline, listener)).await {
        Ok(session) => session.await,
        Err(e) => Err(e),
    };
    if let Err(e) = served {
        tracing::debug!(%peer, listener = listener.name, error = %e, "MQTT connection ended");
    }
}

/// A session ready to run (its CONNECT accepted), whatever the stream under it.
type Running<'a> = Pin<Box<dyn Future<Output = Result<(), SessionError>> + Send + 'a>>;

/// The TLS handshake (TLS listeners), then the rest of [`over`].
async fn open<'a>(
    stream: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
    listener: &'a Listener,
) -> Result<Running<'a>, SessionError> {
    let Some(tls) = &listener.tls else {
        return over(stream, peer, None, deadline, listener).await;
    };
    let (tls, certificate) = until_shutdown(listener, tls.handshake(stream, deadline))
        .await
        .ok_or(SessionError::Shutdown)?
        .inspect_err(|e| {
            if matches!(e, HandshakeError::TimedOut) {
                listener.gateway.count_refusal(Limit::ConnectTimeout);
            }
        })?;
    over(tls, peer, certificate, deadline, listener).await
}

/// The WebSocket upgrade (WebSocket listeners), then CONNECT and client authentication.
async fn over<'a, S>(
    stream: S,
    peer: SocketAddr,
    certificate: Option<CertificateIdentity>,
    deadline: Instant,
    listener: &'a Listener,
) -> Result<Running<'a>, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'a,
{
    let Some(path) = &listener.websocket else {
        return start(stream, peer, certificate, deadline, listener).await;
    };
    let max_packet = listener.gateway.config().limits.max_packet_bytes;
    let upgrade = timeout_at(deadline, ws::accept(stream, path, max_packet));
    let upgraded = match until_shutdown(listener, upgrade).await {
        None => return Err(SessionError::Shutdown),
        Some(Ok(Ok(ws))) => ws,
        Some(Ok(Err(e))) => return Err(SessionError::WebSocket(e.to_string())),
        Some(Err(_)) => {
            listener.gateway.count_refusal(Limit::ConnectTimeout);
            return Err(SessionError::ConnectTimeout);
        }
    };
    start(upgraded, peer, certificate, deadline, listener).await
}

/// CONNECT and client authentication over `stream`; the session to run, boxed.
async fn start<'a, S>(
    stream: S,
    peer: SocketAddr,
    certificate: Option<CertificateIdentity>,
    deadline: Instant,
    listener: &'a Listener,
) -> Result<Running<'a>, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'a,
{
    let opened = session::open(stream, peer, certificate, deadline, listener).await?;
    Ok(Box::pin(opened.run()))
}

/// `step` (a handshake before the session), or `None` at shutdown. Sessions see shutdown
/// themselves, to say goodbye.
async fn until_shutdown<T>(listener: &Listener, step: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        _ = listener.shutdown.cancelled() => None,
        done = step => Some(done),
    }
}
