//! The per-upstream limiter every call of a [`super::Transport`] passes before it is sent:
//! flows, backfills, the drift audit and the change feed share it, because they share the
//! transport.
//!
//! - Rate: `max_requests_per_sec`, paced evenly at [`PACED_SHARE`] of it (one request every
//!   `1 / (0.95 × rate)` seconds, no burst) by a `governor` GCRA limiter, so that no one-second
//!   window at the upstream holds more than the limit. 0 means no rate limit.
//! - Concurrency: `max_concurrent_requests` calls in flight at once (until the answer's
//!   headers); 0 means no limit.
//! - Replicas: both figures are divided by `rate_limit_replicas`, the number of bridge
//!   replicas sharing the upstream, so that together they stay within the configured limit.
//! - Back-pressure: a 429 from the upstream pauses every call until its `Retry-After` (1 s
//!   without one) and halves the rate; each 10 s without a 429 doubles it again up to the
//!   configured rate. The call itself is retried by the transport as any transient failure.
//!
//! Waiting time is recorded in `xecm_upstream_limiter_wait_seconds`.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::transport::Clock;

/// The pause after a 429 that carried no `Retry-After`.
const DEFAULT_PAUSE: Duration = Duration::from_secs(1);
/// How long without a 429 before the rate is doubled back towards the configured rate.
const CALM: Duration = Duration::from_secs(10);
/// The rate never drops below the configured one divided by this.
const MAX_SLOWDOWN: u32 = 64;
/// The share of the configured rate the pacer actually sends at.
///
/// Paced at exactly `rate`, requests leave `1/rate` apart, so `rate + 1` of them span exactly
/// one second: the slightest jitter on the way (scheduling, connection set-up, the network)
/// that brings the last one a little earlier or the first a little later puts `rate + 1` into
/// one one-second window at the upstream (measured: 21 at a limit of 20). At 95 % the
/// `rate + 1` requests span `rate / (0.95 × rate) ≈ 1.053` s, so arrival jitter of up to about
/// 50 ms, whatever the rate, still keeps every one-second window at or under the limit; the
/// cost is 5 % of the throughput.
pub const PACED_SHARE: f64 = 0.95;

/// The configured limits of one upstream (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Requests per second for all replicas together; 0: no rate limit.
    pub max_requests_per_sec: f64,
    /// Calls in flight for all replicas together; 0: no limit.
    pub max_concurrent_requests: u32,
    /// Bridge replicas sharing the limits; each takes an equal share.
    pub replicas: u32,
}

impl Limits {
    /// No limit at all.
    pub const UNLIMITED: Limits = Limits {
        max_requests_per_sec: 0.0,
        max_concurrent_requests: 0,
        replicas: 1,
    };

    /// This replica's share of the rate, `None` when unlimited.
    pub fn replica_rate(&self) -> Option<f64> {
        (self.max_requests_per_sec > 0.0)
            .then(|| self.max_requests_per_sec / f64::from(self.replicas.max(1)))
    }

    /// This replica's share of the concurrent calls (at least one), `None` when unlimited.
    pub fn replica_concurrency(&self) -> Option<u32> {
        (self.max_concurrent_requests > 0)
            .then(|| (self.max_concurrent_requests / self.replicas.max(1)).max(1))
    }
}

/// The current pacing: the limiter for `rate / slowdown`, rebuilt when the slowdown changes.
struct Pace {
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    slowdown: u32,
    changed_at: Instant,
    paused_until: Option<Instant>,
}

/// The limiter of one upstream.
pub struct Limiter {
    upstream: Arc<str>,
    rate: Option<f64>,
    concurrency: Option<Arc<Semaphore>>,
    pace: Mutex<Pace>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("upstream", &self.upstream)
            .field("rate", &self.rate)
            .field("slowdown", &self.lock().slowdown)
            .finish_non_exhaustive()
    }
}

/// Admission of one call; holds its concurrency slot until dropped.
#[derive(Debug)]
pub struct Admission {
    _slot: Option<OwnedSemaphorePermit>,
}

/// The spacing between two requests when `rate` per second is the limit: `1 / (0.95 × rate)`
/// (see [`PACED_SHARE`]).
pub fn spacing(rate: f64) -> Duration {
    Duration::from_secs_f64(1.0 / (rate * PACED_SHARE)).max(Duration::from_nanos(1))
}

/// A GCRA limiter letting one request through every [`spacing`]`(rate)`.
fn pacer(rate: f64) -> Arc<DefaultDirectRateLimiter> {
    let period = spacing(rate);
    let quota = Quota::with_period(period)
        .expect("a positive period")
        .allow_burst(NonZeroU32::MIN);
    Arc::new(RateLimiter::direct(quota))
}

impl Limiter {
    pub fn new(upstream: Arc<str>, limits: Limits, clock: Arc<dyn Clock>) -> Self {
        let rate = limits.replica_rate();
        let now = clock.now();
        Self {
            upstream,
            rate,
            concurrency: limits
                .replica_concurrency()
                .map(|n| Arc::new(Semaphore::new(n as usize))),
            pace: Mutex::new(Pace {
                limiter: rate.map(pacer),
                slowdown: 1,
                changed_at: now,
                paused_until: None,
            }),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pace> {
        // Every update is a plain assignment: a poisoned lock still holds a usable state.
        self.pace.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current rate divisor (1: the configured rate), for tests and the status.
    pub fn slowdown(&self) -> u32 {
        self.lock().slowdown
    }

    /// Waits until this call may be sent: the 429 pause, the rate, then a concurrency slot.
    pub async fn admit(&self) -> Admission {
        let started = self.clock.now();
        loop {
            let (pause, limiter) = self.current(self.clock.now());
            match pause {
                Some(wait) => self.clock.sleep(wait).await,
                None => {
                    if let Some(limiter) = limiter {
                        limiter.until_ready().await;
                    }
                    // A 429 that arrived meanwhile pauses this call too.
                    if self.current(self.clock.now()).0.is_none() {
                        break;
                    }
                }
            }
        }
        let slot = match &self.concurrency {
            Some(semaphore) => semaphore.clone().acquire_owned().await.ok(),
            None => None,
        };
        let waited = self.clock.now().saturating_duration_since(started);
        metrics::histogram!("xecm_upstream_limiter_wait_seconds", "upstream" => self.upstream.to_string())
            .record(waited.as_secs_f64());
        Admission { _slot: slot }
    }

    /// The remaining pause and the pacer; restores the rate step by step once calm.
    fn current(&self, now: Instant) -> (Option<Duration>, Option<Arc<DefaultDirectRateLimiter>>) {
        let mut pace = self.lock();
        let pause = pace
            .paused_until
            .and_then(|until| until.checked_duration_since(now))
            .filter(|d| !d.is_zero());
        if pause.is_none() {
            pace.paused_until = None;
        }
        if pace.slowdown > 1 && now.saturating_duration_since(pace.changed_at) >= CALM {
            pace.slowdown /= 2;
            pace.changed_at = now;
            pace.limiter = self.rate.map(|r| pacer(r / f64::from(pace.slowdown)));
            tracing::info!(upstream = %self.upstream, slowdown = pace.slowdown, "request rate raised again");
        }
        (pause, pace.limiter.clone())
    }

    /// The upstream answered 429: pause every call for `retry_after` and halve the rate.
    pub fn too_many_requests(&self, retry_after: Option<Duration>) {
        let now = self.clock.now();
        let until = now + retry_after.unwrap_or(DEFAULT_PAUSE);
        let mut pace = self.lock();
        pace.paused_until = Some(pace.paused_until.map_or(until, |u| u.max(until)));
        pace.slowdown = (pace.slowdown * 2).min(MAX_SLOWDOWN);
        pace.changed_at = now;
        pace.limiter = self.rate.map(|r| pacer(r / f64::from(pace.slowdown)));
        tracing::warn!(upstream = %self.upstream, slowdown = pace.slowdown,
                       pause_ms = (until - now).as_millis() as u64, "upstream answered 429: slowing down");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::SystemClock;

    fn limits(rate: f64, concurrent: u32, replicas: u32) -> Limits {
        Limits {
            max_requests_per_sec: rate,
            max_concurrent_requests: concurrent,
            replicas,
        }
    }

    #[test]
    fn replicas_take_equal_shares() {
        assert_eq!(limits(30.0, 9, 3).replica_rate(), Some(10.0));
        assert_eq!(limits(30.0, 9, 3).replica_concurrency(), Some(3));
        assert_eq!(limits(30.0, 2, 4).replica_concurrency(), Some(1));
        assert_eq!(Limits::UNLIMITED.replica_rate(), None);
        assert_eq!(Limits::UNLIMITED.replica_concurrency(), None);
    }

    #[test]
    fn pacing_leaves_headroom_for_50_ms_of_jitter_at_any_rate() {
        for rate in [1.0, 20.0, 1000.0] {
            // `rate + 1` requests are `rate` spacings apart: they must span more than one
            // second by at least 50 ms, so that jitter up to that cannot fit them in one window.
            let span_of_one_too_many = spacing(rate).mul_f64(rate);
            assert!(
                span_of_one_too_many >= Duration::from_millis(1050),
                "{rate}/s: {span_of_one_too_many:?}"
            );
            // ... and no more headroom than that: the limiter stays near its rate.
            assert!(
                span_of_one_too_many < Duration::from_millis(1060),
                "{rate}/s: {span_of_one_too_many:?}"
            );
        }
        assert_eq!(spacing(20.0).as_micros(), 52_631, "1 / 19 s at 20/s");
    }

    #[tokio::test]
    async fn a_429_halves_the_rate_down_to_a_floor() {
        let limiter = Limiter::new(
            Arc::from("test"),
            limits(100.0, 0, 1),
            Arc::new(SystemClock),
        );
        assert_eq!(limiter.slowdown(), 1);
        limiter.too_many_requests(Some(Duration::ZERO));
        assert_eq!(limiter.slowdown(), 2);
        for _ in 0..10 {
            limiter.too_many_requests(Some(Duration::ZERO));
        }
        assert_eq!(limiter.slowdown(), MAX_SLOWDOWN);
    }

    #[tokio::test]
    async fn concurrency_slots_are_held_until_dropped() {
        let limiter = Limiter::new(Arc::from("test"), limits(0.0, 1, 1), Arc::new(SystemClock));
        let first = limiter.admit().await;
        let second = futures::FutureExt::now_or_never(limiter.admit());
        assert!(second.is_none(), "a second call waits for the only slot");
        drop(first);
        let _third = limiter.admit().await;
    }
}
