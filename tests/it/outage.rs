//! Faults without losses, with the real binary and both simulators (issue rows: an OpenText
//! outage under steady traffic, a restart after `kill -9`, a replica dying on PostgreSQL, the
//! echo of a write-back arriving before the write's response).

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cluster::*;
use common::{ADMIN_TOKEN, ALLPORTAL_SECRET};
use serde_json::{Value, json};
use tokio::time::Instant;
use xecm_bridge::sim::FaultSettings;
use xecm_bridge::sim::allportal::ids;

/// Outage under traffic: products, webhooks per second; the outage lasts 60 s unless
/// `XECM_TEST_OUTAGE_SECS` says otherwise (the README's figures for 10 minutes come from
/// `XECM_TEST_OUTAGE_SECS=600 cargo test --test it outage::an_opentext`).
const PRODUCTS: usize = 5;
const EVENTS_PER_SEC: u64 = 10;
/// The backlog is drained within this time after the upstream answers again.
const DRAINED_WITHIN: Duration = Duration::from_secs(120);

fn outage_secs() -> u64 {
    std::env::var("XECM_TEST_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
}

/// With the shipped retry schedule (5 s … 1 h) and circuit breaker (opens for 30 s), not the
/// tests' short ones: a job whose schedule reached 600 s or more still runs right after the
/// recovery, because the closing circuit resumes waiting work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opentext_outage_under_steady_traffic_waits_instead_of_dying() {
    let outage = outage_secs();
    let sims = Sims::start(PRODUCTS, 0).await;
    let setup = SqliteBridge::configure(&sims, &["launch"], "");
    shipped_circuit_breaker(&setup.config);
    let bridge = setup.start().await;

    // Retry-After: 1 keeps the bridge knocking, so its circuit breaker opens and closes.
    sims.ot.set_faults(FaultSettings {
        outage_secs: Some(outage),
        retry_after_secs: Some(1),
        ..FaultSettings::default()
    });
    let outage_ends = Instant::now() + Duration::from_secs(outage);
    // Steady traffic through the whole outage: every product changes again and again.
    let mut sent = 0usize;
    let pause = Duration::from_millis(1000 / EVENTS_PER_SEC);
    while Instant::now() < outage_ends {
        let product = &sims.products[sent % PRODUCTS];
        bridge.webhook(&format!("msg_{sent}"), product).await;
        sent += 1;
        tokio::time::sleep(pause).await;
    }
    let drained = settle_within(&bridge, DRAINED_WITHIN).await;
    eprintln!(
        "{sent} events during a {outage} s outage; backlog drained {:.1} s after recovery",
        drained.as_secs_f64()
    );
    drop(bridge);
    assert_all_events_final(&setup.config, sent).await;
    assert_exactly_once(&sims);

    // How the runs ended (parked runs, if the circuit opened, spend no attempt; parking itself
    // is shown by worker_suite's `an_open_circuit_parks_work_without_spending_attempts`).
    let attempts = attempt_outcomes(setup.dir.path()).await;
    eprintln!("attempt outcomes: {attempts:?}");
    // The schedule, not the traffic, spends attempts: with ~40 events per product, a job
    // whose retry was pulled forward by each of them would count dozens.
    let most = most_counted_attempts(setup.dir.path()).await;
    eprintln!("most attempts counted by one job: {most}");
    assert!(
        most <= 1 + outage as i64,
        "a job spent {most} attempts in a {outage} s outage"
    );
}

/// The shipped `[opentext.transport]` circuit settings instead of the cluster's quick ones.
fn shipped_circuit_breaker(config: &std::path::Path) {
    let text = std::fs::read_to_string(config).unwrap();
    let text = text
        .replace("circuit_min_requests = 5", "circuit_min_requests = 20")
        .replace("circuit_window_secs = 10", "circuit_window_secs = 30")
        .replace("circuit_open_secs = 1", "circuit_open_secs = 30");
    assert!(text.contains("circuit_open_secs = 30"), "{text}");
    std::fs::write(config, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_a_restart_finishes_every_event_within_90_s_with_default_leases() {
    const BURST: usize = 30;
    let sims = Sims::start(BURST, 40).await;
    // The default leases (30 s, renewed every 10 s), not the tests' short ones.
    let setup = SqliteBridge::configure(&sims, &["launch"], "retry_schedule_secs = [1, 1, 2]");
    let mut bridge = setup.start().await;
    send_burst(&[&bridge], &sims.products).await;
    wait_for_launched(&sims, &bridge, BURST / 4).await;
    bridge.kill();
    eprintln!("killed with {}/{BURST} products launched", sims.launched());

    let restarted = Instant::now();
    bridge.restart().await;
    let took = settle_within(&bridge, Duration::from_secs(90)).await;
    eprintln!(
        "every event final {:.1} s after the restart",
        took.as_secs_f64()
    );
    bridge.kill();
    assert!(restarted.elapsed() >= took);
    assert_all_events_final(&setup.config, BURST * 2).await;
    assert_exactly_once(&sims);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_the_surviving_replica_takes_over_within_60_s() {
    const BURST: usize = 30;
    let Some(db) = FreshPostgres::create().await else {
        return;
    };
    let sims = Sims::start(BURST, 40).await;
    let dir = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let worker = "retry_schedule_secs = [1, 1, 2]";
    let config_a = write_config_for(
        dir.path(),
        "bridge-a",
        port_a,
        &db.url,
        &sims,
        &["launch"],
        worker,
    );
    let config_b = write_config_for(
        dir.path(),
        "bridge-b",
        port_b,
        &db.url,
        &sims,
        &["launch"],
        worker,
    );
    let mut a = BridgeProcess::start(&config_a, port_a).await;
    let mut b = BridgeProcess::start(&config_b, port_b).await;
    send_burst(&[&a, &b], &sims.products).await;
    wait_for_launched(&sims, &a, BURST / 4).await;
    a.kill();
    let took = settle_within(&b, Duration::from_secs(60)).await;
    eprintln!(
        "the surviving replica finished every event {:.1} s after the kill",
        took.as_secs_f64()
    );
    b.kill();
    assert_all_events_final(&config_b, BURST * 2).await;
    assert_exactly_once(&sims);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echo_arriving_before_the_write_back_answer_causes_no_write() {
    let sims = Sims::start(0, 0).await;
    let setup = SqliteBridge::configure(&sims, &["change", "compliance", "launch"], FAST_WORKER);
    let bridge = setup.start().await;
    let base = bridge.base.clone();
    // Every write sends its webhook, and before it is answered: the echo of the bridge's
    // write-back is stored (and may run) before the bridge has the write's response.
    sim_control(
        &sims.ap.control_url(),
        reqwest::Method::PUT,
        "webhook",
        json!({"url": format!("{base}/webhooks/allportal"), "secret": ALLPORTAL_SECRET,
               "auto": true, "before_response": true}),
    )
    .await;
    sim_control(
        &sims.ot.control_url(),
        reqwest::Method::PUT,
        "callback",
        json!({"url": format!("{base}/webhooks/opentext")}),
    )
    .await;
    let a100 = ids::PRODUCT_PUMP_A100;
    // A watched attribute changes: a change review starts (compliance and launch run too).
    sim_control(
        &sims.ap.control_url(),
        reqwest::Method::POST,
        &format!("objects/product/{a100}"),
        json!({"packaging": [{"value": "blister", "dimensions": null}]}),
    )
    .await;
    bridge.settle().await;
    let change_pid = process_of(&sims, 6686);

    // The review is approved; the decision is written back to the product, whose webhook
    // reaches the bridge before the write is answered.
    sims.ot.clear_requests();
    sims.ap.clear_requests();
    let answer = sim_control(
        &sims.ot.control_url(),
        reqwest::Method::POST,
        &format!("workflows/{change_pid}/complete"),
        json!({"decision": "approved", "comment": "checked", "approver": "jdoe"}),
    )
    .await;
    assert_eq!(answer["callback"]["status"], 202, "{answer}");
    bridge.settle().await;
    let product = &sims.ap.state()["objects"]["product"][a100];
    assert_eq!(product["approval_status"][0]["value"], "approved");
    let ap_writes = writes(&sims.ap);
    assert_eq!(
        ap_writes,
        ["PATCH /api/modules/product/objects"],
        "one write-back"
    );
    let ot_writes = writes(&sims.ot);
    assert!(
        ot_writes.is_empty(),
        "the write-back's echo caused OpenText writes: {ot_writes:?}"
    );
    let echoes = echo_skips(&bridge).await;
    eprintln!("runs skipped as echoes: {echoes}");
    assert!(echoes > 0, "the echo never reached the flows");

    // A real user edit after the write-back is a change: compliance marks its review outdated.
    sims.ot.clear_requests();
    sim_control(
        &sims.ap.control_url(),
        reqwest::Method::POST,
        &format!("objects/product/{a100}"),
        json!({"claims": [{"value": ["energy efficient", "quiet"], "dimensions": null}]}),
    )
    .await;
    bridge.settle().await;
    assert!(
        !writes(&sims.ot).is_empty(),
        "a user edit after the write-back was taken for an echo"
    );
}

/// Writes a simulator received, as `METHOD path` (logins left out).
fn writes(sim: &xecm_bridge::sim::SimHandle) -> Vec<String> {
    sim.requests()
        .into_iter()
        .filter(|r| r.is_write() && !r.path.ends_with("/api/v1/auth"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn process_of(sims: &Sims, map: i64) -> i64 {
    let state = sims.ot.state();
    let found: Vec<i64> = state["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["workflow_id"] == map)
        .filter_map(|p| p["id"].as_i64())
        .collect();
    assert_eq!(found.len(), 1, "one workflow of map {map}: {state}");
    found[0]
}

async fn sim_control(base: &str, method: reqwest::Method, path: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .request(method, format!("{base}/{path}"))
        .json(&body)
        .send()
        .await
        .expect("control request");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap_or(Value::Null)
}

/// Jobs skipped as echoes of the bridge's own write-backs, through the admin API.
async fn echo_skips(bridge: &BridgeProcess) -> usize {
    let http = reqwest::Client::new();
    let events: Value = http
        .get(format!(
            "{}/api/v1/events?state=ignored&limit=500",
            bridge.base
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut skipped = 0;
    for event in events["events"].as_array().into_iter().flatten() {
        let detail: Value = http
            .get(format!(
                "{}/api/v1/events/{}",
                bridge.base,
                event["id"].as_str().unwrap()
            ))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        skipped += detail["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|j| j["last_error"] == xecm_bridge::flows::echo::ECHO_REASON)
            .count();
    }
    skipped
}

async fn wait_for_launched(sims: &Sims, bridge: &BridgeProcess, at_least: usize) {
    let deadline = Instant::now() + DEADLINE;
    while sims.launched() < at_least {
        if Instant::now() > deadline {
            bridge.fail("no progress before the kill");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until no event and no job is left, failing after `limit` (the requirement) or on dead
/// letters; returns how long it took.
async fn settle_within(bridge: &BridgeProcess, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if let Some(status) = bridge.try_status().await {
            let backlog = &status["backlog"];
            if backlog["events"] == 0 && backlog["jobs"] == 0 {
                if status["dead_letters"] != 0 {
                    bridge.fail(&format!("dead letters: {status}"));
                }
                return started.elapsed();
            }
            if started.elapsed() > limit {
                bridge.fail(&format!("not final within {limit:?}: {status}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn open_store(dir: &std::path::Path) -> sqlx::SqliteConnection {
    use sqlx::ConnectOptions as _;
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join("bridge.db"))
        .read_only(true)
        .connect()
        .await
        .expect("open the store")
}

async fn attempt_outcomes(dir: &std::path::Path) -> BTreeMap<String, i64> {
    let mut conn = open_store(dir).await;
    let rows: Vec<(Option<String>, i64)> =
        sqlx::query_as("SELECT outcome, COUNT(*) FROM attempts GROUP BY outcome")
            .fetch_all(&mut conn)
            .await
            .expect("attempts");
    rows.into_iter()
        .map(|(o, n)| (o.unwrap_or_else(|| "open".into()), n))
        .collect()
}

/// The most attempts any job counts against its schedule (parked and released runs do not).
async fn most_counted_attempts(dir: &std::path::Path) -> i64 {
    let mut conn = open_store(dir).await;
    sqlx::query_scalar("SELECT COALESCE(MAX(attempts), 0) FROM jobs")
        .fetch_one(&mut conn)
        .await
        .expect("jobs")
}
