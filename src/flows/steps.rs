//! What a flow adds to the engine. Each flow file implements [`Steps`] for its own steps and
//! return path; the engine ([`super::engine`]) calls these hooks and knows no flow by name.
//! `launch`, `family` and `account` are the engine alone ([`Workspace`]).

use std::sync::Arc;

use async_trait::async_trait;

use super::engine::{MappedFlow, Placed, Target};
use super::error::FlowResult;
use super::fields::Scope;
use super::run::Run;
use super::state::LinkState;
use super::{archival, change, compliance, partner};
use crate::clients::allportal::ModuleObject;
use crate::clients::opentext::NodeId;
use crate::store::{LinkRecord, StoredEvent};

#[async_trait]
pub(crate) trait Steps: Send + Sync {
    /// The OpenText callback kinds the return path takes (none: the flow has no return path).
    fn callback_kinds(&self) -> &'static [&'static str] {
        &[]
    }

    /// The return path for one OpenText callback; `Some(reason)` when it does not apply.
    async fn on_callback(
        &self,
        flow: &MappedFlow,
        _run: &mut Run<'_>,
        _event: &StoredEvent,
    ) -> FlowResult<Option<String>> {
        Ok(Some(format!("the {} flow has no return path", flow.name)))
    }

    /// Takes the forward run over once the object qualifies; `None`: the engine's own run
    /// (workspace, relations, content, then [`Steps::after_content`]).
    async fn forward(
        &self,
        _flow: &MappedFlow,
        _run: &mut Run<'_>,
        _object: &ModuleObject,
        _link: &LinkRecord,
    ) -> Option<FlowResult<Option<String>>> {
        None
    }

    /// Why nothing may change in the workspace of `link` any more, if so.
    fn frozen(&self, _link: &LinkRecord) -> Option<&'static str> {
        None
    }

    /// Whether the mapping's generated documents (field snapshots) are written.
    fn writes_snapshots(&self) -> bool {
        true
    }

    /// After the content: workflows, records, what to remember in the link's state.
    #[allow(clippy::too_many_arguments)]
    async fn after_content(
        &self,
        _flow: &MappedFlow,
        _run: &mut Run<'_>,
        _scope: &Scope<'_>,
        _target: &Target<'_>,
        _ws: NodeId,
        _placed: &Placed,
        _state: &mut LinkState,
    ) -> FlowResult<()> {
        Ok(())
    }
}

/// A workspace kept current, nothing more: `launch`, `family`, `account`.
pub(crate) struct Workspace;

impl Steps for Workspace {}

/// The steps of the flow named `name`: the one place where names meet flows.
pub(crate) fn steps_for(name: &str) -> Arc<dyn Steps> {
    match name {
        "change" => Arc::new(change::Change),
        "compliance" => Arc::new(compliance::Compliance),
        "partner" => Arc::new(partner::Partner),
        "archival" => Arc::new(archival::Archival),
        _ => Arc::new(Workspace),
    }
}
