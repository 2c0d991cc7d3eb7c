//! Nodes, documents, versions, content download, categories, name validation and Large File Upload.

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::Sim;
use super::auth::Caller;
use super::model::{OtError, Store, TYPE_DOCUMENT, TYPE_FOLDER, TYPE_WORKSPACE, not_accessible};
use super::params::{Params, Upload};
use super::respond::{links, node_item, node_properties, ok, ot_error, page_and_limit, paging};
use crate::sim::blob::Blob;

pub(crate) fn routes() -> Router<Sim> {
    Router::new()
        .route("/api/v2/nodes", post(create_node))
        .route("/api/v1/nodes", post(create_node))
        .route(
            "/api/v2/nodes/{id}",
            get(read_node).put(update_node).delete(delete_node),
        )
        .route("/api/v1/nodes/{id}", get(read_node))
        .route("/api/v2/nodes/{id}/nodes", get(children))
        .route("/api/v1/nodes/{id}/nodes", get(children))
        .route("/api/v1/nodes/{id}/businessworkspace", get(workspace_root))
        .route(
            "/api/v2/nodes/{id}/versions",
            get(versions).post(add_version),
        )
        .route(
            "/api/v1/nodes/{id}/versions",
            get(versions).post(add_version),
        )
        .route("/api/v1/nodes/{id}/versions/latest", get(latest_version))
        .route("/api/v1/nodes/{id}/content", get(content_latest))
        .route("/api/v2/nodes/{id}/content", get(content_latest))
        .route(
            "/api/v1/nodes/{id}/versions/{n}/content",
            get(content_version),
        )
        .route(
            "/api/v2/nodes/{id}/versions/{n}/content",
            get(content_version),
        )
        .route(
            "/api/v2/nodes/{id}/categories",
            get(categories).post(apply_category),
        )
        .route(
            "/api/v2/nodes/{id}/categories/apply",
            post(apply_to_sub_items),
        )
        .route(
            "/api/v2/nodes/{id}/categories/{cat}",
            get(category).put(update_category).delete(remove_category),
        )
        .route(
            "/api/v2/nodes/{id}/categories/{cat}/",
            get(category).put(update_category).delete(remove_category),
        )
        .route("/api/v1/validation/nodes/names", post(validate_names))
        .route(
            "/api/v1/forms/nodes/categories/create",
            get(category_create_form),
        )
        .route("/api/v2/multipart/settings", get(multipart_settings))
        .route("/api/v2/multipart", post(multipart_start))
        .route(
            "/api/v2/multipart/{key}",
            post(multipart_complete).delete(multipart_cancel),
        )
        .route("/api/v2/multipart/{key}/{part}", post(multipart_part))
}

fn node_response(store: &Store, id: i64, method: &str) -> Response {
    let node = &store.nodes[&id];
    ok(json!({
        "links": links(method, &format!("/api/v2/nodes/{id}")),
        "results": {"data": {"properties": node_properties(store, node)}},
    }))
}

/// Takes the content of a create/version call: a `file` part, or a completed `upload_key`.
fn take_content(store: &mut Store, params: &mut Params) -> Result<Option<Upload>, OtError> {
    if let Some(file) = params.file.take() {
        return Ok(Some(file));
    }
    let Some(key) = params.str("upload_key") else {
        return Ok(None);
    };
    let session = store
        .uploads
        .remove(&key)
        .ok_or_else(|| OtError(500, "Failed to complete request. Either the UploadKey is invalid, or you do not have permission to access this upload session".into()))?;
    match session.completed {
        Some(blob) => Ok(Some(Upload {
            file_name: Some(session.file_name),
            mime_type: Some(session.mime_type),
            blob,
        })),
        None => {
            let key_back = key.clone();
            store.uploads.insert(key_back, session);
            Err(OtError(
                500,
                "Invalid status. The upload session is not complete.".into(),
            ))
        }
    }
}

/// `POST /api/v2/nodes`: folder via `body`, document via multipart `body` + `file` (or
/// `upload_key`); categories from `roles.categories` (flat `{cat}_{attr}` keys).
async fn create_node(
    State(sim): State<Sim>,
    Extension(caller): Extension<Caller>,
    mut params: Params,
) -> Response {
    let mut store = sim.store.write().expect("store poisoned");
    match create_node_inner(&mut store, &mut params, &caller) {
        Ok(id) if sim.faults.take_duplicate_create() => {
            super::model::duplicate_name(&store.nodes[&id].name).into_response()
        }
        Ok(id) => node_response(&store, id, "POST"),
        Err(err) => err.into_response(),
    }
}

fn create_node_inner(
    store: &mut Store,
    params: &mut Params,
    caller: &Caller,
) -> Result<i64, OtError> {
    let node_type = params
        .i64("type")
        .ok_or_else(|| OtError(400, "Missing required parameter 'type'".into()))?;
    let parent_id = params
        .i64("parent_id")
        .ok_or_else(|| OtError(400, "Missing required parameter 'parent_id'".into()))?;
    let name = params
        .str("name")
        .ok_or_else(|| OtError(400, "Missing required parameter 'name'".into()))?;
    if node_type != TYPE_FOLDER && node_type != TYPE_DOCUMENT {
        return Err(OtError(400, format!("Subtype {node_type} not registered")));
    }
    store.node(parent_id)?;
    // The spec's answer for a parent the caller may not add to (CS-SPEC `POST /v2/nodes`, 400).
    if !store.permitted(caller.user_id, parent_id, "add_items") {
        return Err(super::model::not_accessible());
    }
    if store.child_named(parent_id, &name).is_some() {
        return Err(super::model::duplicate_name(&name));
    }
    let content = if node_type == TYPE_DOCUMENT {
        Some(
            take_content(store, params)?
                .ok_or_else(|| OtError(400, "Missing required parameter 'file'".into()))?,
        )
    } else {
        None
    };
    let id = store.create_node(parent_id, &name, node_type, caller.user_id)?;
    if let Some(description) = params.str("description") {
        store.node_mut(id)?.description = description;
    }
    if let Some(upload) = content {
        let file_name = upload.file_name.unwrap_or_else(|| name.clone());
        let mime = upload
            .mime_type
            .unwrap_or_else(|| "application/octet-stream".into());
        store.add_version(id, &file_name, &mime, upload.blob, "", caller.user_id)?;
    }
    let categories = params
        .object("roles")
        .and_then(|r| r.get("categories").and_then(Value::as_object).cloned());
    if let Some(categories) = categories
        && let Err(err) = store.apply_category_values(id, &categories)
    {
        store.remove_node(id);
        return Err(err);
    }
    Ok(id)
}

/// `GET /api/v2/nodes/{id}`; with `state` also the metadata tokens (`results.state`).
async fn read_node(State(sim): State<Sim>, Path(id): Path<i64>, params: Params) -> Response {
    let store = sim.store.read().expect("store poisoned");
    let Ok(node) = store.node(id) else {
        return not_accessible().into_response();
    };
    let mut results = json!({"data": {"properties": node_properties(&store, node)}});
    let fields = params.str("fields").unwrap_or_default();
    if fields.contains("categories") {
        let cats: Vec<Value> = node.categories.values().map(|c| json!(c.values)).collect();
        results["data"]["categories"] = json!(cats);
    }
    if fields.contains("versions") {
        results["data"]["versions"] = json!(
            node.versions
                .iter()
                .rev()
                .map(|v| v.to_json(id))
                .collect::<Vec<_>>()
        );
    }
    if params.get("state").is_some() {
        let tokens: Map<String, Value> = node
            .categories
            .keys()
            .map(|cat| {
                (
                    cat.to_string(),
                    json!({"metadata_token": Store::category_token(node, *cat)}),
                )
            })
            .collect();
        results["state"] = json!({
            "properties": {"metadata_token": format!("{}.{}", node.id, node.revision)},
            "categories": tokens,
        });
    }
    ok(json!({"links": links("GET", &format!("/api/v2/nodes/{id}")), "results": results}))
}

/// `PUT /api/v2/nodes/{id}`: rename, describe, move (`parent_id`).
async fn update_node(State(sim): State<Sim>, Path(id): Path<i64>, params: Params) -> Response {
    let mut store = sim.store.write().expect("store poisoned");
    let result = (|| {
        let node = store.node(id)?.clone();
        if let Some(token) = params.str("metadata_token")
            && token != format!("{}.{}", node.id, node.revision)
        {
            return Err(OtError(
                409,
                "Could not update metadata (edit conflict).".into(),
            ));
        }
        let parent = params.i64("parent_id").unwrap_or(node.parent_id);
        let name = params.str("name").unwrap_or(node.name.clone());
        if (parent != node.parent_id || name != node.name)
            && store.child_named(parent, &name).is_some()
        {
            return Err(super::model::duplicate_name(&name));
        }
        if parent != node.parent_id && !store.node(parent)?.is_container() {
            return Err(not_accessible());
        }
        store.move_node(id, parent)?;
        let target = store.node_mut(id)?;
        target.name = name;
        if let Some(description) = params.str("description") {
            target.description = description;
        }
        store.touch(id);
        Ok(())
    })();
    match result {
        Ok(()) => node_response(&store, id, "PUT"),
        Err(err) => err.into_response(),
    }
}

async fn delete_node(State(sim): State<Sim>, Path(id): Path<i64>) -> Response {
    let mut store = sim.store.write().expect("store poisoned");
    let Ok(node) = store.node(id) else {
        return not_accessible().into_response();
    };
    let mut ids = store.descendants(id);
    ids.push(id);
    let locked = ids
        .iter()
        .filter_map(|i| store.nodes.get(i))
        .find(|n| n.finalized || !n.holds.is_empty());
    if let Some(locked) = locked {
        return ot_error(
            500,
            format!(
                "'{}' is a record under hold or finalized and cannot be deleted.",
                locked.name
            ),
        );
    }
    let parent = node.parent_id;
    for i in ids {
        store.remove_node(i);
    }
    store.touch(parent);
    ok(json!({"results": {}}))
}

/// `GET /api/v2/nodes/{id}/nodes`: `where_name` matches like Content Server's name filter
/// (contains, case-insensitive), so clients must filter for the exact name themselves.
async fn children(State(sim): State<Sim>, Path(id): Path<i64>, params: Params) -> Response {
    let store = sim.store.read().expect("store poisoned");
    if store.node(id).is_err() {
        return ot_error(500, format!("Could not get a node for {id}"));
    }
    let name = params.str("where_name").map(|n| n.to_lowercase());
    let where_type = params.i64("where_type");
    let mut items: Vec<&super::model::Node> = store
        .children(id)
        .filter(|n| {
            name.as_ref()
                .is_none_or(|f| n.name.to_lowercase().contains(f))
        })
        .filter(|n| match where_type {
            None => true,
            Some(-1) => n.is_container(),
            Some(-3) => !n.is_container(),
            Some(-2) => true,
            Some(t) => n.node_type == t,
        })
        .collect();
    match params.str("sort").as_deref() {
        Some("desc_name") => items.sort_by(|a, b| b.name.cmp(&a.name)),
        Some(_) => items.sort_by(|a, b| a.name.cmp(&b.name)),
        None => items.sort_by(|a, b| a.name.cmp(&b.name)),
    }
    let (page, limit) = page_and_limit(&params, 100);
    let total = items.len();
    let results: Vec<Value> = items
        .iter()
        .skip((page - 1) * limit)
        .take(limit)
        .map(|n| {
            let mut item = node_item(&store, n);
            if let Some(versions) = listed_versions(n, &params) {
                item["data"]["versions"] = versions;
            }
            item
        })
        .collect();
    ok(json!({
        "links": links("GET", &format!("/api/v2/nodes/{id}/nodes")),
        "collection": {"paging": paging(page, limit, total), "sorting": {"sort": ["asc_name"]}},
        "results": results,
    }))
}

/// The `versions` section a listing item carries when `fields` asks for it: newest first, or
/// with `.element(0)` only the newest version as one object (content-server-rest-api-2.0.2,
/// `fields`: "a specific item can be retrieved instead (e.g. versions{mime_type}.element(0))").
fn listed_versions(node: &super::model::Node, params: &Params) -> Option<Value> {
    let asked: Vec<String> = match params.get("fields")? {
        Value::Array(items) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    };
    let wanted = asked.iter().find(|f| f.starts_with("versions"))?;
    if node.versions.is_empty() {
        return None;
    }
    let newest_first = node.versions.iter().rev().map(|v| v.to_json(node.id));
    Some(if wanted.ends_with(".element(0)") {
        newest_first.take(1).next().unwrap_or(Value::Null)
    } else {
        Value::Array(newest_first.collect())
    })
}

/// `GET /api/v1/nodes/{id}/businessworkspace`: the workspace a node lies in.
async fn workspace_root(State(sim): State<Sim>, Path(id): Path<i64>) -> Response {
    let store = sim.store.read().expect("store poisoned");
    if store.node(id).is_err() {
        return not_accessible().into_response();
    }
    match store.workspace_of(id) {
        Some(ws) => {
            let data = store.nodes[&ws].workspace.as_ref().expect("workspace");
            ok(
                json!({"id": ws, "isLinked": !data.references.is_empty(), "type": TYPE_WORKSPACE,
                      "workspace_type_id": data.wksp_type_id}),
            )
        }
        None => ot_error(404, format!("Node {id} is not in a business workspace.")),
    }
}

/// `GET /api/v2/nodes/{id}/versions`: `results[].data.versions`, newest last.
async fn versions(State(sim): State<Sim>, Path(id): Path<i64>) -> Response {
    let store = sim.store.read().expect("store poisoned");
    let Ok(node) = store.node(id) else {
        return not_accessible().into_response();
    };
    let results: Vec<Value> = node
        .versions
        .iter()
        .map(|v| json!({"data": {"versions": v.to_json(id)}}))
        .collect();
    let total = results.len();
    ok(json!({
        "links": links("GET", &format!("/api/v2/nodes/{id}/versions")),
        "collection": {"paging": paging(1, total.max(1), total)},
        "results": results,
    }))
}

async fn latest_version(State(sim): State<Sim>, Path(id): Path<i64>) -> Response {
    let store = sim.store.read().expect("store poisoned");
    match store.node(id).ok().and_then(|n| n.latest()) {
        Some(v) => ok(json!({"data": v.to_json(id)})),
        None => not_accessible().into_response(),
    }
}

/// `POST /api/v2/nodes/{id}/versions`: multipart `file` (or `upload_key`), `description`,
/// `add_major_version`. Returns the node (`results.data.properties`) and the new version
/// (`results.data.versions`, a one-element list as in the spec).
async fn add_version(
    State(sim): State<Sim>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
    mut params: Params,
) -> Response {
    let mut store = sim.store.write().expect("store poisoned");
    let result = (|| {
        store.node(id)?;
        // Adding a version takes the Modify permission; the spec answers a node the caller may
        // not change like one that does not exist (CS-SPEC `POST /v2/nodes/{id}/versions`, 400).
        if !store.permitted(caller.user_id, id, "modify") {
            return Err(super::model::not_accessible());
        }
        let upload = take_content(&mut store, &mut params)?
            .ok_or_else(|| OtError(400, "Missing required parameter 'File'".into()))?;
        let node_name = store.node(id)?.name.clone();
        let file_name = upload.file_name.unwrap_or(node_name);
        let mime = upload
            .mime_type
            .unwrap_or_else(|| "application/octet-stream".into());
        let description = params.str("description").unwrap_or_default();
        store.add_version(
            id,
            &file_name,
            &mime,
            upload.blob,
            &description,
            caller.user_id,
        )
    })();
    match result {
        Ok(number) => {
            let node = &store.nodes[&id];
            let version = node.versions[(number - 1) as usize].to_json(id);
            ok(json!({
                "links": links("POST", &format!("/api/v2/nodes/{id}/versions")),
                "results": {"data": {"properties": node_properties(&store, node), "versions": [version]}},
            }))
        }
        Err(err) => err.into_response(),
    }
}

fn stream_content(file_name: &str, mime: &str, blob: &Blob) -> Response {
    let mut response = Response::new(Body::from_stream(blob.stream()));
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(mime) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(blob.size));
    let disposition = format!(
        "attachment; filename=\"{}\"",
        file_name.replace(['"', '\\', '\r', '\n'], "_")
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

async fn content_latest(State(sim): State<Sim>, Path(id): Path<i64>) -> Response {
    let store = sim.store.read().expect("store poisoned");
    match store.node(id).ok().and_then(|n| n.latest()) {
        Some(v) => stream_content(&v.file_name, &v.mime_type, &v.blob),
        None => not_accessible().into_response(),
    }
}

async fn content_version(State(sim): State<Sim>, Path((id, n)): Path<(i64, i64)>) -> Response {
    let store = sim.store.read().expect("store poisoned");
    let version = store
        .node(id)
        .ok()
        .and_then(|node| node.versions.iter().find(|v| v.number == n));
    match version {
        Some(v) => stream_content(&v.file_name, &v.mime_type, &v.blob),
        None => not_accessible().into_response(),
    }
}

fn category_json(store: &Store, node_id: i64, cat: i64) -> Value {
    let node = &store.nodes[&node_id];
    let values = &node.categories[&cat];
    let definition = store.seed.categories.iter().find(|c| c.id == cat);
    let mut metadata = Map::new();
    if let Some(def) = definition {
        metadata.insert(
            cat.to_string(),
            json!({"key": cat.to_string(), "name": def.name, "type_name": "Category"}),
        );
        for attr in &def.attributes {
            let key = format!("{cat}_{}", attr.id);
            metadata.insert(
                key.clone(),
                json!({"key": key, "name": attr.name, "type_name": attr.type_name}),
            );
        }
    }
    let token = Store::category_token(node, cat);
    json!({
        "data": {"categories": values.values},
        "metadata": metadata,
        "metadata_token": token,
        "state": {"categories": {cat.to_string(): {"metadata_token": token}}},
    })
}

/// `GET /api/v2/nodes/{id}/categories`: `results[].data.categories` keyed `{cat}_{attr}`.
async fn categories(State(sim): State<Sim>, Path(id): Path<i64>) -> Response {
    let store = sim.store.read().expect("store poisoned");
    let Ok(node) = store.node(id) else {
        return not_accessible().into_response();
    };
    let results: Vec<Value> = node
        .categories
        .keys()
        .map(|cat| category_json(&store, id, *cat))
        .collect();
    ok(
        json!({"links": links("GET", &format!("/api/v2/nodes/{id}/categories")), "results": results}),
    )
}

async fn category(State(sim): State<Sim>, Path((id, cat)): Path<(i64, i64)>) -> Response {
    let store = sim.store.read().expect("store poisoned");
    match store.node(id) {
        Ok(node) if node.categories.contains_key(&cat) => {
            ok(json!({"results": category_json(&store, id, cat)}))
        }
        Ok(_) => ot_error(400, format!("Category {cat} is not applied to node {id}")),
        Err(err) => err.into_response(),
    }
}

/// `GET /api/v1/forms/nodes/categories/create?id=<node>&category_id=<cat>`: the Alpaca form for
/// applying a category (CS-SPEC `forms_CategoriesCreateFormInfo`: `data`, `options`, `schema`).
/// `schema.properties` gives each attribute's JSON type (`array` for multi-value, the item type
/// under `items`), `options.fields` the widget (`date`, `otcs_user_picker`).
async fn category_create_form(State(sim): State<Sim>, params: Params) -> Response {
    let store = sim.store.read().expect("store poisoned");
    let (Some(id), Some(cat)) = (params.i64("id"), params.i64("category_id")) else {
        return ot_error(
            400,
            "Could not retrieve form. Invalid or missing parameters".to_owned(),
        );
    };
    if store.node(id).is_err() {
        return ot_error(500, format!("Could not get a node for {id}"));
    }
    let Some(definition) = store.seed.categories.iter().find(|c| c.id == cat) else {
        return ot_error(500, format!("Category {cat} has no version"));
    };
    let mut data = Map::new();
    let mut fields = Map::new();
    let mut properties = Map::new();
    data.insert(format!("{cat}_1"), json!({}));
    for attr in &definition.attributes {
        let key = format!("{cat}_{}", attr.id);
        let (json_type, widget) = match attr.type_name.as_str() {
            "Integer" => ("integer", "integer"),
            "User" => ("integer", "otcs_user_picker"),
            "Real" => ("number", "number"),
            "Boolean" => ("boolean", "checkbox"),
            "Date" => ("string", "date"),
            _ => ("string", "text"),
        };
        let (schema, option, empty) = if attr.multi_value {
            (
                json!({"title": attr.name, "type": "array", "items": {"type": json_type, "maxItems": 50}}),
                json!({"label": attr.name, "type": "array", "fields": {"item": {"type": widget}}}),
                json!([]),
            )
        } else {
            (
                json!({"title": attr.name, "type": json_type}),
                json!({"label": attr.name, "type": widget}),
                Value::Null,
            )
        };
        data.insert(key.clone(), empty);
        properties.insert(key.clone(), schema);
        fields.insert(key, option);
    }
    ok(json!({
        "data": data,
        "options": {"fields": fields, "form": {"attributes": {"action": "api/v1/nodes"}, "renderForm": true}},
        "schema": {"title": definition.name, "type": "object", "properties": properties},
    }))
}

/// Attribute values of a request: every `{cat}_…` key (flat form fields or `body` JSON).
fn attribute_entries(params: &Params, cat: i64) -> Vec<(String, Value)> {
    let prefix = format!("{cat}_");
    params
        .fields
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `POST /api/v2/nodes/{id}/categories` `{"category_id": 9830, "9830_2": …}`: one category per call.
async fn apply_category(State(sim): State<Sim>, Path(id): Path<i64>, params: Params) -> Response {
    let Some(cat) = params.i64("category_id") else {
        return ot_error(400, "Missing required parameter 'category_id'");
    };
    let mut store = sim.store.write().expect("store poisoned");
    let result = (|| {
        let node = store.node(id)?;
        if node.categories.contains_key(&cat) {
            let name = store
                .seed
                .categories
                .iter()
                .find(|c| c.id == cat)
                .map(|c| c.name.clone())
                .unwrap_or_default();
            return Err(OtError(
                400,
                format!("The attribute group '{name}' already exists"),
            ));
        }
        store.set_category(id, cat, attribute_entries(&params, cat), true)
    })();
    match result {
        Ok(()) => ok(json!({"links": links("POST", ""), "results": {}})),
        Err(err) => err.into_response(),
    }
}

/// `PUT /api/v2/nodes/{id}/categories/{cat}/` `{"9830_2": …}`, optionally with
/// `"9830_1": {"metadata_token": …}`; a stale token is a 409 edit conflict.
async fn update_category(
    State(sim): State<Sim>,
    Path((id, cat)): Path<(i64, i64)>,
    params: Params,
) -> Response {
    let mut store = sim.store.write().expect("store poisoned");
    let result = (|| {
        let node = store.node(id)?;
        let given_token = params.object(&format!("{cat}_1")).and_then(|o| {
            o.get("metadata_token")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        if let Some(token) = given_token
            && Some(token) != Store::category_token(node, cat)
        {
            return Err(OtError(
                409,
                "Could not update metadata (edit conflict).".into(),
            ));
        }
        store.set_category(id, cat, attribute_entries(&params, cat), false)
    })();
    match result {
        Ok(()) => ok(json!({"links": links("PUT", ""), "results": category_json(&store, id, cat)})),
        Err(err) => err.into_response(),
    }
}

async fn remove_category(State(sim): State<Sim>, Path((id, cat)): Path<(i64, i64)>) -> Response {
    let mut store = sim.store.write().expect("store poisoned");
    match store.node_mut(id) {
        Ok(node) => {
            if node.categories.remove(&cat).is_none() {
                return ot_error(400, format!("Category {cat} is not applied to node {id}"));
            }
            store.touch(id);
            ok(json!({"results": {}}))
        }
        Err(err) => err.into_response(),
    }
}

/// `POST /api/v2/nodes/{id}/categories/apply` `body={"categories":[{"id":…,"action":"add_upgrade"}]}`:
/// copies the node's category values to every sub-item.
async fn apply_to_sub_items(
    State(sim): State<Sim>,
    Path(id): Path<i64>,
    params: Params,
) -> Response {
    let mut store = sim.store.write().expect("store poisoned");
    let result = (|| {
        let requested: Vec<(i64, String)> = match params.get("categories") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|c| {
                    Some((
                        c["id"].as_i64()?,
                        c["action"].as_str().unwrap_or("add").to_owned(),
                    ))
                })
                .collect(),
            _ => {
                return Err(OtError(
                    400,
                    "Missing required parameter 'categories'".into(),
                ));
            }
        };
        let source = store.node(id)?.clone();
        for child in store.descendants(id) {
            for (cat, action) in &requested {
                if action == "delete" {
                    store.node_mut(child)?.categories.remove(cat);
                    continue;
                }
                let entries: Vec<(String, Value)> = source
                    .categories
                    .get(cat)
                    .map(|c| {
                        c.values
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                store.set_category(child, *cat, entries, true)?;
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => ok(json!({"results": {}})),
        Err(err) => err.into_response(),
    }
}

/// `POST /api/v1/validation/nodes/names` `{"parent_id":…,"names":[…]}` → only the collisions.
async fn validate_names(State(sim): State<Sim>, params: Params) -> Response {
    let Some(parent) = params.i64("parent_id") else {
        return ot_error(400, "Missing required parameter 'parent_id'");
    };
    let names: Vec<String> = match params.get("names") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or_else(|_| vec![s.clone()]),
        _ => return ot_error(400, "Missing required parameter 'names'"),
    };
    let store = sim.store.read().expect("store poisoned");
    if store.node(parent).is_err() {
        return not_accessible().into_response();
    }
    let results: Vec<Value> = names
        .iter()
        .filter_map(|n| store.child_named(parent, n))
        .map(|n| json!({"name": n.name, "id": n.id, "type": n.node_type}))
        .collect();
    ok(json!({"results": results}))
}

async fn multipart_settings(State(sim): State<Sim>) -> Response {
    let limits = sim.multipart;
    ok(json!({"is_enabled": true, "max_size": limits.max, "min_size": limits.min}))
}

/// `POST /api/v2/multipart` `file_name, file_size, mime_type` → `{upload_key, num_parts, part_size, max_retries}`.
async fn multipart_start(State(sim): State<Sim>, params: Params) -> Response {
    let limits = sim.multipart;
    let (Some(file_name), Some(size), Some(mime)) = (
        params.str("file_name"),
        params.i64("file_size"),
        params.str("mime_type"),
    ) else {
        return ot_error(400, "Pattern of argument was not recognized.");
    };
    let size = size.max(0) as u64;
    if size < limits.min || size > limits.max {
        return ot_error(
            500,
            format!(
                "Invalid block size: File size must be between {} and {} bytes.",
                limits.min, limits.max
            ),
        );
    }
    let num_parts = size.div_ceil(limits.part).max(1);
    let key = uuid::Uuid::new_v4().simple().to_string();
    sim.store.write().expect("store poisoned").uploads.insert(
        key.clone(),
        super::model::UploadSession {
            file_name,
            file_size: size,
            mime_type: mime,
            part_size: limits.part,
            num_parts,
            parts: Default::default(),
            completed: None,
        },
    );
    ok(
        json!({"upload_key": key, "num_parts": num_parts, "part_size": limits.part, "max_retries": 3}),
    )
}

fn invalid_key() -> Response {
    ot_error(
        500,
        "Failed to complete request. Either the UploadKey is invalid, or you do not have permission to access this upload session",
    )
}

/// `POST /api/v2/multipart/{key}/{part}` with `part_content` (multipart, or a raw octet-stream body).
async fn multipart_part(
    State(sim): State<Sim>,
    Path((key, part)): Path<(String, u64)>,
    params: Params,
) -> Response {
    let Some(upload) = params.file else {
        return ot_error(400, "Missing required parameter 'part_content'");
    };
    let mut store = sim.store.write().expect("store poisoned");
    let Some(session) = store.uploads.get_mut(&key) else {
        return invalid_key();
    };
    if session.completed.is_some() {
        return ot_error(500, "Multipart Upload session expired");
    }
    if part == 0 || part > session.num_parts {
        return ot_error(
            500,
            format!(
                "Invalid BlockID: Expected BlockID between 1 and {}",
                session.num_parts
            ),
        );
    }
    if session.parts.contains_key(&part) {
        return ot_error(
            500,
            format!("Invalid BlockID: BlockID {part} has already been uploaded."),
        );
    }
    if upload.blob.size > session.part_size {
        return ot_error(
            500,
            format!(
                "Part {part} is larger than the part size {}",
                session.part_size
            ),
        );
    }
    session.parts.insert(part, upload.blob);
    ok(json!({}))
}

/// `POST /api/v2/multipart/{key}`: closes the session once every part is there and the sizes add up.
async fn multipart_complete(State(sim): State<Sim>, Path(key): Path<String>) -> Response {
    let (parts, expected) = {
        let store = sim.store.read().expect("store poisoned");
        let Some(session) = store.uploads.get(&key) else {
            return invalid_key();
        };
        if session.completed.is_some() || session.parts.is_empty() {
            return ot_error(
                500,
                "Invalid status. Cannot close an empty or already closed upload.",
            );
        }
        if session.parts.len() as u64 != session.num_parts {
            return ot_error(
                500,
                format!(
                    "Invalid status. {} of {} parts uploaded.",
                    session.parts.len(),
                    session.num_parts
                ),
            );
        }
        (
            session.parts.values().cloned().collect::<Vec<_>>(),
            session.file_size,
        )
    };
    // Hashing reads the parts once; done without holding the lock.
    let blob = match Blob::concat(parts).await {
        Ok(blob) => blob,
        Err(err) => return ot_error(500, err.to_string()),
    };
    if blob.size != expected {
        return ot_error(
            500,
            format!(
                "Invalid status. Uploaded {} bytes, expected {expected}.",
                blob.size
            ),
        );
    }
    let mut store = sim.store.write().expect("store poisoned");
    match store.uploads.get_mut(&key) {
        Some(session) => {
            session.parts.clear();
            session.completed = Some(blob);
            ok(json!({}))
        }
        None => invalid_key(),
    }
}

async fn multipart_cancel(State(sim): State<Sim>, Path(key): Path<String>) -> Response {
    match sim
        .store
        .write()
        .expect("store poisoned")
        .uploads
        .remove(&key)
    {
        Some(_) => ok(json!({})),
        None => invalid_key(),
    }
}
