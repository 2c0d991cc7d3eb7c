//! `GET /ui/events` (filtered, keyset-paged list) and `GET /ui/events/{id}` (one event with
//! its payload, kept headers, attempts and what each run changed).

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use maud::{Markup, html};
use serde::Deserialize;

use super::session::Operator;
use super::{ConsoleError, PageResult, layout};
use crate::http::AppState;
use crate::http::admin::FilterParams;
use crate::store::{EventFilter, JobRecord, Page, StoredEvent, state as states};

const PAGE: i64 = 50;

/// The filter form's fields as the browser sends them (empty fields are absent filters).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Filters {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub flow: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub object_key: String,
    /// `datetime-local` (taken as UTC) or RFC 3339.
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub after: String,
}

fn given(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_string())
}

/// A `datetime-local` value has no zone: the form says the times are UTC.
fn as_rfc3339(value: &str) -> Option<String> {
    let value = given(value)?;
    let has_zone = value.ends_with(['Z', 'z'])
        || value
            .get(10..)
            .is_some_and(|time| time.contains(['+', '-']));
    Some(match (has_zone, value.len()) {
        (true, _) => value,
        (false, 16) => format!("{value}:00Z"),
        (false, _) => format!("{value}Z"),
    })
}

impl Filters {
    /// The store's filter, checked exactly as `GET /api/v1/events` checks its parameters.
    pub fn to_filter(&self) -> Result<EventFilter, ConsoleError> {
        FilterParams {
            state: given(&self.state),
            flow: given(&self.flow),
            source: given(&self.source),
            kind: given(&self.kind),
            object_key: given(&self.object_key),
            from: as_rfc3339(&self.from),
            to: as_rfc3339(&self.to),
        }
        .into_filter()
        .map_err(|problem| ConsoleError::bad_request(problem.detail))
    }

    /// The query string of these filters (without the page cursor).
    pub fn query(&self) -> String {
        layout::query(&[
            ("state", Some(&self.state)),
            ("source", Some(&self.source)),
            ("flow", Some(&self.flow)),
            ("kind", Some(&self.kind)),
            ("object_key", Some(&self.object_key)),
            ("from", Some(&self.from)),
            ("to", Some(&self.to)),
        ])
    }
}

/// The filter form; `action` is the page it submits to, `states` the states offered.
pub fn filter_form(state: &AppState, filters: &Filters, action: &str, states: &[&str]) -> Markup {
    let select = |name: &str, label: &str, current: &str, options: &[&str]| {
        html! {
            div.field {
                label for={"f-" (name)} { (label) }
                select id={"f-" (name)} name=(name) {
                    option value="" selected[current.is_empty()] { "any" }
                    @for option in options {
                        option value=(option) selected[current == *option] { (option) }
                    }
                }
            }
        }
    };
    let text = |name: &str, label: &str, current: &str, kind: &str, hint: &str| {
        html! {
            div.field {
                label for={"f-" (name)} { (label) }
                input id={"f-" (name)} name=(name) type=(kind) value=(current) placeholder=(hint);
            }
        }
    };
    html! {
        form.filters method="get" action=(action) role="search" aria-label="Filter events" {
            (select("state", "State", &filters.state, states))
            (select("source", "Source", &filters.source, &["allportal", "opentext"]))
            (select("flow", "Flow", &filters.flow, &state.flows.names()))
            (text("object_key", "Business object", &filters.object_key, "text", "product/4711"))
            (text("kind", "Kind", &filters.kind, "text", "moduleobject_modify"))
            (text("from", "Received from (UTC)", &filters.from, "datetime-local", ""))
            (text("to", "Received before (UTC)", &filters.to, "datetime-local", ""))
            div.field { button type="submit" { "Filter" } }
        }
    }
}

/// The events of one page as a table.
pub fn event_table(events: &[StoredEvent]) -> Markup {
    html! {
        table.events {
            thead {
                tr {
                    th scope="col" { "Received" }
                    th scope="col" { "Source" }
                    th scope="col" { "Kind" }
                    th scope="col" { "Object" }
                    th scope="col" { "State" }
                    th scope="col" .num { "Attempts" }
                    th scope="col" { "Last error" }
                }
            }
            tbody {
                @for event in events {
                    tr {
                        td { a href={"/ui/events/" (layout::segment(&event.id))} { (layout::time(event.received_at)) } }
                        td { (event.source) }
                        td { (event.kind) }
                        td { (layout::object(event.object_key.as_deref())) }
                        td { (layout::state(&event.state)) }
                        td.num { (event.attempts) }
                        td.error { (event.last_error.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    }
}

/// `GET /ui/events`.
pub async fn list(
    operator: Operator,
    State(state): State<AppState>,
    Query(filters): Query<Filters>,
) -> PageResult {
    let filter = filters.to_filter()?;
    let page = Page {
        after: given(&filters.after),
        limit: PAGE,
    };
    let found = state.store.list_events(&filter, &page).await?;
    let all_states = [
        states::PENDING,
        states::ROUTED,
        states::DONE,
        states::DEAD,
        states::IGNORED,
    ];
    let main = html! {
        h1 { "Events" }
        (filter_form(&state, &filters, "/ui/events", &all_states))
        @if found.events.is_empty() {
            p { "No event matches." }
        } @else {
            (event_table(&found.events))
        }
        nav.pager aria-label="Pages" {
            @if page.after.is_some() {
                a href={"/ui/events?" (filters.query())} { "First page" }
            }
            @if let Some(cursor) = &found.next_cursor {
                @let query = filters.query();
                a rel="next" href={"/ui/events?" (query) @if !query.is_empty() { "&" } "after=" (layout::segment(cursor))} { "Next page (older)" }
            }
        }
    };
    Ok(layout::page("Events", &operator, "/ui/events", main).into_response())
}

/// `GET /ui/events/{id}`.
pub async fn detail(
    operator: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> PageResult {
    let Some(detail) = state.store.event_detail(&id).await? else {
        return Err(ConsoleError::not_found(format!(
            "There is no event `{id}`."
        )));
    };
    let event = &detail.event;
    let finished = states::FINISHED.contains(&event.state.as_str());
    let main = html! {
        h1 { "Event " code { (event.id) } }
        dl.facts {
            dt { "State" } dd { (layout::state(&event.state)) }
            dt { "Source" } dd { (event.source) }
            dt { "Kind" } dd { (event.kind) }
            dt { "Business object" } dd { (layout::object(event.object_key.as_deref())) }
            dt { "Delivery id" } dd { code { (event.source_event_id) } }
            dt { "Received" } dd { (layout::time(event.received_at)) }
            @if let Some(error) = &event.last_error { dt { "Last error" } dd.error { (error) } }
        }
        section aria-labelledby="actions-h" {
            h2 id="actions-h" { "Actions" }
            div.actions {
                @if let Some(key) = &event.object_key {
                    a.button href={"/ui/plan?" (layout::query(&[("object_key", Some(key)), ("event", Some(&event.id)), ("source", Some(&event.source))]))} {
                        "Plan: what the flows would do now"
                    }
                }
                @if finished {
                    form method="post" action={"/ui/events/" (layout::segment(&event.id)) "/replay"} {
                        (layout::csrf_field(&operator))
                        button type="submit" { "Replay this event" }
                    }
                } @else {
                    p { "This event is not finished yet; it can be replayed once it is done, dead or ignored." }
                }
            }
        }
        section aria-labelledby="jobs-h" {
            h2 id="jobs-h" { "Flows and attempts" }
            @if detail.jobs.is_empty() { p { "No flow has taken this event (yet)." } }
            @for job in &detail.jobs { (job_section(job)) }
        }
        @if !detail.notes.is_empty() {
            section aria-labelledby="notes-h" {
                h2 id="notes-h" { "Notes" }
                ul { @for note in &detail.notes { li { (layout::time(note.at)) ": " (note.note) } } }
            }
        }
        section aria-labelledby="payload-h" {
            h2 id="payload-h" { "Payload" }
            pre.json tabindex="0" { (layout::json(&event.payload)) }
        }
        section aria-labelledby="headers-h" {
            h2 id="headers-h" { "Headers kept" }
            (headers(&event.headers))
        }
    };
    Ok(layout::page("Event", &operator, "/ui/events", main).into_response())
}

fn job_section(job: &JobRecord) -> Markup {
    html! {
        section.job {
            h3 { "Flow " (job.flow) ": " (layout::state(&job.state)) }
            @if let Some(error) = &job.last_error { p.error { (error) } }
            table {
                thead {
                    tr {
                        th scope="col" .num { "#" }
                        th scope="col" { "Started" }
                        th scope="col" { "Finished" }
                        th scope="col" { "Outcome" }
                        th scope="col" { "Error" }
                        th scope="col" { "What it changed" }
                    }
                }
                tbody {
                    @for attempt in &job.history {
                        tr {
                            td.num { (attempt.attempt) }
                            td { (layout::time(attempt.started_at)) }
                            td { @if let Some(at) = attempt.finished_at { (layout::time(at)) } @else { "running" } }
                            td { (attempt.outcome.as_deref().unwrap_or("running")) }
                            td.error { (attempt.error.as_deref().unwrap_or("")) }
                            td { (changes(attempt.summary.as_ref())) }
                        }
                    }
                }
            }
        }
    }
}

/// A run's summary: its list of changes, or nothing changed.
pub fn changes(summary: Option<&serde_json::Value>) -> Markup {
    let list: Vec<&str> = summary
        .and_then(|s| s.get("changes"))
        .and_then(|c| c.as_array())
        .map(|c| c.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    html! {
        @if list.is_empty() {
            @if summary.is_some() { "nothing to change" }
        } @else {
            ul.changes { @for change in list { li { (change) } } }
        }
    }
}

fn headers(headers: &serde_json::Value) -> Markup {
    match headers.as_object() {
        Some(map) if !map.is_empty() => html! {
            table {
                thead { tr { th scope="col" { "Header" } th scope="col" { "Value" } } }
                tbody {
                    @for (name, value) in map {
                        tr { td { code { (name) } } td { code { (value.as_str().map_or_else(|| value.to_string(), str::to_string)) } } }
                    }
                }
            }
        },
        _ => html! { p { "None." } },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_times_are_taken_as_utc() {
        assert_eq!(
            as_rfc3339("2026-11-28T10:00").as_deref(),
            Some("2026-11-28T10:00:00Z")
        );
        assert_eq!(
            as_rfc3339("2026-11-28T10:00:05").as_deref(),
            Some("2026-11-28T10:00:05Z")
        );
        assert_eq!(
            as_rfc3339("2026-11-28T10:00:00+01:00").as_deref(),
            Some("2026-11-28T10:00:00+01:00")
        );
        assert_eq!(as_rfc3339(" "), None);
    }

    #[test]
    fn a_bad_filter_is_refused_with_the_api_message() {
        let filters = Filters {
            state: "bogus".into(),
            ..Filters::default()
        };
        let error = filters.to_filter().unwrap_err();
        assert!(error.message.contains("unknown state `bogus`"), "{error:?}");
    }
}
