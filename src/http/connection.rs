//! One HTTP/1.1 connection: hyper drives the protocol; this module adds what hyper does not do
//! for a server, namely the idle and header-read timeouts measured the way operators expect, and
//! problem bodies for the rejections hyper writes itself.
//!
//! Timeouts (checked by [`Activity::verdict`]):
//! - a request head must be complete within `header_read_timeout`, counted from the accept (for
//!   the first request) or from the first byte of a later request;
//! - between requests, a keep-alive connection may stay silent for `idle_timeout`;
//! - while a request is in progress, neither applies (the request timeout layer does).
//!
//! hyper answers a request head it cannot parse (431 too large, 400 malformed, 414 URI too long)
//! on its own, with an empty body and no hook to change it. [`ConnIo`] recognises that response
//! on its way to the socket and writes an `application/problem+json` response in its place, so
//! every rejection the service makes has the same format.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use super::problem::Problem;

/// The connection-level limits of `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_header_bytes: usize,
}

impl Limits {
    pub fn from_config(cfg: &super::ServerConfig) -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(cfg.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(cfg.idle_timeout_secs),
            max_connections: cfg.max_connections,
            max_header_bytes: cfg.max_header_bytes,
        }
    }
}

/// Milliseconds since the listener started, never 0 (0 means "not set" in [`Activity`]).
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn new() -> Clock {
        Clock(Instant::now())
    }

    pub fn now_ms(self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
    }

    fn instant(self, ms: u64) -> Instant {
        self.0 + Duration::from_millis(ms.saturating_sub(1))
    }
}

/// What a connection is doing, shared between its socket wrapper, its service and the listener
/// (which picks idle connections to close when it is full). Plain atomics: updated on every
/// request, read rarely.
#[derive(Debug)]
pub struct Activity {
    clock: Clock,
    in_flight: AtomicU32,
    /// When the connection last became idle (accept, or the end of a response).
    idle_since: AtomicU64,
    /// When the head of the next request started (accept, or its first byte); 0 while idle.
    head_started: AtomicU64,
    evicted: AtomicBool,
    evict: Notify,
}

/// What to do with a connection when its timer fires.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing yet; look again at this instant.
    CheckAt(Instant),
    /// Silent between requests for longer than the idle timeout.
    Idle,
    /// A request head is taking longer than the header-read timeout.
    SlowHeader,
}

impl Activity {
    pub fn new(clock: Clock) -> Activity {
        let now = clock.now_ms();
        Activity {
            clock,
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(now),
            // The first request's head is due within the header-read timeout of the accept.
            head_started: AtomicU64::new(now),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
        }
    }

    /// A request head was parsed and handed to the service.
    fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
    }

    /// The service answered (or the request was abandoned).
    fn end(&self) {
        self.idle_since
            .store(self.clock.now_ms(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Bytes arrived: between requests they start the next head's clock.
    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started
                .store(self.clock.now_ms(), Ordering::Relaxed);
        }
    }

    /// True while no request is in progress, so closing the connection loses nothing.
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// When the connection last did something (for choosing whom to evict).
    pub fn last_active_ms(&self) -> u64 {
        self.idle_since
            .load(Ordering::Relaxed)
            .max(self.head_started.load(Ordering::Relaxed))
    }

    /// Asks the connection to close because a new one needs its slot. Returns false when it was
    /// already asked.
    pub fn evict(&self) -> bool {
        if self.evicted.swap(true, Ordering::Relaxed) {
            return false;
        }
        self.evict.notify_one();
        true
    }

    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Relaxed)
    }

    pub async fn evicted(&self) {
        self.evict.notified().await;
    }

    pub fn verdict(&self, limits: &Limits) -> Verdict {
        self.verdict_at(limits, self.clock.now_ms())
    }

    fn verdict_at(&self, limits: &Limits, now: u64) -> Verdict {
        let header_ms = millis(limits.header_read_timeout);
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            // The request timeout covers it; look again once a head could be overdue.
            return Verdict::CheckAt(self.clock.instant(now + header_ms));
        }
        let head_started = self.head_started.load(Ordering::Relaxed);
        if head_started > 0 {
            let due = head_started + header_ms;
            return if now >= due {
                Verdict::SlowHeader
            } else {
                Verdict::CheckAt(self.clock.instant(due))
            };
        }
        let due = self.idle_since.load(Ordering::Relaxed) + millis(limits.idle_timeout);
        if now >= due {
            Verdict::Idle
        } else {
            Verdict::CheckAt(self.clock.instant(due))
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2)
}

/// Marks a request in progress for as long as it lives (dropped with the response future, also
/// when the client goes away mid-request).
pub struct InFlight(Arc<Activity>);

impl InFlight {
    pub fn start(activity: &Arc<Activity>) -> InFlight {
        activity.begin();
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// The socket as hyper sees it: reports incoming bytes to [`Activity`] and replaces hyper's
/// bodiless parse-error responses with problem responses.
pub struct ConnIo<S> {
    inner: S,
    activity: Arc<Activity>,
    /// A replacement response still to be written, and how much of it is written.
    replacement: Option<(Vec<u8>, usize)>,
}

impl<S> ConnIo<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> ConnIo<S> {
        ConnIo {
            inner,
            activity,
            replacement: None,
        }
    }
}

impl<S: AsyncWrite + Unpin> ConnIo<S> {
    /// Writes what is left of a replacement response.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.replacement {
            if *written == bytes.len() {
                self.replacement = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }

    /// If `head` is one of hyper's own parse-error responses, queues the problem response that
    /// replaces it.
    fn intercept(&mut self, head: &[u8]) -> bool {
        match parse_error_status(head) {
            Some(status) => {
                self.replacement = Some((parse_error_response(status), 0));
                true
            }
            None => false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.activity.bytes_read();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ConnIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        if this.intercept(buf) {
            // hyper's response counts as written; the replacement goes out on the next flush.
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        if let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && this.intercept(first)
        {
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The status of a response head that hyper wrote itself for a request it could not parse:
/// 400, 414 or 431 with `content-length: 0`. The service never sends such a response (every error
/// it sends has a problem body), so the match cannot catch one of ours.
fn parse_error_status(head: &[u8]) -> Option<StatusCode> {
    let rest = head
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| head.strip_prefix(b"HTTP/1.0 "))?;
    let status = match rest.get(..4)? {
        b"400 " => StatusCode::BAD_REQUEST,
        b"414 " => StatusCode::URI_TOO_LONG,
        b"431 " => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        _ => return None,
    };
    let empty = head.ends_with(b"\r\n\r\n")
        && head
            .windows(b"\r\ncontent-length: 0\r\n".len())
            .any(|w| w.eq_ignore_ascii_case(b"\r\ncontent-length: 0\r\n"));
    empty.then_some(status)
}

/// A complete `Connection: close` response carrying the problem for `status`.
fn parse_error_response(status: StatusCode) -> Vec<u8> {
    let (slug, detail) = match status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (
            "headers-too-large",
            "the request headers exceed server.max_header_bytes or the limit of 100 headers",
        ),
        StatusCode::URI_TOO_LONG => ("uri-too-long", "the request target is too long"),
        _ => (
            "malformed-request",
            "the request line or a header could not be parsed (for example a control character \
             in a header value)",
        ),
    };
    let request_id = uuid::Uuid::new_v4().to_string();
    tracing::warn!(%request_id, status = status.as_u16(), slug, "request head rejected");
    raw_response(Problem::new(status, slug, detail), &request_id, &[])
}

/// A complete HTTP/1.1 `Connection: close` response with a problem body, written directly to a
/// socket where no request reached the service.
pub fn raw_response(mut problem: Problem, request_id: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    problem.request_id = Some(request_id.to_string());
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST);
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\
         x-request-id: {request_id}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        super::problem::PROBLEM_JSON,
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_only_hyper_bodiless_parse_error_heads() {
        let hyper_431 =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(
            parse_error_status(hyper_431),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        let hyper_400 =
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(parse_error_status(hyper_400), Some(StatusCode::BAD_REQUEST));
        // A problem response of the service has a body.
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 120\r\n\r\n";
        assert_eq!(parse_error_status(ours), None);
        assert_eq!(
            parse_error_status(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n"),
            None
        );
        assert_eq!(parse_error_status(b"{\"accepted\":[]}"), None);
    }

    #[test]
    fn verdicts_follow_the_phase_of_the_connection() {
        let limits = Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1,
            max_header_bytes: 1024,
        };
        let activity = Arc::new(Activity::new(Clock::new()));
        let accepted = activity.head_started.load(Ordering::Relaxed);
        // Fresh: the first head is due 10 s after the accept, even without a byte.
        assert!(matches!(
            activity.verdict_at(&limits, accepted + 9_999),
            Verdict::CheckAt(_)
        ));
        assert_eq!(
            activity.verdict_at(&limits, accepted + 10_000),
            Verdict::SlowHeader
        );
        // In progress: neither timeout applies, and body bytes do not start a head.
        let request = InFlight::start(&activity);
        assert!(matches!(
            activity.verdict_at(&limits, accepted + 500_000),
            Verdict::CheckAt(_)
        ));
        activity.bytes_read();
        assert_eq!(activity.head_started.load(Ordering::Relaxed), 0);
        drop(request);
        // Idle: the idle timeout applies until a byte of the next head arrives.
        assert!(activity.is_idle());
        let idle = activity.idle_since.load(Ordering::Relaxed);
        assert!(matches!(
            activity.verdict_at(&limits, idle + 59_999),
            Verdict::CheckAt(_)
        ));
        assert_eq!(activity.verdict_at(&limits, idle + 60_000), Verdict::Idle);
        activity.bytes_read();
        let head = activity.head_started.load(Ordering::Relaxed);
        assert!(head >= idle);
        assert_eq!(
            activity.verdict_at(&limits, head + 10_000),
            Verdict::SlowHeader
        );
    }
}
