//! Workflows: draft process → form update → initiate, then status polling and the actions
//! taken (approve / reject).

use serde_json::{Map, Value, json};

use super::OpentextClient;
use super::routes::{
    ACTIVITIES, DRAFT_CREATE, DRAFT_UPDATE, WORKFLOW_STATUS, WORKFLOWS_ACTIVE, WORKFLOWS_BY_STATUS,
};
use super::types::{
    Activity, DraftProcess, InitiatedProcess, NodeId, WorkflowStatus, WorkflowSummary, as_i64,
    list_items, results,
};
use crate::clients::error::UpstreamError;

impl OpentextClient {
    /// Creates a draft of workflow map `workflow_id` with `documents` attached.
    pub async fn create_draft_process(
        &self,
        workflow_id: NodeId,
        documents: &[NodeId],
    ) -> Result<DraftProcess, UpstreamError> {
        let doc_ids = documents
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let body = json!({
            "workflow_id": workflow_id,
            "doc_ids": doc_ids,
            "AttachDocuments": "TRUE",
        });
        let answer = self.call_body(DRAFT_CREATE, &[], &body).await?;
        serde_json::from_value(results(&answer).clone()).map_err(UpstreamError::decode)
    }

    /// Fills the draft's form: keys such as `WorkflowForm_Title`, `WorkflowForm_<attr>`.
    pub async fn update_draft_form(
        &self,
        draft: i64,
        values: &Map<String, Value>,
    ) -> Result<(), UpstreamError> {
        let body = json!({ "action": "formUpdate", "values": values });
        let id = draft.to_string();
        self.call_body(DRAFT_UPDATE, &[&id], &body).await.map(drop)
    }

    /// Starts the drafted workflow; keep the returned `process_id` to poll it.
    pub async fn initiate_draft(
        &self,
        draft: i64,
        comment: &str,
    ) -> Result<InitiatedProcess, UpstreamError> {
        let body = json!({ "action": "Initiate", "comment": comment });
        let id = draft.to_string();
        let answer = self.call_body(DRAFT_UPDATE, &[&id], &body).await?;
        serde_json::from_value(results(&answer).clone()).map_err(UpstreamError::decode)
    }

    /// Running workflows of map `map_id` whose title contains `search_name`, optionally only
    /// those attached to business workspace `workspace`
    /// (`GET /api/v2/workflows/status/active?mapObjId=…&search_name=…&businessWorkspaceID=…`).
    pub async fn active_workflows(
        &self,
        map_id: NodeId,
        search_name: &str,
        workspace: Option<NodeId>,
    ) -> Result<Vec<WorkflowSummary>, UpstreamError> {
        let mut query = vec![
            ("mapObjId", map_id.to_string()),
            ("search_name", search_name.to_string()),
        ];
        if let Some(ws) = workspace {
            query.push(("businessWorkspaceID", ws.to_string()));
        }
        let answer = self
            .call_json(WORKFLOWS_ACTIVE, &[], |r| r.query(&query))
            .await?;
        Ok(list_items(&answer)
            .into_iter()
            .chain(single_result(&answer))
            .filter_map(|item| {
                Some(WorkflowSummary {
                    process_id: item.get("Work_WorkID").and_then(as_i64)?,
                    title: item
                        .get("SubWork_Title")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                })
            })
            .collect())
    }

    /// Every workflow the bridge's account initiated, running or finished
    /// (`GET /api/v2/workflows/status?Kind=Initiated`).
    pub async fn initiated_workflows(&self) -> Result<Vec<WorkflowSummary>, UpstreamError> {
        let answer = self
            .call_json(WORKFLOWS_BY_STATUS, &[], |r| {
                r.query(&[("Kind", "Initiated")])
            })
            .await?;
        Ok(list_items(&answer)
            .into_iter()
            .filter_map(|item| {
                let status = item.pointer("/data/wfstatus")?;
                Some(WorkflowSummary {
                    process_id: status.get("process_id").and_then(as_i64)?,
                    title: status
                        .get("wf_name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                })
            })
            .collect())
    }

    /// Status of a workflow instance.
    pub async fn workflow_status(&self, process: i64) -> Result<WorkflowStatus, UpstreamError> {
        let id = process.to_string();
        let answer = self.call_json(WORKFLOW_STATUS, &[&id], |r| r).await?;
        let results = match results(&answer) {
            Value::Array(items) => items.first().cloned().unwrap_or(Value::Null),
            other => other.clone(),
        };
        WorkflowStatus::from_results(&results)
    }

    /// Task actions taken in a (sub)process, e.g. the approval decision with its comment.
    pub async fn workflow_activities(
        &self,
        process: i64,
        subprocess: i64,
    ) -> Result<Vec<Activity>, UpstreamError> {
        let (p, s) = (process.to_string(), subprocess.to_string());
        let answer = self.call_json(ACTIVITIES, &[&p, &s], |r| r).await?;
        list_items(&answer)
            .into_iter()
            .map(|item| serde_json::from_value(item.clone()).map_err(UpstreamError::decode))
            .collect()
    }
}

/// The spec documents `results` of the active list as one object; a server with one running
/// workflow may answer that way, so a lone object counts as a one-element list.
fn single_result(answer: &Value) -> Option<&Value> {
    results(answer)
        .as_object()
        .filter(|o| o.contains_key("Work_WorkID"))?;
    Some(results(answer))
}
