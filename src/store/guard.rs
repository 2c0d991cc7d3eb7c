//! The disk guard: ingest is refused (503, `store-full`) while the store is near its budget or
//! its disk is nearly full, before anything fails for lack of space.
//!
//! The measures are cached and refreshed every few seconds by whichever request finds them
//! stale, so a request costs two atomic loads.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use super::StoreConfig;
use super::{StoreError, now_millis};

/// How long measures are trusted.
const REFRESH_MS: i64 = 2_000;
/// Share of `store.max_bytes` at which ingest stops, so that the worker's and retention's own
/// writes still have room.
const FULL_AT_PERCENT: u64 = 95;
/// Share of `store.max_bytes` above which retention deletes finished events whatever their age,
/// well before ingest stops at [`FULL_AT_PERCENT`].
const RETAIN_BELOW_PERCENT: u64 = 80;

pub(crate) struct DiskGuard {
    max_bytes: u64,
    min_free_bytes: u64,
    /// A directory on the store's filesystem (SQLite); `None` where free space is not ours to
    /// see (PostgreSQL).
    volume: Option<PathBuf>,
    next_check: AtomicI64,
    full: AtomicBool,
    reason: Mutex<String>,
}

impl DiskGuard {
    pub(crate) fn new(cfg: &StoreConfig, volume: Option<PathBuf>) -> Self {
        metrics::gauge!("xecm_store_budget_bytes").set(cfg.max_bytes as f64);
        Self {
            max_bytes: cfg.max_bytes,
            min_free_bytes: cfg.min_free_bytes,
            volume,
            next_check: AtomicI64::new(0),
            full: AtomicBool::new(false),
            reason: Mutex::new(String::new()),
        }
    }

    /// The bytes budget retention keeps the store under, where deleted rows are room again: on
    /// SQLite the measure is the pages in use, which deletes free; PostgreSQL's database size
    /// shrinks only by `VACUUM FULL`, so there the budget is for the guard alone.
    pub(crate) fn retain_below(&self) -> Option<u64> {
        (self.max_bytes > 0 && self.volume.is_some())
            .then(|| self.max_bytes / 100 * RETAIN_BELOW_PERCENT)
    }

    fn is_off(&self) -> bool {
        self.max_bytes == 0 && (self.min_free_bytes == 0 || self.volume.is_none())
    }

    /// `Ok` while there is room, else [`StoreError::Full`] with the reason. `used` measures the
    /// store's bytes; it runs only when the cached measures are stale.
    pub(crate) async fn check<F, Fut>(&self, used: F) -> Result<(), StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<u64, StoreError>>,
    {
        if self.is_off() {
            return Ok(());
        }
        let now = now_millis();
        let due = self.next_check.load(Ordering::Relaxed);
        // One caller refreshes; the others go on with the cached verdict meanwhile.
        if now >= due
            && self
                .next_check
                .compare_exchange(due, now + REFRESH_MS, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.refresh(used().await?);
        }
        if self.full.load(Ordering::Relaxed) {
            let reason = self.reason.lock().expect("reason lock").clone();
            return Err(StoreError::Full(reason));
        }
        Ok(())
    }

    fn refresh(&self, used: u64) {
        metrics::gauge!("xecm_store_bytes").set(used as f64);
        let free = self.volume.as_ref().and_then(|dir| {
            rustix::fs::statvfs(dir)
                .inspect_err(|error| tracing::warn!(%error, dir = %dir.display(), "statvfs failed"))
                .ok()
                .map(|fs| fs.f_bavail.saturating_mul(fs.f_frsize))
        });
        if let Some(free) = free {
            metrics::gauge!("xecm_store_free_bytes").set(free as f64);
        }
        let reason = self.verdict(used, free);
        let full = reason.is_some();
        metrics::gauge!("xecm_store_full").set(if full { 1.0 } else { 0.0 });
        if full != self.full.load(Ordering::Relaxed) {
            match &reason {
                Some(reason) => tracing::error!(%reason, "store full: refusing new events"),
                None => tracing::info!("store has room again: accepting events"),
            }
        }
        *self.reason.lock().expect("reason lock") = reason.unwrap_or_default();
        self.full.store(full, Ordering::Relaxed);
    }

    fn verdict(&self, used: u64, free: Option<u64>) -> Option<String> {
        let mib = |bytes: u64| bytes / (1024 * 1024);
        if self.max_bytes > 0 && used.saturating_mul(100) >= self.max_bytes * FULL_AT_PERCENT {
            return Some(format!(
                "the store uses {} MiB, {}% or more of store.max_bytes ({} MiB)",
                mib(used),
                FULL_AT_PERCENT,
                mib(self.max_bytes)
            ));
        }
        match free {
            Some(free) if self.min_free_bytes > 0 && free < self.min_free_bytes => Some(format!(
                "{} MiB free on the store's filesystem, below store.min_free_bytes ({} MiB)",
                mib(free),
                mib(self.min_free_bytes)
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(max_bytes: u64, min_free_bytes: u64) -> DiskGuard {
        let cfg = StoreConfig {
            url: "sqlite://x.db".into(),
            max_connections: 1,
            group_commit_max_events: 1,
            migrate_on_start: false,
            max_bytes,
            min_free_bytes,
        };
        DiskGuard::new(&cfg, Some(std::env::temp_dir()))
    }

    #[tokio::test]
    async fn refuses_near_the_budget_and_below_the_free_floor() {
        let g = guard(1000, 0);
        assert!(g.check(|| async { Ok(949) }).await.is_ok());
        g.next_check.store(0, Ordering::Relaxed);
        match g.check(|| async { Ok(950) }).await {
            Err(StoreError::Full(reason)) => assert!(reason.contains("store.max_bytes")),
            other => panic!("{other:?}"),
        }
        // Cached until the next refresh.
        assert!(g.check(|| async { Ok(0) }).await.is_err());
        g.next_check.store(0, Ordering::Relaxed);
        assert!(g.check(|| async { Ok(10) }).await.is_ok(), "room again");

        let g = guard(0, u64::MAX);
        match g.check(|| async { Ok(0) }).await {
            Err(StoreError::Full(reason)) => assert!(reason.contains("min_free_bytes")),
            other => panic!("{other:?}"),
        }
        assert!(
            guard(0, 0).check(|| async { Ok(u64::MAX) }).await.is_ok(),
            "off"
        );
    }
}
