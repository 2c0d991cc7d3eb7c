//! `change`: when watched attributes of a product change, a change-review workspace keyed per
//! product and change (`{change_id}` = the newest audit entry of the change) with a change
//! document listing each changed field old → new from 4ALLPORTAL's audit history, supporting
//! documents, and an approval workflow on them. Return path: the decision (OpenText callback
//! or the workflow poller's finding) is written to the configured 4ALLPORTAL fields.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Value, json};

use super::echo;
use super::engine::{MappedFlow, bo_key, pattern, render_categories};
use super::ensure::{Content, DocumentSpec};
use super::error::{FlowError, FlowResult};
use super::fields::{Scope, value_text};
use super::hash::json_hash;
use super::mapping::DocumentFormat;
use super::run::Run;
use super::snapshot::{Row, html_page};
use super::state::{ChangeSource, LinkState};
use crate::clients::allportal::{AuditEvent, DimensionedValue, ModuleObject, ObjectWrite};
use crate::clients::opentext::NodeId;
use crate::clients::opentext::callback::CallbackShape;
use crate::store::{LinkRecord, StoredEvent, WorkflowRecord, now_millis};

/// Audit entries read per run; older changes were reviewed before.
const AUDIT_PAGE: u64 = 500;

/// The product-level state: the newest audit entry already under review.
fn last_reviewed(link: &LinkRecord) -> i64 {
    LinkState::of(link).last_audit_id.unwrap_or(0)
}

fn audit_value(v: &Option<Value>) -> String {
    let Some(v) = v else { return String::new() };
    value_text(v.get("value").unwrap_or(v)).unwrap_or_default()
}

/// Audit entry type of an object's creation; the field entries written with it (same time)
/// are the initial values.
const AUDIT_CREATION: &str = "initial";

/// The time of the object's creation in its audit trail, if the page holds it.
fn created_at(audit: &[AuditEvent]) -> Option<(i64, Option<String>)> {
    audit
        .iter()
        .find(|e| e.event_type.as_deref() == Some(AUDIT_CREATION))
        .map(|e| (e.id, e.create_time.clone()))
}

/// The watched-field entries newer than the last review, oldest first. Unless `on_create`,
/// the initial values (the entries of the creation) are no change.
fn pending_changes(
    watch: &[String],
    audit: Vec<AuditEvent>,
    after: i64,
    on_create: bool,
) -> Vec<AuditEvent> {
    let creation = (!on_create).then(|| created_at(&audit)).flatten();
    let initial = |e: &AuditEvent| {
        creation
            .as_ref()
            .is_some_and(|(id, at)| e.id >= *id && at.is_some() && e.create_time == *at)
    };
    let mut changes: Vec<AuditEvent> = audit
        .into_iter()
        .filter(|e| e.id > after)
        .filter(|e| !initial(e))
        .filter(|e| {
            e.field_name
                .as_deref()
                .is_some_and(|f| watch.iter().any(|w| w.split('@').next() == Some(f)))
        })
        .collect();
    changes.sort_by_key(|e| e.id);
    changes
}

/// The object's module: as 4ALLPORTAL reports it, else the flow's trigger module.
fn module_of(flow: &MappedFlow, object: &ModuleObject) -> String {
    object
        .module
        .clone()
        .unwrap_or_else(|| flow.mapping.trigger.module.clone())
}

/// The object's most recent audit entries (one page), read from 4ALLPORTAL.
pub(crate) async fn audit_of(
    flow: &MappedFlow,
    run: &Run<'_>,
    object: &ModuleObject,
) -> FlowResult<Vec<AuditEvent>> {
    let module = module_of(flow, object);
    Ok(run
        .env
        .allportal
        .audit(&module, &object.id, 0, AUDIT_PAGE, None)
        .await?
        .audit)
}

pub(crate) async fn forward(
    flow: &MappedFlow,
    run: &mut Run<'_>,
    object: &ModuleObject,
    link: LinkRecord,
) -> FlowResult<Option<String>> {
    let module = module_of(flow, object);
    let audit = audit_of(flow, run, object).await?;
    let changes = pending_changes(
        &flow.mapping.watch,
        audit,
        last_reviewed(&link),
        flow.mapping.trigger.on_create,
    );
    let Some(newest) = changes.last().map(|e| e.id) else {
        return Ok(Some(
            "no watched attribute changed since the last review".into(),
        ));
    };
    let change_id = newest.to_string();
    let mut scope = Scope::of(object).compute("change_id", change_id.clone());
    for (k, v) in flow.computed(object) {
        scope = scope.compute(&k, v);
    }
    let spec = flow.workspace_spec(&scope)?;
    let key = bo_key(&spec.bo);
    let ws_link = flow.link(&key).await?;
    let mut ws_state = LinkState::of(&ws_link);
    let (ws, created) = run.ensure_workspace(&spec).await?;
    let categories_hash = json_hash(&json!(spec.categories));
    if !created && ws_state.categories.as_ref() != Some(&categories_hash) {
        run.ensure_categories(ws, "the workspace", &spec.categories)
            .await?;
    }
    ws_state.categories = Some(categories_hash);
    super::team::ensure(flow, run, &scope, &key, &[], ws, &mut ws_state).await?;
    let mut documents =
        change_documents(flow, run, &scope, ws, object, &change_id, &changes).await?;
    let placed = flow.ensure_content(run, ws, &scope, &[]).await?;
    documents.extend(placed.documents.iter().map(|(_, id)| *id));
    if ws_state.process_id.is_none()
        && let Some(wf) = &flow.mapping.workflow
    {
        let title = pattern(&wf.title)?
            .render(&scope)
            .map_err(FlowError::Mapping)?;
        let mut attributes = BTreeMap::new();
        for (name, source) in &wf.attributes {
            attributes.insert(
                name.clone(),
                pattern(source)?.render(&scope).unwrap_or_default(),
            );
        }
        let comment = wf.comment.clone().unwrap_or_default();
        if let Some(pid) = run
            .start_workflow(wf.map_id, &documents, &title, &attributes, &comment, &key)
            .await?
        {
            ws_state.process_id = Some(pid);
        }
    }
    ws_state.source = Some(ChangeSource {
        module,
        id: object.id.clone(),
        change_id,
    });
    flow.save_link(run, &key, Some(ws), &ws_state).await?;
    let mut state = LinkState::of(&link);
    state.last_audit_id = Some(newest);
    flow.save_link(run, &link.object_key, None, &state).await?;
    Ok(None)
}

/// The change document (old → new per changed field) in the configured folder and formats.
async fn change_documents(
    flow: &MappedFlow,
    run: &mut Run<'_>,
    scope: &Scope<'_>,
    ws: NodeId,
    object: &ModuleObject,
    change_id: &str,
    changes: &[AuditEvent],
) -> FlowResult<Vec<NodeId>> {
    let Some(rule) = flow.mapping.content.documents.first() else {
        return Ok(Vec::new());
    };
    let folder_path = pattern(&rule.folder)?
        .render(scope)
        .map_err(FlowError::Mapping)?;
    let folder = run.ensure_folder_path(ws, &folder_path).await?;
    let base = pattern(&rule.name)?
        .render_name(scope)
        .map_err(FlowError::Mapping)?;
    let title = match &rule.title {
        Some(t) => pattern(t)?.render(scope).map_err(FlowError::Mapping)?,
        None => base.clone(),
    };
    let categories = render_categories(&rule.categories, scope, &flow.env.opentext)?;
    let mut ids = Vec::new();
    for format in &rule.formats {
        let (bytes, ext, mime) = match format {
            DocumentFormat::Json => (
                change_json(object, change_id, changes),
                "json",
                "application/json",
            ),
            DocumentFormat::Html => (change_html(&title, changes), "html", "text/html"),
        };
        let spec = DocumentSpec {
            logical: format!("change:{change_id}:{ext}"),
            name: format!("{base}.{ext}"),
            content: Content::bytes(Bytes::from(bytes), mime),
            categories: categories.clone(),
        };
        ids.push(run.ensure_document(folder, &spec).await?);
    }
    Ok(ids)
}

fn dimensions(e: &AuditEvent) -> Value {
    e.dimensions
        .as_ref()
        .map(|d| json!(d))
        .unwrap_or(Value::Null)
}

fn change_json(object: &ModuleObject, change_id: &str, changes: &[AuditEvent]) -> Vec<u8> {
    let list: Vec<Value> = changes
        .iter()
        .map(|e| {
            json!({"field": e.field_name, "dimensions": dimensions(e),
                   "old": audit_value(&e.value_old), "new": audit_value(&e.value_new),
                   "changed_by": e.create_by, "changed_at": e.create_time, "audit_id": e.id})
        })
        .collect();
    let mut bytes = serde_json::to_vec_pretty(&json!({
        "module": object.module, "id": object.id, "change_id": change_id, "changes": list,
    }))
    .expect("JSON values always serialize");
    bytes.push(b'\n');
    bytes
}

fn change_html(title: &str, changes: &[AuditEvent]) -> Vec<u8> {
    let rows: Vec<Row> = changes
        .iter()
        .map(|e| Row {
            cells: vec![
                e.field_name.clone().unwrap_or_default(),
                match dimensions(e) {
                    Value::Null => "all".into(),
                    d => d.to_string(),
                },
                audit_value(&e.value_old),
                audit_value(&e.value_new),
                e.create_by.clone().unwrap_or_default(),
                e.create_time.clone().unwrap_or_default(),
            ],
        })
        .collect();
    html_page(
        title,
        Some("Changed attributes, from the 4ALLPORTAL audit history."),
        &[
            "Field",
            "Dimensions",
            "Old value",
            "New value",
            "Changed by",
            "Changed at",
        ],
        &rows,
    )
}

/// A workflow decision as the callback or the poller reports it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decision {
    pub process_id: String,
    pub approved: bool,
    pub comment: Option<String>,
    pub approver: Option<String>,
    pub decided_at: Option<String>,
    pub raw: Value,
}

/// The decision an event carries: the poller's own `{"flow", "decision": {…}}`, or a callback
/// read through the configured `[callbacks]` shape.
pub(crate) fn decision(shape: &CallbackShape, event: &StoredEvent) -> Option<Decision> {
    let payload = &event.payload;
    let polled =
        payload.get("flow").is_some() && payload.get("decision").is_some_and(Value::is_object);
    if polled {
        let d = &payload["decision"];
        let text = |k: &str| d.get(k).and_then(value_text).filter(|s| !s.is_empty());
        let process_id =
            text("process_id").or_else(|| payload.get("process_id").and_then(value_text))?;
        let approved = match text("decision")?.as_str() {
            "approved" => true,
            "rejected" => false,
            _ => return None,
        };
        return Some(Decision {
            process_id,
            approved,
            comment: text("comment"),
            approver: text("approver"),
            decided_at: text("decided_at"),
            raw: d.clone(),
        });
    }
    let fields = shape.fields(payload);
    let decision = fields.decision?;
    let raw = json!({
        "process_id": fields.process_id, "decision": decision, "comment": fields.comment,
        "approver": fields.approver, "decided_at": fields.decided_at,
    });
    Some(Decision {
        process_id: fields.process_id?,
        approved: decision == "approved",
        comment: fields.comment,
        approver: fields.approver,
        decided_at: fields.decided_at,
        raw,
    })
}

/// The decision an event carries and the workflow it decides, if `flow` started that workflow;
/// otherwise why the event is skipped.
pub(crate) async fn decided_workflow(
    flow: &MappedFlow,
    run: &Run<'_>,
    event: &StoredEvent,
) -> FlowResult<Result<(Decision, WorkflowRecord), String>> {
    let Some(decision) = decision(&run.env.callbacks, event) else {
        return Ok(Err("callback without an approve/reject decision".into()));
    };
    let Some(workflow) = run.env.store.get_workflow(&decision.process_id).await? else {
        return Ok(Err(format!(
            "workflow {} was not started by the bridge",
            decision.process_id
        )));
    };
    if workflow.flow != flow.name {
        return Ok(Err(format!(
            "workflow {} belongs to the {} flow",
            decision.process_id, workflow.flow
        )));
    }
    Ok(Ok((decision, workflow)))
}

pub(crate) async fn on_decision(
    flow: &MappedFlow,
    run: &mut Run<'_>,
    event: &StoredEvent,
) -> FlowResult<Option<String>> {
    let (decision, workflow) = match decided_workflow(flow, run, event).await? {
        Ok(found) => found,
        Err(skip) => return Ok(Some(skip)),
    };
    let store = run.env.store.clone();
    let link = flow.link(&workflow.object_key).await?;
    let Some(ChangeSource { module, id, .. }) = LinkState::of(&link).source else {
        return Err(FlowError::mapping(format!(
            "no source object recorded for {}",
            workflow.object_key
        )));
    };
    let Some(wb) = &flow.mapping.write_back else {
        return Ok(Some("no write_back mapping".into()));
    };
    let module = wb.module.clone().unwrap_or(module);
    let value = if decision.approved {
        &wb.approved_value
    } else {
        &wb.rejected_value
    };
    let plain = |v: &str| vec![DimensionedValue::plain(Value::String(v.to_string()))];
    let mut write = ObjectWrite::new(Some(&id)).set(&wb.decision_field, plain(value));
    // A callback may name the approver by OpenText user id, as the task actions do.
    let approver = match &decision.approver {
        Some(user) => run.env.opentext.login_of(user).await,
        None => String::new(),
    };
    let decided_at = decision
        .decided_at
        .clone()
        .unwrap_or_else(|| chrono::Utc::now().to_rfc3339());
    for (field, v) in [
        (
            &wb.comment_field,
            decision.comment.clone().unwrap_or_default(),
        ),
        (&wb.approver_field, approver),
        (&wb.date_field, decided_at),
    ] {
        if let Some(field) = field {
            write = write.set(field, plain(&v));
        }
    }
    let what = format!("the decision of workflow {}", decision.process_id);
    let wrote = echo::write_back(run, &module, write, &what).await?;
    if run.applying() {
        store
            .decide_workflow(&decision.process_id, &decision.raw, now_millis())
            .await?;
    }
    Ok((!wrote).then(|| {
        format!(
            "decision of workflow {} already written",
            decision.process_id
        )
    }))
}

/// The change flow: its own forward run (a change document per review, no field snapshots)
/// and the decision's return path.
pub(crate) struct Change;

#[async_trait::async_trait]
impl super::steps::Steps for Change {
    fn callback_kinds(&self) -> &'static [&'static str] {
        &[super::engine::DECISION_KIND]
    }

    async fn on_callback(
        &self,
        flow: &MappedFlow,
        run: &mut Run<'_>,
        event: &StoredEvent,
    ) -> FlowResult<Option<String>> {
        on_decision(flow, run, event).await
    }

    async fn forward(
        &self,
        flow: &MappedFlow,
        run: &mut Run<'_>,
        object: &ModuleObject,
        link: &LinkRecord,
    ) -> Option<FlowResult<Option<String>>> {
        Some(forward(flow, run, object, link.clone()).await)
    }

    fn writes_snapshots(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: i64, kind: &str, field: Option<&str>, at: &str) -> AuditEvent {
        AuditEvent {
            id,
            event_type: Some(kind.into()),
            object_id: Some("1".into()),
            create_by: None,
            create_time: Some(at.into()),
            field_name: field.map(str::to_string),
            value_old: None,
            value_new: None,
            dimensions: None,
        }
    }

    #[test]
    fn initial_values_are_changes_only_when_configured() {
        let audit = || {
            vec![
                entry(3, "field", Some("packaging"), "t2"),
                entry(2, "field", Some("packaging"), "t1"),
                entry(1, "initial", None, "t1"),
            ]
        };
        let watch = vec!["packaging".to_string()];
        let ids = |changes: Vec<AuditEvent>| changes.iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(pending_changes(&watch, audit(), 0, false)), [3]);
        assert_eq!(ids(pending_changes(&watch, audit(), 0, true)), [2, 3]);
        assert_eq!(
            ids(pending_changes(&watch, audit(), 3, true)),
            Vec::<i64>::new()
        );
    }
}
