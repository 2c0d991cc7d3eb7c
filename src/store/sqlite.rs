//! The embedded SQLite store (WAL, `synchronous = FULL`).
//!
//! Inserts go through one writer task that practises **group commit**: whatever requests are
//! waiting when a transaction starts are written in that one transaction and made durable by one
//! fsync; each request is answered only after the commit that holds its events.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{
    ConnectOptions as _, Connection as _, QueryBuilder, Row, Sqlite, SqliteConnection, Transaction,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{InsertOutcome, NewEvent, Source, Store, StoreError, StoredEvent, new_event_id};
use crate::config::StoreConfig;

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
            // FULL: a commit is on disk before the webhook is acknowledged.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Config(format!(
                    "`store.url`: cannot create directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(cfg.max_connections)
            .connect_with(options.clone())
            .await?;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let commits = Arc::new(AtomicU64::new(0));
        // The writer keeps a connection of its own: no pool round trip on the hot path.
        let connection = options.connect().await?;
        let writer = Writer {
            connection,
            max_events: cfg.group_commit_max_events,
            commits: commits.clone(),
        };
        let task = tokio::spawn(writer.run(rx));
        Ok(Self {
            pool,
            writer: Mutex::new(Some(tx)),
            writer_task: Mutex::new(Some(task)),
            commits,
        })
    }

    /// The connection pool, for the worker's queries.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// How many insert transactions have been committed so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn insert_events(&self, events: Vec<NewEvent>) -> Result<Vec<InsertOutcome>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
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

    async fn readiness(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = 1")
                .fetch_all(&self.pool)
                .await
                .map_err(|_| StoreError::NotReady("migrations have not been applied".into()))?;
        missing_migrations(&MIGRATOR, &applied)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn get_event(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let row = sqlx::query(SELECT_EVENT)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| event_from_row(&r)).transpose()
    }

    async fn count_events(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn close(&self) {
        // Dropping the sender lets the writer drain what is queued, commit it, and stop.
        let sender = self.writer.lock().expect("writer lock").take();
        drop(sender);
        let task = self.writer_task.lock().expect("writer lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.pool.close().await;
    }
}

/// Ready only if every migration this build knows has been applied.
pub(crate) fn missing_migrations(migrator: &Migrator, applied: &[i64]) -> Result<(), StoreError> {
    let missing: Vec<String> = migrator
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .map(|m| format!("{} {}", m.version, m.description))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StoreError::NotReady(format!(
            "pending migrations: {} (run `xecm-bridge migrate`)",
            missing.join(", ")
        )))
    }
}

/// The single writer task behind [`SqliteStore::insert_events`].
struct Writer {
    connection: SqliteConnection,
    max_events: usize,
    commits: Arc<AtomicU64>,
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
            metrics::histogram!("xecm_store_group_commit_events").record(count as f64);
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
        let outcomes = commit_group(&mut self.connection, batch).await?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(outcomes)
    }
}

/// Most rows in one INSERT statement (13 parameters each, well under SQLite's 32766).
const ROWS_PER_STATEMENT: usize = 500;

/// Writes every event of `batch` in one transaction with multi-row inserts (one statement per
/// [`ROWS_PER_STATEMENT`] events rather than one per event) and returns the outcomes per request.
async fn commit_group(
    connection: &mut SqliteConnection,
    batch: &[WriteRequest],
) -> Result<Vec<Vec<InsertOutcome>>, StoreError> {
    let events: Vec<(&NewEvent, String)> = batch
        .iter()
        .flat_map(|request| &request.events)
        .map(|event| (event, new_event_id()))
        .collect();
    let mut tx = connection.begin().await?;
    let mut inserted = HashSet::new();
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        inserted.extend(insert_rows(&mut tx, chunk).await?);
    }
    // An event that was not inserted duplicates one stored earlier or earlier in this group.
    let mut stored: HashMap<(Source, &str), String> = HashMap::new();
    for (event, id) in &events {
        if inserted.contains(id) {
            stored.insert((event.source, &event.source_event_id), id.clone());
        }
    }
    let mut outcomes = Vec::with_capacity(events.len());
    for (event, id) in &events {
        let key = (event.source, event.source_event_id.as_str());
        outcomes.push(if inserted.contains(id) {
            InsertOutcome::Accepted(id.clone())
        } else if let Some(first) = stored.get(&key) {
            InsertOutcome::Duplicate(first.clone())
        } else {
            InsertOutcome::Duplicate(existing_id(&mut tx, event).await?)
        });
    }
    tx.commit().await?;
    let mut outcomes = outcomes.into_iter();
    Ok(batch
        .iter()
        .map(|request| outcomes.by_ref().take(request.events.len()).collect())
        .collect())
}

/// Inserts the rows that are new; returns the ids of those inserted.
async fn insert_rows(
    tx: &mut Transaction<'_, Sqlite>,
    rows: &[(&NewEvent, String)],
) -> Result<Vec<String>, StoreError> {
    let mut query = QueryBuilder::<Sqlite>::new(
        "INSERT INTO events (id, source, source_event_id, kind, module, object_id, object_key,
                             payload, raw_body, headers, received_at, next_attempt_at, updated_at) ",
    );
    query.push_values(rows, |mut row, (event, id)| {
        row.push_bind(id.as_str())
            .push_bind(event.source.as_str())
            .push_bind(event.source_event_id.as_str())
            .push_bind(event.kind.as_str())
            .push_bind(event.module.as_deref())
            .push_bind(event.object_id.as_deref())
            .push_bind(event.object_key.as_deref())
            .push_bind(event.payload.to_string())
            .push_bind(event.raw_body.as_ref())
            .push_bind(event.headers.to_string())
            .push_bind(event.received_at)
            .push_bind(event.received_at)
            .push_bind(event.received_at);
    });
    query.push(" ON CONFLICT (source, source_event_id) DO NOTHING RETURNING id");
    Ok(query.build_query_scalar().fetch_all(&mut **tx).await?)
}

async fn existing_id(
    tx: &mut Transaction<'_, Sqlite>,
    event: &NewEvent,
) -> Result<String, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT id FROM events WHERE source = ? AND source_event_id = ?")
            .bind(event.source.as_str())
            .bind(&event.source_event_id)
            .fetch_one(&mut **tx)
            .await?,
    )
}

const SELECT_EVENT: &str =
    "SELECT id, source, source_event_id, kind, module, object_id, object_key,
        payload, raw_body, headers, received_at, state, attempts, next_attempt_at, last_error,
        updated_at
    FROM events WHERE id = ?";

fn event_from_row(row: &SqliteRow) -> Result<StoredEvent, StoreError> {
    let json = |column: &str| -> Result<serde_json::Value, StoreError> {
        let text: String = row.try_get(column)?;
        serde_json::from_str(&text)
            .map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))
    };
    Ok(StoredEvent {
        id: row.try_get("id")?,
        source: row.try_get("source")?,
        source_event_id: row.try_get("source_event_id")?,
        kind: row.try_get("kind")?,
        module: row.try_get("module")?,
        object_id: row.try_get("object_id")?,
        object_key: row.try_get("object_key")?,
        payload: json("payload")?,
        raw_body: row.try_get("raw_body")?,
        headers: json("headers")?,
        received_at: row.try_get("received_at")?,
        state: row.try_get("state")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_error: row.try_get("last_error")?,
        updated_at: row.try_get("updated_at")?,
    })
}
