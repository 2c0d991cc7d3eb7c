//! Typed REST clients of the two upstream systems, over one resilient [`transport::Transport`]
//! per upstream. They know nothing of flows: they return typed values and [`UpstreamError`]s.

pub mod allportal;
pub mod config;
pub mod crash;
pub mod error;
pub mod file;
pub mod health;
pub mod limit;
pub mod opentext;
pub mod transport;

pub use config::{AllportalConfig, OpentextConfig, TransportConfig};
pub use error::{TransportErrorKind, UpstreamError};
pub use file::{Download, FileUpload};
pub use transport::{CircuitState, Clock, StreamBody, SystemClock, Transport, TransportPolicy};

/// Both upstream clients, built once from the configuration and shared (cheap clones) by the
/// flows and the status endpoint. Building them contacts nobody.
#[derive(Clone)]
pub struct Upstreams {
    pub opentext: opentext::OpentextClient,
    pub allportal: allportal::AllportalClient,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams").finish_non_exhaustive()
    }
}

impl Upstreams {
    /// One receiver per upstream that changes when the upstream recovers from an outage.
    pub fn recoveries(&self) -> Vec<tokio::sync::watch::Receiver<u64>> {
        vec![
            self.opentext.transport().recoveries(),
            self.allportal.transport().recoveries(),
        ]
    }

    pub fn new(
        allportal: &AllportalConfig,
        opentext: &OpentextConfig,
    ) -> Result<Self, UpstreamError> {
        Ok(Self {
            opentext: opentext::OpentextClient::new(opentext)?,
            allportal: allportal::AllportalClient::new(allportal)?,
        })
    }

    /// Circuit breaker state per upstream, for `/api/v1/status`.
    pub fn circuit_states(&self) -> [(&'static str, CircuitState); 2] {
        [
            ("opentext", self.opentext.circuit_state()),
            ("allportal", self.allportal.circuit_state()),
        ]
    }
}
