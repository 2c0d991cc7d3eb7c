//! The HTTP server's configuration: `[server]` (listener, limits, drain) and `[admin]`.

use std::net::SocketAddr;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::config_error::{ConfigError, positive};
use crate::redact;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the HTTP server binds to.
    pub listen: SocketAddr,
    /// Largest accepted request body; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Whole-request deadline; slower requests get 408.
    pub request_timeout_secs: u64,
    /// How long graceful shutdown waits for in-flight requests and work, counted from the
    /// signal; the process exits by then.
    pub shutdown_timeout_secs: u64,
    /// After SIGTERM: how long the listener keeps serving (with `/readyz` at 503) so that load
    /// balancers stop sending before it closes.
    pub drain_secs: u64,
    /// A request head (request line and headers) must arrive within this time, counted from
    /// the connection's accept or from the first byte of a later request.
    pub header_read_timeout_secs: u64,
    /// A keep-alive connection without a request for this long is closed.
    pub idle_timeout_secs: u64,
    /// Most connections open at once. At the limit, the connection idle the longest is closed
    /// for a new one; with every connection busy, new ones get 503.
    pub max_connections: usize,
    /// Largest request head (request line and headers); larger heads get 431.
    pub max_header_bytes: usize,
    /// The bridge's URL as 4ALLPORTAL and OpenText reach it (e.g. `https://bridge.example.com`):
    /// `register` derives the webhook URLs from it. Unset: `register` refuses to run.
    #[serde(default)]
    pub public_url: Option<url::Url>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token for `/api/v1`. Without it the admin API answers 401 to everyone.
    #[serde(default, serialize_with = "redact::optional_secret")]
    pub token: Option<SecretString>,
}

/// The built-in `[server]` and `[admin]` sections.
pub const DEFAULTS: &str = r#"
[server]
listen = "127.0.0.1:8080"
max_body_bytes = 1048576
request_timeout_secs = 30
shutdown_timeout_secs = 30
drain_secs = 5
header_read_timeout_secs = 10
idle_timeout_secs = 60
max_connections = 4096
max_header_bytes = 65536
# public_url: unset (`register` needs it)

[admin]
"#;

impl ServerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive(
            "server",
            &[
                ("max_body_bytes", self.max_body_bytes as u64),
                ("request_timeout_secs", self.request_timeout_secs),
                ("header_read_timeout_secs", self.header_read_timeout_secs),
                ("idle_timeout_secs", self.idle_timeout_secs),
                ("max_connections", self.max_connections as u64),
            ],
        )?;
        if self.max_header_bytes < 1024 {
            return Err(ConfigError::key(
                "server.max_header_bytes",
                "must be at least 1024",
            ));
        }
        // The drain window is part of the shutdown budget, not added to it.
        if self.drain_secs >= self.shutdown_timeout_secs && self.drain_secs > 0 {
            return Err(ConfigError::key(
                "server.drain_secs",
                format!(
                    "must be less than `server.shutdown_timeout_secs` ({})",
                    self.shutdown_timeout_secs
                ),
            ));
        }
        if let Some(url) = &self.public_url
            && (!matches!(url.scheme(), "http" | "https") || url.query().is_some())
        {
            return Err(ConfigError::key(
                "server.public_url",
                "must be an http:// or https:// URL without a query",
            ));
        }
        Ok(())
    }
}

impl AdminConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(token) = &self.token
            && token.expose_secret().len() < 16
        {
            return Err(ConfigError::key(
                "admin.token",
                "must be at least 16 characters",
            ));
        }
        Ok(())
    }
}
