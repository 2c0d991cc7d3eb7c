//! Typed, layered configuration: built-in defaults, then a TOML file, then environment variables
//! `XECM_BRIDGE__SECTION__KEY`. Every key is documented in `config/example.toml`.
//!
//! Loading validates everything up front; each error names the offending key. Secrets are
//! [`SecretString`]s: their `Debug` is redacted and [`Settings::redacted_toml`] prints them as
//! `"<redacted>"`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};
use url::Url;

/// Environment variable prefix; `__` separates nested keys.
pub const ENV_PREFIX: &str = "XECM_BRIDGE__";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub sources: SourcesConfig,
    pub allportal: AllportalConfig,
    pub opentext: OpentextConfig,
    pub worker: WorkerConfig,
    /// The business flows' mappings (`[flows.<name>]`); a flow without a section is off.
    #[serde(default)]
    pub flows: crate::flows::FlowsConfig,
    /// `[mapping_check]`: what `serve` does when the mapping does not fit the live systems.
    #[serde(default)]
    pub mapping_check: crate::flows::check::MappingCheckConfig,
}

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
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://path/to/file.db` (embedded, single replica) or `postgres://…` (several replicas).
    #[serde(serialize_with = "redact_url_password")]
    pub url: String,
    /// Connection pool size (PostgreSQL; SQLite uses one writer plus readers).
    pub max_connections: u32,
    /// Most events one group commit writes in a single transaction.
    pub group_commit_max_events: usize,
    /// Apply pending migrations when `serve` starts. Turn off where a release job runs
    /// `xecm-bridge migrate` once (the Helm chart does).
    pub migrate_on_start: bool,
    /// Budget of the store in bytes (SQLite: pages in use; PostgreSQL: `pg_database_size`);
    /// ingest answers 503 from 95 % of it. 0 turns it off.
    pub max_bytes: u64,
    /// Free space to keep on the SQLite file's filesystem; below it ingest answers 503.
    /// 0 turns it off (PostgreSQL: not checked, use `max_bytes`).
    pub min_free_bytes: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token for `/api/v1`. Without it the admin API answers 401 to everyone.
    #[serde(default, serialize_with = "redact_opt")]
    pub token: Option<SecretString>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `tracing` filter directive, e.g. `info,xecm_bridge=debug`. `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesConfig {
    pub allportal: SourceConfig,
    pub opentext: SourceConfig,
}

/// How a webhook source proves who sent a request.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SchemeKind {
    /// `webhook-id` / `webhook-timestamp` / `webhook-signature: v1,<base64>` (standardwebhooks.com).
    StandardWebhooks,
    /// HMAC-SHA256 in a configurable header, optionally over `"<timestamp>.<body>"`.
    HmacSha256,
    /// A shared secret sent verbatim in a header. Weaker: no integrity, no replay window.
    Token,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SignedContent {
    /// The raw body only.
    Body,
    /// `"<timestamp>.<body>"`; needs `timestamp_header`.
    TimestampDotBody,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    Hex,
    Base64,
}

/// Verification settings of one webhook source (`[sources.allportal]`, `[sources.opentext]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub scheme: SchemeKind,
    /// Every secret currently accepted; several during a rotation. `standard-webhooks` secrets are
    /// `whsec_<base64>`; the other schemes use the secret's UTF-8 bytes.
    #[serde(serialize_with = "redact_vec")]
    pub secrets: Vec<SecretString>,
    /// Largest accepted clock difference, past and future, in seconds.
    pub tolerance_secs: u64,
    /// `hmac-sha256`: signature header; `token`: token header. Defaults per scheme.
    #[serde(default)]
    pub header: Option<String>,
    /// `hmac-sha256`: header carrying the unix timestamp (enables the tolerance check).
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// `hmac-sha256`: what is signed.
    pub signed_content: SignedContent,
    /// `hmac-sha256`: how the signature is written.
    pub encoding: SignatureEncoding,
    /// `hmac-sha256`: prefix before the signature, e.g. `sha256=`.
    pub prefix: String,
    /// `hmac-sha256` / `token`: optional header carrying the sender's delivery id (event identity).
    #[serde(default)]
    pub id_header: Option<String>,
}

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
    #[serde(serialize_with = "redact")]
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
    pub transport: TransportConfig,
}

impl AllportalConfig {
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
    #[serde(serialize_with = "redact")]
    pub password: SecretString,
    /// Optional user domain for `POST /api/v1/auth`.
    #[serde(default)]
    pub domain: Option<String>,
    /// OTDS base URL (for `otds` and `oauth2`); defaults to the origin of `base_url`.
    #[serde(default)]
    pub otds_url: Option<Url>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default, serialize_with = "redact_opt")]
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
    pub transport: TransportConfig,
}

impl OpentextConfig {
    /// Used for Content Server and OTDS alike.
    pub fn tls(&self) -> TlsFiles<'_> {
        TlsFiles {
            ca_file: self.ca_file.as_deref(),
            client_cert_file: self.client_cert_file.as_deref(),
            client_key_file: self.client_key_file.as_deref(),
        }
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

/// The worker pool (`[worker]`): leases, retries, coalescing, reconciliation and retention.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Runs the worker pool in this process (an API-only replica sets `false`).
    pub enabled: bool,
    /// Hard limit of units of work (one flow × one business object) running at once.
    pub concurrency: usize,
    /// How long a claim stays valid without renewal. Short, so that the work of a process that
    /// died is taken over within seconds; a live worker renews it every `lease_renew_secs`.
    pub lease_secs: u64,
    /// Heartbeat: how often running work renews its lease (must be less than half of
    /// `lease_secs`, so that one failed renewal does not lose the lease).
    pub lease_renew_secs: u64,
    /// Polling backstop between claim rounds when no wake-up arrives.
    pub poll_interval_ms: u64,
    /// Delay before each retry of a retryable failure, in seconds (±20 % jitter); after the
    /// last entry every further retry waits the last delay, until `max_retry_age_secs`.
    pub retry_schedule_secs: Vec<u64>,
    /// A job that still fails retryably this long after it was created (or last replayed) is a
    /// dead letter.
    pub max_retry_age_secs: u64,
    /// Former name of `max_retry_age_secs`, still accepted; when set it wins.
    #[serde(default, skip_serializing)]
    pub max_age_secs: Option<u64>,
    /// Pending events routed to flows per round.
    pub route_batch: usize,
    /// Most events of one business object merged into one reconcile.
    pub coalesce_max: usize,
    /// Finished events (`done`, `ignored`) older than this are deleted; dead letters are kept.
    pub retention_days: u64,
    /// Events deleted per pruning statement (keeps transactions short).
    pub prune_batch: usize,
    /// How often retention runs.
    pub prune_interval_secs: u64,
    /// Polls 4ALLPORTAL for objects modified since the stored cursor; 0 turns it off.
    pub reconcile_allportal_interval_secs: u64,
    /// Polls OpenText for the status of workflows the bridge started; 0 turns it off.
    pub reconcile_opentext_interval_secs: u64,
    /// How often the backlog gauges are refreshed.
    pub metrics_interval_secs: u64,
    /// How long shutdown lets running work finish before releasing it for another replica.
    pub shutdown_grace_secs: u64,
}

impl Default for WorkerConfig {
    /// The `[worker]` section of the built-in defaults.
    fn default() -> Self {
        Figment::from(Toml::string(DEFAULTS))
            .extract_inner("worker")
            .expect("the built-in [worker] defaults are valid")
    }
}

impl WorkerConfig {
    /// The maximum retry age in effect (`max_retry_age_secs`, or its former name).
    pub fn max_retry_age(&self) -> Duration {
        Duration::from_secs(self.max_age_secs.unwrap_or(self.max_retry_age_secs))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("concurrency", self.concurrency as u64),
            ("lease_secs", self.lease_secs),
            ("lease_renew_secs", self.lease_renew_secs),
            ("poll_interval_ms", self.poll_interval_ms),
            ("max_retry_age_secs", self.max_retry_age().as_secs()),
            ("route_batch", self.route_batch as u64),
            ("coalesce_max", self.coalesce_max as u64),
            ("retention_days", self.retention_days),
            ("prune_batch", self.prune_batch as u64),
            ("prune_interval_secs", self.prune_interval_secs),
            ("metrics_interval_secs", self.metrics_interval_secs),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::key(
                    &format!("worker.{key}"),
                    "must be greater than 0",
                ));
            }
        }
        if self.retry_schedule_secs.contains(&0) {
            return Err(ConfigError::key(
                "worker.retry_schedule_secs",
                "every delay must be greater than 0",
            ));
        }
        if self.lease_renew_secs.saturating_mul(2) >= self.lease_secs {
            return Err(ConfigError::key(
                "worker.lease_renew_secs",
                format!(
                    "must be less than half of `worker.lease_secs` ({} s), so that one missed \
                     renewal does not lose the lease",
                    self.lease_secs
                ),
            ));
        }
        Ok(())
    }
}

/// The built-in defaults: a complete, valid configuration for local use against the simulators
/// except for secrets, which have no defaults in production settings.
const DEFAULTS: &str = r#"
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

[store]
url = "sqlite://data/bridge.db"
max_connections = 8
group_commit_max_events = 512
migrate_on_start = true
max_bytes = 0
min_free_bytes = 268435456

[admin]

[log]
format = "text"
filter = "info"

[sources.allportal]
scheme = "standard-webhooks"
secrets = []
tolerance_secs = 300
signed_content = "body"
encoding = "hex"
prefix = ""

[sources.opentext]
scheme = "standard-webhooks"
secrets = []
tolerance_secs = 300
signed_content = "body"
encoding = "hex"
prefix = ""

[allportal]
base_url = "http://127.0.0.1:9001"
api_key = ""
# ca_file, client_cert_file, client_key_file: unset (the system trust store, no client certificate)

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

[worker]
enabled = true
concurrency = 8
lease_secs = 30
lease_renew_secs = 10
poll_interval_ms = 1000
retry_schedule_secs = [5, 30, 120, 600, 1800, 3600]
max_retry_age_secs = 86400
route_batch = 200
coalesce_max = 100
retention_days = 14
prune_batch = 1000
prune_interval_secs = 3600
reconcile_allportal_interval_secs = 300
reconcile_opentext_interval_secs = 300
metrics_interval_secs = 15
shutdown_grace_secs = 25

[mapping_check]
on_problem = "warn"
"#;

/// `server.listen` alone, from the defaults, `file` (when it exists) and the environment, without
/// validating anything else: `healthcheck` runs where the secrets are not in the environment.
pub fn listen_address(file: Option<&Path>) -> Result<SocketAddr, ConfigError> {
    let mut figment = Figment::from(Toml::string(DEFAULTS));
    if let Some(path) = file.filter(|p| p.is_file()) {
        figment = figment.merge(Toml::file_exact(path));
    }
    figment
        .merge(Env::prefixed(ENV_PREFIX).split("__"))
        .extract_inner("server.listen")
        .map_err(|e| ConfigError(describe_figment_error(e)))
}

/// A configuration error; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    fn key(key: &str, problem: impl std::fmt::Display) -> Self {
        Self(format!("`{key}`: {problem}"))
    }
}

impl Settings {
    /// Defaults, then `file` (if given), then `XECM_BRIDGE__…` environment variables; validated.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, Env::prefixed(ENV_PREFIX).split("__"))
    }

    /// Like [`Settings::load`], with the environment provider given (tests pass their own).
    pub fn load_from(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
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
            .fold(Figment::from(Toml::string(DEFAULTS)), |f, layer| {
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

    fn validate(&self) -> Result<(), ConfigError> {
        if self.server.max_body_bytes == 0 {
            return Err(ConfigError::key(
                "server.max_body_bytes",
                "must be greater than 0",
            ));
        }
        if self.server.request_timeout_secs == 0 {
            return Err(ConfigError::key(
                "server.request_timeout_secs",
                "must be greater than 0",
            ));
        }
        self.server.validate()?;
        if !(self.store.url.starts_with("sqlite:") || self.store.url.starts_with("postgres")) {
            return Err(ConfigError::key(
                "store.url",
                "must start with `sqlite://` or `postgres://`",
            ));
        }
        if self.store.max_connections == 0 {
            return Err(ConfigError::key(
                "store.max_connections",
                "must be greater than 0",
            ));
        }
        if self.store.group_commit_max_events == 0 {
            return Err(ConfigError::key(
                "store.group_commit_max_events",
                "must be greater than 0",
            ));
        }
        if let Some(token) = &self.admin.token
            && token.expose_secret().len() < 16
        {
            return Err(ConfigError::key(
                "admin.token",
                "must be at least 16 characters",
            ));
        }
        for (name, source) in [
            ("allportal", &self.sources.allportal),
            ("opentext", &self.sources.opentext),
        ] {
            source.validate(&format!("sources.{name}"))?;
        }
        validate_base_url("allportal.base_url", &self.allportal.base_url)?;
        validate_base_url("opentext.base_url", &self.opentext.base_url)?;
        if self.opentext.base_url.path().contains("/api/")
            || self.opentext.base_url.path().ends_with("/api")
        {
            return Err(ConfigError::key(
                "opentext.base_url",
                "must stop before `/api` (the client appends `/api/v1/…`, `/api/v2/…`)",
            ));
        }
        if self.opentext.ext_system_id.trim().is_empty() {
            return Err(ConfigError::key(
                "opentext.ext_system_id",
                "must not be empty",
            ));
        }
        if self.opentext.auth == OpentextAuth::Oauth2
            && (self.opentext.client_id.is_none() || self.opentext.client_secret.is_none())
        {
            return Err(ConfigError::key(
                "opentext.client_id",
                "`auth = \"oauth2\"` needs `client_id` and `client_secret`",
            ));
        }
        if self.opentext.multipart_part_bytes < 1024 * 1024 {
            return Err(ConfigError::key(
                "opentext.multipart_part_bytes",
                "must be at least 1048576 (1 MiB)",
            ));
        }
        self.allportal.tls().validate("allportal")?;
        self.opentext.tls().validate("opentext")?;
        self.allportal.transport.validate("allportal.transport")?;
        self.opentext.transport.validate("opentext.transport")?;
        self.worker.validate()?;
        self.flows
            .validate()
            .map_err(|e| ConfigError::key(&e.key, e.problem))?;
        Ok(())
    }
}

impl ServerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("max_connections", self.max_connections as u64),
        ] {
            if value == 0 {
                return Err(ConfigError::key(
                    &format!("server.{key}"),
                    "must be greater than 0",
                ));
            }
        }
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
        Ok(())
    }
}

impl SourceConfig {
    /// The header that carries the signature (`hmac-sha256`) or the token (`token`).
    pub fn header_name(&self) -> &str {
        match (&self.header, self.scheme) {
            (Some(h), _) => h,
            (None, SchemeKind::StandardWebhooks) => "webhook-signature",
            (None, SchemeKind::HmacSha256) => "x-signature",
            (None, SchemeKind::Token) => "x-webhook-token",
        }
    }

    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.secrets.is_empty() {
            return Err(ConfigError::key(
                &format!("{at}.secrets"),
                "at least one secret is required (several during a rotation)",
            ));
        }
        for (i, secret) in self.secrets.iter().enumerate() {
            let secret = secret.expose_secret();
            let key = format!("{at}.secrets[{i}]");
            if secret.is_empty() {
                return Err(ConfigError::key(&key, "must not be empty"));
            }
            if self.scheme == SchemeKind::StandardWebhooks {
                decode_whsec(secret).map_err(|problem| ConfigError::key(&key, problem))?;
            } else if secret.len() < 16 {
                return Err(ConfigError::key(&key, "must be at least 16 characters"));
            }
        }
        if self.tolerance_secs == 0 {
            return Err(ConfigError::key(
                &format!("{at}.tolerance_secs"),
                "must be greater than 0",
            ));
        }
        for (key, value) in [
            ("header", &self.header),
            ("timestamp_header", &self.timestamp_header),
            ("id_header", &self.id_header),
        ] {
            if let Some(name) = value
                && http::HeaderName::try_from(name.as_str()).is_err()
            {
                return Err(ConfigError::key(
                    &format!("{at}.{key}"),
                    format!("`{name}` is not a valid HTTP header name"),
                ));
            }
        }
        if self.scheme == SchemeKind::HmacSha256
            && self.signed_content == SignedContent::TimestampDotBody
            && self.timestamp_header.is_none()
        {
            return Err(ConfigError::key(
                &format!("{at}.timestamp_header"),
                "`signed_content = \"timestamp-dot-body\"` needs a timestamp header",
            ));
        }
        Ok(())
    }
}

/// Decodes a Standard Webhooks secret `whsec_<base64>` (the prefix is optional, as in the
/// reference libraries) into the HMAC key bytes.
pub fn decode_whsec(secret: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| "must be `whsec_` followed by base64".to_string())?;
    if key.len() < 16 {
        return Err("the decoded key must be at least 16 bytes".into());
    }
    Ok(key)
}

impl TransportConfig {
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let positive = [
            ("connect_timeout_secs", self.connect_timeout_secs),
            ("request_timeout_secs", self.request_timeout_secs),
            ("backoff_base_ms", self.backoff_base_ms),
            ("backoff_max_ms", self.backoff_max_ms),
            ("circuit_window_secs", self.circuit_window_secs),
            ("circuit_open_secs", self.circuit_open_secs),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::key(
                    &format!("{at}.{key}"),
                    "must be greater than 0",
                ));
            }
        }
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

fn validate_base_url(key: &str, url: &Url) -> Result<(), ConfigError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::key(key, "must be an http:// or https:// URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::key(key, "must not carry a query or fragment"));
    }
    Ok(())
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

const REDACTED: &str = "<redacted>";

fn redact<S: Serializer>(_: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(REDACTED)
}

fn redact_opt<S: Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str(REDACTED),
        None => s.serialize_none(),
    }
}

fn redact_vec<S: Serializer>(v: &[SecretString], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for _ in v {
        seq.serialize_element(REDACTED)?;
    }
    seq.end()
}

/// A PostgreSQL URL may embed a password; print it without.
fn redact_url_password<S: Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(v))
}

/// The URL with any password replaced, for logs and `check-config`.
pub fn redact_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some(REDACTED));
            url.to_string()
        }
        _ => raw.to_string(),
    }
}
