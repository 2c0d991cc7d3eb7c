//! Where an OpenText callback goes. A callback deciding a workflow the bridge started goes to
//! the flow that started it, whatever business object it names; any other callback goes to the
//! flows whose routing rule takes it (kind and business object type). A callback no flow can
//! handle is stored as a dead letter with the reason, never dropped in silence.

use crate::store::{Store, StoreError, StoredEvent};
use crate::worker::Router;

use super::payload::ParsedEvent;

/// The routing decision for one callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// The flows that get a job for it (never empty).
    Flows(Vec<String>),
    /// Why no flow can handle it: stored `dead` with this reason.
    DeadLetter(String),
}

/// Decides where `event` goes; `view` is the event as the flows' routing rules read it.
pub async fn route(
    store: &dyn Store,
    router: &Router,
    event: &ParsedEvent,
    view: &StoredEvent,
) -> Result<Destination, StoreError> {
    if let Some(pid) = &event.process_id {
        return Ok(match store.get_workflow(pid).await? {
            Some(workflow) if router.get(&workflow.flow).is_some() => {
                Destination::Flows(vec![workflow.flow])
            }
            Some(workflow) => Destination::DeadLetter(format!(
                "workflow {pid} was started by the `{}` flow, which is not enabled",
                workflow.flow
            )),
            None => Destination::DeadLetter(format!(
                "workflow {pid} was not started by the bridge: no workflow with this process id \
                 is recorded"
            )),
        });
    }
    let flows = router.flows_for(view);
    if flows.is_empty() {
        return Ok(Destination::DeadLetter(format!(
            "no enabled flow takes a `{}` callback for business object type `{}`",
            event.kind,
            event.module.as_deref().unwrap_or("(none)")
        )));
    }
    Ok(Destination::Flows(flows))
}
