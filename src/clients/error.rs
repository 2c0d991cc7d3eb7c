//! The one error type of both upstream clients, typed so that flows and the worker decide on the
//! variant (conflict → look up, edit conflict → re-read, transient → retry later) and never on
//! message text.

use std::time::Duration;

use http::StatusCode;

/// Longest server message kept in an error; error bodies can be whole HTML pages.
const MAX_MESSAGE_CHARS: usize = 500;

/// What went wrong calling an upstream system. `Display` never contains credentials, tickets or
/// request bodies: messages come from the server's error field or from a fixed description.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The object already exists (OpenText answers 500 "An item with the name … already exists").
    /// Resolve by looking the object up, never by retrying.
    #[error("conflict: {message}")]
    Conflict { message: String },
    /// 409: the object changed since its metadata token was read; re-read and reapply.
    #[error("edit conflict: {message}")]
    EditConflict { message: String },
    /// 401 that a fresh login did not cure, or a failed login.
    #[error("unauthorized: {message}")]
    Unauthorized { message: String },
    /// 403: authenticated, but the account lacks the right.
    #[error("forbidden: {message}")]
    Forbidden { message: String },
    /// 404, or OpenText's 400 "does not exist or you do not have permission".
    #[error("not found: {message}")]
    NotFound { message: String },
    /// Any other 4xx, and 5xx answers that report a business error (not retryable).
    #[error("bad request ({status}): {message}")]
    BadRequest { status: u16, message: String },
    /// 429 after the retries were used up (or `Retry-After` asked for longer than we wait).
    #[error("rate limited{}", fmt_after(.retry_after))]
    RateLimited { retry_after: Option<Duration> },
    /// 5xx. 502/503/504 are transient; other 5xx are reported but not retried.
    #[error("upstream unavailable ({status}){}: {message}", fmt_after(.retry_after))]
    Unavailable {
        status: u16,
        retry_after: Option<Duration>,
        message: String,
    },
    /// The circuit breaker of this upstream is open; no request was sent.
    #[error("circuit open for {upstream}, retry in {}s", .retry_after.as_secs())]
    CircuitOpen {
        upstream: String,
        retry_after: Duration,
    },
    /// Connect error, timeout, or the connection broke mid-body.
    #[error("transport error ({kind}): {message}")]
    Transport {
        kind: TransportErrorKind,
        message: String,
    },
    /// The answer was not what the API documents (unparseable JSON, missing id, …).
    #[error("cannot decode upstream response: {message}")]
    Decode { message: String },
    /// A redirect pointed outside the configured origin, or a URL would have left it.
    #[error("refused to leave the configured origin (target origin {origin})")]
    OriginViolation { origin: String },
    /// The request could not be built (invalid header value, bad input).
    #[error("invalid request: {message}")]
    InvalidRequest { message: String },
}

/// Why a request failed below HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportErrorKind {
    /// The connection could not be established: nothing was sent.
    Connect,
    /// Connect, read or whole-request timeout.
    Timeout,
    /// Sending the body or reading the response body failed.
    Body,
    /// Anything else reqwest reports.
    Other,
}

impl std::fmt::Display for TransportErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Body => "body",
            Self::Other => "other",
        })
    }
}

fn fmt_after(after: &Option<Duration>) -> String {
    match after {
        Some(d) => format!(", retry after {}s", d.as_secs()),
        None => String::new(),
    }
}

impl UpstreamError {
    /// Whether trying the same call again later can succeed without changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::CircuitOpen { .. } | Self::Transport { .. } => true,
            Self::Unavailable { status, .. } => is_transient_status(*status),
            _ => false,
        }
    }

    /// How long the upstream asked us to wait, when it said so (or the circuit knows).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } | Self::Unavailable { retry_after, .. } => {
                *retry_after
            }
            Self::CircuitOpen { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    pub(crate) fn decode(message: impl std::fmt::Display) -> Self {
        Self::Decode {
            message: truncate(&message.to_string()),
        }
    }

    pub(crate) fn invalid(message: impl std::fmt::Display) -> Self {
        Self::InvalidRequest {
            message: message.to_string(),
        }
    }

    /// Maps a reqwest error without its URL (URLs may carry object ids the logs do not need,
    /// and a future change could put a token in one).
    pub(crate) fn from_reqwest(error: reqwest::Error) -> Self {
        if let Some(origin) = origin_violation_in(&error) {
            return Self::OriginViolation { origin };
        }
        let kind = if error.is_timeout() {
            TransportErrorKind::Timeout
        } else if error.is_connect() {
            TransportErrorKind::Connect
        } else if error.is_body() || error.is_request() {
            TransportErrorKind::Body
        } else if error.is_decode() {
            return Self::decode(error.without_url());
        } else {
            TransportErrorKind::Other
        };
        Self::Transport {
            kind,
            message: describe_chain(&error.without_url()),
        }
    }
}

/// Statuses worth retrying: the upstream is overloaded or a gateway in front of it failed.
pub(crate) fn is_transient_status(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// Marker error the redirect policy returns when a redirect leaves the configured origin.
#[derive(Debug)]
pub(crate) struct RedirectOutsideOrigin(pub String);

impl std::fmt::Display for RedirectOutsideOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "redirect to foreign origin {}", self.0)
    }
}

impl std::error::Error for RedirectOutsideOrigin {}

fn origin_violation_in(error: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(v) = e.downcast_ref::<RedirectOutsideOrigin>() {
            return Some(v.0.clone());
        }
        source = e.source();
    }
    None
}

fn describe_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    truncate(&text)
}

pub(crate) fn truncate(message: &str) -> String {
    let trimmed = message.trim();
    match trimmed.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &trimmed[..cut]),
        None => trimmed.to_string(),
    }
}

/// What a client knows about an error answer, before mapping it to a variant.
#[derive(Debug, Clone)]
pub(crate) struct ErrorAnswer {
    pub status: StatusCode,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl ErrorAnswer {
    /// The generic mapping by status; each client refines it for its upstream's conventions.
    pub(crate) fn into_error(self) -> UpstreamError {
        let message = self.message;
        match self.status.as_u16() {
            401 => UpstreamError::Unauthorized { message },
            403 => UpstreamError::Forbidden { message },
            404 => UpstreamError::NotFound { message },
            409 => UpstreamError::EditConflict { message },
            429 => UpstreamError::RateLimited {
                retry_after: self.retry_after,
            },
            status @ 500..=599 => UpstreamError::Unavailable {
                status,
                retry_after: self.retry_after,
                message,
            },
            status => UpstreamError::BadRequest { status, message },
        }
    }
}

/// Pulls the human message out of an error body: `{"error": …}` (OpenText), `errorDetail`,
/// `message` (4ALLPORTAL / Spring), else the start of the raw text.
pub(crate) fn error_message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        for key in ["error", "errorDetail", "message", "error_description"] {
            match value.get(key) {
                Some(serde_json::Value::String(s)) if !s.is_empty() => return truncate(s),
                Some(serde_json::Value::Object(o)) => {
                    if let Some(serde_json::Value::String(s)) = o.get("message") {
                        return truncate(s);
                    }
                }
                _ => {}
            }
        }
    }
    let text = String::from_utf8_lossy(body);
    if text.trim().is_empty() {
        status
            .canonical_reason()
            .unwrap_or("no message")
            .to_string()
    } else {
        truncate(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_only_for_transient_failures() {
        let unavailable = |status| UpstreamError::Unavailable {
            status,
            retry_after: None,
            message: String::new(),
        };
        assert!(unavailable(503).is_retryable());
        assert!(unavailable(504).is_retryable());
        assert!(!unavailable(500).is_retryable());
        assert!(
            !UpstreamError::Conflict {
                message: "x".into()
            }
            .is_retryable()
        );
        assert!(UpstreamError::RateLimited { retry_after: None }.is_retryable());
    }

    #[test]
    fn message_prefers_error_field_and_truncates() {
        let body = br#"{"error":"An item with the name 'a' already exists."}"#;
        assert_eq!(
            error_message(StatusCode::INTERNAL_SERVER_ERROR, body),
            "An item with the name 'a' already exists."
        );
        let long = "x".repeat(2000);
        assert!(
            error_message(StatusCode::BAD_REQUEST, long.as_bytes())
                .chars()
                .count()
                <= 501
        );
        assert_eq!(error_message(StatusCode::UNAUTHORIZED, b""), "Unauthorized");
    }
}
