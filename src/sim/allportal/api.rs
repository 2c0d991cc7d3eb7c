//! The 4ALLPORTAL REST API subset: modules, objects (list/get/PATCH/delete), audit, media.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::Sim;
use super::model::{Media, Object, WriteError};
use super::query;
use crate::sim::blob::BlobWriter;
use crate::sim::multipart::{MultipartReader, boundary};

/// The user an authenticated request acts as (the API key's owner).
#[derive(Debug, Clone)]
pub(crate) struct ApiUser(pub(crate) String);

pub(crate) fn router(sim: Sim) -> Router {
    Router::new()
        .route("/api/modules/{module}", get(module_config))
        .route(
            "/api/modules/{module}/objects",
            get(list_objects).patch(patch_objects),
        )
        .route(
            "/api/modules/{module}/objects/{id}",
            get(get_object).delete(delete_object),
        )
        .route("/api/modules/{module}/objects/{id}/audit", get(audit))
        .route(
            "/api/modules/{module}/objects/{id}/media",
            get(media_options).put(upload_media_original),
        )
        .route(
            "/api/modules/{module}/objects/{id}/media/{media_type}",
            get(download_media).put(upload_media_typed),
        )
        .with_state(sim)
}

/// Error body, shaped like the API's `ErrorResponseItem` (`code`, `name`, `message`).
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let name = status
        .canonical_reason()
        .unwrap_or("ERROR")
        .to_ascii_uppercase()
        .replace(' ', "_");
    (
        status,
        axum::Json(json!({
            "code": status.as_u16().to_string(),
            "name": name,
            "message": message.into(),
        })),
    )
        .into_response()
}

impl From<WriteError> for Response {
    fn from(err: WriteError) -> Self {
        match err {
            WriteError::BadRequest(m) => error(StatusCode::BAD_REQUEST, m),
            WriteError::NotFound(m) => error(StatusCode::NOT_FOUND, m),
        }
    }
}

/// `Authorization: Bearer <api key>`; anything else is 401.
pub(crate) async fn require_api_key(
    State(sim): State<Sim>,
    mut req: Request,
    next: Next,
) -> Response {
    let key = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let user = key.and_then(|k| sim.api_keys.read().expect("keys poisoned").get(k).cloned());
    match user {
        Some(user) => {
            req.extensions_mut().insert(ApiUser(user));
            next.run(req).await
        }
        None => error(StatusCode::UNAUTHORIZED, "Invalid or missing API key"),
    }
}

/// Query pairs; repeated keys are kept (`fields=a&fields=b`).
fn pairs(raw: Option<String>) -> Vec<(String, String)> {
    raw.and_then(|q| serde_urlencoded::from_str(&q).ok())
        .unwrap_or_default()
}

fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Values of a list parameter sent comma-joined or repeated (both are used by real clients).
fn list_param(pairs: &[(String, String)], key: &str) -> Option<Vec<String>> {
    let values: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == key)
        .flat_map(|(_, v)| v.split(','))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    (!values.is_empty()).then_some(values)
}

async fn module_config(
    State(sim): State<Sim>,
    Path(module): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = pairs(raw);
    let store = sim.store.read().expect("store poisoned");
    let Some(schema) = store.modules.get(&module) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("Module '{module}' does not exist"),
        );
    };
    // Modules API uses camelCase (unlike the objects API).
    let mut config = json!({
        "name": schema.name,
        "label": schema.label,
        "labelSingular": schema.label,
        "labelPlural": format!("{}s", schema.label),
        "menuEntry": "yes",
        "create": true,
        "dimensions": [{"name": "locale", "type": "CEVarchar", "label": "Locale"}],
    });
    let groups = list_param(&q, "groups").unwrap_or_default();
    if groups.iter().any(|g| g == "fields") {
        config["fields"] = schema
            .fields
            .iter()
            .map(|f| {
                json!({
                    "name": f.name,
                    "type": f.field_type,
                    "label": f.name,
                    "audit": true,
                    "dimensions": f.dimensions,
                    "modules": f.modules,
                })
            })
            .collect();
    }
    axum::Json(config).into_response()
}

/// Adds `_embedded` with the related objects of the requested relation fields.
fn with_embedded(
    store: &super::model::Store,
    object: &Object,
    embed: &[String],
    fields: Option<&[String]>,
) -> Value {
    let mut json = object.to_json(fields);
    let schema = store.modules.get(&object.module);
    let mut embedded = Map::new();
    for name in embed {
        let Some(field) = schema.and_then(|s| s.fields.iter().find(|f| &f.name == name)) else {
            continue;
        };
        if !field.is_relation() {
            continue;
        }
        let related: Vec<Value> = object
            .related_ids(name)
            .iter()
            .filter_map(|id| field.modules.iter().find_map(|m| store.object(m, id)))
            .map(|o| o.to_json(None))
            .collect();
        embedded.insert(name.clone(), Value::Array(related));
    }
    if !embedded.is_empty() {
        json["_embedded"] = Value::Object(embedded);
    }
    json
}

async fn list_objects(
    State(sim): State<Sim>,
    Path(module): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = pairs(raw);
    let filter = match param(&q, "query").filter(|s| !s.trim().is_empty()) {
        Some(text) => match query::parse(text) {
            Ok(expr) => Some(expr),
            Err(msg) => return error(StatusCode::BAD_REQUEST, format!("Invalid query: {msg}")),
        },
        None => None,
    };
    let offset: usize = param(&q, "offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let limit: usize = param(&q, "limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let fields = list_param(&q, "fields");
    let embed = list_param(&q, "embed").unwrap_or_default();
    let store = sim.store.read().expect("store poisoned");
    if !store.modules.contains_key(&module) {
        return error(
            StatusCode::NOT_FOUND,
            format!("Module '{module}' does not exist"),
        );
    }
    let mut hits: Vec<&Object> = store
        .objects
        .get(&module)
        .into_iter()
        .flat_map(|m| m.values())
        .filter(|o| filter.as_ref().is_none_or(|e| query::matches(e, o)))
        .collect();
    sort_objects(&mut hits, param(&q, "sort"));
    let total = hits.len();
    let result: Vec<Value> = hits
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|o| with_embedded(&store, o, &embed, fields.as_deref()))
        .collect();
    axum::Json(json!({"total_count": total, "result": result})).into_response()
}

/// `sort=field`, `-field`, `field:desc` or `field desc`; several comma-separated. Default: by id.
fn sort_objects(objects: &mut [&Object], sort: Option<&str>) {
    let Some(sort) = sort else {
        return;
    };
    let keys: Vec<(String, bool)> = sort
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let s = s.trim();
            if let Some(f) = s.strip_prefix('-') {
                return (f.to_owned(), true);
            }
            let (field, dir) = s
                .split_once(':')
                .or_else(|| s.split_once(' '))
                .unwrap_or((s, "asc"));
            (field.to_owned(), dir.eq_ignore_ascii_case("desc"))
        })
        .collect();
    objects.sort_by(|a, b| {
        for (field, desc) in &keys {
            let ord = if field == "mod_time" {
                a.mod_time.cmp(&b.mod_time)
            } else {
                a.field_strings(field)
                    .first()
                    .cmp(&b.field_strings(field).first())
            };
            let ord = if *desc { ord.reverse() } else { ord };
            if ord.is_ne() {
                return ord;
            }
        }
        std::cmp::Ordering::Equal
    });
}

async fn get_object(
    State(sim): State<Sim>,
    Path((module, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = pairs(raw);
    let fields = list_param(&q, "fields");
    let embed = list_param(&q, "embed").unwrap_or_default();
    let store = sim.store.read().expect("store poisoned");
    match store.object(&module, &id) {
        Some(o) => axum::Json(with_embedded(&store, o, &embed, fields.as_deref())).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("Object '{id}' not found in module '{module}'"),
        ),
    }
}

async fn patch_objects(
    State(sim): State<Sim>,
    Path(module): Path<String>,
    axum::Extension(user): axum::Extension<ApiUser>,
    body: axum::body::Bytes,
) -> Response {
    let entries: Vec<Map<String, Value>> = match serde_json::from_slice(&body) {
        Ok(entries) => entries,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("Body must be a JSON array of objects: {err}"),
            );
        }
    };
    let mut ids = Vec::new();
    {
        let mut store = sim.store.write().expect("store poisoned");
        for entry in &entries {
            let existed = entry
                .get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| store.object(&module, id).is_some());
            match store.upsert(&module, entry, &user.0) {
                Ok(id) => ids.push((
                    id,
                    if existed {
                        "moduleobject_modify"
                    } else {
                        "moduleobject_create"
                    },
                )),
                Err(err) => return err.into(),
            }
        }
    }
    sim.after_write(&module, &ids).await;
    let ids: Vec<String> = ids.into_iter().map(|(id, _)| id).collect();
    axum::Json(ids).into_response()
}

async fn delete_object(
    State(sim): State<Sim>,
    Path((module, id)): Path<(String, String)>,
) -> Response {
    let removed = sim
        .store
        .write()
        .expect("store poisoned")
        .objects
        .get_mut(&module)
        .and_then(|m| m.remove(&id));
    match removed {
        Some(_) => {
            sim.after_write(&module, &[(id, "moduleobject_delete")])
                .await;
            StatusCode::OK.into_response()
        }
        None => error(StatusCode::NOT_FOUND, format!("Object '{id}' not found")),
    }
}

/// `AuditResult {fields, totalCount, count, audit[]}`, newest entry first.
async fn audit(
    State(sim): State<Sim>,
    Path((module, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = pairs(raw);
    let offset: usize = param(&q, "offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let count: usize = param(&q, "count")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let store = sim.store.read().expect("store poisoned");
    let Some(object) = store.object(&module, &id) else {
        return error(StatusCode::NOT_FOUND, format!("Object '{id}' not found"));
    };
    let page: Vec<Value> = object
        .audit
        .iter()
        .rev()
        .skip(offset)
        .take(count)
        .map(|e| serde_json::to_value(e).expect("audit entry serializes"))
        .collect();
    let mut fields: Vec<&str> = object
        .audit
        .iter()
        .filter_map(|e| e.field_name.as_deref())
        .collect();
    fields.sort_unstable();
    fields.dedup();
    axum::Json(json!({
        "fields": fields,
        "totalCount": object.audit.len(),
        "count": page.len(),
        "audit": page,
    }))
    .into_response()
}

async fn media_options(
    State(sim): State<Sim>,
    Path((module, id)): Path<(String, String)>,
) -> Response {
    let store = sim.store.read().expect("store poisoned");
    let Some(object) = store.object(&module, &id) else {
        return error(StatusCode::NOT_FOUND, format!("Object '{id}' not found"));
    };
    let types: Vec<&String> = object.media.keys().collect();
    axum::Json(json!({
        "mediaTypes": types, "ois": !types.is_empty(), "reference": false, "copy": false,
        "upload": true, "delete": true, "copyModules": [], "referenceModules": {},
    }))
    .into_response()
}

async fn upload_media_original(
    state: State<Sim>,
    Path((module, id)): Path<(String, String)>,
    user: axum::Extension<ApiUser>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    upload_media(state, module, id, "Original".into(), user, headers, body).await
}

async fn upload_media_typed(
    state: State<Sim>,
    Path((module, id, media_type)): Path<(String, String, String)>,
    user: axum::Extension<ApiUser>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    upload_media(state, module, id, media_type, user, headers, body).await
}

/// Multipart `file` upload, streamed into a blob; the object's `mimetype` follows the file.
async fn upload_media(
    State(sim): State<Sim>,
    module: String,
    id: String,
    media_type: String,
    axum::Extension(user): axum::Extension<ApiUser>,
    headers: HeaderMap,
    body: Body,
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
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(boundary) = boundary(content_type) else {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Expected multipart/form-data with a 'file' part",
        );
    };
    let mut reader = MultipartReader::new(body, &boundary);
    let media = loop {
        let part = match reader.next_part().await {
            Ok(Some(part)) => part,
            Ok(None) => return error(StatusCode::BAD_REQUEST, "Missing multipart part 'file'"),
            Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
        };
        if part.name != "file" {
            continue;
        }
        let mut writer = BlobWriter::new(sim.scratch.clone());
        loop {
            match reader.chunk().await {
                Ok(Some(chunk)) => {
                    if let Err(err) = writer.write(&chunk).await {
                        return error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string());
                    }
                }
                Ok(None) => break,
                Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
            }
        }
        let blob = match writer.finish().await {
            Ok(blob) => blob,
            Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
        };
        break Media {
            file_name: part.file_name.unwrap_or_else(|| format!("{id}.bin")),
            mime_type: part
                .content_type
                .unwrap_or_else(|| "application/octet-stream".into()),
            blob,
        };
    };
    let mime = media.mime_type.clone();
    {
        let mut store = sim.store.write().expect("store poisoned");
        if let Err(err) = store.put_media(&module, &id, &media_type, media, &user.0) {
            return err.into();
        }
        let has_mimetype = store
            .modules
            .get(&module)
            .is_some_and(|s| s.fields.iter().any(|f| f.name == "mimetype"));
        if has_mimetype {
            let entry = json!({"id": id, "mimetype": [{"value": mime, "dimensions": null}]});
            if let Err(err) = store.upsert(&module, entry.as_object().expect("object"), &user.0) {
                return err.into();
            }
        }
    }
    sim.after_write(&module, &[(id, "moduleobject_modify")])
        .await;
    StatusCode::OK.into_response()
}

/// Streams a rendition with `Content-Type`, `Content-Length` and `Content-Disposition`. Renditions
/// the simulator does not compute (`WebAll`, `large`, …) are served from the original.
async fn download_media(
    State(sim): State<Sim>,
    Path((module, id, media_type)): Path<(String, String, String)>,
) -> Response {
    let media = {
        let store = sim.store.read().expect("store poisoned");
        let Some(object) = store.object(&module, &id) else {
            return error(StatusCode::NOT_FOUND, format!("Object '{id}' not found"));
        };
        let exact = object
            .media
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&media_type))
            .map(|(_, m)| m.clone());
        let fallback = || {
            object
                .media
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("original"))
                .map(|(_, m)| m.clone())
        };
        match exact.or_else(fallback) {
            Some(m) => m,
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("Object '{id}' has no media '{media_type}'"),
                );
            }
        }
    };
    let mut response = Response::new(Body::from_stream(media.blob.stream()));
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&media.mime_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(media.blob.size));
    let disposition = format!(
        "attachment; filename=\"{}\"",
        media.file_name.replace(['"', '\\', '\r', '\n'], "_")
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    response
}
