//! `change`: change-review workspaces and the decision write-back.

use super::engine::MappedFlow;
use super::error::FlowResult;
use super::run::Run;
use crate::clients::allportal::ModuleObject;
use crate::store::{LinkRecord, StoredEvent};

pub(crate) async fn forward(
    _flow: &MappedFlow,
    _run: &mut Run<'_>,
    _object: &ModuleObject,
    _link: LinkRecord,
) -> FlowResult<Option<String>> {
    Ok(Some(
        "the change flow is not available in this build".into(),
    ))
}

pub(crate) async fn on_decision(
    _flow: &MappedFlow,
    _run: &mut Run<'_>,
    _event: &StoredEvent,
) -> FlowResult<Option<String>> {
    Ok(Some(
        "the change flow is not available in this build".into(),
    ))
}
