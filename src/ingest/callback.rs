//! Where an OpenText callback goes. A callback deciding a workflow the bridge started goes to
//! the flow that started it, whatever business object it names; any other callback goes to the
//! flows whose routing rule takes it (kind and business object type). A callback no flow can
//! handle is stored as a dead letter with the reason, never dropped in silence. Before that,
//! [`read`] checks that a callback has what its kind needs, through the configured shape.

use serde_json::Value;

use crate::clients::opentext::callback::{
    CallbackFields, CallbackShape, KIND_PARTNER_DOCUMENT_APPROVED, KIND_WORKFLOW_DECISION,
};
use crate::store::{Store, StoreError, StoredEvent};
use crate::worker::Router;

use super::payload::{ParsedEvent, PayloadError, describe_value};

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

/// Reads callback `index` for ingest: the kind must be known; a decision needs a process
/// id and a decision; an approved document its node id; without a process id the business
/// object is needed to route it. Errors name the configured pointer.
pub fn read(
    shape: &CallbackShape,
    index: usize,
    event: &Value,
) -> Result<CallbackFields, PayloadError> {
    if !event.is_object() {
        return Err(PayloadError::NotAnObject { index });
    }
    let missing = |key: &str, pointer: &str| PayloadError::MissingField {
        index,
        field: format!("{pointer} (callbacks.{key})"),
    };
    let fields = shape.fields(event);
    let sent_kind = shape
        .text(event, &shape.kind)
        .ok_or_else(|| missing("kind", &shape.kind))?;
    let Some(kind) = fields.kind else {
        return Err(PayloadError::UnknownKind {
            index,
            kind: describe_value(&Value::String(sent_kind)),
        });
    };
    if kind == KIND_WORKFLOW_DECISION {
        if fields.process_id.is_none() {
            return Err(missing("process_id", &shape.process_id));
        }
        if fields.decision.is_none() {
            return Err(match shape.text(event, &shape.decision) {
                Some(sent) => PayloadError::InvalidField {
                    index,
                    field: format!("{} (callbacks.decision)", shape.decision),
                    problem: format!(
                        "`{}` is neither approved nor rejected (map it in \
                         [callbacks.decisions])",
                        describe_value(&Value::String(sent))
                    ),
                },
                None => missing("decision", &shape.decision),
            });
        }
    }
    if kind == KIND_PARTNER_DOCUMENT_APPROVED && fields.document_node_id.is_none() {
        return Err(missing("document_node_id", &shape.document_node_id));
    }
    if fields.process_id.is_none() {
        if fields.bo_type.is_none() {
            return Err(missing("bo_type", &shape.bo_type));
        }
        if fields.bo_id.is_none() {
            return Err(missing("bo_id", &shape.bo_id));
        }
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn script_shape() -> CallbackShape {
        CallbackShape {
            kind: "/type".into(),
            process_id: "/process_id".into(),
            decision: "/outcome".into(),
            approver: "/decided_by".into(),
            comment: "/note".into(),
            kinds: BTreeMap::from([(
                "workflow.completed".to_string(),
                KIND_WORKFLOW_DECISION.to_string(),
            )]),
            decisions: BTreeMap::from([("Approve".to_string(), "approved".to_string())]),
            ..CallbackShape::default()
        }
    }

    #[test]
    fn another_shape_is_read_through_its_pointers_and_maps() {
        let shape = script_shape();
        shape.validate().expect("valid");
        let fields = read(
            &shape,
            0,
            &json!({"type": "workflow.completed", "process_id": 9001,
                        "outcome": "Approve", "decided_by": 1001, "note": "ok"}),
        )
        .expect("reads");
        assert_eq!(fields.kind, Some(KIND_WORKFLOW_DECISION));
        assert_eq!(fields.process_id.as_deref(), Some("9001"));
        assert_eq!(fields.decision, Some("approved"));
        assert_eq!(fields.approver.as_deref(), Some("1001"));
        assert_eq!(fields.comment.as_deref(), Some("ok"));
        assert_eq!(fields.bo_type, None);
    }

    #[test]
    fn errors_name_the_pointer_and_its_key() {
        let shape = script_shape();
        let err = |body: Value| read(&shape, 0, &body).unwrap_err().to_string();
        assert!(err(json!({"process_id": 1})).contains("missing `/type (callbacks.kind)`"));
        assert!(err(json!({"type": "x"})).contains("unknown event kind `x`"));
        assert!(
            err(json!({"type": "workflow.completed", "outcome": "Approve"}))
                .contains("/process_id (callbacks.process_id)")
        );
        assert!(
            err(json!({"type": "workflow.completed", "process_id": 1, "outcome": "maybe"}))
                .contains("`maybe` is neither approved nor rejected")
        );
        assert!(
            err(json!({"type": "partner_document.approved", "document": {"node_id": 7}}))
                .contains("/business_object/bo_type (callbacks.bo_type)")
        );
    }
}
