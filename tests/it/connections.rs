//! Connection limits and the rejections of the HTTP layer, with real sockets over loopback:
//! idle and slow-header connections are closed, `/healthz` answers while 20,000 idle
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
    // Timed from before the request: the server's idle time starts when it has written the
    // answer, which is before this side reads it, so a clock started on reading would be late.
    let asked = Instant::now();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    assert!(read_to_close(&mut kept).await.is_empty());
    assert!(
        asked.elapsed() >= Duration::from_secs(3),
        "closed {:?} after the request, before the idle timeout",
        asked.elapsed()
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

/// The flood of the measurement: 20,000 idle connections against the default
/// `max_connections` (4,096). The client ends are held by two child processes (a Python script,
/// standard library only) of 10,000 each, so no process needs an open-file limit above the usual
/// 20,000. Half the connections are silent, half idle after one keep-alive request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_while_20000_idle_connections_are_open() {
    const HOLDERS: usize = 2;
    const EACH: usize = 10_000;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/scripts/hold_connections.py"
    );
    if let Err(e) = std::process::Command::new("python3")
        .arg("--version")
        .output()
    {
        assert!(std::env::var_os("CI").is_none(), "CI needs python3: {e}");
        eprintln!("SKIP healthz under 20,000 idle connections: python3 cannot be run ({e})");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(
        &dir,
        "[server]\nheader_read_timeout_secs = 300\nidle_timeout_secs = 300",
    );
    let limit = settings.server.max_connections;
    assert_eq!(limit, 4096, "the default");
    let app = spawn_with(settings, dir).await;
    let mut holders = Vec::new();
    for _ in 0..HOLDERS {
        let mut child = tokio::process::Command::new("python3")
            .arg(script)
            .arg(app.addr.ip().to_string())
            .arg(app.addr.port().to_string())
            .arg(EACH.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs");
        let stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
        holders.push((child, stdout));
    }
    let mut opened = 0;
    for (_, stdout) in &mut holders {
        let line = timeout(Duration::from_secs(300), next_line(stdout))
            .await
            .expect("the holder opened its connections");
        opened += count_after(&line, "open ");
    }
    assert_eq!(opened, HOLDERS * EACH);
    let client = reqwest::Client::new();
    for _ in 0..20 {
        let health = timeout(GUARD, client.get(app.url("/healthz")).send())
            .await
            .expect("healthz answers")
            .expect("healthz");
        assert_eq!(health.status(), reqwest::StatusCode::OK);
    }
    // The server keeps at most its limit open: it closed the idle connections it evicted.
    let metric = |text: &str, name: &str| sample(text, name);
    let deadline = Instant::now() + GUARD;
    let text = loop {
        let text = client.get(app.url("/metrics")).send().await.unwrap();
        let text = text.text().await.unwrap();
        if metric(&text, "xecm_http_connections_open") <= limit as f64 {
            break text;
        }
        assert!(Instant::now() < deadline, "still over the limit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let evicted = metric(
        &text,
        "xecm_http_connections_closed_total{reason=\"evicted\"}",
    );
    assert!(
        evicted >= (opened - limit) as f64,
        "{evicted} evicted of {opened}"
    );
    let mut closed = 0;
    for (mut child, mut stdout) in holders {
        drop(child.stdin.take());
        let line = timeout(GUARD, next_line(&mut stdout))
            .await
            .expect("closed line");
        closed += count_after(&line, "closed ");
        child.wait().await.unwrap();
    }
    assert!(
        closed >= opened - limit,
        "the holders saw {closed} of {opened} closed"
    );
    eprintln!(
        "{opened} idle connections, max_connections {limit}: /healthz answered 20 of 20; \
         {evicted} evicted, {closed} seen closed by the holders"
    );
    app.stop().await;
}

async fn next_line(reader: &mut tokio::io::BufReader<tokio::process::ChildStdout>) -> String {
    use tokio::io::AsyncBufReadExt;
    let mut line = String::new();
    reader.read_line(&mut line).await.expect("read a line");
    line
}

fn count_after(line: &str, prefix: &str) -> usize {
    line.trim()
        .strip_prefix(prefix)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("expected `{prefix}N`, got {line:?}"))
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

/// The value of one sample line in the Prometheus text (0 when absent).
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}
