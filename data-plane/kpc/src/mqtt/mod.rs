//! MQTT 3.1.1 and 5 over TCP: an accept loop and one task per connection.
//!
//! Not a broker: every PUBLISH goes to the [`Gateway`](crate::gateway::Gateway), and the only
//! messages a client receives are the answers and pushes the gateway addresses to its session.

mod session;
mod wire;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gateway::Gateway;

/// Accepts connections until `shutdown`, each served in its own task tracked by `sessions`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let gateway = gateway.clone();
                let shutdown = shutdown.clone();
                sessions.spawn(async move {
                    if let Err(e) = session::serve(stream, gateway, shutdown).await {
                        tracing::debug!(%peer, error = %e, "MQTT connection ended");
                    }
                });
            }
            // Out of file descriptors or similar: keep serving the clients we have.
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
