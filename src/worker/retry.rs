//! What happens to each job after a run: done, ignored, retried later, or dead.

use std::time::Duration;

use super::clock::millis;
use super::flow::FlowOutcome;
use crate::config::WorkerConfig;
use crate::store::{AttemptResult, ClaimedJob, ClaimedWork, JobTransition, state};

/// Jitter applied to every scheduled delay: ±20 %.
pub const JITTER: f64 = 0.2;

/// The retry schedule and the age after which a job is not retried any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub schedule: Vec<Duration>,
    pub max_age: Duration,
}

impl RetryPolicy {
    pub fn from_config(cfg: &WorkerConfig) -> Self {
        Self {
            schedule: cfg
                .retry_schedule_secs
                .iter()
                .map(|s| Duration::from_secs(*s))
                .collect(),
            max_age: Duration::from_secs(cfg.max_age_secs),
        }
    }

    /// The first attempt plus one per scheduled retry.
    pub fn max_attempts(&self) -> i64 {
        self.schedule.len() as i64 + 1
    }

    /// The delay after failed attempt `attempt` (1-based, within the budget), or `None` when
    /// that was the last one. `jitter` is in `[-1, 1]` and scales the ±20 % band.
    pub fn delay(
        &self,
        attempt: i64,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Option<Duration> {
        let index = usize::try_from(attempt.checked_sub(1)?).ok()?;
        let base = *self.schedule.get(index)?;
        let jittered = base.mul_f64(1.0 + JITTER * jitter.clamp(-1.0, 1.0));
        // The upstream knows best when it will be ready: its Retry-After wins when longer.
        Some(retry_after.map_or(jittered, |after| after.max(jittered)))
    }
}

/// The attempt record and the next state of every job of a finished run. `jitter` yields a
/// value in `[-1, 1]` per job.
pub fn plan(
    policy: &RetryPolicy,
    work: &ClaimedWork,
    outcome: &FlowOutcome,
    now: i64,
    mut jitter: impl FnMut() -> f64,
) -> (AttemptResult, Vec<JobTransition>) {
    let (error, summary) = match outcome {
        FlowOutcome::Success { summary } => (None, Some(summary.clone())),
        FlowOutcome::Skipped { reason } => (None, Some(serde_json::json!({ "skipped": reason }))),
        FlowOutcome::Retryable { error, .. } | FlowOutcome::Permanent { error } => {
            (Some(error.clone()), None)
        }
    };
    let result = AttemptResult {
        outcome: outcome.label(),
        error,
        summary,
        finished_at: now,
    };
    let transitions = work
        .jobs
        .iter()
        .map(|job| transition(policy, job, outcome, now, jitter()))
        .collect();
    (result, transitions)
}

fn transition(
    policy: &RetryPolicy,
    job: &ClaimedJob,
    outcome: &FlowOutcome,
    now: i64,
    jitter: f64,
) -> JobTransition {
    let (state, next_attempt_at, last_error) = match outcome {
        FlowOutcome::Success { .. } => (state::DONE, now, None),
        FlowOutcome::Skipped { reason } => (state::IGNORED, now, Some(reason.clone())),
        FlowOutcome::Permanent { error } => (state::DEAD, now, Some(error.clone())),
        FlowOutcome::Retryable { error, retry_after } => {
            let too_old = now.saturating_sub(job.age_from) >= millis(policy.max_age);
            match policy.delay(job.budget_attempt, *retry_after, jitter) {
                Some(delay) if !too_old => {
                    (state::PENDING, now + millis(delay), Some(error.clone()))
                }
                _ => (state::DEAD, now, Some(give_up_reason(job, too_old, error))),
            }
        }
    };
    JobTransition {
        job_id: job.job_id,
        attempt_id: job.attempt_id,
        state,
        next_attempt_at,
        last_error,
    }
}

fn give_up_reason(job: &ClaimedJob, too_old: bool, error: &str) -> String {
    if too_old {
        format!("gave up: older than the maximum age; last error: {error}")
    } else {
        format!(
            "gave up after {} attempts; last error: {error}",
            job.budget_attempt
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            schedule: [5, 30, 120].map(Duration::from_secs).to_vec(),
            max_age: Duration::from_secs(3600),
        }
    }

    #[test]
    fn delays_follow_the_schedule_within_the_jitter_band() {
        let p = policy();
        assert_eq!(p.delay(1, None, 0.0), Some(Duration::from_secs(5)));
        assert_eq!(p.delay(2, None, -1.0), Some(Duration::from_secs(24)));
        assert_eq!(p.delay(3, None, 1.0), Some(Duration::from_secs(144)));
        assert_eq!(p.delay(4, None, 0.0), None, "schedule exhausted");
        assert_eq!(p.delay(0, None, 0.0), None);
        assert_eq!(p.max_attempts(), 4);
    }

    #[test]
    fn a_longer_retry_after_wins_a_shorter_one_does_not() {
        let p = policy();
        let long = Some(Duration::from_secs(90));
        assert_eq!(p.delay(1, long, 0.0), Some(Duration::from_secs(90)));
        let short = Some(Duration::from_secs(1));
        assert_eq!(p.delay(2, short, 0.0), Some(Duration::from_secs(30)));
    }
}
