//! Records management (RM-SPEC): RM classification of nodes, record details, finalizing records,
//! and holds on nodes.

use axum::Router;
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use chrono::Utc;
use serde_json::{Map, Value, json};

use super::Sim;
use super::auth::Caller;
use super::model::{OtError, RmData, Store, not_accessible};
use super::params::Params;
use super::respond::{ok, ot_error};

pub(crate) fn routes() -> Router<Sim> {
    Router::new()
        .route(
            "/api/v1/nodes/{id}/rmclassifications",
            get(read_classification)
                .post(apply_classification)
                .put(update_record_details),
        )
        .route(
            "/api/v1/nodes/{id}/rmclassifications/{class_id}",
            delete(remove_classification),
        )
        .route(
            "/api/v1/rmclassifications/finalizerecords",
            put(finalize_records),
        )
        .route("/api/v1/rmclassifications/applyhold", post(apply_hold_bulk))
        .route("/api/v1/nodes/{id}/holds", get(node_holds).post(apply_hold))
        .route("/api/v1/nodes/{id}/holds/{hold_id}", delete(remove_hold))
        .route("/api/v1/holds", get(list_holds_v1))
        .route("/api/v2/holds", get(list_holds_v2))
}

/// Record-detail fields a client may set, as RM-SPEC lists them (`file_status` is what one client
/// library sends for `status`; both are kept).
const DETAIL_FIELDS: [&str; 14] = [
    "official",
    "status",
    "file_status",
    "status_date",
    "record_date",
    "rsi",
    "essential",
    "storage",
    "accession",
    "subject",
    "originator",
    "addressee",
    "sent_to",
    "establishment",
];

fn detail_fields(params: &Params) -> Map<String, Value> {
    DETAIL_FIELDS
        .iter()
        .filter_map(|k| params.get(k).map(|v| ((*k).to_owned(), v.clone())))
        .collect()
}

/// Classifies one node (and its sub-items when asked); shared with workspace creation.
pub(crate) fn classify(
    store: &mut Store,
    id: i64,
    class_id: i64,
    fields: Map<String, Value>,
    sub_items: bool,
    _caller: &Caller,
) -> Result<(), OtError> {
    if !store
        .seed
        .rm_classifications
        .iter()
        .any(|c| c.id == class_id)
    {
        return Err(OtError(
            400,
            format!("RM Classification {class_id} does not exist"),
        ));
    }
    let mut targets = vec![id];
    if sub_items {
        targets.extend(store.descendants(id));
    }
    for target in targets {
        let node = store.node_mut(target)?;
        let revision = node.rm.as_ref().map(|r| r.revision).unwrap_or(0) + 1;
        let mut data = RmData {
            class_id,
            fields: node.rm.take().map(|r| r.fields).unwrap_or_default(),
            revision,
        };
        data.fields.extend(fields.clone());
        data.fields
            .entry("record_date".to_owned())
            .or_insert_with(|| json!(Utc::now().format("%Y-%m-%d").to_string()));
        data.fields
            .entry("status".to_owned())
            .or_insert_with(|| json!("ACTIVE"));
        node.rm = Some(data);
    }
    Ok(())
}

fn check_token(store: &Store, id: i64, params: &Params, required: bool) -> Result<(), OtError> {
    let node = store.node(id)?;
    match params.str("rm_metadataToken") {
        Some(token) if token != Store::rm_token(node) => Err(OtError(
            409,
            "Could not update metadata (edit conflict).".into(),
        )),
        None if required => Err(OtError(
            400,
            "Missing required parameter 'rm_metadataToken'".into(),
        )),
        _ => Ok(()),
    }
}

async fn read_classification(State(sim): State<Sim>, Path(id): Path<i64>) -> Response {
    let store = sim.store.read().expect("store poisoned");
    let Ok(node) = store.node(id) else {
        return not_accessible().into_response();
    };
    let data: Vec<Value> = node
        .rm
        .iter()
        .map(|rm| {
            let name = store
                .seed
                .rm_classifications
                .iter()
                .find(|c| c.id == rm.class_id)
                .map(|c| c.name.clone());
            let mut item = json!({
                "rmclassification_id": rm.class_id, "name": name, "file_number": format!("FN-{}", rm.class_id),
                "finalized": node.finalized,
            });
            for (k, v) in &rm.fields {
                item[k] = v.clone();
            }
            if item.get("file_status").is_none() {
                item["file_status"] = item["status"].clone();
            }
            item
        })
        .collect();
    ok(json!({
        "rm_metadataToken": Store::rm_token(node),
        "canFinalize": node.rm.is_some() && !node.finalized,
        "canRMClassify": !node.finalized,
        "canBeUnclassified": node.rm.is_some() && !node.finalized,
        "canRemoveClass": node.rm.is_some() && !node.finalized,
        "classVolumeID": 2050,
        "data": data,
        "definitions": {},
    }))
}

/// `POST …/rmclassifications` `class_id` (+ `rm_metadataToken`, required by RM-SPEC; one client
/// library sends it only when changing an existing classification, so it is required here only then).
async fn apply_classification(
    State(sim): State<Sim>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
    params: Params,
) -> Response {
    let Some(class_id) = params.i64("class_id") else {
        return ot_error(400, "Missing required parameter 'class_id'");
    };
    let mut store = sim.store.write().expect("store poisoned");
    let result = (|| {
        let already = store.node(id)?.rm.is_some();
        check_token(&store, id, &params, already)?;
        if store.node(id)?.finalized {
            return Err(OtError(400, "The item is a finalized record.".into()));
        }
        let sub_items = params.bool("apply_to_sub_items").unwrap_or(false);
        classify(
            &mut store,
            id,
            class_id,
            detail_fields(&params),
            sub_items,
            &caller,
        )
    })();
    match result {
        Ok(()) => ok(json!({"results": {"ok": true}})),
        Err(err) => err.into_response(),
    }
}

/// `PUT …/rmclassifications`: record details (`status`/`file_status`, `official`, `rsi`, …).
async fn update_record_details(
    State(sim): State<Sim>,
    Path(id): Path<i64>,
    params: Params,
) -> Response {
    let mut store = sim.store.write().expect("store poisoned");
    let result = (|| -> Result<(), OtError> {
        check_token(&store, id, &params, true)?;
        let node = store.node_mut(id)?;
        let rm = node
            .rm
            .as_mut()
            .ok_or_else(|| OtError(400, "The item has no RM Classification.".into()))?;
        rm.fields.extend(detail_fields(&params));
        rm.revision += 1;
        Ok(())
    })();
    match result {
        Ok(()) => ok(json!({"results": {"ok": true}})),
        Err(err) => err.into_response(),
    }
}

async fn remove_classification(
    State(sim): State<Sim>,
    Path((id, class_id)): Path<(i64, i64)>,
) -> Response {
    let mut store = sim.store.write().expect("store poisoned");
    match store.node_mut(id) {
        Ok(node) if node.finalized => ot_error(400, "The item is a finalized record."),
        Ok(node) if node.rm.as_ref().is_some_and(|r| r.class_id == class_id) => {
            node.rm = None;
            ok(json!({"results": {"ok": true}}))
        }
        Ok(_) => ot_error(
            400,
            format!("The item does not have RM Classification {class_id}"),
        ),
        Err(err) => err.into_response(),
    }
}

/// `PUT /api/v1/rmclassifications/finalizerecords` `ids=[…]` (also `"1,2"` or repeated fields).
/// RM-SPEC answers a missing id list with 404.
async fn finalize_records(State(sim): State<Sim>, params: Params) -> Response {
    let ids = params.ids("ids");
    if ids.is_empty() {
        return ot_error(404, "ID is not an integer or is missing");
    }
    let mut store = sim.store.write().expect("store poisoned");
    if ids.iter().any(|id| !store.nodes.contains_key(id)) {
        return not_accessible().into_response();
    }
    if let Some(id) = ids.iter().find(|id| store.nodes[id].rm.is_none()) {
        return ot_error(
            400,
            format!("Item {id} has no RM Classification and cannot be finalized."),
        );
    }
    for id in &ids {
        store.node_mut(*id).expect("checked").finalized = true;
    }
    ok(json!({"results": {"ok": true, "ids": ids}}))
}

fn hold_json(store: &Store, node_id: i64, hold_id: i64) -> Value {
    let hold = store.seed.holds.iter().find(|h| h.id == hold_id);
    let node = &store.nodes[&node_id];
    json!({
        "id": node_id, "name": node.name, "subtype": node.node_type, "parent_id": node.parent_id,
        "hold_id": hold_id, "hold_name": hold.map(|h| h.name.clone()), "hold_type": hold.map(|h| h.hold_type.clone()),
        "hold_appliedmethod": "Direct", "active": true, "removable": true,
        "date_applied": Utc::now().format("%Y-%m-%d").to_string(),
    })
}

async fn node_holds(State(sim): State<Sim>, Path(id): Path<i64>) -> Response {
    let store = sim.store.read().expect("store poisoned");
    let Ok(node) = store.node(id) else {
        return ot_error(400, "Accessibility error. Not enough permissions");
    };
    let data: Vec<Value> = node
        .holds
        .iter()
        .map(|h| hold_json(&store, id, *h))
        .collect();
    ok(json!({"data": data, "definitions": {}}))
}

fn put_hold(store: &mut Store, id: i64, hold_id: i64) -> Result<(), OtError> {
    if !store.seed.holds.iter().any(|h| h.id == hold_id) {
        return Err(OtError(400, format!("Hold {hold_id} does not exist")));
    }
    store.node_mut(id)?.holds.insert(hold_id);
    Ok(())
}

/// `POST /api/v1/nodes/{id}/holds`: RM-SPEC puts `hold_id` in the query; client libraries send it
/// as `body={"hold_id":…}` or a form field. All are accepted (they are merged into one map).
async fn apply_hold(State(sim): State<Sim>, Path(id): Path<i64>, params: Params) -> Response {
    let Some(hold_id) = params.i64("hold_id") else {
        return ot_error(400, "Missing LLPARAMS_LIST");
    };
    let mut store = sim.store.write().expect("store poisoned");
    match put_hold(&mut store, id, hold_id) {
        Ok(()) => ok(json!({"results": {"ok": true}})),
        Err(err) => err.into_response(),
    }
}

/// `POST /api/v1/rmclassifications/applyhold` `{holdID, ids[]}`.
async fn apply_hold_bulk(State(sim): State<Sim>, params: Params) -> Response {
    let Some(hold_id) = params.i64("holdID").or_else(|| params.i64("hold_id")) else {
        return ot_error(400, "Missing LLPARAMS_LIST");
    };
    let ids = params.ids("ids");
    let mut store = sim.store.write().expect("store poisoned");
    for id in ids {
        if let Err(err) = put_hold(&mut store, id, hold_id) {
            return err.into_response();
        }
    }
    ok(json!({"results": {"ok": true}}))
}

async fn remove_hold(State(sim): State<Sim>, Path((id, hold_id)): Path<(i64, i64)>) -> Response {
    let mut store = sim.store.write().expect("store poisoned");
    match store.node_mut(id) {
        Ok(node) => {
            if node.holds.remove(&hold_id) {
                ok(json!({"results": {"ok": true}}))
            } else {
                ot_error(400, "Object does not have this Hold")
            }
        }
        Err(err) => err.into_response(),
    }
}

fn holds_list(store: &Store) -> Vec<Value> {
    store
        .seed
        .holds
        .iter()
        .map(|h| {
            json!({"HoldID": h.id, "HoldName": h.name, "HoldType": h.hold_type, "ActiveHold": true,
                   "HoldComment": "", "DateApplied": null, "DateToRemove": null, "AlternateHoldID": null, "ParentID": null})
        })
        .collect()
}

async fn list_holds_v1(State(sim): State<Sim>) -> Response {
    let store = sim.store.read().expect("store poisoned");
    ok(json!({"data": holds_list(&store)}))
}

/// `GET /api/v2/holds`: success is signalled by `results.ok`.
async fn list_holds_v2(State(sim): State<Sim>) -> Response {
    let store = sim.store.read().expect("store poisoned");
    ok(json!({"results": {"ok": true, "data": {"holds": holds_list(&store)}}}))
}
