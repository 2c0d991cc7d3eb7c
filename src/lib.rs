//! xecm-bridge: connects 4ALLPORTAL (PIM/DAM) with OpenText Extended ECM Business Workspaces.
//!
//! Data flows one way: `http` → `ingest` → `store`; `worker` → `flows` → `clients`.
//! `sim` holds stateful simulators of both upstream systems for tests and `demo`; production
//! code paths never use it, and a build without the default `sim` feature leaves both out.

pub mod cli;
pub mod clients;
pub mod config;
pub mod config_error;
#[cfg(feature = "sim")]
pub mod demo;
pub mod flows;
pub mod http;
pub mod ingest;
pub mod redact;
pub mod server;
#[cfg(feature = "sim")]
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod worker;
