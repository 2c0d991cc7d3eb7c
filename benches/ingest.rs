//! Ingest throughput and latency: a bare axum handler answering 202 (the baseline) against the
//! bridge's verified, durable ingest (signature check, parse, dedup, SQLite group commit with
//! `synchronous = FULL`), with the same load generator in the same run.
//!
//! `cargo bench --bench ingest` (env: BENCH_REQUESTS, default 20000; BENCH_CONCURRENCY, default 64).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use support::{SECRET, Signed, env_usize, product_event, sign};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use xecm_bridge::config::Settings;
use xecm_bridge::server::{self, Role};

struct Report {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

/// `count` signed 1 KiB bodies with unique ids, made before the clock starts.
fn requests(prefix: &str, count: usize) -> Vec<Signed> {
    (0..count)
        .map(|i| {
            sign(
                format!("msg_{prefix}_{i}"),
                product_event(&i.to_string(), 1024),
            )
        })
        .collect()
}

async fn load(url: String, requests: Vec<Signed>, concurrency: usize) -> Report {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, requests, next) =
            (client.clone(), url.clone(), requests.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(r) = requests.get(i) else { break };
                let sent = Instant::now();
                let response = r.send(&client, &url).send().await.expect("request");
                assert_eq!(response.status(), StatusCode::ACCEPTED);
                response.bytes().await.expect("body");
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Report {
        rps: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

async fn serve_bare() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/webhooks/allportal",
        post(|_body: Bytes| async {
            (StatusCode::ACCEPTED, "{\"accepted\":[],\"duplicates\":[]}")
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/webhooks/allportal")
}

async fn serve_bridge(dir: &tempfile::TempDir) -> (String, CancellationToken) {
    let toml = format!(
        "[store]\nurl = \"sqlite://{}/bench.db\"\n[log]\nfilter = \"warn\"\n[sources.allportal]\nsecrets = [\"{SECRET}\"]\n[sources.opentext]\nsecrets = [\"{SECRET}\"]",
        dir.path().display()
    );
    let settings = Settings::from_toml(&[&toml]).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = server::build_state(settings).await.unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(server::run(state, Role::Api, listener, shutdown.clone()));
    (format!("http://{addr}/webhooks/allportal"), shutdown)
}

fn print(name: &str, r: &Report) {
    println!(
        "{name:<32} {:>9.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms",
        r.rps,
        r.p50.as_secs_f64() * 1e3,
        r.p99.as_secs_f64() * 1e3
    );
}

fn main() {
    let count = env_usize("BENCH_REQUESTS", 20_000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 64);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let bare_url = serve_bare().await;
        let (bridge_url, shutdown) = serve_bridge(&dir).await;
        // Warm both up (connections, page cache, statement cache) before measuring.
        load(bare_url.clone(), requests("warm_bare", 2_000), concurrency).await;
        load(bridge_url.clone(), requests("warm_bridge", 2_000), concurrency).await;

        println!("ingest benchmark: {count} requests, concurrency {concurrency}, 1 KiB signed bodies, unique ids");
        let bare = load(bare_url, requests("bare", count), concurrency).await;
        let bridge = load(bridge_url, requests("bridge", count), concurrency).await;
        print("baseline: bare axum 202", &bare);
        print("bridge: verify + durable store", &bridge);
        println!("ratio bridge/baseline: {:.2}", bridge.rps / bare.rps);
        shutdown.cancel();
    });
}
