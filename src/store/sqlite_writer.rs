//! The SQLite inbox writer: one thread that owns one connection and stores webhook requests by
//! **group commit**. Whatever requests are waiting when a transaction starts are written in that
//! transaction and made durable by one fsync (`synchronous = FULL`); each request is answered
//! only after the commit that holds its events.
//!
//! A second thread checkpoints the WAL beside the writer ([`checkpoint_until`]), so that no
//! commit waits for pages to be copied into the database file.
//!
//! Why a plain thread with its own connection (rusqlite) rather than sqlx: sqlx runs every SQLite
//! statement on a worker thread of its own, so each statement is a round trip between threads.
//! On a busy two-core machine one such trip took about 200 µs, and a group commit made five of
//! them (BEGIN, bodies, events, dependency look-up, COMMIT) — most of the time a request waited.
//! Here the statements of a commit are plain function calls on prepared statements.
//!
//! The logic is that of the PostgreSQL store's ingest transaction (`postgres.rs`): the body
//! stored once per request, one row per event unless (source, source event id) is known, the
//! resyncs of the runs that depend on a changed object, and the jobs of the flows that want each
//! event. Both are proven by the shared store suite.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior, params};
use tokio::sync::{Notify, mpsc, oneshot};

use super::text::{escape, unescape};
use super::{InsertOutcome, JOIN_WAITING_RETRY, NewEvent, StoreError, new_event_id};

/// Requests queued for the writer; bounded so that a stalled disk pushes back on ingest.
const WRITE_QUEUE: usize = 4096;

/// As long as the pool's: a worker transaction may hold SQLite's write lock meanwhile.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the checkpointer copies what the WAL holds into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);
/// WAL pages at which a commit checkpoints by itself, as SQLite does by default at 1,000: only
/// when the checkpointer has fallen far behind (readers held its pages), to bound the WAL.
const WRITER_CHECKPOINT_PAGES: u32 = 20_000;

pub(super) type Reply = oneshot::Sender<Answer>;

/// Per event of a request: `None` when it was stored under its id, else the id it was stored
/// under before; or why the request was not stored.
type Known = Result<Vec<Option<String>>, StoreError>;

/// One webhook request's events, the id each gets if it is new (made by the caller, see
/// [`Answer`]), and where to send the answer.
pub(super) struct WriteRequest {
    pub events: Vec<NewEvent>,
    pub ids: Vec<String>,
    pub reply: Reply,
}

/// A request's own memory comes back with its outcome, so that the task that allocated it frees
/// it: what a thread frees of another thread's allocations goes back to that thread's heap under
/// its lock, and on the writer's thread that time was on every commit's path.
pub(super) struct Answer {
    events: Vec<NewEvent>,
    ids: Vec<String>,
    known: Known,
}

impl Answer {
    /// What storing each event did; frees the request on the caller's thread.
    pub fn into_outcomes(self) -> Result<Vec<InsertOutcome>, StoreError> {
        drop(self.events);
        let outcomes = self.known?.into_iter().zip(self.ids);
        Ok(outcomes
            .map(|(known, id)| match known {
                Some(stored) => InsertOutcome::Duplicate(stored),
                None => InsertOutcome::Accepted(id),
            })
            .collect())
    }
}

/// The handle the store keeps: the queue into the writer, and how to wait for it to stop.
pub(super) struct WriterHandle {
    pub queue: mpsc::Sender<WriteRequest>,
    pub stopped: oneshot::Receiver<()>,
}

/// Each request's outcomes (or error), and whether the worker has something new to do.
type Written = (Vec<Known>, bool);

/// What the writer shares with the store.
pub(super) struct Shared {
    /// Transactions the writer has committed (each is one fsync).
    pub commits: Arc<AtomicU64>,
    /// Wakes idle workers when new work is committed.
    pub wakeup: Arc<Notify>,
    /// This process's write transactions take turns: SQLite admits one writer at a time, and
    /// its busy handler waits by sleeping whole milliseconds.
    pub write_lock: Arc<tokio::sync::Mutex<()>>,
}

/// Opens the writer's connection on `path` and starts its thread.
pub(super) fn start(
    path: PathBuf,
    max_events: usize,
    shared: Shared,
) -> Result<WriterHandle, StoreError> {
    let connection = open(&path).map_err(|e| {
        StoreError::Config(format!(
            "`store.url`: cannot open {} for writing: {e}",
            path.display()
        ))
    })?;
    let checkpointer = open(&path).map_err(|e| {
        StoreError::Config(format!(
            "`store.url`: cannot open {} to checkpoint it: {e}",
            path.display()
        ))
    })?;
    let (queue, requests) = mpsc::channel(WRITE_QUEUE);
    let (done, stopped) = oneshot::channel();
    let (writer_running, writer_gone) = std::sync::mpsc::channel::<()>();
    let writer = Writer {
        connection,
        max_events: max_events.max(1),
        shared,
    };
    let spawn_failed = |e| StoreError::Config(format!("cannot start the SQLite writer: {e}"));
    let commits = writer.shared.commits.clone();
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || checkpoint_until(&checkpointer, &commits, &writer_gone))
        .map_err(spawn_failed)?;
    std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || {
            writer.run(requests);
            drop(writer_running);
            let _ = done.send(());
        })
        .map_err(spawn_failed)?;
    Ok(WriterHandle { queue, stopped })
}

fn open(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    // FULL: a commit is on disk before any webhook it holds is acknowledged (and a checkpoint
    // syncs the database file before the WAL is reused).
    connection.execute_batch(&format!(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;
         PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES};"
    ))?;
    Ok(connection)
}

/// Checkpoints the WAL every [`CHECKPOINT_EVERY`] after the writer committed, until the writer
/// is gone. A commit that checkpoints (SQLite's default, every 1,000 WAL pages) keeps every
/// webhook of its batch waiting while it copies pages and syncs the database file; here that
/// runs beside the writer. `PASSIVE` never waits for the writer or for readers: what it cannot
/// copy now, it copies next time.
fn checkpoint_until(
    connection: &Connection,
    commits: &AtomicU64,
    writer_gone: &std::sync::mpsc::Receiver<()>,
) {
    use std::sync::mpsc::RecvTimeoutError;
    let (mut checkpointed, mut failing) = (0, false);
    while let Err(RecvTimeoutError::Timeout) = writer_gone.recv_timeout(CHECKPOINT_EVERY) {
        let committed = commits.load(Ordering::Relaxed);
        if committed == checkpointed {
            continue;
        }
        checkpointed = committed;
        // One row: whether it was blocked, the WAL's frames, the frames now copied.
        match connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("WAL checkpoints work again");
            }
            Ok(()) => {}
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "WAL checkpoint failed; commits checkpoint instead");
            }
            Err(_) => {}
        }
    }
}

struct Writer {
    connection: Connection,
    max_events: usize,
    shared: Shared,
}

impl Writer {
    /// Until every sender is gone: take what is queued, commit it, answer. Dropping the queue's
    /// sender lets the writer drain what is queued and stop.
    fn run(mut self, mut queue: mpsc::Receiver<WriteRequest>) {
        while let Some(first) = queue.blocking_recv() {
            let mut count = first.events.len();
            let mut batch = vec![first];
            // Everything that arrived while the previous commit was on disk joins this one.
            while count < self.max_events {
                let Ok(next) = queue.try_recv() else { break };
                count += next.events.len();
                batch.push(next);
            }
            metrics::histogram!(crate::telemetry::metrics::GROUP_COMMIT_EVENTS)
                .record(count as f64);
            self.commit_and_reply(batch);
        }
    }

    fn commit_and_reply(&mut self, batch: Vec<WriteRequest>) {
        let write_lock = self.shared.write_lock.clone();
        let _write = write_lock.blocking_lock();
        match self.commit(&batch) {
            Ok((results, new_work)) => {
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                if new_work {
                    self.shared.wakeup.notify_waiters();
                }
                for (request, known) in batch.into_iter().zip(results) {
                    request.answer(known);
                }
            }
            // Nothing of the batch is stored: every request hears why.
            Err(error) => {
                tracing::warn!(%error, requests = batch.len(), "group commit failed");
                let message = match error {
                    StoreError::Write(message) => message,
                    other => other.to_string(),
                };
                for request in batch {
                    request.answer(Err(StoreError::Write(message.clone())));
                }
            }
        }
    }

    /// One transaction for the batch. When a request fails (its error is its answer), the
    /// batch is written again with each request under a savepoint of its own, so that its
    /// neighbours are still stored; savepoints cost a sub-journal per request, so only then.
    fn commit(&mut self, batch: &[WriteRequest]) -> Result<Written, StoreError> {
        match self.write(batch, false)? {
            Some(written) => Ok(written),
            None => Ok(self.write(batch, true)?.expect("isolated writes finish")),
        }
    }

    /// `None` when a request failed and `isolated` is off: nothing was written.
    fn write(
        &mut self,
        batch: &[WriteRequest],
        isolated: bool,
    ) -> Result<Option<Written>, StoreError> {
        let mut tx = self.begin()?;
        let mut results = Vec::with_capacity(batch.len());
        let mut new_work = false;
        for request in batch {
            let result = if isolated {
                let savepoint = tx.savepoint().map_err(database)?;
                let result = store_request(&savepoint, request);
                match result {
                    Ok(_) => savepoint.commit().map_err(database)?,
                    // Unfinished, a savepoint rolls back to where it began and is released.
                    Err(_) => savepoint.finish().map_err(database)?,
                }
                result
            } else {
                let result = store_request(&tx, request);
                if result.is_err() {
                    return Ok(None);
                }
                result
            };
            results.push(result.map(|(outcomes, work)| {
                new_work |= work;
                outcomes
            }));
        }
        tx.commit().map_err(database)?;
        Ok(Some((results, new_work)))
    }

    fn begin(&mut self) -> Result<Transaction<'_>, StoreError> {
        self.connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(database)
    }
}

impl WriteRequest {
    fn answer(self, known: Known) {
        let Self { events, ids, reply } = self;
        let _ = reply.send(Answer { events, ids, known });
    }
}

fn database(error: rusqlite::Error) -> StoreError {
    StoreError::Write(error.to_string())
}

/// Writes one request: its body once (its events share one `Bytes`), each new event with the
/// jobs of the flows that want it, and the resyncs of the runs that depend on a changed object.
/// A body none of whose events was new is not kept. Returns the outcomes and whether the worker
/// has something new to do.
fn store_request(
    tx: &Connection,
    request: &WriteRequest,
) -> Result<(Vec<Option<String>>, bool), StoreError> {
    // (address, length) of each body stored: its id, and whether one of its events was new.
    let mut bodies: Vec<((usize, usize), i64, bool)> = Vec::with_capacity(1);
    let mut outcomes = Vec::with_capacity(request.events.len());
    let mut new_work = false;
    let mut causes = Vec::new();
    for (event, id) in request.events.iter().zip(&request.ids) {
        let key = (event.raw_body.as_ptr() as usize, event.raw_body.len());
        let slot = match bodies.iter().position(|(k, _, _)| *k == key) {
            Some(slot) => slot,
            None => {
                bodies.push((key, insert_body(tx, event)?, false));
                bodies.len() - 1
            }
        };
        if !insert_row(tx, event, id, bodies[slot].1)? {
            outcomes.push(Some(existing_id(tx, event)?));
            continue;
        }
        bodies[slot].2 = true;
        if crate::store::fans_out(event) {
            causes.push(event);
        }
        match &event.routing {
            None => new_work = true,
            Some(flows) => {
                for flow in flows {
                    insert_job(tx, event, id, flow)?;
                    new_work = true;
                }
                if !flows.is_empty() {
                    join_waiting_retries(tx, id)?;
                }
            }
        }
        outcomes.push(None);
    }
    for (_, body_id, kept) in bodies {
        if !kept {
            delete_body(tx, body_id)?;
        }
    }
    for cause in causes {
        new_work |= insert_dependent_resyncs(tx, cause)?;
    }
    Ok((outcomes, new_work))
}

fn insert_body(tx: &Connection, event: &NewEvent) -> Result<i64, StoreError> {
    let headers = serde_json::to_vec(&event.headers)
        .map_err(|e| StoreError::Invalid(format!("headers: {e}")))?;
    tx.prepare_cached("INSERT INTO bodies (body, headers) VALUES ($1, $2)")
        .and_then(|mut insert| insert.execute(params![event.raw_body.as_ref(), headers]))
        .map_err(database)?;
    Ok(tx.last_insert_rowid())
}

fn delete_body(tx: &Connection, body_id: i64) -> Result<(), StoreError> {
    tx.prepare_cached("DELETE FROM bodies WHERE id = $1")
        .and_then(|mut delete| delete.execute([body_id]))
        .map_err(database)?;
    Ok(())
}

/// Whether the row was new: `false` when (source, source event id) is already stored.
fn insert_row(
    tx: &Connection,
    event: &NewEvent,
    id: &str,
    body_id: i64,
) -> Result<bool, StoreError> {
    let offset = |at: usize| {
        i32::try_from(at).map_err(|_| StoreError::Invalid("the body exceeds 2 GiB".into()))
    };
    let (start, end) = (offset(event.span.start)?, offset(event.span.end)?);
    let text = |value: &Option<String>| value.as_deref().map(|v| escape(v).into_owned());
    let inserted = tx
        .prepare_cached(
            "INSERT INTO events (id, source, source_event_id, kind, module, object_id,
                                 object_key, body_id, body_start, body_end, received_at,
                                 next_attempt_at, updated_at, state, last_error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $11, $12, $13)
             ON CONFLICT (source, source_event_id) DO NOTHING",
        )
        .and_then(|mut insert| {
            insert.execute(params![
                id,
                event.source.as_str(),
                escape(&event.source_event_id),
                escape(&event.kind),
                text(&event.module),
                text(&event.object_id),
                text(&event.object_key),
                body_id,
                start,
                end,
                event.received_at,
                event.initial_state(),
                event.initial_error(),
            ])
        })
        .map_err(database)?;
    Ok(inserted == 1)
}

fn existing_id(tx: &Connection, event: &NewEvent) -> Result<String, StoreError> {
    tx.prepare_cached("SELECT id FROM events WHERE source = $1 AND source_event_id = $2")
        .and_then(|mut select| {
            select.query_row(
                params![event.source.as_str(), escape(&event.source_event_id)],
                |row| row.get(0),
            )
        })
        .map_err(database)
}

fn insert_job(tx: &Connection, event: &NewEvent, id: &str, flow: &str) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO jobs (event_id, flow, object_key, state, age_from, next_attempt_at,
                           created_at, updated_at)
         VALUES ($1, $2, $3, 'pending', $4, $4, $4, $4)",
    )
    .and_then(|mut insert| insert.execute(params![id, flow, event.job_key(id), event.received_at]))
    .map_err(database)?;
    Ok(())
}

fn join_waiting_retries(tx: &Connection, event_id: &str) -> Result<(), StoreError> {
    tx.prepare_cached(&format!(
        "{JOIN_WAITING_RETRY} WHERE event_id = $1 AND state = 'pending'"
    ))
    .and_then(|mut update| update.execute([event_id]))
    .map_err(database)?;
    Ok(())
}

/// Stores the resyncs of the runs that use `cause`'s object (the dependency index); a resync
/// stored before (its cause delivered again) is not stored twice. Whether any was new.
fn insert_dependent_resyncs(tx: &Connection, cause: &NewEvent) -> Result<bool, StoreError> {
    let key = cause.object_key.as_deref().unwrap_or_default();
    let runs: Vec<(String, String)> = tx
        .prepare_cached(
            "SELECT flow, object_key FROM dependencies WHERE dependency = $1
             ORDER BY flow, object_key",
        )
        .and_then(|mut select| {
            select
                .query_map([escape(key)], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .map_err(database)?;
    if runs.is_empty() {
        return Ok(false);
    }
    tracing::info!(
        object_key = key,
        dependents = runs.len(),
        "resyncing the runs that use the event's object"
    );
    let mut new_work = false;
    for (flow, object_key) in runs {
        let resync = crate::store::dependent_resync(cause, &flow, &unescape(object_key))?;
        let body_id = insert_body(tx, &resync)?;
        if insert_row(tx, &resync, &new_event_id(), body_id)? {
            new_work = true;
        } else {
            delete_body(tx, body_id)?;
        }
    }
    Ok(new_work)
}
