//! The worker pool: route → lease → coalesce → reconcile → record outcome, retry, dead-letter;
//! plus the background loops (reconciliation with both upstreams, retention, backlog gauges).
//!
//! A unit of work is one flow for one business object key. All pending jobs of that key are
//! claimed together under one lease (so a key never runs twice at once, even across replicas)
//! and share the outcome of one reconcile.

pub mod audit;
pub mod clock;
pub mod config;
mod engine;
pub mod flow;
pub mod maintenance;
pub mod reconcile;
mod recovery;
pub mod retry;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::WorkerConfig;
pub use flow::{Classify, Flow, FlowOutcome, Router, status_is_retryable};
pub use reconcile::{ChangeBatch, ChangeFeed, ObjectChange, WorkflowStatus, WorkflowStatusFeed};
pub use retry::RetryPolicy;

use crate::store::Store;

/// Entry point: [`Worker::spawn`] or, with reconciliation feeds, [`Worker::builder`].
#[derive(Debug)]
pub struct Worker;

impl Worker {
    /// Starts the worker pool and its background loops; they stop when `shutdown` is cancelled.
    pub fn spawn(
        store: Arc<dyn Store>,
        flows: Vec<Arc<dyn Flow>>,
        cfg: WorkerConfig,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) -> WorkerHandle {
        Worker::builder(store, flows, cfg)
            .clock(clock)
            .spawn(shutdown)
    }

    pub fn builder(
        store: Arc<dyn Store>,
        flows: Vec<Arc<dyn Flow>>,
        cfg: WorkerConfig,
    ) -> WorkerBuilder {
        WorkerBuilder {
            store,
            flows,
            cfg,
            clock: Arc::new(SystemClock),
            change_feed: None,
            workflow_feed: None,
            recoveries: Vec::new(),
            audit: None,
            instance: uuid::Uuid::now_v7().to_string(),
        }
    }
}

/// Optional parts of a worker: the clock, the reconciliation feeds, the instance name.
pub struct WorkerBuilder {
    store: Arc<dyn Store>,
    flows: Vec<Arc<dyn Flow>>,
    cfg: WorkerConfig,
    clock: Arc<dyn Clock>,
    change_feed: Option<Arc<dyn ChangeFeed>>,
    workflow_feed: Option<Arc<dyn WorkflowStatusFeed>>,
    recoveries: Vec<tokio::sync::watch::Receiver<u64>>,
    audit: Option<audit::AuditConfig>,
    instance: String,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("instance", &self.instance)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// 4ALLPORTAL's "modified since" feed for the reconciliation loop.
    pub fn change_feed(mut self, feed: Arc<dyn ChangeFeed>) -> Self {
        self.change_feed = Some(feed);
        self
    }

    /// OpenText's workflow status feed for the reconciliation loop.
    pub fn workflow_feed(mut self, feed: Arc<dyn WorkflowStatusFeed>) -> Self {
        self.workflow_feed = Some(feed);
        self
    }

    /// Signals that change when an upstream recovers from an outage (`Transport::recoveries`):
    /// the work waiting for a retry then resumes at once.
    pub fn recoveries(mut self, signals: Vec<tokio::sync::watch::Receiver<u64>>) -> Self {
        self.recoveries = signals;
        self
    }

    /// The periodic drift audit (`[audit]`); without it, no audit runs.
    pub fn audit(mut self, cfg: audit::AuditConfig) -> Self {
        self.audit = Some(cfg);
        self
    }

    /// Names this replica in lease owners (default: a fresh UUID).
    pub fn instance(mut self, name: impl Into<String>) -> Self {
        self.instance = name.into();
        self
    }

    pub fn spawn(self, shutdown: CancellationToken) -> WorkerHandle {
        let heartbeat = Arc::new(AtomicI64::new(self.clock.now_millis()));
        let grace = Duration::from_secs(self.cfg.shutdown_grace_secs);
        let mut tasks = Vec::new();
        if self.cfg.enabled {
            let router = Router::new(self.flows);
            let audit = self.audit.map(|cfg| (cfg, router.clone()));
            let engine = engine::Engine::new(
                self.store.clone(),
                router,
                self.cfg.clone(),
                self.clock.clone(),
                self.instance,
                heartbeat.clone(),
            );
            tasks.push(tokio::spawn(engine.run(shutdown.clone(), grace)));
            tasks.extend(recovery::spawn(
                self.store.clone(),
                self.clock.clone(),
                self.recoveries,
                shutdown.clone(),
            ));
            tasks.extend(maintenance::spawn_loops(
                self.store,
                &self.cfg,
                self.clock,
                self.change_feed,
                self.workflow_feed,
                audit,
                shutdown,
            ));
        }
        WorkerHandle { tasks, heartbeat }
    }
}

/// The running worker. Cancel the shutdown token, then [`WorkerHandle::join`].
#[derive(Debug)]
pub struct WorkerHandle {
    tasks: Vec<JoinHandle<()>>,
    heartbeat: Arc<AtomicI64>,
}

impl WorkerHandle {
    /// Waits for the loops to stop. The claim loop lets running work finish within
    /// `[worker].shutdown_grace_secs` and releases what is still running after that.
    pub async fn join(self) {
        for task in self.tasks {
            if let Err(error) = task.await {
                tracing::error!(%error, "worker task failed");
            }
        }
    }

    /// When the claim loop last went round (unix ms, by the worker's clock); for `/readyz`.
    pub fn last_heartbeat(&self) -> i64 {
        self.heartbeat.load(Ordering::Relaxed)
    }

    /// Whether the worker runs at all (`[worker].enabled`).
    pub fn is_running(&self) -> bool {
        self.tasks.iter().any(|t| !t.is_finished())
    }

    /// A cheap handle for readiness and status: when did the claim loop last go round.
    pub fn probe(&self) -> WorkerProbe {
        WorkerProbe {
            heartbeat: self.heartbeat.clone(),
            enabled: !self.tasks.is_empty(),
        }
    }
}

/// Liveness of a worker as seen from the HTTP side.
#[derive(Debug, Clone)]
pub struct WorkerProbe {
    heartbeat: Arc<AtomicI64>,
    enabled: bool,
}

impl WorkerProbe {
    /// A claim loop that has not gone round for this long is stalled (it goes round at least
    /// every poll interval, also while work runs).
    pub const STALLED_AFTER_MS: i64 = 60_000;

    /// Unix ms of the last round of the claim loop.
    pub fn last_heartbeat(&self) -> i64 {
        self.heartbeat.load(Ordering::Relaxed)
    }

    /// Whether the worker pool runs in this process (`[worker].enabled`).
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Enabled, and its claim loop went round recently.
    pub fn is_alive(&self, now: i64) -> bool {
        !self.enabled || now.saturating_sub(self.last_heartbeat()) < Self::STALLED_AFTER_MS
    }
}
