//! Liveness, readiness and Prometheus metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::{AppState, Problem};
use crate::store::StoreError;

/// Liveness: the process answers. Cheap on purpose; it never touches the store.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the process is not shutting down, the store answers, every migration of this build is applied, and the worker of
/// this process (if any) is alive.
pub async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, Problem> {
    if state.shutting_down.is_cancelled() {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "shutting down: requests are still served until the drain window ends",
        ));
    }
    if let Some(worker) = &state.worker
        && !worker.is_alive(crate::store::now_millis())
    {
        tracing::warn!("not ready: the worker's claim loop has stalled");
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "the worker's claim loop has not gone round for over a minute",
        ));
    }
    match state.store.readiness().await {
        Ok(()) => Ok(Json(json!({
            "status": "ready",
            "store": state.store.backend(),
        }))),
        Err(error) => {
            tracing::warn!(%error, "not ready");
            let (slug, detail) = match error {
                // The disk guard refuses events until retention (or an operator) makes room.
                StoreError::Full(reason) => ("store-full", format!("the store is full: {reason}")),
                StoreError::NotReady(reason) => ("not-ready", reason),
                // The database's own message stays in the log.
                _ => ("not-ready", "the store does not answer".to_string()),
            };
            Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, slug, detail))
        }
    }
}

/// Prometheus text exposition format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::metrics::render(&state.metrics),
    )
}
