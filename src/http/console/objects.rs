//! `GET /ui/objects/{module}/{id}`: the business-object timeline — what an operator needs when
//! someone asks "where is my launch workspace?". `GET /ui/objects` asks for the object.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use maud::html;
use serde::Deserialize;

use super::session::Operator;
use super::{ConsoleError, PageResult, layout};
use crate::http::AppState;
use crate::http::timeline::{EntryKind, object_timeline};

#[derive(Deserialize)]
pub struct Lookup {
    #[serde(default)]
    key: String,
}

/// `GET /ui/objects?key=product/4711`: the form, or a redirect to the object's timeline.
pub async fn lookup(operator: Operator, Query(lookup): Query<Lookup>) -> PageResult {
    let key = lookup.key.trim();
    if let Some((module, id)) = key.split_once('/')
        && !module.is_empty()
        && !id.is_empty()
    {
        return Ok(Redirect::to(&layout::object_path(module, id)).into_response());
    }
    let main = html! {
        h1 { "Object timeline" }
        @if !key.is_empty() {
            p role="alert" .error { "`" (key) "` is not " code { "<module>/<id>" } ", e.g. " code { "product/4711" } "." }
        }
        form method="get" action="/ui/objects" {
            div.field {
                label for="key" { "Business object (" code { "<module>/<id>" } ")" }
                input id="key" name="key" type="text" placeholder="product/4711" value=(key) required;
            }
            button type="submit" { "Show timeline" }
        }
    };
    Ok(layout::page("Object timeline", &operator, "/ui/objects", main).into_response())
}

/// `GET /ui/objects/{module}/{id}`.
pub async fn timeline(
    operator: Operator,
    State(state): State<AppState>,
    Path((module, id)): Path<(String, String)>,
) -> PageResult {
    if module.is_empty() || id.is_empty() {
        return Err(ConsoleError::bad_request("An object is `<module>/<id>`."));
    }
    let key = format!("{module}/{id}");
    let timeline = object_timeline(state.store.as_ref(), &state.flows.names(), &key).await?;
    let console = &state.console;
    let main = html! {
        h1 { "Timeline of " code { (key) } }
        section aria-labelledby="where-h" {
            h2 id="where-h" { "Where it is" }
            ul.links {
                li {
                    "4ALLPORTAL object " code { (key) }
                    @if let Some(url) = console.object_url(&module, &id) {
                        " — " a href=(url) rel="noreferrer" { "open in 4ALLPORTAL" }
                    }
                }
                @for workspace in &timeline.workspaces {
                    li {
                        "Flow " (workspace.flow) ": "
                        @match workspace.workspace_id {
                            Some(node) => {
                                "OpenText workspace " (node)
                                @if let Some(url) = console.workspace_url(node) {
                                    " — " a.workspace href=(url) rel="noreferrer" { "open workspace " (node) " in OpenText" }
                                }
                            }
                            None => { "no workspace yet" }
                        }
                        " (as of " (layout::time(workspace.updated_at)) ")"
                    }
                }
                @if timeline.workspaces.is_empty() {
                    li { "No flow has linked an OpenText workspace to this object." }
                }
            }
            div.actions {
                a.button href={"/ui/plan?" (layout::query(&[("object_key", Some(&key))]))} { "Plan: what the flows would do now" }
                form method="post" action={(layout::object_path(&module, &id)) "/resync"} {
                    (layout::csrf_field(&operator))
                    button type="submit" { "Resync this object" }
                }
                a href={"/ui/events?" (layout::query(&[("object_key", Some(&key))]))} { "Its events" }
            }
        }
        section aria-labelledby="timeline-h" {
            h2 id="timeline-h" { "What happened, oldest first" }
            @if timeline.truncated {
                p { "Only the newest 200 events, runs and writes of each kind are shown." }
            }
            @if timeline.entries.is_empty() {
                p { "Nothing is recorded for this object." }
            } @else {
                table.timeline {
                    thead {
                        tr {
                            th scope="col" { "When" }
                            th scope="col" { "What" }
                            th scope="col" { "System" }
                            th scope="col" { "Flow" }
                            th scope="col" { "Details" }
                        }
                    }
                    tbody {
                        @for entry in &timeline.entries {
                            tr class={"entry-" (kind_class(entry.kind))} {
                                td { (layout::time(entry.at)) }
                                td {
                                    span.kind { (kind_name(entry.kind)) ": " }
                                    @if let Some(event) = &entry.event_id {
                                        a href={"/ui/events/" (layout::segment(event))} { (entry.summary) }
                                    } @else {
                                        (entry.summary)
                                    }
                                }
                                td { (system_name(entry.system)) }
                                td { (entry.flow.as_deref().unwrap_or("")) }
                                td.detail { (entry.detail.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page("Object timeline", &operator, "/ui/objects", main).into_response())
}

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Event => "event",
        EntryKind::Run => "flow run",
        EntryKind::Operation => "operation",
        EntryKind::Workflow => "workflow",
        EntryKind::Document => "document",
        EntryKind::Writeback => "write-back",
    }
}

/// The entry's kind as a class name (the API's name for it).
fn kind_class(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Event => "event",
        EntryKind::Run => "run",
        EntryKind::Operation => "operation",
        EntryKind::Workflow => "workflow",
        EntryKind::Document => "document",
        EntryKind::Writeback => "writeback",
    }
}

fn system_name(system: Option<&str>) -> &'static str {
    match system {
        Some("opentext") => "OpenText",
        Some("allportal") => "4ALLPORTAL",
        _ => "",
    }
}
