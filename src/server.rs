//! The health and metrics server: `/healthz`, `/readyz`, `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::health::Health;
use crate::metrics::Metrics;

/// What the endpoints report.
#[derive(Clone)]
pub struct ServerState {
    /// Metrics to encode.
    pub metrics: Arc<Metrics>,
    /// Readiness and liveness.
    pub health: Arc<Health>,
}

/// The router (exposed for tests).
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<ServerState>) -> impl IntoResponse {
    match state.health.ready() {
        Ok(()) => (StatusCode::OK, "ok".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn healthz(State(state): State<ServerState>) -> impl IntoResponse {
    match state.health.healthy() {
        Ok(()) => (StatusCode::OK, "ok".to_string()),
        Err(why) => (StatusCode::INTERNAL_SERVER_ERROR, why),
    }
}

async fn metrics(State(state): State<ServerState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

/// Binds `addr` and serves until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    state: ServerState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(address = %listener.local_addr()?, "health and metrics server listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
