//! Exactly-once creates across crashes, with the real binary. For every step N of a flow, the
//! bridge is started with `XECM_CRASH_AFTER_WRITES=N`: it aborts (like `kill -9`) right after
//! its N-th upstream write was answered — the effect exists, the bridge has not recorded it.
//! It is restarted without the crash point and the story goes on; at the end, both simulators
//! must hold every create exactly once: one workflow per review, one hold, one finalization,
//! one version per document, one write-back, one imported file, one link. N runs from 1 until a
//! run no longer reaches its crash point (every step was covered).

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cluster::*;
use common::{ALLPORTAL_SECRET, signed};
use serde_json::{Value, json};
use tokio::time::Instant;
use xecm_bridge::clients::crash::CRASH_AFTER_WRITES_ENV;
use xecm_bridge::sim::SimHandle;
use xecm_bridge::sim::allportal::ids;

/// The 4ALLPORTAL simulator's API key (its default).
const SIM_API_KEY: &str = "sim-allportal-api-key";

/// Upper bound of crash points per flow; a flow with more writes fails the test loudly.
const MAX_STEPS: usize = 60;

/// One stimulus of a story: what a person or the other system does.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// A signed 4ALLPORTAL change webhook for `module/id`.
    Webhook(&'static str, &'static str),
    /// A user edit of the object in 4ALLPORTAL (its webhook is sent too).
    Edit(&'static str, &'static str, &'static str, &'static str),
    /// The only running workflow is approved in OpenText (the simulator sends the callback).
    ApproveWorkflow,
    /// A partner uploads a document to the A100 partner workspace; it is approved internally.
    PartnerUpload,
    /// A new edition of the pumps manual is uploaded to 4ALLPORTAL (no webhook).
    NewManualEdition,
}

struct Story {
    flow: &'static str,
    steps: &'static [Step],
    check: fn(&Sims) -> Vec<String>,
}

const CHANGE: Story = Story {
    flow: "change",
    steps: &[
        Step::Edit("product", ids::PRODUCT_PUMP_A100, "packaging", "blister"),
        Step::ApproveWorkflow,
    ],
    check: check_change,
};

const COMPLIANCE: Story = Story {
    flow: "compliance",
    steps: &[Step::Webhook("product", ids::PRODUCT_PUMP_A100)],
    check: check_compliance,
};

const PARTNER: Story = Story {
    flow: "partner",
    steps: &[
        Step::Webhook("partner", ids::PARTNER_DISTRIBUTOR),
        Step::PartnerUpload,
    ],
    check: check_partner,
};

const FAMILY: Story = Story {
    flow: "family",
    steps: &[
        Step::Webhook("product_family", ids::FAMILY_PUMPS),
        Step::NewManualEdition,
        Step::Webhook("product_family", ids::FAMILY_PUMPS),
    ],
    check: check_family,
};

const ARCHIVAL: Story = Story {
    flow: "archival",
    steps: &[Step::Webhook("product", ids::PRODUCT_VALVE_V10)],
    check: check_archival,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_step_of_change_duplicates_nothing() {
    crash_at_every_step(&CHANGE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_step_of_compliance_duplicates_nothing() {
    crash_at_every_step(&COMPLIANCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_step_of_partner_duplicates_nothing() {
    crash_at_every_step(&PARTNER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_step_of_family_adds_each_version_once() {
    crash_at_every_step(&FAMILY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_step_of_archival_duplicates_nothing() {
    crash_at_every_step(&ARCHIVAL).await;
}

async fn crash_at_every_step(story: &Story) {
    for step in 1..=MAX_STEPS {
        let (crashed, problems) = run_story(story, Some(step)).await;
        assert!(
            problems.is_empty(),
            "{}: crash after write {step}: duplicate or missing effects: {problems:#?}",
            story.flow
        );
        if !crashed {
            // Every write of the story was a crash point: steps 1 .. step - 1.
            eprintln!(
                "{}: {} crash points covered, no duplicates",
                story.flow,
                step - 1
            );
            assert!(step > 1, "{}: no crash point was reached", story.flow);
            return;
        }
    }
    panic!("{}: more than {MAX_STEPS} writes", story.flow);
}

/// Runs the story on fresh simulators and a fresh store, the first process crashing after its
/// `crash_after`-th write. Returns whether it crashed, and the problems the check found.
async fn run_story(story: &Story, crash_after: Option<usize>) -> (bool, Vec<String>) {
    let sims = Sims::start(0, 0).await;
    let setup = SqliteBridge::configure(&sims, &[story.flow], FAST_WORKER);
    let (port, config) = (setup.port, &setup.config);
    // The crash points count upstream writes from the process start; the start-up mapping
    // check's OpenText login would be the first of them, so the story runs without it.
    let mut text = std::fs::read_to_string(config).unwrap();
    text.push_str("\n[mapping_check]\non_problem = \"off\"\n");
    std::fs::write(config, text).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    connect_sims(&sims, &base).await;
    let crash = crash_after.map(|n| n.to_string());
    let env: Vec<(&str, &str)> = crash
        .iter()
        .map(|n| (CRASH_AFTER_WRITES_ENV, n.as_str()))
        .collect();
    let mut bridge = BridgeProcess::start_with_env(config, port, &env).await;
    let mut crashed = false;
    for (n, step) in story.steps.iter().enumerate() {
        // A stimulus the crashed process missed is delivered to the restarted one; webhooks are
        // redelivered by their senders until answered, which `deliver` does here.
        deliver(&sims, &mut bridge, *step, n).await;
        if settle_or_crash(&mut bridge).await {
            crashed = true;
            bridge.restart().await;
            bridge.settle().await;
        }
    }
    bridge.kill();
    let mut problems = (story.check)(&sims);
    problems.extend(team_members_added_once(&sims));
    (crashed, problems)
}

/// Every flow of the sample mapping keeps a team: each member is added to its role by one call,
/// however the crashes fell (the bridge records a membership before adding it), so the calls to
/// a role's members equal the members it holds (the owner role, the template's, aside).
fn team_members_added_once(sims: &Sims) -> Vec<String> {
    let writes = write_counts(&sims.ot);
    let state = sims.ot.state();
    let mut problems = Vec::new();
    let mut added = 0;
    for ws in state["nodes"].as_array().into_iter().flatten() {
        for role in ws["workspace"]["roles"].as_array().into_iter().flatten() {
            if role["leader"] == true {
                continue;
            }
            let path = format!(
                "POST /otcs/cs/api/v2/businessworkspaces/{}/roles/{}/members",
                ws["id"], role["id"]
            );
            let calls = writes.get(&path).copied().unwrap_or(0);
            let members = role["members"].as_array().map_or(0, Vec::len);
            added += calls;
            if calls != members {
                problems.push(format!("{path}: {calls} calls for {members} members"));
            }
        }
    }
    if added == 0 {
        problems.push("no team member was added".into());
    }
    problems
}

/// Both simulators send their webhooks and callbacks to the bridge under test.
async fn connect_sims(sims: &Sims, bridge: &str) {
    let http = reqwest::Client::new();
    let ap = http
        .put(format!("{}/webhook", sims.ap.control_url()))
        .json(&json!({"url": format!("{bridge}/webhooks/allportal"), "secret": ALLPORTAL_SECRET}))
        .send()
        .await
        .unwrap();
    assert!(ap.status().is_success());
    let ot = http
        .put(format!("{}/callback", sims.ot.control_url()))
        .json(&json!({"url": format!("{bridge}/webhooks/opentext")}))
        .send()
        .await
        .unwrap();
    assert!(ot.status().is_success());
}

/// Delivers one stimulus; a delivery the crashing bridge could not accept is sent again once it
/// is back (as a webhook sender retries).
async fn deliver(sims: &Sims, bridge: &mut BridgeProcess, step: Step, n: usize) {
    let http = reqwest::Client::new();
    match step {
        Step::Webhook(module, id) => {
            let body = json!({"event": "moduleobject_modify", "module": module, "object_id": id})
                .to_string()
                .into_bytes();
            let url = format!("{}/webhooks/allportal", bridge.base);
            let delivery = format!("msg_step_{n}");
            loop {
                let sent = signed(&http, &url, ALLPORTAL_SECRET, &delivery, &body)
                    .send()
                    .await;
                if sent.is_ok_and(|r| r.status() == reqwest::StatusCode::ACCEPTED) {
                    return;
                }
                bridge.restart().await;
            }
        }
        Step::Edit(module, id, field, value) => {
            let answer = control(
                &sims.ap,
                &format!("objects/{module}/{id}?webhook=true"),
                json!({ field: [{"value": value, "dimensions": null}] }),
            )
            .await;
            if answer["webhook"]["Ok"]["status"] != 202 {
                resend_change(sims, bridge, module, id).await;
            }
        }
        Step::ApproveWorkflow => {
            let pid = only_process(&sims.ot);
            let answer = control(
                &sims.ot,
                &format!("workflows/{pid}/complete"),
                json!({"decision": "approved", "comment": "checked", "approver": "jdoe"}),
            )
            .await;
            assert!(answer.get("error").is_none(), "{answer}");
            if answer["callback"]["status"] != 202 {
                // The decision stays visible in OpenText: the poller would find it; here the
                // restarted bridge is told by a resync of the workflow status instead.
                bridge.restart().await;
                resend_callback(sims, bridge, pid).await;
            }
        }
        Step::NewManualEdition => {
            let edition = xecm_bridge::sim::allportal::sample_pdf("Pumps manual, edition 2");
            let part = reqwest::multipart::Part::bytes(edition)
                .file_name("pumps-manual.pdf")
                .mime_str("application/pdf")
                .unwrap();
            let response = http
                .put(format!(
                    "{}/api/modules/file/objects/{}/media",
                    sims.ap.base_url(),
                    ids::FILE_PUMPS_MANUAL
                ))
                .bearer_auth(SIM_API_KEY)
                .multipart(reqwest::multipart::Form::new().part("file", part))
                .send()
                .await
                .expect("media upload");
            assert!(response.status().is_success(), "{}", response.status());
        }
        Step::PartnerUpload => {
            let ws = Nodes::of(&sims.ot)
                .workspace_ids("partner_product")
                .into_iter()
                .next()
                .expect("a partner workspace");
            let uploaded = control(
                &sims.ot,
                "partner/upload",
                json!({"workspace_id": ws, "name": "Datasheet FR.txt",
                       "content": "Fiche technique", "mime_type": "text/plain"}),
            )
            .await;
            let approved = control(
                &sims.ot,
                "partner/approve",
                json!({"node_id": uploaded["node_id"]}),
            )
            .await;
            if approved["callback"]["status"] != 202 {
                bridge.restart().await;
                let again = control(
                    &sims.ot,
                    "partner/approve",
                    json!({"node_id": uploaded["node_id"]}),
                )
                .await;
                assert_eq!(again["callback"]["status"], 202, "{again}");
            }
        }
    }
}

/// Sends the change webhook of `module/id` again until the (restarted) bridge accepts it.
async fn resend_change(sims: &Sims, bridge: &mut BridgeProcess, module: &str, id: &str) {
    bridge.restart().await;
    let sent = control(
        &sims.ap,
        "webhooks/send",
        json!({"module": module, "object_id": id, "event": "moduleobject_modify"}),
    )
    .await;
    assert_eq!(sent["Ok"]["status"], 202, "{sent}");
}

/// The decision callback of `pid` again, as OpenText's side would retry it.
async fn resend_callback(sims: &Sims, bridge: &BridgeProcess, pid: i64) {
    let body = json!({
        "event_id": format!("retry-{pid}"), "type": "workflow.decision",
        "workflow": {"process_id": pid, "decision": "approved", "comment": "checked",
                     "approver": "jdoe", "decided_at": chrono::Utc::now().to_rfc3339()},
    })
    .to_string()
    .into_bytes();
    let _ = sims;
    let response = signed(
        &reqwest::Client::new(),
        &format!("{}/webhooks/opentext", bridge.base),
        common::OPENTEXT_SECRET,
        &format!("retry-{pid}"),
        &body,
    )
    .send()
    .await
    .expect("callback");
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
}

/// Waits until the bridge has nothing left to do (`false`) or has crashed (`true`).
async fn settle_or_crash(bridge: &mut BridgeProcess) -> bool {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if bridge.has_exited() {
            return true;
        }
        if let Some(status) = bridge.try_status().await {
            let backlog = &status["backlog"];
            if backlog["events"] == 0 && backlog["jobs"] == 0 {
                if status["dead_letters"] != 0 {
                    bridge.fail(&format!("dead letters: {status}"));
                }
                return false;
            }
        }
        if Instant::now() > deadline {
            bridge.fail("neither settled nor crashed");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn control(sim: &SimHandle, path: &str, body: Value) -> Value {
    reqwest::Client::new()
        .post(format!("{}/{path}", sim.control_url()))
        .json(&body)
        .send()
        .await
        .expect("control request")
        .json()
        .await
        .expect("control answer")
}

fn processes(ot: &SimHandle) -> Vec<Value> {
    ot.state()["processes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn only_process(ot: &SimHandle) -> i64 {
    let running = processes(ot);
    assert_eq!(running.len(), 1, "one workflow: {running:#?}");
    running[0]["id"].as_i64().expect("process id")
}

/// Writes to the simulator, as `METHOD path`, counted.
fn write_counts(sim: &SimHandle) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in sim.requests().into_iter().filter(|r| r.is_write()) {
        *counts
            .entry(format!("{} {}", r.method, r.path))
            .or_default() += 1;
    }
    counts
}

/// Every workspace of `bo_type` holds each name once, each document in one version.
fn unique_contents(nodes: &Nodes, bo_type: &str, problems: &mut Vec<String>) {
    for ws in nodes.workspaces_of(bo_type) {
        for node in nodes.descendants(ws) {
            if nodes.same_name_siblings(node) > 1 {
                problems.push(format!("{} exists twice", node["name"]));
            }
            if node["type"] == 144 && node["versions"].as_array().map_or(0, Vec::len) != 1 {
                problems.push(format!(
                    "{} has {} versions",
                    node["name"],
                    node["versions"].as_array().map_or(0, Vec::len)
                ));
            }
        }
    }
}

fn expect(problems: &mut Vec<String>, what: &str, found: usize, wanted: usize) {
    if found != wanted {
        problems.push(format!("{what}: {found}, expected {wanted}"));
    }
}

fn check_change(sims: &Sims) -> Vec<String> {
    let mut problems = Vec::new();
    let nodes = Nodes::of(&sims.ot);
    expect(
        &mut problems,
        "change workspaces",
        nodes.workspaces_of("product_change").len(),
        1,
    );
    unique_contents(&nodes, "product_change", &mut problems);
    expect(&mut problems, "workflows", processes(&sims.ot).len(), 1);
    let product = &sims.ap.state()["objects"]["product"][ids::PRODUCT_PUMP_A100];
    if product["approval_status"][0]["value"] != "approved" {
        problems.push(format!("decision not written back: {product}"));
    }
    let writes = write_counts(&sims.ap);
    let write_backs: usize = writes
        .iter()
        .filter(|(k, _)| k.contains("/modules/product/"))
        .map(|(_, n)| n)
        .sum();
    expect(&mut problems, "write-backs to the product", write_backs, 1);
    problems
}

fn check_compliance(sims: &Sims) -> Vec<String> {
    let mut problems = Vec::new();
    let nodes = Nodes::of(&sims.ot);
    expect(
        &mut problems,
        "compliance workspaces",
        nodes.workspaces_of("product_compliance").len(),
        1,
    );
    unique_contents(&nodes, "product_compliance", &mut problems);
    expect(
        &mut problems,
        "review workflows",
        processes(&sims.ot).len(),
        1,
    );
    problems
}

fn check_partner(sims: &Sims) -> Vec<String> {
    let mut problems = Vec::new();
    let nodes = Nodes::of(&sims.ot);
    expect(
        &mut problems,
        "partner workspaces",
        nodes.workspaces_of("partner_product").len(),
        2,
    );
    unique_contents(&nodes, "partner_product", &mut problems);
    let state = sims.ap.state();
    let files = state["objects"]["file"]
        .as_object()
        .map(|o| {
            o.values()
                .filter(|f| f["asset_type"][0]["value"] == "partner_document")
                .count()
        })
        .unwrap_or(0);
    expect(&mut problems, "imported partner documents", files, 1);
    let writes = write_counts(&sims.ap);
    let count = |wanted: &dyn Fn(&str) -> bool| -> usize {
        writes
            .iter()
            .filter(|(k, _)| wanted(k))
            .map(|(_, n)| n)
            .sum()
    };
    expect(
        &mut problems,
        "file object creates",
        count(&|k| k == "PATCH /api/modules/file/objects"),
        1,
    );
    expect(
        &mut problems,
        "content uploads",
        count(&|k| k.starts_with("PUT /api/modules/file/objects/")),
        1,
    );
    let with_content = state["objects"]["file"]
        .as_object()
        .into_iter()
        .flat_map(|o| o.values())
        .filter(|f| f["asset_type"][0]["value"] == "partner_document")
        .all(|f| f["_media"]["Original"]["sha256"].is_string());
    if !with_content {
        problems.push("an imported document has no content".into());
    }
    expect(
        &mut problems,
        "links to the product",
        count(&|k| k == "PATCH /api/modules/product/objects"),
        1,
    );
    problems
}

fn check_archival(sims: &Sims) -> Vec<String> {
    let mut problems = Vec::new();
    let nodes = Nodes::of(&sims.ot);
    let archives = nodes.workspaces_of("product_archive");
    expect(&mut problems, "archive workspaces", archives.len(), 1);
    unique_contents(&nodes, "product_archive", &mut problems);
    let writes = write_counts(&sims.ot);
    let count = |suffix: &str| -> usize {
        writes
            .iter()
            .filter(|(k, _)| k.ends_with(suffix))
            .map(|(_, n)| n)
            .sum()
    };
    expect(
        &mut problems,
        "finalizations",
        count("/rmclassifications/finalizerecords"),
        1,
    );
    expect(&mut problems, "holds applied", count("/holds"), 1);
    if let Some(ws) = archives.first() {
        let finalized = nodes
            .descendants(ws)
            .iter()
            .filter(|n| n["finalized"] == true)
            .count();
        if finalized == 0 {
            problems.push("no record finalized".into());
        }
    }
    problems
}

fn check_family(sims: &Sims) -> Vec<String> {
    let mut problems = Vec::new();
    let nodes = Nodes::of(&sims.ot);
    let families = nodes.workspaces_of("product_family");
    expect(&mut problems, "family workspaces", families.len(), 1);
    let Some(ws) = families.first() else {
        return problems;
    };
    for node in nodes.descendants(ws) {
        if nodes.same_name_siblings(node) > 1 {
            problems.push(format!("{} exists twice", node["name"]));
        }
        if node["type"] != 144 {
            continue;
        }
        // The manual got a new edition: exactly one version more; nothing else changed.
        let wanted = if node["name"] == "pumps-manual.pdf" {
            2
        } else {
            1
        };
        let versions = node["versions"].as_array().map_or(0, Vec::len);
        if versions != wanted {
            problems.push(format!("{} has {versions} versions", node["name"]));
        }
    }
    problems
}
