//! Typed REST clients of the two upstream systems, over one resilient [`transport::Transport`]
//! per upstream. They know nothing of flows: they return typed values and [`UpstreamError`]s.

pub mod allportal;
pub mod error;
pub mod file;
pub mod opentext;
pub mod transport;

pub use error::{TransportErrorKind, UpstreamError};
pub use file::{Download, FileUpload};
pub use transport::{CircuitState, Clock, StreamBody, SystemClock, Transport, TransportPolicy};
