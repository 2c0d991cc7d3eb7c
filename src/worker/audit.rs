//! The periodic drift audit: walks the stored links round-robin (a stored cursor says where
//! the last round stopped) and enqueues a resync of each object, so that a workspace changed
//! quietly in OpenText is verified and repaired like any other run (see
//! [`crate::flows::engine`]). A resync joins work already queued for its object: jobs of one
//! (flow, object key) run together.

use serde::{Deserialize, Serialize};

use super::flow::Router;
use crate::store::{RESYNC_KIND, Source, Store, StoreError, StoredEvent, state};

/// Where the last round stopped: `[flow, object_key]` as JSON.
pub const AUDIT_CURSOR: &str = "audit.cursor";
/// The last round's figures ([`AuditRound`] as JSON), for `GET /api/v1/audit`.
pub const AUDIT_LAST_ROUND: &str = "audit.last_round";

/// `[audit]`: the periodic drift audit.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Whether the worker runs the audit.
    pub enabled: bool,
    /// Seconds between rounds.
    pub interval_secs: u64,
    /// Stored links examined per round, each resynced when it is a business object of its
    /// flow: the rate, so that the audit's OpenText reads stay a small share of the load.
    /// Every object is audited once per `links / objects_per_round` rounds.
    pub objects_per_round: u64,
}

/// The built-in `[audit]` section.
pub const DEFAULTS: &str = r#"
[audit]
enabled = true
interval_secs = 3600
objects_per_round = 50
"#;

impl Default for AuditConfig {
    /// The built-in `[audit]` section.
    fn default() -> Self {
        crate::config_error::builtin(DEFAULTS, "audit")
    }
}

impl AuditConfig {
    pub fn validate(&self) -> Result<(), crate::config_error::ConfigError> {
        crate::config_error::positive(
            "audit",
            &[
                ("interval_secs", self.interval_secs),
                ("objects_per_round", self.objects_per_round),
            ],
        )
    }
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRound {
    /// Unix milliseconds.
    pub at: i64,
    /// The objects resynced, `flow:object_key` (links under a workspace's own key are
    /// passed over: the run of their object verifies them).
    pub objects: Vec<String>,
    /// Resync events newly enqueued.
    pub enqueued: usize,
    /// Whether the walk reached the end of the links and starts over next round.
    pub wrapped: bool,
}

/// Whether the flow of a link runs for the link's key: links are also kept under the keys of
/// the workspaces a run keeps (`bo_type/bo_id`, e.g. `product_compliance/…`), which are no
/// 4ALLPORTAL objects and are verified by the run of their object.
pub fn audits(router: &Router, flow: &str, object_key: &str) -> bool {
    let (Some(flow), Some((module, id))) = (router.get(flow), object_key.split_once('/')) else {
        return false;
    };
    let resync = StoredEvent {
        id: String::new(),
        source: Source::Allportal.as_str().to_string(),
        source_event_id: String::new(),
        kind: RESYNC_KIND.to_string(),
        module: Some(module.to_string()),
        object_id: Some(id.to_string()),
        object_key: Some(object_key.to_string()),
        payload: serde_json::json!({}),
        raw_body: Vec::new(),
        headers: serde_json::Value::Null,
        received_at: 0,
        state: state::PENDING.to_string(),
        attempts: 0,
        next_attempt_at: 0,
        last_error: None,
        updated_at: 0,
    };
    flow.wants(&resync)
}

/// One round: up to `per_round` links after the cursor, a resync for each that `audited`
/// accepts (see [`audits`]), then the cursor and the round's figures are stored.
pub async fn audit_round(
    store: &dyn Store,
    per_round: u64,
    audited: &(dyn Fn(&str, &str) -> bool + Send + Sync),
    now: i64,
) -> Result<AuditRound, StoreError> {
    let cursor: Option<(String, String)> = store
        .get_cursor(AUDIT_CURSOR)
        .await?
        .and_then(|text| serde_json::from_str(&text).ok());
    let limit = per_round.max(1) as i64;
    let after = cursor.as_ref().map(|(f, k)| (f.as_str(), k.as_str()));
    let links = store.links_after(after, limit).await?;
    let mut round = AuditRound {
        at: now,
        wrapped: (links.len() as i64) < limit,
        ..AuditRound::default()
    };
    for (flow, key) in links.iter().filter(|(f, k)| audited(f, k)) {
        store.resync(Some(flow), key, now).await?;
        round.enqueued += 1;
        round.objects.push(format!("{flow}:{key}"));
    }
    let next = match (round.wrapped, links.last()) {
        (false, Some(last)) => serde_json::to_string(last).unwrap_or_default(),
        _ => "null".to_string(),
    };
    store.set_cursor(AUDIT_CURSOR, &next, now).await?;
    let figures = serde_json::to_string(&round).unwrap_or_default();
    store.set_cursor(AUDIT_LAST_ROUND, &figures, now).await?;
    tracing::info!(
        objects = round.objects.len(),
        wrapped = round.wrapped,
        "drift audit round enqueued resyncs"
    );
    Ok(round)
}

/// The last round's figures, if a round ran.
pub async fn last_round(store: &dyn Store) -> Result<Option<AuditRound>, StoreError> {
    Ok(store
        .get_cursor(AUDIT_LAST_ROUND)
        .await?
        .and_then(|text| serde_json::from_str(&text).ok()))
}
