//! 1/KP over HTTPS: the 1/KP routes of [`kp_http`](crate::kp_http) behind TLS, on a listener of
//! their own (the gateway's `https` settings).
//!
//! The accept loop only accepts: each TLS handshake runs in its own task under the gateway's
//! connect timeout (the handshake MQTT over TLS uses, certificate reload included), and finished
//! connections reach axum through a channel, so a stalled client never holds up another. A
//! verified client certificate travels with its connection ([`TlsClient`]) to the gateway's
//! client authentication.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use kaa_blueprint::config::HttpsSettings;
use kaa_kpc::gateway::Gateway;
use kaa_kpc::tls::TlsFiles;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::kp_http::TlsClient;

/// Handshaken connections waiting for axum; beyond this, finished handshakes wait their turn.
const READY_QUEUE: usize = 64;

/// Binds `settings.listen` and serves 1/KP over HTTPS until `shutdown`; the bound address and
/// the server's task.
pub async fn serve(
    settings: &HttpsSettings,
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let tls = TlsFiles::load(settings.tls.clone()).context("1/KP over HTTPS")?;
    let socket = TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("cannot listen for HTTPS on {}", settings.listen))?;
    let addr = socket.local_addr()?;
    let connect_timeout = Duration::from_millis(gateway.config().limits.connect_timeout_ms);
    let (ready, queue) = mpsc::channel(READY_QUEUE);
    tokio::spawn(accept(
        socket,
        Arc::new(tls),
        connect_timeout,
        ready,
        shutdown.clone(),
    ));
    let app =
        crate::kp_http::router(gateway, settings.auth).into_make_service_with_connect_info::<TlsClient>();
    let listener = TlsListener { queue, addr };
    tracing::info!(%addr, auth = ?settings.auth, client_certs = ?settings.tls.client_certs, "1/KP over HTTPS listening");
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTPS server failed");
        }
    });
    Ok((addr, task))
}

type Ready = (TlsStream<TcpStream>, TlsClient);

/// Accepts until shutdown; each handshake in its own task, bounded by `connect_timeout`.
async fn accept(
    socket: TcpListener,
    tls: Arc<TlsFiles>,
    connect_timeout: Duration,
    ready: mpsc::Sender<Ready>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = socket.accept() => accepted,
        };
        let (stream, addr) = match accepted {
            Ok(accepted) => accepted,
            // Out of file descriptors or similar: keep serving the clients we have.
            Err(e) => {
                tracing::warn!(error = %e, "HTTPS accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (tls, ready) = (tls.clone(), ready.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + connect_timeout;
            match tls.handshake(stream, deadline).await {
                Ok((stream, certificate)) => {
                    // Closed only when the server stopped: the connection is dropped.
                    let _ = ready.send((stream, TlsClient { addr, certificate })).await;
                }
                Err(e) => tracing::debug!(peer = %addr, error = %e, "no HTTPS connection"),
            }
        });
    }
}

/// The handshaken connections, as axum takes them.
struct TlsListener {
    queue: mpsc::Receiver<Ready>,
    addr: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = TlsClient;

    async fn accept(&mut self) -> Ready {
        match self.queue.recv().await {
            Some(ready) => ready,
            // The accept loop ended (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<TlsClient> {
        Ok(TlsClient {
            addr: self.addr,
            certificate: None,
        })
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for TlsClient {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}
