//! Fault injection shared by both simulators: added latency, a random error rate, an outage window
//! answered with 503 + `Retry-After`. Applies to the real API paths only, never to `/_sim/`.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Fault settings; `PUT /_sim/faults` replaces them (fields left out take their default).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FaultSettings {
    /// Added to every API request before it is handled.
    pub latency_ms: u64,
    /// Fraction (0.0–1.0) of API requests answered with 503.
    pub error_rate: f64,
    /// Until this instant every API request is answered with 503.
    pub outage_until: Option<DateTime<Utc>>,
    /// Convenience on input: starts an outage of this many seconds from now.
    #[serde(skip_serializing)]
    pub outage_secs: Option<u64>,
    /// `Retry-After` (seconds) on injected 503s; without it an outage sends its remaining time.
    pub retry_after_secs: Option<u64>,
    /// OpenText: invalidate every ticket and token issued so far (acted on once, then reset).
    pub expire_tickets: bool,
    /// OpenText: the next N creates (workspace, folder, document) are carried out but answered
    /// with 500 "An item with the name '…' already exists." — what a client sees when it retries
    /// a create whose first response was lost. The bridge must resolve it by lookup.
    pub duplicate_creates: u32,
}

impl FaultSettings {
    /// Turns `outage_secs` into an absolute `outage_until`.
    pub(crate) fn normalized(mut self) -> Self {
        if let Some(secs) = self.outage_secs.take() {
            self.outage_until = Some(Utc::now() + chrono::Duration::seconds(secs as i64));
        }
        self.error_rate = self.error_rate.clamp(0.0, 1.0);
        self
    }
}

/// Shared fault state plus the body an injected 503 carries (each system has its own error shape).
#[derive(Clone)]
pub(crate) struct Faults {
    settings: Arc<RwLock<FaultSettings>>,
    unavailable_body: fn() -> serde_json::Value,
}

impl Faults {
    pub(crate) fn new(initial: FaultSettings, unavailable_body: fn() -> serde_json::Value) -> Self {
        Self {
            settings: Arc::new(RwLock::new(initial.normalized())),
            unavailable_body,
        }
    }

    pub(crate) fn get(&self) -> FaultSettings {
        self.settings.read().expect("faults poisoned").clone()
    }

    /// Uses up one injected duplicate-name answer, if any are left.
    pub(crate) fn take_duplicate_create(&self) -> bool {
        let mut settings = self.settings.write().expect("faults poisoned");
        if settings.duplicate_creates == 0 {
            return false;
        }
        settings.duplicate_creates -= 1;
        true
    }

    pub(crate) fn set(&self, settings: FaultSettings) {
        *self.settings.write().expect("faults poisoned") = settings.normalized();
    }

    /// Returns the 503 to send instead of handling the request, if a fault applies.
    fn injected(&self, settings: &FaultSettings) -> Option<Response> {
        let now = Utc::now();
        let outage_left = settings
            .outage_until
            .filter(|until| *until > now)
            .map(|until| (until - now).num_seconds().max(1) as u64);
        let random_error = settings.error_rate > 0.0 && rand::random::<f64>() < settings.error_rate;
        if outage_left.is_none() && !random_error {
            return None;
        }
        let retry_after = settings.retry_after_secs.or(outage_left);
        let mut response = (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json((self.unavailable_body)()),
        )
            .into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        Some(response)
    }
}

/// Whether a path is a simulator control path (never faulted, never logged).
pub(crate) fn is_control_path(path: &str) -> bool {
    path == "/_sim" || path.starts_with("/_sim/")
}

/// Middleware applying latency, outage and error rate to API requests.
pub(crate) async fn inject(State(faults): State<Faults>, req: Request, next: Next) -> Response {
    if is_control_path(req.uri().path()) {
        return next.run(req).await;
    }
    let settings = faults.get();
    if settings.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(settings.latency_ms)).await;
    }
    if let Some(response) = faults.injected(&settings) {
        return response;
    }
    next.run(req).await
}
