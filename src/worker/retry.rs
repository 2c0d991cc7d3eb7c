//! What happens to each job after a run: done, ignored, retried later, parked, or dead.
//!
//! Retries follow the schedule and the maximum age, never the traffic: the schedule's delays
//! are spent one per failed attempt (the last delay repeats), a run parked behind an open
//! circuit spends nothing, and only a permanent error or the maximum age makes a dead letter.

use std::time::Duration;

use super::WorkerConfig;
use super::clock::millis;
use super::flow::FlowOutcome;
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
            max_age: cfg.max_retry_age(),
        }
    }

    /// The delay after failed attempt `attempt` (1-based): the schedule's entry, the last one
    /// once the schedule is spent. `jitter` is in `[-1, 1]` and scales the ±20 % band.
    pub fn delay(
        &self,
        attempt: i64,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Option<Duration> {
        let index = usize::try_from(attempt.checked_sub(1)?).ok()?;
        let base = *self
            .schedule
            .get(index)
            .or(self.schedule.last())
            .unwrap_or(&Duration::from_secs(1));
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
        FlowOutcome::Retryable { error, .. }
        | FlowOutcome::Permanent { error }
        | FlowOutcome::Parked { reason: error, .. } => (Some(error.clone()), None),
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
    let too_old = now.saturating_sub(job.age_from) >= millis(policy.max_age);
    let mut refund_attempt = false;
    let (state, next_attempt_at, last_error) = match outcome {
        FlowOutcome::Success { .. } => (state::DONE, now, None),
        FlowOutcome::Skipped { reason } => (state::IGNORED, now, Some(reason.clone())),
        FlowOutcome::Permanent { error } => (state::DEAD, now, Some(error.clone())),
        FlowOutcome::Retryable { error, .. } | FlowOutcome::Parked { reason: error, .. }
            if too_old =>
        {
            (
                state::DEAD,
                now,
                Some(format!(
                    "gave up: older than the maximum retry age ({} s); last error: {error}",
                    policy.max_age.as_secs()
                )),
            )
        }
        FlowOutcome::Parked {
            reason,
            resume_after,
        } => {
            refund_attempt = true;
            // Spread the resumption over a little more than the open window, so the jobs do not
            // all knock at once while the half-open circuit admits its one probe.
            let spread = resume_after.mul_f64(1.0 + JITTER * (jitter.clamp(-1.0, 1.0) + 1.0));
            (
                state::PENDING,
                now + millis(spread),
                Some(format!("parked: {reason}")),
            )
        }
        FlowOutcome::Retryable { error, retry_after } => {
            let delay = policy
                .delay(job.budget_attempt.max(1), *retry_after, jitter)
                .unwrap_or(Duration::from_secs(1));
            (state::PENDING, now + millis(delay), Some(error.clone()))
        }
    };
    JobTransition {
        job_id: job.job_id,
        attempt_id: job.attempt_id,
        state,
        next_attempt_at,
        last_error,
        refund_attempt,
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
        assert_eq!(
            p.delay(4, None, 0.0),
            Some(Duration::from_secs(120)),
            "the last delay repeats once the schedule is spent"
        );
        assert_eq!(p.delay(0, None, 0.0), None);
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
