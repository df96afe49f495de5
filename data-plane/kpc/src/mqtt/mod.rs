//! MQTT 3.1.1 and 5 over TCP and over TLS: accept loops and one task per connection.
//!
//! Not a broker: every PUBLISH goes to the [`Gateway`](crate::gateway::Gateway), and the only
//! messages a client receives are the answers and pushes the gateway addresses to its session.
//! The accept loop only accepts: the TLS handshake, CONNECT and client authentication all run in
//! the connection's own task under the connect deadline, so a stalled client delays no one else.

mod session;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use kaa_blueprint::config::ClientAuthMode;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gateway::Gateway;
use crate::tls::{TlsFiles, certificate_identity};

/// What every connection of one listener shares.
#[derive(Debug)]
pub(crate) struct Listener {
    /// For logs: `mqtt` or `mqtts`.
    pub name: &'static str,
    /// Its open sessions (`kaa_kpc_connections{transport=name}`).
    pub connections: Gauge,
    pub gateway: Arc<Gateway>,
    pub auth: ClientAuthMode,
    /// Present on the TLS listener.
    pub tls: Option<Arc<TlsFiles>>,
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
                let acceptor = listener.tls.as_ref().map(|tls| tls.acceptor());
                let listener = listener.clone();
                sessions.spawn(async move {
                    let served = match acceptor {
                        None => session::serve(stream, peer, None, deadline, &listener).await,
                        Some(acceptor) => {
                            let handshake = tokio::select! {
                                _ = listener.shutdown.cancelled() => return,
                                h = timeout_at(deadline, acceptor.accept(stream)) => h,
                            };
                            let tls = match handshake {
                                Ok(Ok(tls)) => tls,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                            let certificate = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|chain| chain.first())
                                .and_then(|leaf| certificate_identity(leaf));
                            session::serve(tls, peer, certificate, deadline, &listener).await
                        }
                    };
                    if let Err(e) = served {
                        tracing::debug!(%peer, listener = listener.name, error = %e, "MQTT connection ended");
                    }
                });
            }
            // Out of file descriptors or similar: keep serving the clients we have.
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
