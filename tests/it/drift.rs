//! Reconciling from what OpenText holds, and the dependency index: a document deleted, a
//! version added, a category value edited or a relation removed in OpenText is shown by
//! `plan` and repaired by a resync; an unchanged workspace is verified with a bounded number
//! of reads; a new datasheet content reaches every workspace holding it, by webhook and by
//! the polling feed, with no event on the product.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use xecm_bridge::clients::FileUpload;
use xecm_bridge::clients::opentext::VersionCreate;
use xecm_bridge::flows::AllportalChangeFeed;
use xecm_bridge::sim::SimHandle;
use xecm_bridge::sim::allportal::{self as ap_sim, ids};
use xecm_bridge::sim::opentext as ot_sim;
use xecm_bridge::store::{RESYNC_KIND, StoredEvent, now_millis};
use xecm_bridge::worker::audit::{audit_round, audits, last_round};
use xecm_bridge::worker::reconcile::reconcile_allportal;

use crate::common::TestDb;
use crate::flows_e2e::{Bridge, Nodes, start, versions};

fn product_key() -> String {
    format!("product/{}", ids::PRODUCT_PUMP_A100)
}

/// Someone working in OpenText directly: a session of their own.
async fn ot_user(ot: &SimHandle) -> (reqwest::Client, String) {
    let http = reqwest::Client::new();
    let answer: Value = http
        .post(format!("{}/api/v1/auth", ot.base_url()))
        .form(&[
            ("username", ot_sim::SAMPLE_ADMIN_USER),
            ("password", ot_sim::SAMPLE_ADMIN_PASSWORD),
        ])
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("ticket");
    let ticket = answer["ticket"].as_str().expect("ticket").to_string();
    (http, ticket)
}

async fn ot_delete(ot: &SimHandle, path: &str) {
    let (http, ticket) = ot_user(ot).await;
    let status = http
        .delete(format!("{}{path}", ot.base_url()))
        .header("OTCSTicket", ticket)
        .send()
        .await
        .expect("delete")
        .status();
    assert!(status.is_success(), "DELETE {path}: {status}");
}

fn upload(content: &[u8], name: &str, mime: &str) -> FileUpload {
    let bytes = bytes::Bytes::copy_from_slice(content);
    FileUpload::new(
        futures::stream::once(async move { Ok::<_, std::io::Error>(bytes) }),
        content.len() as u64,
        name,
        mime,
    )
}

/// A resync event as `POST /api/v1/plan` builds it.
fn resync_event(key: &str) -> StoredEvent {
    let (module, id) = key.split_once('/').unwrap();
    StoredEvent {
        id: "plan".into(),
        source: "allportal".into(),
        source_event_id: "plan".into(),
        kind: RESYNC_KIND.into(),
        module: Some(module.into()),
        object_id: Some(id.into()),
        object_key: Some(key.into()),
        payload: json!({}),
        raw_body: Vec::new(),
        headers: json!({}),
        received_at: 0,
        state: "pending".into(),
        attempts: 0,
        next_attempt_at: 0,
        last_error: None,
        updated_at: 0,
    }
}

async fn plan(bridge: &Bridge, flow: &str, key: &str) -> Vec<String> {
    let plans = bridge
        .flows
        .plan(Some(flow), &resync_event(key))
        .await
        .expect("plan");
    plans[0]
        .operations
        .iter()
        .map(|o| o.description.clone())
        .collect()
}

async fn resync(bridge: &Bridge, flow: &str, key: &str) {
    bridge
        .store()
        .resync(Some(flow), key, now_millis())
        .await
        .expect("resync");
    bridge.settle().await;
}

fn id_of(node: &Value) -> i64 {
    node["id"].as_i64().expect("node id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drift_in_opentext_is_planned_then_repaired_by_a_resync() {
    let bridge = start(&["family", "launch"]).await;
    bridge
        .webhook("product_family", ids::FAMILY_PUMPS, "moduleobject_modify")
        .await;
    bridge
        .webhook("product", ids::PRODUCT_PUMP_A100, "moduleobject_modify")
        .await;
    let key = product_key();
    assert!(
        plan(&bridge, "launch", &key).await.is_empty(),
        "nothing drifted yet"
    );

    // Someone deletes a document, adds a version to another, edits a category value of the
    // workspace and removes the relation to the family workspace.
    let nodes = Nodes::of(&bridge.ot);
    let ws = nodes.workspace("product", ids::PRODUCT_PUMP_A100);
    let ws_id = id_of(ws);
    let master = nodes.child(ws, "Master Data");
    let json_doc = id_of(nodes.child(master, "4711 master data.json"));
    let html_doc = id_of(nodes.child(master, "4711 master data.html"));
    let family = id_of(nodes.workspace("product_family", ids::FAMILY_PUMPS));
    ot_delete(&bridge.ot, &format!("/api/v2/nodes/{json_doc}")).await;
    bridge
        .clients
        .opentext
        .upload_version(
            html_doc,
            &VersionCreate {
                description: Some("edited by hand".into()),
                add_major_version: false,
            },
            upload(b"<p>hand-made</p>", "4711 master data.html", "text/html"),
        )
        .await
        .expect("a version by someone else");
    bridge
        .clients
        .opentext
        .update_category(
            ws_id,
            9830,
            &BTreeMap::from([("9830_5".to_string(), json!("Edited by hand"))]),
            None,
        )
        .await
        .expect("category edit");
    ot_delete(
        &bridge.ot,
        &format!("/api/v2/businessworkspaces/{ws_id}/relateditems/{family}"),
    )
    .await;

    // The plan shows each repair, and makes none.
    bridge.clear_logs();
    let planned = plan(&bridge, "launch", &key).await;
    assert!(bridge.ot_writes().is_empty(), "{:?}", bridge.ot_writes());
    for expected in [
        "re-upload `4711 master data.json` (deleted in OpenText)",
        "add a version to `4711 master data.html` (changed in OpenText)",
        "update category 9830 of the workspace: 9830_5",
        "(removed in OpenText)",
    ] {
        assert!(
            planned.iter().any(|p| p.contains(expected)),
            "`{expected}` not in {planned:?}"
        );
    }
    assert_eq!(planned.len(), 4, "{planned:?}");

    // A resync repairs it all.
    resync(&bridge, "launch", &key).await;
    let nodes = Nodes::of(&bridge.ot);
    let ws = nodes.workspace("product", ids::PRODUCT_PUMP_A100);
    assert_eq!(ws["categories"]["9830"]["9830_5"], "Pump A100");
    let master = nodes.child(ws, "Master Data");
    let restored = nodes.child(master, "4711 master data.json");
    let snapshot: Value = serde_json::from_slice(&bridge.download(id_of(restored)).await).unwrap();
    assert_eq!(snapshot["id"], ids::PRODUCT_PUMP_A100);
    let html = nodes.child(master, "4711 master data.html");
    assert_eq!(
        versions(html),
        3,
        "the bridge's content is the newest again"
    );
    let text = String::from_utf8(bridge.download(id_of(html)).await).unwrap();
    assert!(text.starts_with("<!DOCTYPE html>"), "{text}");
    let related = serde_json::to_string(&ws["workspace"]).unwrap()
        + &serde_json::to_string(
            &nodes.workspace("product_family", ids::FAMILY_PUMPS)["workspace"],
        )
        .unwrap();
    assert!(related.contains(&family.to_string()), "{related}");

    // Repaired: the next plan is empty again.
    assert!(plan(&bridge, "launch", &key).await.is_empty());
    bridge.stop().await;
}

/// OpenText requests of one resync of an unchanged workspace (logins aside), all reads. Member
/// searches of the team are left out: each client caches them for a minute, and this harness
/// runs two workers (tests/it/teams.rs bounds them).
async fn verification_reads(bridge: &Bridge, flow: &str, key: &str) -> Vec<String> {
    bridge.clear_logs();
    resync(bridge, flow, key).await;
    assert!(bridge.ot_writes().is_empty(), "{:?}", bridge.ot_writes());
    bridge
        .ot
        .requests()
        .into_iter()
        .filter(|r| !r.path.ends_with("/api/v1/auth") && !r.path.ends_with("/api/v2/members"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unchanged_workspace_is_verified_with_a_bounded_number_of_reads() {
    let bridge = start(&["family", "launch", "compliance"]).await;
    bridge
        .webhook("product_family", ids::FAMILY_PUMPS, "moduleobject_modify")
        .await;
    bridge
        .webhook("product", ids::PRODUCT_PUMP_A100, "moduleobject_modify")
        .await;

    // launch: workspace look-up, its categories, its related workspaces, one listing of the
    // workspace and of each of its four folders (Master Data, Technical Specifications,
    // Pricing, Marketing Assets); the team: the roles and the members of each of its three.
    let reads = verification_reads(&bridge, "launch", &product_key()).await;
    println!("launch: {} reads: {reads:#?}", reads.len());
    assert_eq!(reads.len(), 8 + 4, "{reads:#?}");
    let listings = reads.iter().filter(|r| r.ends_with("/nodes")).count();
    assert_eq!(listings, 5, "one listing per folder: {reads:#?}");

    // family (no workspace categories, no relations): workspace look-up, one listing of the
    // workspace and one of the folder that holds its one document (Manuals); the team's roles
    // and the members of its two.
    let family = format!("product_family/{}", ids::FAMILY_PUMPS);
    let reads = verification_reads(&bridge, "family", &family).await;
    println!("family: {} reads: {reads:#?}", reads.len());
    assert_eq!(reads.len(), 3 + 3, "{reads:#?}");

    let reads = verification_reads(&bridge, "compliance", &product_key()).await;
    println!("compliance: {} reads: {reads:#?}", reads.len());
    // Workspace search and categories, its listing and one per folder holding documents
    // (Claims, Images, Brochures), and the categories of each of its 4 documents; the team's
    // roles and the members of its two.
    assert_eq!(reads.len(), 10 + 3, "{reads:#?}");
    let categories = reads.iter().filter(|r| r.ends_with("/categories")).count();
    assert_eq!(categories, 5, "{reads:#?}");
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn account_and_partner_workspaces_are_verified_with_a_bounded_number_of_reads() {
    let bridge = workspaces_holding_the_datasheet().await;
    let account = format!("opportunity/{}", ids::OPPORTUNITY_ACME_2025);
    let reads = verification_reads(&bridge, "account", &account).await;
    println!("account: {} reads: {reads:#?}", reads.len());
    // The opportunity's workspace (found, no categories mapped), its listing and one listing
    // per folder: Products, Configurations, Images, Brochures; the team's roles and the
    // members of its one.
    assert_eq!(reads.len(), 6 + 2, "{reads:#?}");
    let partner = format!("partner/{}", ids::PARTNER_DISTRIBUTOR);
    let reads = verification_reads(&bridge, "partner", &partner).await;
    println!("partner: {} reads: {reads:#?}", reads.len());
    // One workspace per partner product (two): each looked up and listed, with one listing
    // per folder holding content (three for the pump, one for the other product); in each,
    // the team's roles, the members of its two and the Assigned Access of the upload folder.
    assert_eq!(reads.len(), 8 + 2 * 4, "{reads:#?}");
    bridge.stop().await;
}

/// Replaces the original of the A100 datasheet in 4ALLPORTAL (no event on the product).
async fn new_datasheet(bridge: &Bridge, content: &[u8]) {
    bridge
        .clients
        .allportal
        .upload_media(
            "file",
            ids::FILE_A100_DATASHEET,
            None,
            upload(content, "pump-a100-datasheet.pdf", "application/pdf"),
        )
        .await
        .expect("upload media");
}

/// Builds the launch, account and partner workspaces that hold the A100 datasheet.
async fn workspaces_holding_the_datasheet() -> Bridge {
    let bridge = start(&["launch", "account", "partner"]).await;
    let created = bridge
        .http
        .post(format!("{}/workspaces", bridge.ot.control_url()))
        .json(&json!({"wksp_type_id": 103, "name": "ACME retrofit (CRM)",
                      "bo_type": "opportunity", "bo_id": ids::OPPORTUNITY_ACME_2025}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());
    bridge
        .webhook("product", ids::PRODUCT_PUMP_A100, "moduleobject_modify")
        .await;
    bridge
        .webhook(
            "opportunity",
            ids::OPPORTUNITY_ACME_2025,
            "moduleobject_modify",
        )
        .await;
    bridge
        .webhook("partner", ids::PARTNER_DISTRIBUTOR, "moduleobject_modify")
        .await;
    assert_eq!(datasheets(&bridge).len(), 3, "held by three workspaces");
    bridge
}

/// Every node named like the datasheet, with its newest content's SHA-256.
fn datasheets(bridge: &Bridge) -> Vec<(i64, usize, Value)> {
    let nodes = Nodes::of(&bridge.ot);
    nodes
        .0
        .iter()
        .filter(|n| n["name"] == "pump-a100-datasheet.pdf")
        .map(|n| {
            let list = n["versions"].as_array().cloned().unwrap_or_default();
            (id_of(n), list.len(), list.last().unwrap()["sha256"].clone())
        })
        .collect()
}

fn assert_new_versions(bridge: &Bridge, content: &[u8]) {
    let wanted = json!(xecm_bridge::flows::hash::sha256_hex(content));
    let found = datasheets(bridge);
    assert_eq!(found.len(), 3, "{found:?}");
    for (node, count, sha) in found {
        assert_eq!(count, 2, "node {node}: one new version");
        assert_eq!(sha, wanted, "node {node} holds the new content");
    }
}

fn no_product_event(events: &[StoredEvent]) {
    assert!(
        events
            .iter()
            .all(|e| e.kind == RESYNC_KIND || e.module.as_deref() == Some("file")),
        "{:?}",
        events
            .iter()
            .map(|e| (&e.kind, &e.object_key))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_datasheet_reaches_every_workspace_holding_it_by_webhook() {
    let bridge = workspaces_holding_the_datasheet().await;
    let before = bridge.events(None).await.len();
    let content = ap_sim::sample_pdf("Pump A100 datasheet, revision B");
    new_datasheet(&bridge, &content).await;
    bridge
        .webhook("file", ids::FILE_A100_DATASHEET, "moduleobject_modify")
        .await;
    assert_new_versions(&bridge, &content);
    let events = bridge.events(None).await;
    no_product_event(&events[..events.len() - before]);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_datasheet_reaches_every_workspace_holding_it_by_polling() {
    let bridge = workspaces_holding_the_datasheet().await;
    let feed = AllportalChangeFeed::new(
        bridge.clients.allportal.clone(),
        vec!["product".into(), "opportunity".into(), "partner".into()],
    );
    let store = bridge.store();
    // The first round sets the cursor; the datasheet changes after it.
    reconcile_allportal(store.as_ref(), &feed, now_millis())
        .await
        .expect("first round");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let before = bridge.events(None).await.len();
    let content = ap_sim::sample_pdf("Pump A100 datasheet, revision C");
    new_datasheet(&bridge, &content).await;
    let found = reconcile_allportal(store.as_ref(), &feed, now_millis())
        .await
        .expect("polling round");
    assert_eq!(found, 1, "the file's change, found by polling its module");
    bridge.settle().await;
    assert_new_versions(&bridge, &content);
    let events = bridge.events(None).await;
    no_product_event(&events[..events.len() - before]);
    bridge.stop().await;
}

// ------------------------------------------------------------------------------------------
// the index in the store, on both backends
// ------------------------------------------------------------------------------------------

crate::backend_tests!(
    dependencies_are_replaced_per_run_and_fan_out_to_resyncs,
    links_are_walked_in_key_order,
    the_audit_walks_the_links_round_robin,
);

async fn dependencies_are_replaced_per_run_and_fan_out_to_resyncs(db: &TestDb) {
    let store = &db.store;
    let deps = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    store
        .set_dependencies("launch", "product/1", &deps(&["file/77", "file/78"]))
        .await
        .unwrap();
    store
        .set_dependencies("account", "opportunity/9", &deps(&["product/1", "file/77"]))
        .await
        .unwrap();
    assert_eq!(
        store.dependents("file/77").await.unwrap(),
        [
            ("account".to_string(), "opportunity/9".to_string()),
            ("launch".to_string(), "product/1".to_string())
        ]
    );
    assert_eq!(
        store.dependency_modules().await.unwrap(),
        ["file", "product"]
    );
    // A later run no longer uses file/77: its entry vanishes.
    store
        .set_dependencies("launch", "product/1", &deps(&["file/78"]))
        .await
        .unwrap();
    assert_eq!(
        store.dependents("file/77").await.unwrap(),
        [("account".to_string(), "opportunity/9".to_string())]
    );

    // Storing a change of file/78 stores a resync of the launch run with it, once however often
    // the change is delivered; a resync fans out to nothing.
    let change = || crate::common::event("delivery-1", "file/78", 1_000);
    let first = store.insert_events(vec![change()]).await.unwrap();
    let again = store.insert_events(vec![change()]).await.unwrap();
    assert_eq!(first.len(), 1, "the receipt names the change alone");
    assert!(matches!(
        first[0],
        xecm_bridge::store::InsertOutcome::Accepted(_)
    ));
    assert!(matches!(
        again[0],
        xecm_bridge::store::InsertOutcome::Duplicate(_)
    ));
    let stored = store.unrouted_events(10).await.unwrap();
    let resyncs: Vec<&StoredEvent> = stored.iter().filter(|e| e.kind == RESYNC_KIND).collect();
    assert_eq!(stored.len(), 2, "the change and one resync: {stored:?}");
    assert_eq!(resyncs.len(), 1);
    assert_eq!(resyncs[0].object_key.as_deref(), Some("product/1"));
    assert_eq!(resyncs[0].payload["flow"], "launch");
    assert_eq!(resyncs[0].payload["dependency"], "file/78");
    assert_eq!(resyncs[0].payload["cause"]["source_event_id"], "delivery-1");
    // A resync of file/78 itself (by hand) resyncs nothing else.
    let mut by_hand = crate::common::event("resync-by-hand", "file/78", 2_000);
    by_hand.kind = RESYNC_KIND.into();
    store.insert_events(vec![by_hand]).await.unwrap();
    assert_eq!(store.unrouted_events(10).await.unwrap().len(), 3);
}

async fn put_links(db: &TestDb) {
    let store = &db.store;
    for (flow, key) in [
        ("launch", "product/2"),
        ("family", "product_family/1"),
        ("launch", "product/1"),
    ] {
        store
            .put_link(&xecm_bridge::store::LinkRecord {
                flow: flow.into(),
                object_key: key.into(),
                workspace_id: Some(1),
                state: json!({}),
                updated_at: 0,
            })
            .await
            .unwrap();
    }
}

async fn links_are_walked_in_key_order(db: &TestDb) {
    put_links(db).await;
    let store = &db.store;
    let first = store.links_after(None, 2).await.unwrap();
    assert_eq!(
        first,
        [
            ("family".to_string(), "product_family/1".to_string()),
            ("launch".to_string(), "product/1".to_string())
        ]
    );
    let (flow, key) = &first[1];
    let rest = store.links_after(Some((flow, key)), 2).await.unwrap();
    assert_eq!(rest, [("launch".to_string(), "product/2".to_string())]);
    assert!(
        store
            .links_after(Some(("launch", "product/2")), 2)
            .await
            .unwrap()
            .is_empty()
    );
}

fn every_link(_: &str, _: &str) -> bool {
    true
}

async fn the_audit_walks_the_links_round_robin(db: &TestDb) {
    put_links(db).await;
    let store = db.store.as_ref();
    assert_eq!(last_round(store).await.unwrap(), None);
    let first = audit_round(store, 2, &every_link, 1_000).await.unwrap();
    assert_eq!(
        first.objects,
        ["family:product_family/1", "launch:product/1"]
    );
    assert!(!first.wrapped);
    let second = audit_round(store, 2, &every_link, 2_000).await.unwrap();
    assert_eq!(second.objects, ["launch:product/2"]);
    assert!(
        second.wrapped,
        "the end of the links: the next round starts over"
    );
    assert_eq!(last_round(store).await.unwrap(), Some(second));
    let third = audit_round(store, 2, &every_link, 3_000).await.unwrap();
    assert_eq!(third.objects, first.objects);
    // Each audited object got a resync naming its flow.
    let events = store.unrouted_events(10).await.unwrap();
    assert_eq!(events.len(), 5);
    assert!(events.iter().all(|e| e.kind == RESYNC_KIND));
    assert_eq!(events[2].payload["flow"], "launch");
    assert_eq!(events[2].object_key.as_deref(), Some("product/2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_restores_a_document_deleted_in_opentext() {
    let bridge = start(&["launch", "compliance"]).await;
    bridge
        .webhook("product", ids::PRODUCT_PUMP_A100, "moduleobject_modify")
        .await;
    let nodes = Nodes::of(&bridge.ot);
    let ws = nodes.workspace("product", ids::PRODUCT_PUMP_A100);
    let folder = nodes.child(ws, "Technical Specifications");
    let datasheet = id_of(nodes.child(folder, "pump-a100-datasheet.pdf"));
    ot_delete(&bridge.ot, &format!("/api/v2/nodes/{datasheet}")).await;

    // The compliance flow keeps a link for the product and one for its workspace's own key
    // (`product_compliance/…`); only the product is resynced.
    let links = bridge.store().links_after(None, 50).await.unwrap();
    assert!(
        links
            .iter()
            .any(|(_, k)| k.starts_with("product_compliance/")),
        "{links:?}"
    );
    let router = xecm_bridge::worker::Router::new(bridge.flows.as_worker_flows());
    let audited = |flow: &str, key: &str| audits(&router, flow, key);
    let round = audit_round(bridge.store().as_ref(), 50, &audited, now_millis())
        .await
        .expect("audit round");
    assert_eq!(
        round.objects,
        [
            format!("compliance:{}", product_key()),
            format!("launch:{}", product_key())
        ]
    );
    bridge.settle().await;
    let nodes = Nodes::of(&bridge.ot);
    let ws = nodes.workspace("product", ids::PRODUCT_PUMP_A100);
    let folder = nodes.child(ws, "Technical Specifications");
    let restored = nodes.child(folder, "pump-a100-datasheet.pdf");
    assert_ne!(id_of(restored), datasheet, "uploaded again");
    assert_eq!(
        restored["versions"][0]["sha256"],
        json!(xecm_bridge::flows::hash::sha256_hex(&ap_sim::sample_pdf(
            "Pump A100 datasheet"
        )))
    );
    let (state, _) = bridge.last_outcome("launch").await;
    assert_eq!(state, "done");
    assert!(bridge.events(Some("dead")).await.is_empty());

    // The admin API shows the round.
    let app = bridge.app.as_ref().expect("running");
    let answer: Value = bridge
        .http
        .get(app.url("/api/v1/audit"))
        .bearer_auth(crate::common::ADMIN_TOKEN)
        .send()
        .await
        .expect("GET /api/v1/audit")
        .json()
        .await
        .expect("JSON");
    assert_eq!(answer["config"]["interval_secs"], 3600, "{answer}");
    assert_eq!(
        answer["last_round"]["objects"][1],
        json!(format!("launch:{}", product_key())),
        "{answer}"
    );
    bridge.stop().await;
}
