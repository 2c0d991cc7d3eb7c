//! The seven business flows as reconcilers (docs/design.md §1–2).
//!
//! Every flow is a [`MappedFlow`]: its `[flows.<name>]` mapping says which 4ALLPORTAL events
//! trigger it and what its workspace holds; the engine re-reads the object, computes the desired
//! OpenText state and writes only the difference. `launch`, `family` and `account` are the
//! engine alone; `change`, `compliance`, `partner` and `archival` add their own steps and
//! return paths in their modules, each by implementing `steps::Steps` (the engine knows no flow
//! by name).
//!
//! The building blocks: [`mapping`] (configuration and its validation), [`schema`] (field
//! checks against 4ALLPORTAL's module schemas), [`values`] (category values and their types),
//! [`check`] (the mapping against the live systems), [`fields`], [`pattern`], [`condition`],
//! [`hash`], [`snapshot`], [`run`] (plan/apply), [`ensure`] (idempotent OpenText operations),
//! [`echo`] (write-backs and their echoes), [`intent`] (exactly-once creates), [`feed`] (the
//! workflow poller's source), [`team`] (the members of each workspace's roles).

pub mod archival;
pub mod backfill;
pub mod change;
pub mod check;
pub mod compliance;
pub mod condition;
pub mod echo;
pub mod engine;
pub mod ensure;
pub mod error;
pub mod feed;
pub mod fields;
pub mod hash;
pub mod intent;
pub mod mapping;
pub mod partner;
pub mod pattern;
pub mod register;
pub mod run;
pub mod schema;
pub mod snapshot;
mod state;
mod steps;
pub mod team;
pub mod values;

use std::sync::Arc;

use crate::clients::Upstreams;
use crate::store::{Store, StoredEvent};
use crate::worker::{ChangeFeed, Flow, WorkflowStatusFeed};

pub use engine::MappedFlow;
pub use error::{FlowError, FlowResult};
pub use feed::{AllportalChangeFeed, OpentextWorkflowFeed};
pub use mapping::{FlowMapping, FlowsConfig, MappingError};
pub use run::{FlowEnv, Operation, Plan, System};

/// The configured flows.
#[derive(Debug, Clone, Default)]
pub struct Flows {
    flows: Vec<Arc<MappedFlow>>,
    config: FlowsConfig,
}

/// Builds every enabled flow of `[flows]`; the return paths read callbacks through `callbacks`.
pub fn build(
    config: &FlowsConfig,
    callbacks: &crate::clients::opentext::callback::CallbackShape,
    clients: &Upstreams,
    store: Arc<dyn Store>,
) -> Flows {
    let env = FlowEnv {
        opentext: clients.opentext.clone(),
        allportal: clients.allportal.clone(),
        store,
        callbacks: Arc::new(callbacks.clone()),
    };
    let enabled = config.enabled();
    let peers: Vec<(String, String)> = enabled
        .iter()
        .map(|(name, m)| (name.to_string(), m.workspace.bo_type.clone()))
        .collect();
    Flows {
        config: config.clone(),
        flows: enabled
            .into_iter()
            .map(|(name, mapping)| {
                Arc::new(MappedFlow {
                    name,
                    mapping: mapping.clone(),
                    env: env.clone(),
                    peers: peers.iter().filter(|(n, _)| n != name).cloned().collect(),
                    steps: steps::steps_for(name),
                })
            })
            .collect(),
    }
}

/// The workflow poller's feed (`Worker::builder(..).workflow_feed(..)`).
pub fn workflow_feed(clients: &Upstreams) -> Arc<dyn WorkflowStatusFeed> {
    Arc::new(OpentextWorkflowFeed::new(clients.opentext.clone()))
}

/// The 4ALLPORTAL reconciliation feed (`Worker::builder(..).change_feed(..)`), over the modules
/// whose events trigger a flow.
pub fn change_feed(config: &FlowsConfig, clients: &Upstreams) -> Arc<dyn ChangeFeed> {
    let modules: std::collections::BTreeSet<String> = config
        .enabled()
        .into_iter()
        .map(|(_, mapping)| mapping.trigger.module.clone())
        .collect();
    Arc::new(AllportalChangeFeed::new(
        clients.allportal.clone(),
        modules.into_iter().collect(),
    ))
}

/// An event as it would be stored, for planning only: it is never stored.
pub fn unsaved_event(
    source: &str,
    kind: &str,
    object_key: &str,
    payload: serde_json::Value,
) -> StoredEvent {
    let (module, object_id) = match object_key.split_once('/') {
        Some((module, id)) => (Some(module.to_string()), Some(id.to_string())),
        None => (None, None),
    };
    let now = crate::store::now_millis();
    StoredEvent {
        id: "plan".into(),
        source: source.into(),
        source_event_id: "plan".into(),
        kind: kind.into(),
        module,
        object_id,
        object_key: Some(object_key.into()),
        payload,
        raw_body: Vec::new(),
        headers: serde_json::json!({}),
        received_at: now,
        state: crate::store::state::PENDING.into(),
        attempts: 0,
        next_attempt_at: now,
        last_error: None,
        updated_at: now,
    }
}

impl Flows {
    /// The flows for the worker.
    pub fn as_worker_flows(&self) -> Vec<Arc<dyn Flow>> {
        self.flows
            .iter()
            .map(|f| f.clone() as Arc<dyn Flow>)
            .collect()
    }

    /// The `[flows]` configuration they were built from.
    pub fn config(&self) -> &FlowsConfig {
        &self.config
    }

    /// Each flow's name and mapping.
    pub fn mappings(&self) -> impl Iterator<Item = (&'static str, &FlowMapping)> {
        self.flows.iter().map(|f| (f.name, &f.mapping))
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.flows.iter().map(|f| f.name).collect()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<MappedFlow>> {
        self.flows.iter().find(|f| f.name == name)
    }

    /// The plan of `flow` for `event` (an event as stored or as it would be stored): every
    /// write it would make, computed from the current state of both systems, nothing written.
    /// With `flow = None`, the plans of every flow that wants the event.
    pub async fn plan(&self, flow: Option<&str>, event: &StoredEvent) -> FlowResult<Vec<Plan>> {
        let Some(key) = event.object_key.clone() else {
            return Err(FlowError::mapping("the event names no business object"));
        };
        let chosen: Vec<&Arc<MappedFlow>> = match flow {
            Some(name) => match self.get(name) {
                Some(f) => vec![f],
                None => return Err(FlowError::mapping(format!("no flow named `{name}`"))),
            },
            None => self.flows.iter().filter(|f| f.wants(event)).collect(),
        };
        let mut plans = Vec::new();
        for f in chosen {
            plans.push(f.run(&key, std::slice::from_ref(event), false).await?);
        }
        Ok(plans)
    }
}
