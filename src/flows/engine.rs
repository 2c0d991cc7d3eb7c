//! The reconciler every mapped flow runs: re-read the object, suppress echoes, check the
//! trigger conditions, ensure the workspace (categories, relations), its folders, generated
//! documents and related assets, then the flow's own last steps; or, for OpenText callbacks,
//! the flow's return path.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;

use super::condition::{Condition, first_unmet, remembered};
use super::echo;
use super::ensure::{Content, DocumentSpec, WorkspaceSpec};
use super::error::{FlowError, FlowResult};
use super::fields::{FieldRef, Scope};
use super::mapping::{
    AssetRule, DocumentFormat, DocumentRule, FlowMapping, PartnerMode, RelationKind,
};
use super::pattern::Pattern;
use super::run::{FlowEnv, Plan, Run};
use super::snapshot::{snapshot_html, snapshot_json_bytes};
use super::state::LinkState;
use super::steps::Steps;
use super::values::{MappedValue, ValueSource, coerce};
use crate::clients::UpstreamError;
use crate::clients::allportal::{ModuleObject, ObjectQuery};
use crate::clients::opentext::{BusinessObject, NodeId, OpentextClient, RelationType};
use crate::store::{LinkRecord, RESYNC_KIND, StoredEvent, now_millis};
use crate::worker::{Flow, FlowOutcome};

/// Kind of a 4ALLPORTAL delete event.
pub const DELETE_KIND: &str = "moduleobject_delete";
/// Kinds of OpenText callbacks (as the ingest layer normalizes them).
pub const DECISION_KIND: &str = "workflow_decision";
pub const PARTNER_DOCUMENT_KIND: &str = "partner_document_approved";

/// A flow driven by its `[flows.<name>]` mapping.
pub struct MappedFlow {
    pub(crate) name: &'static str,
    pub(crate) mapping: FlowMapping,
    pub(crate) env: FlowEnv,
    /// The other enabled flows and their workspaces' business object types (the archive's
    /// approval history reads their workflows).
    pub(crate) peers: Vec<(String, String)>,
    /// What this flow adds to the engine's run (see [`Steps`]).
    pub(crate) steps: std::sync::Arc<dyn Steps>,
}

impl std::fmt::Debug for MappedFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedFlow")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// One workspace a run keeps, with the objects whose content goes in.
pub(crate) struct Target<'o> {
    pub spec: WorkspaceSpec,
    /// `bo_type/bo_id`: the key of the workspace's link and of OpenText callbacks about it.
    pub key: String,
    /// Content subjects; empty: the trigger object itself.
    pub items: Vec<&'o ModuleObject>,
}

/// What the content step put in a workspace, for later steps (workflows, records).
#[derive(Debug, Default)]
pub(crate) struct Placed {
    pub documents: Vec<(String, NodeId)>,
}

#[async_trait]
impl Flow for MappedFlow {
    fn name(&self) -> &str {
        self.name
    }

    fn wants(&self, event: &StoredEvent) -> bool {
        match event.source.as_str() {
            "allportal" => {
                event.module.as_deref() == Some(self.mapping.trigger.module.as_str())
                    && (event.kind == RESYNC_KIND
                        || event.kind == DELETE_KIND
                        || self.mapping.trigger.events.contains(&event.kind))
            }
            "opentext" => self.wants_callback(event),
            _ => false,
        }
    }

    async fn reconcile(&self, object_key: &str, events: &[StoredEvent]) -> FlowOutcome {
        match self.run(object_key, events, true).await {
            Ok(plan) => match plan.skipped {
                Some(reason) => FlowOutcome::Skipped { reason },
                None => {
                    self.count_repairs(object_key, events, &plan);
                    FlowOutcome::Success {
                        summary: plan.summary(),
                    }
                }
            },
            Err(error) => error.into_outcome(),
        }
    }
}

impl MappedFlow {
    /// A resync (by hand or by the audit; not one for a changed dependency) that wrote
    /// something repaired drift: counted per flow and logged per object.
    fn count_repairs(&self, object_key: &str, events: &[StoredEvent], plan: &Plan) {
        let verifying = !events.is_empty()
            && events
                .iter()
                .all(|e| e.kind == RESYNC_KIND && e.payload.get("dependency").is_none());
        if !verifying || plan.operations.is_empty() {
            return;
        }
        metrics::counter!("xecm_drift_repairs_total", "flow" => self.name.to_string())
            .increment(plan.operations.len() as u64);
        let repairs: Vec<&str> = plan
            .operations
            .iter()
            .map(|o| o.description.as_str())
            .collect();
        tracing::info!(flow = self.name, object_key, ?repairs, "drift repaired");
    }

    fn wants_callback(&self, event: &StoredEvent) -> bool {
        if !self.steps.callback_kinds().contains(&event.kind.as_str()) {
            return false;
        }
        // The poller names the flow.
        if let Some(flow) = event.payload.get("flow") {
            return flow.as_str() == Some(self.name);
        }
        // Ingest sends a decision to the flow that started its workflow; routed here (a replayed
        // dead letter), a decision goes to every flow with decisions, and the return path takes
        // it only for its own workflow. Other callbacks name the workspace's business object.
        (event.kind == DECISION_KIND
            && self
                .env
                .callbacks
                .fields(&event.payload)
                .process_id
                .is_some())
            || event.module.as_deref() == Some(self.mapping.workspace.bo_type.as_str())
    }

    /// Computes (`apply = false`) or applies the run for one object.
    pub async fn run(
        &self,
        object_key: &str,
        events: &[StoredEvent],
        apply: bool,
    ) -> FlowResult<Plan> {
        let mut run = Run::new(&self.env, self.name, object_key, apply);
        let skipped = if events.iter().any(|e| e.source == "opentext") {
            self.callbacks(&mut run, events).await?
        } else {
            self.forward(&mut run, object_key, events).await?
        };
        Ok(run.into_plan(skipped))
    }

    async fn callbacks(
        &self,
        run: &mut Run<'_>,
        events: &[StoredEvent],
    ) -> FlowResult<Option<String>> {
        let mut reasons = Vec::new();
        let mut any = false;
        for event in events.iter().filter(|e| e.source == "opentext") {
            let skipped = self.steps.on_callback(self, run, event).await?;
            match skipped {
                Some(reason) => reasons.push(reason),
                None => any = true,
            }
        }
        Ok((!any).then(|| reasons.join("; ")))
    }

    async fn forward(
        &self,
        run: &mut Run<'_>,
        object_key: &str,
        events: &[StoredEvent],
    ) -> FlowResult<Option<String>> {
        let Some((module, id)) = object_key.split_once('/') else {
            return Ok(Some(format!(
                "object key `{object_key}` is not <module>/<id>"
            )));
        };
        let object = match self
            .env
            .allportal
            .get_object(module, id, &ObjectQuery::default())
            .await
        {
            Ok(o) => o,
            Err(UpstreamError::NotFound { .. }) => {
                return self.deleted(run, object_key, events).await;
            }
            Err(e) => return Err(e.into()),
        };
        // A resync (by hand, by the audit, or for a changed dependency) verifies the object
        // rather than reacting to its change: it is never the echo of a write-back, and
        // `changed` conditions, which ask whether the object itself changed, do not apply.
        let verifying = events.iter().any(|e| e.kind == RESYNC_KIND);
        if !verifying && let Some(reason) = echo::check(&self.env, module, &object, events).await? {
            return Ok(Some(reason));
        }
        let link = self.link(object_key).await?;
        let previous = LinkState::of(&link).seen;
        let scope = Scope::of(&object);
        let conditions: Vec<Condition> = self
            .mapping
            .trigger
            .conditions
            .iter()
            .filter(|c| !(verifying && c.changed.is_some()))
            .cloned()
            .collect();
        if let Some(unmet) = first_unmet(&conditions, &scope, &previous) {
            return Ok(Some(format!("condition not met: {unmet}")));
        }
        if let Some(done) = self.steps.forward(self, run, &object, &link).await {
            return done;
        }
        let items = self.items(run, &object).await?;
        let computed = self.computed(&object);
        let mut scope = Scope::of(&object);
        for (k, v) in &computed {
            scope = scope.compute(k, v.clone());
        }
        let targets = self.targets(&scope, &items)?;
        if targets.is_empty() {
            return Ok(Some("no items qualify".into()));
        }
        for target in &targets {
            if let Some(reason) = self.ensure_target(run, &scope, target).await? {
                return Ok(Some(reason));
            }
        }
        // Re-read: when the object's key is also its workspace's key, the target step has just
        // stored the workspace link under it.
        let link = self.link(object_key).await?;
        let mut state = LinkState::of(&link);
        state.seen = remembered(&self.mapping.trigger.conditions, &scope);
        self.save_link(run, object_key, link.workspace_id, &state)
            .await?;
        if run.applying() {
            self.env
                .store
                .set_dependencies(self.name, object_key, &run.dependencies())
                .await?;
        }
        Ok(None)
    }

    /// Values computed for patterns: `data_hash` (SHA-256 of the snapshot of every field).
    pub(crate) fn computed(&self, object: &ModuleObject) -> BTreeMap<String, String> {
        let hash = super::hash::sha256_hex(&snapshot_json_bytes(object, &[]));
        BTreeMap::from([("data_hash".to_string(), hash)])
    }

    /// The related items (account, partner), filtered by their conditions.
    async fn items(
        &self,
        run: &mut Run<'_>,
        object: &ModuleObject,
    ) -> FlowResult<Vec<ModuleObject>> {
        let Some(items) = &self.mapping.items else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for id in object.related_ids(&items.relation) {
            // Also an item that does not qualify now: its change may make it qualify.
            run.uses(format!("{}/{id}", items.module));
            let item = match self
                .env
                .allportal
                .get_object(&items.module, &id, &ObjectQuery::default())
                .await
            {
                Ok(item) => item,
                Err(UpstreamError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let scope = Scope::of(object).with_item(&item);
            if first_unmet(&items.conditions, &scope, &BTreeMap::new()).is_none() {
                out.push(item);
            }
        }
        Ok(out)
    }

    fn targets<'o>(
        &self,
        scope: &Scope<'o>,
        items: &'o [ModuleObject],
    ) -> FlowResult<Vec<Target<'o>>> {
        let per_item = self.mapping.mode == Some(PartnerMode::PerPartnerProduct);
        if per_item {
            return items
                .iter()
                .map(|item| {
                    Ok(Target {
                        spec: self.workspace_spec(&scope.with_item(item))?,
                        key: String::new(),
                        items: vec![item],
                    })
                    .map(|mut t: Target<'o>| {
                        t.key = bo_key(&t.spec.bo);
                        t
                    })
                })
                .collect();
        }
        if self.mapping.items.is_some() && items.is_empty() {
            return Ok(Vec::new());
        }
        let spec = self.workspace_spec(scope)?;
        Ok(vec![Target {
            key: bo_key(&spec.bo),
            spec,
            items: items.iter().collect(),
        }])
    }

    pub(crate) fn workspace_spec(&self, scope: &Scope<'_>) -> FlowResult<WorkspaceSpec> {
        let ws = &self.mapping.workspace;
        let bo_id = pattern(&ws.bo_id)?
            .render(scope)
            .map_err(FlowError::Mapping)?;
        Ok(WorkspaceSpec {
            bo: BusinessObject {
                ext_system_id: self.env.opentext.ext_system_id().to_string(),
                bo_type: ws.bo_type.clone(),
                bo_id,
            },
            name: pattern(&ws.name)?
                .render_name(scope)
                .map_err(FlowError::Mapping)?,
            template_id: ws.template_id,
            wksp_type_id: ws.wksp_type_id,
            parent_id: ws.parent_id,
            categories: render_categories(&ws.categories, scope, &self.env.opentext)?,
        })
    }

    /// Workspace, categories, relations, folders, content, then the flow's last steps.
    /// `Some(reason)` when the target cannot be handled now in a way that is not an error.
    async fn ensure_target(
        &self,
        run: &mut Run<'_>,
        scope: &Scope<'_>,
        target: &Target<'_>,
    ) -> FlowResult<Option<String>> {
        let link = self.link(&target.key).await?;
        if let Some(reason) = self.steps.frozen(&link) {
            return Ok(Some(reason.into()));
        }
        if self.mapping.create_workspace == Some(false)
            && self
                .env
                .opentext
                .find_workspace(&target.spec.bo)
                .await?
                .is_none()
        {
            return Ok(Some(format!(
                "no workspace for {} and the mapping does not allow creating it",
                target.key
            )));
        }
        let mut state = LinkState::of(&link);
        let (ws, created) = run.ensure_workspace(&target.spec).await?;
        // Verified on every run (one read): someone may have edited the values in OpenText.
        if !created {
            run.ensure_categories(ws, "the workspace", &target.spec.categories)
                .await?;
        }
        // The engine verifies categories on every run; a hash cached by the change flow's own
        // path saves nothing here.
        state.categories = None;
        super::team::ensure(self, run, scope, &target.key, &target.items, ws, &mut state).await?;
        self.ensure_relations(run, scope, ws, &mut state).await?;
        let placed = self.ensure_content(run, ws, scope, &target.items).await?;
        self.steps
            .after_content(self, run, scope, target, ws, &placed, &mut state)
            .await?;
        self.save_link(run, &target.key, Some(ws), &state).await?;
        Ok(None)
    }

    /// Relates the workspaces the mapping names. The workspace's related workspaces are read
    /// once per run; the ids of related workspaces found before (state `related`, by business
    /// object) save their look-up while they are still related.
    async fn ensure_relations(
        &self,
        run: &mut Run<'_>,
        scope: &Scope<'_>,
        ws: NodeId,
        state: &mut LinkState,
    ) -> FlowResult<()> {
        let known = std::mem::take(&mut state.related);
        let mut related_ids = BTreeMap::new();
        for rel in &self.mapping.workspace.relations {
            let field = FieldRef::parse(&rel.field).map_err(FlowError::Mapping)?;
            let Some(object) = scope.object else { continue };
            let Some(related_bo_id) = object.related_ids(&field.field).into_iter().next() else {
                continue;
            };
            let bo = BusinessObject {
                ext_system_id: self.env.opentext.ext_system_id().to_string(),
                bo_type: rel.bo_type.clone(),
                bo_id: related_bo_id,
            };
            let key = bo_key(&bo);
            // A change of the related object (e.g. its workspace appearing) runs this again.
            run.uses(key.clone());
            let cached = known.get(&key).copied();
            let current = run.related_to(ws).await?;
            if let Some(id) = cached.filter(|id| current.contains(id)) {
                related_ids.insert(key, id);
                continue;
            }
            let Some(related) = self.env.opentext.find_workspace(&bo).await? else {
                if rel.required {
                    return Err(FlowError::NotYet(format!(
                        "the related workspace {key} does not exist yet"
                    )));
                }
                tracing::info!(flow = self.name, related = %key, "related workspace missing; relation skipped");
                continue;
            };
            let kind = match rel.relation {
                RelationKind::Child => RelationType::Child,
                RelationKind::Parent => RelationType::Parent,
            };
            let why = (cached == Some(related.id)).then_some("removed in OpenText");
            run.ensure_relation(ws, related.id, kind, why).await?;
            related_ids.insert(key, related.id);
        }
        state.related = related_ids;
        Ok(())
    }

    /// Folders, generated documents and related assets for each content subject.
    pub(crate) async fn ensure_content(
        &self,
        run: &mut Run<'_>,
        ws: NodeId,
        scope: &Scope<'_>,
        items: &[&ModuleObject],
    ) -> FlowResult<Placed> {
        let mut placed = Placed::default();
        for folder in &self.mapping.content.folders {
            run.ensure_folder_path(ws, folder).await?;
        }
        let subjects: Vec<Scope<'_>> = if items.is_empty() {
            vec![scope.clone()]
        } else {
            items.iter().map(|i| scope.with_item(i)).collect()
        };
        // The change flow writes its own change document instead of a field snapshot.
        let generated: &[DocumentRule] = if self.steps.writes_snapshots() {
            &self.mapping.content.documents
        } else {
            &[]
        };
        for subject in &subjects {
            for (i, rule) in generated.iter().enumerate() {
                self.ensure_generated(run, ws, subject, i, rule, &mut placed)
                    .await?;
            }
            for (i, rule) in self.mapping.content.assets.iter().enumerate() {
                self.ensure_assets(run, ws, subject, i, rule, &mut placed)
                    .await?;
            }
        }
        Ok(placed)
    }

    async fn ensure_generated(
        &self,
        run: &mut Run<'_>,
        ws: NodeId,
        scope: &Scope<'_>,
        index: usize,
        rule: &DocumentRule,
        placed: &mut Placed,
    ) -> FlowResult<()> {
        let Some(subject) = scope.nearest() else {
            return Ok(());
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
        let categories = render_categories(&rule.categories, scope, &self.env.opentext)?;
        for format in &rule.formats {
            let (bytes, ext, mime) = match format {
                DocumentFormat::Json => (
                    snapshot_json_bytes(subject, &rule.fields),
                    "json",
                    "application/json",
                ),
                DocumentFormat::Html => (
                    snapshot_html(subject, &rule.fields, &title),
                    "html",
                    "text/html",
                ),
            };
            let logical = format!("document{index}:{}:{ext}", subject.id);
            let spec = DocumentSpec {
                logical: logical.clone(),
                name: format!("{base}.{ext}"),
                content: Content::bytes(Bytes::from(bytes), mime),
                categories: categories.clone(),
            };
            let node = run.ensure_document(folder, &spec).await?;
            placed.documents.push((logical, node));
        }
        Ok(())
    }

    async fn ensure_assets(
        &self,
        run: &mut Run<'_>,
        ws: NodeId,
        scope: &Scope<'_>,
        index: usize,
        rule: &AssetRule,
        placed: &mut Placed,
    ) -> FlowResult<()> {
        let Some(subject) = scope.nearest() else {
            return Ok(());
        };
        let relation = FieldRef::parse(&rule.relation).map_err(FlowError::Mapping)?;
        for asset_id in subject.related_ids(&relation.field) {
            run.uses(format!("{}/{asset_id}", rule.module));
            let asset = match self
                .env
                .allportal
                .get_object(&rule.module, &asset_id, &ObjectQuery::default())
                .await
            {
                Ok(a) => a,
                Err(UpstreamError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let asset_scope = scope.with_asset(&asset);
            if first_unmet(&rule.conditions, &asset_scope, &BTreeMap::new()).is_some() {
                continue;
            }
            let folder_path = pattern(&rule.folder)?
                .render(&asset_scope)
                .map_err(FlowError::Mapping)?;
            let folder = run.ensure_folder_path(ws, &folder_path).await?;
            let name = pattern(&rule.name)?
                .render_name(&asset_scope)
                .unwrap_or_else(|_| asset.id.clone());
            let mime = asset
                .text_for("mimetype", None, None)
                .unwrap_or_else(|| "application/octet-stream".into());
            let logical = format!("asset{index}:{}:{}", subject.id, asset.id);
            let spec = DocumentSpec {
                logical: logical.clone(),
                name,
                content: Content::Rendition {
                    module: rule.module.clone(),
                    id: asset.id.clone(),
                    rendition: rule.rendition.clone(),
                    version: asset.mod_time.clone(),
                    mime,
                },
                categories: render_categories(&rule.categories, &asset_scope, &self.env.opentext)?,
            };
            let node = run.ensure_document(folder, &spec).await?;
            placed.documents.push((logical, node));
        }
        Ok(())
    }

    /// A deleted object: nothing is deleted in OpenText; the deletion is recorded and, when
    /// configured, the workspace gets the attribute.
    async fn deleted(
        &self,
        run: &mut Run<'_>,
        object_key: &str,
        events: &[StoredEvent],
    ) -> FlowResult<Option<String>> {
        let link = self.link(object_key).await?;
        let marked = match (&self.mapping.on_delete, link.workspace_id) {
            (Some(on_delete), Some(ws)) => {
                let values = BTreeMap::from([(
                    on_delete.attribute.clone(),
                    Value::String(on_delete.value.clone()),
                )]);
                run.ensure_categories(ws, "the workspace", &values).await?;
                true
            }
            _ => false,
        };
        let mut state = LinkState::of(&link);
        state.deleted_at.get_or_insert_with(now_millis);
        self.save_link(run, object_key, link.workspace_id, &state)
            .await?;
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        tracing::info!(
            flow = self.name,
            key = object_key,
            ?kinds,
            marked,
            "object deleted in 4ALLPORTAL; OpenText keeps the record"
        );
        Ok((!marked || run.operations().is_empty())
            .then(|| "deleted in 4ALLPORTAL: recorded; nothing is deleted in OpenText".to_string()))
    }

    pub(crate) async fn link(&self, key: &str) -> FlowResult<LinkRecord> {
        Ok(self
            .env
            .store
            .get_link(self.name, key)
            .await?
            .unwrap_or_else(|| LinkRecord {
                flow: self.name.to_string(),
                object_key: key.to_string(),
                workspace_id: None,
                state: Value::Null,
                updated_at: 0,
            }))
    }

    /// Stores the link (apply mode only).
    pub(crate) async fn save_link(
        &self,
        run: &Run<'_>,
        key: &str,
        workspace: Option<NodeId>,
        state: &LinkState,
    ) -> FlowResult<()> {
        if !run.applying() {
            return Ok(());
        }
        self.env
            .store
            .put_link(&LinkRecord {
                flow: self.name.to_string(),
                object_key: key.to_string(),
                workspace_id: workspace.filter(|id| *id > 0),
                state: state.to_json(),
                updated_at: now_millis(),
            })
            .await?;
        Ok(())
    }
}

/// `bo_type/bo_id`.
pub(crate) fn bo_key(bo: &BusinessObject) -> String {
    format!("{}/{}", bo.bo_type, bo.bo_id)
}

pub(crate) fn pattern(source: &str) -> FlowResult<Pattern> {
    Pattern::parse(source).map_err(FlowError::Mapping)
}

/// Renders `"{cat}_{attr}" = source` ([`super::values`]); a field without a value gives null.
/// When the category's definition has been read (at start-up), each value is checked against
/// and converted to the attribute's type; a value that does not fit is a mapping error naming
/// the attribute and the object, so the event fails for good instead of being retried.
pub(crate) fn render_categories(
    categories: &BTreeMap<String, ValueSource>,
    scope: &Scope<'_>,
    opentext: &OpentextClient,
) -> FlowResult<BTreeMap<String, Value>> {
    categories
        .iter()
        .map(|(key, source)| {
            let value = MappedValue::parse(source)
                .map_err(|e| FlowError::Mapping(format!("category attribute `{key}`: {e}")))?
                .render(scope);
            let definition = super::mapping::attribute_key(key)
                .and_then(|(cat, _)| opentext.cached_category(cat));
            let value = match definition.as_ref().and_then(|d| d.attribute(key)) {
                Some(attribute) => coerce(attribute, value).map_err(|e| {
                    let object = scope
                        .nearest()
                        .map(|o| format!("{}/{}", o.module.as_deref().unwrap_or("object"), o.id))
                        .unwrap_or_default();
                    FlowError::Mapping(format!("category attribute `{key}` for {object}: {e}"))
                })?,
                None => value,
            };
            Ok((key.clone(), value))
        })
        .collect()
}
