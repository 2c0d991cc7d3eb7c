//! Durable storage: the event inbox and everything the worker needs.
//!
//! [`Store`] is a trait with two implementations: SQLite (embedded default, one replica) and
//! PostgreSQL (several replicas). Their logic is one piece of SQL code (`sql.rs`) compiled for
//! each dialect; `sqlite.rs` and `postgres.rs` hold only what the dialects differ in. Both
//! pass the same test suite.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;

pub mod config;
mod guard;
pub mod model;
pub mod postgres;
pub mod sqlite;
mod sqlite_writer;
mod text;

pub use config::StoreConfig;
pub use model::*;

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
    /// The whole request body as signed, shared by the events of one request: the store keeps
    /// it once per request.
    pub raw_body: Bytes,
    /// This event's JSON: its bytes in `raw_body` (a lone event: the whole body). The payload
    /// is derived from them on read.
    pub span: Range<usize>,
    /// The request headers that matter for audit and re-verification (never secrets).
    pub headers: serde_json::Value,
    /// Unix milliseconds.
    pub received_at: i64,
    /// The flows that want the event, decided at ingest: their jobs are created with it, and
    /// without any it is stored `ignored`. `None` leaves routing to the worker.
    pub routing: Option<Vec<String>>,
    /// Why no flow can handle the event, decided at ingest: it is stored `dead` with this
    /// reason (a dead letter, replayable once the configuration is fixed) instead of `ignored`.
    pub dead_letter: Option<String>,
}

impl NewEvent {
    /// The state an event is stored in: `pending` until routed; routed at ingest, `routed`,
    /// `dead` (a dead letter) or (no flow wants it) `ignored`.
    pub(crate) fn initial_state(&self) -> &'static str {
        if self.dead_letter.is_some() {
            return state::DEAD;
        }
        match &self.routing {
            None => state::PENDING,
            Some(flows) if flows.is_empty() => state::IGNORED,
            Some(_) => state::ROUTED,
        }
    }

    /// The reason stored with an event that is finished at ingest.
    pub(crate) fn initial_error(&self) -> Option<&str> {
        match self.initial_state() {
            state::DEAD => self.dead_letter.as_deref(),
            state::IGNORED => Some(NO_FLOW_WANTS_IT),
            _ => None,
        }
    }

    /// The key its jobs serialise on: its object (stored escaped), or the event `id` itself.
    pub(crate) fn job_key(&self, id: &str) -> String {
        match &self.object_key {
            Some(key) => text::escape(key).into_owned(),
            None => format!("event/{id}"),
        }
    }

    /// Body and span of an event that did not come over HTTP: its payload is its body.
    pub fn synthetic_body(payload: &serde_json::Value) -> (Bytes, Range<usize>) {
        let body = Bytes::from(payload.to_string());
        let span = 0..body.len();
        (body, span)
    }
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
    #[error("stored data cannot be read: {0}")]
    Corrupt(String),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("store is not ready: {0}")]
    NotReady(String),
    #[error("store is shutting down")]
    Closed,
    /// The disk guard refuses new events (see `store.max_bytes`, `store.min_free_bytes`).
    #[error("store is full: {0}")]
    Full(String),
    #[error("invalid store configuration: {0}")]
    Config(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The SQLite inbox writer's statements (its own driver, see `sqlite_writer`).
    #[error("database error: {0}")]
    Write(String),
}

/// Moves a job to the latest retry its (flow, object key) waits for, if any is later.
const JOIN_WAITING_RETRY: &str = "UPDATE jobs SET next_attempt_at = COALESCE(
        (SELECT MAX(w.next_attempt_at) FROM jobs w
         WHERE w.flow = jobs.flow AND w.object_key = jobs.object_key
           AND w.state = 'pending' AND w.last_error IS NOT NULL
           AND w.next_attempt_at > jobs.next_attempt_at), jobs.next_attempt_at)";

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

    /// Bytes the store occupies: SQLite, its pages in use (freed pages are reused before the
    /// file grows); PostgreSQL, `pg_database_size`.
    async fn used_bytes(&self) -> Result<u64, StoreError>;

    /// Flushes pending writes and closes connections. Later calls fail with [`StoreError::Closed`].
    async fn close(&self);

    // ----- worker: routing, claims, leases, results -----

    /// Notified whenever new events (or replays) are committed, so that idle workers wake up
    /// early; polling remains the backstop. PostgreSQL delivers it across processes
    /// (`LISTEN xecm_events`).
    fn wakeup(&self) -> Arc<tokio::sync::Notify>;

    /// Up to `limit` events in state `pending` (not yet routed), oldest first.
    async fn unrouted_events(&self, limit: i64) -> Result<Vec<StoredEvent>, StoreError>;

    /// Creates one job per wanted flow and marks each event `routed`, or `ignored` when no flow
    /// wants it. Events routed meanwhile by another worker are skipped. Returns how many events
    /// this call routed.
    async fn route_events(&self, routings: &[Routing], now: i64) -> Result<usize, StoreError>;

    /// Claims the due jobs of one (flow, object key) whose key has no live lease: takes the
    /// lease, marks the jobs `running` and opens an attempt per job. Jobs whose lease ran out
    /// (their worker died) are made claimable first. `None` when nothing is due.
    async fn claim(&self, request: &ClaimRequest) -> Result<Option<ClaimedWork>, StoreError>;

    /// Extends the lease of a claimed unit; `false` when it is no longer held.
    async fn renew_lease(
        &self,
        work: &ClaimedWork,
        until: i64,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// Closes the attempts and applies the transitions to the jobs still owned by this claim,
    /// then releases the lease and updates the events' states. Returns whether the lease was
    /// still held.
    async fn finish_work(
        &self,
        work: &ClaimedWork,
        result: &AttemptResult,
        transitions: &[JobTransition],
    ) -> Result<bool, StoreError>;

    /// Gives unfinished work back (shutdown): jobs `pending` and due, the attempt recorded as
    /// `released` and not counted, the lease dropped.
    async fn release_work(&self, work: &ClaimedWork, now: i64) -> Result<(), StoreError>;

    // ----- replay -----

    /// Replays a finished (`done`, `dead`, `ignored`) event: its finished jobs become pending
    /// with a fresh retry budget (the attempt history is kept), or, without jobs, the event is
    /// routed again. Adds `note` to the event's audit notes.
    async fn replay_event(
        &self,
        id: &str,
        note: &str,
        now: i64,
    ) -> Result<ReplayOutcome, StoreError>;

    /// Replays every event matching `filter` (state `dead` unless the filter names another
    /// finished state) and returns how many; with `dry_run` only counts them.
    async fn replay_by_filter(
        &self,
        filter: &EventFilter,
        dry_run: bool,
        now: i64,
    ) -> Result<u64, StoreError> {
        let mut filter = filter.clone();
        match filter.state.as_deref() {
            None => filter.state = Some(state::DEAD.to_string()),
            Some(s) if state::FINISHED.contains(&s) => {}
            Some(s) => {
                return Err(StoreError::Invalid(format!(
                    "cannot replay events in state `{s}`; use done, dead or ignored"
                )));
            }
        }
        // Collect first: replaying moves events out of the filter, which would shift pages.
        let mut ids = Vec::new();
        let mut page = Page {
            after: None,
            limit: 500,
        };
        loop {
            let found = self.list_events(&filter, &page).await?;
            ids.extend(found.events.into_iter().map(|e| e.id));
            match found.next_cursor {
                Some(cursor) => page.after = Some(cursor),
                None => break,
            }
        }
        if dry_run {
            return Ok(ids.len() as u64);
        }
        let mut replayed = 0;
        for id in ids {
            if self.replay_event(&id, "bulk replay", now).await? == ReplayOutcome::Replayed {
                replayed += 1;
            }
        }
        Ok(replayed)
    }

    /// Enqueues a synthetic `resync` event for one business object (`<module>/<id>`), for
    /// one flow or, with `None`, every flow that wants it. Returns the event id.
    async fn resync(
        &self,
        flow: Option<&str>,
        object_key: &str,
        now: i64,
    ) -> Result<String, StoreError> {
        let event = resync_event(flow, object_key, now)?;
        match self.insert_events(vec![event]).await?.pop() {
            Some(InsertOutcome::Accepted(id) | InsertOutcome::Duplicate(id)) => Ok(id),
            None => Err(StoreError::Invalid("resync event was not stored".into())),
        }
    }

    // ----- backfills (see `crate::flows::backfill`) -----

    /// Stores a new backfill.
    async fn create_backfill(&self, backfill: &BackfillRecord) -> Result<(), StoreError>;

    async fn get_backfill(&self, id: &str) -> Result<Option<BackfillRecord>, StoreError>;

    /// The newest running or cancelled backfill of `flow` with this condition: what starting
    /// the same backfill again resumes.
    async fn resumable_backfill(
        &self,
        flow: &str,
        condition: Option<&str>,
    ) -> Result<Option<BackfillRecord>, StoreError>;

    /// Takes the lease of a running backfill for `owner` until `until`: backfill `id`, or with
    /// `None` the oldest one nobody holds (its holder stopped). `None` when there is none to take.
    async fn lease_backfill(
        &self,
        id: Option<&str>,
        owner: &str,
        until: i64,
        now: i64,
    ) -> Result<Option<BackfillRecord>, StoreError>;

    /// Records an enqueued page: the new cursor, `found` more objects, 4ALLPORTAL's `total`
    /// (when known) and the renewed lease. `false` when the backfill is no longer running
    /// under `owner`'s lease (cancelled, or taken over): the caller stops.
    #[allow(clippy::too_many_arguments)]
    async fn advance_backfill(
        &self,
        id: &str,
        owner: &str,
        cursor: Option<&str>,
        found: i64,
        total: Option<i64>,
        until: i64,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// Moves a backfill in one of the states `from` to `to` (with `error`), dropping its
    /// lease. `false` when it was in none of them.
    async fn set_backfill_state(
        &self,
        id: &str,
        from: &[&str],
        to: &str,
        error: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// What became of the events backfill `id` enqueued.
    async fn backfill_outcomes(&self, id: &str) -> Result<BackfillOutcomes, StoreError>;

    // ----- queries for the admin API -----

    /// Events matching `filter`, newest first, without raw bodies.
    async fn list_events(&self, filter: &EventFilter, page: &Page)
    -> Result<EventPage, StoreError>;

    /// An event with its jobs, their attempt history and its audit notes.
    async fn event_detail(&self, id: &str) -> Result<Option<EventDetail>, StoreError>;

    /// Job counts per flow and state, with each flow's most recent error.
    async fn flow_stats(&self) -> Result<Vec<FlowStats>, StoreError>;

    /// Backlog size, oldest unfinished age, dead letters.
    async fn backlog(&self, now: i64) -> Result<Backlog, StoreError>;

    /// The `limit` most recent flow runs (attempts) for one business object, newest first.
    async fn object_runs(&self, object_key: &str, limit: i64)
    -> Result<Vec<ObjectRun>, StoreError>;

    /// Events stored per minute from `since` (unix ms) on, oldest minute first; minutes
    /// without events are left out. Reads the time-ordered ids, so it stays cheap on a large
    /// store.
    async fn events_per_minute(&self, since: i64) -> Result<Vec<MinuteCount>, StoreError>;

    // ----- retention -----

    /// An upstream answers again: every job waiting for a later attempt is due now, spread over
    /// ten steps of `step_ms` so the resumed work does not arrive at once. Returns how many.
    async fn resume_waiting(&self, now: i64, step_ms: i64) -> Result<u64, StoreError>;

    /// Deletes up to `batch` finished events (`done`, `ignored`) last updated before
    /// `older_than`, with their jobs, attempts and notes. Dead letters stay until replayed.
    async fn prune_finished(&self, older_than: i64, batch: i64) -> Result<u64, StoreError>;

    /// Keeps the store inside its budget: while it uses more than 80 % of `store.max_bytes`,
    /// deletes finished events oldest first, `batch` at a time, whatever their age; returns how
    /// many. Only where deleted rows count as room again (SQLite's pages in use); elsewhere 0.
    async fn prune_to_budget(&self, batch: i64) -> Result<u64, StoreError>;

    // ----- reconciliation state -----

    async fn get_cursor(&self, name: &str) -> Result<Option<String>, StoreError>;

    async fn set_cursor(&self, name: &str, value: &str, now: i64) -> Result<(), StoreError>;

    /// Records (or replaces) a workflow the bridge started.
    async fn record_workflow(&self, workflow: &WorkflowRecord) -> Result<(), StoreError>;

    /// Workflows still waiting for a decision, oldest first.
    async fn running_workflows(&self, limit: i64) -> Result<Vec<WorkflowRecord>, StoreError>;

    /// Stores a workflow's decision; `true` when it was still running (the first to decide).
    async fn decide_workflow(
        &self,
        process_id: &str,
        decision: &serde_json::Value,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// One workflow the bridge started, by process id.
    async fn get_workflow(&self, process_id: &str) -> Result<Option<WorkflowRecord>, StoreError>;

    /// Workflows of `flow` whose object key starts with `key_prefix`, oldest first.
    async fn workflows_of(
        &self,
        flow: &str,
        key_prefix: &str,
    ) -> Result<Vec<WorkflowRecord>, StoreError>;

    // ----- state of the business flows -----

    /// The workspace link of one business object in one flow.
    async fn get_link(
        &self,
        flow: &str,
        object_key: &str,
    ) -> Result<Option<LinkRecord>, StoreError>;

    /// Creates or replaces a workspace link.
    async fn put_link(&self, link: &LinkRecord) -> Result<(), StoreError>;

    /// A document a flow keeps current, by its logical name.
    async fn get_document(
        &self,
        flow: &str,
        object_key: &str,
        logical_name: &str,
    ) -> Result<Option<DocumentRecord>, StoreError>;

    /// Every document of one business object in one flow, by logical name.
    async fn list_documents(
        &self,
        flow: &str,
        object_key: &str,
    ) -> Result<Vec<DocumentRecord>, StoreError>;

    /// Creates or replaces a document record.
    async fn put_document(&self, document: &DocumentRecord) -> Result<(), StoreError>;

    /// Records a write of the bridge to a 4ALLPORTAL object.
    async fn record_writeback(&self, writeback: &WritebackRecord) -> Result<(), StoreError>;

    /// The bridge's most recent write to one 4ALLPORTAL object.
    async fn last_writeback(
        &self,
        module: &str,
        object_id: &str,
    ) -> Result<Option<WritebackRecord>, StoreError>;

    /// The bridge's `limit` most recent writes to one 4ALLPORTAL object, newest first.
    async fn recent_writebacks(
        &self,
        module: &str,
        object_id: &str,
        limit: i64,
    ) -> Result<Vec<WritebackRecord>, StoreError>;

    // ----- intents of creates without a natural key -----

    /// The intent of one create, if recorded.
    async fn get_intent(
        &self,
        flow: &str,
        object_key: &str,
        action: &str,
        target: &str,
    ) -> Result<Option<IntentRecord>, StoreError>;

    /// Creates or replaces an intent; durable when it returns.
    async fn put_intent(&self, intent: &IntentRecord) -> Result<(), StoreError>;

    // ----- workspace teams -----

    /// The role memberships the bridge made in one workspace, by role and member.
    async fn team_memberships(&self, workspace_id: i64) -> Result<Vec<TeamMembership>, StoreError>;

    /// Records a membership the bridge is about to make; a second record of the same
    /// (workspace, role, member) changes nothing.
    async fn record_team_membership(&self, membership: &TeamMembership) -> Result<(), StoreError>;

    /// Forgets a membership the bridge removed (or found gone).
    async fn forget_team_membership(
        &self,
        workspace_id: i64,
        role_id: i64,
        member_id: i64,
    ) -> Result<(), StoreError>;

    // ----- dependency index -----

    /// Replaces the 4ALLPORTAL objects (`module/id`) the run of `flow` for `object_key`
    /// used besides the object itself.
    async fn set_dependencies(
        &self,
        flow: &str,
        object_key: &str,
        dependencies: &[String],
    ) -> Result<(), StoreError>;

    /// The (flow, object key) runs that used `dependency` (`module/id`), in order.
    async fn dependents(&self, dependency: &str) -> Result<Vec<(String, String)>, StoreError>;

    /// The modules of all indexed dependencies (the change feed polls them too).
    async fn dependency_modules(&self) -> Result<Vec<String>, StoreError>;

    // ----- drift audit -----

    /// Up to `limit` links (flow, object key) after `after` in (flow, object key) order.
    async fn links_after(
        &self,
        after: Option<(&str, &str)>,
        limit: i64,
    ) -> Result<Vec<(String, String)>, StoreError>;
}

/// The resync of the run of `flow` for `object_key`, which used the object `cause` is about
/// (besides the flows that want the event itself). Its id derives from the cause's, so a
/// repeated delivery or a second routing adds nothing.
fn dependent_resync(
    cause: &NewEvent,
    flow: &str,
    object_key: &str,
) -> Result<NewEvent, StoreError> {
    let dependency = cause.object_key.as_deref().unwrap_or_default();
    let mut resync = resync_event(Some(flow), object_key, cause.received_at)?;
    let (raw_body, span) = NewEvent::synthetic_body(&serde_json::json!({
        "flow": flow,
        "dependency": dependency,
        "cause": {"source": cause.source.as_str(), "source_event_id": cause.source_event_id,
                  "kind": cause.kind},
    }));
    resync.raw_body = raw_body;
    resync.span = span;
    resync.source_event_id = format!(
        "dependency:{}:{}:{flow}:{object_key}",
        cause.source.as_str(),
        cause.source_event_id
    );
    Ok(resync)
}

/// Whether storing `event` resyncs the runs that depend on its object: a 4ALLPORTAL change.
/// Resyncs themselves fan out to nothing, so a chain of dependencies cannot loop.
fn fans_out(event: &NewEvent) -> bool {
    event.source == Source::Allportal && event.kind != RESYNC_KIND && event.object_key.is_some()
}

/// The resync a backfill enqueues for one object of `flow`: its id derives from the backfill
/// and the object, so enqueueing the same page again (after a crash) stores nothing new.
pub fn backfill_event(
    backfill: &str,
    flow: &str,
    object_key: &str,
    now: i64,
) -> Result<NewEvent, StoreError> {
    let mut event = resync_event(Some(flow), object_key, now)?;
    let (raw_body, span) =
        NewEvent::synthetic_body(&serde_json::json!({ "flow": flow, "backfill": backfill }));
    event.raw_body = raw_body;
    event.span = span;
    event.source_event_id = format!("backfill:{backfill}:{object_key}");
    Ok(event)
}

/// The synthetic event behind [`Store::resync`].
fn resync_event(flow: Option<&str>, object_key: &str, now: i64) -> Result<NewEvent, StoreError> {
    let (module, object_id) = object_key
        .split_once('/')
        .filter(|(m, id)| !m.is_empty() && !id.is_empty())
        .ok_or_else(|| {
            StoreError::Invalid(format!("object key `{object_key}` is not `<module>/<id>`"))
        })?;
    let (raw_body, span) = NewEvent::synthetic_body(&serde_json::json!({ "flow": flow }));
    Ok(NewEvent {
        source: Source::Allportal,
        source_event_id: format!("resync:{}", uuid::Uuid::now_v7()),
        kind: RESYNC_KIND.to_string(),
        module: Some(module.to_string()),
        object_id: Some(object_id.to_string()),
        object_key: Some(object_key.to_string()),
        raw_body,
        span,
        headers: serde_json::json!({}),
        received_at: now,
        routing: None,
        dead_letter: None,
    })
}

/// The kind of synthetic events enqueued by [`Store::resync`]; their payload's `flow` names the
/// one flow to run, or is null for all that want it.
pub const RESYNC_KIND: &str = "resync";

/// Opens the store named by `[store].url`.
pub async fn open(cfg: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    if cfg.url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(cfg).await?))
    } else if cfg.url.starts_with("postgres://") || cfg.url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::open(cfg).await?))
    } else {
        Err(StoreError::Config(format!(
            "unsupported store URL `{}`",
            crate::redact::url(&cfg.url)
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

/// The smallest event id [`new_event_id`] can give at `millis` (unix ms) or later: a UUIDv7
/// starts with its 48-bit millisecond timestamp, so ids compare as their creation times.
pub fn first_event_id_at(millis: i64) -> String {
    let millis = millis.clamp(0, (1 << 48) - 1) as u64;
    format!(
        "{:08x}-{:04x}-0000-0000-000000000000",
        millis >> 16,
        millis & 0xffff
    )
}
