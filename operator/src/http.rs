//! The operator's own HTTP endpoints: `/health` for its probes, `/metrics` for Prometheus.

use axum::{Router, extract::State, http::header::CONTENT_TYPE, response::IntoResponse, routing::get};

use crate::metrics::{CONTENT_TYPE as METRICS_TYPE, Metrics};

pub fn app(metrics: Metrics) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(encode))
        .with_state(metrics)
}

async fn encode(State(metrics): State<Metrics>) -> impl IntoResponse {
    ([(CONTENT_TYPE, METRICS_TYPE)], metrics.encode())
}
