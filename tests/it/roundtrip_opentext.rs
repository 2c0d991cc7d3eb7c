//! Round trips: the real OpenText client against the real OpenText simulator over loopback.
//! Every client operation is checked twice — by what the client returns and by what the
//! simulator then holds (`SimHandle::state()`, once also `GET /_sim/state` over HTTP) — so a
//! request the simulator misread cannot pass just because the client parsed its own echo.
//! Fault injection goes through the client too: an outage window with `Retry-After`, and an
//! error rate that opens the circuit breaker. Waits are bounded; nothing asserts timings.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use secrecy::SecretString;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use url::Url;
use xecm_bridge::clients::config::{OpentextAuth, OpentextConfig, TransportConfig};
use xecm_bridge::clients::file::FileUpload;
use xecm_bridge::clients::opentext::{
    BusinessObject, DocumentCreate, NodeId, OpentextClient, RecordDetails, RelationType,
    VersionCreate, WorkflowState, WorkspaceCreate, WorkspaceRoles,
};
use xecm_bridge::clients::{CircuitState, UpstreamError};
use xecm_bridge::sim::opentext::{
    self, OpentextSimOptions, SAMPLE_ADMIN_PASSWORD, SAMPLE_ADMIN_USER, SAMPLE_OAUTH_CLIENT_ID,
    SAMPLE_OAUTH_CLIENT_SECRET, sample_ids,
};
use xecm_bridge::sim::{FaultSettings, SimHandle};

/// Files above this go through the Large File Upload API.
const THRESHOLD: u64 = 64 * 1024;
/// Part size the simulator assigns to upload sessions (several parts for a small file).
const SIM_PART: u64 = 48 * 1024;
const CATEGORY: i64 = sample_ids::CATEGORY_PRODUCT;

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("socket address")
}

async fn start() -> SimHandle {
    let opts = OpentextSimOptions {
        multipart_part_size: SIM_PART,
        ..Default::default()
    };
    opentext::spawn(any_port(), opts)
        .await
        .expect("simulator starts")
}

/// Short deadlines, quick backoff that still honours a `Retry-After` of up to 2 s, and a
/// circuit that opens after four failures and probes again after one second.
fn transport() -> TransportConfig {
    TransportConfig {
        connect_timeout_secs: 2,
        request_timeout_secs: 10,
        max_retries: 4,
        backoff_base_ms: 10,
        backoff_max_ms: 2_000,
        circuit_failure_rate: 0.5,
        circuit_min_requests: 4,
        circuit_window_secs: 60,
        circuit_open_secs: 1,
    }
}

fn config(sim: &SimHandle, auth: OpentextAuth) -> OpentextConfig {
    OpentextConfig {
        base_url: Url::parse(&sim.base_url()).expect("base URL"),
        auth,
        username: SAMPLE_ADMIN_USER.into(),
        password: SecretString::from(SAMPLE_ADMIN_PASSWORD),
        domain: None,
        // Derived from the Content Server origin, where the simulator serves OTDS too.
        otds_url: None,
        client_id: Some(SAMPLE_OAUTH_CLIENT_ID.into()),
        client_secret: Some(SecretString::from(SAMPLE_OAUTH_CLIENT_SECRET)),
        ext_system_id: "4ALLPORTAL".into(),
        multipart_threshold_bytes: THRESHOLD,
        multipart_part_bytes: 1024 * 1024,
        ca_file: None,
        client_cert_file: None,
        client_key_file: None,
        max_requests_per_sec: 0.0,
        max_concurrent_requests: 0,
        rate_limit_replicas: 1,
        transport: transport(),
    }
}

fn client(sim: &SimHandle) -> OpentextClient {
    OpentextClient::new(&config(sim, OpentextAuth::Otcs)).expect("client")
}

fn bo(bo_id: &str) -> BusinessObject {
    BusinessObject {
        ext_system_id: "4ALLPORTAL".into(),
        bo_type: "product".into(),
        bo_id: bo_id.into(),
    }
}

/// A product launch workspace linked to `bo_id`, with one category value from the template's
/// category.
fn launch_workspace(name: &str, bo_id: &str) -> WorkspaceCreate {
    let values = BTreeMap::from([(format!("{CATEGORY}_2"), json!(bo_id))]);
    WorkspaceCreate {
        template_id: Some(sample_ids::template_of(sample_ids::TYPE_PRODUCT_LAUNCH)),
        wksp_type_id: Some(sample_ids::TYPE_PRODUCT_LAUNCH),
        name: name.into(),
        roles: Some(WorkspaceRoles {
            categories: BTreeMap::from([(CATEGORY.to_string(), values)]),
            rmclassifications: None,
        }),
        ..WorkspaceCreate::default()
    }
    .with_business_object(&bo(bo_id))
}

async fn new_workspace(ot: &OpentextClient, name: &str, bo_id: &str) -> NodeId {
    ot.create_workspace(&launch_workspace(name, bo_id))
        .await
        .expect("workspace created")
}

/// The simulator's view of one node.
fn node_state(sim: &SimHandle, id: NodeId) -> Value {
    sim.state()["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("node {id} not in the simulator state"))
}

/// Content that differs at every offset, so a dropped or repeated chunk changes the hash.
fn content(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt) ^ (i >> 8) as u8)
        .collect()
}

/// An upload streamed in 8 KiB chunks.
fn upload(bytes: &[u8], name: &str, mime: &str) -> FileUpload {
    let chunks: Vec<Result<Bytes, std::io::Error>> = bytes
        .chunks(8 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    FileUpload::new(
        futures::stream::iter(chunks),
        bytes.len() as u64,
        name,
        mime,
    )
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Requests the simulator answered for `path` (API paths under the Content Server base).
fn requests_to(sim: &SimHandle, method: &str, path_prefix: &str) -> Vec<u16> {
    sim.requests()
        .into_iter()
        .filter(|r| r.method == method && r.path.starts_with(path_prefix))
        .map(|r| r.status)
        .collect()
}

#[tokio::test]
async fn every_login_mode_works_and_logs_in_again_after_ticket_expiry() {
    let sim = start().await;
    for mode in [OpentextAuth::Otcs, OpentextAuth::Otds, OpentextAuth::Oauth2] {
        let ot = OpentextClient::new(&config(&sim, mode)).expect("client");
        let folder = ot
            .node(sample_ids::WORKSPACES_FOLDER)
            .await
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        assert_eq!(folder.id, sample_ids::WORKSPACES_FOLDER);
        assert!(!folder.name.is_empty());
        assert_eq!(ot.logins(), 1, "{mode:?}: one login for the first call");

        sim.clear_requests();
        sim.set_faults(FaultSettings {
            expire_tickets: true,
            ..FaultSettings::default()
        });
        let again = ot
            .node(sample_ids::WORKSPACES_FOLDER)
            .await
            .unwrap_or_else(|e| panic!("{mode:?} after expiry: {e}"));
        assert_eq!(again.id, folder.id);
        assert_eq!(ot.logins(), 2, "{mode:?}: exactly one re-login");
        let node_calls = requests_to(&sim, "GET", "/otcs/cs/api/v2/nodes/");
        assert_eq!(
            node_calls,
            [401, 200],
            "{mode:?}: the expired ticket was refused, the repeated call answered"
        );
    }
    // A wrong password is refused as such, not retried into a loop.
    let mut wrong = config(&sim, OpentextAuth::Otcs);
    wrong.password = SecretString::from("not-the-password");
    let refused = OpentextClient::new(&wrong)
        .expect("client")
        .node(sample_ids::WORKSPACES_FOLDER)
        .await;
    assert!(
        matches!(refused, Err(UpstreamError::Unauthorized { .. })),
        "{refused:?}"
    );
}

#[tokio::test]
async fn workspaces_are_found_created_upserted_and_related() {
    let sim = start().await;
    let ot = client(&sim);
    let key = bo("B-1001");
    assert_eq!(ot.find_workspace(&key).await.expect("search"), None);

    let ws = new_workspace(&ot, "Pump A100", "B-1001").await;
    let found = ot
        .find_workspace(&key)
        .await
        .expect("search")
        .expect("workspace found by its business object");
    assert_eq!(found.id, ws);
    assert_eq!(found.name, "Pump A100");
    assert_eq!(
        found.wnf_wksp_type_id,
        Some(sample_ids::TYPE_PRODUCT_LAUNCH)
    );
    let state = node_state(&sim, ws);
    assert_eq!(state["type"], 848);
    assert_eq!(
        state["workspace"]["references"],
        json!([{"ext_system_id": "4ALLPORTAL", "bo_type": "product", "bo_id": "B-1001"}])
    );
    assert_eq!(
        state["categories"][CATEGORY.to_string()]["9830_2"],
        "B-1001"
    );

    // Creating it again is a conflict to resolve by lookup, and creates nothing.
    let nodes_before = sim.state()["nodes"].as_array().map(Vec::len);
    let duplicate = ot
        .create_workspace(&launch_workspace("Pump A100", "B-1001"))
        .await;
    assert!(
        matches!(duplicate, Err(UpstreamError::Conflict { .. })),
        "{duplicate:?}"
    );
    assert_eq!(sim.state()["nodes"].as_array().map(Vec::len), nodes_before);

    // Bulk upsert: renames the existing workspace, creates a new one.
    let results = ot
        .upsert_workspaces(&[
            launch_workspace("Pump A100 (renamed)", "B-1001"),
            launch_workspace("Pump A200", "B-1002"),
        ])
        .await
        .expect("upsert");
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].id, Some(ws));
    let created = results[1].id.expect("second entry created");
    assert_ne!(created, ws);
    assert!(
        results
            .iter()
            .all(|r| r.error_message.as_deref().unwrap_or_default().is_empty()),
        "{results:?}"
    );
    assert_eq!(node_state(&sim, ws)["name"], "Pump A100 (renamed)");
    assert_eq!(
        node_state(&sim, created)["workspace"]["references"][0]["bo_id"],
        "B-1002"
    );

    // Relations are two-way: one call, visible from both sides.
    ot.add_related_workspace(ws, created, RelationType::Child)
        .await
        .expect("relate");
    let children = ot
        .related_workspaces(ws, Some(RelationType::Child), 1, 10)
        .await
        .expect("related list");
    assert_eq!(
        children.nodes.iter().map(|n| n.id).collect::<Vec<_>>(),
        [created]
    );
    let parents = ot
        .related_workspaces(created, Some(RelationType::Parent), 1, 10)
        .await
        .expect("related list");
    assert_eq!(parents.nodes.iter().map(|n| n.id).collect::<Vec<_>>(), [ws]);
    assert_eq!(
        node_state(&sim, ws)["workspace"]["related"],
        json!([[created, "child"]])
    );
}

#[tokio::test]
async fn a_create_carried_out_but_answered_as_duplicate_is_found_by_lookup() {
    let sim = start().await;
    let ot = client(&sim);
    sim.set_faults(FaultSettings {
        duplicate_creates: 1,
        ..FaultSettings::default()
    });
    let answer = ot
        .create_workspace(&launch_workspace("Valve V10", "B-2001"))
        .await;
    assert!(
        matches!(answer, Err(UpstreamError::Conflict { .. })),
        "{answer:?}"
    );
    let found = ot
        .find_workspace(&bo("B-2001"))
        .await
        .expect("search")
        .expect("the create was carried out");
    assert_eq!(node_state(&sim, found.id)["name"], "Valve V10");
}

#[tokio::test]
async fn categories_are_read_and_updated_with_their_metadata_token() {
    let sim = start().await;
    let ot = client(&sim);
    let ws = new_workspace(&ot, "Pump A100", "B-1001").await;

    let categories = ot.categories(ws).await.expect("categories");
    let product = categories
        .iter()
        .find(|c| c.category_id == CATEGORY)
        .expect("template category applied");
    assert_eq!(product.values.get("9830_2"), Some(&json!("B-1001")));

    let token = ot
        .category_metadata_token(ws, CATEGORY)
        .await
        .expect("state")
        .expect("a token for an applied category");
    let values = BTreeMap::from([("9830_3".to_string(), json!("launch_ready"))]);
    let next = ot
        .update_category(ws, CATEGORY, &values, Some(&token))
        .await
        .expect("update with a current token");
    assert_ne!(next.as_deref(), Some(token.as_str()), "a new token");
    assert_eq!(
        node_state(&sim, ws)["categories"][CATEGORY.to_string()]["9830_3"],
        "launch_ready"
    );

    // The old token is stale now: the server refuses, nothing changes.
    let stale = BTreeMap::from([("9830_3".to_string(), json!("draft"))]);
    let refused = ot.update_category(ws, CATEGORY, &stale, Some(&token)).await;
    assert!(
        matches!(refused, Err(UpstreamError::EditConflict { .. })),
        "{refused:?}"
    );
    assert_eq!(
        node_state(&sim, ws)["categories"][CATEGORY.to_string()]["9830_3"],
        "launch_ready"
    );

    // The token from the answer is the current one.
    let current = ot
        .category_metadata_token(ws, CATEGORY)
        .await
        .expect("state");
    assert_eq!(current, next);
    ot.update_category(ws, CATEGORY, &stale, current.as_deref())
        .await
        .expect("update with the fresh token");
    let reread = ot.categories(ws).await.expect("categories");
    assert_eq!(
        reread
            .iter()
            .find(|c| c.category_id == CATEGORY)
            .and_then(|c| c.values.get("9830_3")),
        Some(&json!("draft"))
    );

    // Applying a category twice is a conflict; a new one lands on the node.
    let again = ot.apply_category(ws, CATEGORY, &BTreeMap::new()).await;
    assert!(
        matches!(again, Err(UpstreamError::Conflict { .. })),
        "{again:?}"
    );
    let document_values = BTreeMap::from([(
        format!("{}_6", sample_ids::CATEGORY_DOCUMENT),
        json!("datasheet"),
    )]);
    ot.apply_category(ws, sample_ids::CATEGORY_DOCUMENT, &document_values)
        .await
        .expect("apply");
    assert_eq!(
        node_state(&sim, ws)["categories"][sample_ids::CATEGORY_DOCUMENT.to_string()]["9840_6"],
        "datasheet"
    );
}

#[tokio::test]
async fn folders_are_created_found_across_pages_and_names_validated() {
    let sim = start().await;
    let ot = client(&sim);
    let ws = new_workspace(&ot, "Pump A100", "B-1001").await;
    let parent = ot.create_folder(ws, "Sheets").await.expect("folder");
    assert_eq!(node_state(&sim, parent)["parent_id"], ws);
    let duplicate = ot.create_folder(ws, "Sheets").await;
    assert!(
        matches!(duplicate, Err(UpstreamError::Conflict { .. })),
        "{duplicate:?}"
    );

    // 105 names that contain "sheet" and sort before "Sheet": the server's loose name filter
    // returns them all, so the exact match is only on the second page of 100.
    for i in 0..105 {
        ot.create_folder(parent, &format!("A-Sheet {i:03}"))
            .await
            .expect("filler folder");
    }
    let target = ot.create_folder(parent, "Sheet").await.expect("folder");
    let found = ot
        .find_child(parent, "Sheet")
        .await
        .expect("search")
        .expect("found on page 2");
    assert_eq!(found.id, target);
    assert_eq!(found.node_type, Some(0));
    let pages: Vec<String> = sim
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(&format!("/nodes/{parent}/nodes")))
        .filter_map(|r| r.query)
        .collect();
    assert!(
        pages.iter().any(|q| q.contains("page=2")),
        "paged through: {pages:?}"
    );
    assert_eq!(
        ot.find_child(parent, "Sheet 1").await.expect("search"),
        None
    );

    let first = ot.children(parent, None, 1, 50).await.expect("page 1");
    assert_eq!(first.nodes.len(), 50);
    assert_eq!(first.paging.total_count, Some(106));
    assert!(first.has_next());
    let last = ot.children(parent, None, 3, 50).await.expect("page 3");
    assert_eq!(last.nodes.len(), 6);
    assert!(!last.has_next());

    let collisions = ot
        .validate_names(parent, &["A-Sheet 007", "Brand new", "Sheet"])
        .await
        .expect("validation");
    let mut taken: Vec<(String, NodeId)> = collisions.into_iter().map(|c| (c.name, c.id)).collect();
    taken.sort();
    assert_eq!(taken.len(), 2, "{taken:?}");
    assert_eq!(taken[0].0, "A-Sheet 007");
    assert_eq!(taken[1], ("Sheet".to_string(), target));
}

#[tokio::test]
async fn documents_get_versions_and_their_content_downloads() {
    let sim = start().await;
    let ot = client(&sim);
    let ws = new_workspace(&ot, "Pump A100", "B-1001").await;
    let folder = ot
        .find_child(ws, "Technical Specifications")
        .await
        .expect("search")
        .expect("template folder");

    let v1 = content(20_000, 1);
    let document = DocumentCreate {
        parent_id: folder.id,
        name: "datasheet.pdf".into(),
        description: Some("Pump A100 datasheet".into()),
        categories: BTreeMap::from([
            (
                "9840_2".to_string(),
                json!("a0000000-0000-4000-8000-000000000002"),
            ),
            ("9840_5".to_string(), json!(sha256_hex(&v1))),
        ]),
        ..DocumentCreate::default()
    };
    let doc = ot
        .upload_document(&document, upload(&v1, "datasheet.pdf", "application/pdf"))
        .await
        .expect("document created");
    let duplicate = ot
        .upload_document(&document, upload(&v1, "datasheet.pdf", "application/pdf"))
        .await;
    assert!(
        matches!(duplicate, Err(UpstreamError::Conflict { .. })),
        "{duplicate:?}"
    );

    let v2 = content(30_000, 2);
    let long_description = "x".repeat(300);
    ot.upload_version(
        doc,
        &VersionCreate {
            description: Some(long_description),
            add_major_version: true,
        },
        upload(&v2, "datasheet-v2.pdf", "application/pdf"),
    )
    .await
    .expect("version added");

    let versions = ot.versions(doc).await.expect("versions");
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0].file_size, Some(v1.len() as u64));
    assert_eq!(versions[1].file_size, Some(v2.len() as u64));
    assert_eq!(versions[1].file_name.as_deref(), Some("datasheet-v2.pdf"));
    assert_eq!(versions[1].mime_type.as_deref(), Some("application/pdf"));

    let state = node_state(&sim, doc);
    assert_eq!(state["parent_id"], folder.id);
    assert_eq!(state["description"], "Pump A100 datasheet");
    assert_eq!(state["versions"][0]["sha256"], sha256_hex(&v1));
    assert_eq!(state["versions"][1]["sha256"], sha256_hex(&v2));
    assert_eq!(
        state["versions"][1]["description"].as_str().map(str::len),
        Some(255),
        "descriptions are cut to the server's limit"
    );
    assert_eq!(state["categories"]["9840"]["9840_5"], sha256_hex(&v1));

    let download = ot.download_content(doc).await.expect("download");
    assert_eq!(download.length, Some(v2.len() as u64));
    assert_eq!(download.file_name.as_deref(), Some("datasheet-v2.pdf"));
    let chunks: Vec<Bytes> = download.stream.map(|c| c.expect("chunk")).collect().await;
    assert_eq!(chunks.concat(), v2);
}

#[tokio::test]
async fn large_files_and_versions_go_through_multipart_upload_sessions() {
    let sim = start().await;
    let ot = client(&sim);
    let ws = new_workspace(&ot, "Pump A100", "B-1001").await;
    let big = content(200_000, 3);
    let doc = ot
        .upload_document(
            &DocumentCreate {
                parent_id: ws,
                name: "manual.pdf".into(),
                ..DocumentCreate::default()
            },
            upload(&big, "manual.pdf", "application/pdf"),
        )
        .await
        .expect("large document");
    // One request per part of the size the server assigned (not the configured one), then
    // the completion.
    let parts = requests_to(&sim, "POST", "/otcs/cs/api/v2/multipart/");
    let expected = big.len().div_ceil(SIM_PART as usize) + 1;
    assert_eq!(parts, vec![200; expected], "{:?}", sim.requests());
    let state = node_state(&sim, doc);
    assert_eq!(state["versions"][0]["size"], big.len());
    assert_eq!(state["versions"][0]["sha256"], sha256_hex(&big));
    assert_eq!(state["versions"][0]["file_name"], "manual.pdf");
    assert_eq!(sim.state()["open_uploads"], 0);

    sim.clear_requests();
    let bigger = content(150_000, 4);
    ot.upload_version(
        doc,
        &VersionCreate::default(),
        upload(&bigger, "manual-2.pdf", "application/pdf"),
    )
    .await
    .expect("large version");
    assert_eq!(
        requests_to(&sim, "POST", "/otcs/cs/api/v2/multipart/").len(),
        bigger.len().div_ceil(SIM_PART as usize) + 1
    );
    let state = node_state(&sim, doc);
    assert_eq!(state["versions"][1]["sha256"], sha256_hex(&bigger));
    let download = ot.download_content(doc).await.expect("download");
    let bytes: Vec<Bytes> = download.stream.map(|c| c.expect("chunk")).collect().await;
    assert_eq!(sha256_hex(&bytes.concat()), sha256_hex(&bigger));
}

#[tokio::test]
async fn workflows_are_drafted_filled_started_and_report_their_decision() {
    let sim = start().await;
    let ot = client(&sim);
    let ws = new_workspace(&ot, "Pump A100", "B-1001").await;
    let doc = ot
        .upload_document(
            &DocumentCreate {
                parent_id: ws,
                name: "change.txt".into(),
                ..DocumentCreate::default()
            },
            upload(b"packaging: carton -> pallet", "change.txt", "text/plain"),
        )
        .await
        .expect("document");

    let draft = ot
        .create_draft_process(sample_ids::WORKFLOW_CHANGE_APPROVAL, &[doc])
        .await
        .expect("draft");
    let mut form = Map::new();
    form.insert("WorkflowForm_Title".into(), json!("Change B-1001"));
    form.insert("WorkflowForm_10".into(), json!("packaging"));
    ot.update_draft_form(draft.draftprocess_id, &form)
        .await
        .expect("form update");
    let drafts = sim.state()["drafts"].clone();
    let stored = drafts
        .as_array()
        .and_then(|d| d.iter().find(|x| x["id"] == draft.draftprocess_id))
        .expect("draft in state");
    assert_eq!(stored["doc_ids"], json!([doc]));
    assert_eq!(stored["values"]["WorkflowForm_Title"], "Change B-1001");

    let process = ot
        .initiate_draft(draft.draftprocess_id, "please review")
        .await
        .expect("initiate");
    let status = ot
        .workflow_status(process.process_id)
        .await
        .expect("status");
    assert_eq!(status.state, WorkflowState::OnTime);
    assert!(!status.state.is_finished());

    // Found again by a part of its title, as a run after a crash looks it up.
    let map = sample_ids::WORKFLOW_CHANGE_APPROVAL;
    let running = ot
        .active_workflows(map, "B-1001", Some(ws))
        .await
        .expect("running workflows");
    assert_eq!(running.len(), 1, "{running:?}");
    assert_eq!(running[0].process_id, process.process_id);
    assert_eq!(running[0].title, "Change B-1001");
    assert!(
        ot.active_workflows(map, "B-9999", None)
            .await
            .expect("running workflows")
            .is_empty()
    );

    let completed: Value = reqwest::Client::new()
        .post(format!(
            "{}/workflows/{}/complete",
            sim.control_url(),
            process.process_id
        ))
        .json(&json!({"decision": "approved", "comment": "fine by me"}))
        .send()
        .await
        .expect("control call")
        .json()
        .await
        .expect("control answer");
    assert_eq!(completed["status"], "completed");

    let status = ot
        .workflow_status(process.process_id)
        .await
        .expect("status");
    assert_eq!(status.state, WorkflowState::Completed);
    assert!(
        ot.active_workflows(map, "B-1001", None)
            .await
            .expect("running workflows")
            .is_empty(),
        "a decided workflow is not running"
    );
    let initiated = ot.initiated_workflows().await.expect("initiated workflows");
    assert!(
        initiated
            .iter()
            .any(|w| w.process_id == process.process_id && w.title == "Change B-1001"),
        "{initiated:?}"
    );
    let step = status
        .completed
        .iter()
        .find(|s| s.subprocess_id.is_some())
        .expect("a completed step");
    let activities = ot
        .workflow_activities(process.process_id, step.subprocess_id.expect("checked"))
        .await
        .expect("activities");
    let decision = activities
        .iter()
        .find(|a| a.comment.as_deref() == Some("fine by me"))
        .expect("the decision is among the activities");
    assert!(
        decision
            .action
            .as_deref()
            .is_some_and(|a| a.to_ascii_lowercase().contains("approve")),
        "{decision:?}"
    );
    let processes = sim.state()["processes"].clone();
    let stored = processes
        .as_array()
        .and_then(|p| p.iter().find(|x| x["id"] == process.process_id))
        .expect("process in state");
    assert_eq!(stored["status"], "completed");
    assert_eq!(stored["workflow_id"], sample_ids::WORKFLOW_CHANGE_APPROVAL);
    assert_eq!(stored["workspace_id"], ws);
}

#[tokio::test]
async fn records_are_classified_finalized_held_and_the_workspace_made_read_only() {
    let sim = start().await;
    let ot = client(&sim);
    let ws = new_workspace(&ot, "Valve V10 archive", "B-2001").await;
    let before = ot.rm_classifications(ws).await.expect("rm state");
    assert!(before.class_ids.is_empty());
    ot.rm_classify(
        ws,
        sample_ids::RM_CLASS_ARCHIVE,
        true,
        before.metadata_token.as_deref(),
    )
    .await
    .expect("classify");
    let classified = ot.rm_classifications(ws).await.expect("rm state");
    assert_eq!(classified.class_ids, [sample_ids::RM_CLASS_ARCHIVE]);
    let folder = ot
        .find_child(ws, "Pricing")
        .await
        .expect("search")
        .expect("template folder");
    assert_eq!(
        node_state(&sim, folder.id)["rm"]["class_id"],
        sample_ids::RM_CLASS_ARCHIVE,
        "sub-items classified too"
    );

    let token = classified.metadata_token.clone();
    ot.update_record_details(
        ws,
        &RecordDetails {
            metadata_token: token.clone(),
            file_status: Some("CLOSED".into()),
            official: Some(true),
            storage: Some("Archive room 3".into()),
            ..RecordDetails::default()
        },
    )
    .await
    .expect("record details");
    let rm = node_state(&sim, ws)["rm"].clone();
    assert_eq!(rm["fields"]["file_status"], "CLOSED");
    assert_eq!(rm["fields"]["storage"], "Archive room 3");
    let stale = ot
        .update_record_details(
            ws,
            &RecordDetails {
                metadata_token: token,
                file_status: Some("ACTIVE".into()),
                ..RecordDetails::default()
            },
        )
        .await;
    assert!(
        matches!(stale, Err(UpstreamError::EditConflict { .. })),
        "{stale:?}"
    );

    assert!(!ot.rm_classifications(ws).await.expect("rm").finalized);
    ot.finalize_records(&[ws]).await.expect("finalize");
    assert_eq!(node_state(&sim, ws)["finalized"], true);
    assert!(ot.rm_classifications(ws).await.expect("rm").finalized);

    assert!(ot.node_holds(ws).await.expect("holds").is_empty());
    ot.apply_hold(ws, sample_ids::HOLD_PRODUCT_LIABILITY)
        .await
        .expect("hold");
    assert_eq!(
        ot.node_holds(ws).await.expect("holds"),
        [sample_ids::HOLD_PRODUCT_LIABILITY]
    );
    assert_eq!(
        node_state(&sim, ws)["holds"],
        json!([sample_ids::HOLD_PRODUCT_LIABILITY])
    );

    let roles = ot.workspace_roles(ws).await.expect("roles");
    assert!(!roles.is_empty());
    ot.make_workspace_read_only(ws).await.expect("read-only");
    ot.make_workspace_read_only(ws).await.expect("idempotent");
    let state_roles = node_state(&sim, ws)["workspace"]["roles"].clone();
    let state_roles = state_roles.as_array().expect("roles in state");
    assert_eq!(state_roles.len(), roles.len());
    for role in state_roles {
        assert_eq!(
            role["permissions"],
            json!(["see", "see_contents"]),
            "{role}"
        );
        assert_eq!(role["apply_to"], 2, "{role}");
    }
    ot.add_role_member(ws, roles[0].id, sample_ids::APPROVER_USER_ID)
        .await
        .expect("member");
    let members = node_state(&sim, ws)["workspace"]["roles"][0]["members"].clone();
    assert!(
        members
            .as_array()
            .is_some_and(|m| m.contains(&json!(sample_ids::APPROVER_USER_ID))),
        "{members}"
    );
}

#[tokio::test]
async fn a_role_gets_assigned_access_on_a_folder_and_it_is_replaced_when_it_differs() {
    let sim = start().await;
    let ot = client(&sim);
    let ws = new_workspace(&ot, "Pump A100", "B-1002").await;
    let folder = ot
        .create_folder(ws, "Partner Uploads")
        .await
        .expect("folder");
    let role = ot.workspace_roles(ws).await.expect("roles")[0].id;
    let custom = |access: Vec<xecm_bridge::clients::opentext::Access>| {
        access
            .into_iter()
            .filter(|a| a.kind == "custom")
            .map(|a| (a.right_id, a.permissions))
            .collect::<Vec<_>>()
    };
    let before = ot.node_permissions(folder).await.expect("permissions");
    assert!(before.iter().any(|a| a.kind == "owner"), "{before:?}");
    assert!(custom(before).is_empty());

    ot.add_node_permission(folder, role, &["see", "see_contents", "add_items"], 2)
        .await
        .expect("add");
    let listed = custom(ot.node_permissions(folder).await.expect("permissions"));
    assert_eq!(
        listed,
        [(
            Some(role),
            vec!["see".into(), "see_contents".into(), "add_items".into()]
        )]
    );
    // Twice is refused: an entry is replaced, not added again.
    let again = ot.add_node_permission(folder, role, &["see"], 2).await;
    assert!(again.is_err(), "{again:?}");
    ot.update_node_permission(folder, role, &["see", "see_contents"], 2)
        .await
        .expect("update");
    let listed = custom(ot.node_permissions(folder).await.expect("permissions"));
    assert_eq!(
        listed,
        [(Some(role), vec!["see".into(), "see_contents".into()])]
    );
    // The first add was answered 200, the second refused.
    let path = format!("/otcs/cs/api/v2/nodes/{folder}/permissions/custom");
    assert_eq!(requests_to(&sim, "POST", &path)[..2], [200, 400]);
    let unknown = ot
        .update_node_permission(folder, 999_999, &["see"], 0)
        .await;
    assert!(unknown.is_err(), "{unknown:?}");
}

#[tokio::test]
async fn an_outage_with_retry_after_is_waited_out() {
    let sim = start().await;
    let ot = client(&sim);
    let folder = ot
        .node(sample_ids::WORKSPACES_FOLDER)
        .await
        .expect("before the outage");
    sim.clear_requests();
    sim.set_faults(FaultSettings {
        outage_secs: Some(1),
        retry_after_secs: Some(1),
        ..FaultSettings::default()
    });
    let during = ot
        .node(sample_ids::WORKSPACES_FOLDER)
        .await
        .expect("answered once the window closed");
    assert_eq!(during, folder);
    let statuses = requests_to(&sim, "GET", "/otcs/cs/api/v2/nodes/");
    assert_eq!(statuses.first(), Some(&503), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&200), "{statuses:?}");
    assert_eq!(ot.circuit_state(), CircuitState::Closed);
}

#[tokio::test]
async fn a_failing_upstream_opens_the_circuit_which_closes_once_it_recovers() {
    let sim = start().await;
    let ot = client(&sim);
    ot.node(sample_ids::WORKSPACES_FOLDER)
        .await
        .expect("healthy");
    sim.set_faults(FaultSettings {
        error_rate: 1.0,
        ..FaultSettings::default()
    });
    let failed = ot.node(sample_ids::WORKSPACES_FOLDER).await;
    assert!(
        failed.as_ref().is_err_and(UpstreamError::is_retryable),
        "{failed:?}"
    );
    assert_eq!(ot.circuit_state(), CircuitState::Open);

    // While open, calls fail fast without reaching the server.
    sim.clear_requests();
    let fast = ot.node(sample_ids::WORKSPACES_FOLDER).await;
    assert!(
        matches!(fast, Err(UpstreamError::CircuitOpen { .. })),
        "{fast:?}"
    );
    assert!(sim.requests().is_empty(), "{:?}", sim.requests());

    // Faults cleared and checked over the control endpoints, as a person exploring the
    // simulator would do it.
    let faults: Value = reqwest::Client::new()
        .put(format!("{}/faults", sim.control_url()))
        .json(&json!({}))
        .send()
        .await
        .expect("control call")
        .json()
        .await
        .expect("faults");
    assert_eq!(faults["error_rate"], 0.0);
    let state: Value = reqwest::get(format!("{}/state", sim.control_url()))
        .await
        .expect("state call")
        .json()
        .await
        .expect("state");
    assert_eq!(state["faults"]["error_rate"], 0.0);

    wait_for_half_open(&ot).await;
    let recovered = ot
        .node(sample_ids::WORKSPACES_FOLDER)
        .await
        .expect("the probe succeeds");
    assert_eq!(recovered.id, sample_ids::WORKSPACES_FOLDER);
    assert_eq!(ot.circuit_state(), CircuitState::Closed);
}

/// Waits (bounded) until the open period has passed and the circuit lets a probe through.
async fn wait_for_half_open(ot: &OpentextClient) {
    for _ in 0..100 {
        if ot.circuit_state() == CircuitState::HalfOpen {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("circuit still {:?} after 5 s", ot.circuit_state());
}

/// A streamed upload cannot be sent again after a 401, but a session OpenText accepted moments
/// ago needs no check first (it would cost a request of the rate limit): the upload goes
/// straight out. When the ticket ended all the same, the upload is refused with a retryable
/// error after one re-login, and repeating it succeeds.
#[tokio::test]
async fn an_upload_right_after_another_call_skips_the_session_check() {
    let sim = start().await;
    let ot = client(&sim);
    let ws = new_workspace(&ot, "Pump A200", "B-2001").await;
    let folder = ot
        .find_child(ws, "Technical Specifications")
        .await
        .expect("search")
        .expect("template folder");
    let document = |name: &str| DocumentCreate {
        parent_id: folder.id,
        name: name.into(),
        ..DocumentCreate::default()
    };
    let bytes = content(10_000, 3);

    sim.clear_requests();
    ot.upload_document(
        &document("a.pdf"),
        upload(&bytes, "a.pdf", "application/pdf"),
    )
    .await
    .expect("uploaded");
    assert_eq!(
        requests_to(&sim, "GET", "/otcs/cs/api/v1/auth"),
        Vec::<u16>::new(),
        "no session check right after a call OpenText accepted"
    );
    assert_eq!(requests_to(&sim, "POST", "/otcs/cs/api/v2/nodes"), [200]);

    sim.set_faults(FaultSettings {
        expire_tickets: true,
        ..FaultSettings::default()
    });
    let logins = ot.logins();
    let refused = ot
        .upload_document(
            &document("b.pdf"),
            upload(&bytes, "b.pdf", "application/pdf"),
        )
        .await;
    match refused {
        Err(error) => assert!(error.is_retryable(), "{error:?}"),
        Ok(id) => panic!("an expired ticket was accepted: {id:?}"),
    }
    assert_eq!(ot.logins(), logins + 1, "one re-login");
    ot.upload_document(
        &document("b.pdf"),
        upload(&bytes, "b.pdf", "application/pdf"),
    )
    .await
    .expect("the repeated upload succeeds");
    assert_eq!(
        requests_to(&sim, "POST", "/otcs/cs/api/v2/nodes"),
        [200, 401, 200]
    );
}
