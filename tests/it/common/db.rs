//! Shared test harness: one fresh database per test (SQLite file or PostgreSQL database), a
//! scriptable test flow, and helpers to wait for eventual states.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Connection;
use xecm_bridge::store::StoreConfig;
use xecm_bridge::store::{self, NewEvent, Source, Store, StoredEvent};
use xecm_bridge::worker::{Flow, FlowOutcome};

pub const PG_ENV: &str = "XECM_TEST_POSTGRES_URL";

/// Runs each listed `async fn name(db: &TestDb)` against SQLite and PostgreSQL.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = $crate::common::TestDb::sqlite(true).await;
                    super::$name(&db).await;
                    db.teardown().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(db) = $crate::common::TestDb::postgres(true).await else { return };
                    super::$name(&db).await;
                    db.teardown().await;
                }
            )*
        }
    };
}

/// A database of its own for one test.
pub struct TestDb {
    pub store: Arc<dyn Store>,
    url: String,
    others: Mutex<Vec<Arc<dyn Store>>>,
    pg_admin: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

/// The store settings of the test databases.
pub fn config(url: &str) -> StoreConfig {
    StoreConfig {
        url: url.to_string(),
        max_connections: 5,
        group_commit_max_events: 512,
        migrate_on_start: false,
        max_bytes: 0,
        min_free_bytes: 0,
    }
}

/// Logs to the test output (shown for failing tests); `RUST_LOG` filters.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,xecm_bridge=info".into()),
        )
        .with_test_writer()
        .try_init();
}

impl TestDb {
    /// The database's URL, to open another store on it.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn sqlite(migrate: bool) -> TestDb {
        init_tracing();
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("bridge.db").display());
        let store = store::open(&config(&url)).await.expect("open sqlite");
        if migrate {
            store.migrate().await.expect("migrate");
        }
        TestDb {
            store,
            url,
            others: Mutex::new(Vec::new()),
            pg_admin: None,
            _dir: Some(dir),
        }
    }

    /// A fresh PostgreSQL database, or `None` (skip) when `XECM_TEST_POSTGRES_URL` is not set;
    /// with `CI` set a missing URL fails the test.
    pub async fn postgres(migrate: bool) -> Option<TestDb> {
        init_tracing();
        let Ok(admin) = std::env::var(PG_ENV) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "{PG_ENV} must be set in CI"
            );
            eprintln!("skipping PostgreSQL: {PG_ENV} not set");
            return None;
        };
        let name = format!("xecm_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("connect to XECM_TEST_POSTGRES_URL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        conn.close().await.ok();
        let mut url = url::Url::parse(&admin).expect("postgres URL");
        url.set_path(&format!("/{name}"));
        let url = url.to_string();
        let store = store::open(&config(&url)).await.expect("open postgres");
        if migrate {
            store.migrate().await.expect("migrate");
        }
        Some(TestDb {
            store,
            url,
            others: Mutex::new(Vec::new()),
            pg_admin: Some((admin, name)),
            _dir: None,
        })
    }

    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    /// Another store (own connection pool) on the same database, like a second process.
    pub async fn open_another(&self) -> Arc<dyn Store> {
        let other = store::open(&config(&self.url)).await.expect("open again");
        self.others.lock().unwrap().push(other.clone());
        other
    }

    pub async fn teardown(self) {
        let others = std::mem::take(&mut *self.others.lock().unwrap());
        for other in others {
            other.close().await;
        }
        self.store.close().await;
        if let Some((admin, name)) = self.pg_admin {
            drop_database(&admin, &name).await;
        }
    }
}

/// Drops a test database. `FORCE` ends sessions a closed pool has not finished closing yet;
/// an autovacuum worker (another role) cannot be ended that way, so this tries a few times.
async fn drop_database(admin: &str, name: &str) {
    let mut conn = sqlx::PgConnection::connect(admin).await.expect("connect");
    let mut last_error = None;
    for _ in 0..50 {
        match sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await
        {
            Ok(_) => return,
            Err(error) => last_error = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sessions: Vec<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT usename::text, backend_type, query FROM pg_stat_activity WHERE datname = $1",
    )
    .bind(name)
    .fetch_all(&mut conn)
    .await
    .unwrap_or_default();
    panic!("cannot drop test database {name}: {last_error:?}; sessions: {sessions:?}");
}

/// An `allportal` event about `key` (`<module>/<id>`).
pub fn event(source_event_id: &str, key: &str, received_at: i64) -> NewEvent {
    let (module, id) = key.split_once('/').expect("module/id");
    let (raw_body, span) =
        NewEvent::synthetic_body(&serde_json::json!({ "module": module, "object_id": id }));
    NewEvent {
        source: Source::Allportal,
        source_event_id: source_event_id.to_string(),
        kind: "moduleobject_modify".into(),
        module: Some(module.into()),
        object_id: Some(id.into()),
        object_key: Some(key.into()),
        raw_body,
        span,
        headers: serde_json::json!({ "webhook-id": source_event_id }),
        received_at,
        routing: None,
        dead_letter: None,
    }
}

/// Inserts events and returns their ids (all must be new).
pub async fn insert(store: &dyn Store, events: Vec<NewEvent>) -> Vec<String> {
    store
        .insert_events(events)
        .await
        .expect("insert")
        .into_iter()
        .map(|o| match o {
            store::InsertOutcome::Accepted(id) => id,
            other => panic!("expected a new event, got {other:?}"),
        })
        .collect()
}

/// Polls `check` until it returns `Some`, failing after a generous deadline. Only the end
/// state is asserted, never how long it took.
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the event has reached `state`; returns it.
pub async fn wait_for_state(store: &dyn Store, id: &str, state: &str) -> StoredEvent {
    let detail = store.event_detail(id).await.ok().flatten();
    let what = format!("event {id} in state {state} (before waiting: {detail:?})");
    wait_for(&what, || async {
        store
            .get_event(id)
            .await
            .expect("get")
            .filter(|e| e.state == state)
    })
    .await
}

/// One call of the test flow.
#[derive(Debug, Clone)]
pub struct Call {
    pub key: String,
    pub event_ids: Vec<String>,
    pub outcome: FlowOutcome,
}

/// A flow that records its calls, detects overlapping runs per key and plays scripted
/// outcomes (then succeeds).
pub struct TestFlow {
    name: String,
    module: String,
    script: Mutex<VecDeque<FlowOutcome>>,
    default: Mutex<FlowOutcome>,
    delay: Duration,
    block: bool,
    /// The objects being reconciled now; shared between flows by [`TestFlow::same_objects_as`].
    running: Arc<Mutex<HashSet<String>>>,
    pub overlaps: AtomicUsize,
    pub started: AtomicUsize,
    calls: Mutex<Vec<Call>>,
}

impl TestFlow {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            module: "product".into(),
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(FlowOutcome::Success {
                summary: serde_json::json!({ "changed": true }),
            }),
            delay: Duration::ZERO,
            block: false,
            running: Arc::new(Mutex::new(HashSet::new())),
            overlaps: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// Wants events of this module only.
    pub fn module(mut self, module: &str) -> Self {
        self.module = module.into();
        self
    }

    /// Each run takes this long (to widen the window for overlaps).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Counts an overlap also when `other` reconciles the same object at the same time.
    pub fn same_objects_as(mut self, other: &TestFlow) -> Self {
        self.running = other.running.clone();
        self
    }

    /// Runs never finish (for shutdown tests).
    pub fn blocking(mut self) -> Self {
        self.block = true;
        self
    }

    /// Outcomes of the next runs, in order.
    pub fn then(self, outcome: FlowOutcome) -> Self {
        self.script.lock().unwrap().push_back(outcome);
        self
    }

    /// The outcome once the script is used up.
    pub fn always(self, outcome: FlowOutcome) -> Self {
        *self.default.lock().unwrap() = outcome;
        self
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// How many runs saw each event (by id).
    pub fn runs_per_event(&self) -> HashMap<String, usize> {
        let mut runs = HashMap::new();
        for call in self.calls() {
            for id in call.event_ids {
                *runs.entry(id).or_insert(0) += 1;
            }
        }
        runs
    }
}

#[async_trait]
impl Flow for TestFlow {
    fn name(&self) -> &str {
        &self.name
    }

    fn wants(&self, event: &StoredEvent) -> bool {
        event.module.as_deref() == Some(self.module.as_str())
    }

    async fn reconcile(&self, object_key: &str, events: &[StoredEvent]) -> FlowOutcome {
        self.started.fetch_add(1, Ordering::SeqCst);
        if !self.running.lock().unwrap().insert(object_key.to_string()) {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        if self.block {
            std::future::pending::<()>().await;
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let outcome = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| self.default.lock().unwrap().clone());
        self.calls.lock().unwrap().push(Call {
            key: object_key.to_string(),
            event_ids: events.iter().map(|e| e.id.clone()).collect(),
            outcome: outcome.clone(),
        });
        self.running.lock().unwrap().remove(object_key);
        outcome
    }
}
