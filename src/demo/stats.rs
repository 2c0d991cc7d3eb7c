//! Attempts and working time per flow, from the store's event details. Informational only: the
//! verdict comes from the simulators' state.

use std::collections::BTreeMap;

use crate::store::{EventFilter, Page, Store};

#[derive(Debug, Default, Clone, Copy)]
pub struct FlowWork {
    /// Attempts of jobs that had something to do (jobs the flow ignored are not counted).
    pub attempts: i64,
    /// Total time of those attempts, in milliseconds.
    pub millis: i64,
}

/// Per flow name.
pub async fn collect(store: &dyn Store) -> anyhow::Result<BTreeMap<String, FlowWork>> {
    let page = Page {
        after: None,
        limit: 1000,
    };
    let events = store
        .list_events(&EventFilter::default(), &page)
        .await?
        .events;
    let mut work: BTreeMap<String, FlowWork> = BTreeMap::new();
    for event in events {
        let Some(detail) = store.event_detail(&event.id).await? else {
            continue;
        };
        for job in detail.jobs.iter().filter(|j| j.state != "ignored") {
            let entry = work.entry(job.flow.clone()).or_default();
            entry.attempts += job.attempts;
            entry.millis += job
                .history
                .iter()
                .filter_map(|a| a.finished_at.map(|end| end - a.started_at))
                .sum::<i64>();
        }
    }
    Ok(work)
}
