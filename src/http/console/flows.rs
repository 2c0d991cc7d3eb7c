//! `GET /ui/flows`: each configured flow's mapping, its recent events and its failure rate.

use axum::extract::State;
use axum::response::IntoResponse;
use maud::html;

use super::events::event_table;
use super::session::Operator;
use super::{PageResult, layout, overview};
use crate::http::AppState;
use crate::store::{EventFilter, Page};

/// Recent events shown per flow.
const RECENT: i64 = 5;

pub async fn page(operator: Operator, State(state): State<AppState>) -> PageResult {
    let stats = state.store.flow_stats().await?;
    let mut sections = Vec::new();
    for (name, mapping) in state.flows.mappings() {
        let filter = EventFilter {
            flow: Some(name.to_string()),
            ..EventFilter::default()
        };
        let page = Page {
            after: None,
            limit: RECENT,
        };
        let recent = state.store.list_events(&filter, &page).await?;
        let counts = stats.iter().find(|s| s.flow == name);
        let count = |s: &str| counts.and_then(|c| c.states.get(s)).copied().unwrap_or(0);
        let finished = count("done") + count("dead") + count("ignored");
        let rendered = toml::to_string_pretty(mapping)
            .unwrap_or_else(|_| serde_json::to_string_pretty(mapping).unwrap_or_default());
        sections.push(html! {
            section.flow aria-labelledby={"flow-" (name)} {
                h2 id={"flow-" (name)} { (name) }
                p {
                    @if finished == 0 {
                        "No finished jobs yet."
                    } @else {
                        "Failure rate: " strong { (format!("{:.1} %", count("dead") as f64 * 100.0 / finished as f64)) }
                        " (" (count("dead")) " dead of " (finished) " finished jobs)."
                    }
                }
                h3 { "Recent events" }
                @if recent.events.is_empty() { p { "None yet." } } @else { (event_table(&recent.events)) }
                p { a href={"/ui/events?" (layout::query(&[("flow", Some(name))]))} { "All events of " (name) } }
                details {
                    summary { "Mapping as configured" }
                    pre tabindex="0" { (rendered) }
                }
            }
        });
    }
    let main = html! {
        h1 { "Flows" }
        (overview::flow_table(&state, &stats))
        @for section in sections { (section) }
    };
    Ok(layout::page("Flows", &operator, "/ui/flows", main).into_response())
}
