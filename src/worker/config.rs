//! The worker pool's configuration (`[worker]`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config_error::{ConfigError, positive};

/// The worker pool (`[worker]`): leases, retries, coalescing, reconciliation and retention.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Runs the worker pool in this process (an API-only replica sets `false`).
    pub enabled: bool,
    /// Hard limit of units of work (one flow × one business object) running at once.
    pub concurrency: usize,
    /// How long a claim stays valid without renewal. Short, so that the work of a process that
    /// died is taken over within seconds; a live worker renews it every `lease_renew_secs`.
    pub lease_secs: u64,
    /// Heartbeat: how often running work renews its lease (must be less than half of
    /// `lease_secs`, so that one failed renewal does not lose the lease).
    pub lease_renew_secs: u64,
    /// Polling backstop between claim rounds when no wake-up arrives.
    pub poll_interval_ms: u64,
    /// Delay before each retry of a retryable failure, in seconds (±20 % jitter); after the
    /// last entry every further retry waits the last delay, until `max_retry_age_secs`.
    pub retry_schedule_secs: Vec<u64>,
    /// A job that still fails retryably this long after it was created (or last replayed) is a
    /// dead letter.
    pub max_retry_age_secs: u64,
    /// Former name of `max_retry_age_secs`, still accepted; when set it wins.
    #[serde(default, skip_serializing)]
    pub max_age_secs: Option<u64>,
    /// Pending events routed to flows per round.
    pub route_batch: usize,
    /// Most events of one business object merged into one reconcile.
    pub coalesce_max: usize,
    /// Finished events (`done`, `ignored`) older than this are deleted; dead letters are kept.
    pub retention_days: u64,
    /// Events deleted per pruning statement (keeps transactions short).
    pub prune_batch: usize,
    /// How often retention runs.
    pub prune_interval_secs: u64,
    /// Polls 4ALLPORTAL for objects modified since the stored cursor; 0 turns it off.
    pub reconcile_allportal_interval_secs: u64,
    /// Polls OpenText for the status of workflows the bridge started; 0 turns it off.
    pub reconcile_opentext_interval_secs: u64,
    /// How often the backlog gauges are refreshed.
    pub metrics_interval_secs: u64,
    /// How long shutdown lets running work finish before releasing it for another replica.
    pub shutdown_grace_secs: u64,
}

impl Default for WorkerConfig {
    /// The `[worker]` section of the built-in defaults.
    fn default() -> Self {
        crate::config_error::builtin(DEFAULTS, "worker")
    }
}

impl WorkerConfig {
    /// The maximum retry age in effect (`max_retry_age_secs`, or its former name).
    pub fn max_retry_age(&self) -> Duration {
        Duration::from_secs(self.max_age_secs.unwrap_or(self.max_retry_age_secs))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        positive(
            "worker",
            &[
                ("concurrency", self.concurrency as u64),
                ("lease_secs", self.lease_secs),
                ("lease_renew_secs", self.lease_renew_secs),
                ("poll_interval_ms", self.poll_interval_ms),
                ("max_retry_age_secs", self.max_retry_age().as_secs()),
                ("route_batch", self.route_batch as u64),
                ("coalesce_max", self.coalesce_max as u64),
                ("retention_days", self.retention_days),
                ("prune_batch", self.prune_batch as u64),
                ("prune_interval_secs", self.prune_interval_secs),
                ("metrics_interval_secs", self.metrics_interval_secs),
            ],
        )?;
        if self.retry_schedule_secs.contains(&0) {
            return Err(ConfigError::key(
                "worker.retry_schedule_secs",
                "every delay must be greater than 0",
            ));
        }
        if self.lease_renew_secs.saturating_mul(2) >= self.lease_secs {
            return Err(ConfigError::key(
                "worker.lease_renew_secs",
                format!(
                    "must be less than half of `worker.lease_secs` ({} s), so that one missed \
                     renewal does not lose the lease",
                    self.lease_secs
                ),
            ));
        }
        Ok(())
    }
}

/// The built-in `[worker]` section.
pub const DEFAULTS: &str = r#"
[worker]
enabled = true
concurrency = 8
lease_secs = 30
lease_renew_secs = 10
poll_interval_ms = 1000
retry_schedule_secs = [5, 30, 120, 600, 1800, 3600]
max_retry_age_secs = 86400
route_batch = 200
coalesce_max = 100
retention_days = 14
prune_batch = 1000
prune_interval_secs = 3600
reconcile_allportal_interval_secs = 300
reconcile_opentext_interval_secs = 300
metrics_interval_secs = 15
shutdown_grace_secs = 25
"#;
