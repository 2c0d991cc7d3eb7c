//! The upstream clients' configuration: `[allportal]`, `[opentext]`, each with its
//! `transport` (timeouts, retries, circuit breaker) and TLS files.

use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::clients::limit::Limits;
use crate::config_error::{ConfigError, positive};
use crate::redact;

/// Settings shared by both upstream clients: timeouts, retries and the circuit breaker.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TransportConfig {
    pub connect_timeout_secs: u64,
    pub request_timeout_secs: u64,
    /// Retries after the first attempt, for transient failures only.
    pub max_retries: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// The circuit opens when at least `circuit_min_requests` calls in `circuit_window_secs`
    /// failed at a rate of `circuit_failure_rate` or more; it stays open `circuit_open_secs`,
    /// then lets one probe through.
    pub circuit_failure_rate: f64,
    pub circuit_min_requests: u32,
    pub circuit_window_secs: u64,
    pub circuit_open_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AllportalConfig {
    pub base_url: Url,
    #[serde(serialize_with = "redact::secret")]
    pub api_key: SecretString,
    /// Extra CA certificates (PEM bundle) trusted for this upstream, on top of the system trust
    /// store: for servers behind a corporate or on-premises CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS; needs `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Requests per second to this upstream for all replicas together, paced evenly; 0: no
    /// limit (see [`crate::clients::limit`]).
    pub max_requests_per_sec: f64,
    /// Calls in flight to this upstream for all replicas together; 0: no limit.
    pub max_concurrent_requests: u32,
    /// Bridge replicas sharing the two limits above: each replica takes an equal share.
    pub rate_limit_replicas: u32,
    pub transport: TransportConfig,
}

impl AllportalConfig {
    pub fn limits(&self) -> Limits {
        limits(
            self.max_requests_per_sec,
            self.max_concurrent_requests,
            self.rate_limit_replicas,
        )
    }

    pub fn tls(&self) -> TlsFiles<'_> {
        TlsFiles {
            ca_file: self.ca_file.as_deref(),
            client_cert_file: self.client_cert_file.as_deref(),
            client_key_file: self.client_key_file.as_deref(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OpentextAuth {
    /// `POST /api/v1/auth` with username/password → `OTCSTicket`.
    Otcs,
    /// OTDS `/otdsws/rest/authentication/credentials` → `OTDSTicket`.
    Otds,
    /// OTDS OAuth2 client credentials `/otdsws/oauth2/token` → Bearer.
    Oauth2,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OpentextConfig {
    /// Content Server URL up to, not including, `/api` (e.g. `https://otcs.example.com/otcs/cs`).
    pub base_url: Url,
    pub auth: OpentextAuth,
    pub username: String,
    #[serde(serialize_with = "redact::secret")]
    pub password: SecretString,
    /// Optional user domain for `POST /api/v1/auth`.
    #[serde(default)]
    pub domain: Option<String>,
    /// OTDS base URL (for `otds` and `oauth2`); defaults to the origin of `base_url`.
    #[serde(default)]
    pub otds_url: Option<Url>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default, serialize_with = "redact::optional_secret")]
    pub client_secret: Option<SecretString>,
    /// External system id under which 4ALLPORTAL business objects are registered in OpenText.
    pub ext_system_id: String,
    /// Files larger than this go through the multipart upload API.
    pub multipart_threshold_bytes: u64,
    /// Part size for the multipart upload API.
    pub multipart_part_bytes: u64,
    /// Extra CA certificates (PEM bundle) trusted for this upstream, on top of the system trust
    /// store: for servers behind a corporate or on-premises CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS; needs `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Requests per second to this upstream for all replicas together, paced evenly; 0: no
    /// limit (see [`crate::clients::limit`]).
    pub max_requests_per_sec: f64,
    /// Calls in flight to this upstream for all replicas together; 0: no limit.
    pub max_concurrent_requests: u32,
    /// Bridge replicas sharing the two limits above: each replica takes an equal share.
    pub rate_limit_replicas: u32,
    pub transport: TransportConfig,
}

impl OpentextConfig {
    /// Content Server's limits (OTDS, asked only to log in, is not limited).
    pub fn limits(&self) -> Limits {
        limits(
            self.max_requests_per_sec,
            self.max_concurrent_requests,
            self.rate_limit_replicas,
        )
    }

    /// Used for Content Server and OTDS alike.
    pub fn tls(&self) -> TlsFiles<'_> {
        TlsFiles {
            ca_file: self.ca_file.as_deref(),
            client_cert_file: self.client_cert_file.as_deref(),
            client_key_file: self.client_key_file.as_deref(),
        }
    }
}

fn limits(rate: f64, concurrent: u32, replicas: u32) -> Limits {
    Limits {
        max_requests_per_sec: rate,
        max_concurrent_requests: concurrent,
        replicas,
    }
}

/// The TLS material of one upstream, as files: extra trusted CAs and an optional client identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct TlsFiles<'a> {
    pub ca_file: Option<&'a Path>,
    pub client_cert_file: Option<&'a Path>,
    pub client_key_file: Option<&'a Path>,
}

impl TlsFiles<'_> {
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        match (self.client_cert_file, self.client_key_file) {
            (Some(_), None) => {
                return Err(ConfigError::key(
                    &format!("{at}.client_key_file"),
                    "`client_cert_file` needs `client_key_file`",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::key(
                    &format!("{at}.client_cert_file"),
                    "`client_key_file` needs `client_cert_file`",
                ));
            }
            _ => {}
        }
        for (key, file) in [
            ("ca_file", self.ca_file),
            ("client_cert_file", self.client_cert_file),
            ("client_key_file", self.client_key_file),
        ] {
            if let Some(path) = file
                && !path.is_file()
            {
                return Err(ConfigError::key(
                    &format!("{at}.{key}"),
                    format!("{} does not exist or is not a file", path.display()),
                ));
            }
        }
        Ok(())
    }
}

/// The built-in `[allportal]` and `[opentext]` sections.
pub const DEFAULTS: &str = r#"
[allportal]
base_url = "http://127.0.0.1:9001"
api_key = ""
# ca_file, client_cert_file, client_key_file: unset (the system trust store, no client certificate)
# 0: no limit; both limits are for all replicas together, each takes 1/rate_limit_replicas.
max_requests_per_sec = 0
max_concurrent_requests = 0
rate_limit_replicas = 1

[allportal.transport]
connect_timeout_secs = 5
request_timeout_secs = 60
max_retries = 4
backoff_base_ms = 200
backoff_max_ms = 30000
circuit_failure_rate = 0.5
circuit_min_requests = 20
circuit_window_secs = 30
circuit_open_secs = 30

[opentext]
base_url = "http://127.0.0.1:9002/otcs/cs"
auth = "otcs"
username = ""
password = ""
ext_system_id = "4ALLPORTAL"
multipart_threshold_bytes = 67108864
multipart_part_bytes = 16777216
# ca_file, client_cert_file, client_key_file: unset, as for [allportal]
max_requests_per_sec = 0
max_concurrent_requests = 0
rate_limit_replicas = 1

[opentext.transport]
connect_timeout_secs = 5
request_timeout_secs = 60
max_retries = 4
backoff_base_ms = 200
backoff_max_ms = 30000
circuit_failure_rate = 0.5
circuit_min_requests = 20
circuit_window_secs = 30
circuit_open_secs = 30
"#;

impl AllportalConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_base_url("allportal.base_url", &self.base_url)?;
        validate_limits("allportal", &self.limits())?;
        self.tls().validate("allportal")?;
        self.transport.validate("allportal.transport")
    }
}

impl OpentextConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_base_url("opentext.base_url", &self.base_url)?;
        if self.base_url.path().contains("/api/") || self.base_url.path().ends_with("/api") {
            return Err(ConfigError::key(
                "opentext.base_url",
                "must stop before `/api` (the client appends `/api/v1/…`, `/api/v2/…`)",
            ));
        }
        if self.ext_system_id.trim().is_empty() {
            return Err(ConfigError::key(
                "opentext.ext_system_id",
                "must not be empty",
            ));
        }
        if self.auth == OpentextAuth::Oauth2
            && (self.client_id.is_none() || self.client_secret.is_none())
        {
            return Err(ConfigError::key(
                "opentext.client_id",
                "`auth = \"oauth2\"` needs `client_id` and `client_secret`",
            ));
        }
        if self.multipart_part_bytes < 1024 * 1024 {
            return Err(ConfigError::key(
                "opentext.multipart_part_bytes",
                "must be at least 1048576 (1 MiB)",
            ));
        }
        validate_limits("opentext", &self.limits())?;
        self.tls().validate("opentext")?;
        self.transport.validate("opentext.transport")
    }
}

impl TransportConfig {
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        positive(
            at,
            &[
                ("connect_timeout_secs", self.connect_timeout_secs),
                ("request_timeout_secs", self.request_timeout_secs),
                ("backoff_base_ms", self.backoff_base_ms),
                ("backoff_max_ms", self.backoff_max_ms),
                ("circuit_window_secs", self.circuit_window_secs),
                ("circuit_open_secs", self.circuit_open_secs),
            ],
        )?;
        if !(self.circuit_failure_rate > 0.0 && self.circuit_failure_rate <= 1.0) {
            return Err(ConfigError::key(
                &format!("{at}.circuit_failure_rate"),
                "must be in (0, 1]",
            ));
        }
        if self.backoff_max_ms < self.backoff_base_ms {
            return Err(ConfigError::key(
                &format!("{at}.backoff_max_ms"),
                "must not be below backoff_base_ms",
            ));
        }
        Ok(())
    }
}

fn validate_limits(at: &str, limits: &Limits) -> Result<(), ConfigError> {
    if !(limits.max_requests_per_sec.is_finite() && limits.max_requests_per_sec >= 0.0) {
        return Err(ConfigError::key(
            &format!("{at}.max_requests_per_sec"),
            "must be 0 (no limit) or a positive number",
        ));
    }
    if limits.replicas == 0 {
        return Err(ConfigError::key(
            &format!("{at}.rate_limit_replicas"),
            "must be at least 1",
        ));
    }
    Ok(())
}

fn validate_base_url(key: &str, url: &Url) -> Result<(), ConfigError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::key(key, "must be an http:// or https:// URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::key(key, "must not carry a query or fragment"));
    }
    Ok(())
}
