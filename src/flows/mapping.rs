//! The mapping configuration (`[flows.<name>]`): which 4ALLPORTAL module and events trigger a
//! flow, the workspace it keeps (business object key, template, name pattern, categories,
//! relations), its content (folders, generated documents, related assets), the workflow it
//! starts and the fields a decision is written back to.
//!
//! [`FlowsConfig::validate`] checks everything that needs no upstream (shapes, patterns,
//! template ids, operators, keys used by the wrong flow); [`super::schema`] checks field names
//! and types against 4ALLPORTAL's module schemas at start-up. Every error names its key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::condition::Condition;
use super::fields::FieldRef;
use super::pattern::Pattern;
use super::values::{MappedValue, ValueSource};

/// Names of the seven flows, in the order they are built.
pub const FLOW_NAMES: [&str; 7] = [
    "launch",
    "account",
    "change",
    "compliance",
    "partner",
    "family",
    "archival",
];

/// Event kinds a trigger may name.
pub const EVENT_KINDS: [&str; 3] = [
    "moduleobject_create",
    "moduleobject_modify",
    "moduleobject_delete",
];

/// `[flows]`: one optional section per flow; a flow without a section is not built.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FlowsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<FlowMapping>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<FlowMapping>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<FlowMapping>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compliance: Option<FlowMapping>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner: Option<FlowMapping>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<FlowMapping>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archival: Option<FlowMapping>,
}

/// The mapping of one flow.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FlowMapping {
    /// `false` keeps the section but builds no flow.
    #[serde(default = "yes")]
    pub enabled: bool,
    pub trigger: TriggerConfig,
    pub workspace: WorkspaceConfig,
    #[serde(default)]
    pub content: ContentConfig,
    /// account, partner: the related objects (e.g. products) whose content goes in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<ItemsConfig>,
    /// change, compliance: the approval workflow started on the documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<WorkflowConfig>,
    /// change: where the decision goes in 4ALLPORTAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_back: Option<WriteBackConfig>,
    /// change: the attributes whose changes are reviewed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch: Vec<String>,
    /// account: create the customer/opportunity workspace when it does not exist yet.
    #[serde(default)]
    pub create_workspace: Option<bool>,
    /// partner: one workspace per partner, or per partner and product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<PartnerMode>,
    /// partner: how approved partner documents come back into 4ALLPORTAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<ImportConfig>,
    /// compliance: the workspace attribute that shows the review state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<ReviewConfig>,
    /// archival: records management applied at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<RecordsConfig>,
    /// `archival`: the archive template's folder the approval history goes into.
    #[serde(default = "default_history_folder")]
    pub history_folder: String,
    /// What a `moduleobject_delete` does: recorded always; with this set, the workspace gets
    /// the attribute. Nothing is ever deleted in OpenText.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_delete: Option<OnDeleteConfig>,
    /// The workspace's team: who is a member of which workspace role ([`super::team`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<TeamConfig>,
}

/// Permission names a workspace role can hold (BW-SPEC, `permissions` of a role).
pub const ROLE_PERMISSIONS: [&str; 10] = [
    "see",
    "see_contents",
    "modify",
    "edit_attributes",
    "add_items",
    "reserve",
    "add_major_version",
    "delete_versions",
    "delete",
    "edit",
];

/// `[flows.<name>.team]`: members of the workspace's roles.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TeamConfig {
    /// `true`: a member OpenText does not know fails the run (for good); `false` (default): it
    /// is reported (warning, metric, the run's result) and the rest of the team is kept.
    #[serde(default)]
    pub strict: bool,
    /// By role name, as the workspace template defines it.
    #[serde(default)]
    pub roles: BTreeMap<String, TeamRoleConfig>,
}

/// One workspace role of a team.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TeamRoleConfig {
    /// Who holds the role.
    #[serde(default)]
    pub members: Vec<TeamMemberConfig>,
    /// The role's permissions (`see`, `see_contents`, `add_items`, …), set when they differ;
    /// not given: the template's permissions stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<String>>,
    /// Where the permissions apply: 0 the workspace, 1 its sub-items, 2 both (default), 3 the
    /// workspace and its immediate sub-items.
    #[serde(default = "default_apply_to")]
    pub apply_to: u8,
    /// More permissions on folders of the workspace, by folder path below it (`A/B`): the
    /// role's Assigned Access on that folder and everything in it (a partner role that may add
    /// documents only in its upload folder). A missing folder is created.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub folders: BTreeMap<String, Vec<String>>,
}

fn default_apply_to() -> u8 {
    2
}

/// One member source: a 4ALLPORTAL field (its values name users or groups, as `by` says), or
/// a fixed user (`user` login or `email`) or `group`. Give exactly one of `field`, `user`,
/// `email`, `group`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TeamMemberConfig {
    /// A field of the object (or `item.` field); every value names one member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What the field's values are: `login` (default), `email` or `group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<MemberBy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// How a field's values name members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum MemberBy {
    Login,
    Email,
    Group,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    /// 4ALLPORTAL module whose events start the flow.
    pub module: String,
    /// Event kinds (default: create and modify; delete is always recorded).
    #[serde(default = "default_events")]
    pub events: Vec<String>,
    /// Conditions on the re-read object; all must hold.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// `change` only: whether the values an object is created with count as changes to review
    /// (default: only later modifications do).
    #[serde(default)]
    pub on_create: bool,
}

fn default_history_folder() -> String {
    "Approval History".into()
}

fn default_events() -> Vec<String> {
    vec!["moduleobject_create".into(), "moduleobject_modify".into()]
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct WorkspaceConfig {
    /// Business object type the workspace is registered under (with `[opentext].ext_system_id`).
    pub bo_type: String,
    /// Business object id pattern (default `{id}`).
    #[serde(default = "default_bo_id")]
    pub bo_id: String,
    /// Workspace template (or give `wksp_type_id`).
    #[serde(default)]
    pub template_id: Option<i64>,
    #[serde(default)]
    pub wksp_type_id: Option<i64>,
    /// Folder the workspace is created in (default: the type's configured location).
    #[serde(default)]
    pub parent_id: Option<i64>,
    /// Name pattern, e.g. `"Launch {name@en_US} ({article_number})"`.
    pub name: String,
    /// Category attributes: `"{category}_{attribute}" = source`: a field, a pattern, a
    /// constant in single quotes, or a list of these (sent as an array).
    #[serde(default)]
    pub categories: BTreeMap<String, ValueSource>,
    /// Related workspaces (e.g. the product family's).
    #[serde(default)]
    pub relations: Vec<RelationConfig>,
}

fn default_bo_id() -> String {
    "{id}".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum RelationKind {
    /// The related workspace becomes a child of this one.
    Child,
    /// The related workspace becomes a parent of this one.
    Parent,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RelationConfig {
    /// Relation field on the object holding the related object's id.
    pub field: String,
    /// Business object type of the related workspace.
    pub bo_type: String,
    #[serde(default = "default_relation")]
    pub relation: RelationKind,
    /// `true`: wait (retry) until the related workspace exists; `false`: skip the relation.
    #[serde(default)]
    pub required: bool,
}

fn default_relation() -> RelationKind {
    RelationKind::Parent
}

/// What goes into the workspace.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ContentConfig {
    /// Folders created even when empty (paths with `/`).
    #[serde(default)]
    pub folders: Vec<String>,
    /// Documents generated from fields (master-data snapshots, change lists, …).
    #[serde(default)]
    pub documents: Vec<DocumentRule>,
    /// Related files copied in.
    #[serde(default)]
    pub assets: Vec<AssetRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum DocumentFormat {
    /// Machine-readable JSON.
    Json,
    /// A human-readable HTML page.
    Html,
}

/// A generated document.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DocumentRule {
    /// Folder path (a pattern) inside the workspace.
    pub folder: String,
    /// File name pattern without extension; `.json` / `.html` are appended.
    pub name: String,
    /// Title pattern of the human-readable rendering.
    #[serde(default)]
    pub title: Option<String>,
    /// Fields in the document; empty: every field of the object.
    #[serde(default)]
    pub fields: Vec<String>,
    #[serde(default = "default_formats")]
    pub formats: Vec<DocumentFormat>,
    /// Category attributes of the document.
    #[serde(default)]
    pub categories: BTreeMap<String, ValueSource>,
}

fn default_formats() -> Vec<DocumentFormat> {
    vec![DocumentFormat::Json, DocumentFormat::Html]
}

/// Related files copied into a folder.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct AssetRule {
    /// Relation field on the object (or item) listing the file objects.
    pub relation: String,
    /// Module of the related objects.
    #[serde(default = "default_file_module")]
    pub module: String,
    /// Folder path (a pattern) inside the workspace.
    pub folder: String,
    /// Rendition to copy (`Original`, or a configured preview type).
    #[serde(default = "default_rendition")]
    pub rendition: String,
    /// Conditions on the file object (asset type, status, …).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Document name pattern (default `{name}`).
    #[serde(default = "default_asset_name")]
    pub name: String,
    /// Category attributes of each document.
    #[serde(default)]
    pub categories: BTreeMap<String, ValueSource>,
}

fn default_file_module() -> String {
    "file".into()
}

fn default_rendition() -> String {
    "Original".into()
}

fn default_asset_name() -> String {
    "{name}".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ItemsConfig {
    /// Relation field on the trigger object listing the items.
    pub relation: String,
    /// Module of the items.
    pub module: String,
    /// Conditions an item must meet to be included.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct WorkflowConfig {
    /// Workflow map node id.
    pub map_id: i64,
    /// Title pattern (`WorkflowForm_Title`).
    pub title: String,
    /// Form attributes: `WorkflowForm_<name>` = pattern.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Comment given when the workflow is initiated.
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct WriteBackConfig {
    /// Module written to (default: the trigger's module).
    #[serde(default)]
    pub module: Option<String>,
    pub decision_field: String,
    #[serde(default)]
    pub comment_field: Option<String>,
    #[serde(default)]
    pub approver_field: Option<String>,
    #[serde(default)]
    pub date_field: Option<String>,
    #[serde(default = "approved")]
    pub approved_value: String,
    #[serde(default = "rejected")]
    pub rejected_value: String,
}

fn approved() -> String {
    "approved".into()
}

fn rejected() -> String {
    "rejected".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum PartnerMode {
    PerPartner,
    PerPartnerProduct,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ImportConfig {
    /// Module of the file objects created.
    #[serde(default = "default_file_module")]
    pub module: String,
    /// Relation field on the product that receives the new file object.
    pub link_field: String,
    /// Values set on the new file object: field = pattern over the callback's document
    /// (`{document_name}`, `{node_id}`, `{version}`, `{partner_id}`, `{product_id}`).
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ReviewConfig {
    /// Workspace attribute `"{category}_{attribute}"` showing the review state.
    pub status_attribute: String,
    #[serde(default = "in_review")]
    pub in_review_value: String,
    #[serde(default = "outdated")]
    pub outdated_value: String,
}

fn in_review() -> String {
    "in review".into()
}

fn outdated() -> String {
    "outdated".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RecordsConfig {
    /// RM classification applied to the workspace and its items.
    pub rm_class_id: i64,
    #[serde(default = "yes")]
    pub finalize: bool,
    /// Legal hold applied to the workspace, if any.
    #[serde(default)]
    pub hold_id: Option<i64>,
    #[serde(default = "yes")]
    pub read_only: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct OnDeleteConfig {
    /// Workspace attribute `"{category}_{attribute}"` set when the object is deleted.
    pub attribute: String,
    #[serde(default = "deleted")]
    pub value: String,
}

fn deleted() -> String {
    "deleted in 4ALLPORTAL".into()
}

/// A configuration error naming its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {problem}")]
pub struct MappingError {
    pub key: String,
    pub problem: String,
}

fn err(key: impl Into<String>, problem: impl Into<String>) -> MappingError {
    MappingError {
        key: key.into(),
        problem: problem.into(),
    }
}

impl FlowsConfig {
    /// The enabled flows, by name.
    pub fn enabled(&self) -> Vec<(&'static str, &FlowMapping)> {
        FLOW_NAMES
            .iter()
            .filter_map(|name| Some((*name, self.get(name)?)))
            .filter(|(_, m)| m.enabled)
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<&FlowMapping> {
        match name {
            "launch" => self.launch.as_ref(),
            "account" => self.account.as_ref(),
            "change" => self.change.as_ref(),
            "compliance" => self.compliance.as_ref(),
            "partner" => self.partner.as_ref(),
            "family" => self.family.as_ref(),
            "archival" => self.archival.as_ref(),
            _ => None,
        }
    }

    /// Checks every enabled flow's mapping without calling an upstream.
    pub fn validate(&self) -> Result<(), MappingError> {
        for (name, mapping) in self.enabled() {
            mapping.validate(name, &format!("flows.{name}"))?;
        }
        let mut bo_types: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, mapping) in self.enabled() {
            if let Some(other) = bo_types.insert(&mapping.workspace.bo_type, name) {
                return Err(err(
                    format!("flows.{name}.workspace.bo_type"),
                    format!(
                        "`{}` is also used by flow `{other}`; each flow needs its own business \
                         object type so that its workspaces and callbacks stay apart",
                        mapping.workspace.bo_type
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn check_pattern(key: &str, source: &str) -> Result<Pattern, MappingError> {
    Pattern::parse(source).map_err(|e| err(key, e))
}

/// `"{category}_{attribute}"` → (category, attribute).
pub fn attribute_key(key: &str) -> Option<(i64, i64)> {
    let (cat, attr) = key.split_once('_')?;
    Some((cat.parse().ok()?, attr.parse().ok()?))
}

fn check_attribute_key(key: &str, attribute: &str) -> Result<(), MappingError> {
    match attribute_key(attribute) {
        Some((c, a)) if c > 0 && a > 1 => Ok(()),
        _ => Err(err(
            key,
            format!("`{attribute}` is not a category attribute key `<category>_<attribute>`"),
        )),
    }
}

fn check_categories(
    at: &str,
    categories: &BTreeMap<String, ValueSource>,
) -> Result<(), MappingError> {
    for (attribute, source) in categories {
        let key = format!("{at}.\"{attribute}\"");
        check_attribute_key(&key, attribute)?;
        MappedValue::parse(source).map_err(|e| err(&key, e))?;
    }
    Ok(())
}

/// Permission names of an Assigned Access entry on a node (CS-SPEC, `permissions/custom`): a
/// role's, but `edit_permissions` where a role has `edit`.
fn node_permissions() -> Vec<&'static str> {
    let role = ROLE_PERMISSIONS.iter().filter(|p| **p != "edit").copied();
    role.chain(["edit_permissions"]).collect()
}

/// Permissions of a role or a folder: names from `known` only, and none on an archive, whose
/// roles are made read-only after the team is set.
fn check_permissions(
    at: &str,
    permissions: &[String],
    read_only: bool,
    known: &[&str],
) -> Result<(), MappingError> {
    if read_only {
        return Err(err(
            at,
            "the archive's roles are made read-only after the team is set; \
             permissions here would be overwritten on every archive",
        ));
    }
    match permissions.iter().find(|p| !known.contains(&p.as_str())) {
        Some(bad) => Err(err(
            at,
            format!("`{bad}` is not one of {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

/// The number of folder names in a path below a workspace (`A/B` → 2).
pub(crate) fn folder_segments(path: &str) -> usize {
    path.split('/').filter(|s| !s.trim().is_empty()).count()
}

fn check_team_member(at: &str, member: &TeamMemberConfig) -> Result<(), MappingError> {
    let given: Vec<&str> = [
        ("field", member.field.is_some()),
        ("user", member.user.is_some()),
        ("email", member.email.is_some()),
        ("group", member.group.is_some()),
    ]
    .iter()
    .filter(|(_, set)| *set)
    .map(|(name, _)| *name)
    .collect();
    if given.len() != 1 {
        return Err(err(
            at,
            format!(
                "give exactly one of field, user, email, group (given: {})",
                if given.is_empty() {
                    "none".to_string()
                } else {
                    given.join(", ")
                }
            ),
        ));
    }
    if member.by.is_some() && member.field.is_none() {
        return Err(err(format!("{at}.by"), "only a `field` takes `by`"));
    }
    if let Some(field) = &member.field {
        FieldRef::parse(field).map_err(|e| err(format!("{at}.field"), e))?;
    }
    for (key, value) in [
        ("user", &member.user),
        ("email", &member.email),
        ("group", &member.group),
    ] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(err(format!("{at}.{key}"), "must not be empty"));
        }
    }
    if member.email.as_deref().is_some_and(|e| !e.contains('@')) {
        return Err(err(format!("{at}.email"), "is not an e-mail address"));
    }
    Ok(())
}

fn check_conditions(at: &str, conditions: &[Condition]) -> Result<(), MappingError> {
    for (i, c) in conditions.iter().enumerate() {
        c.check().map_err(|e| err(format!("{at}[{i}]"), e))?;
    }
    Ok(())
}

/// Which optional sections each flow uses; any other is a mistake worth an error.
fn allowed_sections(flow: &str) -> &'static [&'static str] {
    match flow {
        "account" => &["items", "create_workspace"],
        "change" => &["workflow", "write_back", "watch"],
        "compliance" => &["workflow", "review"],
        "partner" => &["items", "mode", "import"],
        "archival" => &["records"],
        _ => &[],
    }
}

impl FlowMapping {
    fn sections(&self) -> Vec<&'static str> {
        let mut present = Vec::new();
        let flags = [
            ("items", self.items.is_some()),
            ("workflow", self.workflow.is_some()),
            ("write_back", self.write_back.is_some()),
            ("watch", !self.watch.is_empty()),
            ("create_workspace", self.create_workspace.is_some()),
            ("mode", self.mode.is_some()),
            ("import", self.import.is_some()),
            ("review", self.review.is_some()),
            ("records", self.records.is_some()),
        ];
        for (name, set) in flags {
            if set {
                present.push(name);
            }
        }
        present
    }

    fn validate(&self, flow: &str, at: &str) -> Result<(), MappingError> {
        let allowed = allowed_sections(flow);
        if let Some(extra) = self.sections().into_iter().find(|s| !allowed.contains(s)) {
            return Err(err(
                format!("{at}.{extra}"),
                format!("not used by the `{flow}` flow"),
            ));
        }
        let required: &[(&str, bool)] = match flow {
            "change" => &[
                ("workflow", self.workflow.is_some()),
                ("write_back", self.write_back.is_some()),
                ("watch", !self.watch.is_empty()),
            ],
            "compliance" => &[("workflow", self.workflow.is_some())],
            "partner" => &[("items", self.items.is_some())],
            "account" => &[("items", self.items.is_some())],
            "archival" => &[("records", self.records.is_some())],
            _ => &[],
        };
        if let Some((missing, _)) = required.iter().find(|(_, set)| !set) {
            return Err(err(
                format!("{at}.{missing}"),
                format!("the `{flow}` flow needs it"),
            ));
        }
        self.validate_trigger(&format!("{at}.trigger"))?;
        self.validate_workspace(&format!("{at}.workspace"))?;
        self.validate_content(&format!("{at}.content"))?;
        if let Some(items) = &self.items {
            check_conditions(&format!("{at}.items.conditions"), &items.conditions)?;
        }
        if let Some(wf) = &self.workflow {
            if wf.map_id <= 0 {
                return Err(err(
                    format!("{at}.workflow.map_id"),
                    "must be a workflow map node id",
                ));
            }
            check_pattern(&format!("{at}.workflow.title"), &wf.title)?;
            for (name, source) in &wf.attributes {
                check_pattern(&format!("{at}.workflow.attributes.{name}"), source)?;
            }
        }
        for (i, field) in self.watch.iter().enumerate() {
            FieldRef::parse(field).map_err(|e| err(format!("{at}.watch[{i}]"), e))?;
        }
        if let Some(review) = &self.review {
            check_attribute_key(
                &format!("{at}.review.status_attribute"),
                &review.status_attribute,
            )?;
        }
        if let Some(on_delete) = &self.on_delete {
            check_attribute_key(&format!("{at}.on_delete.attribute"), &on_delete.attribute)?;
        }
        if let Some(records) = &self.records
            && records.rm_class_id <= 0
        {
            return Err(err(
                format!("{at}.records.rm_class_id"),
                "must be an RM classification id",
            ));
        }
        if let Some(import) = &self.import {
            for (field, source) in &import.fields {
                check_pattern(&format!("{at}.import.fields.{field}"), source)?;
            }
        }
        if let Some(team) = &self.team {
            self.validate_team(team, &format!("{at}.team"))?;
        }
        Ok(())
    }

    fn validate_team(&self, team: &TeamConfig, at: &str) -> Result<(), MappingError> {
        let read_only = self.records.as_ref().is_some_and(|r| r.read_only);
        for (role, config) in &team.roles {
            let at = format!("{at}.roles.\"{role}\"");
            if role.trim().is_empty() {
                return Err(err(&at, "a role name must not be empty"));
            }
            for (i, member) in config.members.iter().enumerate() {
                check_team_member(&format!("{at}.members[{i}]"), member)?;
            }
            let folders = config
                .folders
                .iter()
                .map(|(path, p)| (format!("{at}.folders.\"{path}\""), p));
            if let Some(permissions) = &config.permissions {
                let at = format!("{at}.permissions");
                check_permissions(&at, permissions, read_only, &ROLE_PERMISSIONS)?;
            }
            for (at, permissions) in folders {
                check_permissions(&at, permissions, read_only, &node_permissions())?;
            }
            if let Some(path) = config.folders.keys().find(|p| folder_segments(p) == 0) {
                return Err(err(
                    format!("{at}.folders.\"{path}\""),
                    "must name a folder of the workspace (`A` or `A/B`)",
                ));
            }
            if config.apply_to > 3 {
                return Err(err(format!("{at}.apply_to"), "must be 0, 1, 2 or 3"));
            }
        }
        Ok(())
    }

    fn validate_trigger(&self, at: &str) -> Result<(), MappingError> {
        if self.trigger.module.trim().is_empty() {
            return Err(err(format!("{at}.module"), "must name a 4ALLPORTAL module"));
        }
        for (i, kind) in self.trigger.events.iter().enumerate() {
            if !EVENT_KINDS.contains(&kind.as_str()) {
                return Err(err(
                    format!("{at}.events[{i}]"),
                    format!("`{kind}` is not one of {}", EVENT_KINDS.join(", ")),
                ));
            }
        }
        check_conditions(&format!("{at}.conditions"), &self.trigger.conditions)
    }

    fn validate_workspace(&self, at: &str) -> Result<(), MappingError> {
        let ws = &self.workspace;
        if ws.bo_type.trim().is_empty() {
            return Err(err(format!("{at}.bo_type"), "must not be empty"));
        }
        match (ws.template_id, ws.wksp_type_id) {
            (None, None) => {
                return Err(err(
                    format!("{at}.template_id"),
                    "missing: give the workspace template id (or `wksp_type_id`)",
                ));
            }
            (Some(t), _) if t <= 0 => {
                return Err(err(format!("{at}.template_id"), "must be a node id"));
            }
            (_, Some(t)) if t <= 0 => {
                return Err(err(format!("{at}.wksp_type_id"), "must be a type id"));
            }
            _ => {}
        }
        check_pattern(&format!("{at}.bo_id"), &ws.bo_id)?;
        check_pattern(&format!("{at}.name"), &ws.name)?;
        check_categories(&format!("{at}.categories"), &ws.categories)?;
        for (i, rel) in ws.relations.iter().enumerate() {
            FieldRef::parse(&rel.field)
                .map_err(|e| err(format!("{at}.relations[{i}].field"), e))?;
            if rel.bo_type.trim().is_empty() {
                return Err(err(
                    format!("{at}.relations[{i}].bo_type"),
                    "must not be empty",
                ));
            }
        }
        Ok(())
    }

    fn validate_content(&self, at: &str) -> Result<(), MappingError> {
        for (i, doc) in self.content.documents.iter().enumerate() {
            let at = format!("{at}.documents[{i}]");
            check_pattern(&format!("{at}.folder"), &doc.folder)?;
            check_pattern(&format!("{at}.name"), &doc.name)?;
            if let Some(t) = &doc.title {
                check_pattern(&format!("{at}.title"), t)?;
            }
            for (j, f) in doc.fields.iter().enumerate() {
                FieldRef::parse(f).map_err(|e| err(format!("{at}.fields[{j}]"), e))?;
            }
            if doc.formats.is_empty() {
                return Err(err(format!("{at}.formats"), "needs json and/or html"));
            }
            check_categories(&format!("{at}.categories"), &doc.categories)?;
        }
        for (i, asset) in self.content.assets.iter().enumerate() {
            let at = format!("{at}.assets[{i}]");
            FieldRef::parse(&asset.relation).map_err(|e| err(format!("{at}.relation"), e))?;
            check_pattern(&format!("{at}.folder"), &asset.folder)?;
            check_pattern(&format!("{at}.name"), &asset.name)?;
            check_conditions(&format!("{at}.conditions"), &asset.conditions)?;
            check_categories(&format!("{at}.categories"), &asset.categories)?;
            if asset.rendition.trim().is_empty() {
                return Err(err(format!("{at}.rendition"), "must not be empty"));
            }
        }
        Ok(())
    }
}
