//! File content moving between the systems: always a byte stream with its metadata, never a
//! buffer, so memory does not grow with file size.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::Response;

use super::transport::{BoxError, ByteStream};

/// A file to upload: a stream of exactly `length` bytes plus its name and media type.
pub struct FileUpload {
    pub stream: ByteStream,
    pub length: u64,
    pub file_name: String,
    pub mime_type: String,
}

impl std::fmt::Debug for FileUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileUpload")
            .field("length", &self.length)
            .field("file_name", &self.file_name)
            .field("mime_type", &self.mime_type)
            .finish_non_exhaustive()
    }
}

impl FileUpload {
    pub fn new<S, E>(
        stream: S,
        length: u64,
        file_name: impl Into<String>,
        mime_type: impl Into<String>,
    ) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        Self {
            stream: stream.map(|r| r.map_err(Into::into)).boxed(),
            length,
            file_name: file_name.into(),
            mime_type: mime_type.into(),
        }
    }

    /// Builds an upload from a download, e.g. a 4ALLPORTAL rendition going to OpenText.
    /// `None` when the download did not announce its length (uploads need it up front).
    pub fn from_download(
        download: Download,
        fallback_name: &str,
        fallback_mime: &str,
    ) -> Option<Self> {
        let length = download.length?;
        Some(Self {
            stream: download.stream,
            length,
            file_name: download
                .file_name
                .unwrap_or_else(|| fallback_name.to_string()),
            mime_type: download
                .content_type
                .unwrap_or_else(|| fallback_mime.to_string()),
        })
    }
}

/// A downloaded file: metadata from the headers plus the body as a stream.
pub struct Download {
    /// From `Content-Disposition` (`filename*` preferred over `filename`).
    pub file_name: Option<String>,
    /// From `Content-Length`.
    pub length: Option<u64>,
    pub content_type: Option<String>,
    pub stream: ByteStream,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("file_name", &self.file_name)
            .field("length", &self.length)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

impl Download {
    pub(crate) fn from_response(response: &Response, stream: ByteStream) -> Self {
        let header = |name: http::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Self {
            file_name: header(http::header::CONTENT_DISPOSITION)
                .and_then(|v| content_disposition_file_name(&v)),
            length: header(http::header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok()),
            content_type: header(http::header::CONTENT_TYPE),
            stream,
        }
    }
}

/// The file name of a `Content-Disposition` header: RFC 6266 `filename*=UTF-8''…` first,
/// then `filename="…"` or a bare token. Path separators are cut off (a name, not a path).
pub fn content_disposition_file_name(header: &str) -> Option<String> {
    let params: Vec<(String, String)> = header
        .split(';')
        .skip(1)
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    let extended = params
        .iter()
        .find(|(k, _)| k == "filename*")
        .and_then(|(_, v)| {
            let (_charset_lang, encoded) = v.split_once("''")?;
            percent_decode(encoded)
        });
    let plain = || {
        params
            .iter()
            .find(|(k, _)| k == "filename")
            .map(|(_, v)| v.trim_matches('"').replace("\\\"", "\""))
    };
    let name = extended.or_else(plain)?;
    let name = name.rsplit(['/', '\\']).next().unwrap_or_default().trim();
    (!name.is_empty()).then(|| name.to_string())
}

fn percent_decode(input: &str) -> Option<String> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = input.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::content_disposition_file_name as name;

    #[test]
    fn file_names_from_content_disposition() {
        assert_eq!(
            name(r#"attachment; filename="a b.pdf""#).as_deref(),
            Some("a b.pdf")
        );
        assert_eq!(name("inline; filename=x.jpg").as_deref(), Some("x.jpg"));
        assert_eq!(
            name(r#"attachment; filename="fallback.pdf"; filename*=UTF-8''M%C3%BCller%20Datenblatt.pdf"#)
                .as_deref(),
            Some("Müller Datenblatt.pdf")
        );
        assert_eq!(
            name(r#"attachment; filename="../../etc/passwd""#).as_deref(),
            Some("passwd")
        );
        assert_eq!(name("attachment").as_deref(), None);
    }
}
