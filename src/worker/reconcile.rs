//! Catching what webhooks missed: 4ALLPORTAL objects modified since a stored cursor, and
//! decisions of OpenText workflows the bridge started for which no callback arrived. Both
//! enqueue ordinary events, so the flows handle them like any other.

use async_trait::async_trait;

use crate::store::{InsertOutcome, NewEvent, Source, Store, StoreError};

/// The cursor under which the 4ALLPORTAL loop remembers how far it got.
pub const ALLPORTAL_CURSOR: &str = "allportal.modified_since";
/// Kind of the events the 4ALLPORTAL loop enqueues (the flows treat them as a modification).
pub const MODIFY_KIND: &str = "moduleobject_modify";
/// Kind of the events the OpenText loop enqueues for a decided workflow.
pub const WORKFLOW_DECISION_KIND: &str = "workflow_decision";
/// Workflows polled per round.
const WORKFLOWS_PER_ROUND: i64 = 200;

/// One object 4ALLPORTAL reports as modified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectChange {
    pub module: String,
    pub object_id: String,
    /// The object's modification time as 4ALLPORTAL reports it.
    pub mod_time: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeBatch {
    pub changes: Vec<ObjectChange>,
    /// Where the next poll continues; `None` keeps the current cursor.
    pub next_cursor: Option<String>,
}

/// 4ALLPORTAL's "objects modified since" query.
#[async_trait]
pub trait ChangeFeed: Send + Sync {
    /// Objects modified after `cursor` (everything relevant when `None`), in the feed's own
    /// modules and in `also` (the modules of objects that runs depend on).
    async fn changed_since(
        &self,
        cursor: Option<&str>,
        also: &[String],
    ) -> Result<ChangeBatch, String>;
}

/// The state of one OpenText workflow.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkflowStatus {
    Running,
    /// Finished with this decision (approved/rejected, comment, who, when).
    Decided {
        decision: serde_json::Value,
    },
    /// OpenText no longer knows the process (deleted): stop polling it.
    Gone,
}

/// OpenText's workflow status query.
#[async_trait]
pub trait WorkflowStatusFeed: Send + Sync {
    async fn status(&self, process_id: &str) -> Result<WorkflowStatus, String>;
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("upstream: {0}")]
    Upstream(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One round against 4ALLPORTAL; returns how many new events it enqueued. The cursor moves
/// only after the events are stored, so a crash in between re-polls (and the event ids,
/// derived from object and modification time, deduplicate).
pub async fn reconcile_allportal(
    store: &dyn Store,
    feed: &dyn ChangeFeed,
    now: i64,
) -> Result<usize, ReconcileError> {
    let cursor = store.get_cursor(ALLPORTAL_CURSOR).await?;
    // A changed asset or item reaches the runs that use it (the worker resyncs them).
    let also = store.dependency_modules().await?;
    let batch = feed
        .changed_since(cursor.as_deref(), &also)
        .await
        .map_err(ReconcileError::Upstream)?;
    let events = batch.changes.iter().map(|c| change_event(c, now)).collect();
    let accepted = count_accepted(&store.insert_events(events).await?);
    if let Some(next) = batch.next_cursor {
        store.set_cursor(ALLPORTAL_CURSOR, &next, now).await?;
    }
    if accepted > 0 {
        tracing::info!(accepted, "4ALLPORTAL reconciliation found missed changes");
    }
    Ok(accepted)
}

fn change_event(change: &ObjectChange, now: i64) -> NewEvent {
    let object_key = format!("{}/{}", change.module, change.object_id);
    let (raw_body, span) = NewEvent::synthetic_body(&serde_json::json!({
        "module": change.module,
        "object_id": change.object_id,
        "mod_time": change.mod_time,
        "synthetic": "reconciliation",
    }));
    NewEvent {
        source: Source::Allportal,
        source_event_id: format!("reconcile:{object_key}@{}", change.mod_time),
        kind: MODIFY_KIND.to_string(),
        module: Some(change.module.clone()),
        object_id: Some(change.object_id.clone()),
        object_key: Some(object_key),
        raw_body,
        span,
        headers: serde_json::json!({}),
        received_at: now,
        routing: None,
        dead_letter: None,
    }
}

/// One round against OpenText: every running workflow is asked for its status; a decided one
/// is enqueued as a `workflow_decision` event for its object and marked decided. Returns how
/// many decisions it enqueued.
pub async fn reconcile_opentext(
    store: &dyn Store,
    feed: &dyn WorkflowStatusFeed,
    now: i64,
) -> Result<usize, ReconcileError> {
    let mut enqueued = 0;
    for workflow in store.running_workflows(WORKFLOWS_PER_ROUND).await? {
        let status = match feed.status(&workflow.process_id).await {
            Ok(status) => status,
            Err(error) => {
                tracing::warn!(process = %workflow.process_id, %error, "workflow status failed");
                continue;
            }
        };
        let decision = match status {
            WorkflowStatus::Running => continue,
            WorkflowStatus::Gone => serde_json::json!({ "gone": true }),
            WorkflowStatus::Decided { decision } => decision,
        };
        let (raw_body, span) = NewEvent::synthetic_body(&serde_json::json!({
            "process_id": workflow.process_id,
            "flow": workflow.flow,
            "decision": decision,
            "synthetic": "reconciliation",
        }));
        let event = NewEvent {
            source: Source::Opentext,
            source_event_id: format!("reconcile:workflow:{}", workflow.process_id),
            kind: WORKFLOW_DECISION_KIND.to_string(),
            module: None,
            object_id: None,
            object_key: Some(workflow.object_key.clone()),
            raw_body,
            span,
            headers: serde_json::json!({}),
            received_at: now,
            routing: None,
            dead_letter: None,
        };
        enqueued += count_accepted(&store.insert_events(vec![event]).await?);
        store
            .decide_workflow(&workflow.process_id, &decision, now)
            .await?;
    }
    Ok(enqueued)
}

fn count_accepted(outcomes: &[InsertOutcome]) -> usize {
    outcomes
        .iter()
        .filter(|o| matches!(o, InsertOutcome::Accepted(_)))
        .count()
}
