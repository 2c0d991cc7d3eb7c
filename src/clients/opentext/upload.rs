//! Documents and versions from a byte stream: a multipart `body` + `file` request up to
//! `multipart_threshold_bytes`, the Large File Upload API (`/api/v2/multipart…`) above it.
//! Either way the stream is forwarded chunk by chunk; nothing is buffered beyond one chunk.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use tokio::sync::Mutex;

use super::OpentextClient;
use super::routes::{
    MULTIPART_CANCEL, MULTIPART_COMPLETE, MULTIPART_PART, MULTIPART_START, NODE_CREATE, VERSION_ADD,
};
use super::types::{DocumentCreate, NodeId, UploadSession, VersionCreate, created_id, results};
use crate::clients::error::UpstreamError;
use crate::clients::file::FileUpload;
use crate::clients::transport::{BoxError, ByteStream, StreamBody};

/// The server refuses longer version descriptions.
const MAX_DESCRIPTION_CHARS: usize = 255;

impl OpentextClient {
    /// Creates a document from a stream; returns its node id. A duplicate name answers
    /// [`UpstreamError::Conflict`] (check with [`Self::validate_names`] or
    /// [`Self::find_child`] first, or resolve by lookup).
    pub async fn upload_document(
        &self,
        document: &DocumentCreate,
        file: FileUpload,
    ) -> Result<NodeId, UpstreamError> {
        if file.length > self.inner.multipart_threshold {
            let key = self.large_file_upload(file).await?;
            let answer = self
                .call_body(NODE_CREATE, &[], &document.body(Some(&key)))
                .await?;
            return created_id(&answer);
        }
        let body_json = document.body(None).to_string();
        let FileUpload {
            stream,
            length,
            file_name,
            mime_type,
        } = file;
        let body = StreamBody::new(stream, length);
        let answer = self
            .call_stream(NODE_CREATE, &[], &body, |b, request| {
                let form = Form::new()
                    .text("body", body_json.clone())
                    .part("file", file_part(b, length, &file_name, &mime_type)?);
                Ok(request.multipart(form))
            })
            .await?;
        created_id(&answer)
    }

    /// Adds a version to a document from a stream.
    pub async fn upload_version(
        &self,
        node: NodeId,
        version: &VersionCreate,
        file: FileUpload,
    ) -> Result<(), UpstreamError> {
        let id = node.to_string();
        let description: String = version
            .description
            .as_deref()
            .unwrap_or_default()
            .chars()
            .take(MAX_DESCRIPTION_CHARS)
            .collect();
        let major = version.add_major_version.to_string();
        if file.length > self.inner.multipart_threshold {
            let key = self.large_file_upload(file).await?;
            let form = [
                ("upload_key", key.as_str()),
                ("description", description.as_str()),
                ("add_major_version", major.as_str()),
            ];
            return self
                .call_json(VERSION_ADD, &[&id], |r| r.form(&form))
                .await
                .map(drop);
        }
        let FileUpload {
            stream,
            length,
            file_name,
            mime_type,
        } = file;
        let body = StreamBody::new(stream, length);
        self.call_stream(VERSION_ADD, &[&id], &body, |b, request| {
            let form = Form::new()
                .text("description", description.clone())
                .text("add_major_version", major.clone())
                .part("file", file_part(b, length, &file_name, &mime_type)?);
            Ok(request.multipart(form))
        })
        .await
        .map(drop)
    }

    /// Runs a Large File Upload session and returns its `upload_key` for node creation or a
    /// new version. On failure the session is cancelled (best effort).
    async fn large_file_upload(&self, file: FileUpload) -> Result<String, UpstreamError> {
        let FileUpload {
            stream,
            length,
            file_name,
            mime_type,
        } = file;
        let size = length.to_string();
        let form = [
            ("file_name", file_name.as_str()),
            ("file_size", size.as_str()),
            ("mime_type", mime_type.as_str()),
        ];
        let answer = self
            .call_json(MULTIPART_START, &[], |r| r.form(&form))
            .await?;
        let session: UploadSession = serde_json::from_value(upload_session(&answer).clone())
            .map_err(UpstreamError::decode)?;
        let part_size = session
            .part_size
            .filter(|s| *s > 0)
            .unwrap_or(self.inner.multipart_part);
        let result = self
            .send_parts(&session.upload_key, stream, length, part_size, &file_name)
            .await;
        if let Err(error) = result {
            let key = session.upload_key.clone();
            if let Err(cancel) = self.call_json(MULTIPART_CANCEL, &[&key], |r| r).await {
                tracing::warn!(%cancel, "cancelling a failed large file upload failed");
            }
            return Err(error);
        }
        self.call_json(MULTIPART_COMPLETE, &[&session.upload_key], |r| r)
            .await?;
        Ok(session.upload_key)
    }

    async fn send_parts(
        &self,
        key: &str,
        stream: ByteStream,
        length: u64,
        part_size: u64,
        file_name: &str,
    ) -> Result<(), UpstreamError> {
        let source = Arc::new(Mutex::new(PartSource {
            stream,
            leftover: None,
        }));
        let parts = length.div_ceil(part_size).max(1);
        for number in 1..=parts {
            let part_len = part_size.min(length - (number - 1) * part_size);
            let body = StreamBody::new(part_stream(source.clone(), part_len), part_len);
            let n = number.to_string();
            self.call_stream(MULTIPART_PART, &[key, &n], &body, |b, request| {
                let part = Part::stream_with_length(b, part_len).file_name(file_name.to_string());
                Ok(request.multipart(Form::new().part("part_content", part)))
            })
            .await?;
        }
        Ok(())
    }
}

fn file_part(
    body: reqwest::Body,
    length: u64,
    file_name: &str,
    mime_type: &str,
) -> Result<Part, UpstreamError> {
    Part::stream_with_length(body, length)
        .file_name(file_name.to_string())
        .mime_str(mime_type)
        .map_err(|_| UpstreamError::invalid(format!("invalid mime type {mime_type}")))
}

/// The start answer is documented bare, but may come inside `results`.
fn upload_session(answer: &Value) -> &Value {
    if answer.get("upload_key").is_some() {
        answer
    } else {
        results(answer)
    }
}

/// The file stream shared by the parts, with the tail of a chunk that crossed a part border.
struct PartSource {
    stream: ByteStream,
    leftover: Option<Bytes>,
}

/// The next `part_len` bytes of the source, as a stream.
fn part_stream(source: Arc<Mutex<PartSource>>, part_len: u64) -> ByteStream {
    futures::stream::unfold((source, part_len), |(source, remaining)| async move {
        if remaining == 0 {
            return None;
        }
        match next_piece(&source, remaining).await {
            Ok(chunk) => {
                let left = remaining - chunk.len() as u64;
                Some((Ok(chunk), (source, left)))
            }
            Err(e) => Some((Err(e), (source, 0))),
        }
    })
    .boxed()
}

/// Up to `max` bytes from the source (never an empty chunk).
async fn next_piece(source: &Mutex<PartSource>, max: u64) -> Result<Bytes, BoxError> {
    let mut src = source.lock().await;
    loop {
        let mut chunk = match src.leftover.take() {
            Some(c) => c,
            None => match src.stream.next().await {
                Some(Ok(c)) => c,
                Some(Err(e)) => return Err(e),
                None => return Err("file stream ended before its announced length".into()),
            },
        };
        if chunk.is_empty() {
            continue;
        }
        if chunk.len() as u64 > max {
            src.leftover = Some(chunk.split_off(max as usize));
        }
        return Ok(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parts_split_chunks_at_their_borders() {
        let chunks: Vec<Result<Bytes, BoxError>> = vec![
            Ok(Bytes::from_static(b"abcde")),
            Ok(Bytes::new()),
            Ok(Bytes::from_static(b"fghij")),
        ];
        let source = Arc::new(Mutex::new(PartSource {
            stream: futures::stream::iter(chunks).boxed(),
            leftover: None,
        }));
        let mut parts = Vec::new();
        for len in [4, 4, 2] {
            let bytes: Vec<Bytes> = part_stream(source.clone(), len)
                .map(|r| r.unwrap())
                .collect()
                .await;
            parts.push(bytes.concat());
        }
        assert_eq!(
            parts,
            vec![b"abcd".to_vec(), b"efgh".to_vec(), b"ij".to_vec()]
        );
        let mut short = part_stream(source, 1);
        assert!(
            short.next().await.unwrap().is_err(),
            "the source is exhausted"
        );
    }
}
