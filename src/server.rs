//! `serve`: open the store, build the router, run until SIGTERM / ctrl-c, then shut down within
//! `[server].shutdown_timeout_secs`: stop accepting, finish in-flight requests, flush the store.

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
    /// Webhooks and admin API only; no workers.
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
    let verifiers = Verifiers::new(&settings.sources)?;
    let upstreams = Upstreams::new(&settings).context("cannot build the upstream clients")?;
    let store = store::open(&settings.store).await.with_context(|| {
        format!(
            "cannot open store {}",
            crate::config::redact_url(&settings.store.url)
        )
    })?;
    if settings.store.migrate_on_start {
        store
            .migrate()
            .await
            .context("cannot apply store migrations")?;
    }
    let configured = Arc::new(flows::build(&settings, &upstreams, store.clone()));
    Ok(AppState {
        settings: Arc::new(settings),
        store,
        verifiers: Arc::new(verifiers),
        metrics,
        started: Instant::now(),
        upstreams,
        flows: configured,
        worker: None,
    })
}

/// Checks the flow mapping against 4ALLPORTAL's module schemas (field names, relations,
/// types). A mapping error stops start-up; an unreachable 4ALLPORTAL only warns, since the
/// bridge must still take webhooks while it is down.
pub async fn check_mapping(state: &AppState) -> anyhow::Result<()> {
    match flows::schema::check_upstream(&state.settings.flows, &state.upstreams.allportal).await {
        Ok(()) => Ok(()),
        Err(error @ flows::schema::SchemaCheckError::Mapping(_)) => Err(error.into()),
        Err(error) => {
            tracing::warn!(%error, "the flow mapping could not be checked against 4ALLPORTAL now");
            Ok(())
        }
    }
}

fn start_worker(state: &AppState, shutdown: &CancellationToken) -> WorkerHandle {
    Worker::builder(
        state.store.clone(),
        state.flows.as_worker_flows(),
        state.settings.worker.clone(),
    )
    .workflow_feed(flows::workflow_feed(&state.upstreams))
    .change_feed(flows::change_feed(&state.settings, &state.upstreams))
    .spawn(shutdown.clone())
}

/// Serves on `listener` until `shutdown` is cancelled, then drains: stop accepting, finish
/// in-flight requests, let running work finish (or release it), flush and close the store.
pub async fn run(
    mut state: AppState,
    role: Role,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let deadline = Duration::from_secs(state.settings.server.shutdown_timeout_secs);
    let store = state.store.clone();
    register_metrics(&state, role);
    let worker = role.runs_worker().then(|| start_worker(&state, &shutdown));
    state.worker = worker.as_ref().map(WorkerHandle::probe);
    let app = http::router(state, role.route_groups());
    tracing::info!(
        address = %listener.local_addr()?,
        ?role,
        store = store.backend(),
        version = env!("CARGO_PKG_VERSION"),
        "listening"
    );
    let server =
        axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let drained = tokio::select! {
        result = server => { result.context("HTTP server failed")?; true }
        () = async { shutdown.cancelled().await; tokio::time::sleep(deadline).await } => false,
    };
    if !drained {
        tracing::warn!(
            deadline_secs = deadline.as_secs(),
            "shutdown deadline passed with requests still in flight"
        );
    }
    if let Some(worker) = worker {
        worker.join().await;
    }
    store.close().await;
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
