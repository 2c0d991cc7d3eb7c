//! File content held by the simulators. Small content stays in memory; larger content spills to a
//! temporary file; generated content (for benchmarks) is computed on the fly from a seed. All of it
//! is read back as a stream, so memory use never grows with file size.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Content above this size is written to a temporary file instead of memory.
const MEMORY_LIMIT: usize = 4 * 1024 * 1024;
/// Chunk size for generated and file-backed reads.
const CHUNK: usize = 64 * 1024;

/// A per-simulator scratch directory, removed when the last reference goes away.
#[derive(Debug)]
pub(crate) struct ScratchDir(PathBuf);

impl ScratchDir {
    pub(crate) fn create() -> io::Result<Arc<Self>> {
        let path = std::env::temp_dir().join(format!("xecm-sim-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path)?;
        Ok(Arc::new(Self(path)))
    }

    fn new_file_path(&self) -> PathBuf {
        self.0.join(uuid::Uuid::new_v4().simple().to_string())
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A spilled file, deleted when the last blob referring to it is dropped.
#[derive(Debug)]
struct SpillFile {
    path: PathBuf,
    // Keeps the directory alive as long as a file in it is referenced.
    _dir: Arc<ScratchDir>,
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[derive(Debug, Clone)]
enum Storage {
    Memory(Bytes),
    File(Arc<SpillFile>),
    /// Deterministic pseudo-random bytes derived from the seed; nothing is stored.
    Generated {
        seed: u64,
    },
    /// Parts of a multipart upload, read back in order.
    Concat(Vec<Blob>),
}

/// Immutable content: its size, SHA-256 (when known) and where the bytes are.
#[derive(Debug, Clone)]
pub(crate) struct Blob {
    pub(crate) size: u64,
    /// Hex SHA-256 of the content; generated content is not hashed up front (that would read it all).
    pub(crate) sha256: Option<String>,
    storage: Storage,
}

impl Blob {
    pub(crate) fn from_bytes(bytes: Bytes) -> Self {
        Self {
            size: bytes.len() as u64,
            sha256: Some(hex::encode(Sha256::digest(&bytes))),
            storage: Storage::Memory(bytes),
        }
    }

    pub(crate) fn generated(seed: u64, size: u64) -> Self {
        Self {
            size,
            sha256: None,
            storage: Storage::Generated { seed },
        }
    }

    /// Joins uploaded parts; the hash is computed by reading them once.
    pub(crate) async fn concat(parts: Vec<Blob>) -> io::Result<Self> {
        let size = parts.iter().map(|p| p.size).sum();
        let mut blob = Self {
            size,
            sha256: None,
            storage: Storage::Concat(parts),
        };
        let mut hasher = Sha256::new();
        let mut stream = blob.stream();
        while let Some(chunk) = stream.next().await {
            hasher.update(&chunk?);
        }
        blob.sha256 = Some(hex::encode(hasher.finalize()));
        Ok(blob)
    }

    /// The content as a stream of chunks.
    pub(crate) fn stream(&self) -> BoxStream<'static, io::Result<Bytes>> {
        match &self.storage {
            Storage::Memory(bytes) => {
                stream::once(futures::future::ready(Ok(bytes.clone()))).boxed()
            }
            Storage::File(file) => file_stream(file.clone()),
            Storage::Generated { seed } => generated_stream(*seed, self.size),
            Storage::Concat(parts) => {
                let parts = parts.clone();
                stream::iter(parts).flat_map(|p| p.stream()).boxed()
            }
        }
    }
}

fn file_stream(file: Arc<SpillFile>) -> BoxStream<'static, io::Result<Bytes>> {
    stream::once(async move {
        let opened = tokio::fs::File::open(&file.path).await;
        (opened, file)
    })
    .flat_map(|(opened, file)| match opened {
        // The Arc rides along with the reader so the file outlives the read.
        Ok(f) => tokio_util::io::ReaderStream::with_capacity(f, CHUNK)
            .map(move |chunk| {
                let _keep = &file;
                chunk
            })
            .boxed(),
        Err(err) => stream::iter([Err(err)]).boxed(),
    })
    .boxed()
}

/// splitmix64: fast, deterministic and good enough to make content incompressible.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Byte `i` of generated content with `seed` is byte `i % 8` of `splitmix64(seed ^ (i / 8))`.
pub(crate) fn generated_chunk(seed: u64, offset: u64, len: usize) -> Bytes {
    let mut out = BytesMut::with_capacity(len);
    let mut pos = offset;
    let end = offset + len as u64;
    while pos < end {
        let word = splitmix64(seed ^ (pos / 8)).to_le_bytes();
        let start = (pos % 8) as usize;
        let take = (8 - start).min((end - pos) as usize);
        out.extend_from_slice(&word[start..start + take]);
        pos += take as u64;
    }
    out.freeze()
}

fn generated_stream(seed: u64, size: u64) -> BoxStream<'static, io::Result<Bytes>> {
    stream::unfold(0u64, move |offset| async move {
        if offset >= size {
            return None;
        }
        let len = (size - offset).min(CHUNK as u64) as usize;
        Some((Ok(generated_chunk(seed, offset, len)), offset + len as u64))
    })
    .boxed()
}

/// Receives content chunk by chunk, hashing it and spilling to disk past [`MEMORY_LIMIT`].
pub(crate) struct BlobWriter {
    dir: Arc<ScratchDir>,
    hasher: Sha256,
    size: u64,
    memory: BytesMut,
    file: Option<(tokio::fs::File, PathBuf)>,
}

impl BlobWriter {
    pub(crate) fn new(dir: Arc<ScratchDir>) -> Self {
        Self {
            dir,
            hasher: Sha256::new(),
            size: 0,
            memory: BytesMut::new(),
            file: None,
        }
    }

    pub(crate) async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        if self.file.is_none() && self.memory.len() + chunk.len() > MEMORY_LIMIT {
            let path = self.dir.new_file_path();
            let mut file = tokio::fs::File::create(&path).await?;
            file.write_all(&self.memory).await?;
            self.memory = BytesMut::new();
            self.file = Some((file, path));
        }
        match &mut self.file {
            Some((file, _)) => file.write_all(chunk).await,
            None => {
                self.memory.extend_from_slice(chunk);
                Ok(())
            }
        }
    }

    pub(crate) async fn finish(self) -> io::Result<Blob> {
        let sha256 = Some(hex::encode(self.hasher.finalize()));
        let storage = match self.file {
            Some((mut file, path)) => {
                file.flush().await?;
                Storage::File(Arc::new(SpillFile {
                    path,
                    _dir: self.dir,
                }))
            }
            None => Storage::Memory(self.memory.freeze()),
        };
        Ok(Blob {
            size: self.size,
            sha256,
            storage,
        })
    }
}

/// Whether a path lies in a scratch dir (used by tests of the spill logic).
#[cfg(test)]
fn spilled_path(blob: &Blob) -> Option<&std::path::Path> {
    match &blob.storage {
        Storage::File(f) => Some(&f.path),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_content_is_deterministic_and_offset_consistent() {
        let whole = generated_chunk(7, 0, 100);
        let tail = generated_chunk(7, 37, 63);
        assert_eq!(&whole[37..], &tail[..]);
        assert_ne!(generated_chunk(8, 0, 100), whole);
    }

    #[tokio::test]
    async fn large_content_spills_to_disk_and_reads_back() {
        let dir = ScratchDir::create().unwrap();
        let mut writer = BlobWriter::new(dir.clone());
        let chunk = vec![42u8; 1024 * 1024];
        for _ in 0..5 {
            writer.write(&chunk).await.unwrap();
        }
        let blob = writer.finish().await.unwrap();
        assert_eq!(blob.size, 5 * 1024 * 1024);
        let path = spilled_path(&blob).unwrap().to_owned();
        assert!(path.exists());
        let mut total = 0;
        let mut stream = blob.stream();
        while let Some(c) = stream.next().await {
            let c = c.unwrap();
            assert!(c.iter().all(|b| *b == 42));
            total += c.len();
        }
        assert_eq!(total, 5 * 1024 * 1024);
        drop(blob);
        assert!(!path.exists());
    }
}
