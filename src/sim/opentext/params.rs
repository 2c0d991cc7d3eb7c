//! Request parameters the way Content Server accepts them: query string, form fields, a `body`
//! form field holding JSON, raw JSON, or multipart (`body` + `file`). Clients use all of these
//! (`opentext-api.md` §1.2), so every handler sees one merged map; a file part is streamed to a blob.

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::Sim;
use super::respond::ot_error;
use crate::sim::blob::{Blob, BlobWriter};
use crate::sim::multipart::{MultipartReader, boundary};

/// Largest non-file request body read into memory.
const FORM_LIMIT: usize = 16 * 1024 * 1024;

/// An uploaded file part.
#[derive(Debug)]
pub(crate) struct Upload {
    pub(crate) file_name: Option<String>,
    pub(crate) mime_type: Option<String>,
    pub(crate) blob: Blob,
}

/// Merged request parameters; JSON from a `body` field wins over flat fields of the same name.
#[derive(Debug, Default)]
pub(crate) struct Params {
    pub(crate) fields: Map<String, Value>,
    pub(crate) file: Option<Upload>,
}

impl Params {
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.fields.get(key).filter(|v| !v.is_null())
    }

    /// A scalar parameter; when a client sent it twice (query and form), the first value counts.
    fn scalar(&self, key: &str) -> Option<&Value> {
        match self.get(key)? {
            Value::Array(items) => items.first(),
            other => Some(other),
        }
    }

    pub(crate) fn str(&self, key: &str) -> Option<String> {
        match self.scalar(key)? {
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    pub(crate) fn i64(&self, key: &str) -> Option<i64> {
        match self.scalar(key)? {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    pub(crate) fn bool(&self, key: &str) -> Option<bool> {
        match self.scalar(key)? {
            Value::Bool(b) => Some(*b),
            Value::String(s) => Some(matches!(
                s.to_ascii_lowercase().as_str(),
                "true" | "1" | "yes"
            )),
            Value::Number(n) => Some(n.as_i64() != Some(0)),
            _ => None,
        }
    }

    /// A JSON object given either as an object or as a JSON string (flat form fields).
    pub(crate) fn object(&self, key: &str) -> Option<Map<String, Value>> {
        match self.get(key)? {
            Value::Object(o) => Some(o.clone()),
            Value::String(s) => serde_json::from_str(s).ok(),
            _ => None,
        }
    }

    /// A list of ids sent as a JSON array, `"1,2"`, `"[1,2]"`, or repeated fields.
    pub(crate) fn ids(&self, key: &str) -> Vec<i64> {
        ids_of(self.get(key))
    }
}

pub(crate) fn ids_of(value: Option<&Value>) -> Vec<i64> {
    match value {
        Some(Value::Array(items)) => items.iter().flat_map(|v| ids_of(Some(v))).collect(),
        Some(Value::Number(n)) => n.as_i64().into_iter().collect(),
        Some(Value::String(s)) => s
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split(',')
            .filter_map(|p| p.trim().trim_matches('"').parse().ok())
            .collect(),
        _ => Vec::new(),
    }
}

/// Adds a flat field; a repeated name turns into an array (`ids=1&ids=2`).
fn add_flat(fields: &mut Map<String, Value>, key: String, value: String) {
    match fields.get_mut(&key) {
        Some(Value::Array(items)) => items.push(Value::String(value)),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, Value::String(value)]);
        }
        None => {
            fields.insert(key, Value::String(value));
        }
    }
}

/// Merges the JSON of a `body` field (or a raw JSON body) over the flat fields.
fn merge_json(fields: &mut Map<String, Value>, text: &str) -> Result<(), String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => {
            fields.extend(map);
            Ok(())
        }
        Ok(_) => Err("The 'body' parameter must be a JSON object".into()),
        Err(err) => Err(format!("The 'body' parameter is not valid JSON: {err}")),
    }
}

async fn read_multipart(
    sim: &Sim,
    body: Body,
    boundary: &str,
    params: &mut Params,
) -> Result<(), String> {
    let mut reader = MultipartReader::new(body, boundary);
    while let Some(part) = reader.next_part().await? {
        let is_file =
            part.file_name.is_some() || part.name == "file" || part.name == "part_content";
        if is_file {
            let mut writer = BlobWriter::new(sim.scratch.clone());
            while let Some(chunk) = reader.chunk().await? {
                writer.write(&chunk).await.map_err(|e| e.to_string())?;
            }
            let blob = writer.finish().await.map_err(|e| e.to_string())?;
            params.file = Some(Upload {
                file_name: part.file_name,
                mime_type: part.content_type,
                blob,
            });
        } else {
            let text = reader.text().await?;
            if part.name == "body" {
                merge_json(&mut params.fields, &text)?;
            } else {
                add_flat(&mut params.fields, part.name, text);
            }
        }
    }
    Ok(())
}

async fn read_raw_file(
    sim: &Sim,
    body: Body,
    mime: &str,
    params: &mut Params,
) -> Result<(), String> {
    use futures::StreamExt;
    let mut writer = BlobWriter::new(sim.scratch.clone());
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        writer.write(&chunk).await.map_err(|e| e.to_string())?;
    }
    params.file = Some(Upload {
        file_name: None,
        mime_type: Some(mime.to_owned()),
        blob: writer.finish().await.map_err(|e| e.to_string())?,
    });
    Ok(())
}

impl FromRequest<Sim> for Params {
    type Rejection = Response;

    async fn from_request(req: Request, sim: &Sim) -> Result<Self, Self::Rejection> {
        let mut params = Params::default();
        if let Some(query) = req.uri().query() {
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_str(query).unwrap_or_default();
            for (k, v) in pairs {
                add_flat(&mut params.fields, k, v);
            }
        }
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = req.into_body();
        let bad = |msg: String| ot_error(400, msg).into_response();
        if let Some(boundary) = boundary(&content_type) {
            read_multipart(sim, body, &boundary, &mut params)
                .await
                .map_err(bad)?;
            return Ok(params);
        }
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if mime == "application/octet-stream" {
            read_raw_file(sim, body, &mime, &mut params)
                .await
                .map_err(bad)?;
            return Ok(params);
        }
        let bytes = axum::body::to_bytes(body, FORM_LIMIT)
            .await
            .map_err(|e| bad(format!("Could not read request body: {e}")))?;
        if bytes.is_empty() {
            return Ok(params);
        }
        let text = String::from_utf8_lossy(&bytes);
        if mime == "application/x-www-form-urlencoded" {
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_bytes(&bytes).map_err(|e| bad(e.to_string()))?;
            let mut body_json = None;
            for (k, v) in pairs {
                if k == "body" {
                    body_json = Some(v);
                } else {
                    add_flat(&mut params.fields, k, v);
                }
            }
            if let Some(json) = body_json {
                merge_json(&mut params.fields, &json).map_err(bad)?;
            }
        } else if text.trim_start().starts_with('{') {
            // Raw JSON (BW-SPEC declares application/json; the names check takes text/plain).
            merge_json(&mut params.fields, &text).map_err(bad)?;
        }
        Ok(params)
    }
}
