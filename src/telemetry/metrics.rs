//! The Prometheus recorder and every metric family of the service, described once.
//!
//! Families are registered when the server starts, with zero values for the label sets known
//! then, so that `/metrics` shows them from the first scrape: an alert on "no webhooks in an
//! hour" needs the counter to exist at 0 after a restart, not to appear with the first event.
//! `docs/operations.md` documents each family; a test compares that table with `/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets for durations in seconds, from a fast webhook commit to a large transfer.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
/// Buckets for the number of events in one group commit (`store.group_commit_max_events`).
const EVENT_COUNT_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

pub const GROUP_COMMIT_EVENTS: &str = "xecm_store_group_commit_events";
/// Finished events deleted by retention, by `reason`: `age` (`worker.retention_days`) or
/// `budget` (over 80 % of `store.max_bytes`).
pub const PRUNED: &str = "xecm_pruned_events_total";

#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every family the service itself exposes (process metrics come from `metrics-process`).
const FAMILIES: &[(&str, Kind, &str)] = &[
    (
        "xecm_build_info",
        Kind::Gauge,
        "Always 1; the labels name the running version.",
    ),
    (
        "xecm_drift_repairs_total",
        Kind::Counter,
        "Operations made by resync runs (by hand or by the drift audit) that repaired drift in OpenText, by flow.",
    ),
    (
        "xecm_team_unresolved_total",
        Kind::Counter,
        "Workspace team members a run could not find in OpenText (login, e-mail or group name), by flow.",
    ),
    (
        "xecm_webhooks_received_total",
        Kind::Counter,
        "Webhook requests verified and stored, one per request whatever the number of events in it.",
    ),
    (
        "xecm_events_stored_total",
        Kind::Counter,
        "Events stored from accepted webhook requests (new events only).",
    ),
    (
        "xecm_webhooks_duplicate_total",
        Kind::Counter,
        "Events in accepted webhook requests that were stored before (answered 202, stored once).",
    ),
    (
        "xecm_webhooks_rejected_total",
        Kind::Counter,
        "Webhook requests rejected, by reason.",
    ),
    (
        "xecm_ingest_duration_seconds",
        Kind::Histogram,
        "Time to verify, durably store and answer one webhook request.",
    ),
    (
        "xecm_events_ignored_total",
        Kind::Counter,
        "Stored events that no configured flow wants.",
    ),
    (
        "xecm_flow_outcomes_total",
        Kind::Counter,
        "Reconcile results per flow and outcome.",
    ),
    (
        "xecm_flow_duration_seconds",
        Kind::Histogram,
        "Duration of one reconcile of one business object.",
    ),
    (
        "xecm_backlog_events",
        Kind::Gauge,
        "Events waiting or in progress (measured by workers).",
    ),
    (
        "xecm_oldest_pending_age_seconds",
        Kind::Gauge,
        "Age of the oldest waiting event (measured by workers).",
    ),
    (
        "xecm_dead_letters",
        Kind::Gauge,
        "Events that exhausted their retries and wait for an operator (measured by workers).",
    ),
    (
        GROUP_COMMIT_EVENTS,
        Kind::Histogram,
        "Events written per SQLite group commit.",
    ),
    (
        "xecm_upstream_requests_total",
        Kind::Counter,
        "Calls to an upstream system by status class (2xx..5xx, or error without an answer).",
    ),
    (
        "xecm_upstream_request_duration_seconds",
        Kind::Histogram,
        "Duration of one call to an upstream system.",
    ),
    (
        "xecm_upstream_limiter_wait_seconds",
        Kind::Histogram,
        "Time one call to an upstream waited for its rate and concurrency limits (and a 429 pause).",
    ),
    (
        "xecm_upstream_circuit_state",
        Kind::Gauge,
        "Circuit breaker per upstream: 0 closed, 1 half-open, 2 open.",
    ),
    (
        "xecm_store_bytes",
        Kind::Gauge,
        "Bytes the store occupies, as the disk guard measures them.",
    ),
    (
        "xecm_store_budget_bytes",
        Kind::Gauge,
        "The store budget, store.max_bytes (0: no budget).",
    ),
    (
        "xecm_store_free_bytes",
        Kind::Gauge,
        "Free bytes on the filesystem of the SQLite file.",
    ),
    (
        PRUNED,
        Kind::Counter,
        "Finished events deleted by retention, by reason: age or budget.",
    ),
    (
        "xecm_store_full",
        Kind::Gauge,
        "1 while the disk guard refuses new events, else 0.",
    ),
    (
        "xecm_http_connections_open",
        Kind::Gauge,
        "HTTP connections open now.",
    ),
    (
        "xecm_http_connections_closed_total",
        Kind::Counter,
        "Connections the server closed, by reason: idle, header_timeout, evicted, refused.",
    ),
];

/// The reasons of `xecm_http_connections_closed_total`.
pub const CONNECTION_CLOSE_REASONS: [&str; 4] = ["idle", "header_timeout", "evicted", "refused"];

/// The upstream status classes of `xecm_upstream_requests_total`.
pub const STATUS_CLASSES: [&str; 5] = ["2xx", "3xx", "4xx", "5xx", "error"];

/// The process-wide Prometheus recorder, installed on first use, with process metrics.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(GROUP_COMMIT_EVENTS.into()),
                        EVENT_COUNT_BUCKETS,
                    )
                })
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (only in tests); keep going with ours.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            spawn_upkeep(handle.clone());
            handle
        })
        .clone()
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds recorded histogram samples into their buckets every [`UPKEEP_INTERVAL`]. A recorder
/// made with `build_recorder` keeps every sample until the next render, so a bridge that nobody
/// scrapes grew by each upstream call and webhook it timed (measured: 87 MiB to over 117 MiB
/// during a 50,000-product backfill). A thread of its own, since the recorder is made on first
/// use, inside or outside a runtime.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                handle.run_upkeep();
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start the metrics upkeep; histograms are folded at each scrape only");
    }
}

/// The exposition text, with the process metrics refreshed first.
pub fn render(handle: &PrometheusHandle) -> String {
    process_collector().collect();
    handle.render()
}

fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

fn describe() {
    for &(name, kind, help) in FAMILIES {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
    process_collector().describe();
}

/// What is known when the server starts, and so gets zero-valued series.
#[derive(Debug, Clone, Copy)]
pub struct KnownLabels<'a> {
    pub sources: &'a [&'a str],
    pub flows: &'a [&'a str],
    pub outcomes: &'a [&'a str],
    /// This process runs workers, which measure the backlog gauges.
    pub runs_worker: bool,
    /// The store is SQLite, which group-commits.
    pub group_commits: bool,
}

/// Looking a histogram up registers its series (with no observations); the handle is not needed.
///
/// Registers every family with zero values for the label sets known at start (adding zero, so
/// a second registration in one process changes nothing). The upstream
/// families are registered by each transport when it is built (it knows its own name).
pub fn register_at_start(known: KnownLabels<'_>) {
    metrics::gauge!("xecm_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for &source in known.sources {
        for name in [
            "xecm_webhooks_received_total",
            "xecm_events_stored_total",
            "xecm_webhooks_duplicate_total",
        ] {
            metrics::counter!(name, "source" => source.to_string()).increment(0);
        }
        let _ = metrics::histogram!("xecm_ingest_duration_seconds", "source" => source.to_string());
    }
    metrics::counter!("xecm_events_ignored_total").increment(0);
    metrics::gauge!("xecm_http_connections_open").increment(0.0);
    for reason in CONNECTION_CLOSE_REASONS {
        metrics::counter!("xecm_http_connections_closed_total", "reason" => reason).increment(0);
    }
    for &flow in known.flows {
        for &outcome in known.outcomes {
            metrics::counter!(
                "xecm_flow_outcomes_total",
                "flow" => flow.to_string(),
                "outcome" => outcome.to_string()
            )
            .increment(0);
        }
        let _ = metrics::histogram!("xecm_flow_duration_seconds", "flow" => flow.to_string());
        metrics::counter!("xecm_drift_repairs_total", "flow" => flow.to_string()).increment(0);
        metrics::counter!("xecm_team_unresolved_total", "flow" => flow.to_string()).increment(0);
    }
    // Only a worker measures the backlog; an API-only replica would report a false zero
    // (and skew an autoscaler averaging it).
    if known.runs_worker {
        for name in [
            "xecm_backlog_events",
            "xecm_oldest_pending_age_seconds",
            "xecm_dead_letters",
        ] {
            metrics::gauge!(name).increment(0.0);
        }
        for reason in ["age", "budget"] {
            metrics::counter!(PRUNED, "reason" => reason).increment(0);
        }
    }
    if known.group_commits {
        let _ = metrics::histogram!(GROUP_COMMIT_EVENTS);
    }
}

/// Registers one upstream's series at zero: every status class, the duration, a closed circuit.
pub fn register_upstream(upstream: &str) {
    let upstream = upstream.to_string();
    for class in STATUS_CLASSES {
        metrics::counter!(
            "xecm_upstream_requests_total",
            "upstream" => upstream.clone(),
            "status_class" => class
        )
        .increment(0);
    }
    let _ = metrics::histogram!("xecm_upstream_request_duration_seconds", "upstream" => upstream.clone());
    let _ =
        metrics::histogram!("xecm_upstream_limiter_wait_seconds", "upstream" => upstream.clone());
    metrics::gauge!("xecm_upstream_circuit_state", "upstream" => upstream).increment(0.0);
}
