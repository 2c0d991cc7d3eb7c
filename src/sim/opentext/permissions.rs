//! A node's permissions (Content Server spec, `permissions` tag): the owner's and the Assigned
//! Access entries. Inside a business workspace a workspace role's id is a right like a user's or
//! a group's, which is how a role gets more on one folder than on the workspace.
//!
//! The list answer has the shape OpenText's own clients read, `results[].data.permissions` as
//! one `{permissions, right_id, type}` object per entry (the spec's schema nests `data` in an
//! array; the bridge reads both).

use axum::Router;
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::Sim;
use super::auth::Caller;
use super::model::{AssignedAccess, MEMBER_PERMISSIONS, OtError, Store};
use super::params::Params;
use super::respond::{links, ok};

/// The permission names the spec allows on a node: a member's, and `edit_permissions`.
fn node_permissions() -> impl Iterator<Item = &'static str> {
    MEMBER_PERMISSIONS.into_iter().chain(["edit_permissions"])
}

pub(crate) fn routes() -> Router<Sim> {
    Router::new()
        .route("/api/v2/nodes/{id}/permissions", get(list))
        .route("/api/v2/nodes/{id}/permissions/custom", post(add))
        .route(
            "/api/v2/nodes/{id}/permissions/custom/{right_id}",
            get(read).put(update),
        )
}

fn entry_json(kind: &str, right_id: i64, permissions: &[String]) -> Value {
    json!({"data": {"permissions": {
        "permissions": permissions, "right_id": right_id, "type": kind,
    }}})
}

/// `GET /api/v2/nodes/{id}/permissions`: the owner (full permissions), then Assigned Access.
async fn list(
    State(sim): State<Sim>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
) -> Response {
    let store = sim.store.read().expect("store poisoned");
    let result = visible(&store, &caller, id).map(|node| {
        let owner: Vec<String> = node_permissions().map(str::to_owned).collect();
        let mut results = vec![entry_json("owner", node.owner_id, &owner)];
        results.extend(
            node.acl
                .iter()
                .map(|a| entry_json("custom", a.right_id, &a.permissions)),
        );
        json!({"links": links("GET", ""), "results": results})
    });
    match result {
        Ok(body) => ok(body),
        Err(err) => err.into_response(),
    }
}

/// `GET /api/v2/nodes/{id}/permissions/custom/{right_id}`.
async fn read(
    State(sim): State<Sim>,
    Extension(caller): Extension<Caller>,
    Path((id, right_id)): Path<(i64, i64)>,
) -> Response {
    let store = sim.store.read().expect("store poisoned");
    let result = visible(&store, &caller, id).and_then(|node| {
        node.acl
            .iter()
            .find(|a| a.right_id == right_id)
            .map(|a| entry_json("custom", a.right_id, &a.permissions))
            .ok_or_else(super::model::not_accessible)
    });
    match result {
        Ok(entry) => ok(json!({"links": links("GET", ""), "results": entry})),
        Err(err) => err.into_response(),
    }
}

/// `POST /api/v2/nodes/{id}/permissions/custom` with `body={"permissions":[…],"right_id":…,
/// "apply_to":…}`.
async fn add(
    State(sim): State<Sim>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
    params: Params,
) -> Response {
    let mut store = sim.store.write().expect("store poisoned");
    let result: Result<Value, OtError> = (|| {
        let right_id = params
            .i64("right_id")
            .ok_or_else(|| OtError(400, "Missing required parameter 'right_id'".into()))?;
        let entry = AssignedAccess {
            right_id,
            permissions: permissions(&params)?,
            apply_to: apply_to(&store, id, &params)?,
        };
        editable(&store, &caller, id)?;
        let node = store.node_mut(id)?;
        if node.acl.iter().any(|a| a.right_id == right_id) {
            return Err(OtError(
                400,
                format!("{right_id} already has Assigned Access on this item"),
            ));
        }
        let answer = entry_json("custom", right_id, &entry.permissions);
        node.acl.push(entry);
        Ok(answer)
    })();
    match result {
        Ok(entry) => ok(json!({"links": links("POST", ""), "results": entry})),
        Err(err) => err.into_response(),
    }
}

/// `PUT /api/v2/nodes/{id}/permissions/custom/{right_id}` with `body={"permissions":[…],
/// "apply_to":…}`.
async fn update(
    State(sim): State<Sim>,
    Extension(caller): Extension<Caller>,
    Path((id, right_id)): Path<(i64, i64)>,
    params: Params,
) -> Response {
    let mut store = sim.store.write().expect("store poisoned");
    let result: Result<Value, OtError> = (|| {
        let permissions = permissions(&params)?;
        let apply_to = apply_to(&store, id, &params)?;
        editable(&store, &caller, id)?;
        let entry = store
            .node_mut(id)?
            .acl
            .iter_mut()
            .find(|a| a.right_id == right_id)
            .ok_or_else(super::model::not_accessible)?;
        entry.permissions = permissions;
        entry.apply_to = apply_to;
        Ok(entry_json("custom", right_id, &entry.permissions))
    })();
    match result {
        Ok(entry) => ok(json!({"links": links("PUT", ""), "results": entry})),
        Err(err) => err.into_response(),
    }
}

/// The node, when the caller may see it.
fn visible<'s>(
    store: &'s Store,
    caller: &Caller,
    id: i64,
) -> Result<&'s super::model::Node, OtError> {
    let node = store.node(id)?;
    if store.permitted(caller.user_id, id, "see") {
        Ok(node)
    } else {
        Err(super::model::not_accessible())
    }
}

fn editable(store: &Store, caller: &Caller, id: i64) -> Result<(), OtError> {
    visible(store, caller, id)?;
    if store.permitted(caller.user_id, id, "edit_permissions") {
        Ok(())
    } else {
        Err(super::model::not_accessible())
    }
}

fn permissions(params: &Params) -> Result<Vec<String>, OtError> {
    let names: Vec<String> = match params.get("permissions") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => serde_json::from_str(s)
            .map_err(|_| OtError(400, "Invalid value for parameter 'permissions'".into()))?,
        _ => {
            return Err(OtError(
                400,
                "Missing required parameter 'permissions'".into(),
            ));
        }
    };
    match names
        .iter()
        .find(|p| !node_permissions().any(|known| known == p.as_str()))
    {
        Some(bad) => Err(OtError(400, format!("Invalid permission '{bad}'"))),
        None => Ok(names),
    }
}

/// `apply_to`, 0 when not given; anything but 0 on a document is refused, as the spec says.
fn apply_to(store: &Store, id: i64, params: &Params) -> Result<i64, OtError> {
    let apply_to = params.i64("apply_to").unwrap_or(0);
    if !(0..=3).contains(&apply_to) {
        return Err(OtError(
            400,
            format!("Invalid value {apply_to} for 'apply_to'"),
        ));
    }
    if apply_to != 0 && !store.node(id)?.is_container() {
        return Err(OtError(
            400,
            "apply_to can only be used on a container".into(),
        ));
    }
    Ok(apply_to)
}
