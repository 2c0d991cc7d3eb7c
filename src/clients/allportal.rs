//! 4ALLPORTAL REST client (`/api/modules/…`): objects with dimensioned values, module schema,
//! audit history, upserts, file objects with media upload, and streamed renditions.
//!
//! Naming follows the API: the Objects API is snake_case (`total_count`, `mod_time`), the
//! Modules API camelCase (`labelSingular`, `valueOptionKey`).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt as _;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::{ErrorAnswer, UpstreamError};
use super::file::{Download, FileUpload};
use super::transport::{
    CircuitState, Clock, Deadline, StreamBody, SystemClock, Transport, TransportPolicy,
    check_status, decode_json,
};
use crate::clients::config::AllportalConfig;

/// Name of this upstream in metrics and errors.
pub const UPSTREAM: &str = "allportal";

const MODULE: &str = "/api/modules/{module}";
const OBJECTS: &str = "/api/modules/{module}/objects";
const OBJECT: &str = "/api/modules/{module}/objects/{id}";
const AUDIT: &str = "/api/modules/{module}/objects/{id}/audit";
const MEDIA: &str = "/api/modules/{module}/objects/{id}/media";
const MEDIA_TYPE: &str = "/api/modules/{module}/objects/{id}/media/{type}";
/// `POST` is in the 2022 spec (§4.1); `GET` (the list) is inferred from newer versions.
const WEBHOOKS: &str = "/api/system/webhooks";

/// Every route the client sends, `(method, path template)`, relative to the base URL.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", MODULE),
    ("GET", OBJECTS),
    ("PATCH", OBJECTS),
    ("GET", OBJECT),
    ("GET", AUDIT),
    ("PUT", MEDIA),
    ("PUT", MEDIA_TYPE),
    ("GET", MEDIA_TYPE),
    ("GET", WEBHOOKS),
    ("POST", WEBHOOKS),
];

/// A webhook as 4ALLPORTAL's `Webhook` model has it (`allportal-api.md` §4.1).
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<BTreeMap<String, String>>,
    /// Write-only: sent when registering, never read back.
    #[serde(default, skip)]
    pub secret: Option<SecretString>,
    #[serde(default)]
    pub events: Vec<WebhookEvent>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("active", &self.active)
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

/// One trigger of a [`Webhook`]: an event type, optionally narrowed to a module and a 4APQL query.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    pub content_type: String,
}

/// How a written value combines with what is stored (default `overwrite`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Instruction {
    Overwrite,
    IfEmpty,
    ListAdd,
    ListAddForce,
    ListRemove,
}

/// One value of a field: `{value, dimensions}`; `dimensions` is null for non-dimensioned
/// fields and for "not explicit" values that apply to every dimension value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DimensionedValue {
    pub value: Value,
    #[serde(default)]
    pub dimensions: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instruction: Option<Instruction>,
}

impl DimensionedValue {
    /// A value without dimensions.
    pub fn plain(value: impl Into<Value>) -> Self {
        Self {
            value: value.into(),
            dimensions: None,
            instruction: None,
        }
    }

    /// A value for the given dimension values, e.g. `[("locale", "de_DE"), ("channel", "erp")]`.
    pub fn dimensioned(value: impl Into<Value>, dimensions: &[(&str, &str)]) -> Self {
        Self {
            value: value.into(),
            dimensions: Some(
                dimensions
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            instruction: None,
        }
    }

    pub fn with_instruction(mut self, instruction: Instruction) -> Self {
        self.instruction = Some(instruction);
        self
    }

    /// How well this value fits the wanted dimensions: `None` when one of its dimensions
    /// contradicts a wanted one, else the number of wanted dimensions it matches exactly.
    fn fit(&self, wanted: &[(&str, &str)]) -> Option<usize> {
        let mut score = 0;
        for (name, value) in self.dimensions.iter().flatten() {
            match wanted.iter().find(|(w, _)| w == name) {
                Some((_, want)) if want == value => score += 1,
                Some(_) => return None,
                None => {}
            }
        }
        Some(score)
    }
}

/// An object as read: system keys plus every field as a list of dimensioned values.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "Map<String, Value>")]
pub struct ModuleObject {
    pub id: String,
    pub module: Option<String>,
    pub object_type: Option<String>,
    pub mod_time: Option<String>,
    pub fields: BTreeMap<String, Vec<DimensionedValue>>,
    /// Keys that are not value lists (e.g. `_embedded`), kept as they came.
    pub extra: Map<String, Value>,
}

impl TryFrom<Map<String, Value>> for ModuleObject {
    type Error = String;

    fn try_from(mut map: Map<String, Value>) -> Result<Self, Self::Error> {
        let id = match map.remove("id") {
            Some(Value::String(s)) => s,
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err("object without `id`".into()),
        };
        let mut take_str = |key: &str| match map.remove(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        let module = take_str("module");
        let object_type = take_str("type");
        let mod_time = take_str("mod_time");
        let mut fields = BTreeMap::new();
        let mut extra = Map::new();
        for (key, value) in map {
            match serde_json::from_value::<Vec<DimensionedValue>>(value.clone()) {
                Ok(values) => {
                    fields.insert(key, values);
                }
                Err(_) if value.is_null() => {
                    fields.insert(key, Vec::new());
                }
                Err(_) => {
                    extra.insert(key, value);
                }
            }
        }
        Ok(Self {
            id,
            module,
            object_type,
            mod_time,
            fields,
            extra,
        })
    }
}

impl ModuleObject {
    /// All values of `field` (empty when absent).
    pub fn values(&self, field: &str) -> &[DimensionedValue] {
        self.fields
            .get(field)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The value of `field` that best fits the wanted dimensions: a value whose dimensions all
    /// match beats a partial match, which beats a non-dimensioned value; values with a
    /// contradicting dimension never match.
    pub fn value_in(&self, field: &str, wanted: &[(&str, &str)]) -> Option<&Value> {
        let mut best: Option<(usize, &DimensionedValue)> = None;
        for candidate in self.values(field) {
            if let Some(score) = candidate.fit(wanted)
                && best.is_none_or(|(s, _)| score > s)
            {
                best = Some((score, candidate));
            }
        }
        best.map(|(_, v)| &v.value)
    }

    /// [`Self::value_in`] for the two documented dimensions, `locale` and `channel`.
    pub fn value_for(
        &self,
        field: &str,
        locale: Option<&str>,
        channel: Option<&str>,
    ) -> Option<&Value> {
        let mut wanted = Vec::with_capacity(2);
        if let Some(l) = locale {
            wanted.push(("locale", l));
        }
        if let Some(c) = channel {
            wanted.push(("channel", c));
        }
        self.value_in(field, &wanted)
    }

    /// [`Self::value_for`] as text (strings as they are, numbers and booleans rendered).
    pub fn text_for(
        &self,
        field: &str,
        locale: Option<&str>,
        channel: Option<&str>,
    ) -> Option<String> {
        match self.value_for(field, locale, channel)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    /// Ids held by a relation field (list values, single values, or `{id}` objects).
    pub fn related_ids(&self, field: &str) -> Vec<String> {
        fn collect(value: &Value, out: &mut Vec<String>) {
            match value {
                Value::String(s) => out.push(s.clone()),
                Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
                Value::Object(o) => {
                    if let Some(Value::String(id)) = o.get("id") {
                        out.push(id.clone());
                    }
                }
                _ => {}
            }
        }
        let mut ids = Vec::new();
        for v in self.values(field) {
            collect(&v.value, &mut ids);
        }
        ids.dedup();
        ids
    }
}

/// One object to create or update with `PATCH …/objects`. Without `id` a new object is created;
/// with an unknown `id` it is created with that id (so a retry cannot create a duplicate).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectWrite {
    pub id: Option<String>,
    /// `None` writes JSON null, which deletes every value of the field.
    pub fields: BTreeMap<String, Option<Vec<DimensionedValue>>>,
}

impl ObjectWrite {
    pub fn new(id: Option<&str>) -> Self {
        Self {
            id: id.map(str::to_string),
            fields: BTreeMap::new(),
        }
    }

    /// Sets the values of `field` (replacing what this write had for it).
    pub fn set(mut self, field: &str, values: Vec<DimensionedValue>) -> Self {
        self.fields.insert(field.to_string(), Some(values));
        self
    }

    /// Deletes every value of `field`.
    pub fn clear(mut self, field: &str) -> Self {
        self.fields.insert(field.to_string(), None);
        self
    }

    fn to_json(&self) -> Value {
        let mut map = Map::new();
        if let Some(id) = &self.id {
            map.insert("id".into(), Value::String(id.clone()));
        }
        for (field, values) in &self.fields {
            let value = match values {
                Some(v) => serde_json::to_value(v).unwrap_or(Value::Null),
                None => Value::Null,
            };
            map.insert(field.clone(), value);
        }
        Value::Object(map)
    }
}

/// Which fields and relations to read.
#[derive(Debug, Clone, Default)]
pub struct ObjectQuery {
    pub fields: Vec<String>,
    pub embed: Vec<String>,
}

/// A list request: `query` is 4APQL, e.g. `mod_time > '2024-01-01T00:00:00Z'`.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub query: Option<String>,
    pub fields: Vec<String>,
    pub embed: Vec<String>,
    pub sort: Vec<String>,
    pub offset: u64,
    pub limit: u64,
    pub total_count: bool,
}

/// One page of objects.
#[derive(Debug, Clone, Deserialize)]
pub struct ObjectPage {
    #[serde(default)]
    pub total_count: Option<u64>,
    #[serde(default)]
    pub result: Vec<ModuleObject>,
}

/// A module's configuration (`GET /api/modules/{module}?groups=fields`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleConfig {
    pub name: String,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub fields: Vec<ModuleField>,
    #[serde(default)]
    pub dimensions: Vec<DimensionConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleField {
    pub name: String,
    #[serde(rename = "type", default)]
    pub field_type: Option<String>,
    #[serde(default)]
    pub label: Option<String>,
    /// Names of the dimensions this field is dimensioned by.
    #[serde(default)]
    pub dimensions: Vec<String>,
    /// For relation fields: the modules they point to.
    #[serde(default)]
    pub modules: Vec<String>,
    #[serde(default)]
    pub value_option_key: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DimensionConfig {
    pub name: String,
    #[serde(rename = "type", default)]
    pub dimension_type: Option<String>,
    #[serde(default)]
    pub label: Option<String>,
}

/// The audit history of one object (`AuditResult`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    #[serde(default)]
    pub total_count: Option<u64>,
    #[serde(default)]
    pub count: Option<u64>,
    #[serde(default)]
    pub audit: Vec<AuditEvent>,
}

/// One audit entry; `value_old` / `value_new` are `{value, dimensions}` containers.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub id: i64,
    #[serde(rename = "type", default)]
    pub event_type: Option<String>,
    #[serde(default)]
    pub object_id: Option<String>,
    #[serde(default)]
    pub create_by: Option<String>,
    #[serde(default)]
    pub create_time: Option<String>,
    #[serde(default)]
    pub field_name: Option<String>,
    #[serde(default)]
    pub value_old: Option<Value>,
    #[serde(default)]
    pub value_new: Option<Value>,
    #[serde(default)]
    pub dimensions: Option<BTreeMap<String, Value>>,
}

/// The 4ALLPORTAL client. Cheap to clone.
#[derive(Clone)]
pub struct AllportalClient {
    transport: Arc<Transport>,
    api_key: Arc<SecretString>,
}

impl std::fmt::Debug for AllportalClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AllportalClient")
            .field("base_url", &self.transport.base_url().as_str())
            .field("api_key", &"<redacted>")
            .finish()
    }
}

/// 4ALLPORTAL's errors follow HTTP semantics; the generic mapping fits.
fn map_error(answer: ErrorAnswer) -> UpstreamError {
    answer.into_error()
}

impl AllportalClient {
    pub fn new(config: &AllportalConfig) -> Result<Self, UpstreamError> {
        Self::with_policy(config, (&config.transport).into(), Arc::new(SystemClock))
    }

    /// Like [`Self::new`] with an explicit policy and clock (tests, tuning).
    pub fn with_policy(
        config: &AllportalConfig,
        policy: TransportPolicy,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, UpstreamError> {
        let transport = Transport::with_tls(
            UPSTREAM,
            config.base_url.clone(),
            policy,
            clock,
            config.tls(),
        )?
        .with_limits(config.limits());
        Ok(Self {
            transport: Arc::new(transport),
            api_key: Arc::new(config.api_key.clone()),
        })
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// State of this upstream's circuit breaker (status endpoint).
    pub fn circuit_state(&self) -> CircuitState {
        self.transport.circuit_state()
    }

    fn request(
        &self,
        method: Method,
        template: &str,
        params: &[&str],
    ) -> Result<reqwest::RequestBuilder, UpstreamError> {
        let url = self.transport.route_url(template, params)?;
        let mut header =
            http::HeaderValue::from_str(&format!("Bearer {}", self.api_key.expose_secret()))
                .map_err(|_| UpstreamError::invalid("API key is not a valid header value"))?;
        header.set_sensitive(true);
        Ok(self
            .transport
            .request(method, url)?
            .header(http::header::AUTHORIZATION, header))
    }

    /// Reads one object.
    pub async fn get_object(
        &self,
        module: &str,
        id: &str,
        query: &ObjectQuery,
    ) -> Result<ModuleObject, UpstreamError> {
        let params = shape_params(&query.fields, &query.embed);
        let response = self
            .transport
            .send(Deadline::Total, || {
                Ok(self
                    .request(Method::GET, OBJECT, &[module, id])?
                    .query(&params))
            })
            .await?;
        decode_json(response, map_error).await
    }

    /// Lists objects, filtered by a 4APQL query, one page at a time.
    pub async fn list_objects(
        &self,
        module: &str,
        list: &ListQuery,
    ) -> Result<ObjectPage, UpstreamError> {
        let mut params = shape_params(&list.fields, &list.embed);
        if let Some(q) = &list.query {
            params.push(("query", q.clone()));
        }
        if !list.sort.is_empty() {
            params.push(("sort", list.sort.join(",")));
        }
        params.push(("offset", list.offset.to_string()));
        params.push(("limit", list.limit.to_string()));
        if list.total_count {
            params.push(("totalCount", "true".into()));
        }
        let response = self
            .transport
            .send(Deadline::Total, || {
                Ok(self
                    .request(Method::GET, OBJECTS, &[module])?
                    .query(&params))
            })
            .await?;
        decode_json(response, map_error).await
    }

    /// Objects modified after `cursor` (reconciliation of missed webhooks), oldest first.
    pub async fn modified_since(
        &self,
        module: &str,
        cursor: chrono::DateTime<chrono::Utc>,
        fields: &[String],
        offset: u64,
        limit: u64,
    ) -> Result<ObjectPage, UpstreamError> {
        let list = ListQuery {
            query: Some(modified_since_query(cursor)),
            fields: fields.to_vec(),
            sort: vec!["mod_time".into()],
            offset,
            limit,
            total_count: true,
            ..ListQuery::default()
        };
        self.list_objects(module, &list).await
    }

    /// The module's configuration with its fields.
    pub async fn module_schema(&self, module: &str) -> Result<ModuleConfig, UpstreamError> {
        let response = self
            .transport
            .send(Deadline::Total, || {
                Ok(self
                    .request(Method::GET, MODULE, &[module])?
                    .query(&[("groups", "fields")]))
            })
            .await?;
        decode_json(response, map_error).await
    }

    /// The registered webhooks, or `None` when this 4ALLPORTAL cannot list them (the 2022 API
    /// has no list: it answers 404 or 405).
    pub async fn webhooks(&self) -> Result<Option<Vec<Webhook>>, UpstreamError> {
        let response = self
            .transport
            .send(Deadline::Total, || self.request(Method::GET, WEBHOOKS, &[]))
            .await?;
        if matches!(response.status().as_u16(), 404 | 405) {
            return Ok(None);
        }
        decode_json(response, map_error).await.map(Some)
    }

    /// `POST /api/system/webhooks`: creates the webhook, or replaces the one with its `id`.
    pub async fn save_webhook(&self, webhook: &Webhook) -> Result<Webhook, UpstreamError> {
        let body = serde_json::json!({
            "id": webhook.id,
            "active": webhook.active,
            "url": webhook.url,
            "header": webhook.header,
            "secret": webhook.secret.as_ref().map(|s| s.expose_secret().to_string()),
            "events": webhook.events,
        });
        let response = self
            .transport
            .send(Deadline::Total, || {
                Ok(self.request(Method::POST, WEBHOOKS, &[])?.json(&body))
            })
            .await?;
        decode_json(response, map_error).await
    }

    /// The audit history of an object (who changed which field from what to what).
    pub async fn audit(
        &self,
        module: &str,
        id: &str,
        offset: u64,
        count: u64,
        query: Option<&str>,
    ) -> Result<AuditPage, UpstreamError> {
        let mut params = vec![("offset", offset.to_string()), ("count", count.to_string())];
        if let Some(q) = query {
            params.push(("query", q.to_string()));
        }
        let response = self
            .transport
            .send(Deadline::Total, || {
                Ok(self
                    .request(Method::GET, AUDIT, &[module, id])?
                    .query(&params))
            })
            .await?;
        decode_json(response, map_error).await
    }

    /// Creates or updates objects; returns their ids in order.
    pub async fn upsert_objects(
        &self,
        module: &str,
        objects: &[ObjectWrite],
    ) -> Result<Vec<String>, UpstreamError> {
        let body = Value::Array(objects.iter().map(ObjectWrite::to_json).collect());
        let response = self
            .transport
            .send(Deadline::Total, || {
                Ok(self.request(Method::PATCH, OBJECTS, &[module])?.json(&body))
            })
            .await?;
        let ids: Vec<Value> = decode_json(response, map_error).await?;
        ids.into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                Value::Number(n) => Ok(n.to_string()),
                other => Err(UpstreamError::decode(format!("unexpected id {other}"))),
            })
            .collect()
    }

    /// Uploads the content of a file object (`PUT …/media[/{type}]`, multipart `file`),
    /// streamed.
    /// The media types an object has content for (`GET …/objects/{id}/media` → `mediaTypes`).
    pub async fn media_types(&self, module: &str, id: &str) -> Result<Vec<String>, UpstreamError> {
        let response = self
            .transport
            .send(Deadline::Total, || {
                self.request(Method::GET, MEDIA, &[module, id])
            })
            .await?;
        let answer: Value = decode_json(response, map_error).await?;
        Ok(answer
            .get("mediaTypes")
            .and_then(Value::as_array)
            .map(|types| {
                types
                    .iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    pub async fn upload_media(
        &self,
        module: &str,
        id: &str,
        media_type: Option<&str>,
        file: FileUpload,
    ) -> Result<(), UpstreamError> {
        let FileUpload {
            stream,
            length,
            file_name,
            mime_type,
        } = file;
        let body = StreamBody::new(stream, length);
        let response = self
            .transport
            .send_stream(&body, |b| {
                let part = reqwest::multipart::Part::stream_with_length(b, length)
                    .file_name(file_name.clone())
                    .mime_str(&mime_type)
                    .map_err(|_| UpstreamError::invalid("invalid mime type"))?;
                let form = reqwest::multipart::Form::new().part("file", part);
                let request = match media_type {
                    Some(t) => self.request(Method::PUT, MEDIA_TYPE, &[module, id, t])?,
                    None => self.request(Method::PUT, MEDIA, &[module, id])?,
                };
                Ok(request.multipart(form))
            })
            .await?;
        check_status(response, map_error).await.map(drop)
    }

    /// Creates (or, with a known id, updates) a file object and uploads its content. Pass an
    /// id derived from the source so that a retry after a failed upload reuses the object.
    pub async fn create_file_object(
        &self,
        module: &str,
        object: ObjectWrite,
        file: FileUpload,
    ) -> Result<String, UpstreamError> {
        let ids = self
            .upsert_objects(module, std::slice::from_ref(&object))
            .await?;
        let id = ids
            .into_iter()
            .next()
            .ok_or_else(|| UpstreamError::decode("upsert returned no id"))?;
        self.upload_media(module, &id, None, file).await?;
        Ok(id)
    }

    /// Adds `target_ids` to the relation field `field` of an object (`list_add`, so existing
    /// links stay).
    pub async fn link(
        &self,
        module: &str,
        id: &str,
        field: &str,
        target_ids: &[&str],
    ) -> Result<(), UpstreamError> {
        let value = DimensionedValue::plain(Value::from(
            target_ids
                .iter()
                .map(|s| Value::from(*s))
                .collect::<Vec<_>>(),
        ))
        .with_instruction(Instruction::ListAdd);
        let write = ObjectWrite::new(Some(id)).set(field, vec![value]);
        self.upsert_objects(module, &[write]).await.map(drop)
    }

    /// Streams a rendition (`Original`, `WebAll`, `small`, … depending on configuration).
    pub async fn download_rendition(
        &self,
        module: &str,
        id: &str,
        media_type: &str,
    ) -> Result<Download, UpstreamError> {
        let response = self
            .transport
            .send(Deadline::Headers, || {
                self.request(Method::GET, MEDIA_TYPE, &[module, id, media_type])
            })
            .await?;
        let response = check_status(response, map_error).await?;
        let headers_only = Download::from_response(&response, futures::stream::empty().boxed());
        Ok(Download {
            stream: self.transport.idle_guarded(response),
            ..headers_only
        })
    }
}

fn shape_params(fields: &[String], embed: &[String]) -> Vec<(&'static str, String)> {
    let mut params = Vec::new();
    if !fields.is_empty() {
        params.push(("fields", fields.join(",")));
    }
    if !embed.is_empty() {
        params.push(("embed", embed.join(",")));
    }
    params
}

/// The 4APQL condition "modified after `cursor`" (timestamps compare as ISO-8601 strings).
pub fn modified_since_query(cursor: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "mod_time > '{}'",
        cursor.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn product() -> ModuleObject {
        serde_json::from_value(json!({
            "id": "3f1c0b7e-2a7d-4b8e-9a57-0c1d2e3f4a5b",
            "module": "product",
            "type": "default",
            "mod_time": "2022-06-28T10:12:13.000Z",
            "_embedded": {"x": 1},
            "article_number": [{"value": "TESTNUMMER", "dimensions": null}],
            "empty": null,
            "name": [
                {"value": "Name ERP", "dimensions": {"channel": "erp", "locale": "de_DE"}},
                {"value": "Name eBay", "dimensions": {"channel": "ebay", "locale": "de_DE"}},
                {"value": "Name EN", "dimensions": {"channel": "erp", "locale": "en_US"}}
            ],
            "description": [
                {"value": "fallback", "dimensions": null},
                {"value": "Beschreibung", "dimensions": {"locale": "de_DE"}}
            ],
            "files": [{"value": ["a", "b"], "dimensions": null}]
        }))
        .unwrap()
    }

    #[test]
    fn reads_system_keys_fields_and_extras() {
        let p = product();
        assert_eq!(p.id, "3f1c0b7e-2a7d-4b8e-9a57-0c1d2e3f4a5b");
        assert_eq!(p.module.as_deref(), Some("product"));
        assert_eq!(p.mod_time.as_deref(), Some("2022-06-28T10:12:13.000Z"));
        assert!(p.extra.contains_key("_embedded"));
        assert!(p.values("empty").is_empty());
        assert_eq!(p.related_ids("files"), vec!["a", "b"]);
    }

    #[test]
    fn value_for_picks_the_best_dimension_match() {
        let p = product();
        assert_eq!(
            p.text_for("name", Some("de_DE"), Some("ebay")).as_deref(),
            Some("Name eBay")
        );
        assert_eq!(
            p.text_for("name", Some("en_US"), Some("erp")).as_deref(),
            Some("Name EN")
        );
        assert_eq!(p.text_for("name", Some("fr_FR"), Some("erp")), None);
        assert_eq!(
            p.text_for("description", Some("de_DE"), None).as_deref(),
            Some("Beschreibung")
        );
        assert_eq!(
            p.text_for("description", Some("en_US"), None).as_deref(),
            Some("fallback")
        );
        assert_eq!(
            p.text_for("article_number", Some("de_DE"), Some("erp"))
                .as_deref(),
            Some("TESTNUMMER")
        );
    }

    #[test]
    fn writes_serialize_like_the_api_expects() {
        let w = ObjectWrite::new(Some("id-1"))
            .set(
                "name",
                vec![DimensionedValue::dimensioned("N", &[("locale", "de_DE")])],
            )
            .set(
                "tags",
                vec![DimensionedValue::plain(json!(["x"])).with_instruction(Instruction::ListAdd)],
            )
            .clear("old");
        assert_eq!(
            w.to_json(),
            json!({
                "id": "id-1",
                "name": [{"value": "N", "dimensions": {"locale": "de_DE"}}],
                "tags": [{"value": ["x"], "dimensions": null, "instruction": "list_add"}],
                "old": null
            })
        );
    }

    #[test]
    fn modified_since_is_a_4apql_comparison() {
        let t = chrono::DateTime::parse_from_rfc3339("2024-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            modified_since_query(t),
            "mod_time > '2024-01-02T03:04:05.000Z'"
        );
    }
}
