//! `partner`: partner workspaces and the import of approved partner documents.

use serde_json::{Map, Value};

use super::engine::{MappedFlow, Target};
use super::error::FlowResult;
use super::run::Run;
use crate::store::StoredEvent;

pub(crate) fn remember_items(_target: &Target<'_>, _state: &mut Map<String, Value>) {}

pub(crate) async fn on_document(
    _flow: &MappedFlow,
    _run: &mut Run<'_>,
    _event: &StoredEvent,
) -> FlowResult<Option<String>> {
    Ok(Some(
        "the partner flow is not available in this build".into(),
    ))
}
