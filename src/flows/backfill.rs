//! Backfill: brings the objects that existed before the bridge (or before a flow was
//! configured) in, by enumerating the 4ALLPORTAL objects a flow's trigger matches and
//! enqueueing one resync per object for that flow — the same synthetic event
//! `POST /api/v1/resync` and the dependency index enqueue, so the worker coalesces it with any
//! work already queued for the object and the reconcile runs once.
//!
//! Enumeration reads the trigger module page by page in id order with the 4APQL query
//! `id > '<cursor>' AND (<trigger conditions>) AND (<condition>)`; after each page the events
//! are stored, then the cursor (the page's last id) and the count, in that order. A process
//! killed between the two re-reads the page on resume; the events' ids
//! (`backfill:<id>:<object_key>`) make the second insert a no-op. A lease (renewed per page)
//! keeps one process enumerating; when its holder stops, a serving replica takes the backfill
//! over (see [`Backfiller::resume_orphans`]).
//!
//! The 4ALLPORTAL calls go through the shared transport, so `allportal.max_requests_per_sec`
//! limits them; `rate` (objects per second) limits how fast work is enqueued, and so how fast
//! OpenText is called, on top of `opentext.max_requests_per_sec`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::condition::Condition;
use super::mapping::{FlowMapping, FlowsConfig};
use crate::clients::UpstreamError;
use crate::clients::allportal::{AllportalClient, ListQuery};
use crate::store::{
    BackfillOutcomes, BackfillRecord, NewEvent, Store, StoreError, backfill_event, backfill_state,
    now_millis,
};

/// Objects read per 4ALLPORTAL page (and enqueued per store write).
pub const PAGE: u64 = 200;
/// How long a process holds a backfill without renewing (it renews with every page).
const LEASE: Duration = Duration::from_secs(10);
/// How often a serving replica looks for backfills whose holder stopped.
const ORPHAN_SCAN: Duration = Duration::from_secs(5);
/// The wait before the next page after a transient 4ALLPORTAL failure.
const RETRY_PAUSE: Duration = Duration::from_secs(5);
/// Objects listed by a dry run.
const SAMPLE: u64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("flow `{0}` is not configured (or not enabled)")]
    UnknownFlow(String),
    #[error("backfill `{0}` does not exist")]
    NotFound(String),
    #[error("`rate` must be at least {MIN_RATE} objects per second (one per 100 s), not {0}")]
    InvalidRate(f64),
    #[error("4ALLPORTAL: {0}")]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What to backfill.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackfillRequest {
    pub flow: String,
    /// A 4APQL condition on the trigger module's objects, e.g. `status = 'active'`.
    pub condition: Option<String>,
    /// Objects enqueued per second; `None`: as fast as 4ALLPORTAL answers.
    pub rate: Option<f64>,
}

/// The slowest backfill: one object per 100 s. A slower rate is no throttle but a stall (and
/// its pause per page would not fit a timer).
pub const MIN_RATE: f64 = 0.01;

impl BackfillRequest {
    fn validate(&self) -> Result<(), BackfillError> {
        match self.rate {
            Some(rate) if !(rate.is_finite() && rate >= MIN_RATE) => {
                Err(BackfillError::InvalidRate(rate))
            }
            _ => Ok(()),
        }
    }
}

/// What a dry run found.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DryRun {
    pub flow: String,
    pub module: String,
    pub query: Option<String>,
    /// 4ALLPORTAL's count of matching objects.
    pub total: u64,
    /// The first few object keys.
    pub sample: Vec<String>,
}

/// A backfill with what became of its events.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Progress {
    #[serde(flatten)]
    pub backfill: BackfillRecord,
    #[serde(flatten)]
    pub outcomes: BackfillOutcomes,
}

impl Progress {
    /// Enumerated, and no event waits any more.
    pub fn finished(&self) -> bool {
        self.backfill.state != backfill_state::RUNNING && self.outcomes.pending == 0
    }
}

/// The 4APQL form of the trigger conditions that have one: `equals` and `in` on a field
/// without locale or channel. The others (`present`, `changed`, dimensioned fields) are left to
/// the flow, which checks every condition on the re-read object anyway: the query only
/// narrows what is enqueued, it never decides.
pub fn trigger_query(conditions: &[Condition]) -> Option<String> {
    let parts: Vec<String> = conditions.iter().filter_map(condition_query).collect();
    (!parts.is_empty()).then(|| parts.join(" AND "))
}

fn condition_query(c: &Condition) -> Option<String> {
    let plain = c.locale.is_none()
        && c.channel.is_none()
        && !c.field.is_empty()
        && c.field
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
    if !plain {
        return None;
    }
    if let Some(value) = &c.equals {
        return Some(format!("{} = {}", c.field, literal(value)?));
    }
    let values: Vec<String> = c
        .one_of
        .as_ref()?
        .iter()
        .map(literal)
        .collect::<Option<_>>()?;
    (!values.is_empty()).then(|| format!("{} IN ({})", c.field, values.join(", ")))
}

/// A quoted 4APQL string (a quote is doubled); scalars only.
fn literal(value: &serde_json::Value) -> Option<String> {
    let text = match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    Some(format!("'{}'", text.replace('\'', "''")))
}

/// `a AND b` of the parts present, each parenthesized.
fn all_of(parts: &[Option<&str>]) -> Option<String> {
    let parts: Vec<String> = parts
        .iter()
        .flatten()
        .filter(|p| !p.trim().is_empty())
        .map(|p| format!("({p})"))
        .collect();
    (!parts.is_empty()).then(|| parts.join(" AND "))
}

/// Enumerates and enqueues backfills; cheap to clone.
#[derive(Clone)]
pub struct Backfiller {
    store: Arc<dyn Store>,
    allportal: AllportalClient,
    flows: FlowsConfig,
    /// Names this process in leases.
    owner: String,
}

impl std::fmt::Debug for Backfiller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backfiller")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl Backfiller {
    pub fn new(
        store: Arc<dyn Store>,
        allportal: AllportalClient,
        flows: FlowsConfig,
        owner: impl Into<String>,
    ) -> Self {
        Self {
            store,
            allportal,
            flows,
            owner: owner.into(),
        }
    }

    fn mapping(&self, flow: &str) -> Result<&FlowMapping, BackfillError> {
        self.flows
            .get(flow)
            .filter(|m| m.enabled)
            .ok_or_else(|| BackfillError::UnknownFlow(flow.to_string()))
    }

    /// The 4APQL query for a request: the trigger conditions that have a 4APQL form and the
    /// operator's condition.
    fn query(&self, request: &BackfillRequest) -> Result<Option<String>, BackfillError> {
        let mapping = self.mapping(&request.flow)?;
        let trigger = trigger_query(&mapping.trigger.conditions);
        Ok(all_of(&[trigger.as_deref(), request.condition.as_deref()]))
    }

    /// Counts the objects and lists a few, writing nothing.
    pub async fn dry_run(&self, request: &BackfillRequest) -> Result<DryRun, BackfillError> {
        request.validate()?;
        let module = self.mapping(&request.flow)?.trigger.module.clone();
        let query = self.query(request)?;
        let page = self
            .allportal
            .list_objects(
                &module,
                &ListQuery {
                    query: query.clone(),
                    fields: vec!["id".into()],
                    sort: vec!["id".into()],
                    limit: SAMPLE,
                    total_count: true,
                    ..ListQuery::default()
                },
            )
            .await?;
        Ok(DryRun {
            flow: request.flow.clone(),
            total: page.total_count.unwrap_or(page.result.len() as u64),
            sample: page
                .result
                .iter()
                .map(|o| format!("{module}/{}", o.id))
                .collect(),
            module,
            query,
        })
    }

    /// Starts a backfill, or resumes the running or cancelled one of the same flow and
    /// condition (from its cursor). Enumeration is [`Self::run`].
    pub async fn start(&self, request: &BackfillRequest) -> Result<BackfillRecord, BackfillError> {
        request.validate()?;
        let query = self.query(request)?;
        let now = now_millis();
        let condition = request.condition.as_deref();
        if let Some(existing) = self
            .store
            .resumable_backfill(&request.flow, condition)
            .await?
        {
            self.store
                .set_backfill_state(
                    &existing.id,
                    &[backfill_state::CANCELLED],
                    backfill_state::RUNNING,
                    None,
                    now,
                )
                .await?;
            tracing::info!(backfill = %existing.id, flow = %existing.flow, cursor = ?existing.cursor,
                           "backfill resumed");
            return self.get(&existing.id).await;
        }
        let backfill = BackfillRecord {
            id: uuid::Uuid::now_v7().to_string(),
            flow: request.flow.clone(),
            condition: request.condition.clone(),
            query,
            rate: request.rate,
            state: backfill_state::RUNNING.into(),
            cursor: None,
            found: 0,
            total: None,
            error: None,
            created_at: now,
            updated_at: now,
        };
        self.store.create_backfill(&backfill).await?;
        tracing::info!(backfill = %backfill.id, flow = %backfill.flow, query = ?backfill.query,
                       "backfill started");
        Ok(backfill)
    }

    async fn get(&self, id: &str) -> Result<BackfillRecord, BackfillError> {
        self.store
            .get_backfill(id)
            .await?
            .ok_or_else(|| BackfillError::NotFound(id.to_string()))
    }

    /// The backfill with what became of its events.
    pub async fn progress(&self, id: &str) -> Result<Progress, BackfillError> {
        let backfill = self.get(id).await?;
        let outcomes = self.store.backfill_outcomes(id).await?;
        Ok(Progress { backfill, outcomes })
    }

    /// Stops enumerating (the holder sees it at its next page); what is enqueued stays queued.
    /// Starting the same backfill again resumes it.
    pub async fn cancel(&self, id: &str) -> Result<Progress, BackfillError> {
        self.get(id).await?;
        self.store
            .set_backfill_state(
                id,
                &[backfill_state::RUNNING],
                backfill_state::CANCELLED,
                None,
                now_millis(),
            )
            .await?;
        self.progress(id).await
    }

    /// Takes the lease of backfill `id`; `false` when another process holds it.
    pub async fn lease(&self, id: &str) -> Result<bool, BackfillError> {
        let now = now_millis();
        Ok(self
            .store
            .lease_backfill(Some(id), &self.owner, now + LEASE.as_millis() as i64, now)
            .await?
            .is_some())
    }

    /// Enumerates backfill `id` (whose lease this process holds, see [`Self::lease`]) until
    /// every object is enqueued, it is cancelled, another process took it over, or `stop`
    /// fires (then the lease runs out and it resumes later, here or elsewhere).
    pub async fn run(&self, id: &str, stop: &CancellationToken) -> Result<(), BackfillError> {
        let backfill = self.get(id).await?;
        let module = self.mapping(&backfill.flow)?.trigger.module.clone();
        let limit = backfill
            .rate
            .map_or(PAGE, |r| (r.ceil() as u64).clamp(1, PAGE));
        let mut cursor = backfill.cursor.clone();
        let mut total_known = backfill.total.is_some();
        while !stop.is_cancelled() {
            let started = Instant::now();
            let after = cursor
                .as_ref()
                .map(|c| format!("id > '{}'", c.replace('\'', "''")));
            let list = ListQuery {
                query: all_of(&[after.as_deref(), backfill.query.as_deref()]),
                fields: vec!["id".into()],
                sort: vec!["id".into()],
                limit,
                total_count: !total_known,
                ..ListQuery::default()
            };
            let page = match self.allportal.list_objects(&module, &list).await {
                Ok(page) => page,
                Err(error) if error.is_retryable() => {
                    // The transport retried already; keep the lease and try again later.
                    tracing::warn!(backfill = %id, %error, "backfill page failed; trying again");
                    if !self.advance(id, None, 0, None).await? {
                        return Ok(());
                    }
                    tokio::select! {
                        () = tokio::time::sleep(RETRY_PAUSE) => continue,
                        () = stop.cancelled() => return Ok(()),
                    }
                }
                Err(error) => {
                    let message = error.to_string();
                    self.store
                        .set_backfill_state(
                            id,
                            &[backfill_state::RUNNING],
                            backfill_state::FAILED,
                            Some(&message),
                            now_millis(),
                        )
                        .await?;
                    tracing::error!(backfill = %id, error = %message, "backfill failed");
                    return Err(error.into());
                }
            };
            let now = now_millis();
            let events = page
                .result
                .iter()
                .map(|o| backfill_event(id, &backfill.flow, &format!("{module}/{}", o.id), now))
                .collect::<Result<Vec<NewEvent>, _>>()?;
            let count = events.len() as i64;
            self.store.insert_events(events).await?;
            let total = (!total_known)
                .then_some(page.total_count)
                .flatten()
                .map(|t| t as i64);
            total_known |= total.is_some();
            let last = page.result.last().map(|o| o.id.clone());
            if !self.advance(id, last.as_deref(), count, total).await? {
                tracing::info!(backfill = %id, "backfill cancelled or taken over; stopping");
                return Ok(());
            }
            cursor = last.or(cursor);
            if (count as u64) < limit {
                self.store
                    .set_backfill_state(
                        id,
                        &[backfill_state::RUNNING],
                        backfill_state::ENUMERATED,
                        None,
                        now_millis(),
                    )
                    .await?;
                tracing::info!(backfill = %id, "backfill enumerated every object");
                return Ok(());
            }
            if let Some(rate) = backfill.rate {
                let due = Duration::from_secs_f64(count as f64 / rate);
                tokio::select! {
                    () = tokio::time::sleep(due.saturating_sub(started.elapsed())) => {}
                    () = stop.cancelled() => return Ok(()),
                }
            }
        }
        Ok(())
    }

    async fn advance(
        &self,
        id: &str,
        cursor: Option<&str>,
        found: i64,
        total: Option<i64>,
    ) -> Result<bool, BackfillError> {
        let now = now_millis();
        let until = now + LEASE.as_millis() as i64;
        Ok(self
            .store
            .advance_backfill(id, &self.owner, cursor, found, total, until, now)
            .await?)
    }

    /// Runs on every serving replica: takes over running backfills whose holder stopped
    /// (killed, or a `backfill` command interrupted) and enumerates them, until `stop`.
    pub async fn resume_orphans(self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            let now = now_millis();
            let until = now + LEASE.as_millis() as i64;
            match self
                .store
                .lease_backfill(None, &self.owner, until, now)
                .await
            {
                Ok(Some(backfill)) => {
                    tracing::info!(backfill = %backfill.id, flow = %backfill.flow,
                                   cursor = ?backfill.cursor, "resuming backfill");
                    if let Err(error) = self.run(&backfill.id, &stop).await {
                        tracing::warn!(backfill = %backfill.id, %error, "backfill stopped");
                    }
                    continue;
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "cannot look for backfills to resume"),
            }
            tokio::select! {
                () = tokio::time::sleep(ORPHAN_SCAN) => {}
                () = stop.cancelled() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn condition(value: serde_json::Value) -> Condition {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn expressible_trigger_conditions_become_4apql() {
        let conditions = [
            condition(json!({"field": "status", "equals": "launch_ready"})),
            condition(json!({"field": "channel", "in": ["web", "o'shop"]})),
            condition(json!({"field": "name", "locale": "de_DE", "equals": "x"})),
            condition(json!({"field": "price", "changed": true})),
            condition(json!({"field": "ean", "present": true})),
        ];
        assert_eq!(
            trigger_query(&conditions).as_deref(),
            Some("status = 'launch_ready' AND channel IN ('web', 'o''shop')")
        );
        assert_eq!(trigger_query(&conditions[2..]), None);
    }

    #[test]
    fn parts_are_parenthesized_and_empty_ones_left_out() {
        assert_eq!(
            all_of(&[
                Some("id > 'a'"),
                None,
                Some("a = '1' OR b = '2'"),
                Some(" ")
            ])
            .as_deref(),
            Some("(id > 'a') AND (a = '1' OR b = '2')")
        );
        assert_eq!(all_of(&[None]), None);
    }
}
