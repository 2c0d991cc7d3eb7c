//! OpenText callbacks end to end: matched to the flow that started the workflow by process id,
//! whatever business object they name; a callback no flow can handle is a dead letter with its
//! reason (202 to the sender), visible in the admin API and replayable.

use crate::common;
use crate::flows_e2e::{Bridge, field, processes, start};

use serde_json::{Value, json};
use xecm_bridge::sim::allportal::ids;

use common::{ADMIN_TOKEN, OPENTEXT_SECRET, signed};

/// Posts one signed callback as OpenText's side would; returns the HTTP status and receipt.
async fn post_callback(bridge: &Bridge, delivery: &str, body: &Value) -> (u16, Value) {
    let bytes = body.to_string().into_bytes();
    let response = signed(
        &bridge.http,
        &bridge.url("/webhooks/opentext"),
        OPENTEXT_SECRET,
        delivery,
        &bytes,
    )
    .send()
    .await
    .expect("callback");
    let status = response.status().as_u16();
    (status, response.json().await.expect("receipt"))
}

/// Starts one change review of the A100 pump; returns its process id.
async fn start_change_review(bridge: &Bridge) -> Value {
    bridge
        .edit(
            "product",
            ids::PRODUCT_PUMP_A100,
            json!({"packaging": [{"value": "blister", "dimensions": null}]}),
        )
        .await;
    let started = processes(&bridge.ot);
    assert_eq!(started.len(), 1, "{started:?}");
    started[0]["id"].clone()
}

/// The admin API's dead letters.
async fn dead_letters(bridge: &Bridge) -> Vec<Value> {
    let page: Value = bridge
        .http
        .get(bridge.url("/api/v1/events?state=dead"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("event list")
        .json()
        .await
        .expect("JSON");
    page["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_decision_naming_the_product_reaches_the_flow_that_started_the_workflow() {
    let bridge = start(&["change"]).await;
    let pid = start_change_review(&bridge).await;
    // The change workspace's business object type is `product_change`; this callback names
    // the product itself, as a workflow step that knows only the product would.
    let (status, receipt) = post_callback(
        &bridge,
        "cb-by-pid",
        &json!({
            "type": "workflow.decision",
            "business_object": {"ext_system_id": "4ALLPORTAL", "bo_type": "product",
                                "bo_id": ids::PRODUCT_PUMP_A100},
            "workflow": {"process_id": pid, "decision": "approved", "comment": "fine",
                         "approver": "jdoe"}
        }),
    )
    .await;
    assert_eq!(status, 202, "{receipt}");
    bridge.settle().await;
    let a100 = ids::PRODUCT_PUMP_A100;
    assert_eq!(
        field(&bridge.ap, "product", a100, "approval_status"),
        "approved"
    );
    assert_eq!(
        field(&bridge.ap, "product", a100, "approval_comment"),
        "fine"
    );
    assert_eq!(field(&bridge.ap, "product", a100, "approved_by"), "jdoe");
    let (state, _) = bridge.last_outcome("change").await;
    assert_eq!(state, "done");
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_callback_no_flow_takes_is_a_dead_letter_with_its_reason() {
    let bridge = start(&["change", "partner"]).await;
    // The partner-document example of docs/opentext-callback.md before it named the partner
    // workspace: it names the product, which no partner workspace is registered under.
    let (status, receipt) = post_callback(
        &bridge,
        "cb-unmatched",
        &json!({
            "event_id": "otcs-node-777-v2-approved",
            "type": "partner_document.approved",
            "business_object": {"ext_system_id": "4ALLPORTAL", "bo_type": "product", "bo_id": "4711"},
            "workspace_id": 12345,
            "document": {"node_id": 777, "version": 2, "name": "Datasheet FR.pdf"}
        }),
    )
    .await;
    assert_eq!(status, 202, "the sender must not retry: {receipt}");
    // A decision of a workflow the bridge never started.
    let (status, unknown) = post_callback(
        &bridge,
        "cb-unknown-pid",
        &json!({
            "type": "workflow.decision",
            "business_object": {"ext_system_id": "4ALLPORTAL", "bo_type": "product_change",
                                "bo_id": "4711-1"},
            "workflow": {"process_id": 424242, "decision": "approved"}
        }),
    )
    .await;
    assert_eq!(status, 202);

    let dead = dead_letters(&bridge).await;
    let reasons: Vec<&str> = dead
        .iter()
        .filter_map(|e| e["last_error"].as_str())
        .collect();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(
        reasons.iter().any(|r| r.contains(
            "no enabled flow takes a `partner_document_approved` callback for business object type `product`"
        )),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("workflow 424242 was not started by the bridge")),
        "{reasons:?}"
    );
    let status: Value = bridge
        .http
        .get(bridge.url("/api/v1/status"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["backlog"]["dead_letters"], 2, "{status}");

    // Replayable: a dead letter goes back to routing. The decision reaches the change flow,
    // whose return path finds no workflow of its own and says so.
    let id = unknown["accepted"][0].as_str().unwrap();
    let replay = bridge
        .http
        .post(bridge.url(&format!("/api/v1/events/{id}/replay")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(replay.status().is_success(), "{}", replay.status());
    let replayed = common::wait_for_state(bridge.store().as_ref(), id, "ignored").await;
    assert!(
        replayed
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("workflow 424242 was not started by the bridge"),
        "{replayed:?}"
    );
    bridge.stop().await;
}

/// A decision callback for `pid` naming the approver as `approver`.
fn decision_by(pid: &Value, approver: &str) -> Value {
    json!({
        "type": "workflow.decision",
        "business_object": {"ext_system_id": "4ALLPORTAL", "bo_type": "product",
                            "bo_id": ids::PRODUCT_PUMP_A100},
        "workflow": {"process_id": pid, "decision": "approved", "approver": approver}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approver_sent_as_user_id_is_written_as_the_login() {
    let bridge = start(&["change"]).await;
    let ot = &bridge.clients.opentext;
    assert_eq!(ot.member_login(1001).await.expect("member"), "jdoe");
    assert!(ot.member_login(999).await.is_err(), "unknown member");

    let pid = start_change_review(&bridge).await;
    let (status, _) = post_callback(&bridge, "cb-user-id", &decision_by(&pid, "1001")).await;
    assert_eq!(status, 202);
    bridge.settle().await;
    let a100 = ids::PRODUCT_PUMP_A100;
    assert_eq!(field(&bridge.ap, "product", a100, "approved_by"), "jdoe");

    // An id OpenText does not know: the decision is still written, with the id.
    bridge
        .edit(
            "product",
            a100,
            json!({"compliance_class": [{"value": "UKCA", "dimensions": null}]}),
        )
        .await;
    let second = processes(&bridge.ot)
        .into_iter()
        .find(|p| p["id"] != pid)
        .expect("second workflow");
    let (status, _) = post_callback(
        &bridge,
        "cb-unknown-user",
        &decision_by(&second["id"], "999"),
    )
    .await;
    assert_eq!(status, 202);
    bridge.settle().await;
    assert_eq!(
        field(&bridge.ap, "product", a100, "approval_status"),
        "approved"
    );
    assert_eq!(field(&bridge.ap, "product", a100, "approved_by"), "999");
    bridge.stop().await;
}

/// A callback shape such as a workflow script might post.
const SCRIPT_SHAPE: &str = r#"
[callbacks]
event_id = ""
kind = "/type"
process_id = "/process_id"
decision = "/outcome"
approver = "/decided_by"
comment = "/comment"
decided_at = ""
bo_type = ""
bo_id = ""
[callbacks.kinds]
"workflow.completed" = "workflow_decision"
[callbacks.decisions]
"Approve" = "approved"
"Reject" = "rejected"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_callback_in_a_configured_shape_reaches_the_change_flows_return_path() {
    let bridge = crate::flows_e2e::start_configured(&["change"], SCRIPT_SHAPE, |_| {}).await;
    let pid = start_change_review(&bridge).await;
    let (status, receipt) = post_callback(
        &bridge,
        "cb-script",
        &json!({"type": "workflow.completed", "process_id": pid, "outcome": "Approve",
                "decided_by": "1001", "comment": "Checked by script"}),
    )
    .await;
    assert_eq!(status, 202, "{receipt}");
    bridge.settle().await;
    let a100 = ids::PRODUCT_PUMP_A100;
    assert_eq!(
        field(&bridge.ap, "product", a100, "approval_status"),
        "approved"
    );
    assert_eq!(
        field(&bridge.ap, "product", a100, "approval_comment"),
        "Checked by script"
    );
    assert_eq!(field(&bridge.ap, "product", a100, "approved_by"), "jdoe");

    // A decision the maps do not know is refused with the pointer and its key.
    let (status, problem) = post_callback(
        &bridge,
        "cb-script-bad",
        &json!({"type": "workflow.completed", "process_id": pid, "outcome": "Maybe"}),
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem
            .to_string()
            .contains("/outcome (callbacks.decision)"),
        "{problem}"
    );
    bridge.stop().await;
}

#[test]
fn a_bad_callback_pointer_is_named_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.toml");
    std::fs::write(&path, "[callbacks]\ndecision = \"workflow.decision\"\n").unwrap();
    let error = xecm_bridge::config::Settings::load(Some(&path))
        .unwrap_err()
        .to_string();
    assert!(error.contains("`callbacks.decision`"), "{error}");
    assert!(error.contains("JSON pointer (RFC 6901)"), "{error}");
    std::fs::write(&path, "[callbacks.kinds]\ndone = \"finished\"\n").unwrap();
    let error = xecm_bridge::config::Settings::load(Some(&path))
        .unwrap_err()
        .to_string();
    assert!(error.contains("callbacks.kinds"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn creating_a_product_starts_no_change_review_and_a_later_modification_does() {
    let bridge = start(&["change"]).await;
    let created: Value = bridge
        .http
        .post(format!(
            "{}/objects/product?webhook=true",
            bridge.ap.control_url()
        ))
        .json(&json!({
            "article_number": [{"value": "NEW-1", "dimensions": null}],
            "name": [{"value": "New pump", "dimensions": {"locale": "en_US"}}],
            "packaging": [{"value": "carton", "dimensions": null}],
            "compliance_class": [{"value": "CE", "dimensions": null}],
        }))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("JSON");
    assert_eq!(created["webhook"]["Ok"]["status"], 202, "{created}");
    bridge.settle().await;
    let id = created["object"]["id"].as_str().expect("id").to_string();
    assert!(
        processes(&bridge.ot).is_empty(),
        "no review of initial values"
    );
    let (state, reason) = bridge.last_outcome("change").await;
    assert_eq!(state, "ignored");
    assert!(
        reason.unwrap().contains("no watched attribute changed"),
        "the create is no change"
    );

    bridge
        .edit(
            "product",
            &id,
            json!({"packaging": [{"value": "blister", "dimensions": null}]}),
        )
        .await;
    assert_eq!(
        processes(&bridge.ot).len(),
        1,
        "the modification is reviewed"
    );
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_approval_history_goes_into_the_configured_template_folder() {
    let extra = "[flows.archival]\nhistory_folder = \"Release Documentation\"\n";
    let bridge = crate::flows_e2e::start_configured(&["archival"], extra, |_| {}).await;
    bridge
        .webhook("product", ids::PRODUCT_VALVE_V10, "moduleobject_modify")
        .await;
    let nodes = bridge.ot.state()["nodes"].as_array().cloned().unwrap();
    let named =
        |name: &str| -> Vec<&Value> { nodes.iter().filter(|n| n["name"] == name).collect() };
    let archive = nodes
        .iter()
        .find(|n| {
            n["workspace"]["references"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["bo_type"] == "product_archive")
        })
        .expect("archive workspace");
    let folder = named("Release Documentation")
        .into_iter()
        .find(|f| f["parent_id"] == archive["id"])
        .expect("the template's folder");
    let history = named("5810 approval history.json");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["parent_id"], folder["id"]);
    // The template's default history folder stays as the template made it: empty.
    let default_folder = named("Approval History")
        .into_iter()
        .find(|f| f["parent_id"] == archive["id"])
        .expect("template folder");
    assert!(
        !nodes.iter().any(|n| n["parent_id"] == default_folder["id"]),
        "nothing in `Approval History`"
    );
    bridge.stop().await;
}
