//! Conditions on a re-read object: `equals`, `in`, `changed`, `present`, each on one field
//! (with locale/channel for dimensioned fields).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fields::{FieldRef, Scope, value_text};

/// One condition; exactly one of `equals`, `in`, `changed`, `present` is set.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Field reference, e.g. `status` or `name@en_US`.
    pub field: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<Value>,
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<Value>>,
    /// `true`: the value differs from the one seen at the last successful run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
    /// `true`: the field has a value; `false`: it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

impl Condition {
    /// The field this condition reads, with its dimensions.
    pub fn field_ref(&self) -> Result<FieldRef, String> {
        Ok(FieldRef::parse(&self.field)?
            .with_dimensions(self.locale.as_deref(), self.channel.as_deref()))
    }

    /// Checks the shape: a parsable field and exactly one operator.
    pub fn check(&self) -> Result<(), String> {
        self.field_ref()?;
        let set = [
            self.equals.is_some(),
            self.one_of.is_some(),
            self.changed.is_some(),
            self.present.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set != 1 {
            return Err(format!(
                "condition on `{}` needs exactly one of equals, in, changed, present",
                self.field
            ));
        }
        if let Some(v) = &self.equals
            && (v.is_object() || v.is_array())
        {
            return Err(format!(
                "condition on `{}`: `equals` takes a single value; use `in` for several",
                self.field
            ));
        }
        Ok(())
    }

    /// Whether the condition holds. `previous` are the values seen at the last successful run,
    /// keyed by the condition's field text.
    pub fn holds(&self, scope: &Scope<'_>, previous: &BTreeMap<String, Value>) -> bool {
        let Ok(field) = self.field_ref() else {
            return false;
        };
        let value = scope.value(&field);
        if let Some(want) = &self.equals {
            return value.as_ref().is_some_and(|v| same(v, want));
        }
        if let Some(options) = &self.one_of {
            return value
                .as_ref()
                .is_some_and(|v| options.iter().any(|o| same(v, o)));
        }
        if let Some(want) = self.changed {
            let before = previous.get(&self.key()).cloned().unwrap_or(Value::Null);
            let now = value.unwrap_or(Value::Null);
            return (before != now) == want;
        }
        if let Some(want) = self.present {
            let has = value
                .as_ref()
                .and_then(value_text)
                .is_some_and(|t| !t.is_empty());
            return has == want;
        }
        false
    }

    /// Key under which the value is remembered for `changed`.
    pub fn key(&self) -> String {
        let mut key = self.field.clone();
        for (sep, dim) in [("#l=", &self.locale), ("#c=", &self.channel)] {
            if let Some(d) = dim {
                key.push_str(sep);
                key.push_str(d);
            }
        }
        key
    }

    /// Human-readable form for skip reasons.
    pub fn describe(&self) -> String {
        let op = if let Some(v) = &self.equals {
            format!("= {v}")
        } else if let Some(o) = &self.one_of {
            format!("in {}", Value::Array(o.clone()))
        } else if let Some(c) = self.changed {
            if c { "changed" } else { "unchanged" }.to_string()
        } else if let Some(p) = self.present {
            if p { "present" } else { "absent" }.to_string()
        } else {
            "?".into()
        };
        format!("{} {op}", self.field)
    }
}

/// Equality that tolerates number/string spelling differences (`"5"` = `5`).
fn same(a: &Value, b: &Value) -> bool {
    a == b || value_text(a).is_some_and(|t| Some(t) == value_text(b))
}

/// The values `changed` conditions compare against next time.
pub fn remembered(conditions: &[Condition], scope: &Scope<'_>) -> BTreeMap<String, Value> {
    conditions
        .iter()
        .filter(|c| c.changed.is_some())
        .filter_map(|c| {
            let field = c.field_ref().ok()?;
            Some((c.key(), scope.value(&field).unwrap_or(Value::Null)))
        })
        .collect()
}

/// The first condition that does not hold, described.
pub fn first_unmet(
    conditions: &[Condition],
    scope: &Scope<'_>,
    previous: &BTreeMap<String, Value>,
) -> Option<String> {
    conditions
        .iter()
        .find(|c| !c.holds(scope, previous))
        .map(Condition::describe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::allportal::ModuleObject;
    use serde_json::json;

    fn cond(v: Value) -> Condition {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn operators_evaluate_on_the_object() {
        let p: ModuleObject = serde_json::from_value(json!({
            "id": "p", "status": [{"value": "launch_ready", "dimensions": null}],
            "name": [{"value": "Pump", "dimensions": {"locale": "en_US"}}]
        }))
        .unwrap();
        let scope = Scope::of(&p);
        let none = BTreeMap::new();
        assert!(cond(json!({"field": "status", "equals": "launch_ready"})).holds(&scope, &none));
        assert!(cond(json!({"field": "status", "in": ["a", "launch_ready"]})).holds(&scope, &none));
        assert!(!cond(json!({"field": "status", "in": ["a"]})).holds(&scope, &none));
        assert!(
            cond(json!({"field": "name", "locale": "en_US", "present": true})).holds(&scope, &none)
        );
        assert!(cond(json!({"field": "name@de_DE", "present": false})).holds(&scope, &none));
        let changed = cond(json!({"field": "status", "changed": true}));
        assert!(changed.holds(&scope, &none));
        let seen = remembered(std::slice::from_ref(&changed), &scope);
        assert!(!changed.holds(&scope, &seen));
    }

    #[test]
    fn shape_is_checked() {
        assert!(cond(json!({"field": "s"})).check().is_err());
        assert!(
            cond(json!({"field": "s", "equals": 1, "present": true}))
                .check()
                .is_err()
        );
        assert!(cond(json!({"field": "s", "equals": [1]})).check().is_err());
        assert!(cond(json!({"field": "s", "in": [1, 2]})).check().is_ok());
    }
}
