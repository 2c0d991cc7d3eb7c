//! The mapping against the live systems (`check-config --online`, and `serve` at start-up):
//! every id and name the mapping uses is looked up in OpenText and 4ALLPORTAL, and each
//! problem names its configuration key and what exists instead.
//!
//! OpenText: the business object types (a workspace type registered for each), templates and
//! the folders they hold, parent nodes, categories and attributes with their types (against
//! the mapped 4ALLPORTAL field's type and the constants), workflow maps, RM classifications
//! and holds. 4ALLPORTAL: the modules and fields ([`super::schema`], every problem of each flow). Reading the category
//! definitions also caches them for the per-value type checks of the running flows.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fields::FieldRef;
use super::mapping::{FlowMapping, FlowsConfig, attribute_key};
use super::schema::{modules_used, validate_flow_schema};
use super::values::{MappedValue, Term, ValueSource, coerce, field_type_fits};
use crate::clients::UpstreamError;
use crate::clients::allportal::{AllportalClient, ModuleConfig};
use crate::clients::opentext::{
    AttributeDefinition, CategoryDefinition, NodeId, OpentextClient, WorkspaceType,
};

/// `[mapping_check]`: what `serve` does when the start-up check finds a problem.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MappingCheckConfig {
    /// `warn` (log each problem and start), `fail` (refuse to start) or `off` (do not check
    /// against the live systems at start; nothing is sent to OpenText before the first event).
    /// An unreachable system only warns: the bridge must take webhooks while it is down.
    pub on_problem: OnProblem,
}

/// The built-in `[mapping_check]` section.
pub const DEFAULTS: &str = r#"
[mapping_check]
on_problem = "warn"
"#;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnProblem {
    #[default]
    Warn,
    Fail,
    Off,
}

/// A problem of the mapping, under its configuration key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub key: String,
    pub problem: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)
    }
}

/// What the online check found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub problems: Vec<Problem>,
    /// Systems that could not be asked (`opentext: …`, `4allportal: …`).
    pub unreachable: Vec<String>,
}

impl Report {
    fn problem(&mut self, key: impl Into<String>, problem: impl Into<String>) {
        let problem = Problem {
            key: key.into(),
            problem: problem.into(),
        };
        if !self.problems.contains(&problem) {
            self.problems.push(problem);
        }
    }

    fn unreachable(&mut self, system: &str, error: &UpstreamError) {
        let line = format!("{system}: {error}");
        if !self.unreachable.contains(&line) {
            self.unreachable.push(line);
        }
    }
}

/// An answer that says the thing is not there (as opposed to the system not answering).
fn is_absent(error: &UpstreamError) -> bool {
    matches!(
        error,
        UpstreamError::NotFound { .. }
            | UpstreamError::BadRequest { .. }
            | UpstreamError::Conflict { .. }
    ) || matches!(error, UpstreamError::Unavailable { status: 500, .. })
}

/// Checks every enabled flow against both systems.
pub async fn check_online(
    flows: &FlowsConfig,
    opentext: &OpentextClient,
    allportal: &AllportalClient,
) -> Report {
    let mut report = Report::default();
    let schemas = read_schemas(flows, allportal, &mut report).await;
    let allportal_up = report.unreachable.is_empty();
    for (name, mapping) in flows.enabled() {
        let at = format!("flows.{name}");
        if allportal_up {
            for e in validate_flow_schema(&at, mapping, &schemas) {
                report.problem(e.key, e.problem);
            }
        }
        if report.unreachable.iter().any(|u| u.starts_with("opentext")) {
            // One unreachable answer is enough; asking again per flow would only add waits.
            continue;
        }
        let mut flow = FlowCheck {
            at: &at,
            mapping,
            opentext,
            schemas: &schemas,
            report: &mut report,
        };
        flow.run().await;
    }
    report
}

/// The module schemas the mapping reads; an unknown module is left out (the schema check then
/// names the key that uses it).
async fn read_schemas(
    flows: &FlowsConfig,
    allportal: &AllportalClient,
    report: &mut Report,
) -> BTreeMap<String, ModuleConfig> {
    let mut schemas = BTreeMap::new();
    for module in modules_used(flows) {
        match allportal.module_schema(&module).await {
            Ok(schema) => {
                schemas.insert(module, schema);
            }
            Err(e) if is_absent(&e) => {}
            Err(e) => {
                report.unreachable("4allportal", &e);
                break;
            }
        }
    }
    schemas
}

struct FlowCheck<'a> {
    at: &'a str,
    mapping: &'a FlowMapping,
    opentext: &'a OpentextClient,
    schemas: &'a BTreeMap<String, ModuleConfig>,
    report: &'a mut Report,
}

impl FlowCheck<'_> {
    /// `Some(value)`, or `None` after recording an unreachable OpenText.
    fn up<T>(&mut self, result: Result<T, UpstreamError>) -> Option<Result<T, UpstreamError>> {
        match result {
            Err(e) if !is_absent(&e) => {
                self.report.unreachable("opentext", &e);
                None
            }
            other => Some(other),
        }
    }

    async fn run(&mut self) {
        let Some(template) = self.workspace_type().await else {
            return;
        };
        if let Some(template) = template {
            self.template_folders(template).await;
        }
        if let Some(parent) = self.mapping.workspace.parent_id {
            self.parent(parent).await;
        }
        // The node the category forms are read for: the template, else the parent.
        let form_node = template.or(self.mapping.workspace.parent_id);
        self.categories(form_node).await;
        if let Some(wf) = &self.mapping.workflow {
            let key = format!("{}.workflow.map_id", self.at);
            self.node_of_type(&key, wf.map_id, 128, "a workflow map")
                .await;
        }
        if let Some(records) = &self.mapping.records {
            let key = format!("{}.records.rm_class_id", self.at);
            let id = records.rm_class_id;
            self.node_of_type(&key, id, 551, "an RM classification")
                .await;
            if let Some(hold) = records.hold_id {
                self.hold(hold).await;
            }
        }
        for (i, rel) in self.mapping.workspace.relations.iter().enumerate() {
            let key = format!("{}.workspace.relations[{i}].bo_type", self.at);
            let Some(types) = self.up(self.opentext.workspace_types(&rel.bo_type).await) else {
                return;
            };
            if types.is_ok_and(|t| t.is_empty()) {
                let problem = self.unregistered(&rel.bo_type);
                self.report.problem(key, problem);
            }
        }
    }

    fn unregistered(&self, bo_type: &str) -> String {
        format!(
            "`{bo_type}`: no workspace type is registered for this business object type of \
             external system `{}`",
            self.opentext.ext_system_id()
        )
    }

    /// The business object type's registration, and the template (or type) id against it.
    /// `None`: OpenText did not answer; `Some(template)`: the template to read further.
    async fn workspace_type(&mut self) -> Option<Option<NodeId>> {
        let ws = &self.mapping.workspace;
        let types = match self.up(self.opentext.workspace_types(&ws.bo_type).await)? {
            Ok(types) => types,
            Err(e) => {
                let key = format!("{}.workspace.bo_type", self.at);
                self.report.problem(key, e.to_string());
                return Some(None);
            }
        };
        if types.is_empty() {
            let key = format!("{}.workspace.bo_type", self.at);
            let problem = self.unregistered(&ws.bo_type);
            self.report.problem(key, problem);
            return Some(ws.template_id);
        }
        let templates: Vec<&(NodeId, String)> = types.iter().flat_map(|t| &t.templates).collect();
        if let Some(template) = ws.template_id
            && !templates.iter().any(|(id, _)| *id == template)
        {
            let key = format!("{}.workspace.template_id", self.at);
            self.report.problem(
                key,
                format!(
                    "`{template}` is not a template of business object type `{}`; its templates: {}",
                    ws.bo_type,
                    list(templates.iter().map(|(id, name)| format!("{id} ({name})")))
                ),
            );
            return Some(None);
        }
        if let Some(type_id) = ws.wksp_type_id
            && !types.iter().any(|t| t.id == type_id)
        {
            let key = format!("{}.workspace.wksp_type_id", self.at);
            self.report.problem(
                key,
                format!(
                    "`{type_id}` is not a workspace type of business object type `{}`; its types: {}",
                    ws.bo_type,
                    list(types.iter().map(|t: &WorkspaceType| format!("{} ({})", t.id, t.name)))
                ),
            );
        }
        Some(
            ws.template_id
                .or_else(|| templates.first().map(|(id, _)| *id)),
        )
    }

    /// Folders the mapping names (their first path segment, when it is not a pattern) against
    /// the folders the template creates.
    async fn template_folders(&mut self, template: NodeId) {
        let Some(Ok(page)) = self.up(self.opentext.children(template, None, 1, 100).await) else {
            return;
        };
        let existing: Vec<String> = page.nodes.iter().map(|n| n.name.clone()).collect();
        let content = &self.mapping.content;
        let mut named: Vec<(String, &str)> = Vec::new();
        for (i, f) in content.folders.iter().enumerate() {
            named.push((format!("{}.content.folders[{i}]", self.at), f));
        }
        for (i, d) in content.documents.iter().enumerate() {
            named.push((
                format!("{}.content.documents[{i}].folder", self.at),
                &d.folder,
            ));
        }
        for (i, a) in content.assets.iter().enumerate() {
            named.push((format!("{}.content.assets[{i}].folder", self.at), &a.folder));
        }
        let team = self.mapping.team.iter().flat_map(|t| &t.roles);
        for (role, config) in team {
            for path in config.folders.keys() {
                let key = format!("{}.team.roles.\"{role}\".folders.\"{path}\"", self.at);
                named.push((key, path));
            }
        }
        for (key, path) in named {
            let first = path.split('/').next().unwrap_or_default().trim();
            if first.is_empty() || first.contains('{') || existing.iter().any(|e| e == first) {
                continue;
            }
            self.report.problem(
                key,
                format!(
                    "`{first}`: the template {template} has folders {}",
                    list(existing.iter().cloned())
                ),
            );
        }
    }

    async fn parent(&mut self, parent: NodeId) {
        let key = format!("{}.workspace.parent_id", self.at);
        match self.up(self.opentext.node(parent).await) {
            None => {}
            Some(Ok(node)) if matches!(node.node_type, Some(0 | 141 | 848)) => {}
            Some(Ok(node)) => self.report.problem(
                key,
                format!(
                    "`{parent}` is `{}` ({}), not a folder a workspace can be created in",
                    node.name,
                    node.type_name.unwrap_or_default()
                ),
            ),
            Some(Err(_)) => self
                .report
                .problem(key, format!("node `{parent}` does not exist in OpenText")),
        }
    }

    async fn node_of_type(&mut self, key: &str, id: NodeId, node_type: i64, what: &str) {
        match self.up(self.opentext.node(id).await) {
            None => {}
            Some(Ok(node)) if node.node_type == Some(node_type) => {}
            Some(Ok(node)) => self.report.problem(
                key,
                format!(
                    "`{id}` is `{}` ({}), not {what}",
                    node.name,
                    node.type_name.unwrap_or_default()
                ),
            ),
            Some(Err(_)) => self.report.problem(
                key,
                format!("`{id}`: no such node in OpenText ({what} is needed)"),
            ),
        }
    }

    async fn hold(&mut self, hold: i64) {
        let Some(Ok(holds)) = self.up(self.opentext.holds().await) else {
            return;
        };
        if !holds.iter().any(|h| h.id == hold) {
            let key = format!("{}.records.hold_id", self.at);
            self.report.problem(
                key,
                format!(
                    "`{hold}` is not a hold; holds: {}",
                    list(holds.iter().map(|h| format!("{} ({})", h.id, h.name)))
                ),
            );
        }
    }
}

/// Every category attribute the mapping at `at` sets, with the values mapped to it.
fn attributes<'m>(at: &str, m: &'m FlowMapping) -> Vec<(String, String, Attribute<'m>)> {
    {
        let object = m.trigger.module.as_str();
        let item = m.items.as_ref().map(|i| i.module.as_str());
        let ws_module = if m.mode.is_some() {
            item.unwrap_or(object)
        } else {
            object
        };
        let mut out = Vec::new();
        for (attr, source) in &m.workspace.categories {
            out.push((
                format!("{at}.workspace.categories.\"{attr}\""),
                attr.clone(),
                Attribute::Mapped(source, ws_module),
            ));
        }
        for (i, d) in m.content.documents.iter().enumerate() {
            for (attr, source) in &d.categories {
                out.push((
                    format!("{at}.content.documents[{i}].categories.\"{attr}\""),
                    attr.clone(),
                    Attribute::Mapped(source, item.unwrap_or(object)),
                ));
            }
        }
        for (i, a) in m.content.assets.iter().enumerate() {
            for (attr, source) in &a.categories {
                out.push((
                    format!("{at}.content.assets[{i}].categories.\"{attr}\""),
                    attr.clone(),
                    Attribute::Mapped(source, a.module.as_str()),
                ));
            }
        }
        if let Some(review) = &m.review {
            out.push((
                format!("{at}.review.status_attribute"),
                review.status_attribute.clone(),
                Attribute::Constants(vec![&review.in_review_value, &review.outdated_value]),
            ));
        }
        if let Some(on_delete) = &m.on_delete {
            out.push((
                format!("{at}.on_delete.attribute"),
                on_delete.attribute.clone(),
                Attribute::Constants(vec![&on_delete.value]),
            ));
        }
        out
    }
}

impl FlowCheck<'_> {
    async fn categories(&mut self, form_node: Option<NodeId>) {
        let Some(node) = form_node else {
            return;
        };
        let mut definitions: BTreeMap<i64, Option<std::sync::Arc<CategoryDefinition>>> =
            BTreeMap::new();
        let mapping = self.mapping;
        for (key, attr, use_) in attributes(self.at, mapping) {
            let Some((cat, attr_id)) = attribute_key(&attr) else {
                continue;
            };
            if let std::collections::btree_map::Entry::Vacant(entry) = definitions.entry(cat) {
                match self.up(self.opentext.category_definition(node, cat).await) {
                    None => return,
                    Some(Ok(d)) => {
                        entry.insert(Some(d));
                    }
                    Some(Err(_)) => {
                        self.report
                            .problem(&key, format!("category `{cat}` does not exist in OpenText"));
                        entry.insert(None);
                    }
                }
            }
            let Some(Some(definition)) = definitions.get(&cat) else {
                continue;
            };
            let Some(attribute) = definition.attribute(&attr) else {
                self.report.problem(
                    &key,
                    format!(
                        "category {cat} `{}` has no attribute {attr_id}; its attributes: {}",
                        definition.name,
                        list(definition.attributes.iter().map(|a| format!(
                            "{} {}",
                            a.key,
                            a.describe()
                        )))
                    ),
                );
                continue;
            };
            for problem in self.value_problems(attribute, &use_) {
                self.report.problem(&key, problem);
            }
        }
    }

    /// Whether the mapped values can fit the attribute's type.
    fn value_problems(&self, attribute: &AttributeDefinition, use_: &Attribute<'_>) -> Vec<String> {
        let mut problems = Vec::new();
        let (source, module) = match use_ {
            Attribute::Constants(values) => {
                for v in values {
                    if let Err(e) = coerce(attribute, Value::String((*v).clone())) {
                        problems.push(e);
                    }
                }
                return problems;
            }
            Attribute::Mapped(source, module) => (*source, *module),
        };
        let Ok(mapped) = MappedValue::parse(source) else {
            return problems;
        };
        if mapped.list && !attribute.multi_value && mapped.terms.len() > 1 {
            problems.push(format!(
                "a list of {} values for {}, which takes one value",
                mapped.terms.len(),
                attribute.describe()
            ));
        }
        for term in &mapped.terms {
            match term {
                Term::Constant(c) => {
                    if let Err(e) = coerce(attribute, Value::String(c.clone())) {
                        problems.push(e);
                    }
                }
                Term::Field(f) => {
                    if let Some(t) = self.field_type(f, module)
                        && let Some(p) = field_type_fits(&t, attribute)
                    {
                        problems.push(format!("`{}`: {p}", f.field));
                    }
                }
                Term::Pattern(_) => {
                    // Text: fits text attributes; a pattern for another type is checked per value.
                }
            }
        }
        problems
    }

    /// The 4ALLPORTAL type of a field the rule reads (system keys included).
    fn field_type(&self, f: &FieldRef, module: &str) -> Option<String> {
        match f.field.as_str() {
            "mod_time" => return Some("CETimestamp".into()),
            "id" | "module" | "type" => return Some("CEVarchar".into()),
            _ => {}
        }
        let module = match f.scope {
            Some(super::fields::ScopeName::Object) => self.mapping.trigger.module.as_str(),
            Some(super::fields::ScopeName::Item) => self.mapping.items.as_ref()?.module.as_str(),
            _ => module,
        };
        let field = self
            .schemas
            .get(module)?
            .fields
            .iter()
            .find(|x| x.name == f.field)?;
        if !field.modules.is_empty() {
            // A relation holds ids (text); a multiple relation a list of them.
            return Some(
                if field
                    .field_type
                    .as_deref()
                    .is_some_and(|t| t.ends_with("List"))
                {
                    "CEVarcharList".into()
                } else {
                    "CEVarchar".into()
                },
            );
        }
        field.field_type.clone()
    }
}

/// What the mapping puts into an attribute.
enum Attribute<'a> {
    /// A mapped source, read from objects of a module.
    Mapped(&'a ValueSource, &'a str),
    /// Constant values (review states, the on-delete value).
    Constants(Vec<&'a String>),
}

fn list(items: impl Iterator<Item = String>) -> String {
    let items: BTreeSet<String> = items.collect();
    if items.is_empty() {
        "none".into()
    } else {
        items.into_iter().collect::<Vec<_>>().join(", ")
    }
}
