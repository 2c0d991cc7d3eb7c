//! `GET /ui/`: what an operator looks at first — the numbers of `GET /api/v1/status`, a chart
//! of the last hour, and each flow's health.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::IntoResponse;
use maud::{Markup, html};

use super::session::Operator;
use super::{PageResult, chart, layout};
use crate::clients::CircuitState;
use crate::http::AppState;
use crate::store::{FlowStats, now_millis};

pub async fn page(operator: Operator, State(state): State<AppState>) -> PageResult {
    let now = now_millis();
    let backlog = state.store.backlog(now).await?;
    let stats = state.store.flow_stats().await?;
    let per_minute = state.store.events_per_minute(now - 3_600_000).await?;
    let mut by_state: BTreeMap<&str, i64> = BTreeMap::new();
    for flow in &stats {
        for (job_state, count) in &flow.states {
            *by_state.entry(job_state.as_str()).or_default() += count;
        }
    }
    let main = html! {
        h1 { "Overview" }
        div.cards data-refresh="10" {
            section aria-labelledby="backlog-h" {
                h2 id="backlog-h" { "Backlog" }
                dl.figures {
                    dt { "Unfinished events" } dd { (backlog.events) }
                    dt { "Jobs waiting or running" } dd { (backlog.jobs) }
                    dt { "Oldest unfinished event" }
                    dd { @if backlog.events == 0 { "none" } @else { (layout::duration(backlog.oldest_pending_age_ms)) " old" } }
                    dt { "Dead letters" }
                    dd { a href="/ui/dead-letters" { (backlog.dead_letters) } }
                }
                h3 { "Jobs by state" }
                @if by_state.is_empty() {
                    p { "No jobs yet." }
                } @else {
                    table {
                        thead { tr { th scope="col" { "State" } th scope="col" .num { "Jobs" } } }
                        tbody {
                            @for (job_state, count) in &by_state {
                                tr {
                                    td { a href={"/ui/events?" (layout::query(&[("state", Some(job_state))]))} { (layout::state(job_state)) } }
                                    td.num { (count) }
                                }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="upstreams-h" {
                h2 id="upstreams-h" { "Upstreams and worker" }
                table {
                    thead { tr { th scope="col" { "Upstream" } th scope="col" { "Circuit" } } }
                    tbody {
                        @for (name, circuit) in state.upstreams.circuit_states() {
                            tr { td { (name) } td { (circuit_text(circuit)) } }
                        }
                    }
                }
                (worker(&state, now))
            }
        }
        section aria-labelledby="chart-h" {
            h2 id="chart-h" { "Events per minute, last hour" }
            (chart::events_per_minute(&per_minute, now))
        }
        section aria-labelledby="flows-h" {
            h2 id="flows-h" { "Flows" }
            (flow_table(&state, &stats))
        }
    };
    Ok(layout::page("Overview", &operator, "/ui/", main).into_response())
}

fn circuit_text(circuit: CircuitState) -> Markup {
    match circuit {
        CircuitState::Closed => html! { span.ok { "closed (answering)" } },
        CircuitState::HalfOpen => html! { strong.warn { "half open (probing)" } },
        CircuitState::Open => html! { strong.bad { "open (calls paused)" } },
    }
}

fn worker(state: &AppState, now: i64) -> Markup {
    match &state.worker {
        None => html! { p { "This process runs no worker (" code { "serve --role api" } ")." } },
        Some(probe) if !probe.is_enabled() => html! { p { "Worker: disabled." } },
        Some(probe) => {
            let age = now.saturating_sub(probe.last_heartbeat());
            html! {
                p {
                    "Worker: "
                    @if probe.is_alive(now) { span.ok { "alive" } } @else { strong.bad { "not responding" } }
                    ", last heartbeat " (layout::duration(age)) " ago."
                }
            }
        }
    }
}

/// Each configured flow with its job counts and whether it needs attention.
pub fn flow_table(state: &AppState, stats: &[FlowStats]) -> Markup {
    let names = state.flows.names();
    html! {
        @if names.is_empty() {
            p { "No flow is configured (" code { "[flows.*]" } ")." }
        } @else {
            table {
                thead {
                    tr {
                        th scope="col" { "Flow" }
                        th scope="col" { "Health" }
                        th scope="col" .num { "Done" }
                        th scope="col" .num { "Waiting" }
                        th scope="col" .num { "Dead" }
                        th scope="col" { "Last error" }
                    }
                }
                tbody {
                    @for name in &names {
                        @let flow = stats.iter().find(|s| s.flow == *name);
                        @let count = |s: &str| flow.and_then(|f| f.states.get(s)).copied().unwrap_or(0);
                        tr {
                            th scope="row" { a href={"/ui/events?" (layout::query(&[("flow", Some(name))]))} { (name) } }
                            td {
                                @if count("dead") > 0 {
                                    strong.bad { "✗ needs attention" }
                                } @else if flow.is_none() {
                                    "no runs yet"
                                } @else {
                                    span.ok { "✓ healthy" }
                                }
                            }
                            td.num { (count("done")) }
                            td.num { (count("pending") + count("running")) }
                            td.num {
                                @if count("dead") > 0 {
                                    a href={"/ui/dead-letters?" (layout::query(&[("flow", Some(name))]))} { (count("dead")) }
                                } @else { "0" }
                            }
                            td {
                                @if let Some(error) = flow.and_then(|f| f.last_error.as_deref()) {
                                    (error)
                                    @if let Some(at) = flow.and_then(|f| f.last_error_at) { " (" (layout::time(at)) ")" }
                                } @else { "—" }
                            }
                        }
                    }
                }
            }
        }
    }
}
