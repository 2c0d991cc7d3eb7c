//! The store's logic in SQL, written once and compiled once per dialect.
//!
//! `sqlite.rs` and `postgres.rs` each include this file as their module `sql`. The parent
//! module supplies what the dialects really differ in:
//!
//! - `Db` (the sqlx database) and `Backend` (the store type this implements [`Store`] for);
//! - `BACKEND`, the backend's name, and `MIGRATOR`, its migrations;
//! - the SQL fragments `SKIP_LOCKED` (appended to a `SELECT` that picks rows to change, so
//!   replicas skip each other's rows), `FOR_UPDATE` (locks rows read before a change) and
//!   `EMPTY_BYTES` (an empty byte string literal), and `USED_BYTES` (a query for the bytes the
//!   store occupies);
//! - `Backend::begin_write` (a write transaction; SQLite serialises them in this process),
//!   `Backend::commit_announced` (commit, then wake the workers: SQLite locally, PostgreSQL by
//!   `NOTIFY` to every replica), `Backend::insert` (SQLite: the group-commit writer task) and
//!   `Backend::shutdown`.
//!
//! Every statement numbers its parameters (`$1`), which both dialects accept; JSON values are
//! bound as [`serde_json::Value`] (SQLite: text, PostgreSQL: `jsonb`).

use std::collections::BTreeSet;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::{Database, QueryBuilder, Row};
use tokio::sync::Notify;

use super::{
    BACKEND, Backend, Db, EMPTY_BYTES, FOR_UPDATE, LOCK_OBJECT, MIGRATOR, SKIP_LOCKED, USED_BYTES,
};
use crate::store::text::{escape, escape_json, unescape, unescape_json, unescape_opt};
use crate::store::{
    AttemptRecord, AttemptResult, BackfillOutcomes, BackfillRecord, Backlog, ClaimRequest,
    ClaimedJob, ClaimedWork, DocumentRecord, EventDetail, EventFilter, EventNote, EventPage,
    FlowStats, InsertOutcome, IntentRecord, JOIN_WAITING_RETRY, JobRecord, JobTransition,
    LinkRecord, MinuteCount, NO_FLOW_WANTS_IT, NewEvent, ObjectRun, Page, ReplayOutcome, Routing,
    Source, Store, StoreError, StoredEvent, TeamMembership, WorkflowRecord, WritebackRecord,
    backfill_state, outcome, state, workflow_state,
};

/// A connection (or an open transaction, which dereferences to one).
pub(super) type Conn = <Db as Database>::Connection;
type DbRow = <Db as Database>::Row;

/// The message recorded on a job whose worker stopped while it ran.
const LEASE_EXPIRED: &str = "lease expired before the attempt finished (worker stopped?)";
/// The message recorded on an attempt given back at shutdown.
const RELEASED_AT_SHUTDOWN: &str = "released at shutdown before it finished";

/// Keys tried per claim before giving up the round (another replica holds them).
const CLAIM_TRIES: usize = 5;

/// Selects events with their payload (their bytes of the body, parsed by [`event_from_row`])
/// and their request's headers; `raw_body` is the whole body or [`EMPTY_BYTES`].
fn select_events(raw_body: &str) -> String {
    format!(
        "SELECT e.id, e.source, e.source_event_id, e.kind, e.module, e.object_id, e.object_key,
            substr(b.body, e.body_start + 1, e.body_end - e.body_start) AS payload,
            {raw_body} AS raw_body, b.headers, e.received_at, e.state, e.attempts,
            e.next_attempt_at, e.last_error, e.updated_at
         FROM events e JOIN bodies b ON b.id = e.body_id"
    )
}

// The worker's reads on every round (after each commit that brings new work, and at least once
// per poll interval) and the backlog gauges' read. Each must read a partial index on live
// states, never a whole table, whose size grows with the store (`sqlite.rs` tests their query
// plans).

/// Events not yet routed. `state IN (…)` repeats the partial index's condition: SQLite uses a
/// partial index only when the query's terms imply its `WHERE`, and it does not infer that from
/// `state = 'pending'` alone (it would walk the primary key over every event instead).
pub(super) fn unrouted_query() -> String {
    format!(
        "{} WHERE e.state IN ('pending', 'routed') AND e.state = 'pending' ORDER BY e.id LIMIT $1",
        select_events(EMPTY_BYTES)
    )
}

/// A due job or a lease that ran out exists.
pub(super) const CLAIMABLE: &str =
    "SELECT id FROM jobs WHERE state = 'pending' AND next_attempt_at <= $1
     UNION ALL
     SELECT id FROM jobs WHERE state = 'running' AND lease_expires_at <= $1
     LIMIT 1";

/// Live events, live jobs, the oldest live event and the dead letters: one count per state, so
/// that each reads its partial index.
pub(super) const BACKLOG: &str = "SELECT
    (SELECT COUNT(*) FROM events WHERE state IN ('pending', 'routed')),
    (SELECT COUNT(*) FROM jobs WHERE state = 'pending')
        + (SELECT COUNT(*) FROM jobs WHERE state = 'running'),
    (SELECT MIN(received_at) FROM events WHERE state IN ('pending', 'routed')),
    (SELECT COUNT(*) FROM events WHERE state = 'dead')";

const JOB_COLUMNS: &str = "id, flow, object_key, state, attempts, next_attempt_at, lease_owner,
        lease_expires_at, last_error, created_at, updated_at, finished_at";

const WORKFLOW_COLUMNS: &str = "process_id, flow, object_key, started_at, state, decision,
        updated_at";

const TEAM_COLUMNS: &str = "workspace_id, role_id, member_id, flow, object_key, role_name,
        member_name, created_at";

const BACKFILL_COLUMNS: &str = "id, flow, condition, query, rate, state, cursor, found, total,
        error, created_at, updated_at";

/// Who may take a backfill's lease: nobody holds it, `$1` does, or it expired before `$3`.
const BACKFILL_LEASE_FREE: &str = "state = 'running' AND (lease_owner IS NULL
        OR lease_owner = $1 OR lease_expires_at < $3)";

const DOCUMENT_COLUMNS: &str = "flow, object_key, logical_name, node_id, content_hash,
        source_version, meta_hash, version, updated_at";

#[async_trait]
impl Store for Backend {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn insert_events(&self, events: Vec<NewEvent>) -> Result<Vec<InsertOutcome>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.guard.check(|| self.used_bytes()).await?;
        self.insert(events).await
    }

    async fn readiness(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
                .map_err(|_| StoreError::NotReady("migrations have not been applied".into()))?;
        missing_migrations(&MIGRATOR, &applied)?;
        self.guard.check(|| self.used_bytes()).await
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn get_event(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let row = sqlx::query(&format!("{} WHERE e.id = $1", select_events("b.body")))
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

    async fn used_bytes(&self) -> Result<u64, StoreError> {
        let bytes: i64 = sqlx::query_scalar(USED_BYTES).fetch_one(&self.pool).await?;
        Ok(bytes.max(0) as u64)
    }

    async fn close(&self) {
        self.shutdown().await;
    }

    fn wakeup(&self) -> std::sync::Arc<Notify> {
        self.wakeup.clone()
    }

    async fn unrouted_events(&self, limit: i64) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(&unrouted_query())
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
        // One read answers an idle worker's poll, so it never takes the write lock (SQLite) or a
        // write transaction while there is nothing to claim or reap.
        if !claimable(&self.pool, request.now).await? {
            return Ok(None);
        }
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
            "UPDATE leases SET expires_at = $1
             WHERE flow = $2 AND object_key = $3 AND owner = $4",
        )
        .bind(until)
        .bind(&work.flow)
        .bind(escape(&work.object_key))
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
        let (_write, mut tx) = self.begin_write().await?;
        let held = delete_lease(&mut tx, work).await?;
        for t in transitions {
            sqlx::query(
                "UPDATE attempts SET finished_at = $1, outcome = $2, error = $3, summary = $4
                 WHERE id = $5 AND finished_at IS NULL",
            )
            .bind(result.finished_at)
            .bind(result.outcome)
            .bind(result.error.as_deref().map(escape))
            .bind(result.summary.as_ref().map(escape_json))
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
            .bind(t.last_error.as_deref().map(escape))
            .bind(result.finished_at)
            .bind(finished)
            .bind(t.job_id)
            .bind(&work.owner)
            .bind(i64::from(t.refund_attempt))
            .execute(&mut *tx)
            .await?;
        }
        if let Some(at) = retry_time(transitions) {
            join_retry_after_run(&mut tx, work, at).await?;
        }
        refresh_events(&mut tx, &work.event_ids(), result.finished_at).await?;
        tx.commit().await?;
        Ok(held)
    }

    async fn release_work(&self, work: &ClaimedWork, now: i64) -> Result<(), StoreError> {
        let (_write, mut tx) = self.begin_write().await?;
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
        self.commit_announced(tx).await
    }

    async fn replay_event(
        &self,
        id: &str,
        note: &str,
        now: i64,
    ) -> Result<ReplayOutcome, StoreError> {
        let (_write, mut tx) = self.begin_write().await?;
        let current: Option<String> = sqlx::query_scalar(&format!(
            "SELECT state FROM events WHERE id = $1{FOR_UPDATE}"
        ))
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
            .bind(escape(note))
            .execute(&mut *tx)
            .await?;
        self.commit_announced(tx).await?;
        Ok(ReplayOutcome::Replayed)
    }

    async fn list_events(
        &self,
        filter: &EventFilter,
        page: &Page,
    ) -> Result<EventPage, StoreError> {
        let mut query = QueryBuilder::<Db>::new(select_events(EMPTY_BYTES));
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
                    note: unescape(r.try_get("note")?),
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
            sqlx::query_as(BACKLOG).fetch_one(&self.pool).await?;
        Ok(Backlog {
            events,
            jobs,
            oldest_pending_age_ms: oldest.map_or(0, |t| (now - t).max(0)),
            dead_letters: dead,
        })
    }

    async fn object_runs(
        &self,
        object_key: &str,
        limit: i64,
    ) -> Result<Vec<ObjectRun>, StoreError> {
        // Through the object's events (indexed by object key), their jobs and attempts.
        sqlx::query(
            "SELECT j.flow, j.event_id, j.state AS job_state, a.attempt, a.owner, a.started_at,
                    a.finished_at, a.outcome, a.error, a.summary
             FROM events e JOIN jobs j ON j.event_id = e.id JOIN attempts a ON a.job_id = j.id
             WHERE e.object_key = $1
             ORDER BY a.started_at DESC, a.id DESC LIMIT $2",
        )
        .bind(escape(object_key))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(ObjectRun {
                flow: row.try_get("flow")?,
                event_id: row.try_get("event_id")?,
                job_state: row.try_get("job_state")?,
                attempt: attempt_from_row(row)?,
            })
        })
        .collect()
    }

    async fn events_per_minute(&self, since: i64) -> Result<Vec<MinuteCount>, StoreError> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT received_at / 60000 AS minute, COUNT(*) FROM events WHERE id >= $1
             GROUP BY received_at / 60000 ORDER BY minute",
        )
        .bind(crate::store::first_event_id_at(since))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(minute, events)| MinuteCount {
                minute: minute * 60_000,
                events,
            })
            .filter(|m| m.minute + 60_000 > since)
            .collect())
    }

    async fn resume_waiting(&self, now: i64, step_ms: i64) -> Result<u64, StoreError> {
        let (_write, mut tx) = self.begin_write().await?;
        let resumed = sqlx::query(
            "UPDATE jobs SET next_attempt_at = $1 + (id % 10) * $2
             WHERE state = 'pending' AND next_attempt_at > $1 + 10 * $2",
        )
        .bind(now)
        .bind(step_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(resumed)
    }

    async fn prune_finished(&self, older_than: i64, batch: i64) -> Result<u64, StoreError> {
        let (_write, mut tx) = self.begin_write().await?;
        let doomed: Vec<(String, i64)> = sqlx::query_as(&format!(
            "SELECT id, body_id FROM events
             WHERE state IN ('done', 'ignored') AND updated_at < $1
             ORDER BY updated_at LIMIT $2{SKIP_LOCKED}"
        ))
        .bind(older_than)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        for (id, _) in &doomed {
            sqlx::query("DELETE FROM events WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        // A batch's body goes with the last of its events.
        let bodies: BTreeSet<i64> = doomed.iter().map(|(_, body)| *body).collect();
        for body in bodies {
            sqlx::query(
                "DELETE FROM bodies WHERE id = $1
                 AND NOT EXISTS (SELECT 1 FROM events WHERE body_id = $1)",
            )
            .bind(body)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(doomed.len() as u64)
    }

    async fn prune_to_budget(&self, batch: i64) -> Result<u64, StoreError> {
        let Some(limit) = self.guard.retain_below() else {
            return Ok(0);
        };
        let mut pruned = 0;
        while self.used_bytes().await? > limit {
            let deleted = self.prune_finished(i64::MAX, batch).await?;
            pruned += deleted;
            if deleted == 0 {
                break;
            }
        }
        Ok(pruned)
    }

    async fn get_cursor(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM cursors WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?
                .map(unescape),
        )
    }

    async fn set_cursor(&self, name: &str, value: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO cursors (name, value, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value,
                                              updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(escape(value))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn create_backfill(&self, b: &BackfillRecord) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO backfills ({BACKFILL_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        ))
        .bind(&b.id)
        .bind(&b.flow)
        .bind(b.condition.as_deref().map(escape))
        .bind(b.query.as_deref().map(escape))
        .bind(b.rate)
        .bind(&b.state)
        .bind(b.cursor.as_deref().map(escape))
        .bind(b.found)
        .bind(b.total)
        .bind(b.error.as_deref().map(escape))
        .bind(b.created_at)
        .bind(b.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_backfill(&self, id: &str) -> Result<Option<BackfillRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {BACKFILL_COLUMNS} FROM backfills WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| backfill_from_row(&r)).transpose()
    }

    async fn resumable_backfill(
        &self,
        flow: &str,
        condition: Option<&str>,
    ) -> Result<Option<BackfillRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {BACKFILL_COLUMNS} FROM backfills
             WHERE flow = $1 AND COALESCE(condition, '') = $2 AND state IN ($3, $4)
             ORDER BY created_at DESC, id DESC LIMIT 1"
        ))
        .bind(flow)
        .bind(escape(condition.unwrap_or("")))
        .bind(backfill_state::RUNNING)
        .bind(backfill_state::CANCELLED)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| backfill_from_row(&r)).transpose()
    }

    async fn lease_backfill(
        &self,
        id: Option<&str>,
        owner: &str,
        until: i64,
        now: i64,
    ) -> Result<Option<BackfillRecord>, StoreError> {
        // The outer condition is checked again on the row itself, so of two replicas picking
        // the same backfill only one takes it.
        let taken: Option<String> = sqlx::query_scalar(&format!(
            "UPDATE backfills SET lease_owner = $1, lease_expires_at = $2, updated_at = $3
             WHERE {BACKFILL_LEASE_FREE} AND id = (
                SELECT id FROM backfills
                WHERE {BACKFILL_LEASE_FREE} AND ($4 = '' OR id = $4)
                ORDER BY created_at, id LIMIT 1)
             RETURNING id"
        ))
        .bind(owner)
        .bind(until)
        .bind(now)
        .bind(id.unwrap_or(""))
        .fetch_optional(&self.pool)
        .await?;
        match taken {
            Some(id) => self.get_backfill(&id).await,
            None => Ok(None),
        }
    }

    async fn advance_backfill(
        &self,
        id: &str,
        owner: &str,
        cursor: Option<&str>,
        found: i64,
        total: Option<i64>,
        until: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE backfills SET cursor = COALESCE($3, cursor), found = found + $4,
                total = COALESCE($5, total), lease_expires_at = $6, updated_at = $7
             WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
        )
        .bind(id)
        .bind(owner)
        .bind(cursor.map(escape))
        .bind(found)
        .bind(total)
        .bind(until)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    async fn set_backfill_state(
        &self,
        id: &str,
        from: &[&str],
        to: &str,
        error: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut q = QueryBuilder::<Db>::new("UPDATE backfills SET state = ");
        q.push_bind(to)
            .push(", error = ")
            .push_bind(error.map(escape))
            .push(", lease_owner = NULL, lease_expires_at = NULL, updated_at = ")
            .push_bind(now)
            .push(" WHERE id = ")
            .push_bind(id)
            .push(" AND state IN (");
        let mut states = q.separated(", ");
        for state in from {
            states.push_bind(*state);
        }
        q.push(")");
        let updated = q.build().execute(&self.pool).await?;
        Ok(updated.rows_affected() == 1)
    }

    async fn backfill_outcomes(&self, id: &str) -> Result<BackfillOutcomes, StoreError> {
        // The events' ids all start with `backfill:<id>:`; `;` follows `:`, so the range is
        // exactly them, read from the (source, source_event_id) index.
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, COUNT(*) FROM events
             WHERE source = $1 AND source_event_id >= $2 AND source_event_id < $3
             GROUP BY state",
        )
        .bind(Source::Allportal.as_str())
        .bind(escape(&format!("backfill:{id}:")))
        .bind(escape(&format!("backfill:{id};")))
        .fetch_all(&self.pool)
        .await?;
        let mut outcomes = BackfillOutcomes::default();
        for (event_state, count) in rows {
            outcomes.enqueued += count;
            match event_state.as_str() {
                state::DONE => outcomes.done += count,
                state::IGNORED => outcomes.skipped += count,
                state::DEAD => outcomes.failed += count,
                _ => outcomes.pending += count,
            }
        }
        Ok(outcomes)
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
        .bind(escape(&workflow.process_id))
        .bind(&workflow.flow)
        .bind(escape(&workflow.object_key))
        .bind(workflow.started_at)
        .bind(&workflow.state)
        .bind(workflow.decision.as_ref().map(escape_json))
        .bind(workflow.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn running_workflows(&self, limit: i64) -> Result<Vec<WorkflowRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE state = $1
             ORDER BY started_at LIMIT $2"
        ))
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
        .bind(escape_json(decision))
        .bind(now)
        .bind(escape(process_id))
        .bind(workflow_state::RUNNING)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    async fn get_workflow(&self, process_id: &str) -> Result<Option<WorkflowRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE process_id = $1"
        ))
        .bind(escape(process_id))
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
        sqlx::query(&format!(
            "SELECT {WORKFLOW_COLUMNS} FROM workflows
             WHERE flow = $1 AND substr(object_key, 1, length($2)) = $2
             ORDER BY started_at, process_id"
        ))
        .bind(flow)
        .bind(escape(key_prefix))
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
            "SELECT flow, object_key, workspace_id, state, updated_at FROM links
             WHERE flow = $1 AND object_key = $2",
        )
        .bind(flow)
        .bind(escape(object_key))
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(link_from_row)
        .transpose()
    }

    async fn team_memberships(&self, workspace_id: i64) -> Result<Vec<TeamMembership>, StoreError> {
        sqlx::query(&format!(
            "SELECT {TEAM_COLUMNS} FROM team_memberships WHERE workspace_id = $1
             ORDER BY role_id, member_id"
        ))
        .bind(workspace_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(team_membership_from_row)
        .collect()
    }

    async fn record_team_membership(&self, m: &TeamMembership) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO team_memberships ({TEAM_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (workspace_id, role_id, member_id) DO NOTHING"
        ))
        .bind(m.workspace_id)
        .bind(m.role_id)
        .bind(m.member_id)
        .bind(&m.flow)
        .bind(escape(&m.object_key))
        .bind(escape(&m.role_name))
        .bind(escape(&m.member_name))
        .bind(m.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn forget_team_membership(
        &self,
        workspace_id: i64,
        role_id: i64,
        member_id: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM team_memberships
             WHERE workspace_id = $1 AND role_id = $2 AND member_id = $3",
        )
        .bind(workspace_id)
        .bind(role_id)
        .bind(member_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn set_dependencies(
        &self,
        flow: &str,
        object_key: &str,
        dependencies: &[String],
    ) -> Result<(), StoreError> {
        let (_write, mut tx) = self.begin_write().await?;
        sqlx::query("DELETE FROM dependencies WHERE flow = $1 AND object_key = $2")
            .bind(flow)
            .bind(escape(object_key))
            .execute(&mut *tx)
            .await?;
        let unique: BTreeSet<&String> = dependencies.iter().collect();
        for dependency in unique {
            let module = dependency.split_once('/').map_or("", |(m, _)| m);
            sqlx::query(
                "INSERT INTO dependencies (dependency, module, flow, object_key)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(escape(dependency))
            .bind(escape(module))
            .bind(flow)
            .bind(escape(object_key))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn dependents(&self, dependency: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT flow, object_key FROM dependencies WHERE dependency = $1
             ORDER BY flow, object_key",
        )
        .bind(escape(dependency))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(flow, key)| (flow, unescape(key)))
            .collect())
    }

    async fn dependency_modules(&self) -> Result<Vec<String>, StoreError> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT module FROM dependencies ORDER BY module")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(unescape).collect())
    }

    async fn links_after(
        &self,
        after: Option<(&str, &str)>,
        limit: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let (flow, key) = after.unwrap_or(("", ""));
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT flow, object_key FROM links
             WHERE flow > $1 OR (flow = $1 AND object_key > $2)
             ORDER BY flow, object_key LIMIT $3",
        )
        .bind(flow)
        .bind(escape(key))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(flow, key)| (flow, unescape(key)))
            .collect())
    }

    async fn put_link(&self, link: &LinkRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO links (flow, object_key, workspace_id, state, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (flow, object_key) DO UPDATE SET workspace_id = excluded.workspace_id,
                state = excluded.state, updated_at = excluded.updated_at",
        )
        .bind(&link.flow)
        .bind(escape(&link.object_key))
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
        sqlx::query(&format!(
            "SELECT {DOCUMENT_COLUMNS} FROM documents
             WHERE flow = $1 AND object_key = $2 AND logical_name = $3"
        ))
        .bind(flow)
        .bind(escape(object_key))
        .bind(escape(logical_name))
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
        sqlx::query(&format!(
            "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE flow = $1 AND object_key = $2
             ORDER BY logical_name"
        ))
        .bind(flow)
        .bind(escape(object_key))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(document_from_row)
        .collect()
    }

    async fn put_document(&self, document: &DocumentRecord) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO documents ({DOCUMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (flow, object_key, logical_name) DO UPDATE SET
                node_id = excluded.node_id, content_hash = excluded.content_hash,
                source_version = excluded.source_version, meta_hash = excluded.meta_hash,
                version = excluded.version, updated_at = excluded.updated_at"
        ))
        .bind(&document.flow)
        .bind(escape(&document.object_key))
        .bind(escape(&document.logical_name))
        .bind(document.node_id)
        .bind(&document.content_hash)
        .bind(document.source_version.as_deref().map(escape))
        .bind(&document.meta_hash)
        .bind(document.version)
        .bind(document.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_writeback(&self, writeback: &WritebackRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO writebacks (module, object_id, fields, values_hash, mod_time_after, at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(escape(&writeback.module))
        .bind(escape(&writeback.object_id))
        .bind(escape_json(&serde_json::json!(writeback.fields)))
        .bind(&writeback.values_hash)
        .bind(writeback.mod_time_after.as_deref().map(escape))
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
            "SELECT module, object_id, fields, values_hash, mod_time_after, at FROM writebacks
             WHERE module = $1 AND object_id = $2 ORDER BY id DESC LIMIT 1",
        )
        .bind(escape(module))
        .bind(escape(object_id))
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
             FROM intents WHERE flow = $1 AND object_key = $2 AND action = $3 AND target = $4",
        )
        .bind(flow)
        .bind(escape(object_key))
        .bind(action)
        .bind(escape(target))
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
        .bind(escape(&intent.object_key))
        .bind(&intent.action)
        .bind(escape(&intent.target))
        .bind(&intent.token)
        .bind(&intent.state)
        .bind(escape_json(&intent.detail))
        .bind(intent.created_at)
        .bind(intent.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Ready only if every migration this build knows has been applied.
fn missing_migrations(migrator: &Migrator, applied: &[i64]) -> Result<(), StoreError> {
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

fn backfill_from_row(row: &DbRow) -> Result<BackfillRecord, StoreError> {
    Ok(BackfillRecord {
        id: row.try_get("id")?,
        flow: row.try_get("flow")?,
        condition: unescape_opt(row.try_get("condition")?),
        query: unescape_opt(row.try_get("query")?),
        rate: row.try_get("rate")?,
        state: row.try_get("state")?,
        cursor: unescape_opt(row.try_get("cursor")?),
        found: row.try_get("found")?,
        total: row.try_get("total")?,
        error: unescape_opt(row.try_get("error")?),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// JSON kept as bytes (an event's slice of its body, the kept headers).
fn parse_json(bytes: &[u8]) -> Result<serde_json::Value, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("stored JSON: {e}")))
}

fn event_from_row(row: &DbRow) -> Result<StoredEvent, StoreError> {
    Ok(StoredEvent {
        id: row.try_get("id")?,
        source: row.try_get("source")?,
        source_event_id: unescape(row.try_get("source_event_id")?),
        kind: unescape(row.try_get("kind")?),
        module: unescape_opt(row.try_get("module")?),
        object_id: unescape_opt(row.try_get("object_id")?),
        object_key: unescape_opt(row.try_get("object_key")?),
        payload: parse_json(&row.try_get::<Vec<u8>, _>("payload")?)?,
        raw_body: row.try_get("raw_body")?,
        headers: parse_json(&row.try_get::<Vec<u8>, _>("headers")?)?,
        received_at: row.try_get("received_at")?,
        state: row.try_get("state")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_error: unescape_opt(row.try_get("last_error")?),
        updated_at: row.try_get("updated_at")?,
    })
}

/// Appends `WHERE …` for an event filter and page cursor to a query over `events`, then the
/// newest-first order and the limit (one more row than the page, to detect a next page).
fn push_event_filter(query: &mut QueryBuilder<'_, Db>, filter: &EventFilter, page: &Page) {
    query.push(" WHERE 1 = 1");
    // `source` is compared as an expression so that no index on it is used: the only one,
    // `(source, source_event_id)`, would make the database sort every event of the source
    // (800 ms at a million events); walking the ids newest first finds a page in the first rows.
    let text_columns = [
        ("e.state", &filter.state),
        ("e.source || ''", &filter.source),
        ("e.kind", &filter.kind),
        ("e.object_key", &filter.object_key),
    ];
    for (column, value) in text_columns {
        if let Some(value) = value {
            query
                .push(format!(" AND {column} = "))
                .push_bind(escape(value).into_owned());
        }
    }
    if let Some(flow) = &filter.flow {
        query
            .push(" AND EXISTS (SELECT 1 FROM jobs j WHERE j.event_id = e.id AND j.flow = ")
            .push_bind(flow.clone())
            .push(")");
    }
    if let Some(from) = filter.received_from {
        query.push(" AND e.received_at >= ").push_bind(from);
    }
    if let Some(to) = filter.received_to {
        query.push(" AND e.received_at < ").push_bind(to);
    }
    if let Some(after) = &page.after {
        query.push(" AND e.id < ").push_bind(after.clone());
    }
    query
        .push(" ORDER BY e.id DESC LIMIT ")
        .push_bind(page.limit.clamp(1, 1000) + 1);
}

/// Cuts the extra row fetched by [`push_event_filter`] and derives the next cursor.
fn into_page(mut events: Vec<StoredEvent>, limit: i64) -> EventPage {
    let limit = limit.clamp(1, 1000) as usize;
    let next_cursor = if events.len() > limit {
        events.truncate(limit);
        events.last().map(|e| e.id.clone())
    } else {
        None
    };
    EventPage {
        events,
        next_cursor,
    }
}

// ----- worker -----

/// Routes one event unless another worker did already; `true` when this call routed it.
async fn route_one(tx: &mut Conn, routing: &Routing, now: i64) -> Result<bool, StoreError> {
    let (next, reason) = if routing.flows.is_empty() {
        (state::IGNORED, Some(NO_FLOW_WANTS_IT))
    } else {
        (state::ROUTED, None)
    };
    // On PostgreSQL the row lock serializes replicas routing the same event; the loser sees
    // 0 rows.
    let changed = sqlx::query(
        "UPDATE events SET state = $1, last_error = $2, updated_at = $3
         WHERE id = $4 AND state = 'pending'",
    )
    .bind(next)
    .bind(reason)
    .bind(now)
    .bind(&routing.event_id)
    .execute(&mut *tx)
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
        .bind(escape(&routing.object_key))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    join_waiting_retry(tx, &routing.event_id).await?;
    Ok(true)
}

/// New jobs of an event join a retry their (flow, object key) is already waiting for: they wait
/// with it instead of pulling it forward.
async fn join_waiting_retry(tx: &mut Conn, event_id: &str) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "{JOIN_WAITING_RETRY} WHERE event_id = $1 AND state = 'pending'"
    ))
    .bind(event_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Jobs of the key that arrived while a run was under way wait for that run's retry at `at`.
async fn join_retry_after_run(
    tx: &mut Conn,
    work: &ClaimedWork,
    at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE jobs SET next_attempt_at = $1
         WHERE flow = $2 AND object_key = $3 AND state = 'pending' AND next_attempt_at < $1",
    )
    .bind(at)
    .bind(&work.flow)
    .bind(escape(&work.object_key))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The latest retry time among the transitions that keep a job pending, if any.
fn retry_time(transitions: &[JobTransition]) -> Option<i64> {
    transitions
        .iter()
        .filter(|t| t.state == state::PENDING)
        .map(|t| t.next_attempt_at)
        .max()
}

/// Whether a job is due or a lease ran out: what [`Store::claim`] would act on.
async fn claimable(pool: &sqlx::Pool<Db>, now: i64) -> Result<bool, StoreError> {
    let found = sqlx::query(CLAIMABLE)
        .bind(now)
        .fetch_optional(pool)
        .await?;
    Ok(found.is_some())
}

/// Jobs whose lease ran out while `running` (their worker died) become pending again, or dead
/// when that was their last attempt; their open attempts are closed as `abandoned`.
async fn reap_expired(tx: &mut Conn, now: i64, max_attempts: i64) -> Result<(), StoreError> {
    let expired: Vec<(i64, String, i64)> = sqlx::query_as(&format!(
        "SELECT id, event_id, attempts - attempts_base FROM jobs
         WHERE state = 'running' AND lease_expires_at <= $1{SKIP_LOCKED}"
    ))
    .bind(now)
    .fetch_all(&mut *tx)
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
        .execute(&mut *tx)
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
        .execute(&mut *tx)
        .await?;
    }
    let ids: Vec<String> = expired.into_iter().map(|(_, e, _)| e).collect();
    refresh_events(tx, &ids, now).await
}

/// Picks a due job whose key has no live lease, takes the key's lease (which fails when another
/// replica got there first), then claims the key's pending jobs. Keys lost to another replica
/// are skipped, up to [`CLAIM_TRIES`].
async fn claim_unit(
    tx: &mut Conn,
    request: &ClaimRequest,
) -> Result<Option<ClaimedWork>, StoreError> {
    let mut contended: Vec<(String, String)> = Vec::new();
    for _ in 0..CLAIM_TRIES {
        let Some((flow, object_key)) = due_key(tx, request.now, &contended).await? else {
            return Ok(None);
        };
        if other_flow_holds(tx, &flow, &object_key, request.now).await? {
            contended.push((flow, object_key));
            continue;
        }
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
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if leased == 1 {
            return claim_jobs(tx, request, flow, object_key).await.map(Some);
        }
        contended.push((flow, object_key));
    }
    Ok(None)
}

/// Whether another flow runs for the same business object now: one object's work never runs
/// concurrently, also across flows (they write to the same workspaces and objects).
async fn other_flow_holds(
    tx: &mut Conn,
    flow: &str,
    object_key: &str,
    now: i64,
) -> Result<bool, StoreError> {
    if let Some(lock) = LOCK_OBJECT {
        sqlx::query(lock).bind(object_key).execute(&mut *tx).await?;
    }
    let held: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM leases WHERE object_key = $1 AND flow <> $2 AND expires_at > $3 LIMIT 1",
    )
    .bind(object_key)
    .bind(flow)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(held.is_some())
}

/// The (flow, object key) of the most overdue pending job whose object has no live lease (of
/// any flow), other than the `contended` keys.
async fn due_key(
    tx: &mut Conn,
    now: i64,
    contended: &[(String, String)],
) -> Result<Option<(String, String)>, StoreError> {
    let mut query = QueryBuilder::<Db>::new(
        "SELECT flow, object_key FROM jobs j WHERE state = 'pending' AND next_attempt_at <= ",
    );
    query
        .push_bind(now)
        .push(
            " AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.object_key = j.object_key
                               AND l.expires_at > ",
        )
        .push_bind(now)
        .push(")");
    for (flow, object_key) in contended {
        query
            .push(" AND NOT (flow = ")
            .push_bind(flow.as_str())
            .push(" AND object_key = ")
            .push_bind(object_key.as_str())
            .push(")");
    }
    query.push(format!(
        " ORDER BY next_attempt_at, id LIMIT 1{SKIP_LOCKED}"
    ));
    Ok(query.build_query_as().fetch_optional(&mut *tx).await?)
}

async fn claim_jobs(
    tx: &mut Conn,
    request: &ClaimRequest,
    flow: String,
    object_key: String,
) -> Result<ClaimedWork, StoreError> {
    // Every pending job of the key joins, due or not: one reconcile serves them all. Rows
    // another replica has locked as its candidate are skipped (it will fail on the lease).
    let claimed: Vec<(i64, String, i64, i64, i64)> = sqlx::query_as(&format!(
        "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = $1,
                lease_expires_at = $2, updated_at = $3
         WHERE id IN (SELECT id FROM jobs WHERE flow = $4 AND object_key = $5
                      AND state = 'pending' ORDER BY id LIMIT $6{SKIP_LOCKED})
         RETURNING id, event_id, attempts, attempts - attempts_base, age_from"
    ))
    .bind(&request.owner)
    .bind(request.lease_until)
    .bind(request.now)
    .bind(&flow)
    .bind(&object_key)
    .bind(request.max_jobs)
    .fetch_all(&mut *tx)
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
        .fetch_one(&mut *tx)
        .await?;
        let row = sqlx::query(&format!("{} WHERE e.id = $1", select_events(EMPTY_BYTES)))
            .bind(&event_id)
            .fetch_one(&mut *tx)
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
        object_key: unescape(object_key),
        lease_until: request.lease_until,
        jobs,
    })
}

async fn delete_lease(tx: &mut Conn, work: &ClaimedWork) -> Result<bool, StoreError> {
    Ok(
        sqlx::query("DELETE FROM leases WHERE flow = $1 AND object_key = $2 AND owner = $3")
            .bind(&work.flow)
            .bind(escape(&work.object_key))
            .bind(&work.owner)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1,
    )
}

/// Recomputes each event's state, attempts, next attempt and last error from its jobs (events
/// without jobs keep theirs).
async fn refresh_events(tx: &mut Conn, event_ids: &[String], now: i64) -> Result<(), StoreError> {
    // Sorted, so that concurrent transactions lock events in the same order.
    let ids: BTreeSet<&String> = event_ids.iter().collect();
    for id in ids {
        if !FOR_UPDATE.is_empty() {
            // Lock first, then compute in a new statement: its snapshot then includes the jobs
            // a concurrent unit of another flow committed for the same event. Computing inside
            // the UPDATE alone would read the older snapshot, and two units finishing the two
            // jobs of one event at once would both leave it `routed`.
            sqlx::query(&format!("SELECT 1 FROM events WHERE id = $1{FOR_UPDATE}"))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "UPDATE events SET
                state = CASE
                    WHEN EXISTS (SELECT 1 FROM jobs j WHERE j.event_id = events.id
                                 AND j.state IN ('pending', 'running')) THEN 'routed'
                    WHEN EXISTS (SELECT 1 FROM jobs j WHERE j.event_id = events.id
                                 AND j.state = 'dead') THEN 'dead'
                    WHEN EXISTS (SELECT 1 FROM jobs j WHERE j.event_id = events.id
                                 AND j.state = 'done') THEN 'done'
                    ELSE 'ignored' END,
                attempts = (SELECT COALESCE(MAX(j.attempts), 0) FROM jobs j
                            WHERE j.event_id = events.id),
                next_attempt_at = COALESCE((SELECT MIN(j.next_attempt_at) FROM jobs j
                            WHERE j.event_id = events.id AND j.state = 'pending'),
                            next_attempt_at),
                last_error = (SELECT j.last_error FROM jobs j
                            WHERE j.event_id = events.id AND j.last_error IS NOT NULL
                            ORDER BY j.updated_at DESC, j.id DESC LIMIT 1),
                updated_at = $1
             WHERE id = $2 AND EXISTS (SELECT 1 FROM jobs j WHERE j.event_id = events.id)",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Folds `(flow, state, count)` rows (sorted by flow) into one [`FlowStats`] per flow.
fn group_flow_counts(rows: Vec<(String, String, i64)>) -> Vec<FlowStats> {
    let mut stats: Vec<FlowStats> = Vec::new();
    for (flow, state, count) in rows {
        match stats.last_mut() {
            Some(last) if last.flow == flow => {
                last.states.insert(state, count);
            }
            _ => stats.push(FlowStats {
                flow,
                states: [(state, count)].into_iter().collect(),
                last_error: None,
                last_error_at: None,
            }),
        }
    }
    stats
}

fn job_from_row(row: &DbRow) -> Result<JobRecord, StoreError> {
    Ok(JobRecord {
        id: row.try_get("id")?,
        flow: row.try_get("flow")?,
        object_key: unescape(row.try_get("object_key")?),
        state: row.try_get("state")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        last_error: unescape_opt(row.try_get("last_error")?),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        finished_at: row.try_get("finished_at")?,
        history: Vec::new(),
    })
}

fn attempt_from_row(row: &DbRow) -> Result<AttemptRecord, StoreError> {
    Ok(AttemptRecord {
        attempt: row.try_get("attempt")?,
        owner: row.try_get("owner")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        outcome: row.try_get("outcome")?,
        error: unescape_opt(row.try_get("error")?),
        summary: row
            .try_get::<Option<serde_json::Value>, _>("summary")?
            .map(unescape_json),
    })
}

// ----- flow state -----

fn workflow_from_row(row: &DbRow) -> Result<WorkflowRecord, StoreError> {
    Ok(WorkflowRecord {
        process_id: unescape(row.try_get("process_id")?),
        flow: row.try_get("flow")?,
        object_key: unescape(row.try_get("object_key")?),
        started_at: row.try_get("started_at")?,
        state: row.try_get("state")?,
        decision: row
            .try_get::<Option<serde_json::Value>, _>("decision")?
            .map(unescape_json),
        updated_at: row.try_get("updated_at")?,
    })
}

fn link_from_row(row: &DbRow) -> Result<LinkRecord, StoreError> {
    Ok(LinkRecord {
        flow: row.try_get("flow")?,
        object_key: unescape(row.try_get("object_key")?),
        workspace_id: row.try_get("workspace_id")?,
        state: row.try_get("state")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn team_membership_from_row(row: &DbRow) -> Result<TeamMembership, StoreError> {
    Ok(TeamMembership {
        workspace_id: row.try_get("workspace_id")?,
        role_id: row.try_get("role_id")?,
        member_id: row.try_get("member_id")?,
        flow: row.try_get("flow")?,
        object_key: unescape(row.try_get("object_key")?),
        role_name: unescape(row.try_get("role_name")?),
        member_name: unescape(row.try_get("member_name")?),
        created_at: row.try_get("created_at")?,
    })
}

fn document_from_row(row: &DbRow) -> Result<DocumentRecord, StoreError> {
    Ok(DocumentRecord {
        flow: row.try_get("flow")?,
        object_key: unescape(row.try_get("object_key")?),
        logical_name: unescape(row.try_get("logical_name")?),
        node_id: row.try_get("node_id")?,
        content_hash: row.try_get("content_hash")?,
        source_version: unescape_opt(row.try_get("source_version")?),
        meta_hash: row.try_get("meta_hash")?,
        version: row.try_get("version")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn writeback_from_row(row: &DbRow) -> Result<WritebackRecord, StoreError> {
    let fields: serde_json::Value = row.try_get("fields")?;
    Ok(WritebackRecord {
        module: unescape(row.try_get("module")?),
        object_id: unescape(row.try_get("object_id")?),
        fields: serde_json::from_value(unescape_json(fields)).unwrap_or_default(),
        values_hash: row.try_get("values_hash")?,
        mod_time_after: unescape_opt(row.try_get("mod_time_after")?),
        at: row.try_get("at")?,
    })
}

fn intent_from_row(row: &DbRow) -> Result<IntentRecord, StoreError> {
    Ok(IntentRecord {
        flow: row.try_get("flow")?,
        object_key: unescape(row.try_get("object_key")?),
        action: row.try_get("action")?,
        target: unescape(row.try_get("target")?),
        token: row.try_get("token")?,
        state: row.try_get("state")?,
        detail: unescape_json(row.try_get("detail")?),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
