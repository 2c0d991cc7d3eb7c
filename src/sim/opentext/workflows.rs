//! Workflows: draft process → form update → initiate, status polling, taken actions, task actions;
//! completion with a decision (by a task action or the control endpoint) and the signed callback.

use axum::Router;
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use chrono::Utc;
use serde_json::{Value, json};

use super::Sim;
use super::auth::Caller;
use super::model::{Decision, Draft, OtError, Process, Store, format_date};
use super::params::Params;
use super::respond::{links, ok, ot_error};

pub(crate) fn routes() -> Router<Sim> {
    Router::new()
        .route("/api/v2/draftprocesses", post(create_draft))
        .route("/api/v2/draftprocesses/{id}", put(update_draft))
        .route("/api/v1/forms/draftprocesses/update", get(draft_form))
        .route("/api/v1/forms/draftprocesses", get(draft_form))
        .route("/api/v2/workflows/status", get(status_list))
        .route("/api/v2/workflows/status/active", get(active_list))
        .route("/api/v2/workflows/status/processes/{pid}", get(status))
        .route(
            "/api/v2/processes/{pid}/subprocesses/{sid}/activities",
            get(activities),
        )
        .route(
            "/api/v2/processes/{pid}/subprocesses/{sid}/tasks/{tid}",
            put(task_action),
        )
}

/// The one step of every simulated map: an approval task.
const APPROVAL_TASK_ID: i64 = 1;
const APPROVAL_TASK: &str = "Approve";

/// `POST /api/v2/draftprocesses` `body={"workflow_id":…,"doc_ids":"1,2","AttachDocuments":"TRUE"}`.
async fn create_draft(
    State(sim): State<Sim>,
    Extension(caller): Extension<Caller>,
    params: Params,
) -> Response {
    let Some(workflow_id) = params.i64("workflow_id") else {
        return ot_error(400, "Missing required parameter 'workflow_id'");
    };
    let doc_ids = params.ids("doc_ids");
    let mut store = sim.store.write().expect("store poisoned");
    if !store.seed.workflow_maps.iter().any(|m| m.id == workflow_id) {
        return ot_error(400, "Could not Loadmap, Workflow Map has no versions");
    }
    if doc_ids.iter().any(|d| !store.nodes.contains_key(d)) {
        return ot_error(400, "Error getting node from ID");
    }
    let id = store.next_id();
    store.drafts.insert(
        id,
        Draft {
            id,
            workflow_id,
            doc_ids,
            values: Default::default(),
            initiator_id: caller.user_id,
        },
    );
    ok(json!({
        "links": links("POST", "/api/v2/draftprocesses"),
        "results": {"draftprocess_id": id, "workflow_type": "1_1"},
    }))
}

async fn draft_form(State(sim): State<Sim>, params: Params) -> Response {
    let store = sim.store.read().expect("store poisoned");
    let Some(draft) = params
        .i64("draftprocess_id")
        .and_then(|id| store.drafts.get(&id))
    else {
        return ot_error(400, "Draft process not found");
    };
    let title = map_name(&store, draft.workflow_id);
    ok(json!({
        "data": {
            "actions": [{"key": "Initiate", "label": "Initiate"}],
            "data_packages": [], "instructions": "", "process_id": draft.id, "title": title,
            "authentication": false, "comments_on": true,
        },
        "forms": [{"data": draft.values, "options": {}, "schema": {"properties": {
            "WorkflowForm_Title": {"type": "string"}, "WorkflowForm_WorkflowDueDate": {"type": "string"},
        }}}],
    }))
}

fn map_name(store: &Store, workflow_id: i64) -> String {
    store
        .seed
        .workflow_maps
        .iter()
        .find(|m| m.id == workflow_id)
        .map(|m| m.name.clone())
        .unwrap_or_default()
}

/// `PUT /api/v2/draftprocesses/{id}` with `action=formUpdate` (+`values`) or `action=Initiate`.
async fn update_draft(
    State(sim): State<Sim>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
    params: Params,
) -> Response {
    let mut store = sim.store.write().expect("store poisoned");
    if !store.drafts.contains_key(&id) {
        return ot_error(400, "Draft process not found");
    }
    match params.str("action").as_deref() {
        Some("formUpdate") => {
            let values = params.object("values").unwrap_or_default();
            let draft = store.drafts.get_mut(&id).expect("checked");
            draft.values.extend(values);
            ok(json!({"links": links("PUT", ""), "results": {}}))
        }
        Some("Initiate") => {
            let draft = store.drafts.remove(&id).expect("checked");
            let name = draft
                .values
                .get("WorkflowForm_Title")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| map_name(&store, draft.workflow_id));
            let workspace_id = draft.doc_ids.iter().find_map(|d| store.workspace_of(*d));
            let pid = store.next_id();
            store.processes.insert(
                pid,
                Process {
                    id: pid,
                    workflow_id: draft.workflow_id,
                    name: name.clone(),
                    doc_ids: draft.doc_ids,
                    workspace_id,
                    values: draft.values,
                    initiator_id: caller.user_id,
                    initiated_at: Utc::now(),
                    status: "ontime".into(),
                    decision: None,
                },
            );
            ok(json!({
                "links": links("PUT", ""),
                "results": {"custom_message": format!("{name} was initiated successfully."),
                            "process_id": pid, "WorkID": null, "WRID": null},
            }))
        }
        Some(other) => ot_error(400, format!("Unsupported action '{other}'")),
        None => ot_error(400, "Missing required parameter 'action'"),
    }
}

fn step(store: &Store, process: &Process, status: &str) -> Value {
    let assignee = match &process.decision {
        Some(d) => (d.approver_id, d.approver.clone()),
        None => (
            super::seed::sample_ids::APPROVER_USER_ID,
            store.user_name(super::seed::sample_ids::APPROVER_USER_ID),
        ),
    };
    json!({
        "process_id": process.id, "subprocess_id": process.id, "task_id": APPROVAL_TASK_ID,
        "task_name": APPROVAL_TASK, "task_status": status,
        "task_start_date": format_date(process.initiated_at), "task_due_date": null,
        "task_assignees": {"assignee": [{"userId": assignee.0, "loginName": assignee.1}],
                           "assigneeCount": 1, "currentAssignee": assignee.1},
    })
}

fn status_json(store: &Store, process: &Process) -> Value {
    let (completed, current) = if process.decision.is_some() {
        (vec![step(store, process, "completed")], vec![])
    } else {
        (vec![], vec![step(store, process, "ontime")])
    };
    let initiator = store.user_name(process.initiator_id);
    let data_packages: Vec<Value> = process
        .doc_ids
        .iter()
        .map(|d| json!({"TYPE": 1, "SUBTYPE": 1, "USERDATA": d, "DESCRIPTION": "Attachments"}))
        .collect();
    json!({
        "wf_details": {
            "status": process.status, "wf_name": process.name,
            "date_initiated": format_date(process.initiated_at), "due_date": null,
            "initiator": {"userId": process.initiator_id, "loginName": initiator},
            "work_workID": process.id,
        },
        "step_list": {"completed": completed, "current": current, "next": []},
        "data_packages": data_packages,
        "attachments": {"attachment_folder_id": process.workspace_id},
        "permissions": {"Archive": true, "ChangeAttr": true, "Delete": true, "SeeDetail": true, "Stop": true, "Suspend": true},
        "wf_attributes": process.values,
    })
}

/// `GET /api/v2/workflows/status/processes/{pid}`: `results.wf_details.status` is `ontime` until
/// decided, then `completed`.
async fn status(State(sim): State<Sim>, Path(pid): Path<i64>) -> Response {
    let store = sim.store.read().expect("store poisoned");
    match store.processes.get(&pid) {
        Some(process) => {
            ok(json!({"links": links("GET", ""), "results": status_json(&store, process)}))
        }
        None => ot_error(400, format!("Workflow process {pid} not found")),
    }
}

/// The 400 for an unknown `Kind`. `Initiated` (the default) lists what the caller started,
/// `Managed` what it manages (the simulator's manager is the initiator), `Both` either.
fn bad_kind(params: &Params) -> Option<Response> {
    match params.str("Kind").as_deref() {
        None | Some("Initiated" | "Managed" | "Both") => None,
        Some(other) => Some(ot_error(400, format!("Invalid value '{other}' for Kind"))),
    }
}

/// `GET /api/v2/workflows/status?wstatus=…&Kind=…`: processes the caller initiated.
async fn status_list(
    State(sim): State<Sim>,
    Extension(caller): Extension<Caller>,
    params: Params,
) -> Response {
    if let Some(bad) = bad_kind(&params) {
        return bad;
    }
    let wanted = params.str("wstatus");
    let store = sim.store.read().expect("store poisoned");
    let results: Vec<Value> = store
        .processes
        .values()
        .filter(|p| p.initiator_id == caller.user_id)
        .filter(|p| wanted.as_ref().is_none_or(|w| &p.status == w))
        .map(|p| {
            json!({"data": {"wfstatus": {
                "process_id": p.id, "subprocess_id": p.id, "task_id": APPROVAL_TASK_ID,
                "status_key": p.status, "step_name": APPROVAL_TASK, "wf_name": p.name,
                "date_initiated": format_date(p.initiated_at), "due_date": null, "assignee": [],
            }}})
        })
        .collect();
    ok(json!({"links": links("GET", ""), "results": results}))
}

/// `GET /api/v2/workflows/status/active?mapObjId=…&search_name=…&businessWorkspaceID=…`: running
/// workflows the caller initiated, filtered by map, by a case-insensitive part of the title and
/// by the business workspace their attachments are in; one `workflow_active_properties` object
/// per workflow.
async fn active_list(
    State(sim): State<Sim>,
    Extension(caller): Extension<Caller>,
    params: Params,
) -> Response {
    if let Some(bad) = bad_kind(&params) {
        return bad;
    }
    let map = params.i64("mapObjId");
    let name = params.str("search_name").map(|n| n.to_lowercase());
    let workspace = params.i64("businessWorkspaceID");
    let store = sim.store.read().expect("store poisoned");
    let results: Vec<Value> = store
        .processes
        .values()
        .filter(|p| p.initiator_id == caller.user_id && p.decision.is_none())
        .filter(|p| map.is_none_or(|m| p.workflow_id == m))
        .filter(|p| {
            name.as_ref()
                .is_none_or(|n| p.name.to_lowercase().contains(n))
        })
        .filter(|p| workspace.is_none_or(|w| p.workspace_id == Some(w)))
        .map(|p| {
            let initiated = format_date(p.initiated_at);
            json!({
                "Work_WorkID": p.id, "Work_Status": 1, "Work_OwnerID": p.initiator_id,
                "Work_ManagerID": p.initiator_id, "Work_DateDue_Max": null, "Work_OwnerPerms": {},
                "SubWork_SubWorkID": p.id, "SubWork_DateInitiated": initiated,
                "SubWork_DateDue_Max": null, "Map_MapID": p.workflow_id,
                "Map_MapObjID": p.workflow_id, "SubWorkTask_DateMilestone": null,
                "SubWorkTask_DateDue_Max": null, "SubWork_UserData": "",
                "SubWork_ReturnSubWorkID": p.id, "SubWork_Title": p.name,
                "SubWork_Status": 1, "comments_on": 1,
            })
        })
        .collect();
    ok(json!({"links": links("GET", ""), "results": results}))
}

/// `GET /api/v2/processes/{pid}/subprocesses/{sid}/activities`: the taken task actions.
async fn activities(State(sim): State<Sim>, Path((pid, _sid)): Path<(i64, i64)>) -> Response {
    let store = sim.store.read().expect("store poisoned");
    let Some(process) = store.processes.get(&pid) else {
        return ot_error(400, format!("Workflow process {pid} not found"));
    };
    let data: Vec<Value> = process
        .decision
        .iter()
        .map(|d| {
            let action = if d.decision == "approved" { "Approve" } else { "Reject" };
            json!({"action": action, "comment": d.comment, "date": format_date(d.decided_at),
                   "user_id": d.approver_id,
                   "action_properties": {"event": "task_action", "label": action, "user_id": d.approver_id}})
        })
        .collect();
    ok(json!({"results": {"data": data}}))
}

/// `PUT …/tasks/{tid}` `body={"custom_action":"Approve"|"Reject","comment":…}` as the assignee.
/// Sending `action` together with `custom_action` is a 400, as on Content Server.
async fn task_action(
    State(sim): State<Sim>,
    Extension(caller): Extension<Caller>,
    Path((pid, _sid, _tid)): Path<(i64, i64, i64)>,
    params: Params,
) -> Response {
    if params.get("action").is_some() && params.get("custom_action").is_some() {
        return ot_error(400, "Specify either action or custom_action, not both");
    }
    let decision = match params.str("custom_action").as_deref() {
        Some("Approve") => "approved",
        Some("Reject") => "rejected",
        _ => return ot_error(400, "Unsupported task action"),
    };
    let comment = params.str("comment").unwrap_or_default();
    match complete(&sim, pid, decision, &comment, &caller.name).await {
        Ok(_) => ok(json!({"results": {}})),
        Err(err) => err.into_response(),
    }
}

/// Completes a workflow with a decision and sends the signed `workflow.decision` callback.
/// Returns the callback outcome (absent when no callback target is configured).
pub(crate) async fn complete(
    sim: &Sim,
    pid: i64,
    decision: &str,
    comment: &str,
    approver: &str,
) -> Result<Option<crate::sim::WebhookDelivery>, OtError> {
    if decision != "approved" && decision != "rejected" {
        return Err(OtError(
            400,
            format!("decision must be approved or rejected, not '{decision}'"),
        ));
    }
    let body = {
        let mut store = sim.store.write().expect("store poisoned");
        let approver_id = store.user_id_or_admin(Some(approver));
        let process = store
            .processes
            .get_mut(&pid)
            .ok_or_else(|| OtError(400, format!("Workflow process {pid} not found")))?;
        if process.decision.is_some() {
            return Err(OtError(
                400,
                format!("Workflow process {pid} is already completed"),
            ));
        }
        let decided_at = Utc::now();
        process.status = "completed".into();
        process.decision = Some(Decision {
            decision: decision.into(),
            comment: comment.into(),
            approver: approver.into(),
            approver_id,
            decided_at,
        });
        let workspace_id = process.workspace_id;
        let mut body = callback_envelope(&store, "workflow.decision", workspace_id);
        body["workflow"] = json!({
            "process_id": pid, "decision": decision, "comment": comment,
            "approver": approver, "decided_at": decided_at.to_rfc3339(),
        });
        body
    };
    Ok(sim.send_callback(body).await.ok())
}

/// The common part of every callback: event id, type, time, business object, workspace.
pub(crate) fn callback_envelope(store: &Store, kind: &str, workspace_id: Option<i64>) -> Value {
    let reference = workspace_id
        .and_then(|ws| store.nodes.get(&ws))
        .and_then(|n| n.workspace.as_ref())
        .and_then(|w| w.references.first().cloned());
    json!({
        "event_id": uuid::Uuid::new_v4().to_string(),
        "type": kind,
        "occurred_at": Utc::now().to_rfc3339(),
        "business_object": reference.map(|r| json!({
            "ext_system_id": r.ext_system_id, "bo_type": r.bo_type, "bo_id": r.bo_id,
        })),
        "workspace_id": workspace_id,
    })
}
