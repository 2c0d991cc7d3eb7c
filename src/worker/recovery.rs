//! Work waiting for a retry resumes when its upstream recovers: each time an upstream's
//! circuit closes after a successful probe, every job scheduled for a later attempt is made due
//! within a few seconds. So a backlog drains shortly after an outage ends, wherever its retry
//! schedule stood (after a 10-minute outage a job may be waiting out a 600 s or 1800 s delay).
//! A job that was waiting for the other upstream spends one attempt early, at worst.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::clock::Clock;
use crate::store::Store;

/// Resumed jobs are spread over ten steps of this length.
const STEP_MS: i64 = 500;

/// One loop per upstream signal.
pub(super) fn spawn(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    signals: Vec<watch::Receiver<u64>>,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    signals
        .into_iter()
        .map(|mut signal| {
            let (store, clock, shutdown) = (store.clone(), clock.clone(), shutdown.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        changed = signal.changed() => if changed.is_err() { return },
                    }
                    match store.resume_waiting(clock.now_millis(), STEP_MS).await {
                        Ok(0) => {}
                        Ok(resumed) => {
                            tracing::info!(resumed, "an upstream recovered; waiting work resumes");
                            store.wakeup().notify_waiters();
                        }
                        Err(error) => tracing::warn!(%error, "cannot resume waiting work"),
                    }
                }
            })
        })
        .collect()
}
