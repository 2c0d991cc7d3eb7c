//! The request log: every API request a simulator answered (control endpoints excluded), so tests can
//! assert what the bridge did, e.g. "zero write calls" or "one login".

use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};

/// One answered API request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    pub status: u16,
    /// When the request arrived, unix milliseconds (rates are measured from these).
    #[serde(default)]
    pub at_ms: i64,
}

impl RequestRecord {
    /// Whether the request could change state (anything but GET/HEAD/OPTIONS).
    pub fn is_write(&self) -> bool {
        !matches!(self.method.as_str(), "GET" | "HEAD" | "OPTIONS")
    }
}

/// Shared, append-only (until cleared) log.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestLog(Arc<Mutex<Vec<RequestRecord>>>);

impl RequestLog {
    pub(crate) fn snapshot(&self) -> Vec<RequestRecord> {
        self.0.lock().expect("request log poisoned").clone()
    }

    pub(crate) fn clear(&self) {
        self.0.lock().expect("request log poisoned").clear();
    }

    fn push(&self, record: RequestRecord) {
        self.0.lock().expect("request log poisoned").push(record);
    }
}

/// Middleware recording method, path, query and final status of every non-control request.
pub(crate) async fn record(State(log): State<RequestLog>, req: Request, next: Next) -> Response {
    if crate::sim::faults::is_control_path(req.uri().path()) {
        return next.run(req).await;
    }
    let at_ms = chrono::Utc::now().timestamp_millis();
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let response = next.run(req).await;
    log.push(RequestRecord {
        method,
        path,
        query,
        status: response.status().as_u16(),
        at_ms,
    });
    response
}
