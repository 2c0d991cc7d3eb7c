//! `compliance`: review workspaces tied to the product-data version.

use serde_json::{Map, Value};

use super::engine::{MappedFlow, Placed, Target};
use super::error::FlowResult;
use super::fields::Scope;
use super::run::Run;
use crate::clients::opentext::NodeId;
use crate::store::StoredEvent;

pub(crate) async fn after_content(
    _flow: &MappedFlow,
    _run: &mut Run<'_>,
    _scope: &Scope<'_>,
    _target: &Target<'_>,
    _ws: NodeId,
    _placed: &Placed,
    _state: &mut Map<String, Value>,
) -> FlowResult<()> {
    Ok(())
}

pub(crate) async fn on_decision(
    _flow: &MappedFlow,
    _run: &mut Run<'_>,
    _event: &StoredEvent,
) -> FlowResult<Option<String>> {
    Ok(Some(
        "the compliance flow is not available in this build".into(),
    ))
}
