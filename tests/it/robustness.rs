//! Robustness with the real binary and both simulators: a SIGKILL in the middle of a burst, two
//! bridge processes on one PostgreSQL database, and an OpenText outage. Every test checks the
//! end state: every event final, nothing dead, and each effect in OpenText exactly once.

use crate::common;

use std::time::Duration;

use common::cluster::*;
use tokio::time::Instant;
use xecm_bridge::sim::FaultSettings;

const BURST: usize = 40;
const OUTAGE_SECS: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_burst_then_restart_finishes_every_event_without_duplicates() {
    // OpenText latency stretches the burst so the kill lands while work is running.
    let sims = Sims::start(BURST, 25).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let store = format!("sqlite://{}/bridge.db", dir.path().display());
    let config = write_config(dir.path(), "bridge", port, &store, &sims);
    let mut bridge = BridgeProcess::start(&config, port).await;

    send_burst(&[&bridge], &sims.products).await;
    // Kill once some products are done and work is still left.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let launched = sims.launched();
        if launched >= BURST / 4 {
            if launched >= BURST {
                bridge.fail("the burst finished before the kill; nothing was interrupted");
            }
            break;
        }
        if Instant::now() > deadline {
            bridge.fail(&format!("no progress: {launched} launched"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bridge.kill();
    let at_kill = sims.launched();
    eprintln!("killed with {at_kill}/{BURST} products launched");

    bridge.restart().await;
    bridge.settle().await;
    bridge.kill();
    assert_all_events_final(&config, BURST * 2).await;
    assert_exactly_once(&sims);
    // The kill did cut running work short: attempts the restarted process found with an
    // expired lease and closed as abandoned.
    let cut_short = abandoned_attempts(dir.path()).await;
    eprintln!("{cut_short} attempts cut short by the kill");
    assert!(cut_short > 0, "the kill interrupted no running work");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_process_a_burst_exactly_once() {
    let Some(db) = FreshPostgres::create().await else {
        return;
    };
    let sims = Sims::start(BURST, 10).await;
    let dir = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let config_a = write_config(dir.path(), "bridge-a", port_a, &db.url, &sims);
    let config_b = write_config(dir.path(), "bridge-b", port_b, &db.url, &sims);
    // One after the other, so the second start finds the migrations applied.
    let mut a = BridgeProcess::start(&config_a, port_a).await;
    let mut b = BridgeProcess::start(&config_b, port_b).await;

    send_burst(&[&a, &b], &sims.products).await;
    a.settle().await;
    b.settle().await;
    a.kill();
    b.kill();
    assert_all_events_final(&config_a, BURST * 2).await;
    assert_exactly_once(&sims);

    let units = work_units(db.attempts().await);
    let overlaps = overlapping(&units);
    assert!(
        overlaps.is_empty(),
        "one business object processed by two claims at once: {overlaps:#?}"
    );
    let mut per_process: std::collections::BTreeMap<&str, usize> = Default::default();
    for unit in &units {
        let process = unit.owner.split('/').next().unwrap_or_default();
        *per_process.entry(process).or_default() += 1;
    }
    eprintln!("units of work per process: {per_process:?}");
    assert_eq!(
        per_process.len(),
        2,
        "both processes took part: {per_process:?}"
    );
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opentext_outage_retries_opens_the_circuit_and_drains_after_the_window() {
    let sims = Sims::start(BURST, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let store = format!("sqlite://{}/bridge.db", dir.path().display());
    let config = write_config(dir.path(), "bridge", port, &store, &sims);
    let mut bridge = BridgeProcess::start(&config, port).await;

    sims.ot.set_faults(FaultSettings {
        outage_secs: Some(OUTAGE_SECS),
        retry_after_secs: Some(1),
        ..FaultSettings::default()
    });
    let window_ends = Instant::now() + Duration::from_secs(OUTAGE_SECS);
    send_burst(&[&bridge], &sims.products).await;

    // During the window the OpenText circuit opens (it half-opens every second for a probe).
    let mut circuit_opened = false;
    while Instant::now() < window_ends && !circuit_opened {
        let status = bridge.status().await;
        circuit_opened = status["upstreams"]["opentext"] == "open";
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    if !circuit_opened {
        bridge.fail("the OpenText circuit never opened during the outage");
    }

    bridge.settle().await;
    bridge.kill();
    assert_all_events_final(&config, BURST * 2).await;
    assert_exactly_once(&sims);
    let retried = attempts_with_outcome(dir.path(), "retryable").await;
    eprintln!("{retried} attempts failed retryably during the outage");
    assert!(retried > 0, "no attempt was retried");
}

/// Attempts closed because their lease expired, read through a separate read-only connection.
async fn abandoned_attempts(dir: &std::path::Path) -> i64 {
    attempts_with_outcome(dir, "abandoned").await
}

async fn attempts_with_outcome(dir: &std::path::Path, outcome: &str) -> i64 {
    use sqlx::ConnectOptions as _;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join("bridge.db"))
        .read_only(true)
        .connect()
        .await
        .expect("open the store");
    sqlx::query_scalar("SELECT COUNT(*) FROM attempts WHERE outcome = ?")
        .bind(outcome)
        .fetch_one(&mut conn)
        .await
        .expect("count attempts")
}
