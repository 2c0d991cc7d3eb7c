//! The store's configuration (`[store]`).

use serde::{Deserialize, Serialize};

use crate::config_error::{ConfigError, positive};
use crate::redact;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://path/to/file.db` (embedded, single replica) or `postgres://…` (several replicas).
    #[serde(serialize_with = "redact::url_password")]
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

/// The built-in `[store]` section.
pub const DEFAULTS: &str = r#"
[store]
url = "sqlite://data/bridge.db"
max_connections = 8
group_commit_max_events = 512
migrate_on_start = true
max_bytes = 0
min_free_bytes = 268435456
"#;

impl StoreConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.url.starts_with("sqlite:") || self.url.starts_with("postgres")) {
            return Err(ConfigError::key(
                "store.url",
                "must start with `sqlite://` or `postgres://`",
            ));
        }
        positive(
            "store",
            &[
                ("max_connections", self.max_connections as u64),
                (
                    "group_commit_max_events",
                    self.group_commit_max_events as u64,
                ),
            ],
        )
    }
}
