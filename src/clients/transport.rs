//! The resilient HTTP transport shared by both upstream clients: one `reqwest` client per upstream
//! (rustls; the system trust store plus the upstream's `ca_file`, optionally a client
//! certificate), deadlines, retries with exponential backoff and jitter for transient failures only,
//! `Retry-After`, a circuit breaker, origin pinning and metrics.
//!
//! Retry rules. Transient failures are connect errors, timeouts and the statuses 429, 502, 503,
//! 504; nothing else is retried here (OpenText reports business errors as 500, and a 401 is the
//! client's business). A request whose body is a stream cannot be replayed once any of it was
//! read, so [`Transport::send_stream`] retries only while the stream was never polled — in
//! practice a connect error, where nothing was sent. After that the failure is returned as is
//! (still [`UpstreamError::is_retryable`]) and the caller re-runs the whole operation, which
//! re-opens the source stream.
//!
//! Deadlines. A client-wide total timeout would cut off a 1 GiB transfer, so deadlines are set
//! per request: buffered calls get `request_timeout` for the whole exchange; streamed downloads
//! get it until the headers and then as an idle timeout between chunks; streamed uploads fail
//! when no body byte was taken for `request_timeout` and no answer came.

use std::collections::VecDeque;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use http::header::RETRY_AFTER;
use rand::Rng;
use reqwest::{Method, RequestBuilder, Response};
use url::Url;

use super::error::{
    ErrorAnswer, RedirectOutsideOrigin, TransportErrorKind, UpstreamError, error_message,
    is_transient_status,
};
use super::health::Health;
use super::limit::{Limiter, Limits};
use crate::clients::config::{TlsFiles, TransportConfig};

/// Errors a byte stream may yield.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A file body moving between the systems.
pub type ByteStream = BoxStream<'static, Result<Bytes, BoxError>>;

/// Most redirects followed inside the configured origin.
const MAX_REDIRECTS: usize = 5;

/// Time source and sleeper, injectable so backoff and the circuit breaker can be tested
/// without waiting.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// The real clock: `Instant::now` and `tokio::time::sleep`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Retries after the first attempt, with exponential backoff and jitter.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub base: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0-based), or `None` when no retry should be made:
    /// the retries are used up, or the server asked for a longer pause than `max` (the worker
    /// then reschedules the whole job using [`UpstreamError::retry_after`]).
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if retry >= self.max_retries {
            return None;
        }
        if let Some(after) = retry_after {
            return (after <= self.max).then_some(after);
        }
        let exp = self
            .base
            .saturating_mul(2u32.saturating_pow(retry.min(20)))
            .min(self.max);
        // "Equal jitter": half fixed so the wait grows, half random so callers spread out.
        let half = exp / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
        Some(half + Duration::from_millis(jitter))
    }
}

/// When the circuit breaker opens and for how long.
#[derive(Debug, Clone)]
pub struct CircuitPolicy {
    pub failure_rate: f64,
    pub min_requests: u32,
    pub window: Duration,
    pub open_for: Duration,
}

/// Everything a [`Transport`] needs besides its name and base URL.
#[derive(Debug, Clone)]
pub struct TransportPolicy {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    pub circuit: CircuitPolicy,
}

impl From<&TransportConfig> for TransportPolicy {
    fn from(c: &TransportConfig) -> Self {
        Self {
            connect_timeout: Duration::from_secs(c.connect_timeout_secs),
            request_timeout: Duration::from_secs(c.request_timeout_secs),
            retry: RetryPolicy {
                max_retries: c.max_retries,
                base: Duration::from_millis(c.backoff_base_ms),
                max: Duration::from_millis(c.backoff_max_ms),
            },
            circuit: CircuitPolicy {
                failure_rate: c.circuit_failure_rate,
                min_requests: c.circuit_min_requests.max(1),
                window: Duration::from_secs(c.circuit_window_secs),
                open_for: Duration::from_secs(c.circuit_open_secs),
            },
        }
    }
}

/// State of an upstream's circuit breaker, for the status endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    HalfOpen,
    Open,
}

impl CircuitState {
    /// The value of the `xecm_upstream_circuit_state` gauge.
    pub fn gauge_value(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::HalfOpen => 1.0,
            Self::Open => 2.0,
        }
    }
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
struct BreakerInner {
    phase: Phase,
    /// Outcomes inside the window: (when, failed).
    outcomes: VecDeque<(Instant, bool)>,
}

/// Opens when, within `window`, at least `min_requests` calls were made and the share of
/// failures reached `failure_rate`; after `open_for` it lets exactly one probe through
/// (half-open): success closes it, failure opens it again.
#[derive(Debug)]
struct CircuitBreaker {
    upstream: Arc<str>,
    policy: CircuitPolicy,
    inner: Mutex<BreakerInner>,
}

/// Admission to send one request; reports abandonment if dropped without an outcome so a
/// cancelled probe does not leave the breaker half-open forever.
struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    done: bool,
}

impl Permit<'_> {
    fn record(mut self, now: Instant, failed: bool) {
        self.done = true;
        self.breaker.record(now, failed, self.probe);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done && self.probe {
            let mut inner = self.breaker.lock();
            if let Phase::HalfOpen { probing } = &mut inner.phase {
                *probing = false;
            }
        }
    }
}

impl CircuitBreaker {
    fn new(upstream: Arc<str>, policy: CircuitPolicy) -> Self {
        let breaker = Self {
            upstream,
            policy,
            inner: Mutex::new(BreakerInner {
                phase: Phase::Closed,
                outcomes: VecDeque::new(),
            }),
        };
        breaker.publish(CircuitState::Closed);
        breaker
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerInner> {
        // A panic while holding this lock cannot leave the state inconsistent (every update is
        // a single assignment), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state(&self, now: Instant) -> CircuitState {
        match self.lock().phase {
            Phase::Closed => CircuitState::Closed,
            Phase::Open { until } if now >= until => CircuitState::HalfOpen,
            Phase::Open { .. } => CircuitState::Open,
            Phase::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    fn admit(&self, now: Instant) -> Result<Permit<'_>, UpstreamError> {
        let mut inner = self.lock();
        let probe = match inner.phase {
            Phase::Closed => false,
            Phase::Open { until } if now < until => {
                return Err(self.open_error(until - now));
            }
            Phase::Open { .. } | Phase::HalfOpen { probing: false } => {
                inner.phase = Phase::HalfOpen { probing: true };
                self.publish(CircuitState::HalfOpen);
                true
            }
            Phase::HalfOpen { probing: true } => {
                return Err(self.open_error(self.policy.open_for));
            }
        };
        Ok(Permit {
            breaker: self,
            probe,
            done: false,
        })
    }

    fn open_error(&self, retry_after: Duration) -> UpstreamError {
        UpstreamError::CircuitOpen {
            upstream: self.upstream.to_string(),
            retry_after,
        }
    }

    fn record(&self, now: Instant, failed: bool, probe: bool) {
        let mut inner = self.lock();
        if probe {
            if failed {
                inner.phase = Phase::Open {
                    until: now + self.policy.open_for,
                };
                self.publish(CircuitState::Open);
            } else {
                inner.phase = Phase::Closed;
                inner.outcomes.clear();
                self.publish(CircuitState::Closed);
            }
            return;
        }
        if !matches!(inner.phase, Phase::Closed) {
            // A straggler that was admitted before the circuit opened says nothing new.
            return;
        }
        inner.outcomes.push_back((now, failed));
        while let Some((at, _)) = inner.outcomes.front() {
            if now.duration_since(*at) > self.policy.window {
                inner.outcomes.pop_front();
            } else {
                break;
            }
        }
        let total = inner.outcomes.len();
        let failures = inner.outcomes.iter().filter(|(_, f)| *f).count();
        if total >= self.policy.min_requests as usize
            && failures as f64 / total as f64 >= self.policy.failure_rate
        {
            inner.phase = Phase::Open {
                until: now + self.policy.open_for,
            };
            inner.outcomes.clear();
            self.publish(CircuitState::Open);
            tracing::warn!(upstream = %self.upstream, failures, total, "circuit opened");
        }
    }

    fn publish(&self, state: CircuitState) {
        metrics::gauge!("xecm_upstream_circuit_state", "upstream" => self.upstream.to_string())
            .set(state.gauge_value());
    }
}

/// How long one attempt may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// `request_timeout` for the whole exchange, body included (JSON calls).
    Total,
    /// `request_timeout` until the response headers; the caller reads the body through
    /// [`Transport::idle_guarded`] (downloads).
    Headers,
}

/// A file body that can be handed to at most one attempt that actually reads it: until the
/// first poll the stream stays here, so an attempt that failed before sending (connect error)
/// can be retried with it.
pub struct StreamBody {
    slot: Arc<Mutex<Option<ByteStream>>>,
    sent: Arc<AtomicU64>,
    length: u64,
}

impl std::fmt::Debug for StreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamBody")
            .field("length", &self.length)
            .field("sent", &self.sent.load(Ordering::Relaxed))
            .finish()
    }
}

impl StreamBody {
    /// `length` is the exact number of bytes `stream` yields (sent as Content-Length).
    pub fn new<S, E>(stream: S, length: u64) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        Self {
            slot: Arc::new(Mutex::new(Some(
                stream.map(|r| r.map_err(Into::into)).boxed(),
            ))),
            sent: Arc::new(AtomicU64::new(0)),
            length,
        }
    }

    pub fn length(&self) -> u64 {
        self.length
    }

    /// Bytes handed to the HTTP layer so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn unread(&self) -> bool {
        self.slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// A fresh `reqwest::Body` for the next attempt, unless an earlier attempt already read
    /// from the stream.
    fn body(&self) -> Option<reqwest::Body> {
        self.unread().then(|| {
            reqwest::Body::wrap_stream(Feeder {
                slot: self.slot.clone(),
                sent: self.sent.clone(),
                inner: None,
            })
        })
    }
}

/// Takes the stream out of the shared slot on first poll and counts what passes.
struct Feeder {
    slot: Arc<Mutex<Option<ByteStream>>>,
    sent: Arc<AtomicU64>,
    inner: Option<ByteStream>,
}

impl Stream for Feeder {
    type Item = Result<Bytes, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.inner.is_none() {
            let taken = self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
            match taken {
                Some(stream) => self.inner = Some(stream),
                None => return Poll::Ready(Some(Err("body stream already consumed".into()))),
            }
        }
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let item = inner.poll_next_unpin(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &item {
            self.sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        item
    }
}

/// The certificates of a PEM bundle; none without a file.
fn trusted_cas(file: Option<&Path>) -> Result<Vec<reqwest::Certificate>, UpstreamError> {
    let Some(path) = file else {
        return Ok(Vec::new());
    };
    let pem = read_pem(path)?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        UpstreamError::invalid(format!("{} is not a PEM bundle: {e}", path.display()))
    })?;
    if certificates.is_empty() {
        return Err(UpstreamError::invalid(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certificates)
}

/// The client identity for mutual TLS: certificate chain and key, read from their two files.
fn client_identity(
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<reqwest::Identity>, UpstreamError> {
    let (Some(cert), Some(key)) = (cert, key) else {
        return Ok(None);
    };
    // reqwest takes one PEM buffer holding both; the error names the files, never their content.
    let mut pem = read_pem(cert)?;
    pem.push(b'\n');
    pem.extend(read_pem(key)?);
    reqwest::Identity::from_pem(&pem).map(Some).map_err(|e| {
        UpstreamError::invalid(format!(
            "{} and {} are not a PEM certificate and key: {e}",
            cert.display(),
            key.display()
        ))
    })
}

fn read_pem(path: &Path) -> Result<Vec<u8>, UpstreamError> {
    std::fs::read(path)
        .map_err(|e| UpstreamError::invalid(format!("cannot read {}: {e}", path.display())))
}

/// One upstream: its name, base URL, HTTP client, retry policy and circuit breaker.
pub struct Transport {
    name: Arc<str>,
    base: Url,
    client: reqwest::Client,
    policy: TransportPolicy,
    breaker: CircuitBreaker,
    /// Rate and concurrency limits, shared by every caller of this upstream.
    limiter: Limiter,
    health: Arc<Health>,
    /// What the prober asks while the upstream is down (see [`Health`]).
    probe_url: Url,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("name", &self.name)
            .field("base", &self.base.as_str())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Builds the transport of upstream `name` (the metrics label) rooted at `base`, trusting
    /// the system trust store.
    pub fn new(
        name: &str,
        base: Url,
        policy: TransportPolicy,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, UpstreamError> {
        Self::with_tls(name, base, policy, clock, TlsFiles::default())
    }

    /// Like [`Self::new`], also trusting the CAs of `tls.ca_file` and presenting the client
    /// certificate of `tls.client_cert_file` when one is configured.
    pub fn with_tls(
        name: &str,
        base: Url,
        policy: TransportPolicy,
        clock: Arc<dyn Clock>,
        tls: TlsFiles<'_>,
    ) -> Result<Self, UpstreamError> {
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(UpstreamError::invalid("base URL must be http(s)"));
        }
        let mut builder = reqwest::Client::builder().use_rustls_tls();
        for certificate in trusted_cas(tls.ca_file)? {
            builder = builder.add_root_certificate(certificate);
        }
        if let Some(identity) = client_identity(tls.client_cert_file, tls.client_key_file)? {
            builder = builder.identity(identity);
        }
        let client = builder
            .connect_timeout(policy.connect_timeout)
            .redirect(same_origin_redirects(base.origin()))
            .user_agent(concat!("xecm-bridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| UpstreamError::invalid(format!("cannot build HTTP client: {e}")))?;
        crate::telemetry::metrics::register_upstream(name);
        let name: Arc<str> = Arc::from(name);
        Ok(Self {
            breaker: CircuitBreaker::new(name.clone(), policy.circuit.clone()),
            limiter: Limiter::new(name.clone(), Limits::UNLIMITED, clock.clone()),
            health: Health::new(name.clone()),
            probe_url: base.clone(),
            name,
            base,
            client,
            policy,
            clock,
        })
    }

    /// Builds the transport from the configuration section, with the real clock.
    pub fn from_config(
        name: &str,
        base: Url,
        config: &TransportConfig,
    ) -> Result<Self, UpstreamError> {
        Self::new(name, base, config.into(), Arc::new(SystemClock))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    pub fn policy(&self) -> &TransportPolicy {
        &self.policy
    }

    pub fn circuit_state(&self) -> CircuitState {
        self.breaker.state(self.clock.now())
    }

    /// Changes each time the upstream answers again after it was down (see [`Health`]); the
    /// worker then resumes the work waiting for a retry.
    pub fn recoveries(&self) -> tokio::sync::watch::Receiver<u64> {
        self.health.recoveries()
    }

    /// Limits the calls to this upstream (default: unlimited); see [`super::limit`].
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limiter = Limiter::new(self.name.clone(), limits, self.clock.clone());
        self
    }

    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// What to ask while the upstream is down, below the base URL (default: the base URL).
    pub fn with_probe(mut self, segments: &[&str]) -> Self {
        self.probe_url = self.url(segments);
        self
    }

    fn note_transient_failure(&self) {
        let (client, url) = (self.client.clone(), self.probe_url.clone());
        let every = self.policy.circuit.open_for;
        self.health.failed(|health| {
            tokio::spawn(health.probe(client, url, every));
        });
    }

    /// `base` followed by `segments`, each percent-encoded as one path segment; the only way
    /// clients make URLs, so no call can leave the base URL. An empty last segment yields a
    /// trailing slash.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// The URL of a route template such as `/api/v2/nodes/{id}/versions`, its `{…}`
    /// placeholders replaced in order by `params`.
    pub fn route_url(&self, template: &str, params: &[&str]) -> Result<Url, UpstreamError> {
        let mut params = params.iter();
        let mut segments = Vec::new();
        for segment in template.trim_start_matches('/').split('/') {
            if segment.starts_with('{') && segment.ends_with('}') {
                let value = params.next().ok_or_else(|| {
                    UpstreamError::invalid(format!("missing parameter {segment} for {template}"))
                })?;
                if value.is_empty() {
                    return Err(UpstreamError::invalid(format!("empty {segment}")));
                }
                segments.push(*value);
            } else {
                segments.push(segment);
            }
        }
        if params.next().is_some() {
            return Err(UpstreamError::invalid(format!(
                "too many parameters for {template}"
            )));
        }
        Ok(self.url(&segments))
    }

    /// A request builder for `url`, refused unless `url` is inside the configured origin.
    pub fn request(&self, method: Method, url: Url) -> Result<RequestBuilder, UpstreamError> {
        if url.origin() != self.base.origin() {
            return Err(UpstreamError::OriginViolation {
                origin: url.origin().ascii_serialization(),
            });
        }
        Ok(self.client.request(method, url))
    }

    /// Sends a replayable request built by `build` (called once per attempt), retrying
    /// transient failures. Returns every answer that is not a transient failure, whatever its
    /// status; transient failures that outlast the retries become errors.
    pub async fn send<B>(&self, deadline: Deadline, build: B) -> Result<Response, UpstreamError>
    where
        B: Fn() -> Result<RequestBuilder, UpstreamError>,
    {
        self.execute(deadline, None, || build().map(Some)).await
    }

    /// Sends a request with a streamed body (see the module docs for when it is retried).
    /// `build` gets the body for the attempt and returns the request carrying it.
    pub async fn send_stream<B>(
        &self,
        body: &StreamBody,
        build: B,
    ) -> Result<Response, UpstreamError>
    where
        B: Fn(reqwest::Body) -> Result<RequestBuilder, UpstreamError>,
    {
        self.execute(Deadline::Total, Some(&body.sent), || match body.body() {
            Some(b) => build(b).map(Some),
            None => Ok(None),
        })
        .await
    }

    /// Wraps a response body so that a pause longer than `request_timeout` between two
    /// chunks ends it with a timeout error (the whole transfer may take as long as it needs).
    pub fn idle_guarded(&self, response: Response) -> ByteStream {
        let idle = self.policy.request_timeout;
        let body = response.bytes_stream();
        futures::stream::unfold(Some(body), move |state| async move {
            let mut body = state?;
            match tokio::time::timeout(idle, body.next()).await {
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(body))),
                Ok(Some(Err(e))) => Some((Err(Box::new(e.without_url()) as BoxError), None)),
                Ok(None) => None,
                Err(_) => Some((Err("upstream body stalled".into()), None)),
            }
        })
        .boxed()
    }

    async fn execute<N>(
        &self,
        deadline: Deadline,
        progress: Option<&AtomicU64>,
        mut next: N,
    ) -> Result<Response, UpstreamError>
    where
        N: FnMut() -> Result<Option<RequestBuilder>, UpstreamError>,
    {
        let mut retry = 0;
        let mut last_error = None;
        loop {
            // Wait for the limiter first: the breaker's verdict is then taken at sending time.
            let admission = self.limiter.admit().await;
            let permit = self.breaker.admit(self.clock.now())?;
            let Some(request) = next()? else {
                // The previous attempt read the streamed body: report its failure.
                return Err(last_error.unwrap_or_else(|| UpstreamError::Transport {
                    kind: TransportErrorKind::Body,
                    message: "streamed body cannot be replayed".into(),
                }));
            };
            let started = self.clock.now();
            let outcome = self.attempt(request, deadline, progress).await;
            // The concurrency slot is for the call in flight, not for a backoff before a retry.
            drop(admission);
            let now = self.clock.now();
            self.observe(&outcome, now.saturating_duration_since(started));
            let error = match outcome {
                Ok(response) if !is_transient_status(response.status().as_u16()) => {
                    permit.record(now, false);
                    self.health.answered();
                    return Ok(response);
                }
                Ok(response) => {
                    permit.record(now, true);
                    self.note_transient_failure();
                    let answer = answer_of(response).await;
                    if answer.status == http::StatusCode::TOO_MANY_REQUESTS {
                        self.limiter.too_many_requests(answer.retry_after);
                    }
                    answer.into_error()
                }
                Err(error) => {
                    permit.record(now, error.is_retryable());
                    if error.is_retryable() {
                        self.note_transient_failure();
                    }
                    error
                }
            };
            let replayable = progress.is_none_or(|p| p.load(Ordering::Relaxed) == 0);
            if !error.is_retryable() || !replayable {
                return Err(error);
            }
            let Some(wait) = self.policy.retry.delay(retry, error.retry_after()) else {
                return Err(error);
            };
            tracing::debug!(upstream = %self.name, retry, ?wait, %error, "retrying");
            last_error = Some(error);
            self.clock.sleep(wait).await;
            retry += 1;
        }
    }

    async fn attempt(
        &self,
        request: RequestBuilder,
        deadline: Deadline,
        progress: Option<&AtomicU64>,
    ) -> Result<Response, UpstreamError> {
        let timeout = self.policy.request_timeout;
        let (client, request) = request.build_split();
        let mut request = request.map_err(UpstreamError::from_reqwest)?;
        let write = !matches!(*request.method(), Method::GET | Method::HEAD);
        let result = match (progress, deadline) {
            (Some(progress), _) => stall_guarded(client.execute(request), progress, timeout).await,
            (None, Deadline::Total) => {
                *request.timeout_mut() = Some(timeout);
                client.execute(request).await.map_err(Some)
            }
            (None, Deadline::Headers) => {
                match tokio::time::timeout(timeout, client.execute(request)).await {
                    Ok(result) => result.map_err(Some),
                    Err(_) => Err(None),
                }
            }
        };
        if write && result.is_ok() {
            super::crash::write_answered();
        }
        result.map_err(|e| match e {
            Some(e) => UpstreamError::from_reqwest(e),
            None => UpstreamError::Transport {
                kind: TransportErrorKind::Timeout,
                message: format!("no progress for {}s", timeout.as_secs_f32()),
            },
        })
    }

    fn observe(&self, outcome: &Result<Response, UpstreamError>, elapsed: Duration) {
        let class = match outcome {
            Ok(r) => match r.status().as_u16() {
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                _ => "5xx",
            },
            Err(_) => "error",
        };
        let upstream = self.name.to_string();
        metrics::counter!("xecm_upstream_requests_total", "upstream" => upstream.clone(), "status_class" => class)
            .increment(1);
        metrics::histogram!("xecm_upstream_request_duration_seconds", "upstream" => upstream)
            .record(elapsed.as_secs_f64());
    }
}

/// Runs `send`, failing with `Err(None)` when the body made no progress for `idle` and no
/// answer came.
async fn stall_guarded<F>(
    send: F,
    progress: &AtomicU64,
    idle: Duration,
) -> Result<Response, Option<reqwest::Error>>
where
    F: Future<Output = Result<Response, reqwest::Error>>,
{
    tokio::pin!(send);
    let mut last = progress.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            result = &mut send => return result.map_err(Some),
            () = tokio::time::sleep(idle) => {
                let now = progress.load(Ordering::Relaxed);
                if now == last {
                    return Err(None);
                }
                last = now;
            }
        }
    }
}

/// Reads an error answer's status, message and `Retry-After`, consuming the body.
pub(crate) async fn answer_of(response: Response) -> ErrorAnswer {
    let status = response.status();
    let retry_after = parse_retry_after(response.headers());
    // Error bodies are small; cap anyway so a misbehaving upstream cannot make us buffer a file.
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        body.extend_from_slice(&chunk);
        if body.len() > 64 * 1024 {
            break;
        }
    }
    ErrorAnswer {
        status,
        message: error_message(status, &body),
        retry_after,
    }
}

/// Checks the status and decodes a JSON body; error answers go through `map` (each upstream
/// refines the generic mapping).
pub(crate) async fn decode_json<T: serde::de::DeserializeOwned>(
    response: Response,
    map: fn(ErrorAnswer) -> UpstreamError,
) -> Result<T, UpstreamError> {
    let bytes = success_body(response, map).await?;
    serde_json::from_slice(&bytes).map_err(UpstreamError::decode)
}

/// The body of a successful answer; error answers go through `map`.
pub(crate) async fn success_body(
    response: Response,
    map: fn(ErrorAnswer) -> UpstreamError,
) -> Result<Bytes, UpstreamError> {
    let response = check_status(response, map).await?;
    response.bytes().await.map_err(UpstreamError::from_reqwest)
}

/// The response itself when it is a success; error answers go through `map`.
pub(crate) async fn check_status(
    response: Response,
    map: fn(ErrorAnswer) -> UpstreamError,
) -> Result<Response, UpstreamError> {
    if response.status().is_success() {
        Ok(response)
    } else {
        Err(map(answer_of(response).await))
    }
}

/// `Retry-After` as delay-seconds or an HTTP date.
pub fn parse_retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = date.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

/// Follows redirects only inside `origin`. Cross-origin redirects are refused rather than
/// followed: our OpenText ticket travels in a custom header that reqwest would not strip.
fn same_origin_redirects(origin: url::Origin) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.url().origin() != origin {
            let target = attempt.url().origin().ascii_serialization();
            attempt.error(RedirectOutsideOrigin(target))
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_retries: u32) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }

    #[test]
    fn backoff_grows_within_bounds_and_stops() {
        let p = policy(5);
        for retry in 0..5 {
            let exp = Duration::from_millis(100 * 2u64.pow(retry)).min(p.max);
            let d = p.delay(retry, None).expect("retry allowed");
            assert!(
                d >= exp / 2 && d <= exp,
                "retry {retry}: {d:?} not in [{:?}, {exp:?}]",
                exp / 2
            );
        }
        assert_eq!(p.delay(5, None), None);
    }

    #[test]
    fn retry_after_wins_unless_too_long() {
        let p = policy(3);
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(p.delay(0, Some(Duration::from_secs(60))), None);
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let mut h = http::HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(parse_retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(parse_retry_after(&h), None);
    }

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(
            Arc::from("test"),
            CircuitPolicy {
                failure_rate: 0.5,
                min_requests: 4,
                window: Duration::from_secs(10),
                open_for: Duration::from_secs(5),
            },
        )
    }

    #[test]
    fn breaker_opens_on_failure_rate_then_probes() {
        let b = breaker();
        let t0 = Instant::now();
        for failed in [false, true, false] {
            b.admit(t0).unwrap().record(t0, failed);
        }
        assert_eq!(b.state(t0), CircuitState::Closed);
        b.admit(t0).unwrap().record(t0, true);
        assert_eq!(b.state(t0), CircuitState::Open);
        assert!(matches!(
            b.admit(t0),
            Err(UpstreamError::CircuitOpen { .. })
        ));

        let later = t0 + Duration::from_secs(5);
        assert_eq!(b.state(later), CircuitState::HalfOpen);
        let probe = b.admit(later).unwrap();
        assert!(b.admit(later).is_err(), "only one probe at a time");
        probe.record(later, true);
        assert_eq!(b.state(later), CircuitState::Open);

        let again = later + Duration::from_secs(5);
        b.admit(again).unwrap().record(again, false);
        assert_eq!(b.state(again), CircuitState::Closed);
    }

    #[test]
    fn abandoned_probe_frees_the_slot() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..4 {
            b.admit(t0).unwrap().record(t0, true);
        }
        let later = t0 + Duration::from_secs(6);
        drop(b.admit(later).unwrap());
        assert!(b.admit(later).is_ok());
    }

    #[test]
    fn old_outcomes_leave_the_window() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..3 {
            b.admit(t0).unwrap().record(t0, true);
        }
        let later = t0 + Duration::from_secs(11);
        b.admit(later).unwrap().record(later, true);
        assert_eq!(b.state(later), CircuitState::Closed);
    }
}
