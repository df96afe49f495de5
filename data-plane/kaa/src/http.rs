//! The HTTP listener: `/health` plus the REST routers of the services running in this process.

use std::net::SocketAddr;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use kaa_bus::Bus;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// `GET /health`: 200 when the process can do its work, else 500 with the problems found.
pub fn health(bus: Bus) -> Router {
    Router::new().route(
        "/health",
        get(move || {
            let bus = bus.clone();
            async move {
                let mut problems = Vec::new();
                if !bus.is_connected() {
                    problems.push("the message bus (NATS) is disconnected");
                }
                if problems.is_empty() {
                    (StatusCode::OK, axum::Json(json!({ "status": "ok" }))).into_response()
                } else {
                    let body = json!({ "status": "failing", "problems": problems });
                    (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
                }
            }
        }),
    )
}

/// Binds `addr` and serves `app` until `shutdown` is cancelled.
pub async fn serve(
    addr: &str,
    app: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for HTTP on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    Ok((local, task))
}
