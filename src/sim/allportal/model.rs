//! 4ALLPORTAL state: modules with field schemas, objects whose fields are lists of dimensioned
//! values (`[{value, dimensions}]`), media per rendition type, and an audit trail per object.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::sim::blob::Blob;

/// Field types whose values are ids of objects in other modules (relation fields).
const RELATION_ONE: &str = "CEExternalId";
const RELATION_MANY: &str = "CEExternalIdList";
/// Keys of an object that are not fields and cannot be written.
pub(crate) const RESERVED_KEYS: [&str; 5] = ["id", "module", "type", "mod_time", "_embedded"];

/// A module's schema, as seeded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModuleSchema {
    pub name: String,
    pub label: String,
    pub fields: Vec<FieldSchema>,
}

/// One field of a module. Relation fields (`CEExternalId`, `CEExternalIdList`) name their target
/// modules in `modules`; dimensioned fields name their dimensions (e.g. `locale`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FieldSchema {
    pub name: String,
    #[serde(rename = "type")]
    pub field_type: String,
    #[serde(default)]
    pub dimensions: Vec<String>,
    #[serde(default)]
    pub modules: Vec<String>,
}

impl FieldSchema {
    pub(crate) fn is_relation(&self) -> bool {
        self.field_type == RELATION_ONE || self.field_type == RELATION_MANY
    }

    fn is_list(&self) -> bool {
        self.field_type.ends_with("List")
    }
}

/// One stored value container: `{"value": …, "dimensions": {…}|null}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct CeValue {
    pub(crate) value: Value,
    pub(crate) dimensions: Option<Map<String, Value>>,
}

/// Stored content of one rendition type of an object.
#[derive(Debug, Clone)]
pub(crate) struct Media {
    pub(crate) file_name: String,
    pub(crate) mime_type: String,
    pub(crate) blob: Blob,
}

/// One audit entry, shaped like the API's `AuditEventBeanResult`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuditEntry {
    pub(crate) id: i64,
    pub(crate) related_id: Option<String>,
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) object_id: String,
    pub(crate) create_by: String,
    pub(crate) create_time: String,
    pub(crate) value_old: Option<CeValue>,
    pub(crate) value_new: Option<CeValue>,
    pub(crate) field_name: Option<String>,
    pub(crate) dimensions: Option<Map<String, Value>>,
}

#[derive(Debug, Clone)]
pub(crate) struct Object {
    pub(crate) id: String,
    pub(crate) module: String,
    pub(crate) mod_time: DateTime<Utc>,
    pub(crate) fields: BTreeMap<String, Vec<CeValue>>,
    pub(crate) media: BTreeMap<String, Media>,
    pub(crate) audit: Vec<AuditEntry>,
}

/// The whole 4ALLPORTAL state.
#[derive(Debug, Default)]
pub(crate) struct Store {
    pub(crate) modules: BTreeMap<String, ModuleSchema>,
    /// module → id → object.
    pub(crate) objects: BTreeMap<String, BTreeMap<String, Object>>,
    next_audit_id: i64,
    last_mod_time: Option<DateTime<Utc>>,
}

/// The 4ALLPORTAL timestamp format, e.g. `2022-06-28T10:12:13.000Z`.
pub(crate) fn format_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// A rejected write; becomes a 400 (or 404) with an error body.
#[derive(Debug)]
pub(crate) enum WriteError {
    BadRequest(String),
    NotFound(String),
}

impl Store {
    /// A strictly increasing modification time, so `mod_time > cursor` never misses a change made
    /// in the same millisecond.
    pub(crate) fn next_mod_time(&mut self) -> DateTime<Utc> {
        let mut now = Utc::now();
        now = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
        if let Some(last) = self.last_mod_time
            && now <= last
        {
            now = last + chrono::Duration::milliseconds(1);
        }
        self.last_mod_time = Some(now);
        now
    }

    pub(crate) fn object(&self, module: &str, id: &str) -> Option<&Object> {
        self.objects.get(module)?.get(id)
    }

    fn push_audit(&mut self, module: &str, id: &str, mut entry: AuditEntry) {
        self.next_audit_id += 1;
        entry.id = self.next_audit_id;
        if let Some(object) = self.objects.get_mut(module).and_then(|m| m.get_mut(id)) {
            object.audit.push(entry);
        }
    }

    /// Creates or updates one object from a PATCH entry; returns its id.
    pub(crate) fn upsert(
        &mut self,
        module: &str,
        entry: &Map<String, Value>,
        user: &str,
    ) -> Result<String, WriteError> {
        let schema = self
            .modules
            .get(module)
            .cloned()
            .ok_or_else(|| WriteError::NotFound(format!("Module '{module}' does not exist")))?;
        let id = match entry.get("id") {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            Some(Value::Null) | None => uuid::Uuid::new_v4().to_string(),
            Some(other) => {
                return Err(WriteError::BadRequest(format!("Invalid object id {other}")));
            }
        };
        let changes = self.parse_changes(&schema, entry)?;
        let now_time = self.next_mod_time();
        let created = self.object(module, &id).is_none();
        if created {
            self.objects.entry(module.to_owned()).or_default().insert(
                id.clone(),
                Object {
                    id: id.clone(),
                    module: module.to_owned(),
                    mod_time: now_time,
                    fields: BTreeMap::new(),
                    media: BTreeMap::new(),
                    audit: Vec::new(),
                },
            );
            self.push_audit(
                module,
                &id,
                audit_entry("initial", &id, user, now_time, None),
            );
        }
        let mut changed = created;
        for (field, change) in changes {
            let object = self
                .objects
                .get_mut(module)
                .and_then(|m| m.get_mut(&id))
                .expect("object exists");
            let diffs = apply_change(object, &field, change);
            for (dims, old, new) in diffs {
                changed = true;
                let mut audit = audit_entry("field", &id, user, now_time, Some(&field));
                audit.value_old = old;
                audit.value_new = new;
                audit.dimensions = dims;
                self.push_audit(module, &id, audit);
            }
        }
        if changed && let Some(object) = self.objects.get_mut(module).and_then(|m| m.get_mut(&id)) {
            object.mod_time = now_time;
        }
        Ok(id)
    }

    /// Validates every field of a PATCH entry before anything is written.
    fn parse_changes(
        &self,
        schema: &ModuleSchema,
        entry: &Map<String, Value>,
    ) -> Result<Vec<(String, Change)>, WriteError> {
        let mut changes = Vec::new();
        for (key, value) in entry {
            if RESERVED_KEYS.contains(&key.as_str()) {
                continue;
            }
            let field = schema
                .fields
                .iter()
                .find(|f| &f.name == key)
                .ok_or_else(|| {
                    WriteError::BadRequest(format!(
                        "Field '{key}' does not exist in module '{}'",
                        schema.name
                    ))
                })?;
            let change = match value {
                Value::Null => Change::Clear,
                Value::Array(items) => Change::Set(
                    items
                        .iter()
                        .map(|item| self.parse_value(field, item))
                        .collect::<Result<_, _>>()?,
                ),
                _ => {
                    return Err(WriteError::BadRequest(format!(
                        "Field '{key}' expects a list of {{value, dimensions}}"
                    )));
                }
            };
            changes.push((key.clone(), change));
        }
        Ok(changes)
    }

    fn parse_value(&self, field: &FieldSchema, item: &Value) -> Result<Incoming, WriteError> {
        let obj = item.as_object().ok_or_else(|| {
            WriteError::BadRequest(format!("Field '{}': value must be an object", field.name))
        })?;
        let dimensions = match obj.get("dimensions") {
            None | Some(Value::Null) => None,
            Some(Value::Object(d)) if d.is_empty() => None,
            Some(Value::Object(d)) => Some(d.clone()),
            Some(_) => {
                return Err(WriteError::BadRequest(format!(
                    "Field '{}': dimensions must be an object",
                    field.name
                )));
            }
        };
        check_dimensions(field, dimensions.as_ref())?;
        let instruction = match obj.get("instruction").and_then(Value::as_str) {
            None => Instruction::Overwrite,
            Some(s) => Instruction::parse(s)
                .ok_or_else(|| WriteError::BadRequest(format!("Unknown instruction '{s}'")))?,
        };
        let value = obj.get("value").cloned().unwrap_or(Value::Null);
        if field.is_relation() {
            self.check_relation_targets(field, &value)?;
        }
        if matches!(
            instruction,
            Instruction::ListAdd | Instruction::ListAddForce | Instruction::ListRemove
        ) && !field.is_list()
        {
            return Err(WriteError::BadRequest(format!(
                "Instruction '{}' needs a list field; '{}' is {}",
                instruction.name(),
                field.name,
                field.field_type
            )));
        }
        Ok(Incoming {
            value,
            dimensions,
            instruction,
        })
    }

    fn check_relation_targets(&self, field: &FieldSchema, value: &Value) -> Result<(), WriteError> {
        let ids: Vec<&str> = match value {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            Value::Null => Vec::new(),
            _ => {
                return Err(WriteError::BadRequest(format!(
                    "Field '{}': relation values are object ids",
                    field.name
                )));
            }
        };
        for id in ids {
            let found = field.modules.iter().any(|m| self.object(m, id).is_some());
            if !found {
                return Err(WriteError::BadRequest(format!(
                    "Field '{}': related object '{id}' does not exist",
                    field.name
                )));
            }
        }
        Ok(())
    }

    /// Stores media for an object and records it in the audit trail.
    pub(crate) fn put_media(
        &mut self,
        module: &str,
        id: &str,
        media_type: &str,
        media: Media,
        user: &str,
    ) -> Result<(), WriteError> {
        if self.object(module, id).is_none() {
            return Err(WriteError::NotFound(format!("Object '{id}' not found")));
        }
        let now_time = self.next_mod_time();
        let object = self
            .objects
            .get_mut(module)
            .and_then(|m| m.get_mut(id))
            .expect("checked above");
        object.media.insert(media_type.to_owned(), media);
        object.mod_time = now_time;
        self.push_audit(
            module,
            id,
            audit_entry("object_image_upload", id, user, now_time, None),
        );
        Ok(())
    }
}

fn audit_entry(
    kind: &str,
    id: &str,
    user: &str,
    at: DateTime<Utc>,
    field: Option<&str>,
) -> AuditEntry {
    AuditEntry {
        id: 0,
        related_id: None,
        kind: kind.to_owned(),
        object_id: id.to_owned(),
        create_by: user.to_owned(),
        create_time: format_time(at),
        value_old: None,
        value_new: None,
        field_name: field.map(str::to_owned),
        dimensions: None,
    }
}

/// Dimension rules: a non-dimensioned field takes no dimensions; a dimensioned one takes either
/// none ("not explicit") or all of its dimensions, and no others.
fn check_dimensions(
    field: &FieldSchema,
    dims: Option<&Map<String, Value>>,
) -> Result<(), WriteError> {
    let Some(dims) = dims else {
        return Ok(());
    };
    if field.dimensions.is_empty() {
        return Err(WriteError::BadRequest(format!(
            "Field '{}' has no dimensions",
            field.name
        )));
    }
    for key in dims.keys() {
        if !field.dimensions.contains(key) {
            return Err(WriteError::BadRequest(format!(
                "Field '{}' has no dimension '{key}'",
                field.name
            )));
        }
    }
    for required in &field.dimensions {
        if !dims.contains_key(required) {
            return Err(WriteError::BadRequest(format!(
                "Field '{}': dimension '{required}' must be set",
                field.name
            )));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Instruction {
    Overwrite,
    IfEmpty,
    ListAdd,
    ListAddForce,
    ListRemove,
}

impl Instruction {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "overwrite" => Self::Overwrite,
            "if_empty" => Self::IfEmpty,
            "list_add" => Self::ListAdd,
            "list_add_force" => Self::ListAddForce,
            "list_remove" => Self::ListRemove,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Overwrite => "overwrite",
            Self::IfEmpty => "if_empty",
            Self::ListAdd => "list_add",
            Self::ListAddForce => "list_add_force",
            Self::ListRemove => "list_remove",
        }
    }
}

#[derive(Debug)]
struct Incoming {
    value: Value,
    dimensions: Option<Map<String, Value>>,
    instruction: Instruction,
}

#[derive(Debug)]
enum Change {
    /// `field: null` deletes every value of the field.
    Clear,
    Set(Vec<Incoming>),
}

type Diff = (Option<Map<String, Value>>, Option<CeValue>, Option<CeValue>);

/// Applies one field change; returns (dimensions, old, new) for every value that changed.
fn apply_change(object: &mut Object, field: &str, change: Change) -> Vec<Diff> {
    let values = object.fields.entry(field.to_owned()).or_default();
    let mut diffs = Vec::new();
    match change {
        Change::Clear => {
            for old in values.drain(..) {
                diffs.push((old.dimensions.clone(), Some(old), None));
            }
        }
        Change::Set(items) => {
            for item in items {
                apply_one(values, item, &mut diffs);
            }
        }
    }
    if values.is_empty() {
        object.fields.remove(field);
    }
    diffs
}

fn apply_one(values: &mut Vec<CeValue>, item: Incoming, diffs: &mut Vec<Diff>) {
    // Writing an explicit value drops the non-explicit ones, and vice versa.
    let explicit = item.dimensions.is_some();
    values.retain(|v| {
        let keep = v.dimensions.is_some() == explicit;
        if !keep {
            diffs.push((v.dimensions.clone(), Some(v.clone()), None));
        }
        keep
    });
    let slot = values.iter().position(|v| v.dimensions == item.dimensions);
    let old = slot.map(|i| values[i].clone());
    let new_value = match item.instruction {
        Instruction::Overwrite => Some(item.value),
        Instruction::IfEmpty => match &old {
            Some(v) if !is_empty_value(&v.value) => None,
            _ => Some(item.value),
        },
        Instruction::ListAdd | Instruction::ListAddForce => {
            let mut list = old.as_ref().map(|v| as_list(&v.value)).unwrap_or_default();
            for add in as_list(&item.value) {
                if item.instruction == Instruction::ListAddForce || !list.contains(&add) {
                    list.push(add);
                }
            }
            Some(Value::Array(list))
        }
        Instruction::ListRemove => {
            let remove = as_list(&item.value);
            let list: Vec<Value> = old
                .as_ref()
                .map(|v| as_list(&v.value))
                .unwrap_or_default()
                .into_iter()
                .filter(|v| !remove.contains(v))
                .collect();
            Some(Value::Array(list))
        }
    };
    let Some(new_value) = new_value else {
        return;
    };
    let new = CeValue {
        value: new_value,
        dimensions: item.dimensions.clone(),
    };
    if old.as_ref() == Some(&new) {
        return;
    }
    match slot {
        Some(i) => values[i] = new.clone(),
        None => values.push(new.clone()),
    }
    diffs.push((item.dimensions, old, Some(new)));
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn as_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items.clone(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    }
}

impl Object {
    /// The object as the API returns it: reserved keys plus every (selected) field.
    pub(crate) fn to_json(&self, fields: Option<&[String]>) -> Value {
        let mut out = Map::new();
        out.insert("id".into(), json!(self.id));
        out.insert("module".into(), json!(self.module));
        out.insert("type".into(), json!("default"));
        out.insert("mod_time".into(), json!(format_time(self.mod_time)));
        for (name, values) in &self.fields {
            if fields.is_some_and(|f| !f.iter().any(|x| x == name)) {
                continue;
            }
            out.insert(name.clone(), json!(values));
        }
        Value::Object(out)
    }

    /// All string forms of a field's values, for query matching.
    pub(crate) fn field_strings(&self, field: &str) -> Vec<String> {
        match field {
            "id" => return vec![self.id.clone()],
            "mod_time" => return vec![format_time(self.mod_time)],
            "module" => return vec![self.module.clone()],
            _ => {}
        }
        let mut out = Vec::new();
        for v in self.fields.get(field).into_iter().flatten() {
            for item in as_list(&v.value) {
                match item {
                    Value::String(s) => out.push(s),
                    Value::Null => {}
                    other => out.push(other.to_string()),
                }
            }
        }
        out
    }

    /// Ids this object points to through a relation field.
    pub(crate) fn related_ids(&self, field: &str) -> Vec<String> {
        self.field_strings(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        let mut store = Store::default();
        store.modules.insert(
            "product".into(),
            ModuleSchema {
                name: "product".into(),
                label: "Product".into(),
                fields: vec![
                    FieldSchema {
                        name: "name".into(),
                        field_type: "CEVarchar".into(),
                        dimensions: vec!["locale".into()],
                        modules: vec![],
                    },
                    FieldSchema {
                        name: "tags".into(),
                        field_type: "CEVarcharList".into(),
                        dimensions: vec![],
                        modules: vec![],
                    },
                ],
            },
        );
        store
    }

    fn entry(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn list_instructions_add_and_remove() {
        let mut s = store();
        let id = s
            .upsert("product", &entry(json!({"tags":[{"value":["a"]}]})), "u")
            .unwrap();
        s.upsert(
            "product",
            &entry(json!({"id": id, "tags":[{"value":["a","b"],"instruction":"list_add"}]})),
            "u",
        )
        .unwrap();
        assert_eq!(
            s.object("product", &id).unwrap().field_strings("tags"),
            ["a", "b"]
        );
        s.upsert(
            "product",
            &entry(json!({"id": id, "tags":[{"value":["a"],"instruction":"list_remove"}]})),
            "u",
        )
        .unwrap();
        assert_eq!(
            s.object("product", &id).unwrap().field_strings("tags"),
            ["b"]
        );
    }

    #[test]
    fn partial_dimensions_and_unknown_fields_are_rejected() {
        let mut s = store();
        let bad = s.upsert(
            "product",
            &entry(json!({"name":[{"value":"x","dimensions":{"channel":"erp"}}]})),
            "u",
        );
        assert!(matches!(bad, Err(WriteError::BadRequest(_))));
        let bad = s.upsert("product", &entry(json!({"nope":[{"value":"x"}]})), "u");
        assert!(matches!(bad, Err(WriteError::BadRequest(_))));
        assert!(s.objects.get("product").is_none_or(|m| m.is_empty()));
    }

    #[test]
    fn explicit_value_replaces_non_explicit_one() {
        let mut s = store();
        let id = s
            .upsert("product", &entry(json!({"name":[{"value":"plain"}]})), "u")
            .unwrap();
        s.upsert(
            "product",
            &entry(json!({"id": id, "name":[{"value":"Pumpe","dimensions":{"locale":"de_DE"}}]})),
            "u",
        )
        .unwrap();
        let obj = s.object("product", &id).unwrap();
        assert_eq!(obj.fields["name"].len(), 1);
        assert_eq!(obj.fields["name"][0].value, json!("Pumpe"));
    }
}
