//! Robustness harness: both simulators in-process, the bridge as the real binary (one or more
//! processes on one store), a burst of launch-ready products, and checks on the end state of the
//! store and of the OpenText simulator.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;
use xecm_bridge::sim::SimHandle;
use xecm_bridge::sim::allportal::{self as ap_sim, AllportalSimOptions, SeedObject, ids};
use xecm_bridge::sim::opentext::{self as ot_sim, OpentextSimOptions};
use xecm_bridge::store::{EventFilter, Page};

use super::{ADMIN_TOKEN, ALLPORTAL_SECRET, OPENTEXT_SECRET, signed};

const API_KEY: &str = "sim-allportal-api-key";
/// Upper bound for any wait in these tests; never a timing assertion, only a hang guard.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The two simulators, seeded with the sample catalogue plus `products` launch-ready products.
pub struct Sims {
    pub ap: SimHandle,
    pub ot: SimHandle,
    pub products: Vec<String>,
}

/// Product `n` of the burst: a stable id in the sample's id style.
pub fn product_id(n: usize) -> String {
    format!("b1000000-0000-4000-8000-{n:012}")
}

fn article_number(n: usize) -> String {
    format!("9{n:04}")
}

fn burst_product(n: usize) -> SeedObject {
    let names = |en: String, de: String| {
        json!([
            { "value": en, "dimensions": { "locale": "en_US" } },
            { "value": de, "dimensions": { "locale": "de_DE" } }
        ])
    };
    let v = |value: Value| json!([{ "value": value, "dimensions": null }]);
    let fields = json!({
        "name": names(format!("Burst pump {n}"), format!("Stoßpumpe {n}")),
        "description": names(format!("Burst pump {n} for tests"), format!("Stoßpumpe {n}")),
        "article_number": v(json!(article_number(n))),
        "status": v(json!("launch_ready")),
        "packaging": v(json!("carton")),
        "compliance_class": v(json!("CE")),
        "claims": v(json!(["energy efficient"])),
        "family": v(json!(ids::FAMILY_PUMPS)),
        "assets": v(json!([ids::FILE_A100_DATASHEET])),
    });
    SeedObject {
        module: "product".into(),
        id: product_id(n),
        fields: fields.as_object().cloned().unwrap_or_default(),
        media: None,
    }
}

impl Sims {
    /// Starts both simulators. `ot_latency_ms` slows every OpenText call down so that a burst
    /// takes long enough to be interrupted in the middle.
    pub async fn start(products: usize, ot_latency_ms: u64) -> Sims {
        let mut catalogue = ap_sim::sample_catalogue();
        catalogue.objects.extend((0..products).map(burst_product));
        let ap = ap_sim::spawn(
            "127.0.0.1:0".parse().unwrap(),
            AllportalSimOptions {
                api_key: API_KEY.into(),
                webhook_secret: Some(ALLPORTAL_SECRET.into()),
                seed: Some(catalogue),
                ..AllportalSimOptions::default()
            },
        )
        .await
        .expect("4ALLPORTAL simulator");
        let ot = ot_sim::spawn(
            "127.0.0.1:0".parse().unwrap(),
            OpentextSimOptions {
                callback_secret: Some(OPENTEXT_SECRET.into()),
                ..OpentextSimOptions::default()
            },
        )
        .await
        .expect("OpenText simulator");
        ot.set_faults(xecm_bridge::sim::FaultSettings {
            latency_ms: ot_latency_ms,
            ..Default::default()
        });
        Sims {
            ap,
            ot,
            products: (0..products).map(product_id).collect(),
        }
    }

    /// Workspaces in the OpenText simulator registered for a burst product.
    pub fn launched(&self) -> usize {
        let nodes = Nodes::of(&self.ot);
        self.products
            .iter()
            .filter(|id| !nodes.workspaces(id).is_empty())
            .count()
    }
}

/// The `[flows]` sections of the example configuration, limited to `names`.
pub fn example_flows(names: &[&str]) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");
    let text = std::fs::read_to_string(path).expect("example config");
    let doc: toml::Table = text.parse().expect("example config is TOML");
    let chosen: toml::Table = doc["flows"]
        .as_table()
        .expect("[flows]")
        .clone()
        .into_iter()
        .filter(|(name, _)| names.contains(&name.as_str()))
        .collect();
    let mut root = toml::Table::new();
    root.insert("flows".into(), toml::Value::Table(chosen));
    toml::to_string(&root).expect("renders")
}

/// A configuration file for one bridge process: short timeouts, leases and retries so the tests
/// stay fast, a sensitive OpenText circuit breaker, and the example `launch` mapping.
pub fn write_config(dir: &Path, name: &str, port: u16, store_url: &str, sims: &Sims) -> PathBuf {
    write_config_for(dir, name, port, store_url, sims, &["launch"], FAST_WORKER)
}

/// Leases and retries of a few seconds, so that tests which do not measure them stay fast.
pub const FAST_WORKER: &str =
    "lease_secs = 3\nlease_renew_secs = 1\nretry_schedule_secs = [1, 1, 2, 2, 3, 3]";

/// Like [`write_config`] with the example mappings of `flows` and `worker` as the `[worker]`
/// keys this test chooses (leases, retry schedule; see the keys set here, not to repeat).
pub fn write_config_for(
    dir: &Path,
    name: &str,
    port: u16,
    store_url: &str,
    sims: &Sims,
    flows: &[&str],
    worker: &str,
) -> PathBuf {
    let transport = r#"connect_timeout_secs = 1
request_timeout_secs = 2
max_retries = 1
backoff_base_ms = 50
backoff_max_ms = 200"#;
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
shutdown_timeout_secs = 2
drain_secs = 0
[store]
url = "{store_url}"
max_connections = 4
[admin]
token = "{ADMIN_TOKEN}"
[sources.allportal]
secrets = ["{ALLPORTAL_SECRET}"]
[sources.opentext]
secrets = ["{OPENTEXT_SECRET}"]
[allportal]
base_url = "{ap}"
api_key = "{API_KEY}"
[allportal.transport]
{transport}
[opentext]
base_url = "{ot}"
username = "{user}"
password = "{password}"
[opentext.transport]
{transport}
circuit_min_requests = 5
circuit_window_secs = 10
circuit_open_secs = 1
[worker]
concurrency = 4
poll_interval_ms = 50
reconcile_allportal_interval_secs = 0
reconcile_opentext_interval_secs = 0
metrics_interval_secs = 1
shutdown_grace_secs = 1
{worker}
# Counted tests: no synthetic resyncs from the drift audit.
[audit]
enabled = false
{flows}
"#,
        ap = sims.ap.base_url(),
        ot = sims.ot.base_url(),
        user = ot_sim::SAMPLE_ADMIN_USER,
        password = ot_sim::SAMPLE_ADMIN_PASSWORD,
        flows = example_flows(flows),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).expect("write config");
    path
}

/// A bridge on its own SQLite store in a fresh directory: the configuration written, a free
/// port chosen, nothing started.
pub struct SqliteBridge {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub config: PathBuf,
}

impl SqliteBridge {
    pub fn configure(sims: &Sims, flows: &[&str], worker: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let store = format!("sqlite://{}/bridge.db", dir.path().display());
        let config = write_config_for(dir.path(), "bridge", port, &store, sims, flows, worker);
        Self { dir, port, config }
    }

    pub async fn start(&self) -> BridgeProcess {
        BridgeProcess::start(&self.config, self.port).await
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One bridge process (`xecm-bridge serve`), its log written next to its configuration.
pub struct BridgeProcess {
    pub base: String,
    pub config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    http: reqwest::Client,
    /// Environment of the next start only (e.g. a crash point).
    env: Vec<(String, String)>,
}

impl BridgeProcess {
    /// Starts the real binary and waits until it is ready.
    pub async fn start(config: &Path, port: u16) -> BridgeProcess {
        Self::start_with_env(config, port, &[]).await
    }

    /// Starts the real binary with `env` added to its environment (this start only).
    pub async fn start_with_env(config: &Path, port: u16, env: &[(&str, &str)]) -> BridgeProcess {
        let log = config.with_extension("log");
        let mut bridge = BridgeProcess {
            base: format!("http://127.0.0.1:{port}"),
            config: config.to_path_buf(),
            log,
            child: None,
            http: reqwest::Client::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        bridge.spawn();
        bridge.wait_ready().await;
        bridge
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_xecm-bridge"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .envs(std::mem::take(&mut self.env))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start the bridge");
        self.child = Some(child);
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.fail(&format!("the bridge exited at start: {status}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.fail("the bridge did not become ready");
    }

    /// SIGKILL: no shutdown, no lease release, no flush.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    /// Whether the process has exited (e.g. aborted at a crash point).
    pub fn has_exited(&mut self) -> bool {
        let exited = self
            .child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some());
        if exited {
            self.child = None;
        }
        exited
    }

    /// The admin status, or `None` when the process does not answer (it crashed).
    pub async fn try_status(&self) -> Option<Value> {
        let response = self
            .http
            .get(format!("{}/api/v1/status", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    /// Starts the process again on the same configuration (and store).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready().await;
    }

    /// `GET /api/v1/status` with the admin token.
    pub async fn status(&self) -> Value {
        self.http
            .get(format!("{}/api/v1/status", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("status request")
            .json()
            .await
            .expect("status body")
    }

    /// Panics with the tail of this process's log, which is what explains most failures.
    pub fn fail(&self, message: &str) -> ! {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!("{message}\n--- bridge log (tail) ---\n{}", tail.join("\n"));
    }

    /// Sends one signed change webhook for `product`, as 4ALLPORTAL would, under `delivery_id`.
    pub async fn webhook(&self, delivery_id: &str, product: &str) {
        let body = json!({
            "event": "moduleobject_modify",
            "module": "product",
            "object_id": product,
            "mod_time": "2025-01-01T00:00:00Z",
        })
        .to_string()
        .into_bytes();
        let url = format!("{}/webhooks/allportal", self.base);
        let response = signed(&self.http, &url, ALLPORTAL_SECRET, delivery_id, &body)
            .send()
            .await
            .expect("webhook");
        assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    }

    /// Waits until no event and no job is left, and fails on dead letters.
    pub async fn settle(&self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let status = self.status().await;
            let backlog = &status["backlog"];
            if backlog["events"] == 0 && backlog["jobs"] == 0 {
                if status["dead_letters"] != 0 {
                    self.fail(&format!("dead letters: {status}"));
                }
                return;
            }
            if Instant::now() > deadline {
                self.fail(&format!("the backlog did not drain: {status}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The burst: two distinct change events per product, each delivered twice (a redelivery with
/// the same webhook id), spread over the given bridges in turn.
pub async fn send_burst(bridges: &[&BridgeProcess], products: &[String]) {
    let mut turn = 0;
    for round in 0..2 {
        for (n, product) in products.iter().enumerate() {
            let delivery = format!("msg_{n}_{round}");
            for _ in 0..2 {
                bridges[turn % bridges.len()]
                    .webhook(&delivery, product)
                    .await;
                turn += 1;
            }
        }
    }
}

/// Every stored event is finished (`done` or `ignored`): none pending, routed or dead.
pub async fn assert_all_events_final(config: &Path, expected: usize) {
    let text = std::fs::read_to_string(config).expect("config");
    let settings = xecm_bridge::config::Settings::from_toml(&[&text]).expect("settings");
    let store = xecm_bridge::store::open(&settings.store)
        .await
        .expect("open store");
    let mut events = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_events(&EventFilter::default(), &Page { after, limit: 1000 })
            .await
            .expect("events");
        events.extend(page.events);
        match page.next_cursor {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    store.close().await;
    assert_eq!(events.len(), expected, "one stored event per delivery id");
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    for event in &events {
        *states.entry(event.state.clone()).or_default() += 1;
    }
    assert!(
        states.keys().all(|s| s == "done" || s == "ignored"),
        "event states: {states:?}"
    );
}

/// The OpenText simulator's nodes.
pub struct Nodes(Vec<Value>);

impl Nodes {
    pub fn of(ot: &SimHandle) -> Self {
        Nodes(ot.state()["nodes"].as_array().cloned().unwrap_or_default())
    }

    /// Workspaces registered for product `bo_id` (launch flow, bo_type `product`).
    pub fn workspaces(&self, bo_id: &str) -> Vec<&Value> {
        self.0
            .iter()
            .filter(|n| {
                n["workspace"]["references"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r["bo_type"] == "product" && r["bo_id"] == bo_id)
            })
            .collect()
    }

    /// Workspaces registered with business object type `bo_type`.
    pub fn workspaces_of(&self, bo_type: &str) -> Vec<&Value> {
        self.0
            .iter()
            .filter(|n| {
                n["workspace"]["references"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r["bo_type"] == bo_type)
            })
            .collect()
    }

    /// Ids of the workspaces of `bo_type`.
    pub fn workspace_ids(&self, bo_type: &str) -> Vec<i64> {
        self.workspaces_of(bo_type)
            .iter()
            .filter_map(|w| w["id"].as_i64())
            .collect()
    }

    /// Every node below `root`.
    pub fn descendants(&self, root: &Value) -> Vec<&Value> {
        let mut found = Vec::new();
        let mut queue = vec![root];
        while let Some(node) = queue.pop() {
            for child in self.children(node) {
                found.push(child);
                queue.push(child);
            }
        }
        found
    }

    /// How many nodes under `node`'s parent carry its name (1: no duplicate).
    pub fn same_name_siblings(&self, node: &Value) -> usize {
        self.0
            .iter()
            .filter(|n| n["parent_id"] == node["parent_id"] && n["name"] == node["name"])
            .count()
    }

    fn children(&self, parent: &Value) -> Vec<&Value> {
        self.0
            .iter()
            .filter(|n| n["parent_id"] == parent["id"])
            .collect()
    }

    /// Names under `parent` with how many nodes carry each (more than one is a duplicate).
    fn child_names(&self, parent: &Value) -> BTreeMap<String, usize> {
        let mut names = BTreeMap::new();
        for child in self.children(parent) {
            *names
                .entry(child["name"].as_str().unwrap_or_default().to_string())
                .or_default() += 1;
        }
        names
    }

    fn child(&self, parent: &Value, name: &str) -> &Value {
        self.children(parent)
            .into_iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("no `{name}` under {}", parent["name"]))
    }
}

fn versions(node: &Value) -> usize {
    node["versions"].as_array().map(Vec::len).unwrap_or(0)
}

/// Exactly-once at the effect level: per product one workspace, no folder or document twice,
/// and every document in its first version (the data never changed, so any second version
/// would be a repeated upload).
pub fn assert_exactly_once(sims: &Sims) {
    let nodes = Nodes::of(&sims.ot);
    let mut problems = Vec::new();
    for (n, product) in sims.products.iter().enumerate() {
        let workspaces = nodes.workspaces(product);
        if workspaces.len() != 1 {
            problems.push(format!("{product}: {} workspaces", workspaces.len()));
            continue;
        }
        let ws = workspaces[0];
        let duplicated: Vec<_> = nodes
            .child_names(ws)
            .into_iter()
            .filter(|(_, count)| *count > 1)
            .collect();
        if !duplicated.is_empty() {
            problems.push(format!("{product}: duplicate folders {duplicated:?}"));
        }
        let number = article_number(n);
        let expected = [
            (
                "Master Data",
                vec![
                    format!("{number} master data.html"),
                    format!("{number} master data.json"),
                ],
            ),
            (
                "Technical Specifications",
                vec!["pump-a100-datasheet.pdf".to_string()],
            ),
        ];
        for (folder, documents) in expected {
            let folder = nodes.child(ws, folder);
            let names = nodes.child_names(folder);
            let wanted: BTreeMap<String, usize> =
                documents.iter().map(|d| (d.clone(), 1)).collect();
            if names != wanted {
                problems.push(format!("{product}: {} holds {names:?}", folder["name"]));
            }
            for document in &documents {
                let node = nodes.child(folder, document);
                if versions(node) != 1 {
                    problems.push(format!(
                        "{product}: {document} has {} versions",
                        versions(node)
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "duplicate or missing effects: {problems:#?}"
    );
}

/// One claim's attempts on one business object: the jobs of a coalesced claim share owner and
/// start, so they form one unit of work.
#[derive(Debug, Clone)]
pub struct WorkUnit {
    pub key: String,
    pub owner: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

/// Groups attempt rows `(flow, object_key, owner, started_at, finished_at)` into units.
pub fn work_units(rows: Vec<(String, String, String, i64, Option<i64>)>) -> Vec<WorkUnit> {
    let mut units: HashMap<(String, String, i64), WorkUnit> = HashMap::new();
    for (flow, key, owner, started_at, finished_at) in rows {
        let key = format!("{flow} {key}");
        let unit = units
            .entry((key.clone(), owner.clone(), started_at))
            .or_insert(WorkUnit {
                key,
                owner,
                started_at,
                finished_at,
            });
        unit.finished_at = match (unit.finished_at, finished_at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
    units.into_values().collect()
}

/// Pairs of units of the same business object whose time spans overlap.
pub fn overlapping(units: &[WorkUnit]) -> Vec<(WorkUnit, WorkUnit)> {
    let mut by_key: BTreeMap<&str, Vec<&WorkUnit>> = BTreeMap::new();
    for unit in units {
        by_key.entry(&unit.key).or_default().push(unit);
    }
    let mut overlaps = Vec::new();
    for list in by_key.values_mut() {
        list.sort_by_key(|u| u.started_at);
        for pair in list.windows(2) {
            let end = pair[0].finished_at.unwrap_or(i64::MAX);
            if end > pair[1].started_at {
                overlaps.push((pair[0].clone(), pair[1].clone()));
            }
        }
    }
    overlaps
}

/// A PostgreSQL database of its own for one test, created from `XECM_TEST_POSTGRES_URL`.
pub struct FreshPostgres {
    admin: String,
    name: String,
    pub url: String,
}

impl FreshPostgres {
    /// `None` (skip) without `XECM_TEST_POSTGRES_URL`; with `CI` set a missing URL fails.
    pub async fn create() -> Option<FreshPostgres> {
        use sqlx::Connection as _;
        let Ok(admin) = std::env::var(super::PG_ENV) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "{} must be set in CI",
                super::PG_ENV
            );
            eprintln!("skipping: {} not set", super::PG_ENV);
            return None;
        };
        let name = format!("xecm_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("connect to the PostgreSQL server");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        conn.close().await.ok();
        let mut url = url::Url::parse(&admin).expect("PostgreSQL URL");
        url.set_path(&format!("/{name}"));
        Some(FreshPostgres {
            admin,
            name,
            url: url.to_string(),
        })
    }

    /// Every attempt as `(flow, object_key, owner, started_at, finished_at)`.
    pub async fn attempts(&self) -> Vec<(String, String, String, i64, Option<i64>)> {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&self.url)
            .await
            .expect("connect to the test database");
        let rows = sqlx::query_as(
            "SELECT j.flow, j.object_key, a.owner, a.started_at, a.finished_at
             FROM attempts a JOIN jobs j ON j.id = a.job_id",
        )
        .fetch_all(&mut conn)
        .await
        .expect("attempts");
        conn.close().await.ok();
        rows
    }

    /// Drops the database; `FORCE` ends sessions of the killed processes the server has not
    /// noticed yet, and a few tries cover an autovacuum worker that holds it briefly.
    pub async fn drop(self) {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&self.admin)
            .await
            .expect("connect");
        for _ in 0..50 {
            let dropped = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn)
            .await;
            if dropped.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot drop test database {}", self.name);
    }
}
