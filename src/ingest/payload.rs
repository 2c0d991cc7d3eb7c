//! Payload parsing of verified webhook bodies into normalized events.
//!
//! 4ALLPORTAL does not publish its webhook body (it is configurable on its side), so that parser
//! is tolerant: it accepts one event, a batch, or CloudEvents, and looks for each field under the
//! names seen in practice (docs/design.md §4). The OpenText callback is our own schema and is validated
//! strictly, field by field, so that an error names the exact field.

use std::ops::Range;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::verify::Verified;
use crate::clients::opentext::callback::{CallbackShape, scalar_text};

/// Most events accepted in one request; a larger batch is refused as a whole.
pub const MAX_EVENTS_PER_REQUEST: usize = 1000;

/// One normalized inbound event.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedEvent {
    /// Identity used for deduplication (see [`parse_allportal`]).
    pub source_event_id: String,
    /// Normalized kind, e.g. `moduleobject_modify` or `workflow_decision`.
    pub kind: String,
    pub module: Option<String>,
    pub object_id: Option<String>,
    /// `"{module}/{object_id}"` (4ALLPORTAL) or `"{bo_type}/{bo_id}"` (OpenText).
    pub object_key: Option<String>,
    /// The workflow an OpenText callback decides: ingest routes it to the flow that started
    /// that workflow, whatever business object it names.
    pub process_id: Option<String>,
    /// This event's JSON as received (one element of a batch).
    pub payload: Value,
    /// Where [`ParsedEvent::payload`]'s bytes are in the request body.
    pub span: Range<usize>,
}

/// Why a body was refused. Messages name the event (by index) and the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("the request body is empty")]
    Empty,
    #[error("the request body is not valid JSON: {0}")]
    NotJson(String),
    #[error("the request body must be a JSON object or an array of objects")]
    NotObjectOrArray,
    #[error("the batch holds no events")]
    EmptyBatch,
    #[error("the batch holds {count} events; at most {max} are accepted per request")]
    TooManyEvents { count: usize, max: usize },
    #[error("event #{index}: must be a JSON object")]
    NotAnObject { index: usize },
    #[error("event #{index}: missing `{field}`")]
    MissingField { index: usize, field: String },
    #[error("event #{index}: `{field}`: {problem}")]
    InvalidField {
        index: usize,
        field: String,
        problem: String,
    },
    #[error("event #{index}: unknown event kind `{kind}`")]
    UnknownKind { index: usize, kind: String },
}

fn missing(index: usize, field: &str) -> PayloadError {
    PayloadError::MissingField {
        index,
        field: field.into(),
    }
}

fn invalid(index: usize, field: &str, problem: impl Into<String>) -> PayloadError {
    PayloadError::InvalidField {
        index,
        field: field.into(),
        problem: problem.into(),
    }
}

// ------------------------------------------------------------------------------------------
// Shared: body → list of event objects, and event identity
// ------------------------------------------------------------------------------------------

/// Decodes the body and splits it into event objects, each with its bytes' range in the body
/// (the store keeps the body once and each event as its range). `events_key` enables the
/// `{"events": […]}` envelope.
fn event_objects(
    body: &[u8],
    events_key: bool,
) -> Result<Vec<(Value, Range<usize>)>, PayloadError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(PayloadError::Empty);
    }
    let not_json = |e: serde_json::Error| PayloadError::NotJson(e.to_string());
    let root: &RawValue = serde_json::from_slice(body).map_err(not_json)?;
    let items: Vec<&RawValue> = match root.get().as_bytes().first() {
        Some(b'[') => serde_json::from_str(root.get()).map_err(not_json)?,
        Some(b'{') => {
            let object: Value = serde_json::from_str(root.get()).map_err(not_json)?;
            match object.get("events") {
                Some(Value::Array(_)) if events_key => {
                    let envelope: EventsEnvelope<'_> =
                        serde_json::from_str(root.get()).map_err(not_json)?;
                    envelope.events
                }
                Some(_) if events_key => {
                    return Err(invalid(0, "events", "must be an array of events"));
                }
                // A lone event (the common request): parsed once, not again as an item.
                _ => return Ok(vec![(object, span_in(body, root.get()))]),
            }
        }
        _ => return Err(PayloadError::NotObjectOrArray),
    };
    if items.is_empty() {
        return Err(PayloadError::EmptyBatch);
    }
    if items.len() > MAX_EVENTS_PER_REQUEST {
        return Err(PayloadError::TooManyEvents {
            count: items.len(),
            max: MAX_EVENTS_PER_REQUEST,
        });
    }
    let mut events = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let value: Value = serde_json::from_str(item.get()).map_err(not_json)?;
        if !value.is_object() {
            return Err(PayloadError::NotAnObject { index });
        }
        events.push((value, span_in(body, item.get())));
    }
    Ok(events)
}

/// `{"events": […]}` with each event's raw text borrowed from the body.
#[derive(serde::Deserialize)]
struct EventsEnvelope<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

/// The range of `part`, a slice borrowed from `body`, within `body`.
fn span_in(body: &[u8], part: &str) -> Range<usize> {
    let start = part.as_ptr() as usize - body.as_ptr() as usize;
    start..start + part.len()
}

/// Identity of event `index` out of `count`, decided by signed material only, so that a
/// captured request sent again with other unsigned headers is still the same event:
/// 1. the event's own id in the body (`event_id`/`eventId`/CloudEvents `id`);
/// 2. else the delivery id when the signature covers it (standard-webhooks `webhook-id`), with
///    `#index` in a batch;
/// 3. else the hex SHA-256 of the signed timestamp (when the signature covers one) and the body,
///    with `#index` in a batch.
///
/// A delivery id outside the signature (`id_header` of `hmac-sha256` and `token`) never decides.
fn identity(verified: &Verified, count: usize, index: usize, own_id: Option<String>) -> String {
    if let Some(own) = own_id {
        return own;
    }
    let base = match verified.signed_delivery_id() {
        Some(delivery) => delivery.to_string(),
        None => signed_material_hash(verified),
    };
    if count == 1 {
        base
    } else {
        format!("{base}#{index}")
    }
}

/// Hex SHA-256 of `"{signed timestamp}." ‖ body`, or of the body alone when no timestamp is
/// signed: the same signed request always gets the same identity.
fn signed_material_hash(verified: &Verified) -> String {
    let mut hash = Sha256::new();
    if let Some(timestamp) = verified.signed_timestamp() {
        hash.update(format!("{timestamp}.").as_bytes());
    }
    hash.update(verified.body());
    hex::encode(hash.finalize())
}

// ------------------------------------------------------------------------------------------
// 4ALLPORTAL
// ------------------------------------------------------------------------------------------

const KIND_CREATE: &str = "moduleobject_create";
const KIND_MODIFY: &str = "moduleobject_modify";
const KIND_DELETE: &str = "moduleobject_delete";

/// Parses a 4ALLPORTAL webhook body: one event, a JSON array, `{"events":[…]}` or CloudEvents.
///
/// Identity: see [`identity`].
pub fn parse_allportal(v: &Verified) -> Result<Vec<ParsedEvent>, PayloadError> {
    let events = event_objects(v.body(), true)?;
    let count = events.len();
    events
        .into_iter()
        .enumerate()
        .map(|(index, (event, span))| allportal_event(v, count, index, event, span))
        .collect()
}

fn allportal_event(
    v: &Verified,
    count: usize,
    index: usize,
    event: Value,
    span: Range<usize>,
) -> Result<ParsedEvent, PayloadError> {
    let Some(top) = event.as_object() else {
        return Err(PayloadError::NotAnObject { index });
    };
    let fields = AllportalFields::read(top);
    let kind = fields.kind(index)?;
    let module = fields.module().ok_or_else(|| {
        missing(
            index,
            "module (`module`, `module_name`, `data.module` or `subject`)",
        )
    })?;
    let object_id = fields.object_id().ok_or_else(|| {
        missing(
            index,
            "object id (`object_id`, `id`, `data.object_id` or `subject`)",
        )
    })?;
    let source_event_id = identity(v, count, index, fields.own_id());
    Ok(ParsedEvent {
        source_event_id,
        kind: kind.to_string(),
        object_key: Some(format!("{module}/{object_id}")),
        module: Some(module),
        object_id: Some(object_id),
        process_id: None,
        payload: event,
        span,
    })
}

/// Read-only view of one 4ALLPORTAL event object, knowing where each field may live.
struct AllportalFields<'a> {
    top: &'a Map<String, Value>,
    data: Option<&'a Map<String, Value>>,
    /// CloudEvents: the top-level `id` is the event's id, not the object's.
    cloud_event: bool,
}

impl<'a> AllportalFields<'a> {
    fn read(top: &'a Map<String, Value>) -> Self {
        AllportalFields {
            top,
            data: top.get("data").and_then(Value::as_object),
            cloud_event: top.contains_key("specversion"),
        }
    }

    fn top_text(&self, key: &str) -> Option<String> {
        self.top.get(key).and_then(scalar_text)
    }

    fn data_text(&self, key: &str) -> Option<String> {
        self.data.and_then(|d| d.get(key)).and_then(scalar_text)
    }

    /// `(module, id)` from a CloudEvents-style subject `module/id`.
    fn subject(&self) -> Option<(String, String)> {
        let subject = self.top_text("subject")?;
        let (module, id) = subject.split_once('/')?;
        let (module, id) = (module.trim(), id.trim());
        (!module.is_empty() && !id.is_empty()).then(|| (module.to_string(), id.to_string()))
    }

    /// The first candidate that names a known kind wins; a `type` such as a bean's `"default"`
    /// must not hide a valid `event_type`. Unknown only when no candidate is known.
    fn kind(&self, index: usize) -> Result<&'static str, PayloadError> {
        let candidates = [
            self.top.get("event"),
            self.top.get("type"),
            self.top.get("event_type"),
            self.data.and_then(|d| d.get("event")),
            self.data.and_then(|d| d.get("event_type")),
        ];
        let present: Vec<&Value> = candidates.into_iter().flatten().collect();
        if let Some(kind) = present.iter().find_map(|v| normalize_allportal_kind(v)) {
            return Ok(kind);
        }
        match present.first() {
            None => Err(missing(
                index,
                "event kind (`event`, `type` or `event_type`)",
            )),
            Some(first) => Err(PayloadError::UnknownKind {
                index,
                kind: describe_value(first),
            }),
        }
    }

    fn module(&self) -> Option<String> {
        self.top_text("module")
            .or_else(|| self.top_text("module_name"))
            .or_else(|| self.data_text("module"))
            .or_else(|| self.data_text("module_name"))
            .or_else(|| self.subject().map(|(module, _)| module))
    }

    fn object_id(&self) -> Option<String> {
        if self.cloud_event {
            self.data_text("object_id")
                .or_else(|| self.subject().map(|(_, id)| id))
                .or_else(|| self.top_text("object_id"))
        } else {
            self.top_text("object_id")
                .or_else(|| self.top_text("id"))
                .or_else(|| self.data_text("object_id"))
                .or_else(|| self.subject().map(|(_, id)| id))
        }
    }

    fn own_id(&self) -> Option<String> {
        self.top_text("event_id")
            .or_else(|| self.top_text("eventId"))
            .or_else(|| self.cloud_event.then(|| self.top_text("id")).flatten())
    }
}

/// `moduleobject_modify`, `MODULEOBJECT_MODIFY`, `4allportal.moduleobject.modify`,
/// `moduleobject.modify` and the bare `modify` all mean the same kind. The connector queue's
/// numeric `event_type` (0 delete, 1 update, 2 create) is accepted too.
fn normalize_allportal_kind(value: &Value) -> Option<&'static str> {
    match value {
        Value::Number(n) => match n.as_u64()? {
            0 => Some(KIND_DELETE),
            1 => Some(KIND_MODIFY),
            2 => Some(KIND_CREATE),
            _ => None,
        },
        Value::String(s) => {
            let lowered = s.trim().to_ascii_lowercase().replace(['.', '-'], "_");
            let name = lowered.strip_prefix("4allportal_").unwrap_or(&lowered);
            let action = name.strip_prefix("moduleobject_").unwrap_or(name);
            match action {
                "create" | "created" => Some(KIND_CREATE),
                "modify" | "modified" | "update" | "updated" => Some(KIND_MODIFY),
                "delete" | "deleted" => Some(KIND_DELETE),
                _ => None,
            }
        }
        _ => None,
    }
}

/// A short rendering of an offending value for an error message.
pub(crate) fn describe_value(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.chars().count() > 80 {
        format!("{}…", text.chars().take(80).collect::<String>())
    } else {
        text
    }
}

// ------------------------------------------------------------------------------------------
// OpenText callback (our schema)
// ------------------------------------------------------------------------------------------

const KIND_WORKFLOW_DECISION: &str = "workflow_decision";
const KIND_PARTNER_DOCUMENT_APPROVED: &str = "partner_document_approved";

/// Workflow outcome reported by OpenText.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Decision {
    Approved,
    Rejected,
}

/// The 4ALLPORTAL object the callback is about. `ext_system_id` is validated as present; which
/// value is acceptable is the flows' decision, as it comes from their configuration.
#[derive(Debug)]
struct BusinessObject {
    bo_type: String,
    bo_id: String,
}

/// A validated OpenText callback: what identity and routing need. The other fields are checked
/// and stay in `payload`, where the flows read them.
#[derive(Debug)]
struct Callback {
    event_id: Option<String>,
    kind: &'static str,
    business_object: BusinessObject,
    process_id: Option<String>,
}

/// Parses an OpenText callback: one object or a JSON array of them.
///
/// Identity: see [`identity`].
pub fn parse_opentext(v: &Verified) -> Result<Vec<ParsedEvent>, PayloadError> {
    let events = event_objects(v.body(), false)?;
    let count = events.len();
    events
        .into_iter()
        .enumerate()
        .map(|(index, (event, span))| {
            let callback = Callback::read(index, &event)?;
            Ok(callback.into_event(v, count, index, event, span))
        })
        .collect()
}

/// Parses an OpenText callback in the configured `[callbacks]` shape: the default shape with
/// the field-by-field checks of [`parse_opentext`], any other through its pointers.
pub fn parse_opentext_shaped(
    v: &Verified,
    shape: &CallbackShape,
) -> Result<Vec<ParsedEvent>, PayloadError> {
    if shape.is_default() {
        return parse_opentext(v);
    }
    let events = event_objects(v.body(), false)?;
    let count = events.len();
    events
        .into_iter()
        .enumerate()
        .map(|(index, (event, span))| {
            let fields = super::callback::read(shape, index, &event)?;
            let object_key = match (&fields.bo_type, &fields.bo_id) {
                (Some(bo_type), Some(bo_id)) => Some(format!("{bo_type}/{bo_id}")),
                _ => None,
            };
            Ok(ParsedEvent {
                source_event_id: identity(v, count, index, fields.event_id),
                kind: fields.kind.unwrap_or_default().to_string(),
                module: fields.bo_type,
                object_id: fields.bo_id,
                object_key,
                process_id: fields.process_id,
                payload: event,
                span,
            })
        })
        .collect()
}

impl Callback {
    fn read(index: usize, event: &Value) -> Result<Callback, PayloadError> {
        let top = Fields::new(index, "", event)?;
        let type_text: String = top.required("type")?;
        let kind = match type_text
            .trim()
            .to_ascii_lowercase()
            .replace('.', "_")
            .as_str()
        {
            KIND_WORKFLOW_DECISION => KIND_WORKFLOW_DECISION,
            KIND_PARTNER_DOCUMENT_APPROVED => KIND_PARTNER_DOCUMENT_APPROVED,
            _ => {
                return Err(PayloadError::UnknownKind {
                    index,
                    kind: describe_value(&Value::String(type_text)),
                });
            }
        };
        let _workspace_id: Option<u64> = top.optional("workspace_id")?;
        let event_id = top.optional_id("event_id")?;
        let _occurred_at = top.optional_time("occurred_at")?;
        let mut callback = Callback {
            event_id,
            kind,
            business_object: BusinessObject::read(&top.nested("business_object")?)?,
            process_id: None,
        };
        match top.optional_nested("workflow")? {
            Some(fields) => callback.process_id = Some(check_workflow(&fields)?.to_string()),
            None if kind == KIND_WORKFLOW_DECISION => return Err(missing(index, "workflow")),
            None => {}
        }
        match top.optional_nested("document")? {
            Some(fields) => check_document(&fields)?,
            None if kind == KIND_PARTNER_DOCUMENT_APPROVED => {
                return Err(missing(index, "document"));
            }
            None => {}
        }
        Ok(callback)
    }

    fn into_event(
        self,
        v: &Verified,
        count: usize,
        index: usize,
        payload: Value,
        span: Range<usize>,
    ) -> ParsedEvent {
        let bo = &self.business_object;
        let source_event_id = identity(v, count, index, self.event_id.clone());
        ParsedEvent {
            source_event_id,
            kind: self.kind.to_string(),
            module: Some(bo.bo_type.clone()),
            object_id: Some(bo.bo_id.clone()),
            object_key: Some(format!("{}/{}", bo.bo_type, bo.bo_id)),
            process_id: self.process_id,
            payload,
            span,
        }
    }
}

impl BusinessObject {
    fn read(f: &Fields<'_>) -> Result<Self, PayloadError> {
        f.required_text("ext_system_id")?;
        Ok(BusinessObject {
            bo_type: f.required_text("bo_type")?,
            bo_id: f
                .optional_id("bo_id")?
                .ok_or_else(|| missing(f.index, &f.path("bo_id")))?,
        })
    }
}

/// Checks the `workflow` object of a callback, field by field; returns the process id.
fn check_workflow(f: &Fields<'_>) -> Result<u64, PayloadError> {
    let _comment: Option<String> = f.optional("comment")?;
    let _approver: Option<String> = f.optional("approver")?;
    let process_id: u64 = f.required("process_id")?;
    let _decision: Decision = f.required("decision")?;
    let _decided_at = f.optional_time("decided_at")?;
    Ok(process_id)
}

/// Checks the `document` object of a callback, field by field.
fn check_document(f: &Fields<'_>) -> Result<(), PayloadError> {
    let _name: Option<String> = f.optional("name")?;
    let version: Option<u64> = f.optional("version")?;
    if version == Some(0) {
        return Err(invalid(f.index, &f.path("version"), "must be 1 or greater"));
    }
    let _node_id: u64 = f.required("node_id")?;
    Ok(())
}

/// One JSON object of a callback, at a known path, with typed field access whose errors name
/// the full field path (`workflow.decision`) — serde_json's own messages do not.
struct Fields<'a> {
    index: usize,
    prefix: &'static str,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn new(index: usize, prefix: &'static str, value: &'a Value) -> Result<Self, PayloadError> {
        match value.as_object() {
            Some(map) => Ok(Fields { index, prefix, map }),
            None if prefix.is_empty() => Err(PayloadError::NotAnObject { index }),
            None => Err(invalid(index, prefix, "must be a JSON object")),
        }
    }

    fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    /// The field, with JSON `null` treated as absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn optional<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, PayloadError> {
        self.get(key)
            .map(|v| {
                T::deserialize(v).map_err(|e| invalid(self.index, &self.path(key), e.to_string()))
            })
            .transpose()
    }

    fn required<T: DeserializeOwned>(&self, key: &str) -> Result<T, PayloadError> {
        self.optional(key)?
            .ok_or_else(|| missing(self.index, &self.path(key)))
    }

    fn required_text(&self, key: &str) -> Result<String, PayloadError> {
        let text: String = self.required(key)?;
        if text.trim().is_empty() {
            return Err(invalid(self.index, &self.path(key), "must not be empty"));
        }
        Ok(text.trim().to_string())
    }

    /// A non-empty string or an integer, as a string.
    fn optional_id(&self, key: &str) -> Result<Option<String>, PayloadError> {
        self.get(key)
            .map(|v| {
                scalar_text(v).ok_or_else(|| {
                    invalid(
                        self.index,
                        &self.path(key),
                        "must be a non-empty string or an integer",
                    )
                })
            })
            .transpose()
    }

    /// An RFC 3339 date-time, kept as sent.
    fn optional_time(&self, key: &str) -> Result<Option<String>, PayloadError> {
        let text: Option<String> = self.optional(key)?;
        if let Some(text) = &text
            && chrono::DateTime::parse_from_rfc3339(text).is_err()
        {
            return Err(invalid(
                self.index,
                &self.path(key),
                format!(
                    "`{}` is not an RFC 3339 date-time",
                    describe_value(&Value::String(text.clone()))
                ),
            ));
        }
        Ok(text)
    }

    fn nested(&self, key: &'static str) -> Result<Fields<'a>, PayloadError> {
        self.optional_nested(key)?
            .ok_or_else(|| missing(self.index, key))
    }

    fn optional_nested(&self, key: &'static str) -> Result<Option<Fields<'a>>, PayloadError> {
        self.get(key)
            .map(|v| Fields::new(self.index, key, v))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::verify::testing::verified;
    use proptest::prelude::*;
    use serde_json::json;

    fn allportal(delivery: Option<&str>, body: &str) -> Result<Vec<ParsedEvent>, PayloadError> {
        parse_allportal(&verified(delivery, body.as_bytes()))
    }

    fn opentext(delivery: Option<&str>, body: &Value) -> Result<Vec<ParsedEvent>, PayloadError> {
        parse_opentext(&verified(delivery, body.to_string().as_bytes()))
    }

    fn one(events: Result<Vec<ParsedEvent>, PayloadError>) -> ParsedEvent {
        let mut events = events.expect("parses");
        assert_eq!(events.len(), 1);
        events.remove(0)
    }

    // --- 4ALLPORTAL shapes -------------------------------------------------------------------

    #[test]
    fn a_single_simple_event() {
        let body = r#"{"event":"moduleobject_modify","module":"product","object_id":"4711","mod_time":"2026-01-01 10:00:00"}"#;
        let e = one(allportal(Some("msg_1"), body));
        assert_eq!(e.kind, "moduleobject_modify");
        assert_eq!(e.module.as_deref(), Some("product"));
        assert_eq!(e.object_id.as_deref(), Some("4711"));
        assert_eq!(e.object_key.as_deref(), Some("product/4711"));
        assert_eq!(e.source_event_id, "msg_1");
        assert_eq!(e.payload, serde_json::from_str::<Value>(body).unwrap());
    }

    #[test]
    fn alternative_field_names_and_numeric_ids() {
        let e = one(allportal(
            Some("msg_1"),
            r#"{"event_type":"MODULEOBJECT_CREATE","module_name":"file","id":42}"#,
        ));
        assert_eq!(e.kind, "moduleobject_create");
        assert_eq!(e.object_key.as_deref(), Some("file/42"));
        let e = one(allportal(
            Some("msg_1"),
            r#"{"type":"moduleobject_delete","data":{"module":"collection","object_id":"c-1"}}"#,
        ));
        assert_eq!(e.kind, "moduleobject_delete");
        assert_eq!(e.object_key.as_deref(), Some("collection/c-1"));
    }

    #[test]
    fn a_json_array_batch() {
        let body = r#"[{"event":"moduleobject_modify","module":"product","object_id":"1"},
                       {"event":"moduleobject_delete","module":"product","object_id":"2"}]"#;
        let events = allportal(Some("msg_b"), body).expect("parses");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].source_event_id, "msg_b#0");
        assert_eq!(events[1].source_event_id, "msg_b#1");
        assert_eq!(events[1].kind, "moduleobject_delete");
        assert_eq!(events[1].payload["object_id"], "2");
    }

    #[test]
    fn an_events_envelope_with_own_ids() {
        let body = r#"{"events":[{"event_id":"e-1","event":"modify","module":"product","object_id":"1"},
                                 {"eventId":77,"event":"modify","module":"product","object_id":"2"}]}"#;
        let events = allportal(Some("msg_e"), body).expect("parses");
        let ids: Vec<_> = events.iter().map(|e| e.source_event_id.as_str()).collect();
        assert_eq!(ids, ["e-1", "77"]);
    }

    #[test]
    fn a_cloud_event() {
        let body = r#"{"specversion":"1.0","id":"9b2f","source":"4allportal://pim","type":"4allportal.moduleobject.modify",
            "subject":"product/3f1c","time":"2024-06-10T08:00:00Z",
            "data":{"event":"modify","mod_time":"2024-06-10T07:59:58Z"}}"#;
        let e = one(allportal(None, body));
        assert_eq!(e.kind, "moduleobject_modify");
        assert_eq!(e.module.as_deref(), Some("product"));
        // The CloudEvents `id` identifies the event, never the object.
        assert_eq!(e.object_id.as_deref(), Some("3f1c"));
        assert_eq!(e.source_event_id, "9b2f");
    }

    #[test]
    fn a_cloud_event_batch_prefers_data_fields() {
        let body = r#"[{"specversion":"1.0","id":"a","type":"4AllPortal.ModuleObject.Create","subject":"product/1",
                        "data":{"module":"product","object_id":"1"}},
                       {"specversion":"1.0","type":"moduleobject.delete","subject":"file/9"}]"#;
        let events = allportal(Some("msg_c"), body).expect("parses");
        assert_eq!(events[0].kind, "moduleobject_create");
        assert_eq!(events[0].source_event_id, "a");
        assert_eq!(events[1].kind, "moduleobject_delete");
        assert_eq!(events[1].object_key.as_deref(), Some("file/9"));
        assert_eq!(events[1].source_event_id, "msg_c#1");
    }

    #[test]
    fn a_bean_type_does_not_hide_a_known_event_type() {
        let e = one(allportal(
            Some("m"),
            r#"{"type":"default","event_type":1,"module_name":"mam","object_id":"data_1"}"#,
        ));
        assert_eq!(e.kind, "moduleobject_modify");
    }

    // --- 4ALLPORTAL identity ----------------------------------------------------------------

    #[test]
    fn the_events_own_id_wins_over_the_signed_delivery_id() {
        let body = r#"{"event_id":"own","event":"modify","module":"product","object_id":"1"}"#;
        assert_eq!(one(allportal(Some("msg_1"), body)).source_event_id, "own");
        assert_eq!(one(allportal(None, body)).source_event_id, "own");
    }

    #[test]
    fn without_a_signed_id_the_identity_is_the_hash_of_the_body() {
        // `None`: the token scheme, which signs nothing and carries no signed timestamp.
        let body = r#"{"event":"modify","module":"product","object_id":"1","mod_time":"t1"}"#;
        let e = one(allportal(None, body));
        let expected = hex::encode(Sha256::digest(body.as_bytes()));
        assert_eq!(e.source_event_id, expected);
        assert_eq!(one(allportal(None, body)).source_event_id, expected);
        let later = one(allportal(
            None,
            r#"{"event":"modify","module":"product","object_id":"1","mod_time":"t2"}"#,
        ));
        assert_ne!(later.source_event_id, expected);
        // In a batch: the hash of the whole body, then the position.
        let batch_body = format!("[{body},{body}]");
        let batch = allportal(None, &batch_body).expect("parses");
        let hash = hex::encode(Sha256::digest(batch_body.as_bytes()));
        let ids: Vec<_> = batch.iter().map(|e| e.source_event_id.clone()).collect();
        assert_eq!(ids, [format!("{hash}#0"), format!("{hash}#1")]);
    }

    #[test]
    fn an_unsigned_delivery_id_never_decides_and_a_signed_timestamp_does() {
        use crate::ingest::verify::testing::verified_hmac;
        let body = br#"{"event":"modify","module":"product","object_id":"1"}"#;
        let first = parse_allportal(&verified_hmac(Some("d-1"), None, body)).unwrap();
        let replay = parse_allportal(&verified_hmac(Some("d-2"), None, body)).unwrap();
        let no_id = parse_allportal(&verified_hmac(None, None, body)).unwrap();
        assert_eq!(first[0].source_event_id, replay[0].source_event_id);
        assert_eq!(first[0].source_event_id, no_id[0].source_event_id);
        assert_eq!(first[0].source_event_id, hex::encode(Sha256::digest(body)));
        // With `timestamp-dot-body` the signed timestamp is part of the identity: a fresh
        // signature at another time is another delivery, a replay of one is the same.
        let at = |ts| parse_allportal(&verified_hmac(Some("d-1"), Some(ts), body)).unwrap();
        let ts = 1_700_000_000;
        assert_eq!(at(ts)[0].source_event_id, at(ts)[0].source_event_id);
        assert_ne!(at(ts)[0].source_event_id, at(ts + 1)[0].source_event_id);
        let mut signed = format!("{ts}.").into_bytes();
        signed.extend_from_slice(body);
        assert_eq!(
            at(ts)[0].source_event_id,
            hex::encode(Sha256::digest(&signed))
        );
    }

    // --- 4ALLPORTAL errors ------------------------------------------------------------------

    #[test]
    fn allportal_errors_name_the_problem() {
        let cases: Vec<(String, PayloadError)> = vec![
            (String::new(), PayloadError::Empty),
            ("  \n".into(), PayloadError::Empty),
            ("[]".into(), PayloadError::EmptyBatch),
            (r#"{"events":[]}"#.into(), PayloadError::EmptyBatch),
            ("42".into(), PayloadError::NotObjectOrArray),
            (
                r#"[{"event":"modify","module":"p","object_id":"1"}, 5]"#.into(),
                PayloadError::NotAnObject { index: 1 },
            ),
            (
                r#"{"event":"moduleobject_explode","module":"p","object_id":"1"}"#.into(),
                PayloadError::UnknownKind {
                    index: 0,
                    kind: "moduleobject_explode".into(),
                },
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(
                allportal(Some("m"), &body).unwrap_err(),
                expected,
                "body {body:?}"
            );
        }
        assert!(matches!(
            allportal(Some("m"), "{not json"),
            Err(PayloadError::NotJson(_))
        ));
        let err = allportal(Some("m"), r#"{"event":"modify","object_id":"1"}"#).unwrap_err();
        assert!(
            err.to_string().contains("event #0: missing `module"),
            "{err}"
        );
        let err = allportal(Some("m"), r#"{"event":"modify","module":"p"}"#).unwrap_err();
        assert!(err.to_string().contains("object id"), "{err}");
        let err = allportal(Some("m"), r#"{"module":"p","object_id":"1"}"#).unwrap_err();
        assert!(err.to_string().contains("event kind"), "{err}");
    }

    #[test]
    fn batch_size_limit_is_enforced() {
        let event = r#"{"event":"modify","module":"p","object_id":"1"}"#;
        let at_limit = format!("[{}]", vec![event; MAX_EVENTS_PER_REQUEST].join(","));
        assert_eq!(
            allportal(Some("m"), &at_limit).unwrap().len(),
            MAX_EVENTS_PER_REQUEST
        );
        let over = format!("[{}]", vec![event; MAX_EVENTS_PER_REQUEST + 1].join(","));
        assert_eq!(
            allportal(Some("m"), &over).unwrap_err(),
            PayloadError::TooManyEvents {
                count: MAX_EVENTS_PER_REQUEST + 1,
                max: MAX_EVENTS_PER_REQUEST
            }
        );
    }

    // --- OpenText ---------------------------------------------------------------------------

    fn decision() -> Value {
        json!({
            "type": "workflow.decision",
            "occurred_at": "2026-11-28T10:00:00Z",
            "business_object": {"ext_system_id": "4ALLPORTAL", "bo_type": "product", "bo_id": "4711"},
            "workspace_id": 12345,
            "workflow": {"process_id": 9001, "decision": "approved", "comment": "ok", "approver": "reviewer01",
                         "decided_at": "2026-11-28T10:00:00Z"}
        })
    }

    fn document_approved() -> Value {
        json!({
            "event_id": "ot-1",
            "type": "partner_document.approved",
            "business_object": {"ext_system_id": "4ALLPORTAL", "bo_type": "product", "bo_id": 4711},
            "document": {"node_id": 777, "version": 2, "name": "Datasheet FR.pdf"}
        })
    }

    #[test]
    fn opentext_workflow_decision() {
        let e = one(opentext(Some("d-1"), &decision()));
        assert_eq!(e.kind, "workflow_decision");
        assert_eq!(e.module.as_deref(), Some("product"));
        assert_eq!(e.object_id.as_deref(), Some("4711"));
        assert_eq!(e.object_key.as_deref(), Some("product/4711"));
        assert_eq!(e.source_event_id, "d-1");
        assert_eq!(e.payload, decision());
    }

    #[test]
    fn opentext_partner_document_and_batches() {
        let e = one(opentext(None, &document_approved()));
        assert_eq!(e.kind, "partner_document_approved");
        assert_eq!(e.object_key.as_deref(), Some("product/4711"));
        assert_eq!(e.source_event_id, "ot-1");

        let batch =
            opentext(Some("d-2"), &json!([decision(), document_approved()])).expect("parses");
        assert_eq!(batch[0].source_event_id, "d-2#0");
        assert_eq!(batch[1].source_event_id, "ot-1");
    }

    #[test]
    fn opentext_hash_distinguishes_decisions_on_one_object() {
        let approved = one(opentext(None, &decision()));
        let mut rejected_body = decision();
        rejected_body["workflow"]["decision"] = json!("rejected");
        let rejected = one(opentext(None, &rejected_body));
        assert_eq!(approved.source_event_id.len(), 64);
        assert_ne!(approved.source_event_id, rejected.source_event_id);
        assert_eq!(
            approved.source_event_id,
            one(opentext(None, &decision())).source_event_id
        );
    }

    /// Applies `edit` to a valid body and returns the error message.
    fn opentext_error(base: Value, edit: impl FnOnce(&mut Value)) -> String {
        let mut body = base;
        edit(&mut body);
        opentext(Some("d"), &body).unwrap_err().to_string()
    }

    type Edit = Box<dyn FnOnce(&mut Value)>;

    #[test]
    fn opentext_errors_name_the_field() {
        let remove = |path: &'static [&'static str]| {
            move |v: &mut Value| {
                let (last, parents) = path.split_last().unwrap();
                let mut node = v;
                for p in parents {
                    node = &mut node[*p];
                }
                node.as_object_mut().unwrap().remove(*last);
            }
        };
        let cases: Vec<(Value, Edit, &str)> = vec![
            (
                decision(),
                Box::new(remove(&["type"])),
                "event #0: missing `type`",
            ),
            (
                decision(),
                Box::new(|v| v["type"] = json!("workflow.started")),
                "unknown event kind `workflow.started`",
            ),
            (
                decision(),
                Box::new(|v| v["type"] = json!(5)),
                "`type`: invalid type",
            ),
            (
                decision(),
                Box::new(remove(&["business_object"])),
                "missing `business_object`",
            ),
            (
                decision(),
                Box::new(|v| v["business_object"] = json!("x")),
                "`business_object`: must be a JSON object",
            ),
            (
                decision(),
                Box::new(remove(&["business_object", "bo_type"])),
                "missing `business_object.bo_type`",
            ),
            (
                decision(),
                Box::new(remove(&["business_object", "bo_id"])),
                "missing `business_object.bo_id`",
            ),
            (
                decision(),
                Box::new(remove(&["business_object", "ext_system_id"])),
                "missing `business_object.ext_system_id`",
            ),
            (
                decision(),
                Box::new(|v| v["business_object"]["bo_id"] = json!(1.5)),
                "`business_object.bo_id`: must be a non-empty string or an integer",
            ),
            (
                decision(),
                Box::new(|v| v["business_object"]["bo_type"] = json!(" ")),
                "`business_object.bo_type`: must not be empty",
            ),
            (
                decision(),
                Box::new(remove(&["workflow"])),
                "missing `workflow`",
            ),
            (
                decision(),
                Box::new(remove(&["workflow", "decision"])),
                "missing `workflow.decision`",
            ),
            (
                decision(),
                Box::new(|v| v["workflow"]["decision"] = json!("maybe")),
                "`workflow.decision`: unknown variant `maybe`",
            ),
            (
                decision(),
                Box::new(remove(&["workflow", "process_id"])),
                "missing `workflow.process_id`",
            ),
            (
                decision(),
                Box::new(|v| v["workflow"]["process_id"] = json!("abc")),
                "`workflow.process_id`: invalid type",
            ),
            (
                decision(),
                Box::new(|v| v["workflow"]["decided_at"] = json!("yesterday")),
                "`workflow.decided_at`: `yesterday` is not an RFC 3339",
            ),
            (
                decision(),
                Box::new(|v| v["workflow"]["approver"] = json!(7)),
                "`workflow.approver`: invalid type",
            ),
            (
                decision(),
                Box::new(|v| v["occurred_at"] = json!("2026-11-28")),
                "`occurred_at`: `2026-11-28` is not an RFC 3339",
            ),
            (
                decision(),
                Box::new(|v| v["workspace_id"] = json!(-3)),
                "`workspace_id`: invalid value",
            ),
            (
                decision(),
                Box::new(|v| v["event_id"] = json!({})),
                "`event_id`: must be a non-empty string",
            ),
            (
                document_approved(),
                Box::new(remove(&["document"])),
                "missing `document`",
            ),
            (
                document_approved(),
                Box::new(remove(&["document", "node_id"])),
                "missing `document.node_id`",
            ),
            (
                document_approved(),
                Box::new(|v| v["document"]["version"] = json!(0)),
                "`document.version`: must be 1 or greater",
            ),
            (
                document_approved(),
                Box::new(|v| v["document"]["name"] = json!(["a"])),
                "`document.name`: invalid type",
            ),
        ];
        for (base, edit, expected) in cases {
            let message = opentext_error(base, edit);
            assert!(
                message.contains(expected),
                "expected {expected:?} in {message:?}"
            );
        }
    }

    #[test]
    fn opentext_shape_errors() {
        assert_eq!(
            opentext(Some("d"), &json!([])).unwrap_err(),
            PayloadError::EmptyBatch
        );
        assert_eq!(
            opentext(Some("d"), &json!("x")).unwrap_err(),
            PayloadError::NotObjectOrArray
        );
        assert_eq!(
            opentext(Some("d"), &json!([decision(), 1])).unwrap_err(),
            PayloadError::NotAnObject { index: 1 }
        );
        let err = opentext(
            Some("d"),
            &json!([decision(), {"type": "workflow.decision"}]),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("event #1: missing `business_object`"),
            "{err}"
        );
        // The `events` envelope belongs to the 4ALLPORTAL parser only.
        let err = opentext(Some("d"), &json!({"events": [decision()]})).unwrap_err();
        assert!(err.to_string().contains("missing `type`"), "{err}");
    }

    // --- properties -------------------------------------------------------------------------

    proptest! {
        #[test]
        fn parsers_never_panic_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let v = verified(Some("msg_p"), &body);
            let _ = parse_allportal(&v);
            let _ = parse_opentext(&v);
        }

        #[test]
        fn parsers_never_panic_on_json_like_text(
            body in r#"[\[\]{}",:0-9a-z_./ -]{0,200}"#,
        ) {
            let v = verified(None, body.as_bytes());
            let _ = parse_allportal(&v);
            let _ = parse_opentext(&v);
        }
    }
}
