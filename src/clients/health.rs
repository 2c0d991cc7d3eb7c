//! Whether an upstream is down, and the signal that it is back.
//!
//! An upstream is **down** after [`DOWN_AFTER`] transient failures in a row (connect errors,
//! timeouts, 429, 5xx) without an answer in between. While it is down a prober asks it every
//! `probe_every` whether it answers again — any answer that is not a transient failure counts,
//! so the probe needs no credentials. The first answer after a down period, from the prober or
//! from real traffic, is a **recovery**: the counter in [`Health::recoveries`] goes up, and the
//! worker resumes the work that waits for a retry. Without the prober nothing would notice:
//! after a long outage every job waits out a long retry delay and sends nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use url::Url;

use super::error::is_transient_status;

/// Transient failures in a row after which an upstream counts as down.
pub const DOWN_AFTER: u32 = 3;

#[derive(Debug)]
pub struct Health {
    upstream: Arc<str>,
    failures_in_a_row: AtomicU32,
    probing: AtomicBool,
    recoveries: watch::Sender<u64>,
}

impl Health {
    pub fn new(upstream: Arc<str>) -> Arc<Self> {
        Arc::new(Self {
            upstream,
            failures_in_a_row: AtomicU32::new(0),
            probing: AtomicBool::new(false),
            recoveries: watch::Sender::new(0),
        })
    }

    /// Changes at each recovery.
    pub fn recoveries(&self) -> watch::Receiver<u64> {
        self.recoveries.subscribe()
    }

    pub fn is_down(&self) -> bool {
        self.failures_in_a_row.load(Ordering::Relaxed) >= DOWN_AFTER
    }

    /// The upstream answered (not a transient failure).
    pub fn answered(&self) {
        if self.failures_in_a_row.swap(0, Ordering::Relaxed) >= DOWN_AFTER {
            tracing::info!(upstream = %self.upstream, "the upstream answers again");
            self.recoveries.send_modify(|count| *count += 1);
        }
    }

    /// A transient failure. `probe` starts the prober when the upstream has just gone down.
    pub fn failed(self: &Arc<Self>, probe: impl FnOnce(Arc<Self>)) {
        let failures = self.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= DOWN_AFTER && !self.probing.swap(true, Ordering::Relaxed) {
            tracing::warn!(upstream = %self.upstream, failures, "the upstream is down; probing it");
            probe(self.clone());
        }
    }

    /// Asks `url` every `every` until the upstream answers (or real traffic saw it answer).
    /// Real time, not the transport's clock: a test's manual clock would make it spin.
    pub async fn probe(self: Arc<Self>, client: reqwest::Client, url: Url, every: Duration) {
        while self.is_down() {
            tokio::time::sleep(every).await;
            if !self.is_down() {
                break;
            }
            let answer = client.get(url.clone()).timeout(every).send().await;
            if let Ok(response) = answer
                && !is_transient_status(response.status().as_u16())
            {
                self.answered();
            }
        }
        self.probing.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recovery_needs_a_down_period_first() {
        let health = Health::new(Arc::from("opentext"));
        let recoveries = health.recoveries();
        let mut probes = 0;
        health.failed(|_| probes += 1);
        health.answered();
        assert_eq!(*recoveries.borrow(), 0, "one failure is no outage");
        for _ in 0..DOWN_AFTER + 2 {
            health.failed(|_| probes += 1);
        }
        assert!(health.is_down());
        assert_eq!(probes, 1, "one prober at a time");
        health.answered();
        assert!(!health.is_down());
        assert_eq!(*recoveries.borrow(), 1);
    }
}
