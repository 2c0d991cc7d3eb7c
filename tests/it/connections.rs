//! Connection limits and the rejections of the HTTP layer, with real sockets over loopback:
//! idle and slow-header connections are closed, `/healthz` answers while thousands of idle
//! connections are open, excess connections get 503 at once when every slot is busy, and the
//! responses hyper would send without a body (431, 400, 414) and the 413 for a declared
//! `Content-Length` are `application/problem+json`.
//!
//! Durations here are hang guards or lower bounds only: a timer never fires early, so "still
//! open after N seconds" holds on a slow machine too.

use crate::common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// Upper bound for any wait; never a timing assertion.
const GUARD: Duration = Duration::from_secs(30);

/// Reads until the server closes the connection (or `GUARD` passes) and returns what came.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match timeout(GUARD, stream.read(&mut buf)).await {
            Err(_) => panic!(
                "the server did not close the connection within {GUARD:?}; got {:?}",
                String::from_utf8_lossy(&out)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `request` on a fresh connection and returns the whole response (the server closes).
async fn exchange(app: &TestApp, request: &[u8]) -> Response {
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    // The server may answer and close before the whole request is written.
    let _ = stream.write_all(request).await;
    Response::parse(&read_to_close(&mut stream).await)
}

#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn parse(raw: &[u8]) -> Response {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
        let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        let status = head[9..12].parse().expect("status code");
        Response {
            status,
            head,
            body: raw[split + 4..].to_vec(),
        }
    }

    /// Asserts a problem response with `status` and a type ending in `slug`.
    fn assert_problem(&self, status: u16, slug: &str) -> serde_json::Value {
        assert_eq!(self.status, status, "{}", self.head);
        assert!(
            self.head
                .contains("\r\ncontent-type: application/problem+json"),
            "{}",
            self.head
        );
        let problem: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("problem body ({e}): {:?}", self.body));
        assert_eq!(problem["status"], status, "{problem}");
        let kind = problem["type"].as_str().unwrap_or_default();
        assert!(kind.ends_with(slug), "type {kind}");
        assert!(!problem["detail"].as_str().unwrap_or_default().is_empty());
        let request_id = problem["request_id"].as_str().expect("request id");
        assert!(
            self.head.contains(&format!("x-request-id: {request_id}")),
            "{}",
            self.head
        );
        problem
    }
}

#[tokio::test]
async fn http_layer_rejections_are_problems() {
    let app = spawn_app(
        "[server]\nmax_body_bytes = 4096\nmax_header_bytes = 8192\nrequest_timeout_secs = 300",
    )
    .await;
    let huge_header = format!(
        "GET /healthz HTTP/1.1\r\nhost: t\r\nx-big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    exchange(&app, huge_header.as_bytes())
        .await
        .assert_problem(431, "headers-too-large");

    let many_headers: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let many = format!("GET /healthz HTTP/1.1\r\nhost: t\r\n{many_headers}\r\n");
    exchange(&app, many.as_bytes())
        .await
        .assert_problem(431, "headers-too-large");

    exchange(
        &app,
        b"GET /healthz HTTP/1.1\r\nhost: t\r\nx-nul: a\0b\r\n\r\n",
    )
    .await
    .assert_problem(400, "malformed-request");
    exchange(
        &app,
        b"GET /healthz HTTP/1.1\r\nhost: t\r\nno colon here\r\n\r\n",
    )
    .await
    .assert_problem(400, "malformed-request");

    let long_uri = format!("GET /{} HTTP/1.1\r\nhost: t\r\n\r\n", "u".repeat(70_000));
    // The URI alone exceeds the header limit here; either answer is a problem.
    let response = exchange(&app, long_uri.as_bytes()).await;
    assert!([414, 431].contains(&response.status), "{}", response.head);
    assert!(response.head.contains("application/problem+json"));

    // A declared 10 GiB body is refused from its head, long before the 300 s request timeout.
    let started = Instant::now();
    let ts = now();
    let head = format!(
        "POST /webhooks/allportal HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
         webhook-id: big\r\nwebhook-timestamp: {ts}\r\nwebhook-signature: v1,AAAA\r\n\
         content-length: 10737418240\r\n\r\n{{\"event\":"
    );
    let response = exchange(&app, head.as_bytes()).await;
    let problem = response.assert_problem(413, "body-too-large");
    assert!(
        problem["detail"].as_str().unwrap().contains("10737418240"),
        "{problem}"
    );
    assert!(started.elapsed() < GUARD);

    // The server still works, and nothing was stored.
    let ok = exchange(
        &app,
        b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.head);
    assert_eq!(app.store.count_events().await.unwrap(), 0);
    app.stop().await;
}

#[tokio::test]
async fn idle_and_slow_header_connections_are_closed() {
    let app = spawn_app("[server]\nheader_read_timeout_secs = 1\nidle_timeout_secs = 3").await;

    // Silent from the start: the first request's head is due within the header-read timeout.
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(app.addr).await.expect("connect"));
    }
    for stream in &mut silent {
        assert!(read_to_close(stream).await.is_empty());
    }

    // A head dribbled one byte at a time: closed at the header-read timeout of its first byte,
    // however steadily it dribbles.
    let mut slow = TcpStream::connect(app.addr).await.expect("connect");
    let started = Instant::now();
    let closed = async {
        for byte in b"POST /webhooks/allportal HTTP/1.1\r\nhost: t\r\n"
            .iter()
            .cycle()
        {
            if slow.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    timeout(GUARD, closed)
        .await
        .expect("a slow-header sender was never closed");
    assert!(started.elapsed() >= Duration::from_secs(1));

    // Keep-alive after a request: idle time counts, not the header-read timeout.
    let mut kept = TcpStream::connect(app.addr).await.expect("connect");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let answered = Instant::now();
    assert!(read_to_close(&mut kept).await.is_empty());
    assert!(
        answered.elapsed() >= Duration::from_secs(3),
        "closed after {:?}, before the idle timeout",
        answered.elapsed()
    );

    let metrics = reqwest::get(app.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for reason in ["header_timeout", "idle"] {
        assert!(
            metrics.contains(&format!(
                "xecm_http_connections_closed_total{{reason=\"{reason}\"}}"
            )),
            "{reason} missing in\n{metrics}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_while_thousands_of_idle_connections_are_open() {
    const LIMIT: usize = 500;
    const OPENED: usize = 3000;
    let app = spawn_app(&format!(
        "[server]\nmax_connections = {LIMIT}\nheader_read_timeout_secs = 120\nidle_timeout_secs = 120"
    ))
    .await;
    // Half open and silent, half after one keep-alive request.
    let mut idle = Vec::with_capacity(OPENED);
    for i in 0..OPENED {
        let mut stream = TcpStream::connect(app.addr).await.expect("connect");
        if i % 2 == 0 {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 512];
            let n = timeout(GUARD, stream.read(&mut buf))
                .await
                .expect("answer")
                .unwrap();
            // Evicted right after connecting is possible, never an error status.
            assert!(
                n == 0 || buf.starts_with(b"HTTP/1.1 200"),
                "{:?}",
                &buf[..n]
            );
        }
        idle.push(stream);
    }
    let client = reqwest::Client::new();
    for _ in 0..20 {
        let health = timeout(GUARD, client.get(app.url("/healthz")).send())
            .await
            .expect("healthz answers")
            .expect("healthz");
        assert_eq!(health.status(), reqwest::StatusCode::OK);
    }
    // The server closed the connections it evicted: at most the limit are still open.
    let deadline = Instant::now() + GUARD;
    loop {
        let open = idle.iter().filter(|s| !is_closed(s)).count();
        if open <= LIMIT {
            break;
        }
        assert!(Instant::now() < deadline, "{open} of {OPENED} still open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let evicted = sample(
        &metrics,
        "xecm_http_connections_closed_total{reason=\"evicted\"}",
    );
    assert!(
        evicted >= (OPENED - LIMIT) as f64,
        "{evicted} evicted of {OPENED}"
    );
    drop(idle);
    app.stop().await;
}

#[tokio::test]
async fn excess_connections_get_503_at_once_when_every_slot_is_busy() {
    const LIMIT: usize = 8;
    let app = spawn_app(&format!(
        "[server]\nmax_connections = {LIMIT}\nrequest_timeout_secs = 120"
    ))
    .await;
    // Each slot holds a webhook whose handler waits for a body that never comes; the
    // `100 Continue` proves the request reached the handler.
    let mut busy = Vec::new();
    for i in 0..LIMIT {
        let mut stream = TcpStream::connect(app.addr).await.expect("connect");
        let head = format!(
            "POST /webhooks/allportal HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
             webhook-id: busy{i}\r\ncontent-length: 100\r\nexpect: 100-continue\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut buf = [0u8; 256];
        let n = timeout(GUARD, stream.read(&mut buf))
            .await
            .expect("100 Continue")
            .unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 100"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        busy.push(stream);
    }
    let response = exchange(&app, b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n").await;
    response.assert_problem(503, "too-many-connections");
    assert!(
        response.head.contains("\r\nretry-after: 1"),
        "{}",
        response.head
    );

    // A freed slot admits the next connection.
    drop(busy);
    let deadline = Instant::now() + GUARD;
    loop {
        let response = exchange(
            &app,
            b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
        )
        .await;
        if response.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "slots never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}

/// True when the peer closed `stream` (unread response bytes are skipped).
fn is_closed(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match stream.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// The value of one sample line in the Prometheus text (0 when absent).
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}
