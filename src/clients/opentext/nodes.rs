//! Nodes: folders, children by name, name validation, categories, versions, downloads.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::routes::{
    CATEGORIES, CATEGORY_APPLY, CATEGORY_UPDATE, CONTENT, NAMES_VALIDATE, NODE, NODE_CHILDREN,
    NODE_CREATE, VERSIONS_LIST,
};
use super::types::{
    CategoryValues, ListedNode, NameCollision, NodeId, NodePage, NodeProperties, Version,
    created_id, list_items, node_list, paging, results, single_properties, subtype,
};
use super::{OpentextClient, map_error};
use crate::clients::error::UpstreamError;
use crate::clients::file::Download;
use crate::clients::transport::{Deadline, check_status};

/// Page size when searching children by name; the server caps pages around 500.
const CHILDREN_PAGE: u64 = 100;
/// Page size of a whole-folder listing (the server's largest page).
const LISTING_PAGE: u64 = 500;

impl OpentextClient {
    /// Reads a node's properties.
    pub async fn node(&self, id: NodeId) -> Result<NodeProperties, UpstreamError> {
        let id = id.to_string();
        let answer = self
            .call_json(NODE, &[&id], |r| r.query(&[("fields", "properties")]))
            .await?;
        let props = single_properties(&answer)
            .ok_or_else(|| UpstreamError::decode("node answer without properties"))?;
        serde_json::from_value(props.clone()).map_err(UpstreamError::decode)
    }

    /// Creates a folder; a duplicate name answers [`UpstreamError::Conflict`].
    pub async fn create_folder(&self, parent: NodeId, name: &str) -> Result<NodeId, UpstreamError> {
        let body = json!({ "type": subtype::FOLDER, "parent_id": parent, "name": name });
        let answer = self.call_body(NODE_CREATE, &[], &body).await?;
        created_id(&answer)
    }

    /// One page of a container's children, optionally filtered by `where_name` (which the
    /// server matches loosely).
    pub async fn children(
        &self,
        parent: NodeId,
        where_name: Option<&str>,
        page: u64,
        limit: u64,
    ) -> Result<NodePage, UpstreamError> {
        let mut query = vec![
            ("page", page.to_string()),
            ("limit", limit.to_string()),
            ("fields", "properties".to_string()),
        ];
        if let Some(name) = where_name {
            query.push(("where_name", name.to_string()));
        }
        let id = parent.to_string();
        let answer = self
            .call_json(NODE_CHILDREN, &[&id], |r| r.query(&query))
            .await?;
        Ok(NodePage {
            nodes: node_list(&answer)?,
            paging: paging(&answer),
        })
    }

    /// Every child of `parent` with, for documents, its newest version (number and
    /// description), paging through the whole folder: one listing answers every
    /// find-by-name in the folder and shows whether a document changed under the bridge.
    pub async fn listing(&self, parent: NodeId) -> Result<Vec<ListedNode>, UpstreamError> {
        let id = parent.to_string();
        let mut listed = Vec::new();
        let mut page = 1u64;
        loop {
            let query = [
                ("page", page.to_string()),
                ("limit", LISTING_PAGE.to_string()),
                ("fields", "properties".to_string()),
                (
                    "fields",
                    "versions{version_number,description}.element(0)".to_string(),
                ),
            ];
            let answer = self
                .call_json(NODE_CHILDREN, &[&id], |r| r.query(&query))
                .await?;
            for item in list_items(&answer) {
                listed.push(ListedNode::from_item(item)?);
            }
            let found = NodePage {
                nodes: Vec::new(),
                paging: paging(&answer),
            };
            if !found.has_next() {
                return Ok(listed);
            }
            page += 1;
        }
    }

    /// The child of `parent` named exactly `name`, paging through all matches (`where_name`
    /// is not an exact filter, so the comparison is made here).
    pub async fn find_child(
        &self,
        parent: NodeId,
        name: &str,
    ) -> Result<Option<NodeProperties>, UpstreamError> {
        let mut page = 1;
        loop {
            let found = self
                .children(parent, Some(name), page, CHILDREN_PAGE)
                .await?;
            let has_next = found.has_next();
            if let Some(node) = found.nodes.into_iter().find(|n| n.name == name) {
                return Ok(Some(node));
            }
            if !has_next {
                return Ok(None);
            }
            page += 1;
        }
    }

    /// Which of `names` are already taken in `parent` (only collisions come back).
    pub async fn validate_names(
        &self,
        parent: NodeId,
        names: &[&str],
    ) -> Result<Vec<NameCollision>, UpstreamError> {
        let body = json!({ "parent_id": parent, "names": names });
        let answer = self.call_body(NAMES_VALIDATE, &[], &body).await?;
        list_items(&answer)
            .into_iter()
            .map(|item| serde_json::from_value(item.clone()).map_err(UpstreamError::decode))
            .collect()
    }

    /// The category values on a node, one entry per category.
    pub async fn categories(&self, node: NodeId) -> Result<Vec<CategoryValues>, UpstreamError> {
        let id = node.to_string();
        let answer = self.call_json(CATEGORIES, &[&id], |r| r).await?;
        Ok(list_items(&answer)
            .into_iter()
            .filter_map(|item| {
                let values: BTreeMap<String, Value> =
                    serde_json::from_value(item.pointer("/data/categories")?.clone()).ok()?;
                let category_id = values
                    .keys()
                    .find_map(|k| k.split('_').next()?.parse().ok())?;
                Some(CategoryValues {
                    category_id,
                    values,
                })
            })
            .collect())
    }

    /// The metadata token of a category on a node (`GET /v2/nodes/{id}?state`), used to
    /// update without overwriting a concurrent edit.
    pub async fn category_metadata_token(
        &self,
        node: NodeId,
        category: i64,
    ) -> Result<Option<String>, UpstreamError> {
        let id = node.to_string();
        let answer = self
            .call_json(NODE, &[&id], |r| {
                r.query(&[("fields", "properties{id}"), ("state", "")])
            })
            .await?;
        Ok(category_token(results(&answer), category))
    }

    /// Applies a category with values (`{"9830_2": …}` keys) to a node. Already applied
    /// answers [`UpstreamError::Conflict`] ("The attribute group … already exists").
    pub async fn apply_category(
        &self,
        node: NodeId,
        category: i64,
        values: &BTreeMap<String, Value>,
    ) -> Result<(), UpstreamError> {
        let mut body = json!({ "category_id": category });
        extend(&mut body, values);
        let id = node.to_string();
        self.call_body(CATEGORY_APPLY, &[&id], &body)
            .await
            .map(drop)
    }

    /// Updates category values. With `metadata_token` the server refuses with
    /// [`UpstreamError::EditConflict`] if the node changed since the token was read; re-read
    /// and reapply. Returns the new token when the server sends one.
    pub async fn update_category(
        &self,
        node: NodeId,
        category: i64,
        values: &BTreeMap<String, Value>,
        metadata_token: Option<&str>,
    ) -> Result<Option<String>, UpstreamError> {
        let mut body = json!({});
        extend(&mut body, values);
        if let Some(token) = metadata_token {
            body[format!("{category}_1")] = json!({ "metadata_token": token });
        }
        let (id, cat) = (node.to_string(), category.to_string());
        let answer = self.call_body(CATEGORY_UPDATE, &[&id, &cat], &body).await?;
        Ok(category_token(results(&answer), category))
    }

    /// All versions of a document, oldest first as the server lists them.
    pub async fn versions(&self, node: NodeId) -> Result<Vec<Version>, UpstreamError> {
        let id = node.to_string();
        let answer = self.call_json(VERSIONS_LIST, &[&id], |r| r).await?;
        list_items(&answer)
            .into_iter()
            .map(|item| {
                let v = item
                    .pointer("/data/versions")
                    .or_else(|| item.pointer("/data/properties"))
                    .unwrap_or(item);
                serde_json::from_value(v.clone()).map_err(UpstreamError::decode)
            })
            .collect()
    }

    /// Streams the latest version's content.
    pub async fn download_content(&self, node: NodeId) -> Result<Download, UpstreamError> {
        let id = node.to_string();
        let response = self.call(Deadline::Headers, CONTENT, &[&id], |r| r).await?;
        let response = check_status(response, map_error).await?;
        let headers_only = Download::from_response(&response, Box::pin(futures::stream::empty()));
        Ok(Download {
            stream: self.transport().idle_guarded(response),
            ..headers_only
        })
    }
}

fn extend(body: &mut Value, values: &BTreeMap<String, Value>) {
    if let Some(map) = body.as_object_mut() {
        for (k, v) in values {
            map.insert(k.clone(), v.clone());
        }
    }
}

/// The token under `state.categories`, keyed by category id or listed with an id.
fn category_token(results: &Value, category: i64) -> Option<String> {
    let categories = results.pointer("/state/categories")?;
    let entry = match categories {
        Value::Object(map) => map.get(&category.to_string()),
        Value::Array(items) => items.iter().find(|c| {
            ["id", "category_id"]
                .iter()
                .any(|k| c.get(*k).and_then(super::types::as_i64) == Some(category))
        }),
        _ => None,
    }?;
    entry
        .get("metadata_token")
        .and_then(Value::as_str)
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_in_both_shapes() {
        let keyed = json!({"state": {"categories": {"9830": {"metadata_token": "abc"}}}});
        assert_eq!(category_token(&keyed, 9830).as_deref(), Some("abc"));
        let listed = json!({"state": {"categories": [{"id": 9830, "metadata_token": "def"}]}});
        assert_eq!(category_token(&listed, 9830).as_deref(), Some("def"));
        assert_eq!(category_token(&listed, 1), None);
    }
}
