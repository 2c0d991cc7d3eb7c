//! The embedded SQLite store (WAL; the inbox writer commits with `synchronous = FULL`).
//!
//! The store's logic is shared with PostgreSQL (see [`sql`](self::sql)); this file holds what
//! SQLite does differently. Webhook inserts go through the inbox writer, a thread of its own
//! that practises **group commit** ([`sqlite_writer`](super::sqlite_writer)). Other write
//! transactions are serialised in this process by an async lock and start with
//! `BEGIN IMMEDIATE`, so claims need no row locks.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};
use tokio::sync::{Notify, mpsc, oneshot};

use super::StoreConfig;
use super::guard::DiskGuard;
use super::sqlite_writer::{self as writer, WriteRequest};
use super::{InsertOutcome, NewEvent, StoreError, new_event_id};

// The query code in `sql.rs` is compiled once per dialect; its `super` is this module.
#[allow(clippy::duplicate_mod)]
#[path = "sql.rs"]
mod sql;

type Db = Sqlite;
type Backend = SqliteStore;
const BACKEND: &str = "sqlite";
/// One writer at a time (the write lock): nothing to skip or lock row by row.
const SKIP_LOCKED: &str = "";
const FOR_UPDATE: &str = "";
const EMPTY_BYTES: &str = "X''";
/// Claims already run under the write lock, one at a time.
const LOCK_OBJECT: Option<&str> = None;
/// Pages in use: freed pages are reused before the file grows.
const USED_BYTES: &str = "SELECT (p.page_count - f.freelist_count) * s.page_size
    FROM pragma_page_count() p, pragma_freelist_count() f, pragma_page_size() s";

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    pool: SqlitePool,
    writer: Mutex<Option<mpsc::Sender<WriteRequest>>>,
    writer_stopped: Mutex<Option<oneshot::Receiver<()>>>,
    /// Transactions the writer has committed (each is one fsync).
    commits: Arc<AtomicU64>,
    wakeup: Arc<Notify>,
    /// Serialises this process's write transactions in async code: SQLite admits one writer at
    /// a time, and its own busy handler waits by sleeping whole milliseconds.
    write_lock: Arc<tokio::sync::Mutex<()>>,
    guard: DiskGuard,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    pub async fn open(cfg: &StoreConfig) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(&cfg.url)
            .map_err(|e| StoreError::Config(format!("`store.url`: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // The worker's bookkeeping: NORMAL survives a process crash; after a power loss the
            // last few state changes may roll back, and the idempotent flows simply run again.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let dir = options
            .get_filename()
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."))
            .to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| {
            StoreError::Config(format!(
                "`store.url`: cannot create directory {}: {e}",
                dir.display()
            ))
        })?;
        let pool = SqlitePoolOptions::new()
            .max_connections(cfg.max_connections)
            .connect_with(options.clone())
            .await?;
        let commits = Arc::new(AtomicU64::new(0));
        let wakeup = Arc::new(Notify::new());
        let write_lock = Arc::new(tokio::sync::Mutex::new(()));
        let shared = writer::Shared {
            commits: commits.clone(),
            wakeup: wakeup.clone(),
            write_lock: write_lock.clone(),
        };
        let path = options.get_filename().to_path_buf();
        let handle = writer::start(path, cfg.group_commit_max_events, shared)?;
        Ok(Self {
            pool,
            writer: Mutex::new(Some(handle.queue)),
            writer_stopped: Mutex::new(Some(handle.stopped)),
            commits,
            wakeup,
            write_lock,
            guard: DiskGuard::new(cfg, Some(dir)),
        })
    }

    /// The connection pool, for the worker's queries.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A write transaction, taken only after this process's other writers are done.
    async fn begin_write(
        &self,
    ) -> Result<
        (
            tokio::sync::MutexGuard<'_, ()>,
            Transaction<'static, Sqlite>,
        ),
        StoreError,
    > {
        let guard = self.write_lock.lock().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok((guard, tx))
    }

    /// Commits, then wakes this process's idle workers.
    async fn commit_announced(&self, tx: Transaction<'static, Sqlite>) -> Result<(), StoreError> {
        tx.commit().await?;
        self.wakeup.notify_waiters();
        Ok(())
    }

    /// Hands the events to the writer task and waits for the commit that holds them.
    async fn insert(&self, events: Vec<NewEvent>) -> Result<Vec<InsertOutcome>, StoreError> {
        let sender = self
            .writer
            .lock()
            .expect("writer lock")
            .clone()
            .ok_or(StoreError::Closed)?;
        let ids = events.iter().map(|_| new_event_id()).collect();
        let (reply, answer) = oneshot::channel();
        sender
            .send(WriteRequest { events, ids, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer
            .await
            .map_err(|_| StoreError::Closed)?
            .into_outcomes()
    }

    async fn shutdown(&self) {
        // Dropping the sender lets the writer drain what is queued, commit it, and stop.
        let sender = self.writer.lock().expect("writer lock").take();
        drop(sender);
        let stopped = self.writer_stopped.lock().expect("writer lock").take();
        if let Some(stopped) = stopped {
            let _ = stopped.await;
        }
        self.pool.close().await;
    }

    /// How many insert transactions have been committed so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worker runs these reads on every round (at least once per poll interval), so a read
    /// that walks a table costs more as the store grows. Every scan in their plans must be of a partial
    /// index (those on live states stay as small as the backlog).
    #[tokio::test]
    async fn the_worker_round_reads_only_partial_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::store::config::StoreConfig {
            url: format!("sqlite://{}/plans.db", dir.path().display()),
            max_connections: 2,
            group_commit_max_events: 16,
            migrate_on_start: true,
            max_bytes: 0,
            min_free_bytes: 0,
        };
        let store = SqliteStore::open(&cfg).await.unwrap();
        crate::store::Store::migrate(&store).await.unwrap();
        let partial: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql LIKE '% WHERE %'",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        assert!(
            partial.iter().any(|name| name == "events_live"),
            "{partial:?}"
        );
        for query in [
            sql::unrouted_query(),
            sql::CLAIMABLE.into(),
            sql::BACKLOG.into(),
        ] {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(&format!("EXPLAIN QUERY PLAN {query}"))
                    .fetch_all(store.pool())
                    .await
                    .unwrap();
            for (_, _, _, step) in &plan {
                let reads_partial_index = partial
                    .iter()
                    .any(|name| step.contains(&format!("INDEX {name}")));
                assert!(
                    !step.starts_with("SCAN ")
                        || step == "SCAN CONSTANT ROW"
                        || reads_partial_index,
                    "`{step}` walks a table or a full index in the plan of\n{query}\n{plan:#?}"
                );
            }
        }
        store.shutdown().await;
    }
}
