//! Content hashing: SHA-256 of the bytes, streamed chunk by chunk so memory does not grow with
//! file size.

use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};

/// SHA-256 (lower-case hex) of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// SHA-256 of a byte stream, and its length.
pub async fn sha256_stream<S, B, E>(mut stream: S) -> Result<(String, u64), E>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
{
    let mut hasher = Sha256::new();
    let mut length = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        length += chunk.as_ref().len() as u64;
        hasher.update(chunk.as_ref());
    }
    Ok((hex::encode(hasher.finalize()), length))
}

/// SHA-256 of a JSON value's canonical text (object keys sorted by `serde_json`'s map).
pub fn json_hash(value: &serde_json::Value) -> String {
    sha256_hex(value.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streamed_hash_equals_one_shot_hash() {
        let chunks: Vec<Result<&[u8], ()>> = vec![Ok(b"hello "), Ok(b""), Ok(b"world")];
        let (streamed, len) = sha256_stream(futures::stream::iter(chunks)).await.unwrap();
        assert_eq!(streamed, sha256_hex(b"hello world"));
        assert_eq!(len, 11);
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
