//! `POST /webhooks/{allportal,opentext}`: verify, parse, store durably, then answer 202.

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, OriginalUri, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{AppState, Problem};
use crate::ingest::{self, IngestError};
use crate::store::{Source, StoreError};

/// When a sender refused for a full store should try again.
const STORE_FULL_RETRY_AFTER_SECS: u16 = 60;

pub async fn allportal(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, Problem> {
    receive(state, Source::Allportal, request).await
}

pub async fn opentext(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, Problem> {
    receive(state, Source::Opentext, request).await
}

/// Counts a webhook refused by the declared-length check before it reached [`receive`].
pub(super) fn count_declared_oversize(path: &str) {
    if let Some(source) = path.strip_prefix("/webhooks/").and_then(Source::parse) {
        metrics::counter!(
            "xecm_webhooks_rejected_total",
            "source" => source.as_str(),
            "reason" => "body_too_large"
        )
        .increment(1);
    }
}

/// Unknown routes; under `/webhooks/` the message names the known sources.
pub async fn fallback(OriginalUri(uri): OriginalUri) -> Problem {
    let path = uri.path();
    let detail = match path.strip_prefix("/webhooks/") {
        Some(name) => format!(
            "unknown webhook source `{name}`; known sources: {}",
            Source::ALL.map(Source::as_str).join(", ")
        ),
        None => format!("no route for `{path}`"),
    };
    Problem::new(StatusCode::NOT_FOUND, "not-found", detail)
}

async fn receive(state: AppState, source: Source, request: Request) -> Result<Response, Problem> {
    let started = Instant::now();
    // The headers are taken rather than copied (axum's `HeaderMap` extractor clones them); the
    // body is read under the routes' `DefaultBodyLimit`, which travels in the extensions.
    let (mut parts, body) = request.into_parts();
    let headers = std::mem::take(&mut parts.headers);
    let body = Bytes::from_request(Request::from_parts(parts, body), &()).await;
    let result = check_and_ingest(&state, source, &headers, body).await;
    metrics::histogram!("xecm_ingest_duration_seconds", "source" => source.as_str())
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(receipt) => {
            metrics::counter!("xecm_webhooks_received_total", "source" => source.as_str())
                .increment(1);
            metrics::counter!("xecm_events_stored_total", "source" => source.as_str())
                .increment(receipt.accepted.len() as u64);
            metrics::counter!("xecm_webhooks_duplicate_total", "source" => source.as_str())
                .increment(receipt.duplicates.len() as u64);
            // At `debug`: at `info` the access line and one `event stored` line per event say
            // it already, and a third line per webhook is log volume and CPU for nothing.
            tracing::debug!(
                %source,
                accepted = receipt.accepted.len(),
                duplicates = receipt.duplicates.len(),
                "webhook accepted"
            );
            Ok((StatusCode::ACCEPTED, Json(receipt)).into_response())
        }
        Err((reason, problem)) => {
            metrics::counter!(
                "xecm_webhooks_rejected_total",
                "source" => source.as_str(),
                "reason" => reason
            )
            .increment(1);
            if problem.status >= 500 {
                tracing::error!(%source, reason, detail = %problem.detail, "webhook not stored");
            } else {
                tracing::warn!(%source, reason, detail = %problem.detail, "webhook rejected");
            }
            Err(problem)
        }
    }
}

type Rejection = (&'static str, Problem);

async fn check_and_ingest(
    state: &AppState,
    source: Source,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<ingest::Receipt, Rejection> {
    check_content_type(headers)?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            let limit = state.server.max_body_bytes;
            let detail = format!("the body exceeds server.max_body_bytes ({limit} bytes)");
            let problem = Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "body-too-large", detail);
            ("body_too_large", problem)
        } else {
            let detail = format!("the body could not be read: {rejection}");
            let problem = Problem::new(StatusCode::BAD_REQUEST, "unreadable-body", detail);
            ("unreadable_body", problem)
        }
    })?;
    ingest::ingest(
        state.store.as_ref(),
        &state.verifiers,
        &state.router,
        source,
        headers,
        body,
    )
    .await
    .map_err(to_problem)
}

/// JSON only: `application/json`, or any `+json` type such as CloudEvents'.
fn check_content_type(headers: &HeaderMap) -> Result<(), Rejection> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        return Ok(());
    }
    let shown = if content_type.is_empty() {
        "none"
    } else {
        content_type
    };
    let detail = format!("content type must be application/json (got {shown})");
    let problem = Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        detail,
    );
    Err(("unsupported_media_type", problem))
}

fn to_problem(error: IngestError) -> Rejection {
    match error {
        IngestError::Verify(e) => {
            let problem =
                Problem::new(StatusCode::UNAUTHORIZED, "invalid-signature", e.to_string());
            (e.reason(), problem)
        }
        IngestError::Payload(e) => {
            let problem = Problem::new(StatusCode::BAD_REQUEST, "invalid-payload", e.to_string());
            ("invalid_payload", problem)
        }
        // 503 so that the sender retries later; the event was not stored.
        IngestError::Store(StoreError::Full(reason)) => {
            let detail = format!("the store is full ({reason}); retry later");
            let problem = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "store-full", detail)
                .with_retry_after(STORE_FULL_RETRY_AFTER_SECS);
            ("store_full", problem)
        }
        // The database's own message stays in the log: it may show data or internals.
        IngestError::Store(e) => {
            tracing::error!(error = %e, "the event could not be stored");
            let detail = "the event could not be stored; retry later";
            let problem =
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable", detail);
            ("store_unavailable", problem)
        }
    }
}
