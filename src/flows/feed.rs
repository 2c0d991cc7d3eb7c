//! The workflow poller's view of OpenText: the status of a workflow the bridge started, and,
//! once finished, its decision (approve/reject, comment, who, when) from the task actions.

use async_trait::async_trait;
use serde_json::json;

use crate::clients::UpstreamError;
use crate::clients::opentext::OpentextClient;
use crate::worker::{WorkflowStatus, WorkflowStatusFeed};

/// [`WorkflowStatusFeed`] over the OpenText client.
#[derive(Debug, Clone)]
pub struct OpentextWorkflowFeed {
    opentext: OpentextClient,
}

impl OpentextWorkflowFeed {
    pub fn new(opentext: OpentextClient) -> Self {
        Self { opentext }
    }
}

/// `approved` / `rejected` from a task action's label.
pub fn decision_of(action: &str) -> Option<&'static str> {
    let action = action.to_ascii_lowercase();
    if action.starts_with("approv") || action == "accept" {
        Some("approved")
    } else if action.starts_with("reject") || action == "decline" {
        Some("rejected")
    } else {
        None
    }
}

#[async_trait]
impl WorkflowStatusFeed for OpentextWorkflowFeed {
    async fn status(&self, process_id: &str) -> Result<WorkflowStatus, String> {
        let pid: i64 = process_id
            .parse()
            .map_err(|_| format!("process id `{process_id}` is not a number"))?;
        let status = match self.opentext.workflow_status(pid).await {
            Ok(s) => s,
            Err(UpstreamError::NotFound { .. }) => return Ok(WorkflowStatus::Gone),
            Err(e) => return Err(e.to_string()),
        };
        if !status.state.is_finished() {
            return Ok(WorkflowStatus::Running);
        }
        let subprocess = status
            .completed
            .iter()
            .find_map(|s| s.subprocess_id)
            .unwrap_or(pid);
        let activities = self
            .opentext
            .workflow_activities(pid, subprocess)
            .await
            .map_err(|e| e.to_string())?;
        let decided = activities
            .iter()
            .rev()
            .find_map(|a| Some((decision_of(a.action.as_deref()?)?, a)));
        let decision = match decided {
            Some((decision, activity)) => json!({
                "process_id": pid,
                "decision": decision,
                "comment": activity.comment,
                "approver": activity.user_id.map(|u| u.to_string()),
                "decided_at": activity.date,
            }),
            // Finished without an approve/reject action (stopped): treat as rejected.
            None => json!({"process_id": pid, "decision": "rejected",
                           "comment": "workflow ended without a decision"}),
        };
        Ok(WorkflowStatus::Decided { decision })
    }
}
