//! RFC 9457 problem details: every error response is `application/problem+json` and carries the
//! request id.
//!
//! Handlers return [`Problem`]; the [`problem_middleware`] renders it with the request id, and turns
//! any other error response (404 fallback, 405, 408 timeout, 413 from the body limit, extractor
//! rejections) into a problem too, so clients see one error format.

use axum::Json;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub const PROBLEM_JSON: &str = "application/problem+json";
/// Base of the `type` URIs; the slug after it is stable and documented in `openapi.yaml`.
const TYPE_BASE: &str = "https://xecm-bridge.dev/problems/";

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Sent as `Retry-After` (seconds).
    #[serde(skip)]
    pub retry_after: Option<u16>,
}

impl Problem {
    /// `slug` names the problem type (e.g. `invalid-signature`); `detail` explains this occurrence.
    pub fn new(status: StatusCode, slug: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("{TYPE_BASE}{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            request_id: None,
            retry_after: None,
        }
    }

    /// Tells the client when to try again (`Retry-After`).
    pub fn with_retry_after(mut self, secs: u16) -> Self {
        self.retry_after = Some(secs);
        self
    }

    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn render(mut self, request_id: Option<String>) -> Response {
        self.request_id = request_id;
        let status = self.status_code();
        let retry_after = self.retry_after;
        let mut response = (status, Json(self)).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }

    /// The generic problem for an error response that a layer or the framework produced.
    fn for_status(status: StatusCode) -> Self {
        let (slug, detail) = match status {
            StatusCode::NOT_FOUND => ("not-found", "no such route"),
            StatusCode::METHOD_NOT_ALLOWED => (
                "method-not-allowed",
                "this method is not allowed on this route",
            ),
            StatusCode::REQUEST_TIMEOUT => {
                ("request-timeout", "the request took longer than allowed")
            }
            StatusCode::PAYLOAD_TOO_LARGE => (
                "body-too-large",
                "the request body exceeds server.max_body_bytes",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupported-media-type",
                "the request content type is not supported",
            ),
            StatusCode::BAD_REQUEST => ("bad-request", "the request could not be read"),
            StatusCode::UNAUTHORIZED => ("unauthorized", "authentication is required"),
            s if s.is_server_error() => ("internal", "the server could not handle the request"),
            _ => ("error", "the request failed"),
        };
        Problem::new(status, slug, detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        // Rendered by the middleware, which knows the request id.
        let mut response = Response::new(Body::empty());
        *response.status_mut() = self.status_code();
        response.extensions_mut().insert(self);
        response
    }
}

/// Renders [`Problem`]s with the request id and converts other error responses into problems.
pub async fn problem_middleware(request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(super::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut response = next.run(request).await;
    let problem = match response.extensions_mut().remove::<Problem>() {
        Some(problem) => problem,
        None => {
            let status = response.status();
            // The console's error pages are HTML for a person; they stay as they are.
            let is_page = response
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
            let is_problem = response
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
            if !(status.is_client_error() || status.is_server_error()) || is_problem || is_page {
                return response;
            }
            Problem::for_status(status)
        }
    };
    let mut rendered = problem.render(request_id);
    // Keep headers such as `Allow`, `WWW-Authenticate` or `Retry-After` of the original response.
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rendered.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rendered
}
