//! The admin API under `/api/v1`, behind a bearer token (`[admin].token`): status, events with
//! their attempt history, replay (one or by filter), resync of one business object, and
//! backfills (every object a flow's trigger matches).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::{AppState, Problem};
use crate::flows::backfill::{BackfillError, BackfillRequest, Backfiller};
use crate::store::{EventFilter, Page, ReplayOutcome, Source, now_millis, state};

/// Largest page of `GET /api/v1/events`.
const MAX_PAGE: i64 = 500;
const DEFAULT_PAGE: i64 = 50;

/// Proof that the request carried the admin bearer token. Every admin handler takes one.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::ingest::verify::bearer_credentials);
        let accepted = match (&state.admin.token, presented) {
            (Some(token), Some(presented)) => {
                bool::from(token.expose_secret().as_bytes().ct_eq(presented.as_bytes()))
            }
            _ => false,
        };
        if accepted {
            return Ok(Admin);
        }
        let detail = if state.admin.token.is_none() {
            "the admin API is disabled: no `admin.token` is configured"
        } else {
            "a valid `Authorization: Bearer <admin.token>` header is required"
        };
        let mut response =
            Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail).into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        Err(response)
    }
}

fn bad_request(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "invalid-request", detail)
}

fn store_problem(error: crate::store::StoreError) -> Problem {
    match error {
        crate::store::StoreError::Invalid(detail) => bad_request(detail),
        error => {
            tracing::error!(%error, "admin API: store error");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                // The database's own text stays in the log: it can name tables, hosts or users.
                "the store could not answer; retry later (details in the bridge's log)",
            )
        }
    }
}

/// A JSON body, with a problem that says what is wrong when it does not parse.
fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, Problem> {
    body.map(|Json(value)| value).map_err(|rejection| {
        let status = rejection.status();
        let slug = if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            "unsupported-media-type"
        } else {
            "invalid-request"
        };
        // 422 from axum for a well-formed body of the wrong shape: still a bad request here.
        let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        Problem::new(status, slug, rejection.body_text())
    })
}

/// `GET /api/v1/status`: what an operator looks at first.
pub async fn status(_: Admin, State(state): State<AppState>) -> Result<Response, Problem> {
    let now = now_millis();
    let flows = state.store.flow_stats().await.map_err(store_problem)?;
    let backlog = state.store.backlog(now).await.map_err(store_problem)?;
    let circuits: serde_json::Map<String, serde_json::Value> = state
        .upstreams
        .circuit_states()
        .into_iter()
        .map(|(name, circuit)| (name.to_string(), json!(circuit)))
        .collect();
    let worker = state.worker.as_ref().map(|probe| {
        json!({
            "enabled": probe.is_enabled(),
            "alive": probe.is_alive(now),
            "last_heartbeat_age_ms": now.saturating_sub(probe.last_heartbeat()),
        })
    });
    let events_per_minute = state
        .store
        .events_per_minute(now - 3_600_000)
        .await
        .map_err(store_problem)?;
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": state.started.elapsed().as_secs(),
        "store": state.store.backend(),
        "backlog": backlog,
        "dead_letters": backlog.dead_letters,
        "oldest_pending_age_secs": backlog.oldest_pending_age_ms / 1000,
        "flows": flows,
        "upstreams": circuits,
        "worker": worker,
        "events_per_minute": events_per_minute,
        "allportal_webhook": webhook_drift(&state).await,
    }))
    .into_response())
}

/// How long the status waits for 4ALLPORTAL's webhook list.
const WEBHOOK_CHECK_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);

/// The registered 4ALLPORTAL webhook compared with what the flows need, asked live (null
/// without `server.public_url`).
async fn webhook_drift(state: &AppState) -> serde_json::Value {
    use crate::flows::register;
    let Some(public_url) = &state.server.public_url else {
        return serde_json::Value::Null;
    };
    let url = register::webhook_url(public_url);
    let check = register::drift(&state.upstreams.allportal, state.flows.config(), &url);
    match tokio::time::timeout(WEBHOOK_CHECK_BUDGET, check).await {
        Ok(Ok(Some(differences))) => {
            json!({"url": url, "in_line": differences.is_empty(), "differences": differences})
        }
        Ok(Ok(None)) => json!({"url": url, "in_line": null, "differences": [],
                               "error": "4ALLPORTAL cannot list webhooks"}),
        Ok(Err(error)) => json!({"url": url, "in_line": null, "differences": [],
                                 "error": error.to_string()}),
        Err(_) => json!({"url": url, "in_line": null, "differences": [],
                         "error": "4ALLPORTAL did not answer in time"}),
    }
}

/// Filters shared by listing and bulk replay. Times are RFC 3339.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterParams {
    pub(super) state: Option<String>,
    pub(super) flow: Option<String>,
    pub(super) source: Option<String>,
    pub(super) kind: Option<String>,
    pub(super) object_key: Option<String>,
    pub(super) from: Option<String>,
    pub(super) to: Option<String>,
}

impl FilterParams {
    /// The store's filter; a problem naming the parameter when one is not valid (the console
    /// checks its filter form with this too).
    pub(super) fn into_filter(self) -> Result<EventFilter, Problem> {
        if let Some(s) = &self.state {
            let known = [
                state::PENDING,
                state::ROUTED,
                state::RUNNING,
                state::DONE,
                state::DEAD,
                state::IGNORED,
            ];
            if !known.contains(&s.as_str()) {
                return Err(bad_request(format!(
                    "unknown state `{s}`; use one of {}",
                    known.join(", ")
                )));
            }
        }
        if let Some(source) = &self.source
            && Source::parse(source).is_none()
        {
            return Err(bad_request(format!(
                "unknown source `{source}`; use allportal or opentext"
            )));
        }
        Ok(EventFilter {
            state: self.state,
            flow: self.flow,
            source: self.source,
            kind: self.kind,
            object_key: self.object_key,
            received_from: parse_time("from", self.from.as_deref())?,
            received_to: parse_time("to", self.to.as_deref())?,
        })
    }
}

fn parse_time(name: &str, value: Option<&str>) -> Result<Option<i64>, Problem> {
    value
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| t.timestamp_millis())
                .map_err(|e| {
                    bad_request(format!(
                        "`{name}` must be an RFC 3339 time such as 2026-11-28T10:00:00Z ({e})"
                    ))
                })
        })
        .transpose()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    #[serde(flatten)]
    filter: FilterParams,
    /// Continue after this event id (the previous page's `next_cursor`).
    after: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/v1/events`: newest first, filtered, cursor-paginated.
pub async fn list_events(
    _: Admin,
    State(state): State<AppState>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(params) = params.map_err(|e| bad_request(e.body_text()))?;
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(bad_request(format!(
            "`limit` must be between 1 and {MAX_PAGE}"
        )));
    }
    let filter = params.filter.into_filter()?;
    let page = Page {
        after: params.after,
        limit,
    };
    let events = state
        .store
        .list_events(&filter, &page)
        .await
        .map_err(store_problem)?;
    Ok(Json(events).into_response())
}

/// `GET /api/v1/events/{id}`: the event, its routing (jobs) and attempt history.
pub async fn get_event(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    match state.store.event_detail(&id).await.map_err(store_problem)? {
        Some(detail) => Ok(Json(detail).into_response()),
        None => Err(not_found(&id)),
    }
}

fn not_found(id: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        format!("no event `{id}`"),
    )
}

/// `POST /api/v1/events/{id}/replay`: a finished (done, dead, ignored) event runs again.
pub async fn replay_event(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let outcome = state
        .store
        .replay_event(&id, "replayed through the admin API", now_millis())
        .await
        .map_err(store_problem)?;
    match outcome {
        ReplayOutcome::Replayed => {
            tracing::info!(event_id = %id, "event replayed");
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({ "id": id, "replayed": true })),
            )
                .into_response())
        }
        ReplayOutcome::InProgress => Err(Problem::new(
            StatusCode::CONFLICT,
            "in-progress",
            format!(
                "event `{id}` is not finished yet; only done, dead or ignored events can be replayed"
            ),
        )),
        ReplayOutcome::NotFound => Err(not_found(&id)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    #[serde(flatten)]
    filter: FilterParams,
    /// Only count what would be replayed.
    #[serde(default)]
    dry_run: bool,
}

/// `POST /api/v1/events/replay`: replay every event matching a filter (dead letters by default).
pub async fn replay_events(
    _: Admin,
    State(state): State<AppState>,
    body: Result<Json<ReplayRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    let request = json_body(body)?;
    let filter = request.filter.into_filter()?;
    let count = state
        .store
        .replay_by_filter(&filter, request.dry_run, now_millis())
        .await
        .map_err(store_problem)?;
    if request.dry_run {
        return Ok(Json(json!({ "dry_run": true, "matched": count })).into_response());
    }
    tracing::info!(count, "events replayed by filter");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "dry_run": false, "replayed": count })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResyncRequest {
    /// `<module>/<object id>`, e.g. `product/4711`.
    object_key: String,
    /// One flow; all flows that want the object when absent.
    flow: Option<String>,
}

/// A named flow must be one of the configured flows: 404 otherwise.
fn check_flow(state: &AppState, flow: Option<&str>) -> Result<(), Problem> {
    match flow {
        Some(name) if state.flows.get(name).is_none() => {
            let configured = state.flows.names();
            let configured = if configured.is_empty() {
                "none".to_string()
            } else {
                configured.join(", ")
            };
            Err(Problem::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("no flow `{name}` is configured (configured: {configured})"),
            ))
        }
        _ => Ok(()),
    }
}

/// `POST /api/v1/resync`: enqueue a reconcile of one business object.
pub async fn resync(
    _: Admin,
    State(state): State<AppState>,
    body: Result<Json<ResyncRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    let request = json_body(body)?;
    let valid_key = request
        .object_key
        .split_once('/')
        .is_some_and(|(module, id)| !module.is_empty() && !id.is_empty() && !id.contains('/'));
    if !valid_key {
        return Err(bad_request(
            "`object_key` must be `<module>/<object id>`, e.g. `product/4711`",
        ));
    }
    let id = state
        .store
        .resync(request.flow.as_deref(), &request.object_key, now_millis())
        .await
        .map_err(store_problem)?;
    tracing::info!(event_id = %id, object_key = %request.object_key, flow = ?request.flow, "resync enqueued");
    Ok((StatusCode::ACCEPTED, Json(json!({ "event_id": id }))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    /// `<module>/<object id>` (4ALLPORTAL) or `<bo_type>/<bo_id>` (OpenText callbacks).
    object_key: String,
    /// One flow; every flow that wants such an event when absent.
    flow: Option<String>,
    /// `allportal` (default) or `opentext`.
    source: Option<String>,
    /// The event kind to plan for (default `moduleobject_modify`).
    kind: Option<String>,
}

/// `POST /api/v1/plan`: what the flows would do for one business object, computed from the
/// current state of both systems; nothing is written.
pub async fn plan(
    _: Admin,
    State(state): State<AppState>,
    body: Result<Json<PlanRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    let request = json_body(body)?;
    let source = request.source.as_deref().unwrap_or("allportal");
    if Source::parse(source).is_none() {
        return Err(bad_request(format!(
            "unknown source `{source}`; use allportal or opentext"
        )));
    }
    if request
        .object_key
        .split_once('/')
        .is_none_or(|(m, id)| m.is_empty() || id.is_empty())
    {
        return Err(bad_request(
            "`object_key` must be `<module>/<object id>`, e.g. `product/4711`",
        ));
    }
    check_flow(&state, request.flow.as_deref())?;
    let kind = request.kind.as_deref().unwrap_or("moduleobject_modify");
    let event = crate::flows::unsaved_event(source, kind, &request.object_key, json!({}));
    match state.flows.plan(request.flow.as_deref(), &event).await {
        Ok(plans) => Ok(Json(json!({ "plans": plans })).into_response()),
        Err(crate::flows::FlowError::Mapping(detail)) => Err(bad_request(detail)),
        Err(error) => Err(Problem::new(
            StatusCode::BAD_GATEWAY,
            "upstream-unavailable",
            format!("the plan could not be computed: {error}"),
        )),
    }
}

/// `GET /api/v1/flows`: the configured flows and their mapping.
pub async fn flows(_: Admin, State(state): State<AppState>) -> Response {
    let flows: Vec<_> = state
        .flows
        .mappings()
        .map(|(name, mapping)| json!({ "name": name, "mapping": mapping }))
        .collect();
    Json(json!({ "flows": flows })).into_response()
}

/// `GET /api/v1/audit`: the drift audit's configuration and its last round (`null` before
/// the first). Repairs the resyncs made are counted by `xecm_drift_repairs_total`.
pub async fn audit(_: Admin, State(state): State<AppState>) -> Result<Response, Problem> {
    let last = crate::worker::audit::last_round(state.store.as_ref())
        .await
        .map_err(store_problem)?;
    Ok(Json(json!({ "config": *state.audit_settings, "last_round": last })).into_response())
}

/// `GET /api/v1/objects/{module}/{id}`: the timeline of one business object — its events,
/// flow runs and the bridge's writes in OpenText and 4ALLPORTAL, oldest first.
pub async fn object_timeline(
    _: Admin,
    State(state): State<AppState>,
    Path((module, id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let key = format!("{module}/{id}");
    let timeline =
        super::timeline::object_timeline(state.store.as_ref(), &state.flows.names(), &key)
            .await
            .map_err(store_problem)?;
    Ok(Json(timeline).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillBody {
    flow: String,
    /// A 4APQL condition on the trigger module's objects.
    #[serde(default, rename = "where")]
    condition: Option<String>,
    /// Objects enqueued per second.
    #[serde(default)]
    rate: Option<f64>,
    /// Count and list a sample; enqueue nothing.
    #[serde(default)]
    dry_run: bool,
}

fn backfiller(state: &AppState) -> Backfiller {
    Backfiller::new(
        state.store.clone(),
        state.upstreams.allportal.clone(),
        state.flows.config().clone(),
        format!("api:{}", uuid::Uuid::now_v7()),
    )
}

fn backfill_problem(error: BackfillError) -> Problem {
    match error {
        BackfillError::InvalidRate(_) => bad_request(error.to_string()),
        // As `plan` and `resync` answer a flow that is not configured.
        BackfillError::UnknownFlow(_) | BackfillError::NotFound(_) => {
            Problem::new(StatusCode::NOT_FOUND, "not-found", error.to_string())
        }
        BackfillError::Upstream(_) => {
            Problem::new(StatusCode::BAD_GATEWAY, "upstream-error", error.to_string())
        }
        BackfillError::Store(error) => store_problem(error),
    }
}

/// `POST /api/v1/backfills`: start (or resume) a backfill, or with `dry_run` count what it
/// would enqueue. The enumeration runs in the background; `GET /api/v1/backfills/{id}` follows it.
pub async fn start_backfill(
    _: Admin,
    State(state): State<AppState>,
    body: Result<Json<BackfillBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let body = json_body(body)?;
    let request = BackfillRequest {
        flow: body.flow,
        condition: body.condition.filter(|c| !c.trim().is_empty()),
        rate: body.rate,
    };
    let backfiller = backfiller(&state);
    if body.dry_run {
        let found = backfiller
            .dry_run(&request)
            .await
            .map_err(backfill_problem)?;
        return Ok(Json(found).into_response());
    }
    let backfill = backfiller.start(&request).await.map_err(backfill_problem)?;
    // Enumerate here when nobody else does; otherwise the holder goes on (or, once its lease
    // runs out, a worker replica takes over).
    if backfiller
        .lease(&backfill.id)
        .await
        .map_err(backfill_problem)?
    {
        let (id, stop) = (backfill.id.clone(), state.shutting_down.clone());
        tokio::spawn(async move {
            if let Err(error) = backfiller.run(&id, &stop).await {
                tracing::warn!(backfill = %id, %error, "backfill stopped");
            }
        });
    }
    let progress = self::backfiller(&state)
        .progress(&backfill.id)
        .await
        .map_err(backfill_problem)?;
    Ok((StatusCode::ACCEPTED, Json(progress)).into_response())
}

/// `GET /api/v1/backfills/{id}`: the backfill's state, cursor and counts.
pub async fn get_backfill(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let progress = backfiller(&state)
        .progress(&id)
        .await
        .map_err(backfill_problem)?;
    Ok(Json(progress).into_response())
}

/// `POST /api/v1/backfills/{id}/cancel`: stop enumerating; starting the same backfill again
/// resumes it from its cursor.
pub async fn cancel_backfill(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let progress = backfiller(&state)
        .cancel(&id)
        .await
        .map_err(backfill_problem)?;
    tracing::info!(backfill = %id, "backfill cancelled");
    Ok(Json(progress).into_response())
}
