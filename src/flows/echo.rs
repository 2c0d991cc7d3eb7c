//! Echo suppression. Every write of the bridge to 4ALLPORTAL is recorded with the object's
//! `mod_time` right after it; a change event whose re-read object still shows exactly that
//! `mod_time` was caused by the bridge itself and must not travel back to OpenText.

use serde_json::{Value, json};

use super::error::FlowResult;
use super::fields::value_text;
use super::hash::json_hash;
use super::run::{FlowEnv, Run, System};
use crate::clients::allportal::{DimensionedValue, ModuleObject, ObjectQuery, ObjectWrite};
use crate::store::{WritebackRecord, now_millis};

/// The skip reason of an echo.
pub const ECHO_REASON: &str = "echo of the bridge's own write-back";

/// `Some(reason)` when the object's current state is the bridge's own last write.
pub async fn check(
    env: &FlowEnv,
    module: &str,
    object: &ModuleObject,
) -> FlowResult<Option<String>> {
    let Some(last) = env.store.last_writeback(module, &object.id).await? else {
        return Ok(None);
    };
    let echo = last.mod_time_after.is_some() && last.mod_time_after == object.mod_time;
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

/// Writes `write` to the object unless every field already holds the value; records the write
/// (with the `mod_time` after it) for echo suppression. Returns whether it wrote.
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
    ap.upsert_objects(module, std::slice::from_ref(&write))
        .await?;
    let after = ap.get_object(module, &id, &ObjectQuery::default()).await?;
    let values: Value = write
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    run.env
        .store
        .record_writeback(&WritebackRecord {
            module: module.to_string(),
            object_id: id,
            fields,
            values_hash: json_hash(&values),
            mod_time_after: after.mod_time,
            at: now_millis(),
        })
        .await?;
    Ok(true)
}
