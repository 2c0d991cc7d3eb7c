//! The per-upstream limiter: the rate the OpenText simulator sees (counted per one-second window
//! from its request log's arrival times, never from how long the test took), the calls in flight
//! the simulator sees (its own count, with an injected latency so that calls overlap there), the
//! per-replica share of both, a 429 with `Retry-After` pausing and slowing every call, and the
//! configuration keys.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::Method;
use secrecy::SecretString;
use url::Url;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};
use xecm_bridge::clients::config::{OpentextAuth, OpentextConfig, TransportConfig};
use xecm_bridge::clients::limit::Limits;
use xecm_bridge::clients::opentext::OpentextClient;
use xecm_bridge::clients::transport::{CircuitPolicy, Deadline, RetryPolicy, TransportPolicy};
use xecm_bridge::clients::{Clock, Transport, UpstreamError};
use xecm_bridge::config::Settings;
use xecm_bridge::sim::opentext::{
    self, OpentextSimOptions, SAMPLE_ADMIN_PASSWORD, SAMPLE_ADMIN_USER,
};
use xecm_bridge::sim::{FaultSettings, RequestRecord, SimHandle};

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("socket address")
}

async fn start_opentext() -> SimHandle {
    opentext::spawn(any_port(), OpentextSimOptions::default())
        .await
        .expect("simulator starts")
}

fn config(sim: &SimHandle, rate: f64, replicas: u32) -> OpentextConfig {
    OpentextConfig {
        base_url: Url::parse(&sim.base_url()).expect("base URL"),
        auth: OpentextAuth::Otcs,
        username: SAMPLE_ADMIN_USER.into(),
        password: SecretString::from(SAMPLE_ADMIN_PASSWORD),
        domain: None,
        otds_url: None,
        client_id: None,
        client_secret: None,
        ext_system_id: "4ALLPORTAL".into(),
        multipart_threshold_bytes: 64 << 20,
        multipart_part_bytes: 16 << 20,
        ca_file: None,
        client_cert_file: None,
        client_key_file: None,
        max_requests_per_sec: rate,
        max_concurrent_requests: 0,
        rate_limit_replicas: replicas,
        transport: TransportConfig {
            connect_timeout_secs: 2,
            request_timeout_secs: 10,
            max_retries: 2,
            backoff_base_ms: 10,
            backoff_max_ms: 2000,
            circuit_failure_rate: 0.5,
            circuit_min_requests: 100,
            circuit_window_secs: 60,
            circuit_open_secs: 1,
        },
    }
}

/// The most requests that arrived within any one-second window (`[t, t + 1 s)`).
fn max_per_second(log: &[RequestRecord]) -> usize {
    let mut times: Vec<i64> = log.iter().map(|r| r.at_ms).collect();
    times.sort_unstable();
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t < times[i] + 1000)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// `calls` concurrent node reads from each client (plus each client's login).
async fn read_nodes(clients: &[OpentextClient], calls: usize) {
    let reads = clients
        .iter()
        .flat_map(|c| (0..calls).map(move |_| c.node(2000)));
    for result in join_all(reads).await {
        result.expect("the enterprise volume is readable");
    }
}

#[tokio::test]
async fn the_upstream_never_sees_more_than_the_configured_rate() {
    let sim = start_opentext().await;
    let client = OpentextClient::new(&config(&sim, 20.0, 1)).expect("client");
    read_nodes(std::slice::from_ref(&client), 45).await;

    let log = sim.requests();
    assert_eq!(log.len(), 46, "45 reads and one login: {log:?}");
    let peak = max_per_second(&log);
    // Paced at 95 % (1/19 s apart), 21 requests span 1.05 s: arrival jitter up to 50 ms cannot
    // put more than 20 into one window.
    assert!(peak <= 20, "{peak} requests in one second, limit 20");
    assert!(
        peak >= 15,
        "the limiter should not be far below its rate: {peak}"
    );
}

#[tokio::test]
async fn replicas_share_the_rate() {
    let sim = start_opentext().await;
    // Two replicas of one installation limited to 20/s together: 10/s each, paced at 9.5/s, so
    // each puts at most 10 into any one-second window whatever the other one's phase.
    let replicas = [
        OpentextClient::new(&config(&sim, 20.0, 2)).expect("client"),
        OpentextClient::new(&config(&sim, 20.0, 2)).expect("client"),
    ];
    read_nodes(&replicas, 25).await;

    let log = sim.requests();
    assert_eq!(log.len(), 52, "2 × (25 reads and one login)");
    let peak = max_per_second(&log);
    assert!(
        peak <= 20,
        "{peak} requests in one second, limit 20 for both replicas"
    );
}

#[tokio::test]
async fn without_a_limit_nothing_waits() {
    let sim = start_opentext().await;
    let client = OpentextClient::new(&config(&sim, 0.0, 1)).expect("client");
    read_nodes(std::slice::from_ref(&client), 30).await;
    assert_eq!(client.transport().limiter().slowdown(), 1);
    assert!(
        max_per_second(&sim.requests()) > 20,
        "unlimited calls are not paced"
    );
}

/// A client of `sim` with `max_concurrent_requests` for `replicas` replicas and no rate limit.
fn concurrency_config(sim: &SimHandle, concurrent: u32, replicas: u32) -> OpentextConfig {
    OpentextConfig {
        max_concurrent_requests: concurrent,
        ..config(sim, 0.0, replicas)
    }
}

/// Makes the simulator hold every API request for `latency_ms` before answering it, so that
/// calls allowed to run at once do overlap at the upstream.
fn slow_down(sim: &SimHandle, latency_ms: u64) {
    sim.set_faults(FaultSettings {
        latency_ms,
        ..FaultSettings::default()
    });
}

/// The simulator's own count of API requests in flight now and the peak since it started, from
/// the headers of `GET /_sim/requests`.
async fn in_flight(sim: &SimHandle) -> (usize, usize) {
    let response = reqwest::get(format!("{}/requests", sim.control_url()))
        .await
        .expect("the request log answers");
    let header = |name: &str| -> usize {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("`{name}` header: {:?}", response.headers()))
    };
    (header("x-sim-in-flight"), header("x-sim-peak-in-flight"))
}

#[tokio::test]
async fn the_upstream_never_sees_more_calls_in_flight_than_the_limit() {
    let sim = start_opentext().await;
    slow_down(&sim, 100);
    let client = OpentextClient::new(&concurrency_config(&sim, 3, 1)).expect("client");
    read_nodes(std::slice::from_ref(&client), 30).await;

    assert_eq!(sim.requests().len(), 31, "30 reads and one login");
    let (now, peak) = in_flight(&sim).await;
    assert_eq!(now, 0, "every call was answered");
    assert!(peak <= 3, "{peak} calls in flight at once, limit 3");
    // 30 reads of 100 ms each wait for the three slots: the limit is reached, not undercut.
    assert_eq!(peak, 3, "the limiter should use all three slots");
}

#[tokio::test]
async fn replicas_share_the_calls_in_flight() {
    let sim = start_opentext().await;
    slow_down(&sim, 100);
    // Two replicas of one installation limited to 4 calls in flight together: 2 each.
    let replicas = [
        OpentextClient::new(&concurrency_config(&sim, 4, 2)).expect("client"),
        OpentextClient::new(&concurrency_config(&sim, 4, 2)).expect("client"),
    ];
    read_nodes(&replicas, 30).await;

    assert_eq!(sim.requests().len(), 62, "2 × (30 reads and one login)");
    let (now, peak) = in_flight(&sim).await;
    assert_eq!(now, 0, "every call was answered");
    assert!(
        peak <= 4,
        "{peak} calls in flight at once, limit 4 for both replicas"
    );
    assert_eq!(peak, 4, "both replicas' two slots should overlap");
}

#[tokio::test]
async fn without_a_concurrency_limit_calls_overlap_at_the_upstream() {
    let sim = start_opentext().await;
    slow_down(&sim, 100);
    let client = OpentextClient::new(&concurrency_config(&sim, 0, 1)).expect("client");
    read_nodes(std::slice::from_ref(&client), 30).await;

    // The measurement can fail: unlimited, the 30 parallel reads overlap far beyond 3.
    let (now, peak) = in_flight(&sim).await;
    assert_eq!(now, 0, "every call was answered");
    assert!(peak > 3, "unlimited calls overlap: peak {peak}");
}

/// A clock whose sleeps return at once and move time forward; it remembers every sleep.
struct ManualClock {
    start: Instant,
    offset: Mutex<Duration>,
    sleeps: Mutex<Vec<Duration>>,
}

impl ManualClock {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
            sleeps: Mutex::new(Vec::new()),
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
        self.start + *self.offset.lock().unwrap()
    }
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        self.sleeps.lock().unwrap().push(duration);
        self.advance(duration);
        Box::pin(async {})
    }
}

fn no_retries() -> TransportPolicy {
    TransportPolicy {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            max_retries: 0,
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

async fn get(t: &Transport) -> Result<reqwest::Response, UpstreamError> {
    let url = t.url(&["x"]);
    t.send(Deadline::Total, || t.request(Method::GET, url.clone()))
        .await
}

#[tokio::test]
async fn a_429_with_retry_after_pauses_every_call_and_halves_the_rate() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "7"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let clock = ManualClock::new();
    let transport = Transport::new(
        "test",
        Url::parse(&server.uri()).unwrap(),
        no_retries(),
        clock.clone(),
    )
    .unwrap()
    .with_limits(Limits {
        max_requests_per_sec: 1000.0,
        max_concurrent_requests: 0,
        replicas: 1,
    });

    let first = get(&transport)
        .await
        .expect_err("the 429 is returned once retries are used up");
    assert_eq!(first.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(transport.limiter().slowdown(), 2, "the rate is halved");

    // The next call, from any caller, waits out the upstream's Retry-After before it is sent.
    let answer = get(&transport).await.expect("the upstream answers again");
    assert_eq!(answer.status(), 200);
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(7)]);

    // Ten calm seconds later the rate is raised back to the configured one.
    clock.advance(Duration::from_secs(10));
    get(&transport).await.expect("answer");
    assert_eq!(transport.limiter().slowdown(), 1);
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[test]
fn limit_keys_are_validated_and_documented_defaults_are_unlimited() {
    const SECRETS: &str = "[sources.allportal]\nsecrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\n[sources.opentext]\nsecrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\n";
    let settings = Settings::from_toml(&[SECRETS]).expect("defaults load");
    assert_eq!(settings.opentext.limits(), Limits::UNLIMITED);
    assert_eq!(settings.allportal.limits(), Limits::UNLIMITED);

    for (toml, key) in [
        (
            "[opentext]\nmax_requests_per_sec = -1",
            "opentext.max_requests_per_sec",
        ),
        (
            "[allportal]\nrate_limit_replicas = 0",
            "allportal.rate_limit_replicas",
        ),
    ] {
        let error = Settings::from_toml(&[SECRETS, toml])
            .expect_err(toml)
            .to_string();
        assert!(error.contains(key), "{toml}: {error}");
    }
    let set = Settings::from_toml(&[
        SECRETS,
        "[opentext]\nmax_requests_per_sec = 30\nmax_concurrent_requests = 8\nrate_limit_replicas = 3",
    ])
    .expect("valid limits");
    assert_eq!(set.opentext.limits().replica_rate(), Some(10.0));
    assert_eq!(set.opentext.limits().replica_concurrency(), Some(2));
}
