//! The workflow poller's view of OpenText: the status of a workflow the bridge started, and,
//! once finished, its decision (approve/reject, comment, who as a login, when) from the task
//! actions; and
//! the 4ALLPORTAL objects modified since the reconciliation cursor.

use async_trait::async_trait;
use serde_json::json;

use crate::clients::UpstreamError;
use crate::clients::allportal::AllportalClient;
use crate::clients::opentext::OpentextClient;
use crate::worker::{ChangeBatch, ChangeFeed, ObjectChange, WorkflowStatus, WorkflowStatusFeed};

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
            Some((decision, activity)) => {
                // OpenText names the actor by user id; the callback path writes the login.
                let approver = match activity.user_id {
                    Some(id) => Some(self.opentext.login_of(&id.to_string()).await),
                    None => None,
                };
                json!({
                    "process_id": pid,
                    "decision": decision,
                    "comment": activity.comment,
                    "approver": approver,
                    "decided_at": activity.date,
                })
            }
            // Finished without an approve/reject action (stopped): treat as rejected.
            None => json!({"process_id": pid, "decision": "rejected",
                           "comment": "workflow ended without a decision"}),
        };
        Ok(WorkflowStatus::Decided { decision })
    }
}

/// Objects read per page when polling 4ALLPORTAL.
const CHANGES_PAGE: u64 = 200;
/// Pages read per module and round; the rest waits for the next round (the cursor says where).
const CHANGES_MAX_PAGES: u64 = 25;

/// [`ChangeFeed`] over the 4ALLPORTAL client: objects of the modules that trigger flows and
/// of the modules the dependency index names, modified after the cursor (a `mod_time`), oldest first.
#[derive(Debug, Clone)]
pub struct AllportalChangeFeed {
    allportal: AllportalClient,
    modules: Vec<String>,
}

impl AllportalChangeFeed {
    pub fn new(allportal: AllportalClient, modules: Vec<String>) -> Self {
        Self { allportal, modules }
    }

    async fn module_changes(
        &self,
        module: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<ObjectChange>, UpstreamError> {
        let mut changes = Vec::new();
        for page in 0..CHANGES_MAX_PAGES {
            let found = self
                .allportal
                .modified_since(module, since, &[], page * CHANGES_PAGE, CHANGES_PAGE)
                .await?;
            let count = found.result.len() as u64;
            changes.extend(found.result.into_iter().filter_map(|object| {
                Some(ObjectChange {
                    module: module.to_string(),
                    object_id: object.id,
                    mod_time: object.mod_time?,
                })
            }));
            if count < CHANGES_PAGE {
                break;
            }
        }
        Ok(changes)
    }
}

#[async_trait]
impl ChangeFeed for AllportalChangeFeed {
    /// Without a cursor (the first round ever) nothing is backfilled: the cursor starts now,
    /// and `POST /api/v1/resync` brings older objects in on purpose.
    async fn changed_since(
        &self,
        cursor: Option<&str>,
        also: &[String],
    ) -> Result<ChangeBatch, String> {
        let Some(cursor) = cursor else {
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            return Ok(ChangeBatch {
                changes: Vec::new(),
                next_cursor: Some(now),
            });
        };
        let since = chrono::DateTime::parse_from_rfc3339(cursor)
            .map_err(|e| format!("stored cursor `{cursor}` is not a time: {e}"))?
            .with_timezone(&chrono::Utc);
        let mut changes = Vec::new();
        for module in &self.modules {
            let found = self
                .module_changes(module, since)
                .await
                .map_err(|e| format!("4ALLPORTAL module `{module}`: {e}"))?;
            changes.extend(found);
        }
        // The index also names workspace types of relations (`bo_type/bo_id`), which need not
        // be 4ALLPORTAL modules: a module that cannot be polled is passed over, not fatal.
        for module in also.iter().filter(|m| !self.modules.contains(m)) {
            match self.module_changes(module, since).await {
                Ok(found) => changes.extend(found),
                Err(error) => {
                    tracing::warn!(module, %error, "dependency module not polled");
                }
            }
        }
        // The newest modification seen; RFC 3339 times in one zone sort as text.
        let next_cursor = changes.iter().map(|c| c.mod_time.clone()).max();
        Ok(ChangeBatch {
            changes,
            next_cursor,
        })
    }
}
