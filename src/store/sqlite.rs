//! The embedded SQLite store (WAL; the inbox writer commits with `synchronous = FULL`).
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
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{
    AttemptRecord, AttemptResult, Backlog, ClaimRequest, ClaimedJob, ClaimedWork, DocumentRecord,
    EventDetail, EventFilter, EventNote, EventPage, FlowStats, InsertOutcome, IntentRecord,
    JobRecord, JobTransition, LEASE_EXPIRED, LinkRecord, NO_FLOW_WANTS_IT, NewEvent, Page,
    RELEASED_AT_SHUTDOWN, ReplayOutcome, Routing, Source, Store, StoreError, StoredEvent,
    WorkflowRecord, WritebackRecord, into_page, join_retry_after_run_sql, join_waiting_retry_sql,
    new_event_id, outcome, push_event_filter, refresh_event_sql, retry_time, state, workflow_state,
};
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
    wakeup: Arc<Notify>,
    /// Serialises this process's write transactions in async code: SQLite admits one writer at
    /// a time, and its own busy handler waits by sleeping whole milliseconds.
    write_lock: Arc<tokio::sync::Mutex<()>>,
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

    fn wakeup(&self) -> Arc<Notify> {
        self.wakeup.clone()
    }

    async fn unrouted_events(&self, limit: i64) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE state = 'pending' ORDER BY id LIMIT ?"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn route_events(&self, routings: &[Routing], now: i64) -> Result<usize, StoreError> {
        let (_write, mut tx) = self.begin_write().await?;
        let mut routed = 0;
        for routing in routings {
            if route_one(&mut tx, routing, now).await? {
                routed += 1;
            }
        }
        tx.commit().await?;
        Ok(routed)
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Option<ClaimedWork>, StoreError> {
        // IMMEDIATE takes the write lock up front: the whole claim is one serialized step.
        let (_write, mut tx) = self.begin_write().await?;
        reap_expired(&mut tx, request.now, request.max_attempts).await?;
        let work = claim_unit(&mut tx, request).await?;
        tx.commit().await?;
        Ok(work)
    }

    async fn renew_lease(
        &self,
        work: &ClaimedWork,
        until: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (_write, mut tx) = self.begin_write().await?;
        let lease = sqlx::query(
            "UPDATE leases SET expires_at = ? WHERE flow = ? AND object_key = ? AND owner = ?",
        )
        .bind(until)
        .bind(&work.flow)
        .bind(&work.object_key)
        .bind(&work.owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let jobs = sqlx::query(
            "UPDATE jobs SET lease_expires_at = ?, updated_at = ?
             WHERE lease_owner = ? AND state = 'running'",
        )
        .bind(until)
        .bind(now)
        .bind(&work.owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(lease == 1 && jobs > 0)
    }

    async fn finish_work(
        &self,
        work: &ClaimedWork,
        result: &AttemptResult,
        transitions: &[JobTransition],
    ) -> Result<bool, StoreError> {
        let (_write, mut tx) = self.begin_write().await?;
        let held =
            sqlx::query("DELETE FROM leases WHERE flow = ? AND object_key = ? AND owner = ?")
                .bind(&work.flow)
                .bind(&work.object_key)
                .bind(&work.owner)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
        let summary = result.summary.as_ref().map(|v| v.to_string());
        for t in transitions {
            sqlx::query(
                "UPDATE attempts SET finished_at = ?, outcome = ?, error = ?, summary = ?
                 WHERE id = ? AND finished_at IS NULL",
            )
            .bind(result.finished_at)
            .bind(result.outcome)
            .bind(&result.error)
            .bind(&summary)
            .bind(t.attempt_id)
            .execute(&mut *tx)
            .await?;
            let finished = (t.state != state::PENDING).then_some(result.finished_at);
            sqlx::query(
                "UPDATE jobs SET state = ?, next_attempt_at = ?, last_error = ?,
                        lease_owner = NULL, lease_expires_at = NULL, updated_at = ?,
                        finished_at = ?, attempts = attempts - ?
                 WHERE id = ? AND lease_owner = ? AND state = 'running'",
            )
            .bind(t.state)
            .bind(t.next_attempt_at)
            .bind(&t.last_error)
            .bind(result.finished_at)
            .bind(finished)
            .bind(i64::from(t.refund_attempt))
            .bind(t.job_id)
            .bind(&work.owner)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(at) = retry_time(transitions) {
            sqlx::query(&join_retry_after_run_sql("?1", "?2", "?3"))
                .bind(at)
                .bind(&work.flow)
                .bind(&work.object_key)
                .execute(&mut *tx)
                .await?;
        }
        refresh_events(&mut tx, &work.event_ids(), result.finished_at).await?;
        tx.commit().await?;
        Ok(held)
    }

    async fn release_work(&self, work: &ClaimedWork, now: i64) -> Result<(), StoreError> {
        let (_write, mut tx) = self.begin_write().await?;
        for job in &work.jobs {
            sqlx::query(
                "UPDATE attempts SET finished_at = ?, outcome = ?, error = ?
                 WHERE id = ? AND finished_at IS NULL",
            )
            .bind(now)
            .bind(outcome::RELEASED)
            .bind(RELEASED_AT_SHUTDOWN)
            .bind(job.attempt_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE jobs SET state = 'pending', attempts = attempts - 1, next_attempt_at = ?,
                        lease_owner = NULL, lease_expires_at = NULL, updated_at = ?
                 WHERE id = ? AND lease_owner = ? AND state = 'running'",
            )
            .bind(now)
            .bind(now)
            .bind(job.job_id)
            .bind(&work.owner)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM leases WHERE flow = ? AND object_key = ? AND owner = ?")
            .bind(&work.flow)
            .bind(&work.object_key)
            .bind(&work.owner)
            .execute(&mut *tx)
            .await?;
        refresh_events(&mut tx, &work.event_ids(), now).await?;
        tx.commit().await?;
        self.wakeup.notify_waiters();
        Ok(())
    }

    async fn replay_event(
        &self,
        id: &str,
        note: &str,
        now: i64,
    ) -> Result<ReplayOutcome, StoreError> {
        let (_write, mut tx) = self.begin_write().await?;
        let current: Option<String> = sqlx::query_scalar("SELECT state FROM events WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(current) = current else {
            return Ok(ReplayOutcome::NotFound);
        };
        if !state::FINISHED.contains(&current.as_str()) {
            return Ok(ReplayOutcome::InProgress);
        }
        let jobs = sqlx::query(
            "UPDATE jobs SET state = 'pending', attempts_base = attempts, age_from = ?,
                    next_attempt_at = ?, last_error = NULL, finished_at = NULL, updated_at = ?
             WHERE event_id = ? AND state IN ('done', 'dead', 'ignored')",
        )
        .bind(now)
        .bind(now)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if jobs == 0 {
            // Never routed to a flow: route it again (the flows may have changed).
            sqlx::query(
                "UPDATE events SET state = 'pending', last_error = NULL, next_attempt_at = ?,
                        updated_at = ? WHERE id = ?",
            )
            .bind(now)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        } else {
            refresh_events(&mut tx, &[id.to_string()], now).await?;
        }
        sqlx::query("INSERT INTO event_notes (event_id, at, note) VALUES (?, ?, ?)")
            .bind(id)
            .bind(now)
            .bind(note)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.wakeup.notify_waiters();
        Ok(ReplayOutcome::Replayed)
    }

    async fn list_events(
        &self,
        filter: &EventFilter,
        page: &Page,
    ) -> Result<EventPage, StoreError> {
        let mut query =
            sqlx::QueryBuilder::<Sqlite>::new(format!("SELECT {LIST_COLUMNS} FROM events"));
        push_event_filter(&mut query, filter, page);
        let rows = query.build().fetch_all(&self.pool).await?;
        let events = rows.iter().map(event_from_row).collect::<Result<_, _>>()?;
        Ok(into_page(events, page.limit))
    }

    async fn event_detail(&self, id: &str) -> Result<Option<EventDetail>, StoreError> {
        let Some(event) = self.get_event(id).await? else {
            return Ok(None);
        };
        let mut jobs = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE event_id = ? ORDER BY id"
        ))
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(job_from_row)
        .collect::<Result<Vec<_>, _>>()?;
        let attempts = sqlx::query(
            "SELECT a.job_id, a.attempt, a.owner, a.started_at, a.finished_at, a.outcome, a.error,
                    a.summary
             FROM attempts a JOIN jobs j ON j.id = a.job_id
             WHERE j.event_id = ? ORDER BY a.id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        for row in &attempts {
            let job_id: i64 = row.try_get("job_id")?;
            if let Some(job) = jobs.iter_mut().find(|j| j.id == job_id) {
                job.history.push(attempt_from_row(row)?);
            }
        }
        let notes = sqlx::query("SELECT at, note FROM event_notes WHERE event_id = ? ORDER BY id")
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(EventNote {
                    at: r.try_get("at")?,
                    note: r.try_get("note")?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Some(EventDetail { event, jobs, notes }))
    }

    async fn flow_stats(&self) -> Result<Vec<FlowStats>, StoreError> {
        let counts: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT flow, state, COUNT(*) FROM jobs GROUP BY flow, state ORDER BY flow, state",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut stats = super::group_flow_counts(counts);
        for flow in &mut stats {
            let last: Option<(Option<String>, Option<i64>)> = sqlx::query_as(
                "SELECT a.error, a.finished_at FROM attempts a JOIN jobs j ON j.id = a.job_id
                 WHERE j.flow = ? AND a.error IS NOT NULL ORDER BY a.id DESC LIMIT 1",
            )
            .bind(&flow.flow)
            .fetch_optional(&self.pool)
            .await?;
            if let Some((error, at)) = last {
                flow.last_error = error;
                flow.last_error_at = at;
            }
        }
        Ok(stats)
    }

    async fn backlog(&self, now: i64) -> Result<Backlog, StoreError> {
        let (events, jobs, oldest, dead): (i64, i64, Option<i64>, i64) =
            sqlx::query_as(super::BACKLOG_SQL)
                .fetch_one(&self.pool)
                .await?;
        Ok(Backlog {
            events,
            jobs,
            oldest_pending_age_ms: oldest.map_or(0, |t| (now - t).max(0)),
            dead_letters: dead,
        })
    }

    async fn prune_finished(&self, older_than: i64, batch: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "DELETE FROM events WHERE id IN (
                SELECT id FROM events WHERE state IN ('done', 'ignored') AND updated_at < ?
                ORDER BY updated_at LIMIT ?)",
        )
        .bind(older_than)
        .bind(batch)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn get_cursor(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM cursors WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn set_cursor(&self, name: &str, value: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO cursors (name, value, updated_at) VALUES (?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value,
                                              updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(value)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_workflow(&self, workflow: &WorkflowRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO workflows (process_id, flow, object_key, started_at, state, decision,
                                    updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (process_id) DO UPDATE SET flow = excluded.flow,
                object_key = excluded.object_key, started_at = excluded.started_at,
                state = excluded.state, decision = excluded.decision,
                updated_at = excluded.updated_at",
        )
        .bind(&workflow.process_id)
        .bind(&workflow.flow)
        .bind(&workflow.object_key)
        .bind(workflow.started_at)
        .bind(&workflow.state)
        .bind(workflow.decision.as_ref().map(|d| d.to_string()))
        .bind(workflow.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn running_workflows(&self, limit: i64) -> Result<Vec<WorkflowRecord>, StoreError> {
        sqlx::query(
            "SELECT process_id, flow, object_key, started_at, state, decision, updated_at
             FROM workflows WHERE state = ? ORDER BY started_at LIMIT ?",
        )
        .bind(workflow_state::RUNNING)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(workflow_from_row)
        .collect()
    }

    async fn decide_workflow(
        &self,
        process_id: &str,
        decision: &serde_json::Value,
        now: i64,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "UPDATE workflows SET state = ?, decision = ?, updated_at = ?
             WHERE process_id = ? AND state = ?",
        )
        .bind(workflow_state::DECIDED)
        .bind(decision.to_string())
        .bind(now)
        .bind(process_id)
        .bind(workflow_state::RUNNING)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    async fn get_workflow(&self, process_id: &str) -> Result<Option<WorkflowRecord>, StoreError> {
        sqlx::query(
            "SELECT process_id, flow, object_key, started_at, state, decision, updated_at FROM workflows WHERE process_id = ?",
        )
        .bind(process_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(workflow_from_row)
        .transpose()
    }

    async fn workflows_of(
        &self,
        flow: &str,
        key_prefix: &str,
    ) -> Result<Vec<WorkflowRecord>, StoreError> {
        sqlx::query(
            "SELECT process_id, flow, object_key, started_at, state, decision, updated_at FROM workflows WHERE flow = ? AND substr(object_key, 1, length(?)) = ? ORDER BY started_at, process_id",
        )
        .bind(flow)
        .bind(key_prefix)
        .bind(key_prefix)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(workflow_from_row)
        .collect()
    }

    async fn get_link(
        &self,
        flow: &str,
        object_key: &str,
    ) -> Result<Option<LinkRecord>, StoreError> {
        sqlx::query(
            "SELECT flow, object_key, workspace_id, state, updated_at FROM links WHERE flow = ? AND object_key = ?",
        )
        .bind(flow)
        .bind(object_key)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(link_from_row)
        .transpose()
    }

    async fn put_link(&self, link: &LinkRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO links (flow, object_key, workspace_id, state, updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (flow, object_key) DO UPDATE SET workspace_id = excluded.workspace_id, state = excluded.state, updated_at = excluded.updated_at",
        )
        .bind(&link.flow)
        .bind(&link.object_key)
        .bind(link.workspace_id)
        .bind(link.state.to_string())
        .bind(link.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_document(
        &self,
        flow: &str,
        object_key: &str,
        logical_name: &str,
    ) -> Result<Option<DocumentRecord>, StoreError> {
        sqlx::query(
            "SELECT flow, object_key, logical_name, node_id, content_hash, source_version, meta_hash, version, updated_at FROM documents WHERE flow = ? AND object_key = ? AND logical_name = ?",
        )
        .bind(flow)
        .bind(object_key)
        .bind(logical_name)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(document_from_row)
        .transpose()
    }

    async fn list_documents(
        &self,
        flow: &str,
        object_key: &str,
    ) -> Result<Vec<DocumentRecord>, StoreError> {
        sqlx::query(
            "SELECT flow, object_key, logical_name, node_id, content_hash, source_version, meta_hash, version, updated_at FROM documents WHERE flow = ? AND object_key = ? ORDER BY logical_name",
        )
        .bind(flow)
        .bind(object_key)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(document_from_row)
        .collect()
    }

    async fn put_document(&self, document: &DocumentRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO documents (flow, object_key, logical_name, node_id, content_hash, source_version, meta_hash, version, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (flow, object_key, logical_name) DO UPDATE SET node_id = excluded.node_id, content_hash = excluded.content_hash, source_version = excluded.source_version, meta_hash = excluded.meta_hash, version = excluded.version, updated_at = excluded.updated_at",
        )
        .bind(&document.flow)
        .bind(&document.object_key)
        .bind(&document.logical_name)
        .bind(document.node_id)
        .bind(&document.content_hash)
        .bind(&document.source_version)
        .bind(&document.meta_hash)
        .bind(document.version)
        .bind(document.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_writeback(&self, writeback: &WritebackRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO writebacks (module, object_id, fields, values_hash, mod_time_after, at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&writeback.module)
        .bind(&writeback.object_id)
        .bind(serde_json::json!(writeback.fields).to_string())
        .bind(&writeback.values_hash)
        .bind(&writeback.mod_time_after)
        .bind(writeback.at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn last_writeback(
        &self,
        module: &str,
        object_id: &str,
    ) -> Result<Option<WritebackRecord>, StoreError> {
        sqlx::query(
            "SELECT module, object_id, fields, values_hash, mod_time_after, at FROM writebacks WHERE module = ? AND object_id = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(module)
        .bind(object_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(writeback_from_row)
        .transpose()
    }

    async fn recent_writebacks(
        &self,
        module: &str,
        object_id: &str,
        limit: i64,
    ) -> Result<Vec<WritebackRecord>, StoreError> {
        sqlx::query(
            "SELECT module, object_id, fields, values_hash, mod_time_after, at FROM writebacks
             WHERE module = ? AND object_id = ? ORDER BY id DESC LIMIT ?",
        )
        .bind(module)
        .bind(object_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(writeback_from_row)
        .collect()
    }

    async fn get_intent(
        &self,
        flow: &str,
        object_key: &str,
        action: &str,
        target: &str,
    ) -> Result<Option<IntentRecord>, StoreError> {
        sqlx::query(
            "SELECT flow, object_key, action, target, token, state, detail, created_at, updated_at
             FROM intents WHERE flow = ? AND object_key = ?
               AND action = ? AND target = ?",
        )
        .bind(flow)
        .bind(object_key)
        .bind(action)
        .bind(target)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(intent_from_row)
        .transpose()
    }

    async fn put_intent(&self, intent: &IntentRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO intents (flow, object_key, action, target, token, state, detail,
                                  created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (flow, object_key, action, target) DO UPDATE SET
                token = excluded.token, state = excluded.state, detail = excluded.detail,
                updated_at = excluded.updated_at",
        )
        .bind(&intent.flow)
        .bind(&intent.object_key)
        .bind(&intent.action)
        .bind(&intent.target)
        .bind(&intent.token)
        .bind(&intent.state)
        .bind(intent.detail.to_string())
        .bind(intent.created_at)
        .bind(intent.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
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
        let _write = self.write_lock.lock().await;
        let outcomes = commit_group(&mut self.connection, batch).await?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.wakeup.notify_waiters();
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

// ----- worker queries -----

const EVENT_COLUMNS: &str = "id, source, source_event_id, kind, module, object_id, object_key,
        payload, raw_body, headers, received_at, state, attempts, next_attempt_at, last_error,
        updated_at";

/// Like [`EVENT_COLUMNS`] without the raw body, which lists do not need.
const LIST_COLUMNS: &str = "id, source, source_event_id, kind, module, object_id, object_key,
        payload, X'' AS raw_body, headers, received_at, state, attempts, next_attempt_at,
        last_error, updated_at";

const JOB_COLUMNS: &str = "id, flow, object_key, state, attempts, next_attempt_at, lease_owner,
        lease_expires_at, last_error, created_at, updated_at, finished_at";

/// Routes one event unless another worker did already; `true` when this call routed it.
async fn route_one(
    tx: &mut Transaction<'_, Sqlite>,
    routing: &Routing,
    now: i64,
) -> Result<bool, StoreError> {
    let (next, reason) = if routing.flows.is_empty() {
        (state::IGNORED, Some(NO_FLOW_WANTS_IT))
    } else {
        (state::ROUTED, None)
    };
    let changed = sqlx::query(
        "UPDATE events SET state = ?, last_error = ?, updated_at = ?
         WHERE id = ? AND state = 'pending'",
    )
    .bind(next)
    .bind(reason)
    .bind(now)
    .bind(&routing.event_id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if changed == 0 {
        return Ok(false);
    }
    for flow in &routing.flows {
        sqlx::query(
            "INSERT INTO jobs (event_id, flow, object_key, state, age_from, next_attempt_at,
                               created_at, updated_at)
             VALUES (?, ?, ?, 'pending', ?, ?, ?, ?)
             ON CONFLICT (event_id, flow) DO NOTHING",
        )
        .bind(&routing.event_id)
        .bind(flow)
        .bind(&routing.object_key)
        .bind(now)
        .bind(now)
        .bind(now)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query(&join_waiting_retry_sql("?"))
        .bind(&routing.event_id)
        .execute(&mut **tx)
        .await?;
    Ok(true)
}

/// Jobs whose lease ran out while `running` (their worker died) become pending again, or dead
/// when that was their last attempt; their open attempts are closed as `abandoned`.
async fn reap_expired(
    tx: &mut Transaction<'_, Sqlite>,
    now: i64,
    max_attempts: i64,
) -> Result<(), StoreError> {
    let expired: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT id, event_id, attempts - attempts_base FROM jobs
         WHERE state = 'running' AND lease_expires_at <= ?",
    )
    .bind(now)
    .fetch_all(&mut **tx)
    .await?;
    for (job_id, _, used) in &expired {
        sqlx::query(
            "UPDATE attempts SET finished_at = ?, outcome = ?, error = ?
             WHERE job_id = ? AND finished_at IS NULL",
        )
        .bind(now)
        .bind(outcome::ABANDONED)
        .bind(LEASE_EXPIRED)
        .bind(job_id)
        .execute(&mut **tx)
        .await?;
        let next = if *used >= max_attempts {
            state::DEAD
        } else {
            state::PENDING
        };
        let finished = (next == state::DEAD).then_some(now);
        sqlx::query(
            "UPDATE jobs SET state = ?, next_attempt_at = ?, lease_owner = NULL,
                    lease_expires_at = NULL, last_error = ?, updated_at = ?, finished_at = ?
             WHERE id = ?",
        )
        .bind(next)
        .bind(now)
        .bind(LEASE_EXPIRED)
        .bind(now)
        .bind(finished)
        .bind(job_id)
        .execute(&mut **tx)
        .await?;
    }
    let ids: Vec<String> = expired.into_iter().map(|(_, e, _)| e).collect();
    refresh_events(tx, &ids, now).await
}

/// Takes the lease of the first due key that has none and claims that key's pending jobs.
async fn claim_unit(
    tx: &mut Transaction<'_, Sqlite>,
    request: &ClaimRequest,
) -> Result<Option<ClaimedWork>, StoreError> {
    let candidate: Option<(String, String)> = sqlx::query_as(
        "SELECT flow, object_key FROM jobs j
         WHERE state = 'pending' AND next_attempt_at <= ?
           AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.flow = j.flow
                           AND l.object_key = j.object_key AND l.expires_at > ?)
         ORDER BY next_attempt_at, id LIMIT 1",
    )
    .bind(request.now)
    .bind(request.now)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((flow, object_key)) = candidate else {
        return Ok(None);
    };
    let leased = sqlx::query(
        "INSERT INTO leases (flow, object_key, owner, expires_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (flow, object_key) DO UPDATE SET owner = excluded.owner,
                expires_at = excluded.expires_at
         WHERE leases.expires_at <= ?",
    )
    .bind(&flow)
    .bind(&object_key)
    .bind(&request.owner)
    .bind(request.lease_until)
    .bind(request.now)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if leased == 0 {
        return Ok(None);
    }
    // Every pending job of the key joins, due or not: one reconcile serves them all.
    let claimed: Vec<(i64, String, i64, i64, i64)> = sqlx::query_as(
        "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = ?,
                lease_expires_at = ?, updated_at = ?
         WHERE id IN (SELECT id FROM jobs WHERE flow = ? AND object_key = ?
                      AND state = 'pending' ORDER BY id LIMIT ?)
         RETURNING id, event_id, attempts, attempts - attempts_base, age_from",
    )
    .bind(&request.owner)
    .bind(request.lease_until)
    .bind(request.now)
    .bind(&flow)
    .bind(&object_key)
    .bind(request.max_jobs)
    .fetch_all(&mut **tx)
    .await?;
    let mut jobs = Vec::with_capacity(claimed.len());
    for (job_id, event_id, attempt, budget_attempt, age_from) in claimed {
        let attempt_id: i64 = sqlx::query_scalar(
            "INSERT INTO attempts (job_id, attempt, owner, started_at) VALUES (?, ?, ?, ?)
             RETURNING id",
        )
        .bind(job_id)
        .bind(attempt)
        .bind(&request.owner)
        .bind(request.now)
        .fetch_one(&mut **tx)
        .await?;
        let row = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?"))
            .bind(&event_id)
            .fetch_one(&mut **tx)
            .await?;
        jobs.push(ClaimedJob {
            job_id,
            attempt_id,
            attempt,
            budget_attempt,
            age_from,
            event: event_from_row(&row)?,
        });
    }
    jobs.sort_by(|a, b| a.event.id.cmp(&b.event.id));
    Ok(Some(ClaimedWork {
        owner: request.owner.clone(),
        flow,
        object_key,
        lease_until: request.lease_until,
        jobs,
    }))
}

async fn refresh_events(
    tx: &mut Transaction<'_, Sqlite>,
    event_ids: &[String],
    now: i64,
) -> Result<(), StoreError> {
    let sql = refresh_event_sql("?1", "?2");
    let mut seen = std::collections::HashSet::new();
    for id in event_ids {
        if seen.insert(id) {
            sqlx::query(&sql)
                .bind(now)
                .bind(id)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

fn parse_json(text: Option<String>) -> Result<Option<serde_json::Value>, StoreError> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))
    })
    .transpose()
}

fn job_from_row(row: &SqliteRow) -> Result<JobRecord, StoreError> {
    Ok(JobRecord {
        id: row.try_get("id")?,
        flow: row.try_get("flow")?,
        object_key: row.try_get("object_key")?,
        state: row.try_get("state")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        finished_at: row.try_get("finished_at")?,
        history: Vec::new(),
    })
}

fn attempt_from_row(row: &SqliteRow) -> Result<AttemptRecord, StoreError> {
    Ok(AttemptRecord {
        attempt: row.try_get("attempt")?,
        owner: row.try_get("owner")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        outcome: row.try_get("outcome")?,
        error: row.try_get("error")?,
        summary: parse_json(row.try_get("summary")?)?,
    })
}

fn workflow_from_row(row: &SqliteRow) -> Result<WorkflowRecord, StoreError> {
    Ok(WorkflowRecord {
        process_id: row.try_get("process_id")?,
        flow: row.try_get("flow")?,
        object_key: row.try_get("object_key")?,
        started_at: row.try_get("started_at")?,
        state: row.try_get("state")?,
        decision: parse_json(row.try_get("decision")?)?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn link_from_row(row: &SqliteRow) -> Result<LinkRecord, StoreError> {
    Ok(LinkRecord {
        flow: row.try_get("flow")?,
        object_key: row.try_get("object_key")?,
        workspace_id: row.try_get("workspace_id")?,
        state: parse_json(row.try_get("state")?)?.unwrap_or_default(),
        updated_at: row.try_get("updated_at")?,
    })
}

fn document_from_row(row: &SqliteRow) -> Result<DocumentRecord, StoreError> {
    Ok(DocumentRecord {
        flow: row.try_get("flow")?,
        object_key: row.try_get("object_key")?,
        logical_name: row.try_get("logical_name")?,
        node_id: row.try_get("node_id")?,
        content_hash: row.try_get("content_hash")?,
        source_version: row.try_get("source_version")?,
        meta_hash: row.try_get("meta_hash")?,
        version: row.try_get("version")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn writeback_from_row(row: &SqliteRow) -> Result<WritebackRecord, StoreError> {
    let fields: serde_json::Value = parse_json(row.try_get("fields")?)?.unwrap_or_default();
    Ok(WritebackRecord {
        module: row.try_get("module")?,
        object_id: row.try_get("object_id")?,
        fields: serde_json::from_value(fields).unwrap_or_default(),
        values_hash: row.try_get("values_hash")?,
        mod_time_after: row.try_get("mod_time_after")?,
        at: row.try_get("at")?,
    })
}

fn intent_from_row(row: &SqliteRow) -> Result<IntentRecord, StoreError> {
    Ok(IntentRecord {
        flow: row.try_get("flow")?,
        object_key: row.try_get("object_key")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        token: row.try_get("token")?,
        state: row.try_get("state")?,
        detail: parse_json(row.try_get("detail")?)?.unwrap_or_default(),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
