//! `/_sim/` control endpoints of the 4ALLPORTAL simulator: seed, inspect, faults, change objects
//! "as a user in the UI", send signed webhooks, generate large files.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::Sim;
use super::api::error;
use super::model::{Media, format_time};
use super::sample::{Catalogue, sample_catalogue};
use crate::sim::blob::Blob;
use crate::sim::faults::FaultSettings;

pub(crate) fn router(sim: Sim) -> Router {
    Router::new()
        .route("/state", get(state))
        .route("/requests", get(requests).delete(clear_requests))
        .route("/faults", get(get_faults).put(put_faults))
        .route("/seed", post(seed))
        .route("/seed/sample", post(seed_sample))
        .route("/objects/{module}", post(create_object))
        .route("/objects/{module}/{id}", post(change_object))
        .route("/webhooks/send", post(send_webhook))
        .route("/webhook", put(configure_webhook))
        .route("/files/generate", post(generate_file))
        .with_state(sim)
}

/// Loads schemas and objects. Relation fields are written in a second pass so objects may refer
/// to ones later in the list; the audit trail of a seeded object starts with one `initial` entry.
pub(crate) fn load_catalogue(sim: &Sim, catalogue: &Catalogue) -> Result<(), String> {
    let mut store = sim.store.write().expect("store poisoned");
    for module in &catalogue.modules {
        store.modules.insert(module.name.clone(), module.clone());
    }
    let mut relations = Vec::new();
    for seed in &catalogue.objects {
        let schema = store
            .modules
            .get(&seed.module)
            .cloned()
            .ok_or_else(|| format!("unknown module '{}'", seed.module))?;
        let mut plain = Map::new();
        let mut linked = Map::new();
        plain.insert("id".into(), json!(seed.id));
        linked.insert("id".into(), json!(seed.id));
        for (key, value) in &seed.fields {
            let is_relation = schema
                .fields
                .iter()
                .any(|f| &f.name == key && f.is_relation());
            if is_relation {
                linked.insert(key.clone(), value.clone());
            } else {
                plain.insert(key.clone(), value.clone());
            }
        }
        store
            .upsert(&seed.module, &plain, "seed")
            .map_err(|e| format!("{e:?}"))?;
        relations.push((seed.module.clone(), linked));
        if let Some(media) = &seed.media {
            let bytes = STANDARD
                .decode(&media.content_base64)
                .map_err(|e| format!("media of {}: {e}", seed.id))?;
            let media = Media {
                file_name: media.file_name.clone(),
                mime_type: media.mime_type.clone(),
                blob: Blob::from_bytes(bytes.into()),
            };
            store
                .put_media(&seed.module, &seed.id, "Original", media, "seed")
                .map_err(|e| format!("{e:?}"))?;
        }
    }
    for (module, linked) in relations {
        store
            .upsert(&module, &linked, "seed")
            .map_err(|e| format!("{e:?}"))?;
    }
    for seed in &catalogue.objects {
        if let Some(object) = store
            .objects
            .get_mut(&seed.module)
            .and_then(|m| m.get_mut(&seed.id))
        {
            object.audit.truncate(1);
        }
    }
    Ok(())
}

pub(crate) fn state_json(sim: &Sim) -> Value {
    let store = sim.store.read().expect("store poisoned");
    let mut objects = Map::new();
    for (module, items) in &store.objects {
        let mut by_id = Map::new();
        for (id, object) in items {
            let mut json = object.to_json(None);
            let media: Map<String, Value> = object
                .media
                .iter()
                .map(|(kind, m)| {
                    (
                        kind.clone(),
                        json!({"file_name": m.file_name, "mime_type": m.mime_type,
                               "size": m.blob.size, "sha256": m.blob.sha256}),
                    )
                })
                .collect();
            json["_media"] = Value::Object(media);
            json["_audit_count"] = json!(object.audit.len());
            by_id.insert(id.clone(), json);
        }
        objects.insert(module.clone(), Value::Object(by_id));
    }
    let webhook = sim.webhook.read().expect("webhook poisoned");
    json!({
        "modules": store.modules.keys().collect::<Vec<_>>(),
        "objects": objects,
        "webhook_url": webhook.url,
        "auto_webhooks": sim.auto_webhooks.load(std::sync::atomic::Ordering::Relaxed),
        "faults": sim.faults.get(),
    })
}

async fn state(State(sim): State<Sim>) -> Response {
    axum::Json(state_json(&sim)).into_response()
}

/// The request log as a JSON array; the requests in flight and their peak in headers (the
/// same as the OpenText simulator's).
async fn requests(State(sim): State<Sim>) -> Response {
    (sim.log.in_flight_headers(), axum::Json(sim.log.snapshot())).into_response()
}

async fn clear_requests(State(sim): State<Sim>) -> Response {
    sim.log.clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn get_faults(State(sim): State<Sim>) -> Response {
    axum::Json(sim.faults.get()).into_response()
}

async fn put_faults(
    State(sim): State<Sim>,
    axum::Json(faults): axum::Json<FaultSettings>,
) -> Response {
    sim.faults.set(faults);
    axum::Json(sim.faults.get()).into_response()
}

async fn seed(State(sim): State<Sim>, axum::Json(catalogue): axum::Json<Catalogue>) -> Response {
    match load_catalogue(&sim, &catalogue) {
        Ok(()) => axum::Json(json!({"objects": catalogue.objects.len()})).into_response(),
        Err(msg) => error(StatusCode::BAD_REQUEST, msg),
    }
}

async fn seed_sample(State(sim): State<Sim>) -> Response {
    let catalogue = sample_catalogue();
    match load_catalogue(&sim, &catalogue) {
        Ok(()) => axum::Json(json!({"objects": catalogue.objects.len()})).into_response(),
        Err(msg) => error(StatusCode::BAD_REQUEST, msg),
    }
}

#[derive(Debug, Deserialize)]
struct ChangeParams {
    /// Who makes the change (audit `createBy`); defaults to a UI user.
    user: Option<String>,
    /// Also send the change webhook now.
    #[serde(default)]
    webhook: bool,
}

async fn create_object(
    State(sim): State<Sim>,
    Path(module): Path<String>,
    Query(params): Query<ChangeParams>,
    axum::Json(fields): axum::Json<Map<String, Value>>,
) -> Response {
    write_as_user(sim, module, fields, params).await
}

async fn change_object(
    State(sim): State<Sim>,
    Path((module, id)): Path<(String, String)>,
    Query(params): Query<ChangeParams>,
    axum::Json(mut fields): axum::Json<Map<String, Value>>,
) -> Response {
    if sim
        .store
        .read()
        .expect("store poisoned")
        .object(&module, &id)
        .is_none()
    {
        return error(StatusCode::NOT_FOUND, format!("Object '{id}' not found"));
    }
    fields.insert("id".into(), json!(id));
    write_as_user(sim, module, fields, params).await
}

/// Same semantics as the API's PATCH, attributed to a person instead of the API user.
async fn write_as_user(
    sim: Sim,
    module: String,
    fields: Map<String, Value>,
    params: ChangeParams,
) -> Response {
    let user = params.user.unwrap_or_else(|| "jdoe".into());
    let existed = fields.get("id").and_then(Value::as_str).is_some_and(|id| {
        sim.store
            .read()
            .expect("store poisoned")
            .object(&module, id)
            .is_some()
    });
    let result = sim
        .store
        .write()
        .expect("store poisoned")
        .upsert(&module, &fields, &user);
    let id = match result {
        Ok(id) => id,
        Err(err) => return err.into(),
    };
    let event = if existed {
        "moduleobject_modify"
    } else {
        "moduleobject_create"
    };
    let delivery = if params.webhook {
        Some(sim.send_change_webhook(&module, &id, event, None).await)
    } else {
        sim.after_write(&module, &[(id.clone(), event)]).await;
        None
    };
    let object = sim
        .store
        .read()
        .expect("store poisoned")
        .object(&module, &id)
        .map(|o| o.to_json(None));
    axum::Json(
        json!({"object": object, "webhook": delivery.map(|d| d.map_err(|e| json!({"error": e})))}),
    )
    .into_response()
}

#[derive(Debug, Deserialize)]
struct SendWebhook {
    module: String,
    object_id: String,
    #[serde(default = "default_event")]
    event: String,
    /// Overrides the configured target for this one delivery.
    url: Option<String>,
}

fn default_event() -> String {
    "moduleobject_modify".into()
}

async fn send_webhook(
    State(sim): State<Sim>,
    axum::Json(req): axum::Json<SendWebhook>,
) -> Response {
    match sim
        .send_change_webhook(&req.module, &req.object_id, &req.event, req.url)
        .await
    {
        Ok(delivery) => axum::Json(delivery).into_response(),
        Err(msg) => error(StatusCode::BAD_REQUEST, msg),
    }
}

#[derive(Debug, Deserialize)]
struct WebhookConfig {
    url: Option<String>,
    secret: Option<String>,
    auto: Option<bool>,
    /// Deliver automatic webhooks before answering the write that caused them.
    before_response: Option<bool>,
}

async fn configure_webhook(
    State(sim): State<Sim>,
    axum::Json(cfg): axum::Json<WebhookConfig>,
) -> Response {
    {
        let mut target = sim.webhook.write().expect("webhook poisoned");
        if cfg.url.is_some() {
            target.url = cfg.url;
        }
        if cfg.secret.is_some() {
            target.secret = cfg.secret;
        }
    }
    if let Some(auto) = cfg.auto {
        sim.auto_webhooks
            .store(auto, std::sync::atomic::Ordering::Relaxed);
    }
    if let Some(before) = cfg.before_response {
        sim.webhooks_before_response
            .store(before, std::sync::atomic::Ordering::Relaxed);
    }
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Debug, Deserialize)]
struct GenerateFile {
    size: u64,
    name: Option<String>,
    mime_type: Option<String>,
    seed: Option<u64>,
    #[serde(default = "default_file_module")]
    module: String,
}

fn default_file_module() -> String {
    "file".into()
}

/// Creates a file object whose original is generated on the fly (never held in memory), for
/// benchmarking large transfers.
async fn generate_file(
    State(sim): State<Sim>,
    axum::Json(req): axum::Json<GenerateFile>,
) -> Response {
    let name = req
        .name
        .unwrap_or_else(|| format!("generated-{}.bin", req.size));
    let mime = req
        .mime_type
        .unwrap_or_else(|| "application/octet-stream".into());
    let seed = req.seed.unwrap_or(req.size);
    let mut store = sim.store.write().expect("store poisoned");
    let Some(schema) = store.modules.get(&req.module).cloned() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("Module '{}' does not exist", req.module),
        );
    };
    let mut fields = Map::new();
    for (field, value) in [("name", &name), ("mimetype", &mime)] {
        if schema.fields.iter().any(|f| f.name == field) {
            fields.insert(field.into(), json!([{"value": value, "dimensions": null}]));
        }
    }
    let id = match store.upsert(&req.module, &fields, "seed") {
        Ok(id) => id,
        Err(err) => return err.into(),
    };
    let media = Media {
        file_name: name,
        mime_type: mime,
        blob: Blob::generated(seed, req.size),
    };
    if let Err(err) = store.put_media(&req.module, &id, "Original", media, "seed") {
        return err.into();
    }
    let mod_time = store
        .object(&req.module, &id)
        .map(|o| format_time(o.mod_time));
    axum::Json(json!({"id": id, "module": req.module, "size": req.size, "seed": seed, "mod_time": mod_time}))
        .into_response()
}
