//! Injectable crash points, for the tests that prove exactly-once effects across crashes.
//!
//! In a debug build, `XECM_CRASH_AFTER_WRITES=N` aborts the process (like `kill -9`: no
//! shutdown, no lease release, nothing flushed) right after the N-th write call to an upstream
//! (any method but GET and HEAD) has been answered: the effect exists upstream and the bridge
//! has not recorded it yet, the worst moment for a crash. Counting starts at 1 per process.
//! Release builds never read the variable.

/// The environment variable naming the crash point.
pub const CRASH_AFTER_WRITES_ENV: &str = "XECM_CRASH_AFTER_WRITES";

/// Called once a write call has been answered; aborts at the configured crash point.
#[cfg(debug_assertions)]
pub(crate) fn write_answered() {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let limit = LIMIT.get_or_init(|| {
        std::env::var(CRASH_AFTER_WRITES_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if let Some(limit) = *limit {
        let n = WRITES.fetch_add(1, Ordering::SeqCst) + 1;
        if n == limit {
            eprintln!("crash point: aborting after upstream write {n}");
            std::process::abort();
        }
    }
}

#[cfg(not(debug_assertions))]
pub(crate) fn write_answered() {}
