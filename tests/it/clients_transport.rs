//! The shared transport against a real HTTP server on loopback (wiremock): which failures are
//! retried, `Retry-After`, timeouts, the circuit breaker, origin pinning, streamed bodies.
//! Time is a manual clock: sleeps are recorded, never waited for, and nothing asserts timings.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::Method;
use url::Url;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};
use xecm_bridge::clients::transport::{
    CircuitPolicy, Deadline, RetryPolicy, StreamBody, TransportPolicy,
};
use xecm_bridge::clients::{CircuitState, Clock, Transport, TransportErrorKind, UpstreamError};

/// A clock whose sleeps return at once and move time forward; it remembers every sleep.
#[derive(Default)]
struct ManualClock {
    start: Option<Instant>,
    offset: Mutex<Duration>,
    sleeps: Mutex<Vec<Duration>>,
}

impl ManualClock {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Some(Instant::now()),
            ..Self::default()
        })
    }
    fn advance(&self, by: Duration) {
        *self.offset.lock().unwrap() += by;
    }
    fn sleeps(&self) -> Vec<Duration> {
        self.sleeps.lock().unwrap().clone()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start.unwrap() + *self.offset.lock().unwrap()
    }
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        self.sleeps.lock().unwrap().push(duration);
        self.advance(duration);
        Box::pin(async {})
    }
}

fn policy(max_retries: u32) -> TransportPolicy {
    TransportPolicy {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            max_retries,
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
        },
        circuit: CircuitPolicy {
            failure_rate: 0.5,
            min_requests: 100,
            window: Duration::from_secs(60),
            open_for: Duration::from_secs(30),
        },
    }
}

fn transport(server: &MockServer, policy: TransportPolicy, clock: Arc<ManualClock>) -> Transport {
    Transport::new("test", Url::parse(&server.uri()).unwrap(), policy, clock).unwrap()
}

async fn get(t: &Transport, p: &str) -> Result<reqwest::Response, UpstreamError> {
    let url = t.url(&[p]);
    t.send(Deadline::Total, || t.request(Method::GET, url.clone()))
        .await
}

async fn received(server: &MockServer) -> usize {
    server.received_requests().await.unwrap().len()
}

#[tokio::test]
async fn retries_429_waiting_for_retry_after() {
    let server = MockServer::start().await;
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "3"))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let clock = ManualClock::new();
    let t = transport(&server, policy(4), clock.clone());

    let response = get(&t, "x").await.expect("third attempt succeeds");
    assert_eq!(response.status(), 200);
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(3); 2]);
    assert_eq!(received(&server).await, 3);
}

#[tokio::test]
async fn persistent_429_becomes_rate_limited_with_retry_after() {
    let server = MockServer::start().await;
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .mount(&server)
        .await;
    let clock = ManualClock::new();
    let t = transport(&server, policy(2), clock.clone());

    let error = get(&t, "x").await.unwrap_err();
    assert!(
        matches!(error, UpstreamError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(1)),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert_eq!(received(&server).await, 3);
}

#[tokio::test]
async fn retry_after_longer_than_backoff_max_is_handed_to_the_caller() {
    let server = MockServer::start().await;
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(503).insert_header("Retry-After", "3600"))
        .mount(&server)
        .await;
    let clock = ManualClock::new();
    let t = transport(&server, policy(4), clock.clone());

    let error = get(&t, "x").await.unwrap_err();
    assert_eq!(error.retry_after(), Some(Duration::from_secs(3600)));
    assert!(matches!(
        error,
        UpstreamError::Unavailable { status: 503, .. }
    ));
    assert_eq!(received(&server).await, 1);
    assert!(clock.sleeps().is_empty());
}

#[tokio::test]
async fn transient_statuses_retry_with_growing_backoff() {
    let server = MockServer::start().await;
    for status in [502, 503, 504] {
        Mock::given(path("/x"))
            .respond_with(ResponseTemplate::new(status))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&server)
            .await;
    }
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let clock = ManualClock::new();
    let t = transport(&server, policy(4), clock.clone());

    assert_eq!(get(&t, "x").await.unwrap().status(), 200);
    let sleeps = clock.sleeps();
    assert_eq!(sleeps.len(), 3);
    for (i, wait) in sleeps.iter().enumerate() {
        let cap = Duration::from_millis(100 << i);
        assert!(
            *wait >= cap / 2 && *wait <= cap,
            "retry {i} waited {wait:?}"
        );
    }
}

#[tokio::test]
async fn business_errors_are_answers_not_retries() {
    let server = MockServer::start().await;
    Mock::given(path("/x"))
        .respond_with(
            ResponseTemplate::new(500).set_body_json(serde_json::json!({"error": "boom"})),
        )
        .mount(&server)
        .await;
    let clock = ManualClock::new();
    let t = transport(&server, policy(4), clock.clone());

    let response = get(&t, "x").await.unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(received(&server).await, 1);
    assert_eq!(t.circuit_state(), CircuitState::Closed);
}

#[tokio::test]
async fn timeout_is_a_transport_error_and_is_retried() {
    let server = MockServer::start().await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let mut p = policy(2);
    p.request_timeout = Duration::from_millis(300);
    let clock = ManualClock::new();
    let t = transport(&server, p.clone(), clock.clone());
    assert_eq!(get(&t, "slow").await.unwrap().status(), 200);
    assert_eq!(clock.sleeps().len(), 1, "one retry after the timeout");

    let always_slow = MockServer::start().await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&always_slow)
        .await;
    let t = transport(&always_slow, p, ManualClock::new());
    let error = get(&t, "slow").await.unwrap_err();
    assert!(
        matches!(
            error,
            UpstreamError::Transport {
                kind: TransportErrorKind::Timeout,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert_eq!(received(&always_slow).await, 3);
}

#[tokio::test]
async fn circuit_opens_fails_fast_and_half_open_probe_closes_it() {
    let server = MockServer::start().await;
    let failing = Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(503))
        .mount_as_scoped(&server)
        .await;
    let mut p = policy(0);
    p.circuit.min_requests = 3;
    let clock = ManualClock::new();
    let t = transport(&server, p, clock.clone());

    for _ in 0..3 {
        let e = get(&t, "x").await.unwrap_err();
        assert!(matches!(e, UpstreamError::Unavailable { status: 503, .. }));
    }
    assert_eq!(t.circuit_state(), CircuitState::Open);
    let e = get(&t, "x").await.unwrap_err();
    assert!(
        matches!(e, UpstreamError::CircuitOpen { retry_after, .. } if retry_after == Duration::from_secs(30)),
        "{e:?}"
    );
    assert_eq!(received(&server).await, 3, "an open circuit sends nothing");

    // After the open period one probe goes through; it still fails, so the circuit re-opens.
    clock.advance(Duration::from_secs(30));
    assert_eq!(t.circuit_state(), CircuitState::HalfOpen);
    assert!(get(&t, "x").await.is_err());
    assert_eq!(t.circuit_state(), CircuitState::Open);
    assert_eq!(received(&server).await, 4);

    // The upstream recovers: the next probe succeeds and closes the circuit.
    drop(failing);
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    clock.advance(Duration::from_secs(30));
    assert_eq!(get(&t, "x").await.unwrap().status(), 200);
    assert_eq!(t.circuit_state(), CircuitState::Closed);
    assert_eq!(get(&t, "x").await.unwrap().status(), 200);
}

#[tokio::test]
async fn redirects_stay_inside_the_configured_origin() {
    let elsewhere = MockServer::start().await;
    Mock::given(path("/steal"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&elsewhere)
        .await;
    let server = MockServer::start().await;
    Mock::given(path("/away"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("Location", format!("{}/steal", elsewhere.uri()).as_str()),
        )
        .mount(&server)
        .await;
    Mock::given(path("/moved"))
        .respond_with(ResponseTemplate::new(301).insert_header("Location", "/here"))
        .mount(&server)
        .await;
    Mock::given(path("/here"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&server)
        .await;
    let t = transport(&server, policy(2), ManualClock::new());

    let error = get(&t, "away").await.unwrap_err();
    assert!(
        matches!(&error, UpstreamError::OriginViolation { origin } if *origin == elsewhere.uri()),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    let same_origin = get(&t, "moved").await.unwrap();
    assert_eq!(same_origin.text().await.unwrap(), "ok");

    let foreign = Url::parse(&format!("{}/steal", elsewhere.uri())).unwrap();
    assert!(matches!(
        t.request(Method::GET, foreign),
        Err(UpstreamError::OriginViolation { .. })
    ));
}

#[tokio::test]
async fn urls_are_built_under_the_base_path_with_encoded_segments() {
    let server = MockServer::start().await;
    let base = Url::parse(&format!("{}/otcs/cs/", server.uri())).unwrap();
    let t = Transport::new("test", base, policy(0), ManualClock::new()).unwrap();
    let url = t
        .route_url(
            "/api/v2/nodes/{id}/categories/{category_id}/",
            &["12", "a/b c"],
        )
        .unwrap();
    assert_eq!(url.path(), "/otcs/cs/api/v2/nodes/12/categories/a%2Fb%20c/");
    assert!(t.route_url("/api/v2/nodes/{id}", &[]).is_err());
    assert!(t.route_url("/api/v2/nodes/{id}", &["1", "2"]).is_err());
}

fn chunks(n: usize) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures::stream::iter((0..n).map(|_| Ok(Bytes::from_static(&[7u8; 1024]))))
}

async fn post_stream(t: &Transport, body: &StreamBody) -> Result<reqwest::Response, UpstreamError> {
    let url = t.url(&["upload"]);
    t.send_stream(body, |b| {
        let part = reqwest::multipart::Part::stream_with_length(b, body.length());
        let form = reqwest::multipart::Form::new().part("file", part);
        Ok(t.request(Method::POST, url.clone())?.multipart(form))
    })
    .await
}

#[tokio::test]
async fn streamed_body_is_retried_only_while_unsent() {
    // Nothing listens on this port: every attempt is a connect error before the body is read,
    // so each retry still has the untouched stream.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let clock = ManualClock::new();
    let base = Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let t = Transport::new("test", base, policy(3), clock.clone()).unwrap();
    let body = StreamBody::new(chunks(4), 4096);
    let error = post_stream(&t, &body).await.unwrap_err();
    assert!(
        matches!(
            error,
            UpstreamError::Transport {
                kind: TransportErrorKind::Connect,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(clock.sleeps().len(), 3, "all retries were made");
    assert_eq!(body.bytes_sent(), 0);

    // Here the body is sent, then the server answers 503: the stream is spent, no replay.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/upload"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let clock = ManualClock::new();
    let t = transport(&server, policy(3), clock.clone());
    let body = StreamBody::new(chunks(4), 4096);
    let error = post_stream(&t, &body).await.unwrap_err();
    assert!(
        error.is_retryable(),
        "the caller may redo the whole operation"
    );
    assert_eq!(received(&server).await, 1);
    assert_eq!(body.bytes_sent(), 4096);
}

#[test]
fn records_request_metrics_and_circuit_state() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let server = MockServer::start().await;
            Mock::given(path("/ok"))
                .respond_with(ResponseTemplate::new(200))
                .mount(&server)
                .await;
            Mock::given(path("/gone"))
                .respond_with(ResponseTemplate::new(404))
                .mount(&server)
                .await;
            let t = Transport::new(
                "metrics-test",
                Url::parse(&server.uri()).unwrap(),
                policy(0),
                ManualClock::new(),
            )
            .unwrap();
            get(&t, "ok").await.unwrap();
            get(&t, "ok").await.unwrap();
            get(&t, "gone").await.unwrap();
        });
    });
    let text = handle.render();
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in\n{text}"))
            .to_string()
    };
    assert!(
        line(r#"xecm_upstream_requests_total{upstream="metrics-test",status_class="2xx"}"#)
            .ends_with(" 2")
    );
    assert!(
        line(r#"xecm_upstream_requests_total{upstream="metrics-test",status_class="4xx"}"#)
            .ends_with(" 1")
    );
    assert!(line(r#"xecm_upstream_circuit_state{upstream="metrics-test"}"#).ends_with(" 0"));
    line("xecm_upstream_request_duration_seconds");
}

/// Three transient failures in a row make the upstream down; the prober then asks the probe
/// path (here failing twice more) until it answers, and that answer is the recovery signal.
#[tokio::test]
async fn a_down_upstream_is_probed_until_it_answers_and_the_recovery_is_signalled() {
    let server = MockServer::start().await;
    Mock::given(path("/work"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    Mock::given(path("/probe"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path("/probe"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    let mut quick = policy(2);
    quick.circuit.open_for = Duration::from_millis(50);
    let t = transport(&server, quick, ManualClock::new()).with_probe(&["probe"]);
    let mut recoveries = t.recoveries();
    assert!(get(&t, "work").await.is_err());
    tokio::time::timeout(Duration::from_secs(10), recoveries.changed())
        .await
        .expect("the recovery was signalled")
        .unwrap();
    let probes = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/probe")
        .count();
    assert_eq!(
        probes, 3,
        "two failed probes, then the answer (a 404 is an answer)"
    );
}
