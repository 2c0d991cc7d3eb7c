//! The request log: every API request a simulator answered (control endpoints excluded), so tests can
//! assert what the bridge did, e.g. "zero write calls" or "one login".
//!
//! It also counts the API requests in flight (arrived, not yet answered; a request's injected
//! latency counts, since the fault layer runs inside this one) and the peak of that count since
//! the log was last cleared, so that a client's concurrency limit can be measured where it
//! matters, at the upstream. `GET /_sim/requests` keeps answering the log as a JSON array and
//! carries both figures in the headers [`IN_FLIGHT_HEADER`] and [`PEAK_IN_FLIGHT_HEADER`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};

/// Header of `GET /_sim/requests`: API requests in flight at the moment of the answer.
pub(crate) const IN_FLIGHT_HEADER: HeaderName = HeaderName::from_static("x-sim-in-flight");
/// Header of `GET /_sim/requests`: the most API requests in flight at once since the log was
/// last cleared (`DELETE /_sim/requests`) or the simulator started.
pub(crate) const PEAK_IN_FLIGHT_HEADER: HeaderName =
    HeaderName::from_static("x-sim-peak-in-flight");

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

/// Shared, append-only (until cleared) log, with the in-flight count and its peak.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestLog(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    records: Mutex<Vec<RequestRecord>>,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
}

impl RequestLog {
    pub(crate) fn snapshot(&self) -> Vec<RequestRecord> {
        self.0.records.lock().expect("request log poisoned").clone()
    }

    /// Empties the log and restarts the peak from the requests in flight now.
    pub(crate) fn clear(&self) {
        self.0.records.lock().expect("request log poisoned").clear();
        let now = self.0.in_flight.load(Ordering::SeqCst);
        self.0.peak_in_flight.store(now, Ordering::SeqCst);
    }

    /// (requests in flight now, the peak since the last clear).
    pub(crate) fn in_flight(&self) -> (usize, usize) {
        (
            self.0.in_flight.load(Ordering::SeqCst),
            self.0.peak_in_flight.load(Ordering::SeqCst),
        )
    }

    /// The headers `GET /_sim/requests` carries besides the log: see [`IN_FLIGHT_HEADER`] and
    /// [`PEAK_IN_FLIGHT_HEADER`].
    pub(crate) fn in_flight_headers(&self) -> [(HeaderName, HeaderValue); 2] {
        let (now, peak) = self.in_flight();
        [
            (IN_FLIGHT_HEADER, HeaderValue::from(now)),
            (PEAK_IN_FLIGHT_HEADER, HeaderValue::from(peak)),
        ]
    }

    fn push(&self, record: RequestRecord) {
        self.0
            .records
            .lock()
            .expect("request log poisoned")
            .push(record);
    }

    /// Counts one request in flight until the guard is dropped (also when the connection is
    /// dropped before the answer, so the count cannot leak).
    fn enter(&self) -> InFlightGuard {
        let now = self.0.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.0.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }
}

/// One request in flight; leaving it decrements the count.
struct InFlightGuard(RequestLog);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Middleware recording method, path, query and final status of every non-control request, and
/// counting it in flight until its response is ready (the outermost layer, so injected latency
/// and every other layer count).
pub(crate) async fn record(State(log): State<RequestLog>, req: Request, next: Next) -> Response {
    if crate::sim::faults::is_control_path(req.uri().path()) {
        return next.run(req).await;
    }
    let in_flight = log.enter();
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
    drop(in_flight);
    response
}
