//! Onboarding an installation: backfills (the store's cursor and lease on both backends; the
//! real binary with both simulators for dry run, cancel and resume, resume after `kill -9`,
//! the `backfill` command, and OpenText's rate limit while backfilled work runs).

use crate::backend_tests;
use crate::common;

use std::time::Duration;

use common::cluster::*;
use common::{ADMIN_TOKEN, TestDb};
use serde_json::{Value, json};
use tokio::time::Instant;
use xecm_bridge::store::{BackfillRecord, backfill_event, backfill_state};

// ----- the store: cursor, lease, cancel, outcomes (SQLite and PostgreSQL) -----

fn record(id: &str, now: i64) -> BackfillRecord {
    BackfillRecord {
        id: id.into(),
        flow: "launch".into(),
        condition: Some("family = 'pumps'".into()),
        query: Some("(status = 'launch_ready') AND (family = 'pumps')".into()),
        rate: Some(5.0),
        state: backfill_state::RUNNING.into(),
        cursor: None,
        found: 0,
        total: None,
        error: None,
        created_at: now,
        updated_at: now,
    }
}

async fn the_cursor_and_lease_survive_in_the_store(db: &TestDb) {
    let store = &db.store;
    store.create_backfill(&record("b1", 1000)).await.unwrap();

    // One holder at a time; the lease is free again once it expired.
    let taken = store.lease_backfill(None, "a", 20_000, 1000).await.unwrap();
    assert_eq!(taken.map(|b| b.id).as_deref(), Some("b1"));
    assert!(
        store
            .lease_backfill(None, "b", 20_000, 2000)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .lease_backfill(Some("b1"), "b", 20_000, 2000)
            .await
            .unwrap()
            .is_none()
    );

    assert!(
        store
            .advance_backfill("b1", "a", Some("p-0200"), 200, Some(450), 30_000, 3000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .advance_backfill("b1", "b", Some("p-0400"), 200, None, 30_000, 3000)
            .await
            .unwrap(),
        "only the holder advances the cursor"
    );
    let after_expiry = store
        .lease_backfill(None, "b", 60_000, 31_000)
        .await
        .unwrap();
    let resumed = after_expiry.expect("an expired lease is taken over");
    assert_eq!(resumed.cursor.as_deref(), Some("p-0200"));
    assert_eq!((resumed.found, resumed.total), (200, Some(450)));
    assert_eq!(resumed.condition.as_deref(), Some("family = 'pumps'"));
    assert!(
        !store
            .advance_backfill("b1", "a", Some("p-0400"), 200, None, 60_000, 32_000)
            .await
            .unwrap(),
        "the former holder stops once the backfill was taken over"
    );

    // Cancelled: the holder's next page is refused; the same flow and condition resume it.
    assert!(
        store
            .set_backfill_state(
                "b1",
                &[backfill_state::RUNNING],
                backfill_state::CANCELLED,
                None,
                33_000
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .advance_backfill("b1", "b", Some("p-0400"), 200, None, 60_000, 34_000)
            .await
            .unwrap()
    );
    let resumable = store
        .resumable_backfill("launch", Some("family = 'pumps'"))
        .await
        .unwrap()
        .expect("a cancelled backfill is resumable");
    assert_eq!(resumable.id, "b1");
    assert!(
        store
            .resumable_backfill("launch", None)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .resumable_backfill("family", Some("family = 'pumps'"))
            .await
            .unwrap()
            .is_none()
    );

    // Its events, however often a page is enqueued, are counted once each.
    let events = |keys: &[&str]| {
        keys.iter()
            .map(|k| backfill_event("b1", "launch", k, 40_000).unwrap())
            .collect::<Vec<_>>()
    };
    store
        .insert_events(events(&["product/1", "product/2"]))
        .await
        .unwrap();
    store
        .insert_events(events(&["product/2", "product/3"]))
        .await
        .unwrap();
    store
        .insert_events(vec![
            backfill_event("b10", "launch", "product/1", 40_000).unwrap(),
        ])
        .await
        .unwrap();
    let outcomes = store.backfill_outcomes("b1").await.unwrap();
    assert_eq!((outcomes.enqueued, outcomes.pending), (3, 3));
    assert_eq!(store.backfill_outcomes("b10").await.unwrap().enqueued, 1);
}

backend_tests!(the_cursor_and_lease_survive_in_the_store);

// ----- the real binary against both simulators -----

struct Admin {
    base: String,
    http: reqwest::Client,
}

impl Admin {
    fn of(bridge: &BridgeProcess) -> Self {
        Admin {
            base: bridge.base.clone(),
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("admin request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON answer"))
    }

    async fn progress(&self, id: &str) -> Value {
        self.http
            .get(format!("{}/api/v1/backfills/{id}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("progress request")
            .json()
            .await
            .expect("progress body")
    }

    /// Polls the backfill until `done` holds (a hang guard, not a timing assertion).
    async fn wait_for(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let progress = self.progress(id).await;
            if done(&progress) {
                return progress;
            }
            assert!(Instant::now() < deadline, "{what}: {progress}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn finished(p: &Value) -> bool {
    p["state"] == backfill_state::ENUMERATED && p["pending"] == 0
}

/// The launch-ready products 4ALLPORTAL holds (the backfill's expected total).
async fn launch_ready(admin: &Admin) -> u64 {
    let (status, dry) = admin
        .post(
            "/api/v1/backfills",
            json!({"flow": "launch", "dry_run": true}),
        )
        .await;
    assert_eq!(status, 200, "{dry}");
    dry["total"].as_u64().expect("a total")
}

#[tokio::test]
async fn a_dry_run_counts_and_samples_without_enqueueing() {
    let sims = Sims::start(25, 0).await;
    let bridge = SqliteBridge::configure(&sims, &["launch"], FAST_WORKER);
    let process = bridge.start().await;
    let admin = Admin::of(&process);

    let (status, dry) = admin
        .post(
            "/api/v1/backfills",
            json!({"flow": "launch", "dry_run": true}),
        )
        .await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["module"], "product");
    assert_eq!(dry["query"], "(status = 'launch_ready')");
    assert!(dry["total"].as_u64().unwrap() >= 25, "{dry}");
    let sample: Vec<&str> = dry["sample"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(sample.len(), 10);
    assert!(
        sample.windows(2).all(|w| w[0] < w[1]),
        "in id order: {sample:?}"
    );

    // A condition narrows it; an unknown flow is refused by name.
    let (_, narrowed) = admin
        .post(
            "/api/v1/backfills",
            json!({"flow": "launch", "where": format!("id = '{}'", sims.products[3]), "dry_run": true}),
        )
        .await;
    assert_eq!(narrowed["total"], 1, "{narrowed}");
    let (status, problem) = admin
        .post("/api/v1/backfills", json!({"flow": "nonesuch"}))
        .await;
    assert_eq!(
        status, 404,
        "as plan and resync answer a flow that is not configured"
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("nonesuch"),
        "{problem}"
    );
    let (status, problem) = admin
        .post(
            "/api/v1/backfills",
            json!({"flow": "launch", "rate": 0, "dry_run": true}),
        )
        .await;
    assert_eq!(status, 400, "a rate must be positive, dry run or not");
    assert!(
        problem["detail"].as_str().unwrap().contains("rate"),
        "{problem}"
    );

    let status = process.status().await;
    assert_eq!(
        status["backlog"]["events"], 0,
        "a dry run enqueues nothing: {status}"
    );
    assert_eq!(sims.launched(), 0);
}

#[tokio::test]
async fn a_cancelled_backfill_resumes_from_its_cursor_and_enqueues_each_object_once() {
    let sims = Sims::start(30, 0).await;
    let bridge = SqliteBridge::configure(&sims, &["launch"], FAST_WORKER);
    let process = bridge.start().await;
    let admin = Admin::of(&process);
    let total = launch_ready(&admin).await;

    // 5 objects a second, so that the cancel lands in the middle.
    let request = json!({"flow": "launch", "rate": 5});
    let (status, started) = admin.post("/api/v1/backfills", request.clone()).await;
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    admin
        .wait_for(&id, "the first page", |p| p["found"].as_u64() >= Some(5))
        .await;
    let (status, cancelled) = admin
        .post(&format!("/api/v1/backfills/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["state"], backfill_state::CANCELLED);
    let stopped_at = cancelled["found"].as_u64().unwrap();
    assert!(stopped_at < total, "cancelled before the end: {cancelled}");

    // Starting it again resumes the same backfill from its cursor.
    let (status, resumed) = admin.post("/api/v1/backfills", request).await;
    assert_eq!(status, 202, "{resumed}");
    assert_eq!(resumed["id"], id.as_str());
    let done = admin.wait_for(&id, "the resumed backfill", finished).await;
    assert_eq!(done["found"], total, "{done}");
    assert_eq!(done["enqueued"], total, "one event per object: {done}");
    assert_eq!(done["total"], total);
    assert_eq!(done["failed"], 0, "{done}");
    process.settle().await;
    assert_eq!(sims.launched(), sims.products.len());
    assert_exactly_once(&sims);
}

#[tokio::test]
async fn a_backfill_goes_on_after_kill_9_and_every_product_is_done_exactly_once() {
    let sims = Sims::start(60, 10).await;
    let bridge = SqliteBridge::configure(&sims, &["launch"], FAST_WORKER);
    let mut process = bridge.start().await;
    let admin = Admin::of(&process);
    let total = launch_ready(&admin).await;

    let (status, started) = admin
        .post("/api/v1/backfills", json!({"flow": "launch", "rate": 10}))
        .await;
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    admin
        .wait_for(&id, "a few pages", |p| p["found"].as_u64() >= Some(20))
        .await;
    process.kill();
    process.restart().await;

    // The restarted process takes the backfill over once the dead holder's lease ran out.
    let done = admin
        .wait_for(&id, "the backfill after kill -9", finished)
        .await;
    assert_eq!(done["found"], total, "{done}");
    assert_eq!(done["enqueued"], total, "{done}");
    assert_eq!(done["failed"], 0, "{done}");
    process.settle().await;
    assert_eq!(sims.launched(), sims.products.len());
    assert_exactly_once(&sims);
}

/// The bridge's configuration with OpenText limited to `rate` requests a second.
fn limit_opentext(config: &std::path::Path, rate: u32) {
    let text = std::fs::read_to_string(config).unwrap();
    let limited = text.replacen(
        "[opentext.transport]",
        &format!("max_requests_per_sec = {rate}\n[opentext.transport]"),
        1,
    );
    std::fs::write(config, limited).unwrap();
}

#[tokio::test]
async fn the_backfill_command_enqueues_and_backfilled_work_respects_the_opentext_rate() {
    let sims = Sims::start(12, 0).await;
    let bridge = SqliteBridge::configure(&sims, &["launch"], FAST_WORKER);
    limit_opentext(&bridge.config, 20);

    let bin = env!("CARGO_BIN_EXE_xecm-bridge");
    // tokio's Command: the simulators answer on this test's runtime meanwhile.
    let dry = tokio::process::Command::new(bin)
        .args(["backfill", "--flow", "launch", "--dry-run", "--config"])
        .arg(&bridge.config)
        .output()
        .await
        .expect("backfill --dry-run runs");
    let out = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(
        out.contains("of module `product` match `(status = 'launch_ready')`"),
        "{out}"
    );

    // Enumerate with the command (no server yet), then let a server do the work.
    let run = tokio::process::Command::new(bin)
        .args([
            "backfill",
            "--flow",
            "launch",
            "--rate",
            "50/s",
            "--no-wait",
            "--config",
        ])
        .arg(&bridge.config)
        .output()
        .await
        .expect("backfill runs");
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let progress: Value = serde_json::from_str(&out).expect("the final progress as JSON");
    assert_eq!(progress["state"], backfill_state::ENUMERATED, "{progress}");
    assert_eq!(progress["found"], progress["total"], "{progress}");
    assert_eq!(progress["enqueued"], progress["total"], "{progress}");

    sims.ot.clear_requests();
    let process = bridge.start().await;
    process.settle().await;
    assert_eq!(sims.launched(), sims.products.len());
    let log = sims.ot.requests();
    let mut times: Vec<i64> = log.iter().map(|r| r.at_ms).collect();
    times.sort_unstable();
    let peak = (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t < times[i] + 1000)
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        log.len() > 40,
        "the launches made OpenText calls: {}",
        log.len()
    );
    assert!(
        peak <= 21,
        "{peak} OpenText requests in one second, limit 20"
    );
}

// ----- register allportal: create, no-op, drift, update; only wanted events arrive -----

const SIM_API_KEY: &str = "sim-allportal-api-key";

/// The bridge's configuration with `server.public_url` set to where it listens.
fn with_public_url(bridge: &SqliteBridge) -> String {
    let url = format!("http://127.0.0.1:{}", bridge.port);
    let text = std::fs::read_to_string(&bridge.config).unwrap();
    let set = text.replacen(
        "[server]\n",
        &format!("[server]\npublic_url = \"{url}\"\n"),
        1,
    );
    std::fs::write(&bridge.config, set).unwrap();
    format!("{url}/webhooks/allportal")
}

async fn bridge_command(bridge: &SqliteBridge, args: &[&str]) -> (i32, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_xecm-bridge"))
        .args(args)
        .arg("--config")
        .arg(&bridge.config)
        .output()
        .await
        .expect("the command runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The object keys of the 4ALLPORTAL events the bridge at `base` stored, newest first, and the
/// admin API's answer they come from.
async fn allportal_event_keys(http: &reqwest::Client, base: &str) -> (Vec<String>, Value) {
    let events: Value = http
        .get(format!("{base}/api/v1/events?source=allportal"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["object_key"].as_str().unwrap().to_string())
        .collect();
    (keys, events)
}

async fn registered(sims: &Sims) -> Vec<Value> {
    reqwest::Client::new()
        .get(format!("{}/api/system/webhooks", sims.ap.base_url()))
        .bearer_auth(SIM_API_KEY)
        .send()
        .await
        .expect("list webhooks")
        .json()
        .await
        .expect("webhooks JSON")
}

#[tokio::test]
async fn register_creates_then_leaves_alone_then_repairs_the_webhook() {
    let sims = Sims::start(2, 0).await;
    let bridge = SqliteBridge::configure(&sims, &["launch"], FAST_WORKER);
    let url = with_public_url(&bridge);

    let (code, out, err) = bridge_command(&bridge, &["register", "allportal", "--dry-run"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("{url} would be created")), "{out}");
    assert!(
        out.contains("+ moduleobject_modify product where status = 'launch_ready' (simple)"),
        "{out}"
    );
    assert!(
        out.contains("+ moduleobject_delete product (simple)"),
        "{out}"
    );
    assert!(
        registered(&sims).await.is_empty(),
        "a dry run registers nothing"
    );

    let (code, out, err) = bridge_command(&bridge, &["register", "allportal"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("created"), "{out}");
    let hooks = registered(&sims).await;
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0]["url"], url.as_str());
    assert_eq!(hooks[0]["events"].as_array().unwrap().len(), 3, "{hooks:?}");
    assert!(
        hooks[0].get("secret").is_none(),
        "the secret is never listed"
    );

    let (code, out, _) = bridge_command(&bridge, &["register", "allportal"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("is up to date"),
        "a second run changes nothing: {out}"
    );
    let (code, _, err) = bridge_command(&bridge, &["check-config", "--online"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("is as the flows need"), "{err}");

    // Someone edits the webhook in 4ALLPORTAL: deletes are no longer sent, files are.
    let mut edited = hooks[0].clone();
    edited["events"] = json!([
        {"type": "moduleobject_create", "module": "product", "query": "status = 'launch_ready'", "contentType": "simple"},
        {"type": "moduleobject_modify", "module": "product", "query": "status = 'launch_ready'", "contentType": "simple"},
        {"type": "moduleobject_modify", "module": "file", "contentType": "simple"},
    ]);
    let saved = reqwest::Client::new()
        .post(format!("{}/api/system/webhooks", sims.ap.base_url()))
        .bearer_auth(SIM_API_KEY)
        .json(&edited)
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 200);
    let (code, _, err) = bridge_command(&bridge, &["check-config", "--online"]).await;
    assert_eq!(code, 4, "drift fails the online check: {err}");
    assert!(
        err.contains("+ moduleobject_delete product (simple)"),
        "{err}"
    );
    assert!(err.contains("- moduleobject_modify file (simple)"), "{err}");

    let (code, out, _) = bridge_command(&bridge, &["register", "allportal"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("updated"), "{out}");
    assert!(out.contains("- moduleobject_modify file (simple)"), "{out}");
    let hooks = registered(&sims).await;
    assert_eq!(
        hooks.len(),
        1,
        "updated in place, not duplicated: {hooks:?}"
    );
    let (_, out, _) = bridge_command(&bridge, &["register", "allportal"]).await;
    assert!(out.contains("is up to date"), "{out}");
}

#[tokio::test]
async fn a_registered_webhook_sends_exactly_the_events_the_flows_want() {
    let sims = Sims::start(2, 0).await;
    let bridge = SqliteBridge::configure(&sims, &["launch"], FAST_WORKER);
    with_public_url(&bridge);
    let (code, out, err) = bridge_command(&bridge, &["register", "allportal"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let process = bridge.start().await;
    let status = process.status().await;
    assert_eq!(status["allportal_webhook"]["in_line"], true, "{status}");
    let http = reqwest::Client::new();
    // Deliveries before the write is answered, so that nothing is still in flight below.
    http.put(format!("{}/webhook", sims.ap.control_url()))
        .json(&json!({"before_response": true}))
        .send()
        .await
        .unwrap();
    let change = |module: &str, id: &str, fields: Value| {
        http.post(format!("{}/objects/{module}/{id}", sims.ap.control_url()))
            .json(&fields)
            .send()
    };
    let wanted = &sims.products[0];
    let drafted = &sims.products[1];
    // Unwanted: a product that is no longer launch-ready, and an object of another module.
    let v = |value: &str| json!([{"value": value, "dimensions": null}]);
    let file = xecm_bridge::sim::allportal::ids::FILE_PUMPS_MANUAL;
    for (module, id, fields) in [
        ("product", drafted.as_str(), json!({"status": v("draft")})),
        ("file", file, json!({"status": v("approved")})),
        // Wanted: a change of a launch-ready product.
        ("product", wanted.as_str(), json!({"packaging": v("crate")})),
    ] {
        let answer = change(module, id, fields).await.unwrap();
        assert!(
            answer.status().is_success(),
            "{module}/{id}: {}",
            answer.status()
        );
    }

    let (keys, events) = allportal_event_keys(&http, &process.base).await;
    assert_eq!(keys, vec![format!("product/{wanted}")], "{events}");
}

/// With the `token` scheme, `register` puts the token into the webhook's custom header and
/// 4ALLPORTAL sends it with every delivery: the registered webhook's events are accepted.
#[tokio::test]
async fn a_webhook_registered_for_the_token_scheme_delivers_authenticated_events() {
    const TOKEN: &str = "a-webhook-token-for-the-test";
    let sims = Sims::start(2, 0).await;
    let bridge = SqliteBridge::configure(&sims, &["launch"], FAST_WORKER);
    with_public_url(&bridge);
    let text = std::fs::read_to_string(&bridge.config).unwrap();
    let (head, rest) = text
        .split_once("[sources.allportal]\n")
        .expect("a sources section");
    let (_, tail) = rest.split_once('\n').expect("its secrets line");
    std::fs::write(
        &bridge.config,
        format!(
            "{head}[sources.allportal]\nscheme = \"token\"\nheader = \"x-bridge-token\"\n\
             secrets = [\"{TOKEN}\"]\n{tail}"
        ),
    )
    .unwrap();
    let (code, out, err) = bridge_command(&bridge, &["register", "allportal"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !out.contains(TOKEN) && !err.contains(TOKEN),
        "the token is never printed"
    );
    let process = bridge.start().await;
    let http = reqwest::Client::new();
    http.put(format!("{}/webhook", sims.ap.control_url()))
        .json(&json!({"before_response": true}))
        .send()
        .await
        .unwrap();
    let wanted = &sims.products[0];
    let answer = http
        .post(format!(
            "{}/objects/product/{wanted}",
            sims.ap.control_url()
        ))
        .json(&json!({"packaging": [{"value": "crate", "dimensions": null}]}))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    let (keys, events) = allportal_event_keys(&http, &process.base).await;
    assert_eq!(keys, vec![format!("product/{wanted}")], "{events}");
}
