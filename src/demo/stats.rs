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

/// What became of the change events the bridge's own write-backs caused in 4ALLPORTAL.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Echoes {
    /// Runs skipped because the object showed exactly what the bridge had written.
    pub recognised: usize,
    /// Writes made by runs of events that arrived after a write-back to their object, within
    /// the same scenario step (where the scenario itself changed nothing after the write-back).
    pub caused_writes: i64,
}

/// Counts the echoes of the bridge's write-backs and the writes they caused; `steps` are the
/// scenario's step windows (unix ms).
pub async fn echoes(store: &dyn Store, steps: &[(i64, i64)]) -> anyhow::Result<Echoes> {
    let page = Page {
        after: None,
        limit: 1000,
    };
    let events = store
        .list_events(&EventFilter::default(), &page)
        .await?
        .events;
    let step_of = |at: i64| steps.iter().position(|(from, to)| *from <= at && at <= *to);
    let mut echoes = Echoes::default();
    for event in events.iter().filter(|e| e.source == "allportal") {
        let (Some(module), Some(id)) = (&event.module, &event.object_id) else {
            continue;
        };
        let after_writeback = store
            .recent_writebacks(module, id, 50)
            .await?
            .iter()
            .any(|w| w.at <= event.received_at && step_of(w.at) == step_of(event.received_at));
        if !after_writeback {
            continue;
        }
        let Some(detail) = store.event_detail(&event.id).await? else {
            continue;
        };
        for job in &detail.jobs {
            if job.last_error.as_deref() == Some(crate::flows::echo::ECHO_REASON) {
                echoes.recognised += 1;
            }
            echoes.caused_writes += job
                .history
                .iter()
                .filter_map(|a| a.summary.as_ref()?.get("operations")?.as_i64())
                .sum::<i64>();
        }
    }
    Ok(echoes)
}
