//! `archival`: at end of life the archive workspace gets the final data and assets (by the
//! engine) plus the approval history, built here from 4ALLPORTAL's audit trail and the
//! workflows the bridge started for the product; then records management: the workspace and
//! its items are classified, the records finalized, an optional legal hold applied and every
//! role reduced to read-only. A finalized archive is never changed again.

use bytes::Bytes;
use serde_json::{Value, json};

use super::engine::{MappedFlow, Placed};
use super::ensure::{Content, DocumentSpec};
use super::error::FlowResult;
use super::fields::{Scope, value_text};
use super::intent::{action, new_token};
use super::run::{Run, System, is_planned};
use super::snapshot::{Row, html_page};
use super::state::LinkState;
use crate::clients::allportal::{AuditEvent, ModuleObject};
use crate::clients::opentext::NodeId;
use crate::store::{LinkRecord, WorkflowRecord};

pub(crate) fn is_final(link: &LinkRecord) -> bool {
    LinkState::of(link).finalized
}

pub(crate) async fn after_content(
    flow: &MappedFlow,
    run: &mut Run<'_>,
    scope: &Scope<'_>,
    ws: NodeId,
    placed: &Placed,
    state: &mut LinkState,
) -> FlowResult<()> {
    let Some(object) = scope.object else {
        return Ok(());
    };
    let mut documents: Vec<NodeId> = placed.documents.iter().map(|(_, id)| *id).collect();
    documents.extend(approval_history(flow, run, object, ws).await?);
    let Some(records) = flow.mapping.records.clone() else {
        return Ok(());
    };
    classify(run, ws, records.rm_class_id).await?;
    if records.finalize && !documents.is_empty() {
        finalize(run, ws, &documents).await?;
    }
    if let Some(hold) = records.hold_id {
        // The holds on the workspace are read first, so a hold applied by a run that died
        // before recording it is found; the intent records that the call was made.
        let held = !is_planned(ws) && run.env.opentext.node_holds(ws).await?.contains(&hold);
        if !held && run.write(System::Opentext, "apply_hold", format!("apply hold {hold}")) {
            let intent = run
                .intend(action::APPLY_HOLD, &format!("{ws}:{hold}"), &new_token())
                .await?;
            run.env.opentext.apply_hold(ws, hold).await?;
            run.fulfilled(intent, json!({ "hold_id": hold })).await?;
        }
    }
    if records.read_only
        && run.write(
            System::Opentext,
            "read_only",
            "reduce every workspace role to read-only".into(),
        )
    {
        run.env.opentext.make_workspace_read_only(ws).await?;
    }
    state.finalized = true;
    Ok(())
}

/// Finalizes the records once: after a crash, only those OpenText does not report finalized.
async fn finalize(run: &mut Run<'_>, ws: NodeId, documents: &[NodeId]) -> FlowResult<()> {
    let description = format!("finalize {} record(s)", documents.len());
    if !run.write(System::Opentext, "finalize_records", description) {
        return Ok(());
    }
    let intent = run
        .intend(action::FINALIZE_RECORDS, &ws.to_string(), &new_token())
        .await?;
    let ot = run.env.opentext.clone();
    // A run that reached this point before (and died before saving its state) may have
    // finalized some or all of the records: only those OpenText reports open are finalized.
    let looked_at = intent.recovering || intent.earlier.is_some();
    let mut open = Vec::new();
    for &document in documents {
        if !looked_at || !ot.rm_classifications(document).await?.finalized {
            open.push(document);
        }
    }
    if !open.is_empty() {
        ot.finalize_records(&open).await?;
    }
    run.fulfilled(intent, json!({ "finalized": open })).await
}

async fn classify(run: &mut Run<'_>, ws: NodeId, class_id: i64) -> FlowResult<()> {
    let current = if is_planned(ws) {
        None
    } else {
        Some(run.env.opentext.rm_classifications(ws).await?)
    };
    if current
        .as_ref()
        .is_some_and(|c| c.class_ids.contains(&class_id))
    {
        return Ok(());
    }
    let description = format!("classify the workspace and its items under RM class {class_id}");
    if run.write(System::Opentext, "rm_classify", description) {
        let token = current.and_then(|c| c.metadata_token);
        run.env
            .opentext
            .rm_classify(ws, class_id, true, token.as_deref())
            .await?;
    }
    Ok(())
}

/// The approval history as JSON and HTML in the mapping's `history_folder` (the archive
/// template's own folder); returns the document ids.
async fn approval_history(
    flow: &MappedFlow,
    run: &mut Run<'_>,
    object: &ModuleObject,
    ws: NodeId,
) -> FlowResult<Vec<NodeId>> {
    let audit = super::change::audit_of(flow, run, object).await?;
    let mut workflows = Vec::new();
    for (peer, bo_type) in &flow.peers {
        let prefix = format!("{bo_type}/{}", object.id);
        workflows.extend(
            run.env
                .store
                .workflows_of(peer, &prefix)
                .await?
                .into_iter()
                .filter(|w| {
                    w.object_key == prefix || w.object_key.starts_with(&format!("{prefix}:"))
                }),
        );
    }
    let json = history_json(&audit, &workflows);
    let html = history_html(object, &audit, &workflows);
    let folder = run
        .ensure_folder_path(ws, &flow.mapping.history_folder)
        .await?;
    let article = object
        .text_for("article_number", None, None)
        .unwrap_or_else(|| object.id.clone());
    let mut ids = Vec::new();
    for (bytes, ext, mime) in [
        (json, "json", "application/json"),
        (html, "html", "text/html"),
    ] {
        let spec = DocumentSpec {
            logical: format!("history:{}:{ext}", object.id),
            name: format!("{article} approval history.{ext}"),
            content: Content::bytes(Bytes::from(bytes), mime),
            categories: Default::default(),
        };
        ids.push(run.ensure_document(folder, &spec).await?);
    }
    Ok(ids)
}

fn audit_value(v: &Option<Value>) -> String {
    let Some(v) = v else { return String::new() };
    let inner = v.get("value").unwrap_or(v);
    value_text(inner).unwrap_or_default()
}

fn history_json(audit: &[AuditEvent], workflows: &[WorkflowRecord]) -> Vec<u8> {
    let mut entries: Vec<&AuditEvent> = audit.iter().collect();
    entries.sort_by_key(|e| e.id);
    let audit: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({"id": e.id, "type": e.event_type, "by": e.create_by, "at": e.create_time,
                   "field": e.field_name, "old": e.value_old, "new": e.value_new})
        })
        .collect();
    let mut bytes = serde_json::to_vec_pretty(&json!({"audit": audit, "workflows": workflows}))
        .expect("JSON values always serialize");
    bytes.push(b'\n');
    bytes
}

fn history_html(
    object: &ModuleObject,
    audit: &[AuditEvent],
    workflows: &[WorkflowRecord],
) -> Vec<u8> {
    let mut rows = Vec::new();
    let mut entries: Vec<&AuditEvent> = audit.iter().collect();
    entries.sort_by_key(|e| e.id);
    for e in entries {
        let what = match &e.field_name {
            Some(field) => format!(
                "{field}: {} → {}",
                audit_value(&e.value_old),
                audit_value(&e.value_new)
            ),
            None => e.event_type.clone().unwrap_or_default(),
        };
        rows.push(Row {
            cells: vec![
                e.create_time.clone().unwrap_or_default(),
                "4ALLPORTAL audit".into(),
                e.create_by.clone().unwrap_or_default(),
                what,
            ],
        });
    }
    for w in workflows {
        let decision = w
            .decision
            .as_ref()
            .and_then(|d| d.get("decision"))
            .and_then(value_text)
            .unwrap_or_else(|| w.state.clone());
        let approver = w
            .decision
            .as_ref()
            .and_then(|d| d.get("approver"))
            .and_then(value_text)
            .unwrap_or_default();
        let at = chrono::DateTime::from_timestamp_millis(w.started_at)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        rows.push(Row {
            cells: vec![
                at,
                format!("OpenText workflow {} ({})", w.process_id, w.flow),
                approver,
                decision,
            ],
        });
    }
    let title = format!(
        "Approval history of {} {}",
        object.module.as_deref().unwrap_or("object"),
        object.id
    );
    html_page(&title, None, &["When", "Source", "Who", "What"], &rows)
}

/// The archival flow: records, holds and read-only roles after the content; final afterwards.
pub(crate) struct Archival;

#[async_trait::async_trait]
impl super::steps::Steps for Archival {
    fn frozen(&self, link: &LinkRecord) -> Option<&'static str> {
        is_final(link).then_some("the archive is final; nothing changes after finalization")
    }

    async fn after_content(
        &self,
        flow: &MappedFlow,
        run: &mut Run<'_>,
        scope: &Scope<'_>,
        _target: &super::engine::Target<'_>,
        ws: NodeId,
        placed: &Placed,
        state: &mut LinkState,
    ) -> FlowResult<()> {
        after_content(flow, run, scope, ws, placed, state).await
    }
}
