//! The business flows end to end through the real HTTP path: both simulators with the sample
//! data, the bridge in-process with its worker, signed webhooks sent by the 4ALLPORTAL simulator
//! (and callbacks by the OpenText simulator); assertions on the simulators' end state and
//! request logs. The mapping is the one in `config/example.toml`.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use xecm_bridge::clients::Upstreams;
use xecm_bridge::config::Settings;
use xecm_bridge::flows::{self, Flows};
use xecm_bridge::sim::SimHandle;
use xecm_bridge::sim::allportal::{self as ap_sim, AllportalSimOptions, ids, sample_catalogue};
use xecm_bridge::sim::opentext::{self as ot_sim, OpentextSimOptions};
use xecm_bridge::store::{EventFilter, Page, Store, StoredEvent};
use xecm_bridge::worker::WorkerConfig;
use xecm_bridge::worker::{Worker, WorkerHandle};

use common::{ALLPORTAL_SECRET, OPENTEXT_SECRET, TestApp, spawn_with, test_settings};

const API_KEY: &str = "sim-allportal-api-key";
const DEADLINE: Duration = Duration::from_secs(30);

/// The `[flows]` sections of the example configuration, limited to `names`.
pub(crate) fn example_flows(names: &[&str]) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");
    let text = std::fs::read_to_string(path).expect("example config");
    let doc: toml::Table = text.parse().expect("example config is TOML");
    let all = doc["flows"].as_table().expect("[flows]").clone();
    let chosen: toml::Table = all
        .into_iter()
        .filter(|(name, _)| names.contains(&name.as_str()))
        .collect();
    let mut root = toml::Table::new();
    root.insert("flows".into(), toml::Value::Table(chosen));
    toml::to_string(&root).expect("renders")
}

/// `base` with `extra` merged in, table by table (both TOML), so that `extra` can add keys to
/// the example's tables.
fn merged(base: &str, extra: &str) -> String {
    fn merge(into: &mut toml::Table, from: toml::Table) {
        for (key, value) in from {
            match (into.get_mut(&key), value) {
                (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
                (_, value) => {
                    into.insert(key, value);
                }
            }
        }
    }
    let mut table: toml::Table = base.parse().expect("base is TOML");
    merge(&mut table, extra.parse().expect("extra is TOML"));
    toml::to_string(&table).expect("renders")
}

/// The bridge in-process with its worker and both simulators (also used by `callbacks` and
/// `drift`).
pub(crate) struct Bridge {
    pub(crate) app: Option<TestApp>,
    pub(crate) ap: SimHandle,
    pub(crate) ot: SimHandle,
    pub(crate) flows: Flows,
    pub(crate) clients: Upstreams,
    pub(crate) worker: Option<WorkerHandle>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) http: reqwest::Client,
}

pub(crate) async fn start(names: &[&str]) -> Bridge {
    start_with(names, |_| {}).await
}

pub(crate) async fn start_with(names: &[&str], tune: impl FnOnce(&mut WorkerConfig)) -> Bridge {
    start_configured(names, "", tune).await
}

/// [`start`] with more configuration (`extra`, TOML) and a tuned worker.
pub(crate) async fn start_configured(
    names: &[&str],
    extra: &str,
    tune: impl FnOnce(&mut WorkerConfig),
) -> Bridge {
    let ap = ap_sim::spawn(
        "127.0.0.1:0".parse().unwrap(),
        AllportalSimOptions {
            api_key: API_KEY.into(),
            webhook_secret: Some(ALLPORTAL_SECRET.into()),
            seed: Some(sample_catalogue()),
            ..AllportalSimOptions::default()
        },
    )
    .await
    .expect("4ALLPORTAL simulator");
    let ot = ot_sim::spawn(
        "127.0.0.1:0".parse().unwrap(),
        OpentextSimOptions {
            callback_secret: Some(OPENTEXT_SECRET.into()),
            ..OpentextSimOptions::default()
        },
    )
    .await
    .expect("OpenText simulator");
    let dir = tempfile::tempdir().expect("temp dir");
    let extra = format!(
        r#"
[allportal]
base_url = "{ap}"
api_key = "{API_KEY}"
[allportal.transport]
max_retries = 1
backoff_base_ms = 10
backoff_max_ms = 50
[opentext]
base_url = "{ot}"
username = "{user}"
password = "{password}"
[opentext.transport]
max_retries = 1
backoff_base_ms = 10
backoff_max_ms = 50
{flows}
"#,
        ap = ap.base_url(),
        ot = ot.base_url(),
        user = ot_sim::SAMPLE_ADMIN_USER,
        password = ot_sim::SAMPLE_ADMIN_PASSWORD,
        flows = merged(&example_flows(names), extra),
    );
    let settings: Settings = test_settings(&dir, &extra);
    let app = spawn_with(settings.clone(), dir).await;
    let http = reqwest::Client::new();
    http.put(format!("{}/webhook", ap.control_url()))
        .json(&json!({"url": app.url("/webhooks/allportal")}))
        .send()
        .await
        .expect("webhook target");
    http.put(format!("{}/callback", ot.control_url()))
        .json(&json!({"url": app.url("/webhooks/opentext")}))
        .send()
        .await
        .expect("callback target");
    let clients = Upstreams::new(&settings.allportal, &settings.opentext).expect("clients");
    let flows = flows::build(
        &settings.flows,
        &settings.callbacks,
        &clients,
        app.store.clone(),
    );
    let mut cfg = WorkerConfig {
        poll_interval_ms: 50,
        retry_schedule_secs: vec![1, 1, 1],
        reconcile_allportal_interval_secs: 0,
        reconcile_opentext_interval_secs: 0,
        ..WorkerConfig::default()
    };
    tune(&mut cfg);
    let shutdown = CancellationToken::new();
    let worker = Worker::builder(app.store.clone(), flows.as_worker_flows(), cfg)
        .workflow_feed(flows::workflow_feed(&clients))
        .spawn(shutdown.clone());
    Bridge {
        app: Some(app),
        ap,
        ot,
        flows,
        clients,
        worker: Some(worker),
        shutdown,
        http,
    }
}

impl Bridge {
    pub(crate) fn store(&self) -> Arc<dyn Store> {
        self.app.as_ref().expect("running").store.clone()
    }

    /// The bridge's URL of `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        self.app.as_ref().expect("running").url(path)
    }

    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(worker) = self.worker.take() {
            worker.join().await;
        }
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
    }

    /// Has the 4ALLPORTAL simulator send a signed change webhook for one object.
    pub(crate) async fn webhook(&self, module: &str, id: &str, event: &str) {
        let delivery: Value = self
            .http
            .post(format!("{}/webhooks/send", self.ap.control_url()))
            .json(&json!({"module": module, "object_id": id, "event": event}))
            .send()
            .await
            .expect("send webhook")
            .json()
            .await
            .expect("delivery");
        assert_eq!(delivery["status"], 202, "{delivery}");
        self.settle().await;
    }

    /// Changes an object as a 4ALLPORTAL user would (audit entry by that user) and sends the
    /// webhook.
    pub(crate) async fn edit(&self, module: &str, id: &str, fields: Value) {
        let answer: Value = self
            .http
            .post(format!(
                "{}/objects/{module}/{id}?webhook=true",
                self.ap.control_url()
            ))
            .json(&fields)
            .send()
            .await
            .expect("edit object")
            .json()
            .await
            .expect("edit answer");
        assert_eq!(answer["webhook"]["Ok"]["status"], 202, "{answer}");
        self.settle().await;
    }

    /// Waits until every event is finished, then fails on any dead letter.
    pub(crate) async fn settle(&self) {
        let store = self.store();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let backlog = store
                .backlog(xecm_bridge::store::now_millis())
                .await
                .expect("backlog");
            if backlog.events == 0 && backlog.jobs == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "work did not finish: {backlog:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let dead = self.events(Some("dead")).await;
        assert!(
            dead.is_empty(),
            "dead letters: {:?}",
            dead.iter().map(|e| &e.last_error).collect::<Vec<_>>()
        );
    }

    pub(crate) async fn events(&self, state: Option<&str>) -> Vec<StoredEvent> {
        let filter = EventFilter {
            state: state.map(str::to_string),
            ..EventFilter::default()
        };
        self.store()
            .list_events(
                &filter,
                &Page {
                    after: None,
                    limit: 1000,
                },
            )
            .await
            .expect("events")
            .events
    }

    /// The outcome summaries/reasons of `flow`'s attempts for the newest event.
    pub(crate) async fn last_outcome(&self, flow: &str) -> (String, Option<String>) {
        let store = self.store();
        for event in self.events(None).await {
            let detail = store.event_detail(&event.id).await.unwrap().unwrap();
            if let Some(job) = detail.jobs.iter().find(|j| j.flow == flow) {
                return (job.state.clone(), job.last_error.clone());
            }
        }
        panic!("no job of flow {flow}");
    }

    pub(crate) fn ot_writes(&self) -> Vec<String> {
        writes(&self.ot)
    }

    pub(crate) fn ap_writes(&self) -> Vec<String> {
        writes(&self.ap)
    }

    pub(crate) fn clear_logs(&self) {
        self.ot.clear_requests();
        self.ap.clear_requests();
    }

    pub(crate) async fn download(&self, node: i64) -> Vec<u8> {
        let download = self
            .clients
            .opentext
            .download_content(node)
            .await
            .expect("download");
        let chunks: Vec<_> = download.stream.collect().await;
        chunks
            .into_iter()
            .flat_map(|c| c.expect("chunk").to_vec())
            .collect()
    }
}

/// Requests that change state; logging in (`POST …/auth`) changes nothing.
pub(crate) fn writes(sim: &SimHandle) -> Vec<String> {
    sim.requests()
        .into_iter()
        .filter(|r| r.is_write() && !r.path.ends_with("/api/v1/auth"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// The OpenText simulator's nodes.
pub(crate) struct Nodes(pub(crate) Vec<Value>);

impl Nodes {
    pub(crate) fn of(ot: &SimHandle) -> Self {
        Nodes(ot.state()["nodes"].as_array().cloned().unwrap_or_default())
    }

    pub(crate) fn workspaces(&self, bo_type: &str) -> Vec<&Value> {
        self.0
            .iter()
            .filter(|n| {
                n["workspace"]["references"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r["bo_type"] == bo_type)
            })
            .collect()
    }

    pub(crate) fn workspace(&self, bo_type: &str, bo_id: &str) -> &Value {
        let found: Vec<&Value> = self
            .workspaces(bo_type)
            .into_iter()
            .filter(|n| {
                n["workspace"]["references"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r["bo_id"] == bo_id)
            })
            .collect();
        assert_eq!(found.len(), 1, "one workspace for {bo_type}/{bo_id}");
        found[0]
    }

    pub(crate) fn children(&self, parent: &Value) -> Vec<&Value> {
        self.0
            .iter()
            .filter(|n| n["parent_id"] == parent["id"])
            .collect()
    }

    pub(crate) fn child(&self, parent: &Value, name: &str) -> &Value {
        self.children(parent)
            .into_iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("no `{name}` under {}", parent["name"]))
    }

    pub(crate) fn child_names(&self, parent: &Value) -> Vec<String> {
        let mut names: Vec<String> = self
            .children(parent)
            .iter()
            .map(|n| n["name"].as_str().unwrap_or_default().to_string())
            .collect();
        names.sort();
        names
    }
}

pub(crate) fn versions(node: &Value) -> usize {
    node["versions"].as_array().map(Vec::len).unwrap_or(0)
}

pub(crate) fn sha256(bytes: &[u8]) -> String {
    xecm_bridge::flows::hash::sha256_hex(bytes)
}

// ------------------------------------------------------------------------------------------
// launch
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn launch_builds_the_workspace_then_changes_only_what_changed() {
    let bridge = start(&["launch"]).await;
    bridge
        .webhook("product", ids::PRODUCT_PUMP_A100, "moduleobject_modify")
        .await;

    let nodes = Nodes::of(&bridge.ot);
    let ws = nodes.workspace("product", ids::PRODUCT_PUMP_A100);
    assert_eq!(ws["name"], "Launch Pump A100 (4711)");
    let category = &ws["categories"]["9830"];
    assert_eq!(category["9830_2"], "4711");
    assert_eq!(category["9830_5"], "Pump A100");
    assert_eq!(category["9830_6"], "Pumpe A100");
    assert_eq!(category["9830_7"], "carton");

    let master = nodes.child(ws, "Master Data");
    assert_eq!(
        nodes.child_names(master),
        ["4711 master data.html", "4711 master data.json"]
    );
    let json_node = nodes.child(master, "4711 master data.json");
    let snapshot: Value =
        serde_json::from_slice(&bridge.download(json_node["id"].as_i64().unwrap()).await).unwrap();
    assert_eq!(snapshot["id"], ids::PRODUCT_PUMP_A100);
    assert_eq!(snapshot["fields"]["article_number"][0]["value"], "4711");
    assert!(snapshot["fields"].get("approval_status").is_none());
    let html_node = nodes.child(master, "4711 master data.html");
    let html = String::from_utf8(bridge.download(html_node["id"].as_i64().unwrap()).await).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(html.contains("Master data: Pump A100 (4711)"));
    assert!(html.contains("Pumpe A100"));

    assert_eq!(
        nodes.child_names(nodes.child(ws, "Technical Specifications")),
        ["pump-a100-datasheet.pdf"]
    );
    assert_eq!(
        nodes.child_names(nodes.child(ws, "Pricing")),
        ["pricing-2025.csv", "pricing-2025.json"]
    );
    let image = nodes.child(nodes.child(ws, "Marketing Assets"), "pump-a100.png");
    assert_eq!(
        image["versions"][0]["sha256"],
        sha256(&ap_sim::sample_png()),
        "the image arrives byte for byte"
    );

    // Second run on unchanged data: no write call at all, to either system.
    bridge.clear_logs();
    bridge
        .webhook("product", ids::PRODUCT_PUMP_A100, "moduleobject_modify")
        .await;
    assert_eq!(bridge.ot_writes(), Vec::<String>::new());
    assert_eq!(bridge.ap_writes(), Vec::<String>::new());
    assert_eq!(bridge.last_outcome("launch").await.0, "done");

    // A changed description: a new version of both snapshot documents, nothing else.
    bridge.clear_logs();
    bridge
        .edit(
            "product",
            ids::PRODUCT_PUMP_A100,
            json!({"description": [{"value": "Now with a quieter motor", "dimensions": {"locale": "en_US"}}]}),
        )
        .await;
    let writes = bridge.ot_writes();
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert!(
        writes.iter().all(|w| w.ends_with("/versions")),
        "{writes:?}"
    );
    let nodes = Nodes::of(&bridge.ot);
    let ws = nodes.workspace("product", ids::PRODUCT_PUMP_A100);
    let master = nodes.child(ws, "Master Data");
    assert_eq!(versions(nodes.child(master, "4711 master data.json")), 2);
    assert_eq!(versions(nodes.child(master, "4711 master data.html")), 2);
    let datasheet = nodes.child(
        nodes.child(ws, "Technical Specifications"),
        "pump-a100-datasheet.pdf",
    );
    assert_eq!(versions(datasheet), 1);
    assert_eq!(nodes.workspaces("product").len(), 1);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn launch_skips_products_that_are_not_launch_ready_and_plans_without_writing() {
    let bridge = start(&["launch"]).await;
    bridge
        .webhook("product", ids::PRODUCT_PUMP_A200, "moduleobject_modify")
        .await;
    let (state, reason) = bridge.last_outcome("launch").await;
    assert_eq!(state, "ignored");
    assert!(
        reason.as_deref().unwrap_or_default().contains("status"),
        "{reason:?}"
    );
    assert!(Nodes::of(&bridge.ot).workspaces("product").is_empty());

    // The plan for a launch-ready product lists the writes and makes none.
    bridge.clear_logs();
    let event = StoredEvent {
        id: "plan".into(),
        source: "allportal".into(),
        source_event_id: "plan".into(),
        kind: "moduleobject_modify".into(),
        module: Some("product".into()),
        object_id: Some(ids::PRODUCT_VALVE_V20.into()),
        object_key: Some(format!("product/{}", ids::PRODUCT_VALVE_V20)),
        payload: json!({}),
        raw_body: Vec::new(),
        headers: json!({}),
        received_at: 0,
        state: "pending".into(),
        attempts: 0,
        next_attempt_at: 0,
        last_error: None,
        updated_at: 0,
    };
    let plans = bridge
        .flows
        .plan(Some("launch"), &event)
        .await
        .expect("plan");
    let actions: Vec<&str> = plans[0].operations.iter().map(|o| o.action).collect();
    assert_eq!(actions[0], "create_workspace", "{actions:?}");
    assert!(actions.contains(&"upload_document"), "{actions:?}");
    assert!(
        plans[0].operations[0]
            .description
            .contains("Launch Valve V20 (5820)")
    );
    assert_eq!(bridge.ot_writes(), Vec::<String>::new());
    assert!(Nodes::of(&bridge.ot).workspaces("product").is_empty());
    let rendered = serde_json::to_value(&plans[0]).unwrap();
    assert_eq!(rendered["flow"], "launch");
    bridge.stop().await;
}

// ------------------------------------------------------------------------------------------
// family
// ------------------------------------------------------------------------------------------

/// Replaces the original of a 4ALLPORTAL file object (a new version of a document).
pub(crate) async fn replace_media(bridge: &Bridge, id: &str, content: &[u8]) {
    let bytes = bytes::Bytes::copy_from_slice(content);
    let upload = xecm_bridge::clients::FileUpload::new(
        futures::stream::once(async move { Ok::<_, std::io::Error>(bytes) }),
        content.len() as u64,
        "pumps-manual.pdf",
        "application/pdf",
    );
    bridge
        .clients
        .allportal
        .upload_media("file", id, None, upload)
        .await
        .expect("upload media");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn family_keeps_documents_current_as_versions_and_launch_relates_to_it() {
    let bridge = start(&["family", "launch"]).await;
    bridge
        .webhook("product_family", ids::FAMILY_PUMPS, "moduleobject_modify")
        .await;
    let nodes = Nodes::of(&bridge.ot);
    let ws = nodes.workspace("product_family", ids::FAMILY_PUMPS);
    assert_eq!(ws["name"], "Product family Pumps (PUMPS)");
    let manual = nodes.child(nodes.child(ws, "Manuals"), "pumps-manual.pdf");
    assert_eq!(versions(manual), 1);
    assert_eq!(
        manual["versions"][0]["sha256"],
        sha256(&ap_sim::sample_pdf("Pumps operating manual"))
    );
    assert!(nodes.child_names(nodes.child(ws, "Datasheets")).is_empty());

    // The launch workspace of a pump is related to its family's workspace.
    bridge
        .webhook("product", ids::PRODUCT_PUMP_A100, "moduleobject_modify")
        .await;
    let nodes = Nodes::of(&bridge.ot);
    let launch = nodes.workspace("product", ids::PRODUCT_PUMP_A100);
    let family = nodes.workspace("product_family", ids::FAMILY_PUMPS);
    let related = serde_json::to_string(&launch["workspace"]).unwrap()
        + &serde_json::to_string(&family["workspace"]).unwrap();
    assert!(
        related.contains(&family["id"].to_string()) && related.contains(&launch["id"].to_string()),
        "{related}"
    );

    // Unchanged: no write at all.
    bridge.clear_logs();
    bridge
        .webhook("product_family", ids::FAMILY_PUMPS, "moduleobject_modify")
        .await;
    assert_eq!(bridge.ot_writes(), Vec::<String>::new());

    // New content of the manual: one new version of the same document.
    let new_manual = ap_sim::sample_pdf("Pumps operating manual, edition 2");
    replace_media(&bridge, ids::FILE_PUMPS_MANUAL, &new_manual).await;
    bridge.clear_logs();
    bridge
        .webhook("product_family", ids::FAMILY_PUMPS, "moduleobject_modify")
        .await;
    let writes = bridge.ot_writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert!(writes[0].ends_with("/versions"), "{writes:?}");
    let nodes = Nodes::of(&bridge.ot);
    let ws = nodes.workspace("product_family", ids::FAMILY_PUMPS);
    let manuals = nodes.child(ws, "Manuals");
    assert_eq!(nodes.child_names(manuals), ["pumps-manual.pdf"]);
    let manual = nodes.child(manuals, "pumps-manual.pdf");
    assert_eq!(versions(manual), 2);
    assert_eq!(manual["versions"][1]["sha256"], sha256(&new_manual));

    // The same bytes uploaded again (a new modification time, equal content): no new version.
    replace_media(&bridge, ids::FILE_PUMPS_MANUAL, &new_manual).await;
    bridge.clear_logs();
    bridge
        .webhook("product_family", ids::FAMILY_PUMPS, "moduleobject_modify")
        .await;
    assert_eq!(bridge.ot_writes(), Vec::<String>::new());
    bridge.stop().await;
}

// ------------------------------------------------------------------------------------------
// account
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn account_fills_the_existing_opportunity_workspace() {
    let bridge = start(&["account"]).await;
    // The opportunity's workspace exists already (made in OpenText earlier).
    let created: Value = bridge
        .http
        .post(format!("{}/workspaces", bridge.ot.control_url()))
        .json(&json!({"wksp_type_id": 103, "name": "ACME retrofit (CRM)",
                      "bo_type": "opportunity", "bo_id": ids::OPPORTUNITY_ACME_2025}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ws_id = created["id"].clone();
    assert!(ws_id.is_i64(), "{created}");
    bridge
        .webhook(
            "opportunity",
            ids::OPPORTUNITY_ACME_2025,
            "moduleobject_modify",
        )
        .await;
    let nodes = Nodes::of(&bridge.ot);
    assert_eq!(
        nodes.workspaces("opportunity").len(),
        1,
        "found, not created"
    );
    let ws = nodes.workspace("opportunity", ids::OPPORTUNITY_ACME_2025);
    assert_eq!(ws["id"], ws_id);
    assert_eq!(
        nodes.child_names(nodes.child(ws, "Products")),
        [
            "4711 Pump A100 product data.html",
            "4711 Pump A100 product data.json"
        ]
    );
    assert_eq!(
        nodes.child_names(nodes.child(ws, "Configurations")),
        ["4711 configuration options.html"]
    );
    assert_eq!(
        nodes.child_names(nodes.child(ws, "Images")),
        ["pump-a100.png"]
    );
    assert_eq!(
        nodes.child_names(nodes.child(ws, "Brochures")),
        ["pump-a100-datasheet.pdf"]
    );

    // A second product joins the opportunity: only its content is added.
    bridge.clear_logs();
    bridge
        .edit(
            "opportunity",
            ids::OPPORTUNITY_ACME_2025,
            json!({"products": [{"value": [ids::PRODUCT_PUMP_A100, ids::PRODUCT_VALVE_V10], "dimensions": null}]}),
        )
        .await;
    let writes = bridge.ot_writes();
    assert_eq!(
        writes.len(),
        3,
        "two product-data documents and one configuration: {writes:?}"
    );
    let nodes = Nodes::of(&bridge.ot);
    let ws = nodes.workspace("opportunity", ids::OPPORTUNITY_ACME_2025);
    assert!(
        nodes
            .child_names(nodes.child(ws, "Products"))
            .contains(&"5810 Valve V10 product data.json".to_string())
    );
    bridge.stop().await;
}

// ------------------------------------------------------------------------------------------
// archival
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn archival_archives_classifies_finalizes_holds_and_locks() {
    let bridge = start(&["archival"]).await;
    bridge
        .webhook("product", ids::PRODUCT_VALVE_V10, "moduleobject_modify")
        .await;
    let nodes = Nodes::of(&bridge.ot);
    let ws = nodes.workspace("product_archive", ids::PRODUCT_VALVE_V10);
    assert_eq!(ws["name"], "Archive 5810 Valve V10");
    assert_eq!(
        nodes.child_names(nodes.child(ws, "Final Data")),
        ["5810 final data.html", "5810 final data.json"]
    );
    assert_eq!(
        nodes.child_names(nodes.child(ws, "Final Assets")),
        ["pricing-2025.csv"]
    );
    let history_folder = nodes.child(ws, "Approval History");
    assert_eq!(
        nodes.child_names(history_folder),
        ["5810 approval history.html", "5810 approval history.json"]
    );
    let history = nodes.child(history_folder, "5810 approval history.json");
    let history: Value =
        serde_json::from_slice(&bridge.download(history["id"].as_i64().unwrap()).await).unwrap();
    assert_eq!(history["audit"][0]["type"], "initial", "{history}");

    assert_eq!(ws["rm"]["class_id"], 276_654, "{}", ws["rm"]);
    assert!(ws["holds"].as_array().unwrap().contains(&json!(5001)));
    for doc in ["5810 final data.json", "5810 final data.html"] {
        let node = nodes.child(nodes.child(ws, "Final Data"), doc);
        assert_eq!(node["finalized"], true, "{doc}");
        assert_eq!(node["rm"]["class_id"], 276_654);
    }
    let roles = ws["workspace"]["roles"].as_array().expect("roles");
    assert!(!roles.is_empty());
    for role in roles {
        assert_eq!(
            role["permissions"],
            json!(["see", "see_contents"]),
            "{role}"
        );
    }

    // The archive is final: a later change makes no write.
    bridge.clear_logs();
    bridge
        .edit(
            "product",
            ids::PRODUCT_VALVE_V10,
            json!({"packaging": [{"value": "crate", "dimensions": null}]}),
        )
        .await;
    assert_eq!(bridge.ot_writes(), Vec::<String>::new());
    let (state, reason) = bridge.last_outcome("archival").await;
    assert_eq!(state, "ignored");
    assert!(reason.unwrap().contains("final"));

    // Products not at end of life are not archived.
    bridge
        .webhook("product", ids::PRODUCT_PUMP_A100, "moduleobject_modify")
        .await;
    assert_eq!(Nodes::of(&bridge.ot).workspaces("product_archive").len(), 1);
    bridge.stop().await;
}

// ------------------------------------------------------------------------------------------
// change (+ write-back return path, echo suppression, poller)
// ------------------------------------------------------------------------------------------

pub(crate) fn processes(ot: &SimHandle) -> Vec<Value> {
    ot.state()["processes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

pub(crate) fn field(ap: &SimHandle, module: &str, id: &str, name: &str) -> Value {
    ap.state()["objects"][module][id][name][0]["value"].clone()
}

/// Completes a workflow in the OpenText simulator, which sends the signed callback.
pub(crate) async fn complete(bridge: &Bridge, pid: &Value, decision: &str, comment: &str) -> Value {
    let answer: Value = bridge
        .http
        .post(format!(
            "{}/workflows/{pid}/complete",
            bridge.ot.control_url()
        ))
        .json(&json!({"decision": decision, "comment": comment, "approver": "jdoe"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    bridge.settle().await;
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn change_reviews_watched_changes_and_writes_decisions_back() {
    let bridge = start(&["change", "launch"]).await;
    let a100 = ids::PRODUCT_PUMP_A100;
    bridge.webhook("product", a100, "moduleobject_modify").await;
    assert!(
        Nodes::of(&bridge.ot)
            .workspaces("product_change")
            .is_empty()
    );
    let (state, reason) = bridge.last_outcome("change").await;
    assert_eq!(state, "ignored");
    assert!(reason.unwrap().contains("no watched attribute changed"));

    bridge
        .edit(
            "product",
            a100,
            json!({"packaging": [{"value": "blister", "dimensions": null}]}),
        )
        .await;
    let nodes = Nodes::of(&bridge.ot);
    let reviews = nodes.workspaces("product_change");
    assert_eq!(reviews.len(), 1);
    let ws = reviews[0];
    assert!(
        ws["name"].as_str().unwrap().starts_with("Change 4711 #"),
        "{}",
        ws["name"]
    );
    let docs = nodes.child(ws, "Change Documents");
    let names = nodes.child_names(docs);
    assert_eq!(names.len(), 2, "{names:?}");
    let json_doc = nodes.child(docs, names.iter().find(|n| n.ends_with(".json")).unwrap());
    let change: Value =
        serde_json::from_slice(&bridge.download(json_doc["id"].as_i64().unwrap()).await).unwrap();
    assert_eq!(change["changes"][0]["field"], "packaging");
    assert_eq!(change["changes"][0]["old"], "carton");
    assert_eq!(change["changes"][0]["new"], "blister");
    assert_eq!(change["changes"][0]["changed_by"], "jdoe");
    assert_eq!(
        nodes.child_names(nodes.child(ws, "Supporting Documents")),
        ["pump-a100-datasheet.pdf"]
    );
    let started = processes(&bridge.ot);
    assert_eq!(started.len(), 1);
    assert_eq!(started[0]["workflow_id"], 6686);
    assert_eq!(started[0]["doc_ids"].as_array().unwrap().len(), 3);

    // Nothing new: no second workspace, document or workflow; no write at all.
    bridge.clear_logs();
    bridge.webhook("product", a100, "moduleobject_modify").await;
    assert_eq!(bridge.ot_writes(), Vec::<String>::new());
    assert_eq!(bridge.ap_writes(), Vec::<String>::new());

    // Approved: the callback's decision lands in the product's fields.
    let pid = started[0]["id"].clone();
    let answer = complete(&bridge, &pid, "approved", "Packaging text checked").await;
    assert_eq!(answer["callback"]["status"], 202, "{answer}");
    assert_eq!(
        field(&bridge.ap, "product", a100, "approval_status"),
        "approved"
    );
    assert_eq!(
        field(&bridge.ap, "product", a100, "approval_comment"),
        "Packaging text checked"
    );
    assert_eq!(field(&bridge.ap, "product", a100, "approved_by"), "jdoe");
    assert!(field(&bridge.ap, "product", a100, "approved_at").is_string());

    // The write-back's own change event is recognised and goes no further.
    bridge.clear_logs();
    bridge.webhook("product", a100, "moduleobject_modify").await;
    assert_eq!(bridge.ot_writes(), Vec::<String>::new());
    let (state, reason) = bridge.last_outcome("launch").await;
    assert_eq!(state, "ignored");
    assert_eq!(reason.as_deref(), Some(flows::echo::ECHO_REASON));

    // A second change, rejected: a second review workspace; the rejection is written back.
    bridge
        .edit(
            "product",
            a100,
            json!({"compliance_class": [{"value": "UKCA", "dimensions": null}]}),
        )
        .await;
    assert_eq!(Nodes::of(&bridge.ot).workspaces("product_change").len(), 2);
    let second = processes(&bridge.ot)
        .into_iter()
        .find(|p| p["id"] != pid)
        .expect("second workflow");
    complete(&bridge, &second["id"], "rejected", "Label not updated").await;
    assert_eq!(
        field(&bridge.ap, "product", a100, "approval_status"),
        "rejected"
    );
    assert_eq!(
        field(&bridge.ap, "product", a100, "approval_comment"),
        "Label not updated"
    );
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn change_decisions_are_found_by_the_poller_when_no_callback_comes() {
    let bridge = start(&["change"]).await;
    let v20 = ids::PRODUCT_VALVE_V20;
    bridge
        .edit(
            "product",
            v20,
            json!({"claims": [{"value": ["recyclable"], "dimensions": null}]}),
        )
        .await;
    let started = processes(&bridge.ot);
    assert_eq!(started.len(), 1);
    // The callback goes nowhere (OpenText's side is not set up to post it).
    bridge
        .http
        .put(format!("{}/callback", bridge.ot.control_url()))
        .json(&json!({"url": "http://127.0.0.1:9/unreachable"}))
        .send()
        .await
        .unwrap();
    complete(
        &bridge,
        &started[0]["id"],
        "rejected",
        "Claim not substantiated",
    )
    .await;
    assert!(field(&bridge.ap, "product", v20, "approval_status").is_null());

    let feed = flows::workflow_feed(&bridge.clients);
    let store = bridge.store();
    let found = xecm_bridge::worker::reconcile::reconcile_opentext(
        store.as_ref(),
        feed.as_ref(),
        xecm_bridge::store::now_millis(),
    )
    .await
    .expect("poll");
    assert_eq!(found, 1);
    bridge.settle().await;
    assert_eq!(
        field(&bridge.ap, "product", v20, "approval_status"),
        "rejected"
    );
    assert_eq!(
        field(&bridge.ap, "product", v20, "approval_comment"),
        "Claim not substantiated"
    );
    assert_eq!(field(&bridge.ap, "product", v20, "approved_by"), "jdoe");
    bridge.stop().await;
}

// ------------------------------------------------------------------------------------------
// compliance
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compliance_ties_documents_to_the_data_version_and_marks_outdated_reviews() {
    let bridge = start(&["compliance"]).await;
    let a100 = ids::PRODUCT_PUMP_A100;
    bridge.webhook("product", a100, "moduleobject_modify").await;
    let nodes = Nodes::of(&bridge.ot);
    let ws = nodes.workspace("product_compliance", a100);
    let mod_time = bridge.ap.state()["objects"]["product"][a100]["mod_time"].clone();
    let claims = nodes.child(nodes.child(ws, "Claims"), "4711 claims.json");
    let tags = &claims["categories"]["9840"];
    assert_eq!(tags["9840_2"], a100);
    assert_eq!(tags["9840_3"], "product");
    assert_eq!(tags["9840_4"], mod_time);
    assert_eq!(tags["9840_5"].as_str().unwrap().len(), 64);
    let image = nodes.child(nodes.child(ws, "Images"), "pump-a100.png");
    assert_eq!(image["categories"]["9840"]["9840_4"], mod_time);
    assert_eq!(image["categories"]["9840"]["9840_6"], "image");
    assert_eq!(ws["categories"]["9830"]["9830_9"], "in review");
    assert_eq!(processes(&bridge.ot).len(), 1);
    assert_eq!(processes(&bridge.ot)[0]["workflow_id"], 6687);

    bridge.clear_logs();
    bridge.webhook("product", a100, "moduleobject_modify").await;
    assert_eq!(bridge.ot_writes(), Vec::<String>::new());

    // Product data changes while the review runs: the review is marked outdated and the
    // documents carry the new version; no second review runs at the same time.
    bridge
        .edit(
            "product",
            a100,
            json!({"claims": [{"value": ["energy efficient", "quiet"], "dimensions": null}]}),
        )
        .await;
    let nodes = Nodes::of(&bridge.ot);
    let ws = nodes.workspace("product_compliance", a100);
    assert_eq!(ws["categories"]["9830"]["9830_9"], "outdated");
    let new_time = bridge.ap.state()["objects"]["product"][a100]["mod_time"].clone();
    let claims = nodes.child(nodes.child(ws, "Claims"), "4711 claims.json");
    assert_eq!(versions(claims), 2);
    assert_eq!(claims["categories"]["9840"]["9840_4"], new_time);
    assert_eq!(processes(&bridge.ot).len(), 1);

    // Once the outdated review is decided, the current version gets its own review.
    let pid = processes(&bridge.ot)[0]["id"].clone();
    complete(&bridge, &pid, "approved", "ok").await;
    bridge.webhook("product", a100, "moduleobject_modify").await;
    assert_eq!(processes(&bridge.ot).len(), 2);
    let ws = Nodes::of(&bridge.ot)
        .workspace("product_compliance", a100)
        .clone();
    assert_eq!(ws["categories"]["9830"]["9830_9"], "in review");
    bridge.stop().await;
}

// ------------------------------------------------------------------------------------------
// partner (+ import return path)
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partner_shares_content_and_imports_approved_partner_documents() {
    let bridge = start(&["partner"]).await;
    let partner = ids::PARTNER_DISTRIBUTOR;
    bridge
        .webhook("partner", partner, "moduleobject_modify")
        .await;
    let nodes = Nodes::of(&bridge.ot);
    assert_eq!(nodes.workspaces("partner_product").len(), 2);
    let a100 = nodes.workspace(
        "partner_product",
        &format!("{partner}:{}", ids::PRODUCT_PUMP_A100),
    );
    assert_eq!(a100["name"], "Nordic Distribution AB - Pump A100 (4711)");
    assert_eq!(
        nodes.child_names(nodes.child(a100, "Specifications")),
        ["pump-a100-datasheet.pdf"]
    );
    assert_eq!(
        nodes.child_names(nodes.child(a100, "Media")),
        ["pump-a100.png"]
    );
    assert_eq!(
        nodes.child_names(nodes.child(a100, "Channel Content")),
        ["4711 channel content.html", "4711 channel content.json"]
    );

    // The partner uploads a translation; it is approved internally.
    let content = b"Fiche technique Pompe A100".to_vec();
    let uploaded: Value = bridge
        .http
        .post(format!("{}/partner/upload", bridge.ot.control_url()))
        .json(
            &json!({"workspace_id": a100["id"], "name": "Datasheet FR.txt",
                      "content": String::from_utf8(content.clone()).unwrap(),
                      "mime_type": "text/plain"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let approve = || async {
        let answer: Value = bridge
            .http
            .post(format!("{}/partner/approve", bridge.ot.control_url()))
            .json(&json!({"node_id": uploaded["node_id"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["callback"]["status"], 202, "{answer}");
        bridge.settle().await;
    };
    approve().await;
    let node = uploaded["node_id"].as_i64().unwrap();
    let file_id = flows::partner::import_id("4ALLPORTAL", node, 1);
    let state = bridge.ap.state();
    let file = &state["objects"]["file"][&file_id];
    assert_eq!(file["name"][0]["value"], "Datasheet FR.txt", "{file}");
    assert_eq!(file["asset_type"][0]["value"], "partner_document");
    assert_eq!(file["_media"]["Original"]["sha256"], sha256(&content));
    let linked =
        &state["objects"]["product"][ids::PRODUCT_PUMP_A100]["partner_documents"][0]["value"];
    assert_eq!(linked, &json!([file_id]));

    // The same approval again imports nothing twice.
    bridge.clear_logs();
    approve().await;
    assert_eq!(bridge.ap_writes(), Vec::<String>::new());
    bridge.stop().await;
}

// ------------------------------------------------------------------------------------------
// deletes
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_marks_the_workspace_and_deletes_nothing_in_opentext() {
    let bridge = start(&["launch"]).await;
    let a100 = ids::PRODUCT_PUMP_A100;
    bridge.webhook("product", a100, "moduleobject_modify").await;
    let before = Nodes::of(&bridge.ot).0.len();
    let status = bridge
        .http
        .delete(format!(
            "{}/api/modules/product/objects/{a100}",
            bridge.ap.base_url()
        ))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "{status}");
    bridge.clear_logs();
    bridge.webhook("product", a100, "moduleobject_delete").await;
    let writes = bridge.ot_writes();
    assert!(
        writes
            .iter()
            .all(|w| w.starts_with("PUT ") && w.contains("/categories/")),
        "{writes:?}"
    );
    let nodes = Nodes::of(&bridge.ot);
    assert_eq!(nodes.0.len(), before, "nothing deleted");
    let ws = nodes.workspace("product", a100);
    assert_eq!(ws["categories"]["9830"]["9830_3"], "deleted in 4ALLPORTAL");
    let link = bridge
        .store()
        .get_link("launch", &format!("product/{a100}"))
        .await
        .unwrap()
        .unwrap();
    assert!(link.state["deleted_at"].is_i64());
    bridge.stop().await;
}

// ------------------------------------------------------------------------------------------
// lost answers
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn creates_whose_answer_was_lost_are_resolved_by_lookup_without_duplicates() {
    let bridge = start(&["launch"]).await;
    // The next creates are carried out but answered "already exists" (as after a timeout and
    // a retry): the workspace and the first uploads.
    bridge.ot.set_faults(xecm_bridge::sim::FaultSettings {
        duplicate_creates: 3,
        ..Default::default()
    });
    bridge
        .webhook("product", ids::PRODUCT_PUMP_A100, "moduleobject_modify")
        .await;
    let nodes = Nodes::of(&bridge.ot);
    let ws = nodes.workspace("product", ids::PRODUCT_PUMP_A100);
    let master = nodes.child(ws, "Master Data");
    assert_eq!(
        nodes.child_names(master),
        ["4711 master data.html", "4711 master data.json"]
    );
    for doc in nodes.children(master) {
        assert_eq!(versions(doc), 1, "{}", doc["name"]);
    }
    bridge.clear_logs();
    bridge
        .webhook("product", ids::PRODUCT_PUMP_A100, "moduleobject_modify")
        .await;
    assert_eq!(bridge.ot_writes(), Vec::<String>::new());
    bridge.stop().await;
}
