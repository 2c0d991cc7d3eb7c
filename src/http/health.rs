//! Liveness, readiness and Prometheus metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::{AppState, Problem};

/// Liveness: the process answers. Cheap on purpose; it never touches the store.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the store answers and every migration of this build is applied.
pub async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, Problem> {
    match state.store.readiness().await {
        Ok(()) => Ok(Json(json!({
            "status": "ready",
            "store": state.store.backend(),
        }))),
        Err(error) => {
            tracing::warn!(%error, "not ready");
            Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not-ready",
                error.to_string(),
            ))
        }
    }
}

/// Prometheus text exposition format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
