//! `/_sim/` control endpoints of the OpenText simulator: inspect state, faults, callback target,
//! seed configuration and workspaces, complete workflows, and act as a partner.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::Sim;
use super::model::{BoRef, OtError, TYPE_DOCUMENT, TYPE_FOLDER};
use super::respond::ok;
use super::seed::{OpentextSeed, sample_ids};
use super::workflows;
use crate::sim::blob::Blob;
use crate::sim::faults::FaultSettings;

pub(crate) fn routes() -> Router<Sim> {
    Router::new()
        .route("/state", get(state))
        .route("/requests", get(requests).delete(clear_requests))
        .route("/faults", get(get_faults).put(put_faults))
        .route("/callback", put(configure_callback))
        .route("/seed", post(seed))
        .route("/workspaces", post(create_workspace))
        .route("/workflows/{id}/complete", post(complete_workflow))
        .route("/partner/upload", post(partner_upload))
        .route("/partner/approve", post(partner_approve))
}

pub(crate) fn state_json(sim: &Sim) -> Value {
    let store = sim.store.read().expect("store poisoned");
    let nodes: Vec<Value> = store
        .nodes
        .values()
        .map(|n| {
            let versions: Vec<Value> = n
                .versions
                .iter()
                .map(|v| {
                    json!({"number": v.number, "file_name": v.file_name, "mime_type": v.mime_type,
                           "size": v.blob.size, "sha256": v.blob.sha256, "description": v.description,
                           "owner_id": v.owner_id})
                })
                .collect();
            let categories: Map<String, Value> = n
                .categories
                .iter()
                .map(|(cat, c)| (cat.to_string(), json!(c.values)))
                .collect();
            json!({
                "id": n.id, "parent_id": n.parent_id, "name": n.name, "type": n.node_type,
                "description": n.description, "owner_id": n.owner_id, "versions": versions,
                "categories": categories, "workspace": n.workspace, "rm": n.rm,
                "holds": n.holds, "finalized": n.finalized,
            })
        })
        .collect();
    json!({
        "nodes": nodes,
        "drafts": store.drafts.values().collect::<Vec<_>>(),
        "processes": store.processes.values().collect::<Vec<_>>(),
        "open_uploads": store.uploads.len(),
        "callbacks": store.callbacks,
        "callback_url": sim.callback.read().expect("callback poisoned").url,
        "faults": sim.faults.get(),
        "seed": store.seed,
    })
}

fn error(err: OtError) -> Response {
    err.into_response()
}

async fn state(State(sim): State<Sim>) -> Response {
    ok(state_json(&sim))
}

/// The request log as a JSON array; the requests in flight and their peak in headers, so that
/// callers reading the array stay as they are.
async fn requests(State(sim): State<Sim>) -> Response {
    (sim.log.in_flight_headers(), ok(json!(sim.log.snapshot()))).into_response()
}

async fn clear_requests(State(sim): State<Sim>) -> Response {
    sim.log.clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn get_faults(State(sim): State<Sim>) -> Response {
    ok(json!(sim.faults.get()))
}

async fn put_faults(
    State(sim): State<Sim>,
    axum::Json(faults): axum::Json<FaultSettings>,
) -> Response {
    sim.faults.set(faults);
    sim.apply_ticket_expiry();
    ok(json!(sim.faults.get()))
}

#[derive(Debug, Deserialize)]
struct CallbackConfig {
    url: Option<String>,
    secret: Option<String>,
}

async fn configure_callback(
    State(sim): State<Sim>,
    axum::Json(cfg): axum::Json<CallbackConfig>,
) -> Response {
    let mut target = sim.callback.write().expect("callback poisoned");
    if cfg.url.is_some() {
        target.url = cfg.url;
    }
    if cfg.secret.is_some() {
        target.secret = cfg.secret;
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Adds configuration (users, categories, workspace types, maps, RM data) to the running seed.
async fn seed(State(sim): State<Sim>, axum::Json(extra): axum::Json<OpentextSeed>) -> Response {
    let mut store = sim.store.write().expect("store poisoned");
    let seed = &mut store.seed;
    seed.users.extend(extra.users);
    seed.groups.extend(extra.groups);
    seed.oauth_clients.extend(extra.oauth_clients);
    seed.categories.extend(extra.categories);
    seed.workspace_types.extend(extra.workspace_types);
    seed.workflow_maps.extend(extra.workflow_maps);
    seed.rm_classifications.extend(extra.rm_classifications);
    seed.holds.extend(extra.holds);
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Debug, Deserialize)]
struct NewWorkspace {
    wksp_type_id: i64,
    name: String,
    parent_id: Option<i64>,
    ext_system_id: Option<String>,
    bo_type: Option<String>,
    bo_id: Option<String>,
    /// Flat or nested `{cat}_{attr}` values.
    #[serde(default)]
    categories: Map<String, Value>,
}

/// Creates a workspace directly (as if made earlier in OpenText), e.g. a customer workspace the
/// `account` flow expects to find.
async fn create_workspace(
    State(sim): State<Sim>,
    axum::Json(req): axum::Json<NewWorkspace>,
) -> Response {
    let mut store = sim.store.write().expect("store poisoned");
    let Some(wtype) = store.workspace_type(req.wksp_type_id).cloned() else {
        return error(OtError(
            400,
            format!("Unknown workspace type {}", req.wksp_type_id),
        ));
    };
    let bo = req.bo_id.map(|bo_id| BoRef {
        ext_system_id: req
            .ext_system_id
            .unwrap_or_else(|| wtype.ext_system_id.clone()),
        bo_type: req.bo_type.unwrap_or_else(|| wtype.bo_type.clone()),
        bo_id,
    });
    let parent = req.parent_id.unwrap_or(store.seed.enterprise_folder_id);
    let owner = store.user_id_or_admin(None);
    let result = store
        .create_workspace(&wtype, parent, &req.name, bo, owner)
        .and_then(|id| store.apply_category_values(id, &req.categories).map(|_| id));
    match result {
        Ok(id) => ok(json!({"id": id})),
        Err(err) => error(err),
    }
}

#[derive(Debug, Deserialize)]
struct CompleteWorkflow {
    decision: String,
    #[serde(default)]
    comment: String,
    #[serde(default = "default_approver")]
    approver: String,
}

fn default_approver() -> String {
    "jdoe".into()
}

/// Completes a workflow with a decision and sends the signed callback (if a target is set).
async fn complete_workflow(
    State(sim): State<Sim>,
    Path(id): Path<i64>,
    axum::Json(req): axum::Json<CompleteWorkflow>,
) -> Response {
    match workflows::complete(&sim, id, &req.decision, &req.comment, &req.approver).await {
        Ok(callback) => ok(json!({"process_id": id, "status": "completed", "callback": callback})),
        Err(err) => error(err),
    }
}

#[derive(Debug, Deserialize)]
struct PartnerUpload {
    workspace_id: i64,
    #[serde(default = "default_partner_folder")]
    folder: String,
    name: String,
    content: Option<String>,
    content_base64: Option<String>,
    #[serde(default = "default_mime")]
    mime_type: String,
    /// The partner user who uploads (login); their workspace permissions apply as they do in
    /// the API.
    #[serde(default = "default_partner_user")]
    user: String,
}

fn default_partner_user() -> String {
    "partner".into()
}

fn default_partner_folder() -> String {
    sample_ids::PARTNER_UPLOAD_FOLDER.into()
}

fn default_mime() -> String {
    "application/octet-stream".into()
}

/// Uploads a document as a partner user into a workspace folder (a new version when the name
/// exists). Refused, as `POST /api/v2/nodes` refuses it, unless the user (or a group of theirs)
/// holds a workspace role with `add_items` (a new document) or `modify` (a new version).
async fn partner_upload(
    State(sim): State<Sim>,
    axum::Json(req): axum::Json<PartnerUpload>,
) -> Response {
    let bytes = match (&req.content_base64, &req.content) {
        (Some(b64), _) => match STANDARD.decode(b64) {
            Ok(bytes) => bytes,
            Err(err) => return error(OtError(400, format!("content_base64: {err}"))),
        },
        (None, Some(text)) => text.clone().into_bytes(),
        (None, None) => return error(OtError(400, "content or content_base64 is required".into())),
    };
    let mut store = sim.store.write().expect("store poisoned");
    let result = (|| {
        store
            .node(req.workspace_id)?
            .workspace
            .as_ref()
            .ok_or_else(|| {
                OtError(
                    400,
                    format!("{} is not a business workspace", req.workspace_id),
                )
            })?;
        let partner = store
            .seed
            .users
            .iter()
            .find(|u| u.name == req.user)
            .map(|u| u.id)
            .ok_or_else(|| OtError(400, format!("Unknown user '{}'", req.user)))?;
        let refuse = |store: &super::model::Store, node: i64, permission: &str| {
            if store.permitted(partner, node, permission) {
                Ok(())
            } else {
                Err(super::model::not_accessible())
            }
        };
        let folder = match store.child_named(req.workspace_id, &req.folder) {
            Some(f) => f.id,
            None => {
                refuse(&store, req.workspace_id, "add_items")?;
                store.create_node(req.workspace_id, &req.folder, TYPE_FOLDER, partner)?
            }
        };
        let doc = match store.child_named(folder, &req.name) {
            Some(d) => {
                refuse(&store, d.id, "modify")?;
                d.id
            }
            None => {
                refuse(&store, folder, "add_items")?;
                store.create_node(folder, &req.name, TYPE_DOCUMENT, partner)?
            }
        };
        let blob = Blob::from_bytes(bytes.into());
        let version = store.add_version(
            doc,
            &req.name,
            &req.mime_type,
            blob,
            "partner upload",
            partner,
        )?;
        Ok((doc, version))
    })();
    match result {
        Ok((node_id, version)) => ok(json!({"node_id": node_id, "version": version})),
        Err(err) => error(err),
    }
}

#[derive(Debug, Deserialize)]
struct PartnerApprove {
    node_id: i64,
}

/// Marks a partner-uploaded document approved internally and sends `partner_document.approved`.
async fn partner_approve(
    State(sim): State<Sim>,
    axum::Json(req): axum::Json<PartnerApprove>,
) -> Response {
    let body = {
        let store = sim.store.read().expect("store poisoned");
        let node = match store.node(req.node_id) {
            Ok(n) => n,
            Err(err) => return error(err),
        };
        let Some(latest) = node.latest() else {
            return error(OtError(400, format!("{} is not a document", req.node_id)));
        };
        let mut body = workflows::callback_envelope(
            &store,
            "partner_document.approved",
            store.workspace_of(node.id),
        );
        body["document"] = json!({"node_id": node.id, "version": latest.number, "name": node.name});
        body
    };
    match sim.send_callback(body).await {
        Ok(delivery) => ok(json!({"callback": delivery})),
        Err(msg) => error(OtError(400, msg)),
    }
}
