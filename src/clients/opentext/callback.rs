//! `[callbacks]`: where each field of an OpenText callback is, as JSON pointers (RFC 6901), and
//! value maps for kinds and decisions, so that whatever OpenText's side posts (a WebReport, a
//! workflow script) is read without code. The defaults are the bridge's own format
//! (docs/opentext-callback.md), which ingest validates field by field; any other shape is read
//! through the pointers. The flows read a callback's fields through the same shape.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config_error::ConfigError;

/// The normalized kinds a callback can have.
pub const KIND_WORKFLOW_DECISION: &str = "workflow_decision";
pub const KIND_PARTNER_DOCUMENT_APPROVED: &str = "partner_document_approved";

/// Where each callback field is. An empty pointer: the sender does not send that field.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackShape {
    pub event_id: String,
    pub kind: String,
    pub process_id: String,
    pub decision: String,
    pub approver: String,
    pub comment: String,
    pub decided_at: String,
    pub bo_type: String,
    pub bo_id: String,
    pub document_node_id: String,
    pub document_version: String,
    pub document_name: String,
    /// Sent kind → `workflow_decision` | `partner_document_approved`. Kinds not listed are
    /// lower-cased with `.` read as `_` (`workflow.decision` → `workflow_decision`).
    pub kinds: BTreeMap<String, String>,
    /// Sent decision → `approved` | `rejected`. Decisions not listed must be one of those two.
    pub decisions: BTreeMap<String, String>,
}

/// The built-in `[callbacks]` section: the bridge's own format.
pub const DEFAULTS: &str = r#"
[callbacks]
event_id = "/event_id"
kind = "/type"
process_id = "/workflow/process_id"
decision = "/workflow/decision"
approver = "/workflow/approver"
comment = "/workflow/comment"
decided_at = "/workflow/decided_at"
bo_type = "/business_object/bo_type"
bo_id = "/business_object/bo_id"
document_node_id = "/document/node_id"
document_version = "/document/version"
document_name = "/document/name"

[callbacks.kinds]

[callbacks.decisions]
"#;

impl Default for CallbackShape {
    fn default() -> Self {
        crate::config_error::builtin(DEFAULTS, "callbacks")
    }
}

/// A callback's fields as the flows use them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallbackFields {
    pub event_id: Option<String>,
    /// Normalized: [`KIND_WORKFLOW_DECISION`] or [`KIND_PARTNER_DOCUMENT_APPROVED`].
    pub kind: Option<&'static str>,
    pub process_id: Option<String>,
    /// `approved` or `rejected`.
    pub decision: Option<&'static str>,
    pub approver: Option<String>,
    pub comment: Option<String>,
    pub decided_at: Option<String>,
    pub bo_type: Option<String>,
    pub bo_id: Option<String>,
    pub document_node_id: Option<i64>,
    pub document_version: Option<i64>,
    pub document_name: Option<String>,
}

impl CallbackShape {
    /// The bridge's own format: ingest validates it field by field.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    fn pointers(&self) -> [(&'static str, &str); 12] {
        [
            ("event_id", &self.event_id),
            ("kind", &self.kind),
            ("process_id", &self.process_id),
            ("decision", &self.decision),
            ("approver", &self.approver),
            ("comment", &self.comment),
            ("decided_at", &self.decided_at),
            ("bo_type", &self.bo_type),
            ("bo_id", &self.bo_id),
            ("document_node_id", &self.document_node_id),
            ("document_version", &self.document_version),
            ("document_name", &self.document_name),
        ]
    }

    /// Checks every pointer (RFC 6901: empty, or `/`-separated tokens whose `~` is `~0` or
    /// `~1`) and the value maps; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, pointer) in self.pointers() {
            if let Some(problem) = pointer_problem(pointer) {
                return Err(key_error(&format!("callbacks.{key}"), &problem));
            }
        }
        if self.kind.is_empty() {
            return Err(key_error("callbacks.kind", "must point at the kind"));
        }
        for (sent, kind) in &self.kinds {
            if ![KIND_WORKFLOW_DECISION, KIND_PARTNER_DOCUMENT_APPROVED].contains(&kind.as_str()) {
                return Err(key_error(
                    &format!("callbacks.kinds.\"{sent}\""),
                    &format!(
                        "`{kind}` is not a callback kind: use `{KIND_WORKFLOW_DECISION}` or \
                         `{KIND_PARTNER_DOCUMENT_APPROVED}`"
                    ),
                ));
            }
        }
        for (sent, decision) in &self.decisions {
            if !["approved", "rejected"].contains(&decision.as_str()) {
                return Err(key_error(
                    &format!("callbacks.decisions.\"{sent}\""),
                    &format!("`{decision}` is not a decision: use `approved` or `rejected`"),
                ));
            }
        }
        Ok(())
    }

    fn at<'v>(&self, event: &'v Value, pointer: &str) -> Option<&'v Value> {
        if pointer.is_empty() {
            return None;
        }
        event.pointer(pointer).filter(|v| !v.is_null())
    }

    /// The text at `pointer`, if it is a scalar there.
    pub fn text(&self, event: &Value, pointer: &str) -> Option<String> {
        self.at(event, pointer).and_then(scalar_text)
    }

    /// The normalized kind of a sent kind, if it is one.
    fn kind_of(&self, sent: &str) -> Option<&'static str> {
        let mapped = self
            .kinds
            .get(sent)
            .cloned()
            .unwrap_or_else(|| sent.trim().to_ascii_lowercase().replace('.', "_"));
        [KIND_WORKFLOW_DECISION, KIND_PARTNER_DOCUMENT_APPROVED]
            .into_iter()
            .find(|k| *k == mapped)
    }

    fn decision_of(&self, sent: &str) -> Option<&'static str> {
        let mapped = self
            .decisions
            .get(sent)
            .cloned()
            .unwrap_or_else(|| sent.trim().to_ascii_lowercase());
        ["approved", "rejected"].into_iter().find(|d| *d == mapped)
    }

    /// The fields of one callback, as far as they are there and valid (the flows' view).
    pub fn fields(&self, event: &Value) -> CallbackFields {
        let number = |pointer: &str| self.text(event, pointer)?.parse::<i64>().ok();
        CallbackFields {
            event_id: self.text(event, &self.event_id),
            kind: self.text(event, &self.kind).and_then(|k| self.kind_of(&k)),
            process_id: self.text(event, &self.process_id),
            decision: self
                .text(event, &self.decision)
                .and_then(|d| self.decision_of(&d)),
            approver: self.text(event, &self.approver),
            comment: self.text(event, &self.comment),
            decided_at: self.text(event, &self.decided_at),
            bo_type: self.text(event, &self.bo_type),
            bo_id: self.text(event, &self.bo_id),
            document_node_id: number(&self.document_node_id),
            document_version: number(&self.document_version),
            document_name: self.text(event, &self.document_name),
        }
    }
}

/// A scalar as text: a non-blank string (trimmed) or an integer, as both systems send ids.
pub fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// The error for configuration key `key`, as the other keys' errors read.
fn key_error(key: &str, problem: &str) -> ConfigError {
    ConfigError(format!("`{key}`: {problem}"))
}

/// Why `pointer` is not an RFC 6901 JSON pointer, if it is not.
fn pointer_problem(pointer: &str) -> Option<String> {
    if pointer.is_empty() {
        return None;
    }
    if !pointer.starts_with('/') {
        return Some(format!(
            "`{pointer}` is not a JSON pointer (RFC 6901): it must start with `/`, e.g. \
             `/workflow/process_id`"
        ));
    }
    let mut chars = pointer.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Some(format!(
                "`{pointer}` is not a JSON pointer (RFC 6901): `~` must be followed by 0 or 1"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pointers_and_maps_name_their_key() {
        let check = |shape: CallbackShape| shape.validate().unwrap_err().to_string();
        let bad = CallbackShape {
            decision: "workflow.decision".into(),
            ..CallbackShape::default()
        };
        assert!(check(bad).contains("callbacks.decision"));
        let bad = CallbackShape {
            approver: "/a~2b".into(),
            ..CallbackShape::default()
        };
        assert!(check(bad).contains("callbacks.approver"));
        let bad = CallbackShape {
            kinds: BTreeMap::from([("done".to_string(), "finished".to_string())]),
            ..CallbackShape::default()
        };
        assert!(check(bad).contains("callbacks.kinds.\"done\""));
        let bad = CallbackShape {
            decisions: BTreeMap::from([("ok".to_string(), "yes".to_string())]),
            ..CallbackShape::default()
        };
        assert!(check(bad).contains("callbacks.decisions.\"ok\""));
        assert!(CallbackShape::default().validate().is_ok());
        assert!(CallbackShape::default().is_default());
    }
}
