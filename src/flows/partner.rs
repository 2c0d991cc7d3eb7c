//! `partner`: the engine keeps the partner workspaces (per partner, or per partner and product)
//! with specifications, media and channel-ready content. Return path: a document a partner
//! uploaded, once approved internally (callback), is downloaded from OpenText, stored in
//! 4ALLPORTAL as a file object with its metadata, and linked to the product(s).

use std::collections::BTreeMap;

use serde_json::Value;

use super::engine::{MappedFlow, Target, pattern};
use super::error::{FlowError, FlowResult};
use super::fields::Scope;
use super::hash::sha256_hex;
use super::run::{Run, System};
use super::state::LinkState;
use crate::clients::UpstreamError;
use crate::clients::allportal::{DimensionedValue, ObjectQuery, ObjectWrite};
use crate::clients::file::FileUpload;
use crate::store::{DocumentRecord, StoredEvent, now_millis};

/// Remembers which partner and products a workspace is for (the import needs them).
pub(crate) fn remember_items(scope: &Scope<'_>, target: &Target<'_>, state: &mut LinkState) {
    if let Some(partner) = scope.object {
        state.partner = Some(partner.id.clone());
    }
    state.products = target.items.iter().map(|i| i.id.clone()).collect();
}

/// The 4ALLPORTAL id of an imported document, derived from its OpenText node and version so
/// that a retry after a failure finds the object it already made.
pub fn import_id(ext_system_id: &str, node: i64, version: i64) -> String {
    let digest = sha256_hex(format!("{ext_system_id}:{node}:{version}").as_bytes());
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&digest[i * 2..i * 2 + 2], 16).unwrap_or(0);
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8: custom, name-derived
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    uuid::Uuid::from_bytes(bytes).to_string()
}

pub(crate) async fn on_document(
    flow: &MappedFlow,
    run: &mut Run<'_>,
    event: &StoredEvent,
) -> FlowResult<Option<String>> {
    let Some(import) = flow.mapping.import.clone() else {
        return Ok(Some("no import mapping".into()));
    };
    let document = run.env.callbacks.fields(&event.payload);
    let (Some(node), version) = (
        document.document_node_id,
        document.document_version.unwrap_or(1),
    ) else {
        return Ok(Some("callback without a document".into()));
    };
    let Some(key) = event.object_key.clone() else {
        return Ok(Some("callback without a business object".into()));
    };
    let link = flow.link(&key).await?;
    let LinkState {
        partner, products, ..
    } = LinkState::of(&link);
    let Some(partner) = partner else {
        return Ok(Some(format!("no partner workspace known for {key}")));
    };
    let logical = format!("import:{node}:v{version}");
    let store = run.env.store.clone();
    if store
        .get_document(flow.name, &key, &logical)
        .await?
        .is_some()
    {
        return Ok(Some(format!(
            "document {node} v{version} is already imported"
        )));
    }
    let id = import_id(run.env.opentext.ext_system_id(), node, version);
    let name = document
        .document_name
        .unwrap_or_else(|| format!("partner document {node}"));
    let ap = run.env.allportal.clone();
    // The id is derived from the node and version, so the object is found again after a crash;
    // an object without its content was cut short between the create and the upload.
    let (exists, has_content) = match ap
        .get_object(&import.module, &id, &ObjectQuery::default())
        .await
    {
        Ok(_) => (true, !ap.media_types(&import.module, &id).await?.is_empty()),
        Err(UpstreamError::NotFound { .. }) => (false, false),
        Err(e) => return Err(e.into()),
    };
    if !has_content {
        let description = format!(
            "import `{name}` from OpenText node {node} as {}/{id}",
            import.module
        );
        if run.write(System::Allportal, "import_document", description) {
            let download = run.env.opentext.download_content(node).await?;
            let mime = download
                .content_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".into());
            let file = FileUpload::from_download(download, &name, &mime).ok_or_else(|| {
                FlowError::Upstream(UpstreamError::decode(format!(
                    "OpenText node {node} came without a length"
                )))
            })?;
            if exists {
                ap.upload_media(&import.module, &id, None, file).await?;
            } else {
                let vars = BTreeMap::from([
                    ("document_name", name.clone()),
                    ("node_id", node.to_string()),
                    ("version", version.to_string()),
                    ("partner_id", partner.clone()),
                    ("product_id", products.join(",")),
                    ("mime_type", mime.clone()),
                ]);
                let write = file_write(&id, &import.fields, &vars)?;
                ap.create_file_object(&import.module, write, file).await?;
            }
        }
    }
    let product_module = flow
        .mapping
        .items
        .as_ref()
        .map(|i| i.module.clone())
        .unwrap_or_else(|| "product".into());
    for product in &products {
        link_product(run, &product_module, product, &import.link_field, &id).await?;
    }
    if run.applying() {
        store
            .put_document(&DocumentRecord {
                flow: flow.name.to_string(),
                object_key: key.clone(),
                logical_name: logical,
                node_id: node,
                content_hash: String::new(),
                source_version: Some(id),
                meta_hash: None,
                version,
                updated_at: now_millis(),
            })
            .await?;
    }
    Ok(None)
}

/// The new file object's values from the import patterns.
fn file_write(
    id: &str,
    fields: &BTreeMap<String, String>,
    vars: &BTreeMap<&str, String>,
) -> FlowResult<ObjectWrite> {
    let mut scope = Scope::default();
    for (k, v) in vars {
        scope = scope.compute(k, v.clone());
    }
    let mut write = ObjectWrite::new(Some(id));
    for (field, source) in fields {
        let value = pattern(source)?
            .render(&scope)
            .map_err(FlowError::Mapping)?;
        write = write.set(field, vec![DimensionedValue::plain(Value::String(value))]);
    }
    Ok(write)
}

/// Adds the file to the product's relation field unless it is there (recorded first, so that
/// its change event is recognised as the bridge's own).
async fn link_product(
    run: &mut Run<'_>,
    module: &str,
    product: &str,
    field: &str,
    file_id: &str,
) -> FlowResult<()> {
    super::echo::link(run, module, product, field, file_id).await?;
    Ok(())
}

/// The partner flow: remembers each workspace's partner and products, and imports approved
/// partner documents (the return path).
pub(crate) struct Partner;

#[async_trait::async_trait]
impl super::steps::Steps for Partner {
    fn callback_kinds(&self) -> &'static [&'static str] {
        &[super::engine::PARTNER_DOCUMENT_KIND]
    }

    async fn on_callback(
        &self,
        flow: &MappedFlow,
        run: &mut Run<'_>,
        event: &StoredEvent,
    ) -> FlowResult<Option<String>> {
        on_document(flow, run, event).await
    }

    async fn after_content(
        &self,
        _flow: &MappedFlow,
        _run: &mut Run<'_>,
        scope: &Scope<'_>,
        target: &Target<'_>,
        _ws: crate::clients::opentext::NodeId,
        _placed: &super::engine::Placed,
        state: &mut LinkState,
    ) -> FlowResult<()> {
        remember_items(scope, target, state);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_ids_are_stable_uuids() {
        let a = import_id("4ALLPORTAL", 777, 2);
        assert_eq!(a, import_id("4ALLPORTAL", 777, 2));
        assert_ne!(a, import_id("4ALLPORTAL", 777, 3));
        let parsed = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(parsed.get_version_num(), 8);
    }
}
