//! The contract between the worker and a business flow, and the routing of events to flows.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::store::{RESYNC_KIND, Routing, StoredEvent};

/// One business flow: decides cheaply which events it wants, then reconciles one business
/// object at a time from the source's current state.
#[async_trait]
pub trait Flow: Send + Sync {
    /// Stable name, stored with each job (`launch`, `change`, …).
    fn name(&self) -> &str;

    /// Cheap routing rule on the stored event (source, module, kind). Conditions on the
    /// object's current state belong in [`Flow::reconcile`], which may answer
    /// [`FlowOutcome::Skipped`].
    fn wants(&self, event: &StoredEvent) -> bool;

    /// Brings the target in line with the current state of `object_key`. `events` are all the
    /// pending events merged into this run (at least one), oldest first; they share the outcome.
    async fn reconcile(&self, object_key: &str, events: &[StoredEvent]) -> FlowOutcome;
}

/// What a reconcile achieved.
#[derive(Debug, Clone, PartialEq)]
pub enum FlowOutcome {
    /// Done; `summary` says what changed (recorded with the attempt).
    Success { summary: serde_json::Value },
    /// The object does not qualify (e.g. not launch-ready): the jobs are `ignored` with this
    /// reason.
    Skipped { reason: String },
    /// Worth trying again later (transport, 5xx, 429, lease lost).
    Retryable {
        error: String,
        retry_after: Option<Duration>,
    },
    /// An upstream the flow needs is known to be down (its circuit is open): the jobs wait
    /// until it lets a probe through again, without spending an attempt of the schedule.
    Parked {
        reason: String,
        resume_after: Duration,
    },
    /// Trying again cannot help (validation, most 4xx, mapping error): dead at once.
    Permanent { error: String },
}

/// An error that knows whether a retry can help; the upstream clients' errors implement it.
pub trait Classify: std::fmt::Display {
    fn is_retryable(&self) -> bool;

    /// The upstream's `Retry-After`, if it sent one.
    fn retry_after(&self) -> Option<Duration> {
        None
    }

    /// When the upstream's circuit is open: how long until it lets a probe through.
    fn circuit_open(&self) -> Option<Duration> {
        None
    }
}

impl FlowOutcome {
    /// The outcome of a flow that failed with `error`.
    pub fn from_error<E: Classify + ?Sized>(error: &E) -> Self {
        if let Some(resume_after) = error.circuit_open() {
            FlowOutcome::Parked {
                reason: error.to_string(),
                resume_after,
            }
        } else if error.is_retryable() {
            FlowOutcome::Retryable {
                error: error.to_string(),
                retry_after: error.retry_after(),
            }
        } else {
            FlowOutcome::Permanent {
                error: error.to_string(),
            }
        }
    }

    pub fn retryable(error: impl Into<String>) -> Self {
        FlowOutcome::Retryable {
            error: error.into(),
            retry_after: None,
        }
    }

    /// Label for metrics and the attempt record.
    pub fn label(&self) -> &'static str {
        use crate::store::outcome;
        match self {
            FlowOutcome::Success { .. } => outcome::SUCCESS,
            FlowOutcome::Skipped { .. } => outcome::SKIPPED,
            FlowOutcome::Retryable { .. } => outcome::RETRYABLE,
            FlowOutcome::Parked { .. } => outcome::PARKED,
            FlowOutcome::Permanent { .. } => outcome::PERMANENT,
        }
    }
}

/// Whether an HTTP status from an upstream is worth retrying: 401 (the ticket is refreshed on
/// the next try), 408, 425, 429 and 5xx are; every other 4xx is permanent.
pub fn status_is_retryable(status: u16) -> bool {
    matches!(status, 401 | 408 | 425 | 429) || (500..600).contains(&status)
}

/// Maps events to the flows that want them.
#[derive(Clone, Default)]
pub struct Router {
    flows: Vec<Arc<dyn Flow>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.flows.iter().map(|fl| fl.name()))
            .finish()
    }
}

impl Router {
    pub fn new(flows: Vec<Arc<dyn Flow>>) -> Self {
        Self { flows }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Flow>> {
        self.flows.iter().find(|f| f.name() == name)
    }

    pub fn names(&self) -> Vec<String> {
        self.flows.iter().map(|f| f.name().to_string()).collect()
    }

    /// The flows that get a job for `event`. A `resync` event naming a flow goes to that flow
    /// alone (if configured); every other event goes to each flow whose rule matches. Ingest
    /// asks this before the event is stored, the worker for events stored without it.
    pub fn flows_for(&self, event: &StoredEvent) -> Vec<String> {
        let named = (event.kind == RESYNC_KIND)
            .then(|| event.payload.get("flow").and_then(|f| f.as_str()))
            .flatten();
        match named {
            Some(name) => self
                .get(name)
                .map(|f| vec![f.name().to_string()])
                .unwrap_or_default(),
            None => self
                .flows
                .iter()
                .filter(|f| f.wants(event))
                .map(|f| f.name().to_string())
                .collect(),
        }
    }

    /// [`Router::flows_for`] with the event's exclusion key, for a stored event.
    pub fn route(&self, event: &StoredEvent) -> Routing {
        let flows = self.flows_for(event);
        Routing {
            event_id: event.id.clone(),
            object_key: event
                .object_key
                .clone()
                .unwrap_or_else(|| format!("event/{}", event.id)),
            flows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_as_the_issue_defines() {
        for retryable in [401, 408, 429, 500, 502, 503, 504] {
            assert!(status_is_retryable(retryable), "{retryable}");
        }
        for permanent in [400, 403, 404, 409, 410, 422] {
            assert!(!status_is_retryable(permanent), "{permanent}");
        }
    }

    struct Upstream(u16, Option<Duration>);
    impl std::fmt::Display for Upstream {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "upstream answered {}", self.0)
        }
    }
    impl Classify for Upstream {
        fn is_retryable(&self) -> bool {
            status_is_retryable(self.0)
        }
        fn retry_after(&self) -> Option<Duration> {
            self.1
        }
    }

    #[test]
    fn errors_map_to_outcomes_with_retry_after() {
        let after = Some(Duration::from_secs(90));
        assert_eq!(
            FlowOutcome::from_error(&Upstream(429, after)),
            FlowOutcome::Retryable {
                error: "upstream answered 429".into(),
                retry_after: after
            }
        );
        assert_eq!(
            FlowOutcome::from_error(&Upstream(422, None)),
            FlowOutcome::Permanent {
                error: "upstream answered 422".into()
            }
        );
    }
}
