//! Typed, layered configuration: built-in defaults, then a TOML file, then environment variables
//! `XECM_BRIDGE__SECTION__KEY`. Every key is documented in `config/example.toml`.
//!
//! Each module owns its section: its type, its built-in defaults and its checks (`[server]`,
//! `[admin]` and `[console]` in `http`, `[store]` in `store`, `[sources.*]` in `ingest`,
//! `[allportal]`, `[opentext]` and `[callbacks]` in `clients`, `[worker]` and `[audit]` in
//! `worker`, `[log]` in `telemetry`, `[flows.*]` and `[mapping_check]` in `flows`). This module
//! only composes them into [`Settings`]; only the entry points (the CLI,
//! the server, the demo) use it.
//!
//! Loading validates everything up front; each error names the offending key. Secrets are
//! [`secrecy::SecretString`]s: their `Debug` is redacted and [`Settings::redacted_toml`] prints
//! them as `"<redacted>"`.

use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

pub use crate::config_error::ConfigError;

use crate::clients::opentext::callback::CallbackShape;
use crate::clients::{AllportalConfig, OpentextConfig};
use crate::flows::FlowsConfig;
use crate::flows::check::MappingCheckConfig;
use crate::http::console::ConsoleConfig;
use crate::http::{AdminConfig, ServerConfig};
use crate::ingest::SourcesConfig;
use crate::store::StoreConfig;
use crate::telemetry::LogConfig;
use crate::worker::WorkerConfig;
use crate::worker::audit::AuditConfig;

/// Environment variable prefix; `__` separates nested keys.
pub const ENV_PREFIX: &str = "XECM_BRIDGE__";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub admin: AdminConfig,
    /// The operator console under `/ui/` (`[console]`).
    pub console: ConsoleConfig,
    pub log: LogConfig,
    pub sources: SourcesConfig,
    pub allportal: AllportalConfig,
    pub opentext: OpentextConfig,
    pub worker: WorkerConfig,
    /// The periodic drift audit (`[audit]`).
    pub audit: AuditConfig,
    /// Where the fields of an OpenText callback are (`[callbacks]`).
    pub callbacks: CallbackShape,
    /// `[mapping_check]`: what `serve` does when the mapping does not fit the live systems.
    pub mapping_check: MappingCheckConfig,
    /// The business flows' mappings (`[flows.<name>]`); a flow without a section is off.
    #[serde(default)]
    pub flows: FlowsConfig,
}

/// The built-in defaults, each section from its module: a complete, valid configuration for
/// local use against the simulators except for secrets, which have no defaults.
fn defaults() -> String {
    [
        crate::http::config::DEFAULTS,
        crate::http::console::config::DEFAULTS,
        crate::store::config::DEFAULTS,
        crate::telemetry::DEFAULTS,
        crate::ingest::config::DEFAULTS,
        crate::clients::opentext::callback::DEFAULTS,
        crate::clients::config::DEFAULTS,
        crate::worker::config::DEFAULTS,
        crate::worker::audit::DEFAULTS,
        crate::flows::check::DEFAULTS,
    ]
    .concat()
}

/// `server.listen` alone, from the defaults, `file` (when it exists) and the environment, without
/// validating anything else: `healthcheck` runs where the secrets are not in the environment.
pub fn listen_address(file: Option<&Path>) -> Result<SocketAddr, ConfigError> {
    let mut figment = Figment::from(Toml::string(&defaults()));
    if let Some(path) = file.filter(|p| p.is_file()) {
        figment = figment.merge(Toml::file_exact(path));
    }
    figment
        .merge(Env::prefixed(ENV_PREFIX).split("__"))
        .extract_inner("server.listen")
        .map_err(|e| ConfigError(describe_figment_error(e)))
}

impl Settings {
    /// Defaults, then `file` (if given), then `XECM_BRIDGE__…` environment variables; validated.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, Env::prefixed(ENV_PREFIX).split("__"))
    }

    /// Like [`Settings::load`], with the environment provider given (tests pass their own).
    pub fn load_from(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(&defaults()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "config file {} does not exist or is not a file",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let settings: Settings = figment
            .merge(env)
            .extract()
            .map_err(|e| ConfigError(describe_figment_error(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Builds settings from the defaults overlaid with TOML documents, later ones winning
    /// (tests and `demo`).
    pub fn from_toml(layers: &[&str]) -> Result<Self, ConfigError> {
        let figment = layers
            .iter()
            .fold(Figment::from(Toml::string(&defaults())), |f, layer| {
                f.merge(Toml::string(layer))
            });
        let settings: Settings = figment
            .extract()
            .map_err(|e| ConfigError(describe_figment_error(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// The settings as TOML with every secret replaced by `"<redacted>"` (for `check-config`).
    pub fn redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }

    /// Each section validates itself; the errors name the key.
    fn validate(&self) -> Result<(), ConfigError> {
        self.callbacks.validate()?;
        self.server.validate()?;
        self.store.validate()?;
        self.admin.validate()?;
        self.console.validate()?;
        self.sources.validate()?;
        self.allportal.validate()?;
        self.opentext.validate()?;
        self.worker.validate()?;
        self.audit.validate()?;
        self.flows
            .validate()
            .map_err(|e| ConfigError::key(&e.key, e.problem))?;
        Ok(())
    }
}

/// Figment's messages already name the key (`for key "server.listen"`); keep them, one line.
fn describe_figment_error(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let message = e.kind.to_string();
            if key.is_empty() {
                message
            } else {
                format!("`{key}`: {message}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}
