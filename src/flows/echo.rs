//! Echo suppression. Before the bridge writes to a 4ALLPORTAL object it records, durably, the
//! content the object will have after the write (the current content with the written values
//! applied). A change event is the echo of that write when the re-read object shows exactly that
//! content and every merged event arrived after the record was made: the echo is recognised by
//! content, not by timing, so it is caught even when its webhook arrives before the write's
//! response. A user edit made in between changes the content and is therefore a change; an event
//! received before the record was made cannot be the echo, so it is never swallowed.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::error::FlowResult;
use super::fields::value_text;
use super::hash::json_hash;
use super::run::{FlowEnv, Run, System};
use crate::clients::allportal::{DimensionedValue, ModuleObject, ObjectQuery, ObjectWrite};
use crate::store::{StoredEvent, WritebackRecord, now_millis};

/// The skip reason of an echo.
pub const ECHO_REASON: &str = "echo of the bridge's own write-back";

/// Recent write-backs compared with an object's content (several flows may write one object).
const RECENT_WRITEBACKS: i64 = 20;

/// An object's business content: per field, per dimensions, the set of values (relation values
/// by id). System keys (`id`, `mod_time`, …) are not part of it; empty fields are left out, so a
/// cleared field and an absent one are the same content.
type Content = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn leaves(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Null => {}
        Value::Array(items) => items.iter().for_each(|i| leaves(i, out)),
        Value::Object(o) => match o.get("id") {
            Some(id) => leaves(id, out),
            None => {
                out.insert(value.to_string());
            }
        },
        other => {
            out.extend(value_text(other));
        }
    }
}

fn field_content(values: &[DimensionedValue]) -> BTreeMap<String, BTreeSet<String>> {
    let mut by_dims: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for v in values {
        let dims = v
            .dimensions
            .as_ref()
            .filter(|d| !d.is_empty())
            .map(|d| json!(d).to_string())
            .unwrap_or_default();
        leaves(&v.value, by_dims.entry(dims).or_default());
    }
    by_dims.retain(|_, set| !set.is_empty());
    by_dims
}

fn content(object: &ModuleObject) -> Content {
    let mut content = Content::new();
    for (field, values) in &object.fields {
        set_field(&mut content, field, field_content(values));
    }
    content
}

fn set_field(content: &mut Content, field: &str, values: BTreeMap<String, BTreeSet<String>>) {
    if values.is_empty() {
        content.remove(field);
    } else {
        content.insert(field.to_string(), values);
    }
}

fn content_hash(content: &Content) -> String {
    json_hash(&json!(content))
}

/// `Some(reason)` when the object's current content is what one of the bridge's recorded
/// write-backs leaves, and every event of the run arrived after that write-back was recorded.
pub async fn check(
    env: &FlowEnv,
    module: &str,
    object: &ModuleObject,
    events: &[StoredEvent],
) -> FlowResult<Option<String>> {
    let recent = env
        .store
        .recent_writebacks(module, &object.id, RECENT_WRITEBACKS)
        .await?;
    if recent.is_empty() {
        return Ok(None);
    }
    let current = content_hash(&content(object));
    let echo = recent
        .iter()
        .any(|w| w.values_hash == current && events.iter().all(|e| e.received_at >= w.at));
    Ok(echo.then(|| ECHO_REASON.to_string()))
}

fn values_text(values: &[DimensionedValue]) -> Vec<(Option<String>, String)> {
    values
        .iter()
        .map(|v| {
            (
                v.dimensions.as_ref().map(|d| json!(d).to_string()),
                value_text(&v.value).unwrap_or_default(),
            )
        })
        .collect()
}

/// Records, before the write, the content `object` will have once `change` is applied to it.
async fn record_intended(
    run: &Run<'_>,
    module: &str,
    object: &ModuleObject,
    fields: Vec<String>,
    change: impl FnOnce(&mut Content),
) -> FlowResult<()> {
    let mut expected = content(object);
    change(&mut expected);
    run.env
        .store
        .record_writeback(&WritebackRecord {
            module: module.to_string(),
            object_id: object.id.clone(),
            fields,
            values_hash: content_hash(&expected),
            mod_time_after: None,
            at: now_millis(),
        })
        .await?;
    Ok(())
}

/// Writes `write` to the object unless every field already holds the value; the content it
/// leaves is recorded first, for echo suppression. Returns whether it wrote.
pub async fn write_back(
    run: &mut Run<'_>,
    module: &str,
    write: ObjectWrite,
    what: &str,
) -> FlowResult<bool> {
    let Some(id) = write.id.clone() else {
        return Ok(false);
    };
    let ap = run.env.allportal.clone();
    let current = ap.get_object(module, &id, &ObjectQuery::default()).await?;
    let differs = write.fields.iter().any(|(field, values)| {
        let wanted = values.as_deref().map(values_text).unwrap_or_default();
        let have = values_text(current.values(field));
        wanted != have
    });
    if !differs {
        return Ok(false);
    }
    let fields: Vec<String> = write.fields.keys().cloned().collect();
    let description = format!("write {what} to {module}/{id} ({})", fields.join(", "));
    if !run.write(System::Allportal, "write_back", description) {
        return Ok(true);
    }
    record_intended(run, module, &current, fields, |content| {
        for (field, values) in &write.fields {
            set_field(
                content,
                field,
                field_content(values.as_deref().unwrap_or_default()),
            );
        }
    })
    .await?;
    ap.upsert_objects(module, std::slice::from_ref(&write))
        .await?;
    Ok(true)
}

/// Adds `target_id` to the relation `field` of the object unless it is there; the content it
/// leaves is recorded first, for echo suppression. Returns whether it wrote.
pub async fn link(
    run: &mut Run<'_>,
    module: &str,
    id: &str,
    field: &str,
    target_id: &str,
) -> FlowResult<bool> {
    let ap = run.env.allportal.clone();
    let current = ap.get_object(module, id, &ObjectQuery::default()).await?;
    if current.related_ids(field).iter().any(|i| i == target_id) {
        return Ok(false);
    }
    let description = format!("link {target_id} to {module}/{id} ({field})");
    if !run.write(System::Allportal, "link", description) {
        return Ok(true);
    }
    record_intended(run, module, &current, vec![field.to_string()], |content| {
        content
            .entry(field.to_string())
            .or_default()
            .entry(String::new())
            .or_default()
            .insert(target_id.to_string());
    })
    .await?;
    ap.link(module, id, field, &[target_id]).await?;
    Ok(true)
}
