//! What a flow remembers about one object between runs: the `state` of its link in the store,
//! typed here so each flow reads back exactly the fields it wrote. The store keeps it as JSON and
//! knows nothing of it; this module is the one place that reads or writes that JSON.
//!
//! Everything here is a cache or a record of what the bridge did, never the truth about
//! OpenText: runs verify what OpenText holds (see [`super::engine`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::store::LinkRecord;

/// A link's state. Every field is optional in the stored JSON, so a link written by an older
/// version of the bridge reads as far as it goes; keys this version does not know are kept as
/// they are and written back unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct LinkState {
    /// The values the trigger's `changed` conditions saw at the last successful run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub seen: BTreeMap<String, Value>,
    /// Related workspaces' node ids by business-object key (`bo_type/bo_id`); they save a
    /// look-up while OpenText still reports them related.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub related: BTreeMap<String, i64>,
    /// When 4ALLPORTAL reported the object deleted (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<i64>,
    /// `change`, on the product: the newest audit entry already under review.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_audit_id: Option<i64>,
    /// `change`, on a change workspace: the hash of the category values last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<String>,
    /// `change`, on a change workspace: the approval workflow started for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_id: Option<String>,
    /// `change`, on a change workspace: the 4ALLPORTAL object and change it reviews, where the
    /// decision is written back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ChangeSource>,
    /// `compliance`: the current review of the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<Review>,
    /// `partner`: the partner a workspace is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner: Option<String>,
    /// `partner`: the products whose content the workspace holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub products: Vec<String>,
    /// `archival`: the records are final; nothing changes in the workspace any more.
    #[serde(default, skip_serializing_if = "is_false")]
    pub finalized: bool,
    /// Team roles whose permissions the bridge set, by role id: what it set and the `perms`
    /// OpenText reported afterwards. The roles answer carries only that integer, whose bits no
    /// reference defines; an unchanged integer for an unchanged mapping means nothing to do.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub role_permissions: BTreeMap<i64, RolePermissions>,
    /// Keys of other versions, kept as they are.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Permissions the bridge set on one workspace role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RolePermissions {
    /// The permission names set, sorted.
    pub set: Vec<String>,
    pub apply_to: u8,
    /// The role's `perms` as OpenText reported it after they were set.
    pub perms: Value,
}

/// The object a change workspace reviews.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ChangeSource {
    pub module: String,
    pub id: String,
    pub change_id: String,
}

/// A compliance review: the workflow started for one version of the data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Review {
    /// The workflow's process id; none when OpenText did not report one.
    #[serde(default)]
    pub process_id: Option<String>,
    /// The hash of the data the review was started for.
    #[serde(default)]
    pub data_hash: String,
    /// The object's `mod_time` the review was started for.
    #[serde(default)]
    pub version: String,
    /// The data changed while the review ran; its decision no longer shows on the workspace.
    #[serde(default, skip_serializing_if = "is_false")]
    pub outdated: bool,
    /// The version that made the review outdated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outdated_by: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl LinkState {
    /// The state stored with `link`. A state that does not parse (written by hand, or by a
    /// version with other types) is logged and read as empty: the next run verifies OpenText
    /// and writes it anew, which is what an empty cache costs.
    pub(crate) fn of(link: &LinkRecord) -> Self {
        if link.state.is_null() {
            return Self::default();
        }
        serde_json::from_value(link.state.clone()).unwrap_or_else(|e| {
            tracing::warn!(
                flow = %link.flow,
                key = %link.object_key,
                error = %e,
                "stored link state does not parse; read as empty"
            );
            Self::default()
        })
    }

    /// The JSON the store keeps.
    pub(crate) fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|_| Value::Object(Map::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn link(state: Value) -> LinkRecord {
        LinkRecord {
            flow: "f".into(),
            object_key: "product/1".into(),
            workspace_id: None,
            state,
            updated_at: 0,
        }
    }

    #[test]
    fn reads_what_earlier_versions_wrote_and_writes_it_back_the_same() {
        let stored = json!({
            "seen": {"status": "released"},
            "related": {"family/7": 42},
            "review": {"process_id": "9", "data_hash": "h", "version": "v", "outdated": true,
                       "outdated_by": "w"},
            "source": {"module": "product", "id": "1", "change_id": "55"},
            "products": ["1", "2"],
            "partner": "p",
            "finalized": true,
            "last_audit_id": 55,
            "deleted_at": 1700000000000i64,
            "future_key": {"kept": [1, 2]}
        });
        let state = LinkState::of(&link(stored.clone()));
        assert_eq!(state.related["family/7"], 42);
        assert!(state.review.as_ref().unwrap().outdated);
        assert_eq!(state.source.as_ref().unwrap().change_id, "55");
        assert!(state.finalized);
        assert_eq!(state.to_json(), stored);
    }

    #[test]
    fn empty_and_unparsable_states_read_as_default() {
        assert_eq!(LinkState::of(&link(Value::Null)), LinkState::default());
        assert_eq!(LinkState::of(&link(json!({}))), LinkState::default());
        assert_eq!(
            LinkState::of(&link(json!({"finalized": "yes"}))),
            LinkState::default()
        );
        assert_eq!(LinkState::default().to_json(), json!({}));
    }
}
