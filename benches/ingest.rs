//! Ingest throughput and latency: a bare axum handler answering 202 (the baseline) against the
//! bridge's verified, durable ingest (signature check, parse, routing, dedup, SQLite group
//! commit with `synchronous = FULL`) in `serve --role api` and in `serve` with its worker (no
//! flow wants the events), measured in the same run by the same load generator, which runs in
//! a process of its own.
//!
//! `cargo bench --bench ingest` (env: BENCH_REQUESTS, default 20000; BENCH_CONCURRENCY, default
//! 64; BENCH_TURNS, default 3). The three targets are measured in turns, each turn starting with
//! another target, and compared by their medians: a shared VM's speed drifts within a run by more
//! than the targets' margins, and a single pass would credit the drift to whichever target it
//! happened to favour.
//!
//! `BENCH_DECAY_EVENTS=500000 cargo bench --bench ingest` measures decay instead: that many
//! events into one `serve` (with its worker) in ten equal slices, each slice's throughput printed,
//! then that full store against a fresh one, in turns (target: no more than 20 % slower).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use support::{SECRET, Signed, env_usize, process_cpu_secs, product_event, sign};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use xecm_bridge::config::Settings;
use xecm_bridge::server::{self, Role};

struct Report {
    rps: f64,
    p50: Duration,
    p99: Duration,
    /// CPU time of this process (the servers; the load generator is another process) per
    /// request: steadier than req/s on a shared machine.
    cpu_per_request: Duration,
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
        cpu_per_request: Duration::ZERO,
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

async fn serve_bridge(dir: &tempfile::TempDir, role: Role) -> (String, CancellationToken) {
    // Reconciliation off: the bench has no upstreams, and the worker should only see ingest.
    let toml = format!(
        "[store]\nurl = \"sqlite://{}/bench.db\"\n[log]\nfilter = \"error\"\n\
         [worker]\nreconcile_allportal_interval_secs = 0\nreconcile_opentext_interval_secs = 0\n\
         [sources.allportal]\nsecrets = [\"{SECRET}\"]\n[sources.opentext]\nsecrets = [\"{SECRET}\"]",
        dir.path().display()
    );
    let settings = Settings::from_toml(&[&toml]).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = server::build_state(settings).await.unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(server::run(state, role, listener, shutdown.clone()));
    (format!("http://{addr}/webhooks/allportal"), shutdown)
}

fn print(name: &str, r: &Report) {
    println!(
        "{name:<40} {:>9.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   server CPU {:>5.1} µs/req",
        r.rps,
        r.p50.as_secs_f64() * 1e3,
        r.p99.as_secs_f64() * 1e3,
        r.cpu_per_request.as_secs_f64() * 1e6
    );
}

/// The load generator runs in a process of its own (this executable again, with
/// `BENCH_LOAD_URL` set), so that it does not share a runtime with the servers it measures.
const LOAD_URL: &str = "BENCH_LOAD_URL";

/// Child: signs `count` requests with ids under `prefix`, sends them, prints one line.
fn generate_load(url: String) {
    let count = env_usize("BENCH_REQUESTS", 20_000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 64);
    let prefix = std::env::var("BENCH_PREFIX").unwrap_or_default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let r = runtime.block_on(load(url, requests(&prefix, count), concurrency));
    println!("{} {} {}", r.rps, r.p50.as_secs_f64(), r.p99.as_secs_f64());
}

/// Parent: runs the load generator against `url` and reads its figures, and counts this
/// process's CPU time meanwhile (the servers it runs; the others are idle).
async fn measure(url: &str, prefix: &str, count: usize) -> Report {
    let cpu_before = process_cpu_secs();
    let output = tokio::process::Command::new(std::env::current_exe().unwrap())
        .env(LOAD_URL, url)
        .env("BENCH_PREFIX", prefix)
        .env("BENCH_REQUESTS", count.to_string())
        .output()
        .await
        .expect("load generator");
    assert!(output.status.success(), "load generator failed: {output:?}");
    let line = String::from_utf8(output.stdout).unwrap();
    let figures: Vec<f64> = line
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    Report {
        rps: figures[0],
        p50: Duration::from_secs_f64(figures[1]),
        p99: Duration::from_secs_f64(figures[2]),
        cpu_per_request: Duration::from_secs_f64(
            (process_cpu_secs() - cpu_before).max(0.0) / count as f64,
        ),
    }
}

/// Decay over `total` events: ten slices into one store (each printed, to show the trend), then
/// the full store against a fresh one, measured in turns so that both see the same machine: a
/// shared VM's speed drifts over a run by more than the target, so the first slice against the
/// last alone cannot tell decay from drift.
async fn decay(total: usize) {
    const SLICES: usize = 10;
    const TURNS: usize = 3;
    let slice = total / SLICES;
    let dir = tempfile::tempdir().unwrap();
    let (url, server) = serve_bridge(&dir, Role::All).await;
    println!(
        "ingest decay: {total} requests into one `serve` (with its worker), {SLICES} slices of {slice}"
    );
    measure(&url, "warm", 2_000).await;
    let mut slices = Vec::new();
    for i in 0..SLICES {
        let report = measure(&url, &format!("slice{i}"), slice).await;
        print(
            &format!("slice {} ({} events stored before)", i + 1, i * slice),
            &report,
        );
        slices.push(report.rps);
    }
    println!(
        "first slice {:.0} req/s, last slice {:.0} req/s: {:+.1} % (drift and decay together)",
        slices[0],
        slices[SLICES - 1],
        (slices[SLICES - 1] / slices[0] - 1.0) * 100.0
    );
    let (mut fresh, mut full) = (Vec::new(), Vec::new());
    for turn in 0..TURNS {
        let fresh_dir = tempfile::tempdir().unwrap();
        let (fresh_url, fresh_server) = serve_bridge(&fresh_dir, Role::All).await;
        measure(&fresh_url, "warm", 2_000).await;
        let report = measure(&fresh_url, &format!("fresh{turn}"), slice).await;
        print(
            &format!("turn {}: fresh store (0 stored)", turn + 1),
            &report,
        );
        fresh.push(report.rps);
        fresh_server.cancel();
        let stored = total + turn * slice;
        let report = measure(&url, &format!("full{turn}"), slice).await;
        print(
            &format!("turn {}: full store ({stored} stored)", turn + 1),
            &report,
        );
        full.push(report.rps);
    }
    let (fresh, full) = (median(fresh), median(full));
    println!(
        "decay: full store {full:.0} req/s against a fresh store {fresh:.0} req/s (medians of \
         {TURNS} turns): {:+.1} % (target: no worse than -20 %)",
        (full / fresh - 1.0) * 100.0
    );
    server.cancel();
}

fn median(mut figures: Vec<f64>) -> f64 {
    figures.sort_by(f64::total_cmp);
    figures[figures.len() / 2]
}

fn main() {
    if let Ok(url) = std::env::var(LOAD_URL) {
        return generate_load(url);
    }
    let decay_events = env_usize("BENCH_DECAY_EVENTS", 0);
    if decay_events > 0 {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        return runtime.block_on(decay(decay_events));
    }
    let count = env_usize("BENCH_REQUESTS", 20_000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 64);
    let turns = env_usize("BENCH_TURNS", 3).max(1);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (api_dir, all_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let bare_url = serve_bare().await;
        let (api_url, api) = serve_bridge(&api_dir, Role::Api).await;
        let (all_url, all) = serve_bridge(&all_dir, Role::All).await;
        println!(
            "ingest benchmark: {count} requests per target and turn, {turns} turns, concurrency \
             {concurrency}, 1 KiB signed bodies, unique ids, load generator in its own process"
        );
        let targets = [
            ("baseline: bare axum 202", &bare_url),
            ("bridge: serve --role api", &api_url),
            ("bridge: serve (with its worker)", &all_url),
        ];
        // Warm up (connections, page cache, statement cache) before measuring.
        for (i, (_, url)) in targets.iter().enumerate() {
            measure(url, &format!("warm{i}"), 2_000).await;
        }
        let mut reports: Vec<Vec<Report>> = targets.iter().map(|_| Vec::new()).collect();
        for turn in 0..turns {
            for k in 0..targets.len() {
                let i = (turn + k) % targets.len();
                let (name, url) = targets[i];
                let report = measure(url, &format!("run{turn}_{i}"), count).await;
                print(&format!("turn {}: {name}", turn + 1), &report);
                reports[i].push(report);
            }
        }
        let rps = |i: usize| median(reports[i].iter().map(|r| r.rps).collect());
        let (bare, api_role, serve) = (rps(0), rps(1), rps(2));
        let worst_p99 = reports[1..]
            .iter()
            .flatten()
            .map(|r| r.p99)
            .max()
            .unwrap_or_default();
        println!(
            "medians of {turns} turns: bare {bare:.0} req/s, api {api_role:.0} req/s, serve \
             {serve:.0} req/s; highest bridge p99 {:.2} ms (target < 20 ms)",
            worst_p99.as_secs_f64() * 1e3
        );
        println!(
            "ratio api/bare: {:.2} (target >= 0.5)   serve/bare: {:.2} (target >= 0.3)",
            api_role / bare,
            serve / bare
        );
        api.cancel();
        all.cancel();
    });
}
