//! The PostgreSQL store, for several replicas sharing one database.
//!
//! The store's logic is shared with SQLite (see [`sql`](self::sql)); this file holds what
//! PostgreSQL does differently. Claims lock candidate jobs with `FOR UPDATE SKIP LOCKED`; the
//! per-key guard that holds across processes is a row in `leases` (flow, object key) taken with
//! an upsert that only succeeds when the previous lease has expired. Inserts `NOTIFY
//! xecm_events` in their transaction; every replica `LISTEN`s and wakes its worker, with
//! polling as the backstop.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::StoreConfig;
use super::guard::DiskGuard;
use super::{InsertOutcome, NewEvent, StoreError};

// The query code in `sql.rs` is compiled once per dialect; its `super` is this module.
#[allow(clippy::duplicate_mod)]
#[path = "sql.rs"]
mod sql;

type Db = Postgres;
type Backend = PgStore;
const BACKEND: &str = "postgres";
/// Replicas claim concurrently: each skips the rows another has locked.
const SKIP_LOCKED: &str = " FOR UPDATE SKIP LOCKED";
const FOR_UPDATE: &str = " FOR UPDATE";
const EMPTY_BYTES: &str = "''::bytea";
const USED_BYTES: &str = "SELECT pg_database_size(current_database())";
/// Serializes replicas claiming work for the same business object (any flow) until the claim
/// commits; the lease rows alone cannot, since each flow has its own.
const LOCK_OBJECT: Option<&str> = Some("SELECT pg_advisory_xact_lock(hashtext($1))");

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// The channel on which new events are announced.
pub const CHANNEL: &str = "xecm_events";

pub struct PgStore {
    pool: PgPool,
    wakeup: Arc<Notify>,
    listener: Mutex<Option<JoinHandle<()>>>,
    listen_pool: PgPool,
    guard: DiskGuard,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    pub async fn open(cfg: &StoreConfig) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(&cfg.url)
            .map_err(|e| StoreError::Config(format!("`store.url`: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(cfg.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        // LISTEN holds its connection for good: give it its own, outside the work pool.
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(options);
        let wakeup = Arc::new(Notify::new());
        let listener = tokio::spawn(listen(listen_pool.clone(), wakeup.clone()));
        Ok(Self {
            pool,
            wakeup,
            listener: Mutex::new(Some(listener)),
            listen_pool,
            guard: DiskGuard::new(cfg, None),
        })
    }

    /// The connection pool, for tests and tools.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A write transaction (PostgreSQL needs no process-local serialisation).
    async fn begin_write(&self) -> Result<((), Transaction<'static, Postgres>), StoreError> {
        Ok(((), self.pool.begin().await?))
    }

    /// Announces new work to every replica as the transaction commits.
    async fn commit_announced(
        &self,
        mut tx: Transaction<'static, Postgres>,
    ) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn insert(&self, events: Vec<NewEvent>) -> Result<Vec<InsertOutcome>, StoreError> {
        if self.pool.is_closed() {
            return Err(StoreError::Closed);
        }
        let mut tx = self.pool.begin().await?;
        let mut inserted = sql::insert_requests(&mut tx, &[&events]).await?;
        if inserted.new_work {
            self.commit_announced(tx).await?;
        } else {
            tx.commit().await?;
        }
        Ok(inserted.outcomes.remove(0))
    }

    async fn shutdown(&self) {
        let listener = self.listener.lock().expect("listener lock").take();
        if let Some(listener) = listener {
            listener.abort();
            let _ = listener.await;
        }
        self.listen_pool.close().await;
        self.pool.close().await;
    }
}

/// Turns `NOTIFY xecm_events` into local wake-ups. When LISTEN is unavailable (e.g. behind a
/// transaction-mode pooler) the worker still polls, so failures only cost latency.
async fn listen(pool: PgPool, wakeup: Arc<Notify>) {
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(CHANNEL).await {
                Ok(()) => loop {
                    match listener.try_recv().await {
                        Ok(Some(_)) => wakeup.notify_waiters(),
                        // Reconnected: notifications may have been missed meanwhile.
                        Ok(None) => wakeup.notify_waiters(),
                        Err(error) => {
                            tracing::warn!(%error, "LISTEN connection failed; polling only");
                            break;
                        }
                    }
                },
                Err(error) => tracing::warn!(%error, "LISTEN failed; polling only"),
            },
            Err(error) if pool.is_closed() => {
                tracing::debug!(%error, "store closed; listener stops");
                return;
            }
            Err(error) => tracing::warn!(%error, "cannot open LISTEN connection; polling only"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
