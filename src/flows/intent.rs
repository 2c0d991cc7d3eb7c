//! Exactly-once creates. A create without a natural key (a workflow, a hold, a finalization, a
//! version) cannot be found again by name, so running it twice would make it twice. Each one is
//! recorded as an intent before its call; a run that finds the intent still pending knows that
//! an earlier run may have made the call and died before recording it, and looks the outcome
//! up by the intent's token (carried by the created thing: a workflow's title, a version's
//! description) before it calls again.

use serde_json::Value;

use super::error::FlowResult;
use super::run::Run;
use crate::store::{IntentRecord, intent_state, now_millis};

/// Actions guarded by an intent.
pub mod action {
    pub const START_WORKFLOW: &str = "start_workflow";
    pub const ADD_VERSION: &str = "add_version";
    pub const FINALIZE_RECORDS: &str = "finalize_records";
    pub const APPLY_HOLD: &str = "apply_hold";
}

/// A recorded intent, about to be carried out.
#[derive(Debug, Clone)]
pub struct Intent {
    record: IntentRecord,
    /// An earlier run left this intent pending: its call may have been made.
    pub recovering: bool,
    /// The token of an earlier intent for the same target that was carried out: a run that
    /// died after the call but before saving its own state leaves only this behind.
    pub earlier: Option<String>,
}

impl Intent {
    /// The identity the created thing carries, stable across the runs of one intent.
    pub fn token(&self) -> &str {
        &self.record.token
    }
}

impl Run<'_> {
    /// Records (durably, before the call) that `action` on `target` is about to be made.
    /// `token` proposes the identity of a new intent; a pending one keeps its own.
    pub async fn intend(&self, action: &str, target: &str, token: &str) -> FlowResult<Intent> {
        let store = &self.env.store;
        let existing = store
            .get_intent(self.flow, &self.object_key, action, target)
            .await?;
        let earlier = match existing {
            Some(record) if record.state == intent_state::PENDING => {
                tracing::info!(flow = self.flow, key = %self.object_key, action, target,
                    "found a pending intent; looking its outcome up before calling again");
                return Ok(Intent {
                    record,
                    recovering: true,
                    earlier: None,
                });
            }
            Some(record) => Some(record.token),
            None => None,
        };
        let now = now_millis();
        let record = IntentRecord {
            flow: self.flow.to_string(),
            object_key: self.object_key.clone(),
            action: action.to_string(),
            target: target.to_string(),
            token: token.to_string(),
            state: intent_state::PENDING.to_string(),
            detail: Value::Object(Default::default()),
            created_at: now,
            updated_at: now,
        };
        store.put_intent(&record).await?;
        Ok(Intent {
            record,
            recovering: false,
            earlier,
        })
    }

    /// Marks the intent carried out, with what the call produced.
    pub async fn fulfilled(&self, intent: Intent, detail: Value) -> FlowResult<()> {
        let record = IntentRecord {
            state: intent_state::DONE.to_string(),
            detail,
            updated_at: now_millis(),
            ..intent.record
        };
        self.env.store.put_intent(&record).await?;
        Ok(())
    }
}

/// A fresh token for a new intent: short, unique, and searchable inside a title.
pub fn new_token() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("xb-{}", &id[id.len() - 12..])
}
