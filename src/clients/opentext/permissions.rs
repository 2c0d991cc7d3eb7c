//! Assigned Access on a node (`/api/v2/nodes/{id}/permissions…`): which users, groups and
//! workspace roles hold which permissions on one folder. Inside a business workspace the
//! workspace's roles are rights of their own, so a role can be given more on one folder (the
//! partner's upload folder) than on the workspace.
//!
//! The answer's shape differs between the references: the Content Server spec makes each
//! result's `data` an array of `{permissions: [{permissions, right_id, type}]}`, while OpenText's
//! own clients read `results[].data.permissions` as one `{permissions, right_id, type}` object,
//! with `permissions` a list of names (the spec types it as a string; other answers give an
//! object of booleans). Every one of these forms is read.

use serde_json::{Value, json};

use super::OpentextClient;
use super::routes::{NODE_PERMISSION_ADD, NODE_PERMISSION_UPDATE, NODE_PERMISSIONS};
use super::types::NodeId;
use crate::clients::error::UpstreamError;

/// One entry of a node's permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The user, group or workspace role; `None` for public access.
    pub right_id: Option<i64>,
    /// `owner`, `group`, `public` or `custom` (Assigned Access).
    pub kind: String,
    /// Permission names (`see`, `see_contents`, `add_items`, …).
    pub permissions: Vec<String>,
}

impl OpentextClient {
    /// Every permission entry of `node`.
    pub async fn node_permissions(&self, node: NodeId) -> Result<Vec<Access>, UpstreamError> {
        let id = node.to_string();
        let answer = self.call_json(NODE_PERMISSIONS, &[&id], |r| r).await?;
        Ok(accesses(&answer))
    }

    /// Gives `right_id` the `permissions` on `node` (a new Assigned Access entry), with
    /// `apply_to` (0 this item, 1 sub-items, 2 both, 3 item and immediate sub-items).
    pub async fn add_node_permission(
        &self,
        node: NodeId,
        right_id: i64,
        permissions: &[&str],
        apply_to: u8,
    ) -> Result<(), UpstreamError> {
        let body =
            json!({ "permissions": permissions, "right_id": right_id, "apply_to": apply_to });
        let id = node.to_string();
        self.call_body(NODE_PERMISSION_ADD, &[&id], &body)
            .await
            .map(drop)
    }

    /// Replaces the permissions of `right_id`'s Assigned Access entry on `node`.
    pub async fn update_node_permission(
        &self,
        node: NodeId,
        right_id: i64,
        permissions: &[&str],
        apply_to: u8,
    ) -> Result<(), UpstreamError> {
        let body = json!({ "permissions": permissions, "apply_to": apply_to });
        let (id, right) = (node.to_string(), right_id.to_string());
        self.call_body(NODE_PERMISSION_UPDATE, &[&id, &right], &body)
            .await
            .map(drop)
    }
}

/// The entries of a permissions answer, in any of the forms the module docs name.
fn accesses(answer: &Value) -> Vec<Access> {
    let results = match answer.get("results") {
        Some(Value::Array(items)) => items.clone(),
        Some(one) => vec![one.clone()],
        None => Vec::new(),
    };
    let mut out = Vec::new();
    for result in &results {
        let data = result.get("data").unwrap_or(result);
        for item in data
            .as_array()
            .map_or_else(|| vec![data], |a| a.iter().collect())
        {
            match item.get("permissions") {
                Some(Value::Array(entries)) => out.extend(entries.iter().filter_map(access)),
                Some(entry) => out.extend(access(entry)),
                None => {}
            }
        }
    }
    out
}

fn access(entry: &Value) -> Option<Access> {
    let kind = entry.get("type").and_then(Value::as_str)?.to_string();
    let right_id = entry.get("right_id").and_then(|v| {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    });
    let permissions = match entry.get("permissions") {
        Some(Value::Array(names)) => names
            .iter()
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect(),
        Some(Value::Object(flags)) => flags
            .iter()
            .filter(|(_, v)| v.as_bool() == Some(true))
            .map(|(k, _)| k.clone())
            .collect(),
        Some(Value::String(list)) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    Some(Access {
        right_id,
        kind,
        permissions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_form_is_read() {
        // As OpenText's own clients read it: one object per result.
        let objects = json!({"results": [
            {"data": {"permissions": {"permissions": ["see", "see_contents"], "right_id": 1000, "type": "owner"}}},
            {"data": {"permissions": {"permissions": ["see", "add_items"], "right_id": "7", "type": "custom"}}},
            {"data": {"permissions": {"permissions": [], "right_id": null, "type": "public"}}},
        ]});
        let read = accesses(&objects);
        assert_eq!(read.len(), 3);
        assert_eq!(read[1].right_id, Some(7));
        assert_eq!(read[1].permissions, ["see", "add_items"]);
        assert_eq!(read[2].right_id, None);
        // As the spec's schema has it: `data` an array, `permissions` a list of entries, and
        // permissions as a string or as flags.
        let spec = json!({"results": [{"data": [{"permissions": [
            {"permissions": "see, see_contents", "right_id": 9, "type": "custom"},
            {"permissions": {"see": true, "modify": false, "delete": true}, "right_id": 10, "type": "custom"},
        ]}]}]});
        let read = accesses(&spec);
        assert_eq!(read[0].permissions, ["see", "see_contents"]);
        assert_eq!(read[1].permissions, ["delete", "see"]);
        assert!(accesses(&json!({"results": []})).is_empty());
    }
}
