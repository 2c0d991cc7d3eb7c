//! Background loops beside the claim loop: reconciliation, the drift audit, retention and
//! backlog gauges.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::WorkerConfig;
use super::audit::{AuditConfig, audit_round, audits};
use super::clock::{Clock, millis};
use super::flow::Router;
use super::reconcile::{ChangeFeed, WorkflowStatusFeed, reconcile_allportal, reconcile_opentext};
use crate::store::{Store, StoreError};
use crate::telemetry::metrics::PRUNED;

const DAY: Duration = Duration::from_secs(24 * 3600);
/// How often the store's size is held against its budget (one cheap query when under it).
const BUDGET_CHECK: Duration = Duration::from_secs(10);

pub(super) fn spawn_loops(
    store: Arc<dyn Store>,
    cfg: &WorkerConfig,
    clock: Arc<dyn Clock>,
    change_feed: Option<Arc<dyn ChangeFeed>>,
    workflow_feed: Option<Arc<dyn WorkflowStatusFeed>>,
    audit: Option<(AuditConfig, Router)>,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    let secs = Duration::from_secs;
    {
        let (store, clock) = (store.clone(), clock.clone());
        tasks.push(every(
            secs(cfg.metrics_interval_secs),
            shutdown.clone(),
            move || update_gauges(store.clone(), clock.clone()),
        ));
    }
    {
        let (store, clock) = (store.clone(), clock.clone());
        let retention = DAY * u32::try_from(cfg.retention_days).unwrap_or(u32::MAX);
        let batch = cfg.prune_batch as i64;
        tasks.push(every(
            secs(cfg.prune_interval_secs),
            shutdown.clone(),
            move || {
                let (store, clock) = (store.clone(), clock.clone());
                async move {
                    let older_than = clock.now_millis() - millis(retention);
                    match prune(store.as_ref(), older_than, batch).await {
                        Ok(0) => {}
                        Ok(pruned) => {
                            metrics::counter!(PRUNED, "reason" => "age").increment(pruned);
                            tracing::info!(pruned, "pruned finished events")
                        }
                        Err(error) => tracing::warn!(%error, "pruning failed"),
                    }
                }
            },
        ));
    }
    {
        let store = store.clone();
        let batch = cfg.prune_batch as i64;
        tasks.push(every(BUDGET_CHECK, shutdown.clone(), move || {
            let store = store.clone();
            async move {
                match store.prune_to_budget(batch).await {
                    Ok(0) => {}
                    Ok(pruned) => {
                        metrics::counter!(PRUNED, "reason" => "budget").increment(pruned);
                        tracing::warn!(
                            pruned,
                            "the store is over 80% of store.max_bytes: pruned the oldest finished \
                             events before worker.retention_days"
                        )
                    }
                    Err(error) => tracing::warn!(%error, "pruning to the store budget failed"),
                }
            }
        }));
    }
    if let (Some(feed), true) = (change_feed, cfg.reconcile_allportal_interval_secs > 0) {
        let (store, clock) = (store.clone(), clock.clone());
        let interval = secs(cfg.reconcile_allportal_interval_secs);
        tasks.push(every(interval, shutdown.clone(), move || {
            let (store, clock, feed) = (store.clone(), clock.clone(), feed.clone());
            async move {
                if let Err(error) =
                    reconcile_allportal(store.as_ref(), feed.as_ref(), clock.now_millis()).await
                {
                    tracing::warn!(%error, "4ALLPORTAL reconciliation failed");
                }
            }
        }));
    }
    if let Some((audit, router)) = audit.filter(|(a, _)| a.enabled && a.interval_secs > 0) {
        let (store, clock) = (store.clone(), clock.clone());
        let interval = secs(audit.interval_secs);
        tasks.push(every(interval, shutdown.clone(), move || {
            let (store, clock, router) = (store.clone(), clock.clone(), router.clone());
            async move {
                let now = clock.now_millis();
                let audited = |flow: &str, key: &str| audits(&router, flow, key);
                if let Err(error) =
                    audit_round(store.as_ref(), audit.objects_per_round, &audited, now).await
                {
                    tracing::warn!(%error, "drift audit round failed");
                }
            }
        }));
    }
    if let (Some(feed), true) = (workflow_feed, cfg.reconcile_opentext_interval_secs > 0) {
        let interval = secs(cfg.reconcile_opentext_interval_secs);
        tasks.push(every(interval, shutdown, move || {
            let (store, clock, feed) = (store.clone(), clock.clone(), feed.clone());
            async move {
                if let Err(error) =
                    reconcile_opentext(store.as_ref(), feed.as_ref(), clock.now_millis()).await
                {
                    tracing::warn!(%error, "OpenText reconciliation failed");
                }
            }
        }));
    }
    tasks
}

/// Runs `round` now and then every `interval` until shutdown.
fn every<F, Fut>(interval: Duration, shutdown: CancellationToken, mut round: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = round() => {}
            }
        }
    })
}

/// Deletes finished events older than `older_than` in batches until none are left; returns
/// how many.
pub async fn prune(store: &dyn Store, older_than: i64, batch: i64) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let deleted = store.prune_finished(older_than, batch).await?;
        total += deleted;
        if deleted < batch as u64 {
            return Ok(total);
        }
        // Short transactions, and room for ingest between them.
        tokio::task::yield_now().await;
    }
}

async fn update_gauges(store: Arc<dyn Store>, clock: Arc<dyn Clock>) {
    match store.backlog(clock.now_millis()).await {
        Ok(backlog) => {
            metrics::gauge!("xecm_backlog_events").set(backlog.events as f64);
            metrics::gauge!("xecm_oldest_pending_age_seconds")
                .set(backlog.oldest_pending_age_ms as f64 / 1000.0);
            metrics::gauge!("xecm_dead_letters").set(backlog.dead_letters as f64);
        }
        Err(error) => tracing::warn!(%error, "cannot read the backlog"),
    }
}
