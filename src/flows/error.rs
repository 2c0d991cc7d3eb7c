//! The errors of a reconcile and how they become worker outcomes.

use std::time::Duration;

use crate::clients::UpstreamError;
use crate::store::StoreError;
use crate::worker::{Classify, FlowOutcome};

impl Classify for UpstreamError {
    fn is_retryable(&self) -> bool {
        UpstreamError::is_retryable(self)
    }

    fn retry_after(&self) -> Option<Duration> {
        UpstreamError::retry_after(self)
    }

    fn circuit_open(&self) -> Option<Duration> {
        match self {
            UpstreamError::CircuitOpen { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The mapping does not fit the data (a name pattern's field is empty, …): permanent.
    #[error("mapping: {0}")]
    Mapping(String),
    /// Something the flow needs is not there yet (e.g. a related workspace): retry later.
    #[error("waiting: {0}")]
    NotYet(String),
}

impl FlowError {
    pub fn mapping(message: impl Into<String>) -> Self {
        Self::Mapping(message.into())
    }

    pub fn into_outcome(self) -> FlowOutcome {
        match self {
            FlowError::Upstream(e) => FlowOutcome::from_error(&e),
            FlowError::Store(e) => FlowOutcome::retryable(format!("store: {e}")),
            FlowError::NotYet(m) => FlowOutcome::retryable(m),
            FlowError::Mapping(m) => FlowOutcome::Permanent {
                error: format!("mapping: {m}"),
            },
        }
    }
}

pub type FlowResult<T> = Result<T, FlowError>;
