//! The claim loop and the run of one unit of work.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::WorkerConfig;
use super::clock::{Clock, millis};
use super::flow::{FlowOutcome, Router};
use super::retry::{RetryPolicy, plan};
use crate::store::{AttemptResult, ClaimRequest, ClaimedWork, JobTransition, Store, StoreError};

/// Tries to record one outcome (100 ms, doubling: about 6 s in all).
const RECORD_TRIES: u32 = 6;

pub(super) struct Engine {
    store: Arc<dyn Store>,
    router: Router,
    cfg: WorkerConfig,
    policy: RetryPolicy,
    clock: Arc<dyn Clock>,
    instance: String,
    heartbeat: Arc<AtomicI64>,
    /// Claimed units not finished yet, by lease owner: what shutdown must give back.
    inflight: Mutex<HashMap<String, ClaimedWork>>,
}

impl Engine {
    pub(super) fn new(
        store: Arc<dyn Store>,
        router: Router,
        cfg: WorkerConfig,
        clock: Arc<dyn Clock>,
        instance: String,
        heartbeat: Arc<AtomicI64>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            router,
            policy: RetryPolicy::from_config(&cfg),
            cfg,
            clock,
            instance,
            heartbeat,
            inflight: Mutex::new(HashMap::new()),
        })
    }

    fn lease(&self) -> Duration {
        Duration::from_secs(self.cfg.lease_secs)
    }

    /// Routes and claims until shutdown, then drains running work within `grace`.
    pub(super) async fn run(self: Arc<Self>, shutdown: CancellationToken, grace: Duration) {
        let permits = Arc::new(Semaphore::new(self.cfg.concurrency));
        let mut running = JoinSet::new();
        let wakeup = self.store.wakeup();
        let poll = Duration::from_millis(self.cfg.poll_interval_ms);
        tracing::info!(instance = %self.instance, flows = ?self.router, "worker started");
        while !shutdown.is_cancelled() {
            // Registered before looking for work, so a wake-up during the round is not lost.
            let notified = wakeup.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.heartbeat
                .store(self.clock.now_millis(), Ordering::Relaxed);
            if let Err(error) = self.route_pending().await {
                tracing::warn!(%error, "routing failed; retrying next round");
            }
            if let Err(error) = self.claim_available(&permits, &mut running).await {
                tracing::warn!(%error, "claiming failed; retrying next round");
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = &mut notified => {}
                _ = tokio::time::sleep(poll) => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
        self.drain(running, grace).await;
        tracing::info!(instance = %self.instance, "worker stopped");
    }

    /// Gives every unrouted event its jobs (or marks it ignored).
    async fn route_pending(&self) -> Result<(), StoreError> {
        let batch = self.cfg.route_batch as i64;
        loop {
            let events = self.store.unrouted_events(batch).await?;
            // The resyncs of runs that depend on an event's object were stored with the event.
            let routings: Vec<_> = events.iter().map(|e| self.router.route(e)).collect();
            for r in &routings {
                if r.flows.is_empty() {
                    tracing::info!(event_id = %r.event_id, "no flow wants the event; ignored");
                    metrics::counter!("xecm_events_ignored_total").increment(1);
                }
            }
            self.store
                .route_events(&routings, self.clock.now_millis())
                .await?;
            if (events.len() as i64) < batch {
                return Ok(());
            }
        }
    }

    /// Claims units while permits and due work last; each runs in its own task.
    async fn claim_available(
        self: &Arc<Self>,
        permits: &Arc<Semaphore>,
        running: &mut JoinSet<()>,
    ) -> Result<(), StoreError> {
        while let Ok(permit) = permits.clone().try_acquire_owned() {
            let now = self.clock.now_millis();
            let request = ClaimRequest {
                owner: format!("{}/{}", self.instance, uuid::Uuid::now_v7()),
                now,
                lease_until: now + millis(self.lease()),
                max_jobs: self.cfg.coalesce_max as i64,
                // Only the maximum retry age ends retries, also for work a dead worker left.
                max_attempts: i64::MAX,
            };
            let Some(work) = self.store.claim(&request).await? else {
                return Ok(());
            };
            if work.jobs.is_empty() {
                self.store.release_work(&work, now).await?;
                continue;
            }
            self.inflight
                .lock()
                .expect("inflight lock")
                .insert(work.owner.clone(), work.clone());
            running.spawn(self.clone().run_unit(work, permit));
        }
        Ok(())
    }

    /// Runs one reconcile under a renewed lease and records its outcome on every merged job.
    async fn run_unit(self: Arc<Self>, work: ClaimedWork, _permit: OwnedSemaphorePermit) {
        let started = Instant::now();
        let lost = CancellationToken::new();
        let renewer = AbortOnDropHandle::new(tokio::spawn(
            self.clone().renew_until_done(work.clone(), lost.clone()),
        ));
        let outcome = self.reconcile(&work, &lost).await;
        drop(renewer);
        let now = self.clock.now_millis();
        let (result, transitions) = plan(&self.policy, &work, &outcome, now, || {
            rand::random_range(-1.0..=1.0)
        });
        self.record_outcome(&work, &result, &transitions).await;
        record_metrics(&work.flow, &outcome, started.elapsed());
        tracing::info!(flow = %work.flow, object_key = %work.object_key, events = work.jobs.len(),
            outcome = outcome.label(), "reconciled");
        self.inflight
            .lock()
            .expect("inflight lock")
            .remove(&work.owner);
    }

    /// Writes the outcome, retrying briefly: a transient database error must not leave the
    /// work stuck until its lease expires.
    async fn record_outcome(
        &self,
        work: &ClaimedWork,
        result: &AttemptResult,
        transitions: &[JobTransition],
    ) {
        let mut pause = Duration::from_millis(100);
        for _ in 0..RECORD_TRIES {
            match self.store.finish_work(work, result, transitions).await {
                Ok(true) => return,
                Ok(false) => {
                    tracing::warn!(flow = %work.flow, object_key = %work.object_key,
                        "lease was lost before the outcome was recorded");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, flow = %work.flow, object_key = %work.object_key,
                        "cannot record the outcome yet");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        }
        // The lease will expire and the jobs become claimable again.
        tracing::error!(flow = %work.flow, object_key = %work.object_key,
            "gave up recording the outcome; the work runs again after its lease expires");
    }

    /// The flow's outcome; a panic or a lost lease is a retryable failure. The flow runs in its
    /// own task so that a panic is contained and a lost lease (or shutdown) can stop it.
    async fn reconcile(&self, work: &ClaimedWork, lost: &CancellationToken) -> FlowOutcome {
        let Some(flow) = self.router.get(&work.flow).cloned() else {
            return FlowOutcome::retryable(format!(
                "flow `{}` is not configured on this replica",
                work.flow
            ));
        };
        let key = work.object_key.clone();
        let events: Vec<_> = work.jobs.iter().map(|j| j.event.clone()).collect();
        let mut task =
            AbortOnDropHandle::new(tokio::spawn(
                async move { flow.reconcile(&key, &events).await },
            ));
        tokio::select! {
            joined = &mut task => match joined {
                Ok(outcome) => outcome,
                Err(error) => FlowOutcome::retryable(format!("flow failed: {}", panic_message(error))),
            },
            _ = lost.cancelled() => FlowOutcome::retryable("lease lost"),
        }
    }

    /// Heartbeat: renews the lease every `lease_renew_secs`; cancels `lost` when the lease is
    /// gone, or when renewals kept failing until it ran out (another worker may take it then,
    /// so this one must stop before it could duplicate an effect).
    async fn renew_until_done(self: Arc<Self>, work: ClaimedWork, lost: CancellationToken) {
        let every = Duration::from_secs(self.cfg.lease_renew_secs);
        let mut held_until = work.lease_until;
        loop {
            tokio::time::sleep(every).await;
            let now = self.clock.now_millis();
            let until = now + millis(self.lease());
            match self.store.renew_lease(&work, until, now).await {
                Ok(true) => held_until = until,
                Ok(false) => {
                    tracing::warn!(flow = %work.flow, object_key = %work.object_key, "lease lost");
                    lost.cancel();
                    return;
                }
                Err(error) if now + millis(every) >= held_until => {
                    tracing::error!(%error, flow = %work.flow, key = %work.object_key,
                        "lease renewal failed until the lease ran out; stopping the work");
                    lost.cancel();
                    return;
                }
                // The lease is still valid for a while; the next renewal may succeed.
                Err(error) => tracing::warn!(%error, "lease renewal failed"),
            }
        }
    }

    /// Lets running work finish within `grace`, then stops it and gives it back.
    async fn drain(&self, mut running: JoinSet<()>, grace: Duration) {
        let finished = tokio::time::timeout(grace, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if finished.is_ok() {
            return;
        }
        running.abort_all();
        while running.join_next().await.is_some() {}
        let unfinished: Vec<ClaimedWork> = self
            .inflight
            .lock()
            .expect("inflight lock")
            .drain()
            .map(|(_, w)| w)
            .collect();
        for work in unfinished {
            tracing::info!(flow = %work.flow, object_key = %work.object_key, "released at shutdown");
            if let Err(error) = self
                .store
                .release_work(&work, self.clock.now_millis())
                .await
            {
                tracing::error!(%error, "cannot release work; its lease will expire instead");
            }
        }
    }
}

fn record_metrics(flow: &str, outcome: &FlowOutcome, elapsed: Duration) {
    let labels = [
        ("flow", flow.to_string()),
        ("outcome", outcome.label().to_string()),
    ];
    metrics::counter!("xecm_flow_outcomes_total", &labels).increment(1);
    metrics::histogram!("xecm_flow_duration_seconds", "flow" => flow.to_string())
        .record(elapsed.as_secs_f64());
}

fn panic_message(error: tokio::task::JoinError) -> String {
    if !error.is_panic() {
        return "cancelled".into();
    }
    let payload = error.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .map_or_else(|| "panicked".into(), |m| format!("panicked: {m}"))
}
