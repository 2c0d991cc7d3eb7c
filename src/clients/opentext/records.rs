//! Records management: classification, record details, finalization, holds.
//!
//! The Records Management spec declares flat form fields; OpenText's Python client sends the
//! same values as a `body` JSON field. Each write here sends both, so either server reading
//! works.

use serde_json::{Value, json};

use super::OpentextClient;
use super::routes::{
    HOLD_APPLY, NODE_HOLDS, RM_CLASSIFICATIONS, RM_CLASSIFY, RM_FINALIZE, RM_UPDATE,
};
use super::types::{NodeId, RecordDetails, RmClassifications, as_i64, list_items, results};
use crate::clients::error::UpstreamError;

impl OpentextClient {
    /// The RM classifications on a node and the token needed to change them.
    pub async fn rm_classifications(
        &self,
        node: NodeId,
    ) -> Result<RmClassifications, UpstreamError> {
        let id = node.to_string();
        let answer = self.call_json(RM_CLASSIFICATIONS, &[&id], |r| r).await?;
        let scope = if answer.get("rm_metadataToken").is_some() {
            &answer
        } else {
            results(&answer)
        };
        let class_ids = scope
            .get("data")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|c| {
                        c.get("rmclassification_id")
                            .or_else(|| c.get("class_id"))
                            .and_then(as_i64)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let finalized = scope
            .get("data")
            .and_then(Value::as_array)
            .is_some_and(|items| {
                items
                    .iter()
                    .any(|c| c.get("finalized").and_then(Value::as_bool) == Some(true))
            });
        Ok(RmClassifications {
            finalized,
            metadata_token: scope
                .get("rm_metadataToken")
                .and_then(Value::as_str)
                .map(str::to_string),
            class_ids,
        })
    }

    /// Classifies a node (and, if asked, everything in it) under RM class `class_id`.
    pub async fn rm_classify(
        &self,
        node: NodeId,
        class_id: i64,
        apply_to_sub_items: bool,
        metadata_token: Option<&str>,
    ) -> Result<(), UpstreamError> {
        let mut body = json!({ "class_id": class_id, "apply_to_sub_items": apply_to_sub_items });
        if let Some(token) = metadata_token {
            body["rm_metadataToken"] = token.into();
        }
        let class = class_id.to_string();
        let sub = apply_to_sub_items.to_string();
        let mut form = vec![
            ("class_id", class),
            ("apply_to_sub_items", sub),
            ("body", body.to_string()),
        ];
        if let Some(token) = metadata_token {
            form.push(("rm_metadataToken", token.to_string()));
        }
        let id = node.to_string();
        self.call_json(RM_CLASSIFY, &[&id], |r| r.form(&form))
            .await
            .map(drop)
    }

    /// Updates record details (status, official, storage, …) of a classified node.
    pub async fn update_record_details(
        &self,
        node: NodeId,
        details: &RecordDetails,
    ) -> Result<(), UpstreamError> {
        let body = serde_json::to_value(details).map_err(UpstreamError::invalid)?;
        let mut form: Vec<(String, String)> = body
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), scalar(v)))
            .collect();
        form.push(("body".into(), body.to_string()));
        let id = node.to_string();
        self.call_json(RM_UPDATE, &[&id], |r| r.form(&form))
            .await
            .map(drop)
    }

    /// Finalizes the records with these ids.
    pub async fn finalize_records(&self, ids: &[NodeId]) -> Result<(), UpstreamError> {
        // `ids` is an integer array in the spec; the TypeScript client sends it comma-joined.
        let joined = ids
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let body = json!({ "ids": ids });
        let form = [("ids", joined), ("body", body.to_string())];
        self.call_json(RM_FINALIZE, &[], |r| r.form(&form))
            .await
            .map(drop)
    }

    /// Ids of the holds on a node.
    pub async fn node_holds(&self, node: NodeId) -> Result<Vec<i64>, UpstreamError> {
        let id = node.to_string();
        let answer = self.call_json(NODE_HOLDS, &[&id], |r| r).await?;
        Ok(list_items(&answer)
            .into_iter()
            .filter_map(|h| {
                ["hold_id", "HoldID", "id"]
                    .iter()
                    .find_map(|k| h.get(*k).and_then(as_i64))
            })
            .collect())
    }

    /// Puts a node under a legal hold.
    pub async fn apply_hold(&self, node: NodeId, hold: i64) -> Result<(), UpstreamError> {
        // The RM spec wants `hold_id` in the query; OpenText's Python client sends it in `body`
        // and the TypeScript client as a form field. Send all three.
        let hold_s = hold.to_string();
        let body = json!({ "hold_id": hold });
        let form = [("hold_id", hold_s.clone()), ("body", body.to_string())];
        let id = node.to_string();
        self.call_json(HOLD_APPLY, &[&id], |r| {
            r.query(&[("hold_id", hold_s.as_str())]).form(&form)
        })
        .await
        .map(drop)
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
