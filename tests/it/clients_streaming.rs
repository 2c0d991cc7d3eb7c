//! Streaming: a 256 MiB file goes from a 4ALLPORTAL rendition download into an OpenText upload
//! (plain multipart and Large File Upload) without being buffered. The file is generated on
//! the fly by a small HTTP server on loopback that also counts what the upload delivered; the
//! test asserts that the bytes pulled from the download are never more than a bounded window
//! ahead of what the server has received. No timing is measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use url::Url;
use xecm_bridge::clients::allportal::AllportalClient;
use xecm_bridge::clients::config::{
    AllportalConfig, OpentextAuth, OpentextConfig, TransportConfig,
};
use xecm_bridge::clients::file::FileUpload;
use xecm_bridge::clients::opentext::{DocumentCreate, OpentextClient};

const FILE_BYTES: u64 = 256 * 1024 * 1024;
const CHUNK: usize = 1024 * 1024;
/// Largest allowed distance between what the client pulled from the download and what the
/// upload target received: socket buffers and a few chunks in the HTTP stack, far below the
/// file size. A client that buffered the file would be ahead by up to 256 MiB.
const MAX_LEAD: u64 = 16 * 1024 * 1024;

#[derive(Default)]
struct Counters {
    /// File bytes received in upload bodies (document, version or part requests).
    received: AtomicU64,
    uploads: AtomicU64,
    parts: AtomicU64,
}

/// Serves the few routes the transfer uses; file content is produced while sending.
async fn serve(listener: TcpListener, counters: Arc<Counters>) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            return;
        };
        let counters = counters.clone();
        tokio::spawn(async move {
            let _ = handle(socket, &counters).await;
        });
    }
}

async fn handle(mut socket: TcpStream, counters: &Counters) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let head_end = loop {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let request_line = head.lines().next().unwrap_or_default().to_string();
    let length: u64 = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    // Drain the body, counting without keeping it.
    let mut remaining = length - (buffer.len() - head_end) as u64;
    let mut body_seen = (buffer.len() - head_end) as u64;
    let counts = request_line.starts_with("POST /otcs/cs/api/v2/nodes ")
        || request_line.contains("/api/v2/multipart/K/");
    if counts {
        counters.received.fetch_add(body_seen, Ordering::SeqCst);
    }
    while remaining > 0 {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        remaining = remaining.saturating_sub(n as u64);
        body_seen += n as u64;
        if counts {
            counters.received.fetch_add(n as u64, Ordering::SeqCst);
        }
    }
    assert_eq!(body_seen, length, "body length matches Content-Length");

    if request_line.starts_with("GET /api/modules/file/objects/f-1/media/Original ") {
        return send_file(&mut socket).await;
    }
    let json = match request_line.split(' ').take(2).collect::<Vec<_>>()[..] {
        ["POST", "/otcs/cs/api/v1/auth"] => r#"{"ticket":"T"}"#.to_string(),
        ["GET", "/otcs/cs/api/v1/auth"] => r#"{"data":{"id":1000}}"#.to_string(),
        ["POST", "/otcs/cs/api/v2/multipart"] => {
            r#"{"results":{"upload_key":"K","part_size":67108864}}"#.to_string()
        }
        ["POST", p] if p.starts_with("/otcs/cs/api/v2/multipart/K/") => {
            counters.parts.fetch_add(1, Ordering::SeqCst);
            "{}".to_string()
        }
        ["POST", "/otcs/cs/api/v2/multipart/K"] => "{}".to_string(),
        ["POST", "/otcs/cs/api/v2/nodes"] => {
            counters.uploads.fetch_add(1, Ordering::SeqCst);
            r#"{"results":{"data":{"properties":{"id":4242}}}}"#.to_string()
        }
        _ => return respond(&mut socket, "404 Not Found", "{}").await,
    };
    respond(&mut socket, "200 OK", &json).await
}

async fn respond(socket: &mut TcpStream, status: &str, json: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{json}",
        json.len()
    );
    socket.write_all(head.as_bytes()).await?;
    socket.shutdown().await
}

async fn send_file(socket: &mut TcpStream) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: \
         {FILE_BYTES}\r\ncontent-disposition: attachment; filename=\"big.bin\"\r\n\
         connection: close\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await?;
    let block = vec![0x5Au8; CHUNK];
    for _ in 0..FILE_BYTES / CHUNK as u64 {
        socket.write_all(&block).await?;
    }
    socket.shutdown().await
}

async fn start_server() -> (String, Arc<Counters>) {
    let socket = TcpSocket::new_v4().unwrap();
    // A small, fixed receive buffer (no autotuning) keeps the kernel's share of the window
    // small, so the bound checks the client, not the kernel.
    socket.set_recv_buffer_size(128 * 1024).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(64).unwrap();
    let addr = listener.local_addr().unwrap();
    let counters = Arc::new(Counters::default());
    tokio::spawn(serve(listener, counters.clone()));
    (format!("http://{addr}"), counters)
}

fn transport() -> TransportConfig {
    TransportConfig {
        connect_timeout_secs: 5,
        request_timeout_secs: 60,
        max_retries: 0,
        backoff_base_ms: 1,
        backoff_max_ms: 10,
        circuit_failure_rate: 0.5,
        circuit_min_requests: 1000,
        circuit_window_secs: 30,
        circuit_open_secs: 30,
    }
}

fn clients(base: &str, threshold: u64) -> (AllportalClient, OpentextClient) {
    let allportal = AllportalClient::new(&AllportalConfig {
        base_url: Url::parse(base).unwrap(),
        api_key: SecretString::from("key"),
        ca_file: None,
        client_cert_file: None,
        client_key_file: None,
        max_requests_per_sec: 0.0,
        max_concurrent_requests: 0,
        rate_limit_replicas: 1,
        transport: transport(),
    })
    .unwrap();
    let opentext = OpentextClient::new(&OpentextConfig {
        base_url: Url::parse(&format!("{base}/otcs/cs")).unwrap(),
        auth: OpentextAuth::Otcs,
        username: "svc".into(),
        password: SecretString::from("pw"),
        domain: None,
        otds_url: None,
        client_id: None,
        client_secret: None,
        ext_system_id: "4AP".into(),
        multipart_threshold_bytes: threshold,
        multipart_part_bytes: 64 * 1024 * 1024,
        ca_file: None,
        client_cert_file: None,
        client_key_file: None,
        max_requests_per_sec: 0.0,
        max_concurrent_requests: 0,
        rate_limit_replicas: 1,
        transport: transport(),
    })
    .unwrap();
    (allportal, opentext)
}

/// Moves the rendition into a new OpenText document and returns the largest lead observed.
async fn transfer(threshold: u64) -> (u64, Arc<Counters>) {
    let (base, counters) = start_server().await;
    let (allportal, opentext) = clients(&base, threshold);
    let download = allportal
        .download_rendition("file", "f-1", "Original")
        .await
        .unwrap();
    assert_eq!(download.length, Some(FILE_BYTES));
    assert_eq!(download.file_name.as_deref(), Some("big.bin"));

    let pulled = Arc::new(AtomicU64::new(0));
    let max_lead = Arc::new(AtomicU64::new(0));
    let observed = {
        let (pulled, max_lead, counters) = (pulled.clone(), max_lead.clone(), counters.clone());
        download.stream.inspect(move |item| {
            if let Ok(chunk) = item {
                let total =
                    pulled.fetch_add(chunk.len() as u64, Ordering::SeqCst) + chunk.len() as u64;
                let lead = total.saturating_sub(counters.received.load(Ordering::SeqCst));
                max_lead.fetch_max(lead, Ordering::SeqCst);
            }
        })
    };
    let upload = FileUpload::new(observed, FILE_BYTES, "big.bin", "application/octet-stream");
    let document = DocumentCreate {
        parent_id: 77,
        name: "big.bin".into(),
        ..DocumentCreate::default()
    };
    let id = opentext.upload_document(&document, upload).await.unwrap();
    assert_eq!(id, 4242);
    assert_eq!(pulled.load(Ordering::SeqCst), FILE_BYTES);
    assert!(counters.received.load(Ordering::SeqCst) >= FILE_BYTES);
    (max_lead.load(Ordering::SeqCst), counters)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_rendition_streams_into_a_document_without_buffering() {
    let (lead, counters) = transfer(u64::MAX).await;
    assert_eq!(counters.uploads.load(Ordering::SeqCst), 1);
    assert!(
        lead <= MAX_LEAD,
        "client ran {} MiB ahead of the upload target",
        lead / (1024 * 1024)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_rendition_streams_through_large_file_upload_parts() {
    let (lead, counters) = transfer(1024 * 1024).await;
    assert_eq!(counters.parts.load(Ordering::SeqCst), 4, "64 MiB parts");
    assert_eq!(
        counters.uploads.load(Ordering::SeqCst),
        1,
        "node created from upload_key"
    );
    assert!(
        lead <= MAX_LEAD,
        "client ran {} MiB ahead of the upload target",
        lead / (1024 * 1024)
    );
}
