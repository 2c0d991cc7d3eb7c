//! The worker's side of the store: jobs, leases, attempts, notes, cursors and workflows, and the
//! query shapes the admin API reads.
//!
//! An **event** is what arrived; a **job** is one flow's work for one event. Jobs of the same
//! (flow, object key) are claimed together under one lease and run as one reconcile.

use std::collections::BTreeMap;

use serde::Serialize;

use super::StoredEvent;

/// Event and job states. Events: `pending` (not yet routed) → `routed` (jobs in progress) →
/// `done` | `dead` | `ignored`, derived from the jobs. Jobs: `pending` → `running` → `done` |
/// `dead` | `ignored` (or back to `pending` for a retry).
pub mod state {
    pub const PENDING: &str = "pending";
    pub const ROUTED: &str = "routed";
    pub const RUNNING: &str = "running";
    pub const DONE: &str = "done";
    pub const DEAD: &str = "dead";
    pub const IGNORED: &str = "ignored";

    /// States from which an event or job can be replayed.
    pub const FINISHED: [&str; 3] = [DONE, DEAD, IGNORED];
}

/// Attempt outcomes written to `attempts.outcome`.
pub mod outcome {
    pub const SUCCESS: &str = "success";
    pub const SKIPPED: &str = "skipped";
    pub const RETRYABLE: &str = "retryable";
    pub const PERMANENT: &str = "permanent";
    /// The worker stopped (crash) and its lease ran out before the attempt finished.
    pub const ABANDONED: &str = "abandoned";
    /// Shutdown released the work before it finished; the attempt does not count.
    pub const RELEASED: &str = "released";
    /// An upstream the flow needs was unavailable (circuit open); the attempt does not count.
    pub const PARKED: &str = "parked";
}

/// The reason recorded on an event that no flow wants.
pub const NO_FLOW_WANTS_IT: &str = "no flow wants it";

/// The routing decision for one `pending` event.
#[derive(Debug, Clone)]
pub struct Routing {
    pub event_id: String,
    /// The per-flow exclusion key (the event's business object key, or `event/<id>`).
    pub object_key: String,
    /// Flows that want the event; empty → the event becomes `ignored`.
    pub flows: Vec<String>,
}

/// Parameters of one claim.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// Unique per claim (`<instance>/<uuid>`), so renewals and results are precise.
    pub owner: String,
    pub now: i64,
    pub lease_until: i64,
    /// Most jobs merged into one unit.
    pub max_jobs: i64,
    /// A job whose lease ran out this many times within its retry budget is dead (the worker
    /// passes `i64::MAX`: only the maximum retry age ends retries).
    pub max_attempts: i64,
}

/// One job inside a claimed unit.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub job_id: i64,
    /// The `attempts` row opened for this run.
    pub attempt_id: i64,
    /// Attempt number over the job's whole life (numbering of the history).
    pub attempt: i64,
    /// Attempt number since the job was created or last replayed (the retry budget).
    pub budget_attempt: i64,
    /// When the current retry budget started (creation or replay), unix ms.
    pub age_from: i64,
    pub event: StoredEvent,
}

/// A claimed unit of work: all due jobs of one (flow, object key), under one lease.
#[derive(Debug, Clone)]
pub struct ClaimedWork {
    pub owner: String,
    pub flow: String,
    pub object_key: String,
    pub lease_until: i64,
    pub jobs: Vec<ClaimedJob>,
}

impl ClaimedWork {
    /// The distinct events behind the claimed jobs.
    pub fn event_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.jobs.iter().map(|j| j.event.id.clone()).collect();
        ids.dedup();
        ids
    }
}

/// What one run did, written to each job's attempt row.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub outcome: &'static str,
    pub error: Option<String>,
    /// The flow's summary of what it changed.
    pub summary: Option<serde_json::Value>,
    pub finished_at: i64,
}

/// The next state of one job after a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobTransition {
    pub job_id: i64,
    pub attempt_id: i64,
    /// `pending` (retry), `done`, `dead` or `ignored`.
    pub state: &'static str,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    /// The run did not count against the retry schedule (parked while a circuit was open).
    pub refund_attempt: bool,
}

/// Filter of the event list and of bulk replay; every field narrows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EventFilter {
    pub state: Option<String>,
    /// Events with a job of this flow.
    pub flow: Option<String>,
    pub source: Option<String>,
    pub kind: Option<String>,
    pub object_key: Option<String>,
    /// Received at or after (unix ms).
    pub received_from: Option<i64>,
    /// Received before (unix ms).
    pub received_to: Option<i64>,
}

/// One page of the event list: newest first, continued with `after` = the last id seen.
#[derive(Debug, Clone)]
pub struct Page {
    pub after: Option<String>,
    pub limit: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventPage {
    /// Events without their raw bodies (see [`super::Store::get_event`]).
    pub events: Vec<StoredEvent>,
    /// Pass as `Page::after` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    pub attempt: i64,
    pub owner: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub outcome: Option<String>,
    pub error: Option<String>,
    pub summary: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobRecord {
    pub id: i64,
    pub flow: String,
    pub object_key: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    pub history: Vec<AttemptRecord>,
}

/// An audit note on an event (replays, operator actions).
#[derive(Debug, Clone, Serialize)]
pub struct EventNote {
    pub at: i64,
    pub note: String,
}

/// An event with its jobs, their attempt history and the audit notes.
#[derive(Debug, Clone, Serialize)]
pub struct EventDetail {
    pub event: StoredEvent,
    pub jobs: Vec<JobRecord>,
    pub notes: Vec<EventNote>,
}

/// Job counts of one flow by state, and its most recent error.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FlowStats {
    pub flow: String,
    pub states: BTreeMap<String, i64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
}

/// The health of the queue as a whole.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Backlog {
    /// Events not finished yet (`pending` or `routed`).
    pub events: i64,
    /// Jobs waiting or running.
    pub jobs: i64,
    /// Age of the oldest unfinished event in ms (0 when there is none).
    pub oldest_pending_age_ms: i64,
    /// Events in `dead`.
    pub dead_letters: i64,
}

/// A workflow the bridge started in OpenText, polled until a decision is known.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorkflowRecord {
    pub process_id: String,
    pub flow: String,
    pub object_key: String,
    pub started_at: i64,
    /// `running` until a decision is known, then `decided`.
    pub state: String,
    pub decision: Option<serde_json::Value>,
    pub updated_at: i64,
}

/// Workflow states.
pub mod workflow_state {
    pub const RUNNING: &str = "running";
    pub const DECIDED: &str = "decided";
}

/// What replaying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayOutcome {
    /// Its finished jobs are pending again (or the event goes back to routing).
    Replayed,
    /// Not finished yet; nothing changed.
    InProgress,
    NotFound,
}

/// A business object's workspace as one flow last applied it (`links`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LinkRecord {
    pub flow: String,
    pub object_key: String,
    /// The OpenText workspace node, once known.
    pub workspace_id: Option<i64>,
    /// Whatever the flow needs to remember between runs (hashes of applied values, the last
    /// audit entry reviewed, the workflow started, …).
    pub state: serde_json::Value,
    pub updated_at: i64,
}

/// A workspace role membership the bridge made (`team_memberships`): the record that tells
/// the bridge's members from those added by hand.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TeamMembership {
    pub workspace_id: i64,
    pub role_id: i64,
    pub member_id: i64,
    pub flow: String,
    /// The workspace's `bo_type/bo_id`.
    pub object_key: String,
    pub role_name: String,
    /// The member as the mapping named it (login, e-mail or group name).
    pub member_name: String,
    pub created_at: i64,
}

/// A document a flow keeps current (`documents`), by a logical name that is stable across runs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DocumentRecord {
    pub flow: String,
    pub object_key: String,
    pub logical_name: String,
    pub node_id: i64,
    /// SHA-256 (hex) of the bytes last uploaded.
    pub content_hash: String,
    /// The source's own version marker (e.g. the file object's `mod_time`) at that upload, so
    /// an unchanged source needs not even be downloaded to be compared.
    pub source_version: Option<String>,
    /// Hash of the category values last applied to the document.
    pub meta_hash: Option<String>,
    /// OpenText version number of the last upload (1 for the first).
    pub version: i64,
    pub updated_at: i64,
}

/// One write of the bridge to a 4ALLPORTAL object (`writebacks`), for echo suppression.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WritebackRecord {
    pub module: String,
    pub object_id: String,
    /// Names of the fields written.
    pub fields: Vec<String>,
    /// Hash of the object's content as the write leaves it, recorded before the write: a change
    /// event whose object shows exactly this content is the write's echo.
    pub values_hash: String,
    /// The object's `mod_time` right after the write (not known when recorded before it).
    pub mod_time_after: Option<String>,
    pub at: i64,
}

/// A create without a natural key, recorded before its call (`intents`). Found `pending` by a
/// later run, it means the call may have happened: look the outcome up by `token` first.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IntentRecord {
    pub flow: String,
    pub object_key: String,
    /// `start_workflow`, `add_version`, `finalize_records`, `apply_hold`.
    pub action: String,
    /// What the call acts on (a workspace, a node, …), so one object can hold several intents.
    pub target: String,
    /// The identity the outcome carries (e.g. in a workflow's title), for the lookup.
    pub token: String,
    /// `pending` until the outcome is known, then `done`.
    pub state: String,
    /// What the call produced (e.g. the process id), once done.
    pub detail: serde_json::Value,
    pub created_at: i64,
    pub updated_at: i64,
}

/// States of an [`IntentRecord`].
pub mod intent_state {
    pub const PENDING: &str = "pending";
    pub const DONE: &str = "done";
}

/// One run of a flow for a business object: an attempt of one job, with the event it ran for
/// (the business-object timeline).
#[derive(Debug, Clone, Serialize)]
pub struct ObjectRun {
    pub flow: String,
    pub event_id: String,
    /// The job's current state.
    pub job_state: String,
    #[serde(flatten)]
    pub attempt: AttemptRecord,
}

/// Events stored in one minute (the overview's chart).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct MinuteCount {
    /// Start of the minute, unix milliseconds.
    pub minute: i64,
    pub events: i64,
}

/// A backfill: the 4ALLPORTAL objects of one flow's trigger, enumerated page by page in id
/// order, one resync enqueued per object (see `crate::flows::backfill`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BackfillRecord {
    pub id: String,
    pub flow: String,
    /// The operator's 4APQL condition (`--where`), if any.
    pub condition: Option<String>,
    /// The whole 4APQL query sent to 4ALLPORTAL (trigger conditions and `condition`).
    pub query: Option<String>,
    /// Objects enqueued per second; `None`: as fast as 4ALLPORTAL answers.
    pub rate: Option<f64>,
    /// See [`backfill_state`].
    pub state: String,
    /// The last object id enqueued: enumeration resumes after it.
    pub cursor: Option<String>,
    /// Objects enumerated and enqueued so far.
    pub found: i64,
    /// 4ALLPORTAL's count of matching objects when the backfill started.
    pub total: Option<i64>,
    pub error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// States of a [`BackfillRecord`].
pub mod backfill_state {
    /// Enumerating (or waiting for a process to resume it).
    pub const RUNNING: &str = "running";
    /// Every object is enqueued; the runs may still be going.
    pub const ENUMERATED: &str = "enumerated";
    /// Stopped by an operator; resumable.
    pub const CANCELLED: &str = "cancelled";
    /// Stopped by an error 4ALLPORTAL gave (e.g. an invalid `--where`); the error says which.
    pub const FAILED: &str = "failed";
}

/// The events a backfill enqueued, by what became of them.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct BackfillOutcomes {
    /// Resync events stored for the backfill.
    pub enqueued: i64,
    /// Waiting or running.
    pub pending: i64,
    /// Reconciled.
    pub done: i64,
    /// The flow passed the object over (its trigger conditions do not hold).
    pub skipped: i64,
    /// Dead letters.
    pub failed: i64,
}
