//! End-to-end throughput: events per second from the webhook's 202 to a final state, and the
//! bridge's CPU per event, on SQLite and PostgreSQL side by side. Each backend runs twice in the
//! same run: with a no-op flow (the pipeline's own cost: ingest, routing, leases, coalescing,
//! outcome records) and with a test flow that keeps one OpenText workspace per object through the
//! real client against the OpenText simulator (a separate process, so its CPU is not counted).
//!
//! `cargo bench --bench pipeline` (env: BENCH_EVENTS, default 2000; BENCH_OBJECTS, default 500;
//! XECM_TEST_POSTGRES_URL, default postgres://xecm:xecm@127.0.0.1:5432/xecm).

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::Connection as _;
use support::{SECRET, env_usize, process_cpu_secs, product_event, sign};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use xecm_bridge::clients::opentext::{BusinessObject, OpentextClient, WorkspaceCreate};
use xecm_bridge::config::Settings;
use xecm_bridge::server::{self, Role};
use xecm_bridge::sim::opentext::sample_ids;
use xecm_bridge::store::{StoredEvent, now_millis};
use xecm_bridge::worker::{Flow, FlowOutcome, Worker};

/// Keeps one workspace per business object: look it up by its key, create it when absent.
struct WorkspaceFlow {
    client: OpentextClient,
}

#[async_trait]
impl Flow for WorkspaceFlow {
    fn name(&self) -> &str {
        "bench"
    }

    fn wants(&self, event: &StoredEvent) -> bool {
        event.source == "allportal"
    }

    async fn reconcile(&self, object_key: &str, _events: &[StoredEvent]) -> FlowOutcome {
        let bo_id = object_key
            .rsplit('/')
            .next()
            .unwrap_or(object_key)
            .to_string();
        let bo = BusinessObject {
            ext_system_id: "4ALLPORTAL".into(),
            bo_type: "product".into(),
            bo_id: bo_id.clone(),
        };
        let outcome = async {
            if self.client.find_workspace(&bo).await?.is_some() {
                return Ok(serde_json::json!({"workspace": "unchanged"}));
            }
            let create = WorkspaceCreate {
                template_id: Some(sample_ids::template_of(sample_ids::TYPE_PRODUCT_LAUNCH)),
                parent_id: Some(sample_ids::WORKSPACES_FOLDER),
                name: format!("Bench {bo_id}"),
                ext_system_id: Some(bo.ext_system_id.clone()),
                bo_type: Some(bo.bo_type.clone()),
                bo_id: Some(bo.bo_id.clone()),
                ..WorkspaceCreate::default()
            };
            let id = self.client.create_workspace(&create).await?;
            Ok::<_, xecm_bridge::clients::UpstreamError>(serde_json::json!({"workspace": id}))
        }
        .await;
        match outcome {
            Ok(summary) => FlowOutcome::Success { summary },
            Err(e) if e.is_retryable() => FlowOutcome::Retryable {
                error: e.to_string(),
                retry_after: e.retry_after(),
            },
            Err(e) => FlowOutcome::Permanent {
                error: e.to_string(),
            },
        }
    }
}

/// The pipeline alone.
struct NoopFlow;

#[async_trait]
impl Flow for NoopFlow {
    fn name(&self) -> &str {
        "bench"
    }

    fn wants(&self, event: &StoredEvent) -> bool {
        event.source == "allportal"
    }

    async fn reconcile(&self, _object_key: &str, _events: &[StoredEvent]) -> FlowOutcome {
        FlowOutcome::Success {
            summary: serde_json::json!({}),
        }
    }
}

struct Figures {
    events_per_sec: f64,
    cpu_ms_per_event: f64,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_simulator(port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_xecm-bridge"))
        .args(["sim", "opentext", "--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the OpenText simulator")
}

async fn wait_for(url: &str) {
    for _ in 0..200 {
        if reqwest::get(url).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{url} did not come up");
}

async fn run(
    store_url: &str,
    ot_base: &str,
    with_upstream: bool,
    events: usize,
    objects: usize,
) -> Figures {
    let toml = format!(
        r#"
[store]
url = "{store_url}"
[log]
filter = "warn"
[sources.allportal]
secrets = ["{SECRET}"]
[sources.opentext]
secrets = ["{SECRET}"]
[opentext]
base_url = "{ot_base}"
username = "otadmin"
password = "sim-otadmin-password"
[worker]
concurrency = 16
poll_interval_ms = 20
reconcile_allportal_interval_secs = 0
reconcile_opentext_interval_secs = 0
"#
    );
    let settings = Settings::from_toml(&[&toml]).unwrap();
    let worker_cfg = settings.worker.clone();
    let state = server::build_state(settings).await.unwrap();
    let store = state.store.clone();
    let flow: Arc<dyn Flow> = if with_upstream {
        Arc::new(WorkspaceFlow {
            client: state.upstreams.opentext.clone(),
        })
    } else {
        Arc::new(NoopFlow)
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/webhooks/allportal",
        listener.local_addr().unwrap()
    );
    let shutdown = CancellationToken::new();
    let http = tokio::spawn(server::run(state, Role::Api, listener, shutdown.clone()));
    let worker = Worker::builder(store.clone(), vec![flow], worker_cfg).spawn(shutdown.clone());

    let prefix = uuid::Uuid::now_v7();
    let requests: Vec<_> = (0..events)
        .map(|i| {
            sign(
                format!("msg_{prefix}_{i}"),
                product_event(&format!("{prefix}-{}", i % objects), 512),
            )
        })
        .collect();
    let client = reqwest::Client::new();
    let cpu_before = process_cpu_secs();
    let started = Instant::now();
    let requests = Arc::new(requests);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..32 {
        let (client, url, requests, next) =
            (client.clone(), url.clone(), requests.clone(), next.clone());
        senders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(r) = requests.get(i) else { break };
                let status = r.send(&client, &url).send().await.unwrap().status();
                assert_eq!(status, reqwest::StatusCode::ACCEPTED);
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
    loop {
        let backlog = store.backlog(now_millis()).await.unwrap();
        if backlog.events == 0 {
            assert_eq!(backlog.dead_letters, 0, "no event may fail");
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = process_cpu_secs() - cpu_before;
    shutdown.cancel();
    worker.join().await;
    http.await.unwrap().unwrap();
    Figures {
        events_per_sec: events as f64 / elapsed,
        cpu_ms_per_event: cpu * 1000.0 / events as f64,
    }
}

/// A fresh PostgreSQL database for one run, or `None` when no server answers.
async fn fresh_postgres() -> Option<(String, String, String)> {
    let admin = std::env::var("XECM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://xecm:xecm@127.0.0.1:5432/xecm".into());
    let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
    let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .ok()?;
    let mut url = url::Url::parse(&admin).ok()?;
    url.set_path(&name);
    Some((admin, name, url.to_string()))
}

async fn drop_postgres(admin: &str, name: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(admin).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
    }
}

fn print(name: &str, f: &Figures) {
    println!(
        "{name:<44} {:>8.0} events/s   {:>6.3} ms CPU/event",
        f.events_per_sec, f.cpu_ms_per_event
    );
}

fn main() {
    let events = env_usize("BENCH_EVENTS", 2000);
    let objects = env_usize("BENCH_OBJECTS", 500).max(1);
    let port = free_port();
    let mut simulator = start_simulator(port);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let ot_base = format!("http://127.0.0.1:{port}/otcs/cs");
        wait_for(&format!("http://127.0.0.1:{port}/_sim/state")).await;
        println!("pipeline benchmark: {events} events over {objects} objects, 32 concurrent senders, worker concurrency 16");
        let dir = tempfile::tempdir().unwrap();
        for with_upstream in [false, true] {
            let label = if with_upstream { "workspace flow via OpenText sim" } else { "no-op flow (baseline)" };
            let db = format!("sqlite://{}/pipeline-{with_upstream}.db", dir.path().display());
            print(&format!("sqlite, {label}"), &run(&db, &ot_base, with_upstream, events, objects).await);
            match fresh_postgres().await {
                Some((admin, name, url)) => {
                    let figures = run(&url, &ot_base, with_upstream, events, objects).await;
                    print(&format!("postgres, {label}"), &figures);
                    drop_postgres(&admin, &name).await;
                }
                None => println!("postgres, {label}: skipped (no PostgreSQL server; set XECM_TEST_POSTGRES_URL)"),
            }
        }
    });
    let _ = simulator.kill();
    let _ = simulator.wait();
}
