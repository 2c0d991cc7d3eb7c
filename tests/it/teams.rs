//! Workspace teams against both simulators over loopback: the team of `config/example.toml` is
//! created, a replaced product manager swaps the bridge's member while a member added by hand
//! stays, an unknown member is reported (metric, run result) without failing the run or fails
//! it with `strict`, a partner user can upload only once the bridge made their group a member,
//! and a rerun writes nothing. The membership record is checked on both stores, also after a
//! crash between recording and adding a member, and across an OpenText outage.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use xecm_bridge::clients::Upstreams;
use xecm_bridge::flows::{self, Flows};
use xecm_bridge::sim::FaultSettings;
use xecm_bridge::sim::SimHandle;
use xecm_bridge::sim::allportal::{self as ap_sim, AllportalSimOptions, ids, sample_catalogue};
use xecm_bridge::sim::opentext::{self as ot_sim, OpentextSimOptions, sample_ids};
use xecm_bridge::store::{Store, TeamMembership, now_millis};
use xecm_bridge::worker::{Flow, FlowOutcome};

use crate::backend_tests;
use crate::common::{ADMIN_TOKEN, TestDb};
use crate::flows_e2e::{Bridge, Nodes, example_flows, start, start_configured};

const A100: &str = ids::PRODUCT_PUMP_A100;

fn text(value: &str) -> Value {
    json!([{"value": value, "dimensions": null}])
}

/// The workspace of `bo_type/bo_id`, its id and the members of its role `role`.
fn role_members(ot: &SimHandle, bo_type: &str, bo_id: &str, role: &str) -> (i64, i64, Vec<i64>) {
    let nodes = Nodes::of(ot);
    let ws = nodes.workspace(bo_type, bo_id);
    let found = ws["workspace"]["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .find(|r| r["name"] == role)
        .unwrap_or_else(|| panic!("no role {role}"))
        .clone();
    let mut members: Vec<i64> = found["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    members.sort_unstable();
    (
        ws["id"].as_i64().expect("id"),
        found["id"].as_i64().expect("role id"),
        members,
    )
}

/// A session of a person working in OpenText directly.
async fn login(ot: &SimHandle, user: &str, password: &str) -> (reqwest::Client, String) {
    let http = reqwest::Client::new();
    let answer: Value = http
        .post(format!("{}/api/v1/auth", ot.base_url()))
        .form(&[("username", user), ("password", password)])
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("ticket");
    let ticket = answer["ticket"].as_str().expect("ticket").to_string();
    (http, ticket)
}

async fn admin(ot: &SimHandle) -> (reqwest::Client, String) {
    login(ot, ot_sim::SAMPLE_ADMIN_USER, ot_sim::SAMPLE_ADMIN_PASSWORD).await
}

/// A form write to the OpenText API as its administrator (a change made by hand).
async fn by_hand(ot: &SimHandle, method: reqwest::Method, path: &str, form: &[(&str, String)]) {
    let (http, ticket) = admin(ot).await;
    let status = http
        .request(method, format!("{}{path}", ot.base_url()))
        .header("OTCSTicket", ticket)
        .form(form)
        .send()
        .await
        .expect("OpenText call")
        .status();
    assert!(status.is_success(), "{path}: {status}");
}

/// Adds `member` to a role by hand, as an OpenText administrator would.
async fn add_by_hand(ot: &SimHandle, ws: i64, role: i64, member: i64) {
    let path = format!("/api/v2/businessworkspaces/{ws}/roles/{role}/members");
    by_hand(
        ot,
        reqwest::Method::POST,
        &path,
        &[("id", member.to_string())],
    )
    .await;
}

/// Gives role `role` every permission on workspace `ws`, as an OpenText administrator might.
async fn set_role_by_hand(ot: &SimHandle, ws: i64, role: i64) {
    let body =
        json!({"permissions": ["see", "see_contents", "modify", "add_items"], "apply_to": 2});
    let path = format!("/api/v2/businessworkspaces/{ws}/roles/{role}");
    by_hand(
        ot,
        reqwest::Method::PUT,
        &path,
        &[("body", body.to_string())],
    )
    .await;
}

/// The Assigned Access entries of `node` (right id, sorted permissions), read through the API.
async fn folder_access(ot: &SimHandle, node: i64) -> Vec<(i64, Value)> {
    let (http, ticket) = admin(ot).await;
    let answer: Value = http
        .get(format!("{}/api/v2/nodes/{node}/permissions", ot.base_url()))
        .header("OTCSTicket", ticket)
        .send()
        .await
        .expect("permissions")
        .json()
        .await
        .expect("json");
    answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| &r["data"]["permissions"])
        .filter(|e| e["type"] == "custom")
        .map(|e| {
            let mut names: Vec<String> = e["permissions"]
                .as_array()
                .expect("names")
                .iter()
                .map(|n| n.as_str().unwrap().to_string())
                .collect();
            names.sort();
            (e["right_id"].as_i64().unwrap(), json!(names))
        })
        .collect()
}

/// Changes an object as a 4ALLPORTAL user, without a webhook.
async fn change(bridge_ap: &SimHandle, module: &str, id: &str, fields: Value) {
    let status = reqwest::Client::new()
        .post(format!("{}/objects/{module}/{id}", bridge_ap.control_url()))
        .json(&fields)
        .send()
        .await
        .expect("edit")
        .status();
    assert!(status.is_success(), "{status}");
}

/// The attempt summaries the admin API shows for the newest event of `flow`.
async fn latest_summary(bridge: &Bridge, flow: &str) -> Value {
    let page: Value = bridge
        .http
        .get(bridge.url("/api/v1/events?limit=1"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = page["events"][0]["id"]
        .as_str()
        .expect("an event")
        .to_string();
    let detail: Value = bridge
        .http
        .get(bridge.url(&format!("/api/v1/events/{id}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job = detail["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .find(|j| j["flow"] == flow)
        .unwrap_or_else(|| panic!("no job of {flow}: {detail}"));
    job["history"]
        .as_array()
        .and_then(|h| h.last())
        .unwrap_or_else(|| panic!("no attempt: {detail}"))["summary"]
        .clone()
}

/// Counts requests to the simulator whose method and path match.
fn count(ot: &SimHandle, method: &str, path_contains: &str) -> usize {
    ot.requests()
        .iter()
        .filter(|r| r.method == method && r.path.contains(path_contains))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_launch_team_is_created_and_a_rerun_makes_no_call_that_writes() {
    let bridge = start(&["launch"]).await;
    bridge.webhook("product", A100, "moduleobject_modify").await;
    let (_, _, pm) = role_members(&bridge.ot, "product", A100, "Product Management");
    assert_eq!(pm, [sample_ids::PM_SCHMIDT_USER_ID]);
    let (ws, _, legal) = role_members(&bridge.ot, "product", A100, "Legal");
    assert_eq!(legal, [sample_ids::GROUP_LEGAL]);
    let (_, _, sales) = role_members(&bridge.ot, "product", A100, "Sales");
    assert_eq!(sales, [sample_ids::GROUP_SALES_NORDICS]);
    // The template's owner role keeps its owner; nobody else was touched.
    let (_, _, owner) = role_members(&bridge.ot, "product", A100, "Business Workspace Owner");
    assert_eq!(owner, [sample_ids::ADMIN_USER_ID]);
    let records = bridge.store().team_memberships(ws).await.unwrap();
    assert_eq!(records.len(), 3, "{records:?}");
    assert!(
        records
            .iter()
            .all(|r| r.flow == "launch" && r.object_key == format!("product/{A100}"))
    );

    // The same event again: nothing is written; the team costs one roles read, one members
    // read per team role and at most one members search per name (each client caches them;
    // this harness runs two workers, the app's and the test's, so the rerun may be the other's).
    bridge.clear_logs();
    bridge.webhook("product", A100, "moduleobject_modify").await;
    assert_eq!(bridge.ot_writes(), Vec::<String>::new());
    let ws_path = format!("/businessworkspaces/{ws}/roles");
    assert_eq!(count(&bridge.ot, "GET", &ws_path), 1 + 3);
    assert!(count(&bridge.ot, "GET", "/api/v2/members") <= 3);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replaced_product_manager_is_swapped_and_members_added_by_hand_stay() {
    let bridge = start(&["launch"]).await;
    bridge.webhook("product", A100, "moduleobject_modify").await;
    let (ws, role, _) = role_members(&bridge.ot, "product", A100, "Product Management");
    // Someone adds a colleague in OpenText.
    add_by_hand(&bridge.ot, ws, role, sample_ids::APPROVER_USER_ID).await;

    bridge
        .edit("product", A100, json!({"product_manager": text("lweber")}))
        .await;
    let (_, _, pm) = role_members(&bridge.ot, "product", A100, "Product Management");
    assert_eq!(
        pm,
        [sample_ids::APPROVER_USER_ID, sample_ids::PM_WEBER_USER_ID],
        "the old manager removed, the new one added, the hand-added member kept"
    );
    let writes = bridge.ot_writes();
    let removed = format!("DELETE /otcs/cs/api/v2/businessworkspaces/{ws}/roles/{role}/members/");
    assert_eq!(
        writes.iter().filter(|w| w.starts_with(&removed)).count(),
        1,
        "{writes:?}"
    );
    let records = bridge.store().team_memberships(ws).await.unwrap();
    let in_role: Vec<&str> = records
        .iter()
        .filter(|r| r.role_id == role)
        .map(|r| r.member_name.as_str())
        .collect();
    assert_eq!(in_role, ["lweber"]);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_member_is_reported_and_the_run_goes_on() {
    let bridge = start(&["launch"]).await;
    bridge.webhook("product", A100, "moduleobject_modify").await;
    bridge
        .edit(
            "product",
            A100,
            json!({"product_manager": text("no.such.user")}),
        )
        .await;
    let (_, _, legal) = role_members(&bridge.ot, "product", A100, "Legal");
    assert_eq!(legal, [sample_ids::GROUP_LEGAL]);
    // The former manager is no longer the product's: the bridge's membership goes.
    let (_, _, pm) = role_members(&bridge.ot, "product", A100, "Product Management");
    assert!(pm.is_empty(), "{pm:?}");
    let summary = latest_summary(&bridge, "launch").await;
    let warnings = summary["warnings"].to_string();
    assert!(
        warnings.contains("login `no.such.user` (role `Product Management`)"),
        "{summary}"
    );
    let metrics = bridge
        .http
        .get(bridge.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("xecm_team_unresolved_total{flow=\"launch\"}"))
        .unwrap_or_else(|| panic!("no team metric:\n{metrics}"));
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(value >= 1.0, "{line}");
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_strict_team_fails_the_run_for_good_on_an_unknown_member() {
    let bridge =
        start_configured(&["launch"], "[flows.launch.team]\nstrict = true\n", |_| {}).await;
    change(
        &bridge.ap,
        "product",
        A100,
        json!({"product_manager": text("no.such.user")}),
    )
    .await;
    let delivery: Value = bridge
        .http
        .post(format!("{}/webhooks/send", bridge.ap.control_url()))
        .json(&json!({"module": "product", "object_id": A100, "event": "moduleobject_modify"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(delivery["status"], 202, "{delivery}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let dead = bridge.events(Some("dead")).await;
        if !dead.is_empty() {
            break dead;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the event did not fail"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let error = dead[0].last_error.clone().unwrap_or_default();
    assert!(
        error.contains("no.such.user") && error.contains("strict"),
        "{error}"
    );
    bridge.stop().await;
}

/// Uploads a document into `folder` with the session of `ticket` (the real API, multipart).
async fn upload_as(
    ot: &SimHandle,
    http: &reqwest::Client,
    ticket: &str,
    folder: i64,
    name: &str,
) -> (u16, Value) {
    let body = json!({"type": 144, "parent_id": folder, "name": name});
    let form = reqwest::multipart::Form::new()
        .text("body", body.to_string())
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"Certificat CE Pompe A100".to_vec())
                .file_name(name.to_string())
                .mime_str("text/plain")
                .unwrap(),
        );
    let response = http
        .post(format!("{}/api/v2/nodes", ot.base_url()))
        .header("OTCSTicket", ticket)
        .multipart(form)
        .send()
        .await
        .expect("upload");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partner_uploads_only_once_the_bridge_made_their_group_a_member() {
    let bridge = start(&["partner"]).await;
    let partner = ids::PARTNER_DISTRIBUTOR;
    // The partner has no OpenText group yet: the workspace is made without partner members.
    change(
        &bridge.ap,
        "partner",
        partner,
        json!({"partner_group": text("")}),
    )
    .await;
    bridge
        .webhook("partner", partner, "moduleobject_modify")
        .await;
    let bo_id = format!("{partner}:{A100}");
    let (_, _, partners) = role_members(&bridge.ot, "partner_product", &bo_id, "Partners");
    assert!(partners.is_empty(), "{partners:?}");
    let nodes = Nodes::of(&bridge.ot);
    let ws = nodes.workspace("partner_product", &bo_id);
    let folder = nodes.child(ws, sample_ids::PARTNER_UPLOAD_FOLDER)["id"]
        .as_i64()
        .unwrap();
    let (http, ticket) = login(&bridge.ot, "partner", "sim-partner-password").await;
    let (status, answer) =
        upload_as(&bridge.ot, &http, &ticket, folder, "CE certificate.txt").await;
    assert_eq!(status, 400, "refused as the spec answers it: {answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("permission"),
        "{answer}"
    );

    // The partner's group is set in 4ALLPORTAL: the bridge adds it, with upload permission.
    bridge
        .edit(
            "partner",
            partner,
            json!({"partner_group": text("Partner - Nordic Distribution AB")}),
        )
        .await;
    let (_, _, partners) = role_members(&bridge.ot, "partner_product", &bo_id, "Partners");
    assert_eq!(partners, [sample_ids::GROUP_PARTNER_NORDIC]);
    let (status, uploaded) =
        upload_as(&bridge.ot, &http, &ticket, folder, "CE certificate.txt").await;
    assert_eq!(status, 200, "{uploaded}");
    let node = uploaded["results"]["data"]["properties"]["id"]
        .as_i64()
        .expect("node id");
    // A user of the partner outside its group is still refused.
    let (http2, guest) = login(&bridge.ot, "nd.guest", "sim-nd.guest-password").await;
    let (status, _) = upload_as(&bridge.ot, &http2, &guest, folder, "other.txt").await;
    assert_eq!(status, 400);
    // The role sees the workspace but adds documents only in its upload folder: the folder's
    // Assigned Access names the role, and another folder of the workspace refuses the upload.
    let (_, role, _) = role_members(&bridge.ot, "partner_product", &bo_id, "Partners");
    let access = folder_access(&bridge.ot, folder).await;
    assert!(
        access.contains(&(role, json!(["add_items", "modify", "see", "see_contents"]))),
        "{access:?}"
    );
    let other = nodes.child(ws, "Channel Content")["id"].as_i64().unwrap();
    let (status, answer) = upload_as(&bridge.ot, &http, &ticket, other, "elsewhere.txt").await;
    assert_eq!(
        status, 400,
        "only the upload folder takes documents: {answer}"
    );

    // A rerun writes nothing: the role's permissions are known by the `perms` read back after
    // they were set (the roles answer lists no names), the folder's by its Assigned Access.
    bridge.clear_logs();
    bridge
        .webhook("partner", partner, "moduleobject_modify")
        .await;
    assert_eq!(bridge.ot_writes(), Vec::<String>::new());
    // Someone widens the role in OpenText: the next run sets the mapping's permissions again.
    set_role_by_hand(&bridge.ot, ws["id"].as_i64().unwrap(), role).await;
    bridge.clear_logs();
    bridge
        .webhook("partner", partner, "moduleobject_modify")
        .await;
    let role_path = format!("/roles/{role}");
    assert_eq!(
        bridge
            .ot_writes()
            .iter()
            .filter(|w| w.ends_with(&role_path))
            .count(),
        1,
        "{:?}",
        bridge.ot_writes()
    );

    // Approved internally, the document comes back into 4ALLPORTAL (the return path).
    let answer: Value = bridge
        .http
        .post(format!("{}/partner/approve", bridge.ot.control_url()))
        .json(&json!({"node_id": node}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["callback"]["status"], 202, "{answer}");
    bridge.settle().await;
    let file_id = flows::partner::import_id("4ALLPORTAL", node, 1);
    let state = bridge.ap.state();
    assert_eq!(
        state["objects"]["file"][&file_id]["name"][0]["value"],
        "CE certificate.txt"
    );
    bridge.stop().await;
}

// ------------------------------------------------------------------------------------------
// the membership record, on both stores
// ------------------------------------------------------------------------------------------

backend_tests!(
    memberships_are_recorded_once_and_forgotten,
    a_crash_between_recording_and_adding_a_member_is_completed_once,
    an_opentext_outage_during_the_team_is_transient,
);

async fn memberships_are_recorded_once_and_forgotten(db: &TestDb) {
    let store = &db.store;
    let record = |role: i64, member: i64, name: &str| TeamMembership {
        workspace_id: 100_001,
        role_id: role,
        member_id: member,
        flow: "launch".into(),
        object_key: "product/p'1".into(),
        role_name: "Product Management".into(),
        member_name: name.into(),
        created_at: now_millis(),
    };
    store
        .record_team_membership(&record(7, 1002, "mschmidt"))
        .await
        .unwrap();
    // A second record (a run after a crash) changes nothing.
    store
        .record_team_membership(&record(7, 1002, "again"))
        .await
        .unwrap();
    store
        .record_team_membership(&record(8, 3001, "Legal"))
        .await
        .unwrap();
    let found = store.team_memberships(100_001).await.unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].member_name, "mschmidt");
    assert_eq!(found[0].object_key, "product/p'1");
    assert!(store.team_memberships(100_002).await.unwrap().is_empty());
    store
        .forget_team_membership(100_001, 7, 1002)
        .await
        .unwrap();
    let left: Vec<i64> = store
        .team_memberships(100_001)
        .await
        .unwrap()
        .iter()
        .map(|r| r.member_id)
        .collect();
    assert_eq!(left, [3001]);
}

/// Both simulators and the launch flow over `store`, run in-process without a worker.
struct Direct {
    ap: SimHandle,
    ot: SimHandle,
    flows: Flows,
}

async fn direct(store: std::sync::Arc<dyn Store>) -> Direct {
    let ap = ap_sim::spawn(
        "127.0.0.1:0".parse().unwrap(),
        AllportalSimOptions {
            api_key: "sim-allportal-api-key".into(),
            seed: Some(sample_catalogue()),
            ..AllportalSimOptions::default()
        },
    )
    .await
    .unwrap();
    let ot = ot_sim::spawn(
        "127.0.0.1:0".parse().unwrap(),
        OpentextSimOptions::default(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        r#"
[allportal]
base_url = "{}"
api_key = "sim-allportal-api-key"
[allportal.transport]
max_retries = 0
[opentext]
base_url = "{}"
username = "{}"
password = "{}"
[opentext.transport]
max_retries = 0
"#,
        ap.base_url(),
        ot.base_url(),
        ot_sim::SAMPLE_ADMIN_USER,
        ot_sim::SAMPLE_ADMIN_PASSWORD
    );
    let settings =
        crate::common::test_settings(&dir, &format!("{base}\n{}", example_flows(&["launch"])));
    let clients = Upstreams::new(&settings.allportal, &settings.opentext).unwrap();
    let flows = flows::build(&settings.flows, &settings.callbacks, &clients, store);
    Direct { ap, ot, flows }
}

impl Direct {
    async fn reconcile(&self) -> FlowOutcome {
        let key = format!("product/{A100}");
        let event = flows::unsaved_event("allportal", "moduleobject_modify", &key, json!({}));
        self.flows
            .get("launch")
            .unwrap()
            .reconcile(&key, &[event])
            .await
    }
}

fn member_writes(ot: &SimHandle) -> Vec<String> {
    ot.requests()
        .into_iter()
        .filter(|r| r.is_write() && r.path.contains("/members"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

async fn a_crash_between_recording_and_adding_a_member_is_completed_once(db: &TestDb) {
    let d = direct(db.store.clone()).await;
    assert!(matches!(d.reconcile().await, FlowOutcome::Success { .. }));
    let (ws, sales, _) = role_members(&d.ot, "product", A100, "Sales");
    // The state a crash leaves after the bridge recorded the Sales member and before OpenText
    // added it: the record is there, the membership is not.
    let (http, ticket) = admin(&d.ot).await;
    let status = http
        .delete(format!(
            "{}/api/v2/businessworkspaces/{ws}/roles/{sales}/members/{}",
            d.ot.base_url(),
            sample_ids::GROUP_SALES_NORDICS
        ))
        .header("OTCSTicket", ticket)
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success());
    let before: BTreeSet<(i64, i64)> = records(&db.store, ws).await;
    d.ot.clear_requests();
    assert!(matches!(d.reconcile().await, FlowOutcome::Success { .. }));
    assert_eq!(
        member_writes(&d.ot),
        [format!(
            "POST /otcs/cs/api/v2/businessworkspaces/{ws}/roles/{sales}/members"
        )]
    );
    let (_, _, members) = role_members(&d.ot, "product", A100, "Sales");
    assert_eq!(members, [sample_ids::GROUP_SALES_NORDICS]);
    assert_eq!(
        records(&db.store, ws).await,
        before,
        "the record stays consistent"
    );
    // And once more: nothing.
    d.ot.clear_requests();
    assert!(matches!(d.reconcile().await, FlowOutcome::Success { .. }));
    assert_eq!(member_writes(&d.ot), Vec::<String>::new());
    drop(d.ap);
}

async fn records(store: &std::sync::Arc<dyn Store>, ws: i64) -> BTreeSet<(i64, i64)> {
    store
        .team_memberships(ws)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.role_id, r.member_id))
        .collect()
}

async fn an_opentext_outage_during_the_team_is_transient(db: &TestDb) {
    let d = direct(db.store.clone()).await;
    assert!(matches!(d.reconcile().await, FlowOutcome::Success { .. }));
    let (ws, role, _) = role_members(&d.ot, "product", A100, "Product Management");
    change(
        &d.ap,
        "product",
        A100,
        json!({"product_manager": text("lweber")}),
    )
    .await;
    d.ot.set_faults(FaultSettings {
        error_rate: 1.0,
        ..FaultSettings::default()
    });
    let outcome = d.reconcile().await;
    assert!(
        matches!(
            outcome,
            FlowOutcome::Retryable { .. } | FlowOutcome::Parked { .. }
        ),
        "an outage is transient, never a dead letter: {outcome:?}"
    );
    d.ot.set_faults(FaultSettings::default());
    // The circuit may have opened: wait for its probe interval to pass, then run again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match d.reconcile().await {
            FlowOutcome::Success { .. } => break,
            FlowOutcome::Parked { resume_after, .. } => tokio::time::sleep(resume_after).await,
            other => panic!("{other:?}"),
        }
        assert!(tokio::time::Instant::now() < deadline);
    }
    let (_, _, pm) = role_members(&d.ot, "product", A100, "Product Management");
    assert_eq!(pm, [sample_ids::PM_WEBER_USER_ID]);
    let in_role: Vec<i64> = db
        .store
        .team_memberships(ws)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.role_id == role)
        .map(|r| r.member_id)
        .collect();
    assert_eq!(in_role, [sample_ids::PM_WEBER_USER_ID]);
}

// ------------------------------------------------------------------------------------------
// the mapping and the plan
// ------------------------------------------------------------------------------------------

/// The launch mapping of `config/example.toml` with `team` (TOML) as its team section.
fn with_team(team: &str) -> Result<xecm_bridge::config::Settings, String> {
    let secrets = r#"
[sources.allportal]
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
[sources.opentext]
secrets = ["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"]
"#;
    let mut flows: toml::Table = example_flows(&["launch"]).parse().unwrap();
    let launch = flows["flows"]["launch"].as_table().unwrap().clone();
    let mut launch = launch;
    launch.insert("team".into(), toml::Value::Table(team.parse().unwrap()));
    flows["flows"]
        .as_table_mut()
        .unwrap()
        .insert("launch".into(), launch.into());
    let text = toml::to_string(&flows).unwrap();
    xecm_bridge::config::Settings::from_toml(&[secrets, &text]).map_err(|e| e.to_string())
}

#[test]
fn a_team_mapping_is_checked_at_load_and_each_error_names_its_key() {
    assert!(with_team("strict = true\n[roles.Legal]\nmembers = [{ group = \"Legal\" }]").is_ok());
    assert!(with_team("[roles.Legal.folders]\n\"Contracts\" = [\"edit_permissions\"]").is_ok());
    let cases = [
        (
            "[roles.Legal]\nmembers = [{ group = \"Legal\", user = \"jdoe\" }]",
            "flows.launch.team.roles.\"Legal\".members[0]",
            "exactly one of field, user, email, group",
        ),
        (
            "[roles.Legal]\nmembers = [{ user = \"jdoe\", by = \"email\" }]",
            "flows.launch.team.roles.\"Legal\".members[0].by",
            "only a `field`",
        ),
        (
            "[roles.Legal]\nmembers = [{ email = \"legal\" }]",
            "flows.launch.team.roles.\"Legal\".members[0].email",
            "not an e-mail",
        ),
        (
            "[roles.Legal]\npermissions = [\"see\", \"upload\"]",
            "flows.launch.team.roles.\"Legal\".permissions",
            "`upload` is not one of",
        ),
        (
            "[roles.Legal.folders]\n\"Contracts\" = [\"see\", \"upload\"]",
            "flows.launch.team.roles.\"Legal\".folders.\"Contracts\"",
            "`upload` is not one of",
        ),
        (
            // A folder's Assigned Access names `edit_permissions` where a role has `edit`.
            "[roles.Legal.folders]\n\"Contracts\" = [\"see\", \"edit\"]",
            "flows.launch.team.roles.\"Legal\".folders.\"Contracts\"",
            "`edit` is not one of",
        ),
        (
            "[roles.Legal.folders]\n\" / \" = [\"see\"]",
            "flows.launch.team.roles.\"Legal\".folders.\" / \"",
            "must name a folder",
        ),
        (
            "[roles.Legal]\napply_to = 7",
            "flows.launch.team.roles.\"Legal\".apply_to",
            "0, 1, 2 or 3",
        ),
        (
            "[roles.Legal]\nmembers = [{ field = \"no such\" }]",
            "flows.launch.team.roles.\"Legal\".members[0].field",
            "not a field name",
        ),
    ];
    for (team, key, problem) in cases {
        let error = with_team(team).expect_err(team);
        assert!(
            error.contains(key) && error.contains(problem),
            "{team}: {error}"
        );
    }
    // Unknown keys are refused too.
    let error = with_team("[roles.Legal]\nmembrs = []").unwrap_err();
    assert!(error.contains("membrs"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plan_lists_the_team_changes_and_writes_nothing() {
    let bridge = start(&["launch"]).await;
    bridge.webhook("product", A100, "moduleobject_modify").await;
    change(
        &bridge.ap,
        "product",
        A100,
        json!({"product_manager": text("lweber")}),
    )
    .await;
    bridge.clear_logs();
    let answer: Value = bridge
        .http
        .post(bridge.url("/api/v1/plan"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"object_key": format!("product/{A100}"), "flow": "launch"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let operations: Vec<(String, String)> = answer["plans"][0]["operations"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"))
        .iter()
        .map(|o| {
            (
                o["action"].as_str().unwrap().to_string(),
                o["description"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        operations.contains(&(
            "add_team_member".into(),
            "add user `lweber` to role `Product Management`".into()
        )),
        "{operations:?}"
    );
    assert!(
        operations.contains(&(
            "remove_team_member".into(),
            "remove `mschmidt` from role `Product Management` (no longer in the team)".into()
        )),
        "{operations:?}"
    );
    assert_eq!(bridge.ot_writes(), Vec::<String>::new());
    let (_, _, pm) = role_members(&bridge.ot, "product", A100, "Product Management");
    assert_eq!(pm, [sample_ids::PM_SCHMIDT_USER_ID]);
    bridge.stop().await;
}

#[tokio::test]
async fn the_simulator_searches_members_as_the_content_server_spec_describes() {
    let ot = ot_sim::spawn(
        "127.0.0.1:0".parse().unwrap(),
        OpentextSimOptions::default(),
    )
    .await
    .unwrap();
    let (http, ticket) = admin(&ot).await;
    let search = |query: &'static str| {
        let (http, ticket) = (http.clone(), ticket.clone());
        let url = format!("{}/api/v2/members?{query}", ot.base_url());
        async move {
            let response = http
                .get(url)
                .header("OTCSTicket", ticket)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let ids = |answer: &Value| -> Vec<i64> {
        answer["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["data"]["properties"]["id"].as_i64().unwrap())
            .collect()
    };
    let (status, groups) = search("where_type=1&where_name=legal").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&groups), [sample_ids::GROUP_LEGAL]);
    assert_eq!(groups["results"][0]["data"]["properties"]["type"], 1);
    let (_, users) = search("where_type=0&where_business_email=maria.schmidt@example.com").await;
    assert_eq!(ids(&users), [sample_ids::PM_SCHMIDT_USER_ID]);
    assert_eq!(users["collection"]["paging"]["total_count"], 1);
    // `query` looks in logins, e-mails and group names, users and groups alike.
    let (_, nordic) = search("query=nordic").await;
    assert_eq!(
        ids(&nordic),
        [
            sample_ids::PARTNER_USER_ID,
            sample_ids::PARTNER_GUEST_USER_ID,
            sample_ids::GROUP_SALES_NORDICS,
            sample_ids::GROUP_PARTNER_NORDIC
        ]
    );
    let (status, _) = search("query=a&where_name=b").await;
    assert_eq!(status, 400, "query does not combine with where_* filters");
    let (status, _) = search("where_type=x").await;
    assert_eq!(status, 400);
}
