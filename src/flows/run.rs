//! One run of a flow for one business object, in one of two modes: **plan** (read everything,
//! write nothing, list the writes it would make) or **apply** (make them, listing each as it
//! goes). Both modes run the same code, so the plan shown is exactly what apply does.
//!
//! Why not a plan computed up front and applied later: later writes need the ids earlier
//! writes return (workspace → folder → document). In plan mode a write returns a negative
//! placeholder id, and reads below a placeholder know there is nothing yet.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::Serialize;

use crate::clients::allportal::AllportalClient;
use crate::clients::opentext::{ListedNode, NodeId, OpentextClient};
use crate::store::Store;

/// Everything a flow talks to.
#[derive(Clone)]
pub struct FlowEnv {
    pub opentext: OpentextClient,
    pub allportal: AllportalClient,
    pub store: Arc<dyn Store>,
    /// Where the fields of an OpenText callback are (`[callbacks]`).
    pub callbacks: Arc<crate::clients::opentext::callback::CallbackShape>,
}

impl std::fmt::Debug for FlowEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowEnv")
            .field("opentext", &self.opentext)
            .field("allportal", &self.allportal)
            .field("store", &self.store.backend())
            .finish()
    }
}

/// The system a write goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    Opentext,
    Allportal,
}

/// One write, planned or made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Operation {
    pub system: System,
    /// Short machine name (`create_workspace`, `add_version`, `write_back`, …).
    pub action: &'static str,
    /// One line a person understands.
    pub description: String,
}

/// The writes one run makes (apply) or would make (plan).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub flow: String,
    pub object_key: String,
    /// Set when the object does not qualify; then there are no operations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub operations: Vec<Operation>,
    /// What the run could not do but did not fail for (e.g. a team member OpenText does not
    /// know).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Plan {
    /// The summary recorded with a successful attempt.
    pub fn summary(&self) -> serde_json::Value {
        let mut summary = serde_json::json!({
            "operations": self.operations.len(),
            "changes": self.operations.iter().map(|o| &o.description).collect::<Vec<_>>(),
            // Each write with its system, for the console's business-object timeline.
            "writes": self.operations,
        });
        if !self.warnings.is_empty() {
            summary["warnings"] = serde_json::json!(self.warnings);
        }
        summary
    }
}

pub struct Run<'a> {
    pub env: &'a FlowEnv,
    pub flow: &'a str,
    pub object_key: String,
    apply: bool,
    operations: Vec<Operation>,
    warnings: Vec<String>,
    next_placeholder: NodeId,
    /// Folders found or created in this run, by (parent, name).
    pub(crate) folders: HashMap<(NodeId, String), NodeId>,
    /// Each folder's children as OpenText listed them in this run (one listing per folder
    /// and run), with what this run added.
    pub(crate) listings: HashMap<NodeId, Vec<ListedNode>>,
    /// Each workspace's related workspaces as OpenText listed them in this run.
    pub(crate) related: HashMap<NodeId, Vec<NodeId>>,
    /// The 4ALLPORTAL objects (`module/id`) this run read besides its own object: its
    /// dependencies, stored after an applied run (see [`crate::store::Store::set_dependencies`]).
    pub(crate) used: BTreeSet<String>,
}

impl std::fmt::Debug for Run<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("flow", &self.flow)
            .field("object_key", &self.object_key)
            .field("apply", &self.apply)
            .field("operations", &self.operations)
            .finish()
    }
}

impl<'a> Run<'a> {
    pub fn new(env: &'a FlowEnv, flow: &'a str, object_key: &str, apply: bool) -> Self {
        Self {
            env,
            flow,
            object_key: object_key.to_string(),
            apply,
            operations: Vec::new(),
            warnings: Vec::new(),
            next_placeholder: -1,
            folders: HashMap::new(),
            listings: HashMap::new(),
            related: HashMap::new(),
            used: BTreeSet::new(),
        }
    }

    pub fn applying(&self) -> bool {
        self.apply
    }

    /// Lists a write; `true` when it is to be made now (apply mode).
    pub fn write(&mut self, system: System, action: &'static str, description: String) -> bool {
        tracing::debug!(flow = self.flow, object_key = %self.object_key, action, %description,
                        apply = self.apply, "flow operation");
        self.operations.push(Operation {
            system,
            action,
            description,
        });
        self.apply
    }

    /// Notes something the run could not do without failing for it (shown with its result).
    pub fn warn(&mut self, warning: String) {
        self.warnings.push(warning);
    }

    /// A stand-in id for a node that plan mode would create.
    pub fn placeholder(&mut self) -> NodeId {
        let id = self.next_placeholder;
        self.next_placeholder -= 1;
        id
    }

    /// Notes that this run read the 4ALLPORTAL object `key` (`module/id`) for its content.
    pub fn uses(&mut self, key: String) {
        if key != self.object_key {
            self.used.insert(key);
        }
    }

    /// The 4ALLPORTAL objects this run depends on.
    pub fn dependencies(&self) -> Vec<String> {
        self.used.iter().cloned().collect()
    }

    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    pub fn into_plan(self, skipped: Option<String>) -> Plan {
        Plan {
            flow: self.flow.to_string(),
            object_key: self.object_key,
            skipped,
            operations: self.operations,
            warnings: self.warnings,
        }
    }
}

/// Whether `id` stands for a node that only plan mode created.
pub fn is_planned(id: NodeId) -> bool {
    id < 0
}
