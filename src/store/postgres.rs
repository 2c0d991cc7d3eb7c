//! The PostgreSQL store, for several replicas sharing one database.
//!
//! Claims lock candidate jobs with `FOR UPDATE SKIP LOCKED`; the per-key guard that holds across
//! processes is a row in `leases` (flow, object key) taken with an upsert that only succeeds when
//! the previous lease has expired. Inserts `NOTIFY xecm_events` in their transaction; every
//! replica `LISTEN`s and wakes its worker, with polling as the backstop.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row, Transaction};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::sqlite::missing_migrations;
use super::{
    AttemptRecord, AttemptResult, BACKLOG_SQL, Backlog, ClaimRequest, ClaimedJob, ClaimedWork,
    DocumentRecord, EventDetail, EventFilter, EventNote, EventPage, FlowStats, InsertOutcome,
    IntentRecord, JobRecord, JobTransition, LEASE_EXPIRED, LinkRecord, NO_FLOW_WANTS_IT, NewEvent,
    Page, RELEASED_AT_SHUTDOWN, ReplayOutcome, Routing, Store, StoreError, StoredEvent,
    WorkflowRecord, WritebackRecord, group_flow_counts, into_page, join_retry_after_run_sql,
    join_waiting_retry_sql, new_event_id, outcome, push_event_filter, refresh_event_sql,
    retry_time, state, workflow_state,
};
use crate::config::StoreConfig;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// The channel on which new events are announced.
pub const CHANNEL: &str = "xecm_events";

/// Rows per multi-row insert (PostgreSQL allows 65535 bind parameters per statement).
const INSERT_CHUNK: usize = 1000;

/// Keys tried per claim before giving up the round (another replica holds them).
const CLAIM_TRIES: usize = 5;

pub struct PgStore {
    pool: PgPool,
    wakeup: Arc<Notify>,
    listener: Mutex<Option<JoinHandle<()>>>,
    listen_pool: PgPool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    pub async fn open(cfg: &StoreConfig) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(&cfg.url)
            .map_err(|e| StoreError::Config(format!("`store.url`: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(cfg.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        // LISTEN holds its connection for good: give it its own, outside the work pool.
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(options);
        let wakeup = Arc::new(Notify::new());
        let listener = tokio::spawn(listen(listen_pool.clone(), wakeup.clone()));
        Ok(Self {
            pool,
            wakeup,
            listener: Mutex::new(Some(listener)),
            listen_pool,
        })
    }

    /// The connection pool, for tests and tools.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Turns `NOTIFY xecm_events` into local wake-ups. When LISTEN is unavailable (e.g. behind a
/// transaction-mode pooler) the worker still polls, so failures only cost latency.
async fn listen(pool: PgPool, wakeup: Arc<Notify>) {
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(CHANNEL).await {
                Ok(()) => loop {
                    match listener.try_recv().await {
                        Ok(Some(_)) => wakeup.notify_waiters(),
                        // Reconnected: notifications may have been missed meanwhile.
                        Ok(None) => wakeup.notify_waiters(),
                        Err(error) => {
                            tracing::warn!(%error, "LISTEN connection failed; polling only");
                            break;
                        }
                    }
                },
                Err(error) => tracing::warn!(%error, "LISTEN failed; polling only"),
            },
            Err(error) if pool.is_closed() => {
                tracing::debug!(%error, "store closed; listener stops");
                return;
            }
            Err(error) => tracing::warn!(%error, "cannot open LISTEN connection; polling only"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn insert_events(&self, events: Vec<NewEvent>) -> Result<Vec<InsertOutcome>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        if self.pool.is_closed() {
            return Err(StoreError::Closed);
        }
        let ids: Vec<String> = events.iter().map(|_| new_event_id()).collect();
        let mut tx = self.pool.begin().await?;
        let mut accepted = HashSet::new();
        for (chunk, chunk_ids) in events.chunks(INSERT_CHUNK).zip(ids.chunks(INSERT_CHUNK)) {
            accepted.extend(insert_chunk(&mut tx, chunk, chunk_ids).await?);
        }
        let mut outcomes = Vec::with_capacity(events.len());
        for (event, id) in events.iter().zip(ids) {
            if accepted.contains(&id) {
                outcomes.push(InsertOutcome::Accepted(id));
            } else {
                let existing: String = sqlx::query_scalar(
                    "SELECT id FROM events WHERE source = $1 AND source_event_id = $2",
                )
                .bind(event.source.as_str())
                .bind(&event.source_event_id)
                .fetch_one(&mut *tx)
                .await?;
                outcomes.push(InsertOutcome::Duplicate(existing));
            }
        }
        if !accepted.is_empty() {
            notify(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn readiness(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
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
        let row = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1"))
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
        let listener = self.listener.lock().expect("listener lock").take();
        if let Some(listener) = listener {
            listener.abort();
            let _ = listener.await;
        }
        self.listen_pool.close().await;
        self.pool.close().await;
    }

    fn wakeup(&self) -> Arc<Notify> {
        self.wakeup.clone()
    }

    async fn unrouted_events(&self, limit: i64) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE state = 'pending' ORDER BY id LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn route_events(&self, routings: &[Routing], now: i64) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await?;
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
        let mut tx = self.pool.begin().await?;
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
        let mut tx = self.pool.begin().await?;
        let lease = sqlx::query(
            "UPDATE leases SET expires_at = $1
             WHERE flow = $2 AND object_key = $3 AND owner = $4",
        )
        .bind(until)
        .bind(&work.flow)
        .bind(&work.object_key)
        .bind(&work.owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let jobs = sqlx::query(
            "UPDATE jobs SET lease_expires_at = $1, updated_at = $2
             WHERE lease_owner = $3 AND state = 'running'",
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
        let mut tx = self.pool.begin().await?;
        let held = delete_lease(&mut tx, work).await?;
        for t in transitions {
            sqlx::query(
                "UPDATE attempts SET finished_at = $1, outcome = $2, error = $3, summary = $4
                 WHERE id = $5 AND finished_at IS NULL",
            )
            .bind(result.finished_at)
            .bind(result.outcome)
            .bind(&result.error)
            .bind(&result.summary)
            .bind(t.attempt_id)
            .execute(&mut *tx)
            .await?;
            let finished = (t.state != state::PENDING).then_some(result.finished_at);
            sqlx::query(
                "UPDATE jobs SET state = $1, next_attempt_at = $2, last_error = $3,
                        lease_owner = NULL, lease_expires_at = NULL, updated_at = $4,
                        finished_at = $5, attempts = attempts - $8
                 WHERE id = $6 AND lease_owner = $7 AND state = 'running'",
            )
            .bind(t.state)
            .bind(t.next_attempt_at)
            .bind(&t.last_error)
            .bind(result.finished_at)
            .bind(finished)
            .bind(t.job_id)
            .bind(&work.owner)
            .bind(i64::from(t.refund_attempt))
            .execute(&mut *tx)
            .await?;
        }
        if let Some(at) = retry_time(transitions) {
            sqlx::query(&join_retry_after_run_sql("$1", "$2", "$3"))
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
        let mut tx = self.pool.begin().await?;
        for job in &work.jobs {
            sqlx::query(
                "UPDATE attempts SET finished_at = $1, outcome = $2, error = $3
                 WHERE id = $4 AND finished_at IS NULL",
            )
            .bind(now)
            .bind(outcome::RELEASED)
            .bind(RELEASED_AT_SHUTDOWN)
            .bind(job.attempt_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE jobs SET state = 'pending', attempts = attempts - 1, next_attempt_at = $1,
                        lease_owner = NULL, lease_expires_at = NULL, updated_at = $1
                 WHERE id = $2 AND lease_owner = $3 AND state = 'running'",
            )
            .bind(now)
            .bind(job.job_id)
            .bind(&work.owner)
            .execute(&mut *tx)
            .await?;
        }
        delete_lease(&mut tx, work).await?;
        refresh_events(&mut tx, &work.event_ids(), now).await?;
        notify(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn replay_event(
        &self,
        id: &str,
        note: &str,
        now: i64,
    ) -> Result<ReplayOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let current: Option<String> =
            sqlx::query_scalar("SELECT state FROM events WHERE id = $1 FOR UPDATE")
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
            "UPDATE jobs SET state = 'pending', attempts_base = attempts, age_from = $1,
                    next_attempt_at = $1, last_error = NULL, finished_at = NULL, updated_at = $1
             WHERE event_id = $2 AND state IN ('done', 'dead', 'ignored')",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if jobs == 0 {
            // Never routed to a flow: route it again (the flows may have changed).
            sqlx::query(
                "UPDATE events SET state = 'pending', last_error = NULL, next_attempt_at = $1,
                        updated_at = $1 WHERE id = $2",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        } else {
            refresh_events(&mut tx, &[id.to_string()], now).await?;
        }
        sqlx::query("INSERT INTO event_notes (event_id, at, note) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(now)
            .bind(note)
            .execute(&mut *tx)
            .await?;
        notify(&mut tx).await?;
        tx.commit().await?;
        Ok(ReplayOutcome::Replayed)
    }

    async fn list_events(
        &self,
        filter: &EventFilter,
        page: &Page,
    ) -> Result<EventPage, StoreError> {
        let mut query = QueryBuilder::<Postgres>::new(format!("SELECT {LIST_COLUMNS} FROM events"));
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
            "SELECT {JOB_COLUMNS} FROM jobs WHERE event_id = $1 ORDER BY id"
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
             WHERE j.event_id = $1 ORDER BY a.id",
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
        let notes = sqlx::query("SELECT at, note FROM event_notes WHERE event_id = $1 ORDER BY id")
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
        let mut stats = group_flow_counts(counts);
        for flow in &mut stats {
            let last: Option<(Option<String>, Option<i64>)> = sqlx::query_as(
                "SELECT a.error, a.finished_at FROM attempts a JOIN jobs j ON j.id = a.job_id
                 WHERE j.flow = $1 AND a.error IS NOT NULL ORDER BY a.id DESC LIMIT 1",
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
            sqlx::query_as(BACKLOG_SQL).fetch_one(&self.pool).await?;
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
                SELECT id FROM events WHERE state IN ('done', 'ignored') AND updated_at < $1
                ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(older_than)
        .bind(batch)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn get_cursor(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM cursors WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn set_cursor(&self, name: &str, value: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO cursors (name, value, updated_at) VALUES ($1, $2, $3)
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
             VALUES ($1, $2, $3, $4, $5, $6, $7)
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
        .bind(&workflow.decision)
        .bind(workflow.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn running_workflows(&self, limit: i64) -> Result<Vec<WorkflowRecord>, StoreError> {
        sqlx::query(
            "SELECT process_id, flow, object_key, started_at, state, decision, updated_at
             FROM workflows WHERE state = $1 ORDER BY started_at LIMIT $2",
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
            "UPDATE workflows SET state = $1, decision = $2, updated_at = $3
             WHERE process_id = $4 AND state = $5",
        )
        .bind(workflow_state::DECIDED)
        .bind(decision)
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
            "SELECT process_id, flow, object_key, started_at, state, decision, updated_at FROM workflows WHERE process_id = $1",
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
            "SELECT process_id, flow, object_key, started_at, state, decision, updated_at FROM workflows WHERE flow = $1 AND substr(object_key, 1, length($2)) = $3 ORDER BY started_at, process_id",
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
            "SELECT flow, object_key, workspace_id, state, updated_at FROM links WHERE flow = $1 AND object_key = $2",
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
            "INSERT INTO links (flow, object_key, workspace_id, state, updated_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (flow, object_key) DO UPDATE SET workspace_id = excluded.workspace_id, state = excluded.state, updated_at = excluded.updated_at",
        )
        .bind(&link.flow)
        .bind(&link.object_key)
        .bind(link.workspace_id)
        .bind(&link.state)
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
            "SELECT flow, object_key, logical_name, node_id, content_hash, source_version, meta_hash, version, updated_at FROM documents WHERE flow = $1 AND object_key = $2 AND logical_name = $3",
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
            "SELECT flow, object_key, logical_name, node_id, content_hash, source_version, meta_hash, version, updated_at FROM documents WHERE flow = $1 AND object_key = $2 ORDER BY logical_name",
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
            "INSERT INTO documents (flow, object_key, logical_name, node_id, content_hash, source_version, meta_hash, version, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (flow, object_key, logical_name) DO UPDATE SET node_id = excluded.node_id, content_hash = excluded.content_hash, source_version = excluded.source_version, meta_hash = excluded.meta_hash, version = excluded.version, updated_at = excluded.updated_at",
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
            "INSERT INTO writebacks (module, object_id, fields, values_hash, mod_time_after, at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&writeback.module)
        .bind(&writeback.object_id)
        .bind(serde_json::json!(writeback.fields))
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
            "SELECT module, object_id, fields, values_hash, mod_time_after, at FROM writebacks WHERE module = $1 AND object_id = $2 ORDER BY id DESC LIMIT 1",
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
             WHERE module = $1 AND object_id = $2 ORDER BY id DESC LIMIT $3",
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
             FROM intents WHERE flow = $1 AND object_key = $2
               AND action = $3 AND target = $4",
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
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
        .bind(&intent.detail)
        .bind(intent.created_at)
        .bind(intent.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

const EVENT_COLUMNS: &str = "id, source, source_event_id, kind, module, object_id, object_key,
        payload, raw_body, headers, received_at, state, attempts, next_attempt_at, last_error,
        updated_at";

/// Like [`EVENT_COLUMNS`] without the raw body, which lists do not need.
const LIST_COLUMNS: &str = "id, source, source_event_id, kind, module, object_id, object_key,
        payload, ''::bytea AS raw_body, headers, received_at, state, attempts, next_attempt_at,
        last_error, updated_at";

const JOB_COLUMNS: &str = "id, flow, object_key, state, attempts, next_attempt_at, lease_owner,
        lease_expires_at, last_error, created_at, updated_at, finished_at";

/// One multi-row `INSERT … ON CONFLICT DO NOTHING`; returns the ids of the rows it wrote.
async fn insert_chunk(
    tx: &mut Transaction<'_, Postgres>,
    events: &[NewEvent],
    ids: &[String],
) -> Result<Vec<String>, StoreError> {
    let mut query = QueryBuilder::<Postgres>::new(
        "INSERT INTO events (id, source, source_event_id, kind, module, object_id, object_key,
                             payload, raw_body, headers, received_at, state, attempts,
                             next_attempt_at, updated_at) ",
    );
    query.push_values(events.iter().zip(ids), |mut row, (event, id)| {
        row.push_bind(id.clone())
            .push_bind(event.source.as_str())
            .push_bind(event.source_event_id.clone())
            .push_bind(event.kind.clone())
            .push_bind(event.module.clone())
            .push_bind(event.object_id.clone())
            .push_bind(event.object_key.clone())
            .push_bind(event.payload.clone())
            .push_bind(event.raw_body.to_vec())
            .push_bind(event.headers.clone())
            .push_bind(event.received_at)
            .push_bind(state::PENDING)
            .push_bind(0_i64)
            .push_bind(event.received_at)
            .push_bind(event.received_at);
    });
    query.push(" ON CONFLICT (source, source_event_id) DO NOTHING RETURNING id");
    Ok(query
        .build_query_scalar::<String>()
        .fetch_all(&mut **tx)
        .await?)
}

/// Announces new work to every replica when the transaction commits.
async fn notify(tx: &mut Transaction<'_, Postgres>) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn delete_lease(
    tx: &mut Transaction<'_, Postgres>,
    work: &ClaimedWork,
) -> Result<bool, StoreError> {
    Ok(
        sqlx::query("DELETE FROM leases WHERE flow = $1 AND object_key = $2 AND owner = $3")
            .bind(&work.flow)
            .bind(&work.object_key)
            .bind(&work.owner)
            .execute(&mut **tx)
            .await?
            .rows_affected()
            == 1,
    )
}

/// Routes one event unless another replica did already; `true` when this call routed it.
async fn route_one(
    tx: &mut Transaction<'_, Postgres>,
    routing: &Routing,
    now: i64,
) -> Result<bool, StoreError> {
    let (next, reason) = if routing.flows.is_empty() {
        (state::IGNORED, Some(NO_FLOW_WANTS_IT))
    } else {
        (state::ROUTED, None)
    };
    // The row lock serializes replicas routing the same event; the loser sees 0 rows.
    let changed = sqlx::query(
        "UPDATE events SET state = $1, last_error = $2, updated_at = $3
         WHERE id = $4 AND state = 'pending'",
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
             VALUES ($1, $2, $3, 'pending', $4, $4, $4, $4)
             ON CONFLICT (event_id, flow) DO NOTHING",
        )
        .bind(&routing.event_id)
        .bind(flow)
        .bind(&routing.object_key)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query(&join_waiting_retry_sql("$1"))
        .bind(&routing.event_id)
        .execute(&mut **tx)
        .await?;
    Ok(true)
}

/// Jobs whose lease ran out while `running` (their worker died) become pending again, or dead
/// when that was their last attempt; their open attempts are closed as `abandoned`.
async fn reap_expired(
    tx: &mut Transaction<'_, Postgres>,
    now: i64,
    max_attempts: i64,
) -> Result<(), StoreError> {
    let expired: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT id, event_id, attempts - attempts_base FROM jobs
         WHERE state = 'running' AND lease_expires_at <= $1
         FOR UPDATE SKIP LOCKED",
    )
    .bind(now)
    .fetch_all(&mut **tx)
    .await?;
    for (job_id, _, used) in &expired {
        sqlx::query(
            "UPDATE attempts SET finished_at = $1, outcome = $2, error = $3
             WHERE job_id = $4 AND finished_at IS NULL",
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
            "UPDATE jobs SET state = $1, next_attempt_at = $2, lease_owner = NULL,
                    lease_expires_at = NULL, last_error = $3, updated_at = $2, finished_at = $4
             WHERE id = $5",
        )
        .bind(next)
        .bind(now)
        .bind(LEASE_EXPIRED)
        .bind(finished)
        .bind(job_id)
        .execute(&mut **tx)
        .await?;
    }
    let ids: Vec<String> = expired.into_iter().map(|(_, e, _)| e).collect();
    refresh_events(tx, &ids, now).await
}

/// Locks a due job whose key has no live lease, takes the key's lease (which fails when another
/// replica got there first), then claims the key's pending jobs. Keys lost to another replica
/// are skipped, up to [`CLAIM_TRIES`].
async fn claim_unit(
    tx: &mut Transaction<'_, Postgres>,
    request: &ClaimRequest,
) -> Result<Option<ClaimedWork>, StoreError> {
    let mut contended: Vec<String> = Vec::new();
    for _ in 0..CLAIM_TRIES {
        let candidate: Option<(String, String)> = sqlx::query_as(
            "SELECT flow, object_key FROM jobs j
             WHERE state = 'pending' AND next_attempt_at <= $1
               AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.flow = j.flow
                               AND l.object_key = j.object_key AND l.expires_at > $1)
               AND NOT (flow || chr(31) || object_key = ANY($2))
             ORDER BY next_attempt_at, id LIMIT 1
             FOR UPDATE SKIP LOCKED",
        )
        .bind(request.now)
        .bind(&contended)
        .fetch_optional(&mut **tx)
        .await?;
        let Some((flow, object_key)) = candidate else {
            return Ok(None);
        };
        // Another replica may insert the same key concurrently: the upsert waits for it and
        // then finds a live lease, so exactly one of them gets a row back.
        let leased = sqlx::query(
            "INSERT INTO leases (flow, object_key, owner, expires_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (flow, object_key) DO UPDATE SET owner = excluded.owner,
                    expires_at = excluded.expires_at
             WHERE leases.expires_at <= $5",
        )
        .bind(&flow)
        .bind(&object_key)
        .bind(&request.owner)
        .bind(request.lease_until)
        .bind(request.now)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if leased == 1 {
            return claim_jobs(tx, request, flow, object_key).await.map(Some);
        }
        contended.push(format!("{flow}\u{1f}{object_key}"));
    }
    Ok(None)
}

async fn claim_jobs(
    tx: &mut Transaction<'_, Postgres>,
    request: &ClaimRequest,
    flow: String,
    object_key: String,
) -> Result<ClaimedWork, StoreError> {
    // Every pending job of the key joins, due or not: one reconcile serves them all. Rows
    // another replica has locked as its candidate are skipped (it will fail on the lease).
    let claimed: Vec<(i64, String, i64, i64, i64)> = sqlx::query_as(
        "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = $1,
                lease_expires_at = $2, updated_at = $3
         WHERE id IN (SELECT id FROM jobs WHERE flow = $4 AND object_key = $5
                      AND state = 'pending' ORDER BY id LIMIT $6 FOR UPDATE SKIP LOCKED)
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
            "INSERT INTO attempts (job_id, attempt, owner, started_at) VALUES ($1, $2, $3, $4)
             RETURNING id",
        )
        .bind(job_id)
        .bind(attempt)
        .bind(&request.owner)
        .bind(request.now)
        .fetch_one(&mut **tx)
        .await?;
        let row = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1"))
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
    Ok(ClaimedWork {
        owner: request.owner.clone(),
        flow,
        object_key,
        lease_until: request.lease_until,
        jobs,
    })
}

async fn refresh_events(
    tx: &mut Transaction<'_, Postgres>,
    event_ids: &[String],
    now: i64,
) -> Result<(), StoreError> {
    let sql = refresh_event_sql("$1", "$2");
    // Sorted, so that concurrent transactions lock events in the same order.
    let ids: std::collections::BTreeSet<&String> = event_ids.iter().collect();
    for id in ids {
        // Lock first, then compute in a new statement: its snapshot then includes the jobs a
        // concurrent unit of another flow committed for the same event. Computing inside the
        // UPDATE alone would read the older snapshot, and two units finishing the two jobs of
        // one event at once would both leave it `routed`.
        sqlx::query("SELECT 1 FROM events WHERE id = $1 FOR UPDATE")
            .bind(id)
            .execute(&mut **tx)
            .await?;
        sqlx::query(&sql)
            .bind(now)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

fn event_from_row(row: &PgRow) -> Result<StoredEvent, StoreError> {
    Ok(StoredEvent {
        id: row.try_get("id")?,
        source: row.try_get("source")?,
        source_event_id: row.try_get("source_event_id")?,
        kind: row.try_get("kind")?,
        module: row.try_get("module")?,
        object_id: row.try_get("object_id")?,
        object_key: row.try_get("object_key")?,
        payload: row.try_get("payload")?,
        raw_body: row.try_get("raw_body")?,
        headers: row.try_get("headers")?,
        received_at: row.try_get("received_at")?,
        state: row.try_get("state")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_error: row.try_get("last_error")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn job_from_row(row: &PgRow) -> Result<JobRecord, StoreError> {
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

fn attempt_from_row(row: &PgRow) -> Result<AttemptRecord, StoreError> {
    Ok(AttemptRecord {
        attempt: row.try_get("attempt")?,
        owner: row.try_get("owner")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        outcome: row.try_get("outcome")?,
        error: row.try_get("error")?,
        summary: row.try_get("summary")?,
    })
}

fn workflow_from_row(row: &PgRow) -> Result<WorkflowRecord, StoreError> {
    Ok(WorkflowRecord {
        process_id: row.try_get("process_id")?,
        flow: row.try_get("flow")?,
        object_key: row.try_get("object_key")?,
        started_at: row.try_get("started_at")?,
        state: row.try_get("state")?,
        decision: row.try_get("decision")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn link_from_row(row: &PgRow) -> Result<LinkRecord, StoreError> {
    Ok(LinkRecord {
        flow: row.try_get("flow")?,
        object_key: row.try_get("object_key")?,
        workspace_id: row.try_get("workspace_id")?,
        state: row.try_get("state")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn document_from_row(row: &PgRow) -> Result<DocumentRecord, StoreError> {
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

fn writeback_from_row(row: &PgRow) -> Result<WritebackRecord, StoreError> {
    let fields: serde_json::Value = row.try_get("fields")?;
    Ok(WritebackRecord {
        module: row.try_get("module")?,
        object_id: row.try_get("object_id")?,
        fields: serde_json::from_value(fields).unwrap_or_default(),
        values_hash: row.try_get("values_hash")?,
        mod_time_after: row.try_get("mod_time_after")?,
        at: row.try_get("at")?,
    })
}

fn intent_from_row(row: &PgRow) -> Result<IntentRecord, StoreError> {
    Ok(IntentRecord {
        flow: row.try_get("flow")?,
        object_key: row.try_get("object_key")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        token: row.try_get("token")?,
        state: row.try_get("state")?,
        detail: row.try_get("detail")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
