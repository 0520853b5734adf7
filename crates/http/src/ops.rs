//! Liveness and readiness (both listeners), metrics and the cluster view
//! (the internal listener only).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;

/// `/healthz` and `/readyz`: what a load balancer or kubelet probes.
pub fn probes() -> Router<AppState> {
    Router::new().route("/healthz", get(|| async { "ok" })).route("/readyz", get(ready))
}

/// `/metrics`, `/api/cluster` and `/api/admin/compact`: internals, for
/// operators.
pub fn internals() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/api/cluster", get(cluster))
        .route("/api/admin/compact", axum::routing::post(compact))
}

/// `POST /api/admin/compact`: compacts this node's store now; answers when
/// done with what it did.
async fn compact(State(s): State<AppState>) -> Result<Response, crate::error::ApiError> {
    let done = s.store.compact().await.map_err(cart_grain::GrainError::from)?;
    Ok(axum::Json(serde_json::json!({
        "bytesBefore": done.bytes_before,
        "bytesAfter": done.bytes_after,
        "carts": done.carts,
    }))
    .into_response())
}

async fn ready(State(s): State<AppState>) -> impl IntoResponse {
    if (s.ready)() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], (s.metrics)())
}

/// `GET /api/cluster`: this node's view of the cluster.
async fn cluster(State(s): State<AppState>) -> Response {
    match &s.cluster {
        Some(status) => axum::Json(status()).into_response(),
        None => (StatusCode::NOT_FOUND, "not clustered").into_response(),
    }
}
