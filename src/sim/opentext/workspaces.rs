//! Business workspaces (`/api/v2/businessworkspaces…`): search by business object, create, bulk
//! upsert, read, related workspaces, business object references, roles and members.

use axum::Router;
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use serde_json::{Map, Value, json};

use super::Sim;
use super::auth::Caller;
use super::model::{BoRef, OtError, Role, Store, TYPE_WORKSPACE};
use super::params::{Params, ids_of};
use super::respond::{links, node_item, node_properties, ok, page_and_limit, paging};
use super::rm;
use super::seed::SeedWorkspaceType;

pub(crate) fn routes() -> Router<Sim> {
    Router::new()
        .route("/api/v2/businessworkspacetypes", get(list_types))
        .route(
            "/api/v2/businessworkspaces",
            get(search).post(create).put(bulk_upsert),
        )
        .route("/api/v2/businessworkspaces/{id}", get(read))
        .route(
            "/api/v2/businessworkspaces/{id}/relateditems",
            get(related).post(add_related),
        )
        .route(
            "/api/v2/businessworkspaces/{id}/relateditems/{rel_id}",
            delete(remove_related),
        )
        .route(
            "/api/v2/businessworkspaces/{id}/workspacereferences",
            put(add_reference).delete(remove_reference),
        )
        .route("/api/v2/businessworkspaces/{id}/members", get(all_members))
        .route("/api/v2/businessworkspaces/{id}/roles", get(roles))
        .route(
            "/api/v2/businessworkspaces/{id}/roles/{role_id}",
            get(role).put(update_role),
        )
        .route(
            "/api/v2/businessworkspaces/{id}/roles/{role_id}/members",
            get(role_members).post(add_role_member),
        )
        .route(
            "/api/v2/businessworkspaces/{id}/roles/{role_id}/members/{member_id}",
            delete(remove_role_member),
        )
}

fn not_found(id: i64) -> OtError {
    OtError(404, format!("Business workspace {id} could not be found."))
}

fn workspace_id(store: &Store, id: i64) -> Result<i64, OtError> {
    match store.nodes.get(&id) {
        Some(n) if n.workspace.is_some() => Ok(id),
        _ => Err(not_found(id)),
    }
}

async fn list_types(State(sim): State<Sim>, params: Params) -> Response {
    let store = sim.store.read().expect("store poisoned");
    let ext = params.str("ext_system_id");
    let bo_type = params.str("bo_type");
    let results: Vec<Value> = store
        .seed
        .workspace_types
        .iter()
        .filter(|t| ext.as_ref().is_none_or(|e| &t.ext_system_id == e))
        .filter(|t| bo_type.as_ref().is_none_or(|b| &t.bo_type == b))
        .map(|t| {
            json!({"data": {
                "properties": {
                    "wksp_type_id": t.id, "wksp_type_name": t.name, "wksp_type_names": {"en": t.name},
                    "rm_enabled": t.rm_enabled,
                    "templates": [{"id": t.template_id, "name": t.template_name, "subtype": TYPE_WORKSPACE}],
                    "wksp_creation": {"location": store.seed.enterprise_folder_id},
                },
                "wksp_info": {"in_use": true},
            }})
        })
        .collect();
    ok(json!({"links": links("GET", "/api/v2/businessworkspacetypes"), "results": results}))
}

fn name_matches(name: &str, filter: &str) -> bool {
    if let Some(part) = filter.strip_prefix("contains_") {
        name.to_lowercase().contains(&part.to_lowercase())
    } else if let Some(part) = filter.strip_prefix("startswith_") {
        name.to_lowercase().starts_with(&part.to_lowercase())
    } else {
        name == filter
    }
}

/// `GET /api/v2/businessworkspaces`: a real search only with `expanded_view=true`; otherwise
/// Content Server lists the user's recently accessed workspaces, ignoring the filters.
async fn search(State(sim): State<Sim>, params: Params) -> Response {
    let store = sim.store.read().expect("store poisoned");
    let expanded = params.bool("expanded_view").unwrap_or(false);
    let candidates: Vec<i64> = if expanded {
        store.workspace_ids.iter().copied().collect()
    } else {
        store.recent.iter().copied().collect()
    };
    let ext = params.str("where_ext_system_id");
    let bo_type = params.str("where_bo_type");
    let bo_id = params.str("where_bo_id");
    let type_id = params.i64("where_workspace_type_id");
    let type_name = params.str("where_workspace_type_name");
    let name = params.str("where_name");
    let mut hits: Vec<&super::model::Node> = candidates
        .iter()
        .filter_map(|id| store.nodes.get(id))
        .filter(|n| {
            let Some(ws) = &n.workspace else { return false };
            if !expanded {
                return true;
            }
            let refs_ok = ws.references.iter().any(|r| {
                ext.as_ref().is_none_or(|e| &r.ext_system_id == e)
                    && bo_type.as_ref().is_none_or(|b| &r.bo_type == b)
                    && bo_id.as_ref().is_none_or(|b| &r.bo_id == b)
            }) || (ext.is_none() && bo_type.is_none() && bo_id.is_none());
            let type_ok = type_id.is_none_or(|t| ws.wksp_type_id == t);
            // The type-name filter behaves like "starts with" (a known Content Server quirk).
            let type_name_ok = type_name.as_ref().is_none_or(|tn| {
                store
                    .workspace_type(ws.wksp_type_id)
                    .is_some_and(|t| t.name.starts_with(tn.as_str()))
            });
            let name_ok = name.as_ref().is_none_or(|f| name_matches(&n.name, f));
            refs_ok && type_ok && type_name_ok && name_ok
        })
        .collect();
    match params.str("sort").as_deref() {
        Some("desc_name") => hits.sort_by(|a, b| b.name.cmp(&a.name)),
        Some("asc_name") | Some("name") => hits.sort_by(|a, b| a.name.cmp(&b.name)),
        _ => {}
    }
    let (page, limit) = page_and_limit(&params, 100);
    let total = hits.len();
    let results: Vec<Value> = hits
        .iter()
        .skip((page - 1) * limit)
        .take(limit)
        .map(|n| node_item(&store, n))
        .collect();
    let mut paging = paging(page, limit, total);
    if page * limit < total {
        paging["actions"] = json!({"next": {"href": format!("/api/v2/businessworkspaces?page={}&limit={limit}", page + 1)}});
    }
    ok(json!({
        "links": links("GET", "/api/v2/businessworkspaces"),
        "paging": paging,
        "results": results,
        "wksp_info": {"wksp_type_icon": null},
    }))
}

/// Resolves the workspace type from `template_id`, `wksp_type_id`, `bo_type_id` or
/// `ext_system_id` + `bo_type`, in the order BW-SPEC gives.
fn resolve_type(store: &Store, body: &Params) -> Result<SeedWorkspaceType, OtError> {
    let types = &store.seed.workspace_types;
    let found = if let Some(template) = body.i64("template_id") {
        types.iter().find(|t| t.template_id == template)
    } else if let Some(type_id) = body.i64("wksp_type_id") {
        types.iter().find(|t| t.id == type_id)
    } else if let Some(bo_type_id) = body.i64("bo_type_id") {
        types.iter().find(|t| t.bo_type_id == bo_type_id)
    } else if let Some(bo_type) = body.str("bo_type") {
        let ext = body.str("ext_system_id");
        types
            .iter()
            .find(|t| t.bo_type == bo_type && ext.as_ref().is_none_or(|e| &t.ext_system_id == e))
    } else {
        return Err(OtError(
            400,
            "Missing required parameter 'template_id'".into(),
        ));
    };
    found.cloned().ok_or_else(|| {
        OtError(
            400,
            "The workspace template or type could not be found.".into(),
        )
    })
}

fn bo_ref(body: &Params, wtype: &SeedWorkspaceType) -> Option<BoRef> {
    let bo_id = body.str("bo_id")?;
    Some(BoRef {
        ext_system_id: body
            .str("ext_system_id")
            .unwrap_or_else(|| wtype.ext_system_id.clone()),
        bo_type: body.str("bo_type").unwrap_or_else(|| wtype.bo_type.clone()),
        bo_id,
    })
}

fn workspace_name(body: &Params, wtype: &SeedWorkspaceType) -> String {
    body.str("name")
        .or_else(|| {
            body.object("name_multilingual")
                .and_then(|m| m.get("en").and_then(Value::as_str).map(str::to_owned))
        })
        // Name generation from the business object, as a template with name patterns does.
        .unwrap_or_else(|| format!("{} {}", wtype.name, body.str("bo_id").unwrap_or_default()))
}

/// Applies `roles.categories` and `roles.rmclassifications` of a create/update body.
fn apply_roles(store: &mut Store, id: i64, body: &Params, caller: &Caller) -> Result<(), OtError> {
    let Some(roles) = body.object("roles") else {
        return Ok(());
    };
    if let Some(Value::Object(categories)) = roles.get("categories") {
        store.apply_category_values(id, categories)?;
    }
    if let Some(Value::Object(rm)) = roles.get("rmclassifications") {
        let class_ids = ids_of(rm.get("rmclassification_id").or_else(|| rm.get("class_id")));
        if let Some(class_id) = class_ids.first() {
            let mut fields = rm.clone();
            fields.remove("rmclassification_id");
            rm::classify(store, id, *class_id, fields, false, caller)?;
        }
    }
    Ok(())
}

fn create_one(store: &mut Store, body: &Params, caller: &Caller) -> Result<i64, OtError> {
    let wtype = resolve_type(store, body)?;
    if let Some(existing) = body.i64("ibo_workspace_id") {
        // Attaches an additional business object to an existing workspace.
        workspace_id(store, existing)?;
        if let Some(bo) = bo_ref(body, &wtype) {
            let node = store.node_mut(existing)?;
            let ws = node.workspace.as_mut().expect("checked");
            if !ws.references.contains(&bo) {
                ws.references.push(bo);
            }
        }
        return Ok(existing);
    }
    let parent = body
        .i64("parent_id")
        .unwrap_or(store.seed.enterprise_folder_id);
    let name = workspace_name(body, &wtype);
    let id = store.create_workspace(&wtype, parent, &name, bo_ref(body, &wtype), caller.user_id)?;
    if let Some(description) = body.str("description") {
        store.node_mut(id)?.description = description;
    }
    if let Err(err) = apply_roles(store, id, body, caller) {
        // Content Server creates a workspace in one transaction: undo on failure.
        for child in store.descendants(id) {
            store.remove_node(child);
        }
        store.remove_node(id);
        return Err(err);
    }
    Ok(id)
}

async fn create(
    State(sim): State<Sim>,
    Extension(caller): Extension<Caller>,
    params: Params,
) -> Response {
    let mut store = sim.store.write().expect("store poisoned");
    match create_one(&mut store, &params, &caller) {
        Ok(id) if sim.faults.take_duplicate_create() => {
            super::model::duplicate_name(&store.nodes[&id].name).into_response()
        }
        Ok(id) => ok(json!({
            "links": links("POST", "/api/v2/businessworkspaces"),
            "results": {"id": id, "direct_open": true, "sub_folder_id": 0},
        })),
        Err(err) => err.into_response(),
    }
}

fn find_by_bo(store: &Store, wtype: &SeedWorkspaceType, bo: &BoRef) -> Option<i64> {
    store.workspace_ids.iter().copied().find(|id| {
        store
            .nodes
            .get(id)
            .and_then(|n| n.workspace.as_ref())
            .is_some_and(|w| w.wksp_type_id == wtype.id && w.references.contains(bo))
    })
}

fn upsert_one(
    store: &mut Store,
    info: Map<String, Value>,
    caller: &Caller,
) -> Result<i64, OtError> {
    let mut body = Params {
        fields: info,
        file: None,
    };
    // `parent_id` and `ibo_workspace_id` are ignored by the bulk call (automatic creation).
    body.fields.remove("parent_id");
    body.fields.remove("ibo_workspace_id");
    let wtype = resolve_type(store, &body)?;
    let existing = bo_ref(&body, &wtype).and_then(|bo| find_by_bo(store, &wtype, &bo));
    let Some(id) = existing else {
        return create_one(store, &body, caller);
    };
    if let Some(name) = body.str("name") {
        let node = store.node(id)?;
        if node.name != name {
            if store.child_named(node.parent_id, &name).is_some() {
                return Err(super::model::duplicate_name(&name));
            }
            store.node_mut(id)?.name = name;
            store.touch(id);
        }
    }
    apply_roles(store, id, &body, caller)?;
    Ok(id)
}

/// `PUT /api/v2/businessworkspaces` `{"bws_infos": […]}` → one `{id, error_message}` per entry
/// (BW-SPEC `V2CreateOrUpdateBusinessWorkspacesResponse` is a top-level array). Updating needs a
/// business object.
async fn bulk_upsert(
    State(sim): State<Sim>,
    Extension(caller): Extension<Caller>,
    params: Params,
) -> Response {
    let infos = match params.get("bws_infos") {
        Some(Value::Array(items)) => items.clone(),
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or_default(),
        _ => return super::respond::ot_error(400, "Missing required parameter 'bws_infos'"),
    };
    let mut store = sim.store.write().expect("store poisoned");
    let results: Vec<Value> = infos
        .into_iter()
        .map(|info| match info {
            Value::Object(map) => match upsert_one(&mut store, map, &caller) {
                Ok(id) => json!({"id": id, "error_message": ""}),
                Err(OtError(_, msg)) => json!({"id": 0, "error_message": msg}),
            },
            _ => json!({"id": 0, "error_message": "Each bws_infos entry must be an object"}),
        })
        .collect();
    ok(Value::Array(results))
}

fn business_properties(store: &Store, id: i64) -> (Value, Value) {
    let node = &store.nodes[&id];
    let ws = node.workspace.as_ref().expect("workspace");
    let wtype = store.workspace_type(ws.wksp_type_id);
    let refs: Vec<Value> = ws
        .references
        .iter()
        .map(|r| {
            json!({"business_object_id": r.bo_id, "business_object_type": r.bo_type,
                   "business_object_type_id": wtype.map(|t| t.bo_type_id),
                   "external_system_id": r.ext_system_id, "has_default_display": true,
                   "has_default_search": true, "workspace_type_id": ws.wksp_type_id})
        })
        .collect();
    let first = ws.references.first();
    let props = json!({
        "business_object_id": first.map(|r| r.bo_id.clone()),
        "business_object_type": first.map(|r| r.bo_type.clone()),
        "business_object_type_id": wtype.map(|t| t.bo_type_id),
        "external_system_id": first.map(|r| r.ext_system_id.clone()),
        "workspace_type_id": ws.wksp_type_id,
        "workspace_type_name": wtype.map(|t| t.name.clone()),
        "display_url": null,
    });
    (props, Value::Array(refs))
}

async fn read(State(sim): State<Sim>, Path(id): Path<i64>) -> Response {
    let mut store = sim.store.write().expect("store poisoned");
    if let Err(err) = workspace_id(&store, id) {
        return err.into_response();
    }
    store.remember_recent(id);
    let node = &store.nodes[&id];
    let (business, references) = business_properties(&store, id);
    let categories: Map<String, Value> = node
        .categories
        .values()
        .flat_map(|c| c.values.iter().map(|(k, v)| (k.clone(), v.clone())))
        .collect();
    ok(json!({
        "links": links("GET", &format!("/api/v2/businessworkspaces/{id}")),
        "results": {
            "actions": {"data": {}, "map": {}, "order": []},
            "data": {
                "properties": node_properties(&store, node),
                "business_properties": business,
                "workspace_references": references,
                "categories": categories,
            },
        },
    }))
}

async fn related(State(sim): State<Sim>, Path(id): Path<i64>, params: Params) -> Response {
    let store = sim.store.read().expect("store poisoned");
    if let Err(err) = workspace_id(&store, id) {
        return err.into_response();
    }
    let wanted: Vec<String> = params
        .str("where_rel_types")
        .or_else(|| params.str("where_relationtype"))
        .map(|s| s.split(',').map(|p| p.trim().to_lowercase()).collect())
        .unwrap_or_default();
    let ws = store.nodes[&id].workspace.as_ref().expect("workspace");
    let items: Vec<Value> = ws
        .related
        .iter()
        .filter(|(_, kind)| wanted.is_empty() || wanted.contains(kind))
        .filter_map(|(rel, kind)| {
            let node = store.nodes.get(rel)?;
            let mut props = node_properties(&store, node);
            props["rel_type"] = json!(kind);
            Some(json!({"data": {"properties": props}}))
        })
        .collect();
    let (page, limit) = page_and_limit(&params, 500);
    let total = items.len();
    let results: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * limit)
        .take(limit)
        .collect();
    ok(json!({
        "links": links("GET", &format!("/api/v2/businessworkspaces/{id}/relateditems")),
        "paging": paging(page, limit, total),
        "results": results,
    }))
}

fn set_relation(store: &mut Store, a: i64, b: i64, kind: &str, add: bool) -> Result<(), OtError> {
    let ws = store
        .node_mut(a)?
        .workspace
        .as_mut()
        .ok_or_else(|| not_found(a))?;
    ws.related.retain(|(r, _)| *r != b);
    if add {
        ws.related.push((b, kind.to_owned()));
    }
    Ok(())
}

/// A relation is two-way: A child of B means B parent of A. Adding an existing one is harmless.
async fn add_related(State(sim): State<Sim>, Path(id): Path<i64>, params: Params) -> Response {
    let Some(rel) = params.i64("rel_bw_id") else {
        return super::respond::ot_error(400, "Missing required parameter 'rel_bw_id'");
    };
    let kind = params
        .str("rel_type")
        .unwrap_or_else(|| "child".into())
        .to_lowercase();
    if kind != "child" && kind != "parent" {
        return super::respond::ot_error(400, format!("Invalid rel_type '{kind}'"));
    }
    let other = if kind == "child" { "parent" } else { "child" };
    let mut store = sim.store.write().expect("store poisoned");
    let result = workspace_id(&store, id)
        .and_then(|_| workspace_id(&store, rel))
        .and_then(|_| set_relation(&mut store, id, rel, &kind, true))
        .and_then(|_| set_relation(&mut store, rel, id, other, true));
    match result {
        Ok(()) => ok(json!({"links": links("POST", ""), "results": {}})),
        Err(err) => err.into_response(),
    }
}

async fn remove_related(State(sim): State<Sim>, Path((id, rel)): Path<(i64, i64)>) -> Response {
    let mut store = sim.store.write().expect("store poisoned");
    let result = workspace_id(&store, id)
        .and_then(|_| set_relation(&mut store, id, rel, "", false))
        .and_then(|_| set_relation(&mut store, rel, id, "", false));
    match result {
        Ok(()) => ok(json!({"results": {}})),
        Err(err) => err.into_response(),
    }
}

fn reference_from(params: &Params) -> Result<BoRef, OtError> {
    let field = |k: &str| {
        params
            .str(k)
            .ok_or_else(|| OtError(400, format!("Missing required parameter '{k}'")))
    };
    Ok(BoRef {
        ext_system_id: field("ext_system_id")?,
        bo_type: field("bo_type")?,
        bo_id: field("bo_id")?,
    })
}

async fn add_reference(State(sim): State<Sim>, Path(id): Path<i64>, params: Params) -> Response {
    let mut store = sim.store.write().expect("store poisoned");
    let result = workspace_id(&store, id)
        .and_then(|_| reference_from(&params))
        .and_then(|bo| {
            let ws = store.node_mut(id)?.workspace.as_mut().expect("workspace");
            if !ws.references.contains(&bo) {
                ws.references.push(bo);
            }
            Ok(())
        });
    match result {
        Ok(()) => ok(json!({"results": {}})),
        Err(err) => err.into_response(),
    }
}

async fn remove_reference(State(sim): State<Sim>, Path(id): Path<i64>, params: Params) -> Response {
    let mut store = sim.store.write().expect("store poisoned");
    let result = workspace_id(&store, id)
        .and_then(|_| reference_from(&params))
        .and_then(|bo| {
            store
                .node_mut(id)?
                .workspace
                .as_mut()
                .expect("workspace")
                .references
                .retain(|r| *r != bo);
            Ok(())
        });
    match result {
        Ok(()) => ok(json!({"results": {}})),
        Err(err) => err.into_response(),
    }
}

/// Permission names as a bit mask (the `perms` integer), in the order the spec lists them. The
/// roles answer carries only this integer (as the reference's example shows), no names.
fn perms_mask(permissions: &[String]) -> i64 {
    super::model::FULL_PERMISSIONS
        .iter()
        .enumerate()
        .filter(|(_, p)| permissions.iter().any(|q| q == *p))
        .map(|(i, _)| 1i64 << i)
        .sum()
}

fn role_json(role: &Role) -> Value {
    json!({"data": {"properties": {
        "id": role.id, "name": role.name, "description": role.description, "leader": role.leader,
        "perms": perms_mask(&role.permissions), "inherited_from_id": null,
    }}})
}

fn with_role<T>(
    store: &mut Store,
    id: i64,
    role_id: i64,
    f: impl FnOnce(&mut Role) -> T,
) -> Result<T, OtError> {
    workspace_id(store, id)?;
    let ws = store.node_mut(id)?.workspace.as_mut().expect("workspace");
    let role = ws
        .roles
        .iter_mut()
        .find(|r| r.id == role_id)
        .ok_or_else(|| OtError(404, format!("Role {role_id} could not be found.")))?;
    Ok(f(role))
}

async fn roles(State(sim): State<Sim>, Path(id): Path<i64>) -> Response {
    let store = sim.store.read().expect("store poisoned");
    if let Err(err) = workspace_id(&store, id) {
        return err.into_response();
    }
    let ws = store.nodes[&id].workspace.as_ref().expect("workspace");
    let results: Vec<Value> = ws.roles.iter().map(role_json).collect();
    ok(
        json!({"links": links("GET", &format!("/api/v2/businessworkspaces/{id}/roles")), "results": results}),
    )
}

async fn role(State(sim): State<Sim>, Path((id, role_id)): Path<(i64, i64)>) -> Response {
    let mut store = sim.store.write().expect("store poisoned");
    match with_role(&mut store, id, role_id, |r| role_json(r)) {
        Ok(role) => ok(json!({"results": role})),
        Err(err) => err.into_response(),
    }
}

/// `PUT …/roles/{role_id}` with `body={"permissions":[…],"apply_to":2,…}`; how a workspace is made
/// read-only (every role reduced to `see`, `see_contents`).
async fn update_role(
    State(sim): State<Sim>,
    Path((id, role_id)): Path<(i64, i64)>,
    params: Params,
) -> Response {
    let permissions: Option<Vec<String>> = match params.get("permissions") {
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        Some(Value::String(s)) => serde_json::from_str(s).ok(),
        _ => None,
    };
    if let Some(perms) = &permissions
        && let Some(bad) = perms
            .iter()
            .find(|p| !super::model::FULL_PERMISSIONS.contains(&p.as_str()))
    {
        return super::respond::ot_error(400, format!("Invalid permission '{bad}'"));
    }
    let mut store = sim.store.write().expect("store poisoned");
    let result = with_role(&mut store, id, role_id, |role| {
        if let Some(perms) = permissions {
            role.permissions = perms;
        }
        if let Some(name) = params.str("name") {
            role.name = name;
        }
        if let Some(description) = params.str("description") {
            role.description = description;
        }
        if let Some(leader) = params.bool("leader") {
            role.leader = leader;
        }
        if let Some(apply_to) = params.i64("apply_to") {
            role.apply_to = apply_to;
        }
        for member in params.ids("members") {
            if !role.members.contains(&member) {
                role.members.push(member);
            }
        }
        role_json(role)
    });
    match result {
        Ok(role) => ok(json!({"links": links("PUT", ""), "results": role})),
        Err(err) => err.into_response(),
    }
}

/// A role member as `V2RolesMembersGetProperties` (BW-SPEC), with `type` (0 user, 1 group).
fn member_json(store: &Store, id: i64) -> Value {
    let properties = store.member_json(id).unwrap_or_else(|| {
        let name = store.user_name(id);
        json!({"id": id, "name": name, "display_name": name, "type": 0})
    });
    json!({"data": {"properties": properties}})
}

async fn role_members(State(sim): State<Sim>, Path((id, role_id)): Path<(i64, i64)>) -> Response {
    let mut store = sim.store.write().expect("store poisoned");
    match with_role(&mut store, id, role_id, |r| r.members.clone()) {
        Ok(members) => {
            let results: Vec<Value> = members.iter().map(|m| member_json(&store, *m)).collect();
            ok(json!({"results": results}))
        }
        Err(err) => err.into_response(),
    }
}

/// `POST …/members` takes `{"id": …}` (BW-SPEC and one client) or `{"member_id": …}` (another
/// client); both are accepted.
async fn add_role_member(
    State(sim): State<Sim>,
    Path((id, role_id)): Path<(i64, i64)>,
    params: Params,
) -> Response {
    let Some(member) = params.i64("id").or_else(|| params.i64("member_id")) else {
        return super::respond::ot_error(400, "Missing required parameter 'id'");
    };
    let mut store = sim.store.write().expect("store poisoned");
    if store.member_json(member).is_none() {
        return super::respond::ot_error(400, format!("Could not get a member for {member}"));
    }
    let result = with_role(&mut store, id, role_id, |role| {
        if !role.members.contains(&member) {
            role.members.push(member);
        }
    });
    match result {
        Ok(()) => ok(json!({"results": member_json(&store, member)})),
        Err(err) => err.into_response(),
    }
}

async fn remove_role_member(
    State(sim): State<Sim>,
    Path((id, role_id, member)): Path<(i64, i64, i64)>,
) -> Response {
    let mut store = sim.store.write().expect("store poisoned");
    match with_role(&mut store, id, role_id, |role| {
        role.members.retain(|m| *m != member)
    }) {
        Ok(()) => ok(json!({"results": {}})),
        Err(err) => err.into_response(),
    }
}

async fn all_members(State(sim): State<Sim>, Path(id): Path<i64>) -> Response {
    let store = sim.store.read().expect("store poisoned");
    if let Err(err) = workspace_id(&store, id) {
        return err.into_response();
    }
    let mut members: Vec<i64> = store.nodes[&id]
        .workspace
        .as_ref()
        .expect("workspace")
        .roles
        .iter()
        .flat_map(|r| r.members.iter().copied())
        .collect();
    members.sort_unstable();
    members.dedup();
    let results: Vec<Value> = members.iter().map(|m| member_json(&store, *m)).collect();
    ok(json!({"results": results}))
}
