//! The HTTP surface: webhooks, health, metrics, the admin API and the operator console.
//!
//! Every route is listed once in [`routes`]; the router is built from that table and a test keeps
//! the table and `openapi.yaml` in sync both ways.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, Request, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::clients::Upstreams;
use crate::flows::Flows;
use crate::ingest::Verifiers;
use crate::store::Store;
use crate::worker::{WorkerConfig, WorkerProbe};

mod admin;
pub mod config;
mod connection;
pub mod console;
mod health;
pub mod listener;
pub mod problem;
pub mod timeline;
mod webhooks;

pub use config::{AdminConfig, ServerConfig};
pub use connection::Limits;

pub use problem::Problem;

pub const REQUEST_ID: &str = "x-request-id";

/// Shared state of all handlers: one `Arc`, since every request clones it (one count instead
/// of one per field).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }

    /// For setting up before serving; copies the state if it is already shared.
    pub fn make_mut(&mut self) -> &mut Shared {
        Arc::make_mut(&mut self.0)
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
#[derive(Clone)]
pub struct Shared {
    pub server: Arc<ServerConfig>,
    pub admin: Arc<AdminConfig>,
    /// The operator console's settings (`[console]`).
    pub console: Arc<console::ConsoleConfig>,
    /// The worker pool's settings (`serve` starts it from these).
    pub worker_settings: Arc<WorkerConfig>,
    /// The drift audit's settings (`[audit]`).
    pub audit_settings: Arc<crate::worker::audit::AuditConfig>,
    pub store: Arc<dyn Store>,
    pub verifiers: Arc<Verifiers>,
    pub metrics: PrometheusHandle,
    pub started: Instant,
    pub upstreams: Upstreams,
    /// The configured business flows (`[flows.*]`).
    pub flows: Arc<Flows>,
    /// Which flows want an event: ingest routes each event as it stores it.
    pub router: Arc<crate::worker::Router>,
    /// The worker of this process, if it runs one (`serve --role all|worker`).
    pub worker: Option<WorkerProbe>,
    /// Cancelled when shutdown begins: from then on `/readyz` answers 503 while the listener
    /// still serves for `server.drain_secs`.
    pub shutting_down: CancellationToken,
}

/// Which deployment role serves a route (`serve --role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteGroup {
    /// Liveness, readiness and metrics: served by every role.
    Operations,
    /// Inbound webhooks: the `api` and `all` roles.
    Webhooks,
    /// The admin API: the `api` and `all` roles.
    Admin,
    /// The operator console under `/ui/` (HTML, not part of the API contract, so its routes are
    /// listed by [`console::router`] rather than here): the `api` and `all` roles, when
    /// `[console].enabled`.
    Console,
}

pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub group: RouteGroup,
    handler: MethodRouter<AppState>,
}

/// Every route of the service, once.
pub fn routes() -> Vec<Route> {
    use RouteGroup::*;
    let route = |method, path, group, handler| Route {
        method,
        path,
        group,
        handler,
    };
    vec![
        route(Method::GET, "/healthz", Operations, get(health::healthz)),
        route(Method::GET, "/readyz", Operations, get(health::readyz)),
        route(Method::GET, "/metrics", Operations, get(health::metrics)),
        route(
            Method::POST,
            "/webhooks/allportal",
            Webhooks,
            post(webhooks::allportal),
        ),
        route(
            Method::POST,
            "/webhooks/opentext",
            Webhooks,
            post(webhooks::opentext),
        ),
        route(Method::GET, "/api/v1/status", Admin, get(admin::status)),
        route(
            Method::GET,
            "/api/v1/events",
            Admin,
            get(admin::list_events),
        ),
        route(
            Method::GET,
            "/api/v1/events/{id}",
            Admin,
            get(admin::get_event),
        ),
        route(
            Method::POST,
            "/api/v1/events/{id}/replay",
            Admin,
            post(admin::replay_event),
        ),
        route(
            Method::POST,
            "/api/v1/events/replay",
            Admin,
            post(admin::replay_events),
        ),
        route(Method::POST, "/api/v1/resync", Admin, post(admin::resync)),
        route(Method::POST, "/api/v1/plan", Admin, post(admin::plan)),
        route(Method::GET, "/api/v1/flows", Admin, get(admin::flows)),
        route(Method::GET, "/api/v1/audit", Admin, get(admin::audit)),
        route(
            Method::GET,
            "/api/v1/objects/{module}/{id}",
            Admin,
            get(admin::object_timeline),
        ),
        route(
            Method::POST,
            "/api/v1/backfills",
            Admin,
            post(admin::start_backfill),
        ),
        route(
            Method::GET,
            "/api/v1/backfills/{id}",
            Admin,
            get(admin::get_backfill),
        ),
        route(
            Method::POST,
            "/api/v1/backfills/{id}/cancel",
            Admin,
            post(admin::cancel_backfill),
        ),
    ]
}

/// The application router for the given route groups, with the request-id, tracing, problem,
/// and timeout layers.
pub fn router(state: AppState, groups: &[RouteGroup]) -> Router {
    let timeout = Duration::from_secs(state.server.request_timeout_secs);
    let body_limit = state.server.max_body_bytes;
    let mut router = Router::new();
    for route in routes().into_iter().filter(|r| groups.contains(&r.group)) {
        router = router.route(route.path, route.handler);
    }
    if groups.contains(&RouteGroup::Console) && state.console.enabled {
        router = router.merge(console::router());
    }
    router
        .fallback(webhooks::fallback)
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(access_log)
                        // The access line carries the status; handlers log their own errors.
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(middleware::from_fn(problem::problem_middleware))
                .layer(middleware::from_fn_with_state(
                    body_limit,
                    reject_declared_oversize,
                ))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    timeout,
                )),
        )
}

/// The access log: one line per request, inside the request span (id, method, path).
fn access_log<B>(response: &axum::http::Response<B>, latency: Duration, _span: &tracing::Span) {
    tracing::info!(
        status = response.status().as_u16(),
        duration_ms = latency.as_secs_f64() * 1000.0,
        "request"
    );
}

/// 413 at once for a declared `Content-Length` over `server.max_body_bytes`, before a byte of
/// the body is read; the body limit on the routes catches bodies without a declared length
/// while they are read.
async fn reject_declared_oversize(
    State(limit): State<usize>,
    request: Request<axum::body::Body>,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(declared) if declared > limit as u64 => {
            webhooks::count_declared_oversize(request.uri().path());
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                format!(
                    "the declared body of {declared} bytes exceeds server.max_body_bytes \
                     ({limit} bytes)"
                ),
            )
            .into_response()
        }
        _ => next.run(request).await,
    }
}

/// Every log line of a request carries its id, method and path.
fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        request_id,
        method = %request.method(),
        path = %request.uri().path(),
    )
}
