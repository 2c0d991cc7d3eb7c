//! `archival`: end-of-life archive (records management steps follow the content).

use serde_json::{Map, Value};

use super::engine::{MappedFlow, Placed};
use super::error::FlowResult;
use super::run::Run;
use crate::clients::opentext::NodeId;
use crate::store::LinkRecord;

pub(crate) fn is_final(link: &LinkRecord) -> bool {
    link.state.get("finalized").and_then(Value::as_bool) == Some(true)
}

pub(crate) async fn after_content(
    _flow: &MappedFlow,
    _run: &mut Run<'_>,
    _ws: NodeId,
    _placed: &Placed,
    _state: &mut Map<String, Value>,
) -> FlowResult<()> {
    Ok(())
}
