//! The timeline of one business object: every event about it, every flow run for it and every
//! write the bridge made for it in OpenText and 4ALLPORTAL, in time order. Served as JSON by
//! `GET /api/v1/objects/{module}/{id}` and as a page by the console, from this one function.

use serde::Serialize;

use crate::store::{EventFilter, Page, Store, StoreError};

/// Most events, runs and writebacks read per object (the newest).
const LIMIT: i64 = 200;

#[derive(Debug, Clone, Serialize)]
pub struct ObjectTimeline {
    pub object_key: String,
    /// The OpenText workspace of the object per flow that linked one.
    pub workspaces: Vec<Workspace>,
    /// Oldest first.
    pub entries: Vec<Entry>,
    /// Whether older entries were left out (more than the newest 200 of a kind).
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Workspace {
    pub flow: String,
    pub workspace_id: Option<i64>,
    pub updated_at: i64,
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// An event about the object arrived (or a resync was enqueued).
    Event,
    /// A flow ran for the object (one attempt).
    Run,
    /// A write one run made, in `system`.
    Operation,
    /// A workflow the bridge started in OpenText, or its decision.
    Workflow,
    /// A document the bridge keeps current in OpenText, as last uploaded.
    Document,
    /// A write of the bridge to the 4ALLPORTAL object.
    Writeback,
}

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Unix milliseconds.
    pub at: i64,
    pub kind: EntryKind,
    /// `opentext` or `allportal` when the entry is about one system.
    pub system: Option<&'static str>,
    pub flow: Option<String>,
    pub event_id: Option<String>,
    /// One line a person understands.
    pub summary: String,
    /// State, outcome or error.
    pub detail: Option<String>,
}

impl Entry {
    fn new(at: i64, kind: EntryKind, summary: String) -> Self {
        Self {
            at,
            kind,
            system: None,
            flow: None,
            event_id: None,
            summary,
            detail: None,
        }
    }
}

/// Builds the timeline of `object_key` (`<module>/<id>`) from the store's records of the
/// configured `flows`.
pub async fn object_timeline(
    store: &dyn Store,
    flows: &[&str],
    object_key: &str,
) -> Result<ObjectTimeline, StoreError> {
    let (module, id) = object_key
        .split_once('/')
        .filter(|(m, id)| !m.is_empty() && !id.is_empty())
        .ok_or_else(|| StoreError::Invalid(format!("`{object_key}` is not `<module>/<id>`")))?;
    let mut entries = Vec::new();
    let filter = EventFilter {
        object_key: Some(object_key.to_string()),
        ..EventFilter::default()
    };
    let page = Page {
        after: None,
        limit: LIMIT,
    };
    let events = store.list_events(&filter, &page).await?;
    let mut truncated = events.next_cursor.is_some();
    for event in events.events {
        let mut entry = Entry::new(
            event.received_at,
            EntryKind::Event,
            format!("{} event `{}` received", event.source, event.kind),
        );
        entry.detail = Some(event.state);
        entry.event_id = Some(event.id);
        entries.push(entry);
    }
    let runs = store.object_runs(object_key, LIMIT).await?;
    truncated |= runs.len() as i64 == LIMIT;
    for run in runs {
        let at = run.attempt.finished_at.unwrap_or(run.attempt.started_at);
        for write in writes(run.attempt.summary.as_ref()) {
            let mut entry = Entry::new(at, EntryKind::Operation, write.1);
            entry.system = write.0;
            entry.flow = Some(run.flow.clone());
            entry.event_id = Some(run.event_id.clone());
            entries.push(entry);
        }
        let outcome = run.attempt.outcome.as_deref().unwrap_or("running");
        let mut entry = Entry::new(
            run.attempt.started_at,
            EntryKind::Run,
            format!(
                "flow `{}` run, attempt {}: {outcome}",
                run.flow, run.attempt.attempt
            ),
        );
        entry.detail = run.attempt.error;
        entry.flow = Some(run.flow);
        entry.event_id = Some(run.event_id);
        entries.push(entry);
    }
    let mut workspaces = Vec::new();
    for flow in flows {
        if let Some(link) = store.get_link(flow, object_key).await? {
            workspaces.push(Workspace {
                flow: link.flow,
                workspace_id: link.workspace_id,
                updated_at: link.updated_at,
            });
        }
        for document in store.list_documents(flow, object_key).await? {
            let mut entry = Entry::new(
                document.updated_at,
                EntryKind::Document,
                format!(
                    "document `{}` at version {} (node {})",
                    document.logical_name, document.version, document.node_id
                ),
            );
            entry.system = Some("opentext");
            entry.flow = Some(document.flow);
            entries.push(entry);
        }
        let workflows = store.workflows_of(flow, object_key).await?;
        for workflow in workflows.into_iter().filter(|w| w.object_key == object_key) {
            let mut started = Entry::new(
                workflow.started_at,
                EntryKind::Workflow,
                format!("workflow {} started", workflow.process_id),
            );
            started.system = Some("opentext");
            started.flow = Some(workflow.flow.clone());
            if let Some(decision) = &workflow.decision {
                let mut decided = started.clone();
                decided.at = workflow.updated_at;
                decided.summary = format!("workflow {} decided", workflow.process_id);
                decided.detail = Some(decision.to_string());
                entries.push(decided);
            }
            entries.push(started);
        }
    }
    let writebacks = store.recent_writebacks(module, id, LIMIT).await?;
    truncated |= writebacks.len() as i64 == LIMIT;
    for writeback in writebacks {
        let mut entry = Entry::new(
            writeback.at,
            EntryKind::Writeback,
            format!("fields written: {}", writeback.fields.join(", ")),
        );
        entry.system = Some("allportal");
        entries.push(entry);
    }
    // Stable: entries of one instant keep the order they were added in.
    entries.sort_by_key(|e| e.at);
    Ok(ObjectTimeline {
        object_key: object_key.to_string(),
        workspaces,
        entries,
        truncated,
    })
}

/// The writes a run's summary lists: each with its system (summaries written before the
/// systems were recorded list descriptions only).
fn writes(summary: Option<&serde_json::Value>) -> Vec<(Option<&'static str>, String)> {
    let Some(summary) = summary else {
        return Vec::new();
    };
    if let Some(writes) = summary.get("writes").and_then(|w| w.as_array()) {
        return writes
            .iter()
            .map(|w| {
                let system = match w.get("system").and_then(|s| s.as_str()) {
                    Some("opentext") => Some("opentext"),
                    Some("allportal") => Some("allportal"),
                    _ => None,
                };
                let description = w.get("description").and_then(|d| d.as_str()).unwrap_or("");
                (system, description.to_string())
            })
            .collect();
    }
    summary
        .get("changes")
        .and_then(|c| c.as_array())
        .map(|c| {
            c.iter()
                .filter_map(|d| d.as_str())
                .map(|d| (None, d.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_carry_their_system() {
        let summary = json!({"operations": 1, "changes": ["create workspace"],
            "writes": [{"system": "opentext", "action": "create_workspace", "description": "create workspace"}]});
        assert_eq!(
            writes(Some(&summary)),
            vec![(Some("opentext"), "create workspace".to_string())]
        );
        let older = json!({"operations": 1, "changes": ["create workspace"]});
        assert_eq!(
            writes(Some(&older)),
            vec![(None, "create workspace".to_string())]
        );
        assert!(writes(None).is_empty());
    }
}
