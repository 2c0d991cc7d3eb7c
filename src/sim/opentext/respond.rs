//! Response envelopes of the Content Server REST API: `{"error": …}` errors, `links` blocks,
//! `results.data.properties` nodes, `collection.paging` / top-level `paging`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::model::{Node, OtError, Store, TYPE_WORKSPACE, format_date, type_name};

/// `{"error": message}` with the given status.
pub(crate) fn ot_error(status: u16, message: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

impl IntoResponse for OtError {
    fn into_response(self) -> Response {
        ot_error(self.0, self.1)
    }
}

pub(crate) fn ok(body: Value) -> Response {
    axum::Json(body).into_response()
}

/// The `links.data.self` block v2 responses carry.
pub(crate) fn links(method: &str, href: &str) -> Value {
    json!({"data": {"self": {"body": "", "content_type": "", "href": href, "method": method, "name": ""}}})
}

/// `properties` of a node as v2 calls return them.
pub(crate) fn node_properties(store: &Store, node: &Node) -> Value {
    let latest = node.latest();
    let children = store.children(node.id).count();
    let mut props = json!({
        "id": node.id,
        "parent_id": node.parent_id,
        "name": node.name,
        "type": node.node_type,
        "type_name": type_name(node.node_type),
        "description": node.description,
        "create_date": format_date(node.create_date),
        "modify_date": format_date(node.modify_date),
        "create_user_id": node.owner_id,
        "modify_user_id": node.owner_id,
        "owner_user_id": node.owner_id,
        "volume_id": -2000,
        "container": node.is_container(),
        "container_size": if node.is_container() { children } else { 0 },
        "size": latest.map(|v| v.blob.size).unwrap_or(children as u64),
        "mime_type": latest.map(|v| v.mime_type.clone()),
        "reserved": false,
        "versionable": node.latest().is_some(),
        "versions_control_advanced": false,
    });
    if let Some(ws) = &node.workspace {
        props["wnf_wksp_type_id"] = json!(ws.wksp_type_id);
        props["wnf_wksp_template_id"] = json!(ws.template_id);
    }
    if node.node_type == TYPE_WORKSPACE {
        props["container"] = json!(true);
    }
    props
}

/// One list item: `{"data": {"properties": …}}`.
pub(crate) fn node_item(store: &Store, node: &Node) -> Value {
    json!({"actions": {"data": {}, "map": {}, "order": []}, "data": {"properties": node_properties(store, node)}})
}

/// Paging numbers for a 1-based `page` of `limit` over `total` items.
pub(crate) fn paging(page: usize, limit: usize, total: usize) -> Value {
    let page_total = total.div_ceil(limit.max(1)).max(1);
    let range_min = if total == 0 {
        0
    } else {
        (page - 1) * limit + 1
    };
    let range_max = (page * limit).min(total);
    json!({"limit": limit, "page": page, "page_total": page_total,
           "range_min": range_min, "range_max": range_max, "total_count": total})
}

/// Reads `page` (1-based) and `limit` with Content Server's defaults.
pub(crate) fn page_and_limit(
    params: &super::params::Params,
    default_limit: usize,
) -> (usize, usize) {
    let page = params.i64("page").filter(|p| *p >= 1).unwrap_or(1) as usize;
    let limit = params
        .i64("limit")
        .filter(|l| *l >= 1)
        .map(|l| l.min(500) as usize)
        .unwrap_or(default_limit);
    (page, limit)
}
