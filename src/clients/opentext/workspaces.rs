//! Business workspaces: lookup by business object, create, bulk upsert, relations, roles.

use serde_json::{Value, json};

use super::OpentextClient;
use super::routes::{
    RELATED_ADD, RELATED_LIST, ROLE_MEMBER_ADD, ROLE_MEMBER_REMOVE, ROLE_MEMBERS, ROLE_UPDATE,
    ROLES_LIST, WORKSPACE_CREATE, WORKSPACES_SEARCH, WORKSPACES_UPSERT,
};
use super::types::{
    BusinessObject, Member, NodeId, NodePage, NodeProperties, RelationType, Role, UpsertResult,
    WorkspaceCreate, created_id, list_items, node_list, paging, results,
};
use crate::clients::error::UpstreamError;

/// Permissions of a read-only role.
const READ_ONLY: [&str; 2] = ["see", "see_contents"];
/// `apply_to`: this item and its sub-items.
const APPLY_TO_ITEM_AND_SUB_ITEMS: u8 = 2;

impl OpentextClient {
    /// The workspace linked to a business object, if any. `expanded_view=true` makes this a
    /// real search (without it the server lists recently accessed workspaces).
    pub async fn find_workspace(
        &self,
        bo: &BusinessObject,
    ) -> Result<Option<NodeProperties>, UpstreamError> {
        let query = [
            ("expanded_view", "true"),
            ("where_ext_system_id", bo.ext_system_id.as_str()),
            ("where_bo_type", bo.bo_type.as_str()),
            ("where_bo_id", bo.bo_id.as_str()),
        ];
        let answer = self
            .call_json(WORKSPACES_SEARCH, &[], |r| r.query(&query))
            .await?;
        let mut found = node_list(&answer)?;
        if found.len() > 1 {
            tracing::warn!(
                bo_type = %bo.bo_type,
                bo_id = %bo.bo_id,
                count = found.len(),
                "several workspaces for one business object; using the first"
            );
        }
        Ok((!found.is_empty()).then(|| found.swap_remove(0)))
    }

    /// Creates a workspace; returns its node id. A duplicate answers
    /// [`UpstreamError::Conflict`]: look the workspace up instead of retrying.
    pub async fn create_workspace(
        &self,
        workspace: &WorkspaceCreate,
    ) -> Result<NodeId, UpstreamError> {
        let body = serde_json::to_value(workspace).map_err(UpstreamError::invalid)?;
        let answer = self.call_body(WORKSPACE_CREATE, &[], &body).await?;
        created_id(&answer)
    }

    /// Creates or updates workspaces by business object (automatic creation); one result per
    /// entry, in order. Only workspaces with a business object can be updated this way.
    pub async fn upsert_workspaces(
        &self,
        workspaces: &[WorkspaceCreate],
    ) -> Result<Vec<UpsertResult>, UpstreamError> {
        let body = json!({ "bws_infos": workspaces });
        let form = [("body", body.to_string())];
        let answer = self
            .call_json(WORKSPACES_UPSERT, &[], |r| r.form(&form))
            .await?;
        // The spec answers a bare array; other answers wrap it in `results`.
        let list = match &answer {
            Value::Array(_) => answer.clone(),
            other => results(other).clone(),
        };
        serde_json::from_value(list).map_err(UpstreamError::decode)
    }

    /// Relates `related` to `workspace` (`child`: `related` becomes a child of `workspace`).
    /// Relations are two-way, so one call suffices.
    pub async fn add_related_workspace(
        &self,
        workspace: NodeId,
        related: NodeId,
        relation: RelationType,
    ) -> Result<(), UpstreamError> {
        // The spec documents a JSON body, OpenText's Python client sends flat form fields:
        // send the flat fields and the same values in `body`.
        let related_s = related.to_string();
        let body = json!({ "rel_bw_id": related, "rel_type": relation.as_str() });
        let form = [
            ("rel_bw_id", related_s.as_str()),
            ("rel_type", relation.as_str()),
            ("body", &body.to_string()),
        ];
        let id = workspace.to_string();
        self.call_json(RELATED_ADD, &[&id], |r| r.form(&form))
            .await
            .map(drop)
    }

    /// One page of the workspaces related to `workspace`.
    pub async fn related_workspaces(
        &self,
        workspace: NodeId,
        relation: Option<RelationType>,
        page: u64,
        limit: u64,
    ) -> Result<NodePage, UpstreamError> {
        let mut query = vec![("page", page.to_string()), ("limit", limit.to_string())];
        if let Some(rel) = relation {
            query.push(("where_rel_types", rel.as_str().to_string()));
        }
        let id = workspace.to_string();
        let answer = self
            .call_json(RELATED_LIST, &[&id], |r| r.query(&query))
            .await?;
        Ok(NodePage {
            nodes: node_list(&answer)?,
            paging: paging(&answer),
        })
    }

    /// The roles of a workspace.
    pub async fn workspace_roles(&self, workspace: NodeId) -> Result<Vec<Role>, UpstreamError> {
        let id = workspace.to_string();
        let answer = self.call_json(ROLES_LIST, &[&id], |r| r).await?;
        list_items(&answer)
            .into_iter()
            .map(|item| {
                let props = item.pointer("/data/properties").unwrap_or(item);
                serde_json::from_value(props.clone()).map_err(UpstreamError::decode)
            })
            .collect()
    }

    /// Sets a role's permissions (`see`, `see_contents`, `modify`, …) with `apply_to`
    /// (0 this item, 1 sub-items, 2 both, 3 item and immediate sub-items).
    pub async fn update_role_permissions(
        &self,
        workspace: NodeId,
        role: i64,
        permissions: &[&str],
        apply_to: u8,
    ) -> Result<(), UpstreamError> {
        let body = json!({ "permissions": permissions, "apply_to": apply_to });
        let (ws, role) = (workspace.to_string(), role.to_string());
        self.call_body(ROLE_UPDATE, &[&ws, &role], &body)
            .await
            .map(drop)
    }

    /// Makes a workspace read-only for every role: see and see contents, on the workspace and
    /// everything in it. Idempotent.
    pub async fn make_workspace_read_only(&self, workspace: NodeId) -> Result<(), UpstreamError> {
        for role in self.workspace_roles(workspace).await? {
            self.update_role_permissions(
                workspace,
                role.id,
                &READ_ONLY,
                APPLY_TO_ITEM_AND_SUB_ITEMS,
            )
            .await?;
        }
        Ok(())
    }

    /// The users and groups of a workspace role (groups are not expanded).
    pub async fn role_members(
        &self,
        workspace: NodeId,
        role: i64,
    ) -> Result<Vec<Member>, UpstreamError> {
        let (ws, role) = (workspace.to_string(), role.to_string());
        let answer = self.call_json(ROLE_MEMBERS, &[&ws, &role], |r| r).await?;
        list_items(&answer)
            .into_iter()
            .map(Member::from_item)
            .collect()
    }

    /// Removes a user or group from a workspace role.
    pub async fn remove_role_member(
        &self,
        workspace: NodeId,
        role: i64,
        member: i64,
    ) -> Result<(), UpstreamError> {
        let (ws, role, m) = (workspace.to_string(), role.to_string(), member.to_string());
        self.call_json(ROLE_MEMBER_REMOVE, &[&ws, &role, &m], |r| r)
            .await
            .map(drop)
    }

    /// Adds a user or group to a workspace role.
    pub async fn add_role_member(
        &self,
        workspace: NodeId,
        role: i64,
        member: i64,
    ) -> Result<(), UpstreamError> {
        // The spec and OpenText's Python client name the field `id`; the TypeScript client
        // sends `member_id`. Send both.
        let m = member.to_string();
        let form = [("id", m.as_str()), ("member_id", m.as_str())];
        let (ws, role) = (workspace.to_string(), role.to_string());
        self.call_json(ROLE_MEMBER_ADD, &[&ws, &role], |r| r.form(&form))
            .await
            .map(drop)
    }
}
