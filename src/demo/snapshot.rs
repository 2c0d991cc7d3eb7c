//! Read-only views of the simulators' state (`GET /_sim/state`), which is what the demo checks:
//! the end state in the two systems, not what the bridge says about itself.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::sim::SimHandle;

/// OpenText: nodes (workspaces, folders, documents with versions, roles with their members),
/// workflow processes and the names of users and groups.
pub struct OpentextView {
    nodes: Vec<Value>,
    processes: Vec<Value>,
    members: BTreeMap<i64, String>,
}

impl OpentextView {
    pub fn of(sim: &SimHandle) -> Self {
        let state = sim.state();
        let list = |key: &str| state[key].as_array().cloned().unwrap_or_default();
        let seed = &state["seed"];
        let members = ["users", "groups"]
            .iter()
            .flat_map(|kind| seed[kind].as_array().cloned().unwrap_or_default())
            .filter_map(|m| Some((m["id"].as_i64()?, m["name"].as_str()?.to_string())))
            .collect();
        Self {
            nodes: list("nodes"),
            processes: list("processes"),
            members,
        }
    }

    /// The members of each role of a workspace that has any, as `role: name, name`; the
    /// owner role (the service user who created the workspace) left out.
    pub fn team(&self, workspace: &Value) -> Vec<String> {
        let roles = workspace["workspace"]["roles"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        roles
            .iter()
            .filter(|r| r["leader"] != true)
            .filter_map(|r| {
                let names: Vec<String> = r["members"]
                    .as_array()?
                    .iter()
                    .filter_map(Value::as_i64)
                    .map(|id| {
                        self.members
                            .get(&id)
                            .cloned()
                            .unwrap_or_else(|| id.to_string())
                    })
                    .collect();
                (!names.is_empty()).then(|| {
                    format!(
                        "{}: {}",
                        r["name"].as_str().unwrap_or_default(),
                        names.join(", ")
                    )
                })
            })
            .collect()
    }

    /// Workspaces registered under `bo_type` whose business-object id matches.
    pub fn workspaces(&self, bo_type: &str, bo_id: impl Fn(&str) -> bool) -> Vec<&Value> {
        self.nodes
            .iter()
            .filter(|node| {
                node["workspace"]["references"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r["bo_type"] == bo_type && r["bo_id"].as_str().is_some_and(&bo_id))
            })
            .collect()
    }

    pub fn workspace(&self, bo_type: &str, bo_id: &str) -> Option<&Value> {
        self.workspaces(bo_type, |id| id == bo_id)
            .into_iter()
            .next()
    }

    pub fn children(&self, parent: &Value) -> impl Iterator<Item = &Value> {
        let id = parent["id"].clone();
        self.nodes.iter().filter(move |n| n["parent_id"] == id)
    }

    /// Every document named `name`, wherever it lies.
    pub fn documents_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Value> {
        self.nodes
            .iter()
            .filter(move |n| is_document(n) && n["name"] == name)
    }

    pub fn child(&self, parent: &Value, name: &str) -> Option<&Value> {
        self.children(parent).find(|n| n["name"] == name)
    }

    /// Names of the documents directly in folder `folder` of `workspace`, sorted.
    pub fn documents_in(&self, workspace: &Value, folder: &str) -> Vec<String> {
        let Some(folder) = self.child(workspace, folder) else {
            return Vec::new();
        };
        let mut names: Vec<String> = self
            .children(folder)
            .filter(|n| is_document(n))
            .filter_map(|n| n["name"].as_str().map(str::to_string))
            .collect();
        names.sort();
        names
    }

    /// Every document anywhere below `node`.
    pub fn documents_below<'a>(&'a self, node: &'a Value) -> Vec<&'a Value> {
        let mut found = Vec::new();
        let mut pending = vec![node];
        while let Some(current) = pending.pop() {
            for child in self.children(current) {
                if is_document(child) {
                    found.push(child);
                } else {
                    pending.push(child);
                }
            }
        }
        found
    }

    /// Workflow processes of the map `workflow_id`, oldest first.
    pub fn processes(&self, workflow_id: i64) -> Vec<&Value> {
        self.processes
            .iter()
            .filter(|p| p["workflow_id"] == workflow_id)
            .collect()
    }
}

pub fn is_document(node: &Value) -> bool {
    node["versions"].as_array().is_some_and(|v| !v.is_empty())
}

pub fn versions(node: &Value) -> usize {
    node["versions"].as_array().map(Vec::len).unwrap_or(0)
}

/// 4ALLPORTAL: objects by module and id, fields in the API's `[{value, dimensions}]` form.
pub struct AllportalView {
    objects: Value,
}

impl AllportalView {
    pub fn of(sim: &SimHandle) -> Self {
        Self {
            objects: sim.state()["objects"].clone(),
        }
    }

    pub fn object(&self, module: &str, id: &str) -> Option<&Value> {
        self.objects.get(module)?.get(id)
    }

    /// The first value of an undimensioned field (`Null` when absent).
    pub fn field(&self, module: &str, id: &str, name: &str) -> Value {
        self.object(module, id)
            .map(|o| o[name][0]["value"].clone())
            .unwrap_or(Value::Null)
    }
}
