//! The PostgreSQL store, for several replicas sharing one database.
//!
//! The store's logic is shared with SQLite (see [`sql`](self::sql)); this file holds what
//! PostgreSQL does differently. Claims lock candidate jobs with `FOR UPDATE SKIP LOCKED`; the
//! per-key guard that holds across processes is a row in `leases` (flow, object key) taken with
//! an upsert that only succeeds when the previous lease has expired. Inserts `NOTIFY
//! xecm_events` in their transaction; every replica `LISTEN`s and wakes its worker, with
//! polling as the backstop.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder, Transaction};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::StoreConfig;
use super::guard::DiskGuard;
use super::text::{escape, unescape};
use super::{InsertOutcome, JOIN_WAITING_RETRY, NewEvent, Source, StoreError, new_event_id, state};

// The query code in `sql.rs` is compiled once per dialect; its `super` is this module.
#[allow(clippy::duplicate_mod)]
#[path = "sql.rs"]
mod sql;

type Db = Postgres;
type Backend = PgStore;
const BACKEND: &str = "postgres";
/// Replicas claim concurrently: each skips the rows another has locked.
const SKIP_LOCKED: &str = " FOR UPDATE SKIP LOCKED";
const FOR_UPDATE: &str = " FOR UPDATE";
const EMPTY_BYTES: &str = "''::bytea";
const USED_BYTES: &str = "SELECT pg_database_size(current_database())";
/// Serializes replicas claiming work for the same business object (any flow) until the claim
/// commits; the lease rows alone cannot, since each flow has its own.
const LOCK_OBJECT: Option<&str> = Some("SELECT pg_advisory_xact_lock(hashtext($1))");

/// Rows per multi-row insert (at most 15 parameters each: well under PostgreSQL's 65535 bind
/// parameters per statement).
const ROWS_PER_STATEMENT: usize = 500;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// The channel on which new events are announced.
pub const CHANNEL: &str = "xecm_events";

pub struct PgStore {
    pool: PgPool,
    wakeup: Arc<Notify>,
    listener: Mutex<Option<JoinHandle<()>>>,
    listen_pool: PgPool,
    guard: DiskGuard,
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
            guard: DiskGuard::new(cfg, None),
        })
    }

    /// The connection pool, for tests and tools.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A write transaction (PostgreSQL needs no process-local serialisation).
    async fn begin_write(&self) -> Result<((), Transaction<'static, Postgres>), StoreError> {
        Ok(((), self.pool.begin().await?))
    }

    /// Announces new work to every replica as the transaction commits.
    async fn commit_announced(
        &self,
        mut tx: Transaction<'static, Postgres>,
    ) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn insert(&self, events: Vec<NewEvent>) -> Result<Vec<InsertOutcome>, StoreError> {
        if self.pool.is_closed() {
            return Err(StoreError::Closed);
        }
        let mut tx = self.pool.begin().await?;
        let mut inserted = insert_requests(&mut tx, &[&events]).await?;
        if inserted.new_work {
            self.commit_announced(tx).await?;
        } else {
            tx.commit().await?;
        }
        Ok(inserted.outcomes.remove(0))
    }

    async fn shutdown(&self) {
        let listener = self.listener.lock().expect("listener lock").take();
        if let Some(listener) = listener {
            listener.abort();
            let _ = listener.await;
        }
        self.listen_pool.close().await;
        self.pool.close().await;
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

// ----- the ingest transaction (SQLite's is in `sqlite_writer.rs`) -----

/// Stores `resyncs` (pending, for the worker to route); a resync stored before (its cause
/// delivered again) is not stored twice. Whether any was new.
async fn insert_resyncs(tx: &mut sql::Conn, resyncs: &[NewEvent]) -> Result<bool, StoreError> {
    let senders: Vec<&NewEvent> = resyncs.iter().collect();
    let body_ids = insert_bodies(tx, &senders).await?;
    let rows: Vec<(&NewEvent, String, i64)> = resyncs
        .iter()
        .zip(body_ids)
        .map(|(resync, body_id)| (resync, new_event_id(), body_id))
        .collect();
    let mut inserted = HashSet::new();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        inserted.extend(insert_rows(tx, chunk).await?);
    }
    for (_, id, body_id) in &rows {
        if !inserted.contains(id) {
            sqlx::query("DELETE FROM bodies WHERE id = $1")
                .bind(body_id)
                .execute(&mut *tx)
                .await?;
        }
    }
    Ok(!inserted.is_empty())
}

/// Stores the body and headers of each request (given by one of its events) with one
/// statement per chunk; returns the new ids in the order of `requests`.
async fn insert_bodies(tx: &mut sql::Conn, requests: &[&NewEvent]) -> Result<Vec<i64>, StoreError> {
    let mut ids = Vec::with_capacity(requests.len());
    for chunk in requests.chunks(ROWS_PER_STATEMENT) {
        let mut headers = Vec::with_capacity(chunk.len());
        for event in chunk {
            headers.push(
                serde_json::to_vec(&event.headers)
                    .map_err(|e| StoreError::Invalid(format!("headers: {e}")))?,
            );
        }
        let mut query = QueryBuilder::<Postgres>::new("INSERT INTO bodies (body, headers) ");
        query.push_values(chunk.iter().zip(&headers), |mut row, (event, headers)| {
            row.push_bind(event.raw_body.as_ref())
                .push_bind(headers.as_slice());
        });
        query.push(" RETURNING id");
        let mut new: Vec<i64> = query.build_query_scalar().fetch_all(&mut *tx).await?;
        // RETURNING promises no order, but the rows are inserted in the order of the VALUES
        // and each takes a larger id than the one before (SQLite's rowid, PostgreSQL's
        // sequence), so ascending ids are the requests' order.
        new.sort_unstable();
        if new.len() != chunk.len() {
            return Err(StoreError::Invalid(format!(
                "{} bodies stored for {} requests",
                new.len(),
                chunk.len()
            )));
        }
        ids.extend(new);
    }
    Ok(ids)
}

/// Inserts the rows that are new; returns the ids of those inserted.
async fn insert_rows(
    tx: &mut sql::Conn,
    rows: &[(&NewEvent, String, i64)],
) -> Result<Vec<String>, StoreError> {
    let offset = |at: usize| {
        i32::try_from(at).map_err(|_| StoreError::Invalid("the body exceeds 2 GiB".into()))
    };
    let mut spans = Vec::with_capacity(rows.len());
    for (event, _, _) in rows {
        spans.push((offset(event.span.start)?, offset(event.span.end)?));
    }
    let mut query = QueryBuilder::<Postgres>::new(
        "INSERT INTO events (id, source, source_event_id, kind, module, object_id, object_key,
                             body_id, body_start, body_end, received_at, next_attempt_at,
                             updated_at, state, last_error) ",
    );
    query.push_values(
        rows.iter().zip(spans),
        |mut row, ((event, id, body_id), span)| {
            let text = |value: &Option<String>| value.as_deref().map(|v| escape(v).into_owned());
            row.push_bind(id.as_str())
                .push_bind(event.source.as_str())
                .push_bind(escape(&event.source_event_id).into_owned())
                .push_bind(escape(&event.kind).into_owned())
                .push_bind(text(&event.module))
                .push_bind(text(&event.object_id))
                .push_bind(text(&event.object_key))
                .push_bind(*body_id)
                .push_bind(span.0)
                .push_bind(span.1)
                .push_bind(event.received_at)
                .push_bind(event.received_at)
                .push_bind(event.received_at)
                .push_bind(event.initial_state())
                .push_bind(event.initial_error());
        },
    );
    query.push(" ON CONFLICT (source, source_event_id) DO NOTHING RETURNING id");
    Ok(query.build_query_scalar().fetch_all(&mut *tx).await?)
}

/// What [`insert_requests`] did.
struct Inserted {
    /// Per request, per event.
    pub outcomes: Vec<Vec<InsertOutcome>>,
    /// Whether the worker has something new to do (jobs, or events to route).
    pub new_work: bool,
}

/// Writes the events of several requests inside the caller's transaction. Each request's body
/// is stored once (the events of one request share one `Bytes`), the events with multi-row
/// inserts, and the jobs of events routed at ingest with them. A duplicate (of a stored event
/// or of one earlier in these requests) names the id stored first; a body none of whose events
/// was new is not kept.
async fn insert_requests(
    tx: &mut sql::Conn,
    requests: &[&[NewEvent]],
) -> Result<Inserted, StoreError> {
    // The events of one request share its body (the same bytes): one row per request.
    let mut slots: HashMap<(usize, usize), usize> = HashMap::new();
    let mut senders: Vec<&NewEvent> = Vec::new();
    let mut body_of = Vec::new();
    for event in requests.iter().flat_map(|events| events.iter()) {
        let key = (event.raw_body.as_ptr() as usize, event.raw_body.len());
        let slot = *slots.entry(key).or_insert_with(|| {
            senders.push(event);
            senders.len() - 1
        });
        body_of.push((event, slot));
    }
    let body_ids = insert_bodies(tx, &senders).await?;
    let events: Vec<(&NewEvent, String, i64)> = body_of
        .into_iter()
        .map(|(event, slot)| (event, new_event_id(), body_ids[slot]))
        .collect();
    let mut inserted = HashSet::new();
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        inserted.extend(insert_rows(tx, chunk).await?);
    }
    let causes: Vec<&NewEvent> = events
        .iter()
        .filter(|(event, id, _)| inserted.contains(id) && crate::store::fans_out(event))
        .map(|(event, _, _)| *event)
        .collect();
    let resyncs = dependent_resyncs(tx, &causes).await?;
    let mut new_work = insert_resyncs(tx, &resyncs).await?;
    let mut stored: HashMap<(Source, &str), String> = HashMap::new();
    let mut kept_bodies = HashSet::new();
    let mut jobs = Vec::new();
    for (event, id, body_id) in &events {
        if inserted.contains(id) {
            stored.insert((event.source, &event.source_event_id), id.clone());
            kept_bodies.insert(*body_id);
            match &event.routing {
                None => new_work = true,
                Some(flows) => jobs.extend(flows.iter().map(|flow| (*event, id, flow))),
            }
        }
    }
    for chunk in jobs.chunks(ROWS_PER_STATEMENT) {
        insert_jobs(tx, chunk).await?;
        join_waiting_retries(tx, chunk).await?;
        new_work = true;
    }
    for body_id in body_ids.iter().filter(|id| !kept_bodies.contains(*id)) {
        sqlx::query("DELETE FROM bodies WHERE id = $1")
            .bind(body_id)
            .execute(&mut *tx)
            .await?;
    }
    let mut outcomes = Vec::with_capacity(events.len());
    for (event, id, _) in &events {
        let key = (event.source, event.source_event_id.as_str());
        outcomes.push(if inserted.contains(id) {
            InsertOutcome::Accepted(id.clone())
        } else if let Some(first) = stored.get(&key) {
            InsertOutcome::Duplicate(first.clone())
        } else {
            InsertOutcome::Duplicate(existing_id(tx, event).await?)
        });
    }
    let mut outcomes = outcomes.into_iter();
    let outcomes = requests
        .iter()
        .map(|events| outcomes.by_ref().take(events.len()).collect())
        .collect();
    Ok(Inserted { outcomes, new_work })
}

/// The resyncs of the runs that depend on the objects of `causes` (the dependency index), found
/// with one query per chunk, in the transaction that stores the causes.
async fn dependent_resyncs(
    tx: &mut sql::Conn,
    causes: &[&NewEvent],
) -> Result<Vec<NewEvent>, StoreError> {
    let keys: BTreeSet<String> = causes
        .iter()
        .filter_map(|e| e.object_key.as_deref())
        .map(|k| escape(k).into_owned())
        .collect();
    let keys: Vec<String> = keys.into_iter().collect();
    let mut dependents: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Postgres>::new(
            "SELECT dependency, flow, object_key FROM dependencies WHERE dependency IN (",
        );
        let mut list = query.separated(", ");
        for key in chunk {
            list.push_bind(key.as_str());
        }
        query.push(") ORDER BY flow, object_key");
        let rows: Vec<(String, String, String)> =
            query.build_query_as().fetch_all(&mut *tx).await?;
        for (dependency, flow, key) in rows {
            dependents
                .entry(unescape(dependency))
                .or_default()
                .push((flow, unescape(key)));
        }
    }
    let mut resyncs = Vec::new();
    for cause in causes {
        let key = cause.object_key.as_deref().unwrap_or_default();
        let Some(runs) = dependents.get(key) else {
            continue;
        };
        tracing::info!(
            object_key = key,
            dependents = runs.len(),
            "resyncing the runs that use the event's object"
        );
        for (flow, object_key) in runs {
            resyncs.push(crate::store::dependent_resync(cause, flow, object_key)?);
        }
    }
    Ok(resyncs)
}

/// The jobs of events routed at ingest: one per (event, flow).
async fn insert_jobs(
    tx: &mut sql::Conn,
    jobs: &[(&NewEvent, &String, &String)],
) -> Result<(), StoreError> {
    let mut query = QueryBuilder::<Postgres>::new(
        "INSERT INTO jobs (event_id, flow, object_key, state, age_from, next_attempt_at,
                           created_at, updated_at) ",
    );
    query.push_values(jobs, |mut row, (event, id, flow)| {
        row.push_bind(id.as_str())
            .push_bind(flow.as_str())
            .push_bind(event.job_key(id))
            .push_bind(state::PENDING)
            .push_bind(event.received_at)
            .push_bind(event.received_at)
            .push_bind(event.received_at)
            .push_bind(event.received_at);
    });
    query.build().execute(&mut *tx).await?;
    Ok(())
}

async fn existing_id(tx: &mut sql::Conn, event: &NewEvent) -> Result<String, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT id FROM events WHERE source = $1 AND source_event_id = $2")
            .bind(event.source.as_str())
            .bind(escape(&event.source_event_id))
            .fetch_one(&mut *tx)
            .await?,
    )
}

/// [`join_waiting_retry`] for the jobs inserted at ingest, in one statement.
async fn join_waiting_retries(
    tx: &mut sql::Conn,
    jobs: &[(&NewEvent, &String, &String)],
) -> Result<(), StoreError> {
    let mut query = QueryBuilder::<Postgres>::new(JOIN_WAITING_RETRY);
    query.push(" WHERE state = 'pending' AND event_id IN (");
    let mut ids = query.separated(", ");
    for (_, id, _) in jobs {
        ids.push_bind(id.as_str());
    }
    query.push(")");
    query.build().execute(&mut *tx).await?;
    Ok(())
}
