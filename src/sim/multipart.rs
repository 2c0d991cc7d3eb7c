//! A small streaming `multipart/form-data` reader. File parts are handed out chunk by chunk so a
//! simulator can store a 1 GiB upload without holding it in memory.

use axum::body::Body;
use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;

/// Headers of one part.
#[derive(Debug, Clone, Default)]
pub(crate) struct PartInfo {
    pub(crate) name: String,
    pub(crate) file_name: Option<String>,
    pub(crate) content_type: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
enum Position {
    /// Before the first delimiter (preamble).
    Start,
    /// Inside a part's content.
    InPart,
    /// Just after a delimiter line marker.
    AfterDelimiter,
    Done,
}

pub(crate) struct MultipartReader {
    body: BoxStream<'static, Result<Bytes, axum::Error>>,
    buf: BytesMut,
    /// `\r\n--<boundary>`.
    delimiter: Vec<u8>,
    position: Position,
    eof: bool,
}

/// Extracts the boundary from a `multipart/form-data; boundary=…` content type.
pub(crate) fn boundary(content_type: &str) -> Option<String> {
    if !content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/")
    {
        return None;
    }
    content_type.split(';').find_map(|param| {
        let (key, value) = param.split_once('=')?;
        (key.trim().eq_ignore_ascii_case("boundary"))
            .then(|| value.trim().trim_matches('"').to_owned())
    })
}

impl MultipartReader {
    pub(crate) fn new(body: Body, boundary: &str) -> Self {
        let mut buf = BytesMut::new();
        // A leading CRLF lets the first delimiter match the same pattern as every later one.
        buf.extend_from_slice(b"\r\n");
        Self {
            body: body.into_data_stream().boxed(),
            buf,
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            position: Position::Start,
            eof: false,
        }
    }

    async fn fill(&mut self) -> Result<bool, String> {
        if self.eof {
            return Ok(false);
        }
        match self.body.next().await {
            Some(Ok(chunk)) => {
                self.buf.extend_from_slice(&chunk);
                Ok(true)
            }
            Some(Err(err)) => Err(format!("reading request body: {err}")),
            None => {
                self.eof = true;
                Ok(false)
            }
        }
    }

    fn find(&self, needle: &[u8], start: usize) -> Option<usize> {
        let first = needle[0];
        let mut from = start.min(self.buf.len());
        while let Some(offset) = self.buf[from..].iter().position(|b| *b == first) {
            let at = from + offset;
            if self.buf.len() - at < needle.len() {
                return None;
            }
            if &self.buf[at..at + needle.len()] == needle {
                return Some(at);
            }
            from = at + 1;
        }
        None
    }

    /// Moves to the next part and returns its headers; `None` after the closing delimiter.
    pub(crate) async fn next_part(&mut self) -> Result<Option<PartInfo>, String> {
        loop {
            match self.position {
                Position::Done => return Ok(None),
                Position::Start | Position::InPart => {
                    // Skip preamble or the rest of the current part.
                    while self.chunk_inner().await?.is_some() {}
                }
                Position::AfterDelimiter => break,
            }
        }
        while self.buf.len() < 2 {
            if !self.fill().await? {
                return Err("multipart body ends after a delimiter".into());
            }
        }
        if &self.buf[..2] == b"--" {
            self.position = Position::Done;
            return Ok(None);
        }
        let headers_end = loop {
            if let Some(at) = self.find(b"\r\n\r\n", 0) {
                break at;
            }
            if self.buf.len() > 16 * 1024 {
                return Err("multipart part headers too large".into());
            }
            if !self.fill().await? {
                return Err("multipart body ends inside part headers".into());
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..headers_end]).into_owned();
        self.buf.advance(headers_end + 4);
        self.position = Position::InPart;
        Ok(Some(parse_part_headers(&head)))
    }

    /// The next chunk of the current part's content; `None` at its end.
    pub(crate) async fn chunk(&mut self) -> Result<Option<Bytes>, String> {
        if self.position != Position::InPart {
            return Ok(None);
        }
        self.chunk_inner().await
    }

    async fn chunk_inner(&mut self) -> Result<Option<Bytes>, String> {
        if matches!(self.position, Position::AfterDelimiter | Position::Done) {
            return Ok(None);
        }
        // Bytes before `scanned` were already searched; only the tail can start a delimiter.
        let mut scanned = 0;
        loop {
            if let Some(at) = self.find(&self.delimiter.clone(), scanned) {
                if at > 0 {
                    return Ok(Some(self.take(at)));
                }
                self.buf.advance(self.delimiter.len());
                self.position = Position::AfterDelimiter;
                return Ok(None);
            }
            // Everything except a possible delimiter prefix at the end is content.
            let safe = self.buf.len().saturating_sub(self.delimiter.len() - 1);
            if safe > 0 && (self.buf.len() >= 64 * 1024 || self.eof) {
                return Ok(Some(self.take(safe)));
            }
            scanned = safe;
            if !self.fill().await? {
                if safe > 0 {
                    return Ok(Some(self.take(safe)));
                }
                return Err("multipart body ends inside a part".into());
            }
        }
    }

    fn take(&mut self, len: usize) -> Bytes {
        self.buf.split_to(len).freeze()
    }

    /// Reads the current part fully as text (form fields; capped at 16 MiB).
    pub(crate) async fn text(&mut self) -> Result<String, String> {
        let mut out = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            out.extend_from_slice(&chunk);
            if out.len() > 16 * 1024 * 1024 {
                return Err("multipart text field too large".into());
            }
        }
        String::from_utf8(out).map_err(|_| "multipart text field is not UTF-8".into())
    }
}

fn parse_part_headers(head: &str) -> PartInfo {
    let mut info = PartInfo::default();
    for line in head.split("\r\n") {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        if name == "content-type" {
            info.content_type = Some(value.trim().to_owned());
        } else if name == "content-disposition" {
            for param in value.split(';').skip(1) {
                let Some((key, val)) = param.split_once('=') else {
                    continue;
                };
                let val = val.trim().trim_matches('"').to_owned();
                match key.trim().to_ascii_lowercase().as_str() {
                    "name" => info.name = val,
                    "filename" => info.file_name = Some(val),
                    _ => {}
                }
            }
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_in_chunks(raw: Vec<u8>, size: usize) -> Body {
        let chunks: Vec<Result<Bytes, std::io::Error>> = raw
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Body::from_stream(futures::stream::iter(chunks))
    }

    #[tokio::test]
    async fn reads_fields_and_files_across_chunk_borders() {
        let file: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut raw = Vec::new();
        raw.extend_from_slice(b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"body\"\r\n\r\n{\"a\":1}\r\n--XyZ\r\n");
        raw.extend_from_slice(b"Content-Disposition: form-data; name=\"file\"; filename=\"x.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n");
        raw.extend_from_slice(&file);
        raw.extend_from_slice(b"\r\n--XyZ--\r\n");
        for size in [1, 7, 1000, 70_000] {
            let mut reader = MultipartReader::new(body_in_chunks(raw.clone(), size), "XyZ");
            let part = reader.next_part().await.unwrap().unwrap();
            assert_eq!(part.name, "body");
            assert_eq!(reader.text().await.unwrap(), "{\"a\":1}");
            let part = reader.next_part().await.unwrap().unwrap();
            assert_eq!(part.name, "file");
            assert_eq!(part.file_name.as_deref(), Some("x.bin"));
            let mut got = Vec::new();
            while let Some(c) = reader.chunk().await.unwrap() {
                got.extend_from_slice(&c);
            }
            assert_eq!(got, file, "chunk size {size}");
            assert!(reader.next_part().await.unwrap().is_none());
        }
    }

    #[test]
    fn boundary_is_parsed_from_content_type() {
        assert_eq!(
            boundary("multipart/form-data; boundary=\"abc\"").as_deref(),
            Some("abc")
        );
        assert_eq!(boundary("application/json"), None);
    }
}
