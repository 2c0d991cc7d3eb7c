//! `serve`: open the store, build the router, run until SIGTERM / ctrl-c, then shut down within
//! `[server].shutdown_timeout_secs` of the signal:
//!
//! 1. at once: `/readyz` answers 503 and the worker stops claiming work (it finishes or
//!    releases what runs within `[worker].shutdown_grace_secs`);
//! 2. for `[server].drain_secs` the listener keeps serving, so deliveries sent by a load
//!    balancer that has not yet seen the readiness change are still accepted;
//! 3. then it stops accepting, idle connections close, requests in progress finish;
//! 4. the store is flushed and closed. Whatever is still running at the deadline is dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clients::Upstreams;
use crate::config::Settings;
use crate::flows;
use crate::http::{self, AppState, RouteGroup};
use crate::ingest::Verifiers;
use crate::store;
use crate::worker::{Worker, WorkerHandle};

/// What one process runs (`serve --role`), so API and workers can be scaled apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// HTTP API and workers.
    All,
    /// Webhooks, admin API and (when enabled) the console; no workers.
    Api,
    /// Workers, plus health and metrics.
    Worker,
}

impl Role {
    fn route_groups(self) -> &'static [RouteGroup] {
        match self {
            Role::All | Role::Api => &[
                RouteGroup::Operations,
                RouteGroup::Webhooks,
                RouteGroup::Admin,
                RouteGroup::Console,
            ],
            Role::Worker => &[RouteGroup::Operations],
        }
    }

    fn runs_worker(self) -> bool {
        matches!(self, Role::All | Role::Worker)
    }
}

/// Opens the store (migrating it when configured) and builds the handlers' shared state.
pub async fn build_state(settings: Settings) -> anyhow::Result<AppState> {
    // The recorder first, so that the clients built below register their series with it.
    let metrics = crate::telemetry::metrics_handle();
    let verifiers =
        Verifiers::new(&settings.sources)?.with_callback_shape(settings.callbacks.clone());
    let upstreams = Upstreams::new(&settings.allportal, &settings.opentext)
        .context("cannot build the upstream clients")?;
    let store = store::open(&settings.store).await.with_context(|| {
        format!(
            "cannot open store {}",
            crate::redact::url(&settings.store.url)
        )
    })?;
    if settings.store.migrate_on_start {
        store
            .migrate()
            .await
            .context("cannot apply store migrations")?;
    }
    let configured = Arc::new(flows::build(
        &settings.flows,
        &settings.callbacks,
        &upstreams,
        store.clone(),
    ));
    Ok(AppState::new(crate::http::Shared {
        server: Arc::new(settings.server),
        admin: Arc::new(settings.admin),
        console: Arc::new(settings.console),
        worker_settings: Arc::new(settings.worker),
        audit_settings: Arc::new(settings.audit),
        router: Arc::new(crate::worker::Router::new(configured.as_worker_flows())),
        store,
        verifiers: Arc::new(verifiers),
        metrics,
        started: Instant::now(),
        upstreams,
        flows: configured,
        worker: None,
        shutting_down: CancellationToken::new(),
    }))
}

/// How long the start-up check of the mapping against the live systems may take.
const START_CHECK_BUDGET: Duration = Duration::from_secs(30);

/// Checks the flow mapping against 4ALLPORTAL's module schemas (field names, relations,
/// types) and both live systems ([`flows::check`]; this also reads the category definitions
/// the per-value type checks use). A 4ALLPORTAL field error stops start-up; the other problems
/// warn or stop it as `[mapping_check].on_problem` says (`off` skips them); an unreachable
/// system only warns,
/// since the bridge must still take webhooks while it is down.
pub async fn check_mapping(
    state: &AppState,
    on_problem: flows::check::OnProblem,
) -> anyhow::Result<()> {
    match flows::schema::check_upstream(state.flows.config(), &state.upstreams.allportal).await {
        Ok(()) => {}
        Err(error @ flows::schema::SchemaCheckError::Mapping(_)) => return Err(error.into()),
        Err(error) => {
            tracing::warn!(%error, "the flow mapping could not be checked against 4ALLPORTAL now");
        }
    }
    if on_problem == flows::check::OnProblem::Off {
        return Ok(());
    }
    let upstreams = &state.upstreams;
    let check = flows::check::check_online(
        state.flows.config(),
        &upstreams.opentext,
        &upstreams.allportal,
    );
    // A system that hangs must not hold the start: webhooks are taken while it is down.
    let Ok(report) = tokio::time::timeout(START_CHECK_BUDGET, check).await else {
        tracing::warn!(
            budget_secs = START_CHECK_BUDGET.as_secs(),
            "the flow mapping could not be checked against the live systems in time"
        );
        return Ok(());
    };
    for system in &report.unreachable {
        tracing::warn!(
            system,
            "the flow mapping could not be checked completely now"
        );
    }
    for problem in &report.problems {
        tracing::warn!(key = %problem.key, problem = %problem.problem, "the flow mapping does not fit");
    }
    if !report.problems.is_empty() && on_problem == flows::check::OnProblem::Fail {
        anyhow::bail!(
            "the flow mapping does not fit the live systems ([mapping_check].on_problem = \"fail\"): {}",
            report
                .problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    Ok(())
}

fn start_worker(state: &AppState, shutdown: &CancellationToken) -> WorkerHandle {
    Worker::builder(
        state.store.clone(),
        state.flows.as_worker_flows(),
        (*state.worker_settings).clone(),
    )
    .workflow_feed(flows::workflow_feed(&state.upstreams))
    .change_feed(flows::change_feed(state.flows.config(), &state.upstreams))
    .recoveries(state.upstreams.recoveries())
    .audit((*state.audit_settings).clone())
    .spawn(shutdown.clone())
}

/// Serves on `listener` until `shutdown` is cancelled, then drains as the module describes.
pub async fn run(
    mut state: AppState,
    role: Role,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let server = &state.server;
    let timeout = Duration::from_secs(server.shutdown_timeout_secs);
    let drain = Duration::from_secs(server.drain_secs);
    let limits = http::Limits::from_config(server);
    let store = state.store.clone();
    register_metrics(&state, role);
    let worker = role.runs_worker().then(|| start_worker(&state, &shutdown));
    if role.runs_worker() {
        // Backfills whose holder stopped (a killed process) go on here.
        let backfiller = flows::backfill::Backfiller::new(
            store.clone(),
            state.upstreams.allportal.clone(),
            state.flows.config().clone(),
            format!("worker:{}", uuid::Uuid::now_v7()),
        );
        tokio::spawn(backfiller.resume_orphans(shutdown.clone()));
    }
    let shared = state.make_mut();
    shared.worker = worker.as_ref().map(WorkerHandle::probe);
    shared.shutting_down = shutdown.clone();
    let app = http::router(state, role.route_groups());
    tracing::info!(
        address = %listener.local_addr()?,
        ?role,
        store = store.backend(),
        version = env!("CARGO_PKG_VERSION"),
        "listening"
    );
    let stop_accepting = CancellationToken::new();
    let mut http = tokio::spawn(http::listener::serve(
        listener,
        app,
        limits,
        stop_accepting.clone(),
    ));
    tokio::select! {
        () = shutdown.cancelled() => {}
        result = &mut http => {
            result.context("HTTP listener failed")?;
            anyhow::bail!("the HTTP listener stopped unexpectedly");
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    tracing::info!(
        drain_secs = drain.as_secs(),
        "shutting down: not ready, still serving during the drain window"
    );
    let finished = tokio::time::timeout_at(deadline, async {
        tokio::time::sleep(drain).await;
        stop_accepting.cancel();
        if let Err(error) = (&mut http).await {
            tracing::error!(%error, "HTTP listener failed");
        }
        if let Some(worker) = worker {
            worker.join().await;
        }
    })
    .await;
    if finished.is_err() {
        http.abort();
        tracing::warn!(
            deadline_secs = timeout.as_secs(),
            "shutdown deadline passed with requests or work still running"
        );
    }
    // Everything acknowledged is committed already; closing flushes the rest. It gets what is
    // left of the budget (at least a second), so a stuck store cannot keep the process alive.
    let close_by = deadline.max(tokio::time::Instant::now() + Duration::from_secs(1));
    if tokio::time::timeout_at(close_by, store.close())
        .await
        .is_err()
    {
        tracing::warn!("the store did not close in time");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Registers the metric families with zero values for what is known now.
fn register_metrics(state: &AppState, role: Role) {
    use crate::store::{Source, outcome};
    let sources = Source::ALL.map(Source::as_str);
    let flows = state.flows.names();
    let outcomes = [
        outcome::SUCCESS,
        outcome::SKIPPED,
        outcome::RETRYABLE,
        outcome::PERMANENT,
    ];
    crate::telemetry::metrics::register_at_start(crate::telemetry::metrics::KnownLabels {
        sources: &sources,
        flows: &flows,
        outcomes: &outcomes,
        runs_worker: role.runs_worker(),
        group_commits: state.store.backend() == "sqlite",
    });
}

/// Cancels `token` on SIGTERM or ctrl-c.
pub async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown requested");
    token.cancel();
}
