//! Typed requests and answers of the OpenText REST API. Answers are parsed defensively: the
//! same call returns `results` as an object, `results.data.properties` or a list depending on
//! version and endpoint (see the reference, §1.3), so the extraction helpers accept each shape.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clients::error::UpstreamError;

/// A Content Server node id.
pub type NodeId = i64;

/// Subtype numbers the flows need.
pub mod subtype {
    pub const FOLDER: i64 = 0;
    pub const DOCUMENT: i64 = 144;
    pub const BUSINESS_WORKSPACE: i64 = 848;
}

/// Node properties as `results.data.properties` carries them (the fields the flows use).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NodeProperties {
    pub id: NodeId,
    #[serde(default)]
    pub parent_id: Option<NodeId>,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub node_type: Option<i64>,
    #[serde(default)]
    pub type_name: Option<String>,
    #[serde(default)]
    pub mime_type: Option<String>,
    #[serde(default)]
    pub create_date: Option<String>,
    #[serde(default)]
    pub modify_date: Option<String>,
    /// Business workspaces carry their type and template.
    #[serde(default)]
    pub wnf_wksp_type_id: Option<i64>,
    #[serde(default)]
    pub wnf_wksp_template_id: Option<i64>,
}

/// A child as a folder listing shows it: its properties and, for a document, its newest
/// version (`data.versions`, one object with `.element(0)`).
#[derive(Debug, Clone, PartialEq)]
pub struct ListedNode {
    pub properties: NodeProperties,
    pub latest: Option<Version>,
}

impl ListedNode {
    pub(crate) fn from_item(item: &Value) -> Result<Self, UpstreamError> {
        let props = item
            .pointer("/data/properties")
            .or_else(|| item.get("properties"))
            .unwrap_or(item);
        let latest = match item.pointer("/data/versions") {
            Some(Value::Array(list)) => list.first().cloned(),
            Some(v @ Value::Object(_)) => Some(v.clone()),
            _ => None,
        };
        Ok(Self {
            properties: serde_json::from_value(props.clone()).map_err(UpstreamError::decode)?,
            latest: latest.and_then(|v| serde_json::from_value(v).ok()),
        })
    }
}

/// Paging block (`collection.paging` for nodes, top-level `paging` for workspaces).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Paging {
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub page: Option<u64>,
    #[serde(default)]
    pub page_total: Option<u64>,
    #[serde(default)]
    pub total_count: Option<u64>,
}

/// One page of nodes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodePage {
    pub nodes: Vec<NodeProperties>,
    pub paging: Paging,
}

impl NodePage {
    /// Whether a page after this one exists. Out-of-range pages can still return results, so
    /// the page total decides, not an empty answer.
    pub fn has_next(&self) -> bool {
        match (self.paging.page, self.paging.page_total) {
            (Some(page), Some(total)) => page < total,
            _ => false,
        }
    }
}

/// Business object key of a workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BusinessObject {
    pub ext_system_id: String,
    pub bo_type: String,
    pub bo_id: String,
}

/// Workspace creation (`POST /api/v2/businessworkspaces`) and one entry of the bulk upsert.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WorkspaceCreate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_id: Option<NodeId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<NodeId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wksp_type_id: Option<NodeId>,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ext_system_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bo_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bo_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<WorkspaceRoles>,
}

impl WorkspaceCreate {
    /// Links the new workspace to a business object.
    pub fn with_business_object(mut self, bo: &BusinessObject) -> Self {
        self.ext_system_id = Some(bo.ext_system_id.clone());
        self.bo_type = Some(bo.bo_type.clone());
        self.bo_id = Some(bo.bo_id.clone());
        self
    }
}

/// `roles` of a workspace creation. Categories are nested by category id here
/// (`{"23228": {"23228_2": "value"}}`), unlike node creation, which wants them flat.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WorkspaceRoles {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub categories: BTreeMap<String, BTreeMap<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmclassifications: Option<Value>,
}

/// One entry of the bulk upsert answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UpsertResult {
    #[serde(default)]
    pub id: Option<NodeId>,
    #[serde(default)]
    pub error_message: Option<String>,
}

/// Direction of a workspace relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RelationType {
    Child,
    Parent,
}

impl RelationType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Child => "child",
            Self::Parent => "parent",
        }
    }
}

/// Category values of one category on a node, keyed `{category}_{attribute}`.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryValues {
    pub category_id: i64,
    pub values: BTreeMap<String, Value>,
}

/// A name that is taken in a folder (`POST /api/v1/validation/nodes/names`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NameCollision {
    pub name: String,
    pub id: NodeId,
}

/// Metadata of a new document. Categories go flat (`{"9830_2": "v"}`), as v2 node creation
/// requires.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DocumentCreate {
    pub parent_id: NodeId,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub categories: BTreeMap<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_create_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_modify_date: Option<String>,
}

impl DocumentCreate {
    /// The `body` JSON of `POST /api/v2/nodes`, with either the file part or an `upload_key`.
    pub(crate) fn body(&self, upload_key: Option<&str>) -> Value {
        let mut body = serde_json::json!({
            "type": subtype::DOCUMENT,
            "parent_id": self.parent_id,
            "name": self.name,
        });
        let map = body.as_object_mut().expect("object literal");
        if let Some(d) = &self.description {
            map.insert("description".into(), d.clone().into());
        }
        if !self.categories.is_empty() {
            map.insert(
                "roles".into(),
                serde_json::json!({ "categories": self.categories }),
            );
        }
        for (key, value) in [
            ("external_create_date", &self.external_create_date),
            ("external_modify_date", &self.external_modify_date),
        ] {
            if let Some(v) = value {
                map.insert(key.into(), v.clone().into());
            }
        }
        if let Some(key) = upload_key {
            map.insert("upload_key".into(), key.into());
        }
        body
    }
}

/// Options of a new version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VersionCreate {
    /// Cut to 255 characters, the server's limit.
    pub description: Option<String>,
    pub add_major_version: bool,
}

/// One version of a document.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Version {
    #[serde(default)]
    pub version_number: Option<i64>,
    #[serde(default)]
    pub version_number_major: Option<i64>,
    #[serde(default)]
    pub version_number_minor: Option<i64>,
    #[serde(default)]
    pub version_id: Option<i64>,
    #[serde(default)]
    pub file_name: Option<String>,
    #[serde(default)]
    pub file_size: Option<u64>,
    #[serde(default)]
    pub mime_type: Option<String>,
    #[serde(default)]
    pub create_date: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// One workflow as the workflow lists report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowSummary {
    pub process_id: i64,
    pub title: String,
}

/// Answer of `POST /api/v2/multipart`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UploadSession {
    pub upload_key: String,
    #[serde(default)]
    pub num_parts: Option<u64>,
    #[serde(default)]
    pub part_size: Option<u64>,
    #[serde(default)]
    pub max_retries: Option<u32>,
}

/// Answer of `POST /api/v2/draftprocesses`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DraftProcess {
    pub draftprocess_id: i64,
    #[serde(default)]
    pub workflow_type: Option<String>,
}

/// Answer of the `Initiate` action.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct InitiatedProcess {
    pub process_id: i64,
    #[serde(default)]
    pub custom_message: Option<String>,
}

/// `wf_details.status` of a workflow instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkflowState {
    OnTime,
    Late,
    Completed,
    Stopped,
    Other(String),
}

impl WorkflowState {
    fn parse(s: &str) -> Self {
        match s.to_ascii_lowercase().as_str() {
            "ontime" => Self::OnTime,
            "workflowlate" => Self::Late,
            "completed" => Self::Completed,
            "stopped" => Self::Stopped,
            _ => Self::Other(s.to_string()),
        }
    }

    /// Whether the workflow has ended (its outcome can be read).
    pub fn is_finished(&self) -> bool {
        matches!(self, Self::Completed | Self::Stopped)
    }
}

/// One step of a workflow (`step_list.completed|current|next[]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WorkflowStep {
    #[serde(default)]
    pub process_id: Option<i64>,
    #[serde(default)]
    pub subprocess_id: Option<i64>,
    #[serde(default)]
    pub task_id: Option<i64>,
    #[serde(default)]
    pub task_name: Option<String>,
    #[serde(default)]
    pub task_status: Option<String>,
}

/// Status of one workflow instance.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowStatus {
    pub state: WorkflowState,
    pub name: Option<String>,
    pub completed: Vec<WorkflowStep>,
    pub current: Vec<WorkflowStep>,
}

impl WorkflowStatus {
    pub(crate) fn from_results(results: &Value) -> Result<Self, UpstreamError> {
        let details = results
            .get("wf_details")
            .ok_or_else(|| UpstreamError::decode("workflow status without wf_details"))?;
        let state = details
            .get("status")
            .and_then(Value::as_str)
            .map(WorkflowState::parse)
            .ok_or_else(|| UpstreamError::decode("workflow status without status"))?;
        let steps = |key: &str| -> Vec<WorkflowStep> {
            results
                .get("step_list")
                .and_then(|s| s.get(key))
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default()
        };
        Ok(Self {
            state,
            name: details
                .get("wf_name")
                .and_then(Value::as_str)
                .map(str::to_string),
            completed: steps("completed"),
            current: steps("current"),
        })
    }
}

/// A task action taken in a workflow ("Approve", "Reject", …).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Activity {
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub date: Option<String>,
    #[serde(default)]
    pub user_id: Option<i64>,
}

/// RM classification state of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct RmClassifications {
    /// Needed to change an existing classification.
    pub metadata_token: Option<String>,
    pub class_ids: Vec<i64>,
    /// Whether the node is a finalized record.
    pub finalized: bool,
}

/// Record details to update (`PUT …/rmclassifications`); unset fields are not sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RecordDetails {
    #[serde(rename = "rm_metadataToken", skip_serializing_if = "Option::is_none")]
    pub metadata_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub official: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub essential: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rsi: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_date: Option<String>,
}

/// A workspace role.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Role {
    pub id: i64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub perms: Option<Value>,
    /// Permission names (`see`, `see_contents`, …), when the answer lists them.
    #[serde(default)]
    pub permissions: Option<Vec<String>>,
}

/// Whether a member is a user or a group (Content Server's member `type` 0 / 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberType {
    User,
    Group,
}

/// A user or group: a role member (`V2RolesMembersGetProperties`) or a member search result
/// (`members_V2PropertiesMembersSearch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: i64,
    /// Login name of a user, name of a group.
    pub name: String,
    pub member_type: MemberType,
    pub business_email: Option<String>,
}

impl Member {
    /// The member in one item of a members list (`{data:{properties}}` or the properties).
    /// A member without a `type` is a user unless it names a group (`group_name` is a user's
    /// base group, so it says nothing).
    pub(crate) fn from_item(item: &Value) -> Result<Self, UpstreamError> {
        let props = item
            .pointer("/data/properties")
            .or_else(|| item.get("properties"))
            .unwrap_or(item);
        let id = props
            .get("id")
            .and_then(as_i64)
            .ok_or_else(|| UpstreamError::decode("member without an id"))?;
        let text = |key: &str| {
            props
                .get(key)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let member_type = match props.get("type").and_then(as_i64) {
            Some(1) => MemberType::Group,
            _ => MemberType::User,
        };
        Ok(Self {
            id,
            name: text("name").unwrap_or_else(|| id.to_string()),
            member_type,
            business_email: text("business_email"),
        })
    }
}

/// `results` of an answer, whatever its envelope.
pub(crate) fn results(value: &Value) -> &Value {
    value.get("results").unwrap_or(value)
}

/// The node properties in a single-node answer: `results.data.properties`,
/// `results.properties`, or `results` itself.
pub(crate) fn single_properties(value: &Value) -> Option<&Value> {
    let r = results(value);
    r.pointer("/data/properties")
        .or_else(|| r.get("properties"))
        .or_else(|| r.get("id").map(|_| r))
}

/// The list items of `results` (`[{data:{properties}}]` or `[{...}]`).
pub(crate) fn list_items(value: &Value) -> Vec<&Value> {
    match results(value) {
        Value::Array(items) => items.iter().collect(),
        Value::Object(o) => match o.get("data") {
            Some(Value::Array(items)) => items.iter().collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// Node properties of each list item.
pub(crate) fn node_list(value: &Value) -> Result<Vec<NodeProperties>, UpstreamError> {
    list_items(value)
        .into_iter()
        .map(|item| {
            let props = item
                .pointer("/data/properties")
                .or_else(|| item.get("properties"))
                .unwrap_or(item);
            serde_json::from_value(props.clone()).map_err(UpstreamError::decode)
        })
        .collect()
}

/// Paging under `collection.paging` or top-level `paging`.
pub(crate) fn paging(value: &Value) -> Paging {
    value
        .pointer("/collection/paging")
        .or_else(|| value.get("paging"))
        .and_then(|p| serde_json::from_value(p.clone()).ok())
        .unwrap_or_default()
}

/// The new node id of a create answer (`results.id` or `results.data.properties.id`).
pub(crate) fn created_id(value: &Value) -> Result<NodeId, UpstreamError> {
    single_properties(value)
        .and_then(|p| p.get("id"))
        .and_then(as_i64)
        .ok_or_else(|| UpstreamError::decode("create answer without an id"))
}

/// Ids come as numbers or numeric strings.
pub(crate) fn as_i64(value: &Value) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn created_id_in_each_documented_shape() {
        assert_eq!(
            created_id(&json!({"results": {"id": 224082, "direct_open": true}})).unwrap(),
            224082
        );
        assert_eq!(
            created_id(&json!({"results": {"data": {"properties": {"id": 576204}}}})).unwrap(),
            576204
        );
        assert!(created_id(&json!({"results": {}})).is_err());
    }

    #[test]
    fn node_lists_and_paging() {
        let answer = json!({
            "collection": {"paging": {"limit": 2, "page": 1, "page_total": 3, "total_count": 5}},
            "results": [{"data": {"properties": {"id": 1, "name": "a", "type": 0}}},
                        {"data": {"properties": {"id": 2, "name": "b", "type": 144}}}]
        });
        let page = NodePage {
            nodes: node_list(&answer).unwrap(),
            paging: paging(&answer),
        };
        assert_eq!(page.nodes[1].node_type, Some(144));
        assert!(page.has_next());
    }

    #[test]
    fn document_body_is_flat_with_categories_under_roles() {
        let doc = DocumentCreate {
            parent_id: 5,
            name: "a.pdf".into(),
            categories: [("9830_2".to_string(), json!("v"))].into(),
            ..DocumentCreate::default()
        };
        assert_eq!(
            doc.body(Some("k")),
            json!({"type": 144, "parent_id": 5, "name": "a.pdf",
                   "roles": {"categories": {"9830_2": "v"}}, "upload_key": "k"})
        );
    }

    #[test]
    fn workflow_status_parses_details_and_steps() {
        let s = WorkflowStatus::from_results(&json!({
            "wf_details": {"status": "completed", "wf_name": "Change review"},
            "step_list": {"completed": [{"process_id": 1, "subprocess_id": 1, "task_id": 2,
                                         "task_name": "Approve"}], "current": []}
        }))
        .unwrap();
        assert!(s.state.is_finished());
        assert_eq!(s.completed[0].task_name.as_deref(), Some("Approve"));
    }
}
