//! Start-up check of the mapping against 4ALLPORTAL's module schemas: every field named must
//! exist in its module, relation fields must be relations, a locale or channel may only be
//! given for a field dimensioned by it, and values must fit the field's type. Errors name the
//! key.

use std::collections::{BTreeMap, BTreeSet};

use super::condition::Condition;
use super::fields::{FieldRef, ScopeName};
use super::mapping::{FlowMapping, FlowsConfig, MappingError};
use super::pattern::Pattern;
use super::values::{MappedValue, ValueSource};
use crate::clients::UpstreamError;
use crate::clients::allportal::{AllportalClient, ModuleConfig, ModuleField};

/// Modules the mapping reads, so that only their schemas are fetched.
pub fn modules_used(flows: &FlowsConfig) -> BTreeSet<String> {
    let mut modules = BTreeSet::new();
    for (_, m) in flows.enabled() {
        modules.insert(m.trigger.module.clone());
        if let Some(items) = &m.items {
            modules.insert(items.module.clone());
        }
        for asset in &m.content.assets {
            modules.insert(asset.module.clone());
        }
        if let Some(wb) = &m.write_back
            && let Some(module) = &wb.module
        {
            modules.insert(module.clone());
        }
        if let Some(import) = &m.import {
            modules.insert(import.module.clone());
        }
    }
    modules
}

/// Fetches the schemas of the modules used and checks the mapping against them.
pub async fn check_upstream(
    flows: &FlowsConfig,
    allportal: &AllportalClient,
) -> Result<(), SchemaCheckError> {
    let mut schemas = BTreeMap::new();
    for module in modules_used(flows) {
        match allportal.module_schema(&module).await {
            Ok(schema) => {
                schemas.insert(module, schema);
            }
            // An unknown module is a mapping error; the check below names the key using it.
            Err(UpstreamError::NotFound { .. }) => {}
            Err(error) => return Err(SchemaCheckError::Upstream { module, error }),
        }
    }
    validate_schema(flows, &schemas).map_err(SchemaCheckError::Mapping)
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaCheckError {
    #[error("cannot read the schema of 4ALLPORTAL module `{module}`: {error}")]
    Upstream {
        module: String,
        error: UpstreamError,
    },
    #[error("invalid flow mapping: {0}")]
    Mapping(MappingError),
}

fn err(key: impl Into<String>, problem: impl Into<String>) -> MappingError {
    MappingError {
        key: key.into(),
        problem: problem.into(),
    }
}

fn is_relation(field: &ModuleField) -> bool {
    !field.modules.is_empty()
        || field
            .field_type
            .as_deref()
            .is_some_and(|t| t.starts_with("CEExternalId"))
}

fn is_list(field: &ModuleField) -> bool {
    field
        .field_type
        .as_deref()
        .is_some_and(|t| t.ends_with("List"))
}

/// The modules a rule position can read: object, item, asset.
#[derive(Clone, Copy)]
struct Modules<'a> {
    object: &'a str,
    item: Option<&'a str>,
    asset: Option<&'a str>,
}

impl Modules<'_> {
    fn of(&self, scope: Option<ScopeName>) -> Option<&str> {
        match scope {
            None => self.asset.or(self.item).or(Some(self.object)),
            Some(ScopeName::Object) => Some(self.object),
            Some(ScopeName::Item) => self.item,
            Some(ScopeName::Asset) => self.asset,
        }
    }
}

struct Checker<'a> {
    schemas: &'a BTreeMap<String, ModuleConfig>,
    /// Names the flow computes itself (e.g. `data_hash`).
    computed: &'a [&'a str],
}

impl Checker<'_> {
    fn field<'s>(
        &'s self,
        key: &str,
        modules: Modules<'_>,
        f: &FieldRef,
    ) -> Result<Option<&'s ModuleField>, MappingError> {
        if f.is_system() {
            return Ok(None);
        }
        if f.scope.is_none() && self.computed.contains(&f.field.as_str()) {
            return Ok(None);
        }
        let module = modules
            .of(f.scope)
            .ok_or_else(|| err(key, format!("`{}`: this rule has no such object", f.field)))?;
        let schema = self
            .schemas
            .get(module)
            .ok_or_else(|| err(key, format!("module `{module}` is unknown in 4ALLPORTAL")))?;
        let field = schema
            .fields
            .iter()
            .find(|x| x.name == f.field)
            .ok_or_else(|| {
                let fields: Vec<&str> = schema.fields.iter().map(|x| x.name.as_str()).collect();
                err(
                    key,
                    format!(
                        "unknown field `{}` in module `{module}`; its fields: {}",
                        f.field,
                        fields.join(", ")
                    ),
                )
            })?;
        for (dimension, given) in [("locale", &f.locale), ("channel", &f.channel)] {
            if given.is_some() && !field.dimensions.iter().any(|d| d == dimension) {
                return Err(err(
                    key,
                    format!(
                        "type mismatch: field `{}` of `{module}` is not dimensioned by {dimension}",
                        f.field
                    ),
                ));
            }
        }
        Ok(Some(field))
    }

    fn field_text(&self, key: &str, modules: Modules<'_>, text: &str) -> Result<(), MappingError> {
        let f = FieldRef::parse(text).map_err(|e| err(key, e))?;
        self.field(key, modules, &f).map(drop)
    }

    fn relation(&self, key: &str, modules: Modules<'_>, text: &str) -> Result<(), MappingError> {
        let f = FieldRef::parse(text).map_err(|e| err(key, e))?;
        if let Some(field) = self.field(key, modules, &f)?
            && !is_relation(field)
        {
            return Err(err(
                key,
                format!("type mismatch: `{}` is not a relation field", f.field),
            ));
        }
        Ok(())
    }

    fn pattern(&self, key: &str, modules: Modules<'_>, source: &str) -> Result<(), MappingError> {
        let p = Pattern::parse(source).map_err(|e| err(key, e))?;
        for f in p.fields() {
            self.field(key, modules, f)?;
        }
        Ok(())
    }

    fn categories(
        &self,
        at: &str,
        modules: Modules<'_>,
        categories: &BTreeMap<String, ValueSource>,
    ) -> Result<(), MappingError> {
        for (attribute, source) in categories {
            let key = format!("{at}.\"{attribute}\"");
            let p = MappedValue::parse(source).map_err(|e| err(&key, e))?;
            for f in p.fields() {
                self.field(&key, modules, f)?;
            }
        }
        Ok(())
    }

    fn conditions(
        &self,
        at: &str,
        modules: Modules<'_>,
        conditions: &[Condition],
    ) -> Result<(), MappingError> {
        for (i, c) in conditions.iter().enumerate() {
            let key = format!("{at}[{i}]");
            let f = c.field_ref().map_err(|e| err(&key, e))?;
            let Some(field) = self.field(&key, modules, &f)? else {
                continue;
            };
            if c.equals.is_some() && is_list(field) {
                return Err(err(
                    &key,
                    format!(
                        "type mismatch: `{}` is a list field; `equals` compares a single value",
                        c.field
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Checks every enabled flow against the module schemas.
pub fn validate_schema(
    flows: &FlowsConfig,
    schemas: &BTreeMap<String, ModuleConfig>,
) -> Result<(), MappingError> {
    let checker = Checker {
        schemas,
        computed: &["data_hash", "change_id"],
    };
    for (name, mapping) in flows.enabled() {
        if let Some(first) = check_flow(&checker, &format!("flows.{name}"), mapping)
            .into_iter()
            .next()
        {
            return Err(first);
        }
    }
    Ok(())
}

/// [`validate_schema`] for one flow at `at` (`flows.<name>`): every problem.
pub fn validate_flow_schema(
    at: &str,
    mapping: &FlowMapping,
    schemas: &BTreeMap<String, ModuleConfig>,
) -> Vec<MappingError> {
    let checker = Checker {
        schemas,
        computed: &["data_hash", "change_id"],
    };
    check_flow(&checker, at, mapping)
}

/// Every problem of one flow, in the order of its keys.
fn check_flow(c: &Checker<'_>, at: &str, m: &FlowMapping) -> Vec<MappingError> {
    let mut found = Vec::new();
    if let Err(e) = check_flow_into(c, at, m, &mut found) {
        found.push(e);
    }
    found
}

/// Records a problem and goes on with the next key.
fn note(found: &mut Vec<MappingError>, result: Result<(), MappingError>) {
    if let Err(e) = result {
        found.push(e);
    }
}

/// Checks one flow; independent keys are noted in `found`, an error that stops the rest of
/// the flow's check (an unknown module) is returned.
fn check_flow_into(
    c: &Checker<'_>,
    at: &str,
    m: &FlowMapping,
    found: &mut Vec<MappingError>,
) -> Result<(), MappingError> {
    let object = m.trigger.module.as_str();
    if !c.schemas.contains_key(object) {
        let known: Vec<&str> = c.schemas.keys().map(String::as_str).collect();
        return Err(err(
            format!("{at}.trigger.module"),
            format!(
                "module `{object}` is unknown in 4ALLPORTAL (modules the mapping reads that \
                 exist: {})",
                known.join(", ")
            ),
        ));
    }
    let base = Modules {
        object,
        item: None,
        asset: None,
    };
    let with_items = Modules {
        item: m.items.as_ref().map(|i| i.module.as_str()),
        ..base
    };
    note(
        found,
        c.conditions(
            &format!("{at}.trigger.conditions"),
            base,
            &m.trigger.conditions,
        ),
    );
    if let Some(items) = &m.items {
        note(
            found,
            c.relation(&format!("{at}.items.relation"), base, &items.relation),
        );
        note(
            found,
            c.conditions(
                &format!("{at}.items.conditions"),
                with_items,
                &items.conditions,
            ),
        );
    }
    let ws_scope = if m.mode.is_some() { with_items } else { base };
    let ws = &m.workspace;
    note(
        found,
        c.pattern(&format!("{at}.workspace.bo_id"), ws_scope, &ws.bo_id),
    );
    note(
        found,
        c.pattern(&format!("{at}.workspace.name"), ws_scope, &ws.name),
    );
    note(
        found,
        c.categories(
            &format!("{at}.workspace.categories"),
            ws_scope,
            &ws.categories,
        ),
    );
    for (i, rel) in ws.relations.iter().enumerate() {
        note(
            found,
            c.relation(
                &format!("{at}.workspace.relations[{i}].field"),
                base,
                &rel.field,
            ),
        );
    }
    for (i, doc) in m.content.documents.iter().enumerate() {
        let key = format!("{at}.content.documents[{i}]");
        note(
            found,
            c.pattern(&format!("{key}.folder"), with_items, &doc.folder),
        );
        note(
            found,
            c.pattern(&format!("{key}.name"), with_items, &doc.name),
        );
        if let Some(t) = &doc.title {
            note(found, c.pattern(&format!("{key}.title"), with_items, t));
        }
        for (j, f) in doc.fields.iter().enumerate() {
            note(
                found,
                c.field_text(&format!("{key}.fields[{j}]"), with_items, f),
            );
        }
        note(
            found,
            c.categories(&format!("{key}.categories"), with_items, &doc.categories),
        );
    }
    for (i, asset) in m.content.assets.iter().enumerate() {
        let key = format!("{at}.content.assets[{i}]");
        note(
            found,
            c.relation(&format!("{key}.relation"), with_items, &asset.relation),
        );
        if !c.schemas.contains_key(&asset.module) {
            return Err(err(
                format!("{key}.module"),
                format!("module `{}` is unknown in 4ALLPORTAL", asset.module),
            ));
        }
        let with_asset = Modules {
            asset: Some(asset.module.as_str()),
            ..with_items
        };
        note(
            found,
            c.pattern(&format!("{key}.folder"), with_asset, &asset.folder),
        );
        note(
            found,
            c.pattern(&format!("{key}.name"), with_asset, &asset.name),
        );
        note(
            found,
            c.conditions(&format!("{key}.conditions"), with_asset, &asset.conditions),
        );
        note(
            found,
            c.categories(&format!("{key}.categories"), with_asset, &asset.categories),
        );
    }
    for (i, field) in m.watch.iter().enumerate() {
        note(
            found,
            c.field_text(&format!("{at}.watch[{i}]"), base, field),
        );
    }
    for (role, config) in m.team.iter().flat_map(|t| &t.roles) {
        for (i, member) in config.members.iter().enumerate() {
            if let Some(field) = &member.field {
                let key = format!("{at}.team.roles.\"{role}\".members[{i}].field");
                note(found, c.field_text(&key, ws_scope, field));
            }
        }
    }
    if let Some(wf) = &m.workflow {
        note(
            found,
            c.pattern(&format!("{at}.workflow.title"), base, &wf.title),
        );
        for (name, source) in &wf.attributes {
            note(
                found,
                c.pattern(&format!("{at}.workflow.attributes.{name}"), base, source),
            );
        }
    }
    if let Some(wb) = &m.write_back {
        let module = wb.module.as_deref().unwrap_or(object);
        let target = Modules {
            object: module,
            item: None,
            asset: None,
        };
        note(
            found,
            c.field_text(
                &format!("{at}.write_back.decision_field"),
                target,
                &wb.decision_field,
            ),
        );
        for (key, field) in [
            ("comment_field", &wb.comment_field),
            ("approver_field", &wb.approver_field),
        ] {
            if let Some(f) = field {
                note(
                    found,
                    c.field_text(&format!("{at}.write_back.{key}"), target, f),
                );
            }
        }
        if let Some(date) = &wb.date_field {
            let key = format!("{at}.write_back.date_field");
            let f = FieldRef::parse(date).map_err(|e| err(&key, e))?;
            if let Some(field) = c.field(&key, target, &f)? {
                let t = field.field_type.as_deref().unwrap_or_default();
                if !(t.contains("Timestamp") || t.contains("Date")) {
                    return Err(err(
                        key,
                        format!("type mismatch: `{date}` is `{t}`, a date field is needed"),
                    ));
                }
            }
        }
    }
    if let Some(import) = &m.import {
        let product = m
            .items
            .as_ref()
            .map(|i| i.module.as_str())
            .unwrap_or(object);
        let target = Modules {
            object: product,
            item: None,
            asset: None,
        };
        note(
            found,
            c.relation(
                &format!("{at}.import.link_field"),
                target,
                &import.link_field,
            ),
        );
        let file = Modules {
            object: import.module.as_str(),
            item: None,
            asset: None,
        };
        for field in import.fields.keys() {
            note(
                found,
                c.field_text(&format!("{at}.import.fields.{field}"), file, field),
            );
        }
    }
    Ok(())
}
