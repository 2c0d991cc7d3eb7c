//! The periodic drift audit: walks the stored links round-robin (a stored cursor says where
//! the last round stopped) and enqueues a resync of each object, so that a workspace changed
//! quietly in OpenText is verified and repaired like any other run (see
//! [`crate::flows::engine`]). A resync joins work already queued for its object: jobs of one
//! (flow, object key) run together.

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

/// Where the last round stopped: `[flow, object_key]` as JSON.
pub const AUDIT_CURSOR: &str = "audit.cursor";
/// The last round's figures ([`AuditRound`] as JSON), for `GET /api/v1/audit`.
pub const AUDIT_LAST_ROUND: &str = "audit.last_round";

/// `[audit]`: the periodic drift audit.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Whether the worker runs the audit.
    pub enabled: bool,
    /// Seconds between rounds.
    pub interval_secs: u64,
    /// Objects (stored links) resynced per round: the rate, so that the audit's OpenText reads
    /// stay a small share of the load. Every object is audited once per
    /// `links / objects_per_round` rounds.
    pub objects_per_round: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_secs: 3600,
            objects_per_round: 50,
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRound {
    /// Unix milliseconds.
    pub at: i64,
    /// The objects resynced, `flow:object_key`.
    pub objects: Vec<String>,
    /// Resync events newly enqueued.
    pub enqueued: usize,
    /// Whether the walk reached the end of the links and starts over next round.
    pub wrapped: bool,
}

/// One round: up to `per_round` links after the cursor, a resync for each, then the cursor
/// and the round's figures are stored.
pub async fn audit_round(
    store: &dyn Store,
    per_round: u64,
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
    for (flow, key) in &links {
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
