//! Repairs: the dead letters, replay (one, or all that match a filter after a dry-run count),
//! resync of one object, and the plan of what the flows would do now. Each action is a POST
//! form with the session's CSRF token, runs the store function the admin API runs, and is
//! logged with the session as who and the action and target as what.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use maud::{Markup, html};
use serde::Deserialize;

use super::events::{Filters, event_table, filter_form};
use super::session::Operator;
use super::{ConsoleError, PageResult, layout};
use crate::flows::{FlowError, unsaved_event};
use crate::http::AppState;
use crate::store::{Page, ReplayOutcome, Source, now_millis, state as states};

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

fn check(operator: &Operator, csrf: &str) -> Result<(), ConsoleError> {
    if operator.csrf_ok(csrf) {
        Ok(())
    } else {
        tracing::warn!(session = %operator.session, "console: action refused, CSRF token missing or wrong");
        Err(ConsoleError::forbidden_csrf())
    }
}

/// Dead letters are listed with state `dead` whatever the form says.
fn dead(filters: &Filters) -> Filters {
    Filters {
        state: states::DEAD.to_string(),
        ..filters.clone()
    }
}

/// `GET /ui/dead-letters`.
pub async fn dead_letters(
    operator: Operator,
    State(state): State<AppState>,
    Query(filters): Query<Filters>,
) -> PageResult {
    let filters = dead(&filters);
    let filter = filters.to_filter()?;
    let page = Page {
        after: (!filters.after.is_empty()).then(|| filters.after.clone()),
        limit: 50,
    };
    let found = state.store.list_events(&filter, &page).await?;
    let main = html! {
        h1 { "Dead letters" }
        p { "Events a flow gave up on. Fix the cause (see each event's attempts, or plan what the flows would do now), then replay." }
        (filter_form(&state, &filters, "/ui/dead-letters", &[states::DEAD]))
        @if found.events.is_empty() {
            p { "No dead letter matches." }
        } @else {
            (event_table(&found.events))
            @if let Some(cursor) = &found.next_cursor {
                nav.pager aria-label="Pages" {
                    a rel="next" href={"/ui/dead-letters?" (filters.query()) "&after=" (layout::segment(cursor))} { "Next page (older)" }
                }
            }
            form method="post" action="/ui/dead-letters/replay" {
                (layout::csrf_field(&operator))
                (hidden_filters(&filters))
                button type="submit" { "Replay all matching… (shows the count first)" }
            }
        }
    };
    Ok(layout::page("Dead letters", &operator, "/ui/dead-letters", main).into_response())
}

fn hidden_filters(filters: &Filters) -> Markup {
    let fields = [
        ("source", &filters.source),
        ("flow", &filters.flow),
        ("kind", &filters.kind),
        ("object_key", &filters.object_key),
        ("from", &filters.from),
        ("to", &filters.to),
    ];
    html! {
        @for (name, value) in fields {
            @if !value.is_empty() { input type="hidden" name=(name) value=(value); }
        }
    }
}

#[derive(Deserialize)]
pub struct ReplayMatching {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    filters: Filters,
    /// The count the operator confirmed; absent: only count (the dry run). Text, since a
    /// flattened form hands every value over as text.
    confirm: Option<String>,
}

/// `POST /ui/dead-letters/replay`: without `confirm`, the dry-run count and a confirm button;
/// with it, the replay.
pub async fn replay_matching(
    operator: Operator,
    State(state): State<AppState>,
    Form(form): Form<ReplayMatching>,
) -> PageResult {
    check(&operator, &form.csrf)?;
    let filters = dead(&form.filters);
    let filter = filters.to_filter()?;
    let Some(confirmed) = form.confirm.filter(|c| !c.is_empty()) else {
        let count = state
            .store
            .replay_by_filter(&filter, true, now_millis())
            .await?;
        let main = html! {
            h1 { "Replay dead letters" }
            p role="status" { strong { (count) } " dead letters match this filter." }
            @if count > 0 {
                form method="post" action="/ui/dead-letters/replay" {
                    (layout::csrf_field(&operator))
                    (hidden_filters(&filters))
                    input type="hidden" name="confirm" value=(count);
                    button type="submit" { "Replay these " (count) " dead letters" }
                }
            }
            p { a href={"/ui/dead-letters?" (filters.query())} { "Back to the dead letters" } }
        };
        return Ok(
            layout::page("Replay dead letters", &operator, "/ui/dead-letters", main)
                .into_response(),
        );
    };
    let replayed = state
        .store
        .replay_by_filter(&filter, false, now_millis())
        .await?;
    tracing::info!(
        session = %operator.session,
        action = "replay-matching",
        target = ?filter,
        confirmed,
        replayed,
        "console action"
    );
    let main = html! {
        h1 { "Replay dead letters" }
        p.notice role="status" { (replayed) " dead letters replayed (" (confirmed) " matched when counted)." }
        p { a href="/ui/dead-letters" { "Back to the dead letters" } }
    };
    Ok(layout::page("Replay dead letters", &operator, "/ui/dead-letters", main).into_response())
}

/// `POST /ui/events/{id}/replay`.
pub async fn replay_one(
    operator: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    check(&operator, &form.csrf)?;
    let note = format!("replayed in the console (session {})", operator.session);
    match state.store.replay_event(&id, &note, now_millis()).await? {
        ReplayOutcome::Replayed => {
            tracing::info!(session = %operator.session, action = "replay", target = %id, "console action");
            Ok(Redirect::to(&format!("/ui/events/{}", layout::segment(&id))).into_response())
        }
        ReplayOutcome::InProgress => Err(ConsoleError::new(
            StatusCode::CONFLICT,
            format!(
                "Event `{id}` is not finished yet; only done, dead or ignored events can be replayed."
            ),
        )),
        ReplayOutcome::NotFound => Err(ConsoleError::not_found(format!(
            "There is no event `{id}`."
        ))),
    }
}

/// `POST /ui/objects/{module}/{id}/resync`.
pub async fn resync(
    operator: Operator,
    State(state): State<AppState>,
    Path((module, id)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    check(&operator, &form.csrf)?;
    let key = format!("{module}/{id}");
    let event = state.store.resync(None, &key, now_millis()).await?;
    tracing::info!(session = %operator.session, action = "resync", target = %key, event_id = %event, "console action");
    Ok(Redirect::to(&format!("/ui/events/{}", layout::segment(&event))).into_response())
}

#[derive(Deserialize)]
pub struct PlanQuery {
    #[serde(default)]
    object_key: String,
    #[serde(default)]
    flow: String,
    /// Plan for this stored event (its source, kind and payload).
    #[serde(default)]
    event: String,
}

/// `GET /ui/plan`: the writes the flows would make now, as a table; nothing is written.
pub async fn plan(
    operator: Operator,
    State(state): State<AppState>,
    Query(query): Query<PlanQuery>,
) -> PageResult {
    let stored = if query.event.is_empty() {
        None
    } else {
        Some(state.store.get_event(&query.event).await?.ok_or_else(|| {
            ConsoleError::not_found(format!("There is no event `{}`.", query.event))
        })?)
    };
    let key = stored
        .as_ref()
        .and_then(|e| e.object_key.clone())
        .unwrap_or_else(|| query.object_key.trim().to_string());
    if key
        .split_once('/')
        .is_none_or(|(m, id)| m.is_empty() || id.is_empty())
    {
        return Err(ConsoleError::bad_request(
            "Plan needs a business object `<module>/<id>`, e.g. `product/4711`.",
        ));
    }
    let flow = (!query.flow.is_empty()).then_some(query.flow.as_str());
    let event = match &stored {
        Some(e) => unsaved_event(&e.source, &e.kind, &key, e.payload.clone()),
        None => unsaved_event(
            Source::Allportal.as_str(),
            "moduleobject_modify",
            &key,
            serde_json::json!({}),
        ),
    };
    let (module, id) = key.split_once('/').unwrap_or_default();
    let result = state.flows.plan(flow, &event).await;
    let main = html! {
        h1 { "Plan for " code { (key) } }
        p { "What the flows would write now, computed from the current state of both systems. Nothing has been written." }
        @match &result {
            Ok(plans) if plans.is_empty() => { p { "No configured flow wants this object." } }
            Ok(plans) => {
                table.plan {
                    thead {
                        tr {
                            th scope="col" { "Flow" }
                            th scope="col" { "System" }
                            th scope="col" { "Operation" }
                            th scope="col" { "What" }
                        }
                    }
                    tbody {
                        @for plan in plans {
                            @if let Some(reason) = &plan.skipped {
                                tr { th scope="row" { (plan.flow) } td colspan="3" { "skipped: " (reason) } }
                            } @else if plan.operations.is_empty() {
                                tr { th scope="row" { (plan.flow) } td colspan="3" { "nothing to change: both systems agree" } }
                            }
                            @for operation in &plan.operations {
                                tr {
                                    th scope="row" { (plan.flow) }
                                    td { (match operation.system { crate::flows::System::Opentext => "OpenText", crate::flows::System::Allportal => "4ALLPORTAL" }) }
                                    td { code { (operation.action) } }
                                    td { (operation.description) }
                                }
                            }
                        }
                    }
                }
            }
            Err(FlowError::Mapping(detail)) => { p role="alert" .error { "The mapping does not fit this object: " (detail) } }
            Err(error) => { p role="alert" .error { "The plan could not be computed now: " (error) } }
        }
        div.actions {
            @if let Some(event) = &stored {
                @if states::FINISHED.contains(&event.state.as_str()) {
                    form method="post" action={"/ui/events/" (layout::segment(&event.id)) "/replay"} {
                        (layout::csrf_field(&operator))
                        button type="submit" { "Replay event " (event.id) }
                    }
                }
                a href={"/ui/events/" (layout::segment(&event.id))} { "Back to the event" }
            }
            form method="post" action={(layout::object_path(module, id)) "/resync"} {
                (layout::csrf_field(&operator))
                button type="submit" { "Resync " (key) }
            }
            a href=(layout::object_path(module, id)) { "Timeline of " (key) }
        }
    };
    Ok(layout::page("Plan", &operator, "/ui/dead-letters", main).into_response())
}
