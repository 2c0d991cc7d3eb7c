//! Durable storage: the event inbox and everything the worker needs.
//!
//! [`Store`] is a trait with two implementations: SQLite (embedded default, one replica) and
//! PostgreSQL (several replicas). Both pass the same test suite.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;

use crate::config::StoreConfig;

pub mod sqlite;

/// Where an event came from; also the last segment of its webhook path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Allportal,
    Opentext,
}

impl Source {
    pub const ALL: [Source; 2] = [Source::Allportal, Source::Opentext];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Allportal => "allportal",
            Source::Opentext => "opentext",
        }
    }

    pub fn parse(name: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verified, parsed event about to be stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub source: Source,
    pub source_event_id: String,
    pub kind: String,
    pub module: Option<String>,
    pub object_id: Option<String>,
    pub object_key: Option<String>,
    pub payload: serde_json::Value,
    /// The whole request body as signed (shared by the events of one batch).
    pub raw_body: Bytes,
    /// The request headers that matter for audit and re-verification (never secrets).
    pub headers: serde_json::Value,
    /// Unix milliseconds.
    pub received_at: i64,
}

/// What storing one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Newly stored under this id.
    Accepted(String),
    /// Already stored (same source and source event id) under this id; nothing written.
    Duplicate(String),
}

/// An event as stored.
#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    pub id: String,
    pub source: String,
    pub source_event_id: String,
    pub kind: String,
    pub module: Option<String>,
    pub object_id: Option<String>,
    pub object_key: Option<String>,
    pub payload: serde_json::Value,
    #[serde(skip)]
    pub raw_body: Vec<u8>,
    pub headers: serde_json::Value,
    pub received_at: i64,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub updated_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("store is not ready: {0}")]
    NotReady(String),
    #[error("store is shutting down")]
    Closed,
    #[error("invalid store configuration: {0}")]
    Config(String),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Stores each event unless its (source, source event id) is already present. Returns one
    /// outcome per input, in order, only after the new rows are durably committed.
    async fn insert_events(&self, events: Vec<NewEvent>) -> Result<Vec<InsertOutcome>, StoreError>;

    /// Ready when the database answers and every migration of this build is applied.
    async fn readiness(&self) -> Result<(), StoreError>;

    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;

    async fn get_event(&self, id: &str) -> Result<Option<StoredEvent>, StoreError>;

    /// Number of stored events (all states).
    async fn count_events(&self) -> Result<i64, StoreError>;

    /// Flushes pending writes and closes connections. Later calls fail with [`StoreError::Closed`].
    async fn close(&self);
}

/// Opens the store named by `[store].url`.
pub async fn open(cfg: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    if cfg.url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(cfg).await?))
    } else {
        Err(StoreError::Config(format!(
            "unsupported store URL `{}`",
            crate::config::redact_url(&cfg.url)
        )))
    }
}

/// Current time in unix milliseconds.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A fresh, time-ordered event id.
pub fn new_event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
