//! The embedded SQLite store (WAL; the inbox writer commits with `synchronous = FULL`).
//!
//! The store's logic is shared with PostgreSQL (see [`sql`](self::sql)); this file holds what
//! SQLite does differently. Inserts go through one writer task that practises **group
//! commit**: whatever requests are waiting when a transaction starts are written in that one
//! transaction and made durable by one fsync; each request is answered only after the commit
//! that holds its events. Other write transactions are serialised in this process by an async
//! lock and start with `BEGIN IMMEDIATE`, so claims need no row locks.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions as _, Connection as _, Sqlite, SqliteConnection, Transaction};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::StoreConfig;
use super::guard::DiskGuard;
use super::{InsertOutcome, NewEvent, StoreError};

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

/// Longest wait for more requests to join a group commit while under load (see [`Writer::run`]).
const GATHER_WINDOW: Duration = Duration::from_micros(500);

/// Requests queued for the writer; bounded so that a stalled disk pushes back on ingest.
const WRITE_QUEUE: usize = 4096;

struct WriteRequest {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Vec<InsertOutcome>, StoreError>>,
}

pub struct SqliteStore {
    pool: SqlitePool,
    writer: Mutex<Option<mpsc::Sender<WriteRequest>>>,
    writer_task: Mutex<Option<JoinHandle<()>>>,
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
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let commits = Arc::new(AtomicU64::new(0));
        let wakeup = Arc::new(Notify::new());
        // The inbox writer keeps a connection of its own (no pool round trip on the hot path)
        // with FULL synchronisation: a commit is on disk before any webhook is acknowledged.
        let connection = options
            .clone()
            .synchronous(SqliteSynchronous::Full)
            .connect()
            .await?;
        let write_lock = Arc::new(tokio::sync::Mutex::new(()));
        let writer = Writer {
            connection,
            max_events: cfg.group_commit_max_events,
            commits: commits.clone(),
            wakeup: wakeup.clone(),
            write_lock: write_lock.clone(),
        };
        let task = tokio::spawn(writer.run(rx));
        Ok(Self {
            pool,
            writer: Mutex::new(Some(tx)),
            writer_task: Mutex::new(Some(task)),
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
        let (reply, answer) = oneshot::channel();
        sender
            .send(WriteRequest { events, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn shutdown(&self) {
        // Dropping the sender lets the writer drain what is queued, commit it, and stop.
        let sender = self.writer.lock().expect("writer lock").take();
        drop(sender);
        let task = self.writer_task.lock().expect("writer lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.pool.close().await;
    }

    /// How many insert transactions have been committed so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
}

/// The single writer task behind [`SqliteStore::insert`].
struct Writer {
    connection: SqliteConnection,
    max_events: usize,
    commits: Arc<AtomicU64>,
    /// Wakes idle workers when new events are committed.
    wakeup: Arc<Notify>,
    write_lock: Arc<tokio::sync::Mutex<()>>,
}

impl Writer {
    async fn run(mut self, mut queue: mpsc::Receiver<WriteRequest>) {
        let mut last_batch = 1;
        while let Some(first) = queue.recv().await {
            let mut batch = vec![first];
            let mut count = batch[0].events.len();
            // Everything that arrived while the previous commit was on disk joins this one.
            while count < self.max_events {
                match queue.try_recv() {
                    Ok(next) => {
                        count += next.events.len();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            // Under load, the senders just answered by the previous commit are about to send
            // again; a short wait for them beats committing a batch of one and making them wait
            // a whole commit. At low load (last batch of one) nothing waits.
            if batch.len() < last_batch {
                let deadline = tokio::time::Instant::now() + GATHER_WINDOW;
                while batch.len() < last_batch && count < self.max_events {
                    match tokio::time::timeout_at(deadline, queue.recv()).await {
                        Ok(Some(next)) => {
                            count += next.events.len();
                            batch.push(next);
                        }
                        _ => break,
                    }
                }
            }
            last_batch = batch.len();
            metrics::histogram!(crate::telemetry::metrics::GROUP_COMMIT_EVENTS)
                .record(count as f64);
            self.commit_and_reply(batch).await;
        }
    }

    async fn commit_and_reply(&mut self, batch: Vec<WriteRequest>) {
        match self.commit(&batch).await {
            Ok(outcomes) => {
                for (request, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = request.reply.send(Ok(outcome));
                }
            }
            // One bad request must not fail its neighbours: retry each on its own.
            Err(error) => {
                tracing::warn!(%error, requests = batch.len(), "group commit failed; committing requests one by one");
                for request in batch {
                    let result = self
                        .commit(std::slice::from_ref(&request))
                        .await
                        .map(|mut outcomes| outcomes.remove(0));
                    let _ = request.reply.send(result);
                }
            }
        }
    }

    async fn commit(
        &mut self,
        batch: &[WriteRequest],
    ) -> Result<Vec<Vec<InsertOutcome>>, StoreError> {
        let _write = self.write_lock.lock().await;
        let requests: Vec<&[NewEvent]> = batch.iter().map(|r| r.events.as_slice()).collect();
        let mut tx = self.connection.begin().await?;
        let inserted = sql::insert_requests(&mut tx, &requests).await?;
        tx.commit().await?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        if inserted.new_work {
            self.wakeup.notify_waiters();
        }
        Ok(inserted.outcomes)
    }
}
