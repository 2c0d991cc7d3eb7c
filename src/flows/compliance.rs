//! `compliance`: after the engine placed each claim, label, image and brochure (each tagged with
//! the product id, `mod_time` and master-data hash it must match), one review workflow runs at a
//! time. A product-data change while a review runs marks that review outdated (workspace
//! attribute); once it is decided, the next run starts a review of the current version.

use std::collections::BTreeMap;

use serde_json::Value;

use super::engine::{MappedFlow, Placed, Target, pattern};
use super::error::{FlowError, FlowResult};
use super::fields::Scope;
use super::run::Run;
use super::state::{LinkState, Review};
use crate::clients::opentext::NodeId;
use crate::store::{StoredEvent, now_millis, workflow_state};

pub(crate) async fn after_content(
    flow: &MappedFlow,
    run: &mut Run<'_>,
    scope: &Scope<'_>,
    target: &Target<'_>,
    ws: NodeId,
    placed: &Placed,
    state: &mut LinkState,
) -> FlowResult<()> {
    let Some(wf) = &flow.mapping.workflow else {
        return Ok(());
    };
    let data_hash = scope.computed.get("data_hash").cloned().unwrap_or_default();
    let version = scope
        .object
        .and_then(|o| o.mod_time.clone())
        .unwrap_or_default();
    let review = state.review.clone().unwrap_or_default();
    if state.review.is_some() && review.data_hash == data_hash {
        return Ok(());
    }
    if let Some(pid) = review.process_id.as_deref() {
        let running = run
            .env
            .store
            .get_workflow(pid)
            .await?
            .is_none_or(|w| w.state == workflow_state::RUNNING);
        if running {
            if !review.outdated {
                set_status(flow, run, ws, |r| r.outdated_value.clone()).await?;
                state.review = Some(Review {
                    outdated: true,
                    outdated_by: Some(version),
                    ..review
                });
            }
            return Ok(());
        }
    }
    let title = pattern(&wf.title)?
        .render(scope)
        .map_err(FlowError::Mapping)?;
    let mut attributes = BTreeMap::new();
    for (name, source) in &wf.attributes {
        attributes.insert(
            name.clone(),
            pattern(source)?.render(scope).unwrap_or_default(),
        );
    }
    let documents: Vec<NodeId> = placed.documents.iter().map(|(_, id)| *id).collect();
    let comment = wf.comment.clone().unwrap_or_default();
    let pid = run
        .start_workflow(
            wf.map_id,
            &documents,
            &title,
            &attributes,
            &comment,
            &target.key,
        )
        .await?;
    set_status(flow, run, ws, |r| r.in_review_value.clone()).await?;
    state.review = Some(Review {
        process_id: pid,
        data_hash,
        version,
        ..Review::default()
    });
    Ok(())
}

async fn set_status(
    flow: &MappedFlow,
    run: &mut Run<'_>,
    ws: NodeId,
    value: impl Fn(&super::mapping::ReviewConfig) -> String,
) -> FlowResult<()> {
    let Some(review) = &flow.mapping.review else {
        return Ok(());
    };
    let values = BTreeMap::from([(
        review.status_attribute.clone(),
        Value::String(value(review)),
    )]);
    run.ensure_categories(ws, "the workspace", &values).await
}

/// A review decision: recorded, and shown on the workspace when it is the current review.
pub(crate) async fn on_decision(
    flow: &MappedFlow,
    run: &mut Run<'_>,
    event: &StoredEvent,
) -> FlowResult<Option<String>> {
    let (decision, workflow) = match super::change::decided_workflow(flow, run, event).await? {
        Ok(found) => found,
        Err(skip) => return Ok(Some(skip)),
    };
    let store = run.env.store.clone();
    let link = flow.link(&workflow.object_key).await?;
    let review = LinkState::of(&link).review.unwrap_or_default();
    let current = review.process_id.as_deref() == Some(decision.process_id.as_str());
    let outdated = review.outdated;
    if let (true, false, Some(ws)) = (current, outdated, link.workspace_id) {
        let value = if decision.approved {
            "approved"
        } else {
            "rejected"
        };
        set_status(flow, run, ws, |_| value.to_string()).await?;
    }
    if run.applying() {
        store
            .decide_workflow(&decision.process_id, &decision.raw, now_millis())
            .await?;
    }
    Ok(None)
}

/// The compliance flow: a review workflow after the content, and the decision's return path.
pub(crate) struct Compliance;

#[async_trait::async_trait]
impl super::steps::Steps for Compliance {
    fn callback_kinds(&self) -> &'static [&'static str] {
        &[super::engine::DECISION_KIND]
    }

    async fn on_callback(
        &self,
        flow: &MappedFlow,
        run: &mut Run<'_>,
        event: &StoredEvent,
    ) -> FlowResult<Option<String>> {
        on_decision(flow, run, event).await
    }

    async fn after_content(
        &self,
        flow: &MappedFlow,
        run: &mut Run<'_>,
        scope: &Scope<'_>,
        target: &Target<'_>,
        ws: NodeId,
        placed: &Placed,
        state: &mut LinkState,
    ) -> FlowResult<()> {
        after_content(flow, run, scope, target, ws, placed, state).await
    }
}
