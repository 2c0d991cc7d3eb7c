//! Category values of a mapping: what a `"<category>_<attribute>" = …` entry sends, and the
//! check of a value against the OpenText attribute's type.
//!
//! A source is one term or a list of terms (a TOML array). A term is
//! - a constant in single quotes: `"'in review'"` (sent as it is written),
//! - a pattern with fields in braces: `"{id} v{mod_time}"` (sent as text),
//! - a field reference: `"article_number"` (sent as 4ALLPORTAL holds it: a multi-value or
//!   list field as a JSON array, a number as a number).
//!
//! A list sends a JSON array of every term's value, a list field's items each counted once;
//! a one-term list forces an array. OpenText takes multi-value attributes as arrays.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fields::{FieldRef, Scope, value_text};
use super::pattern::Pattern;
use crate::clients::opentext::{AttributeDefinition, AttributeType};

/// The configured value of one category attribute: one source or a list of sources.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum ValueSource {
    One(String),
    List(Vec<String>),
}

impl ValueSource {
    /// The sources, one or many.
    pub fn sources(&self) -> &[String] {
        match self {
            ValueSource::One(s) => std::slice::from_ref(s),
            ValueSource::List(l) => l,
        }
    }
}

impl From<&str> for ValueSource {
    fn from(s: &str) -> Self {
        ValueSource::One(s.to_string())
    }
}

/// One parsed term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    Constant(String),
    Pattern(Pattern),
    Field(FieldRef),
}

impl Term {
    pub fn parse(source: &str) -> Result<Self, String> {
        let trimmed = source.trim();
        if let Some(inner) = trimmed
            .strip_prefix('\'')
            .and_then(|rest| rest.strip_suffix('\''))
        {
            return Ok(Term::Constant(inner.to_string()));
        }
        if source.contains('{') || source.contains('}') {
            return Pattern::parse(source).map(Term::Pattern);
        }
        FieldRef::parse(source).map(Term::Field).map_err(|e| {
            format!("{e}; a constant is written in single quotes, e.g. \"'{trimmed}'\"")
        })
    }

    /// The field references the term reads.
    pub fn fields(&self) -> Vec<&FieldRef> {
        match self {
            Term::Constant(_) => Vec::new(),
            Term::Pattern(p) => p.fields().collect(),
            Term::Field(f) => vec![f],
        }
    }

    /// The value, or null when a field has none.
    pub fn render(&self, scope: &Scope<'_>) -> Value {
        match self {
            Term::Constant(c) => Value::String(c.clone()),
            Term::Pattern(p) => p.render(scope).map(Value::String).unwrap_or(Value::Null),
            Term::Field(f) => scope.value(f).unwrap_or(Value::Null),
        }
    }
}

/// A parsed [`ValueSource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedValue {
    pub terms: Vec<Term>,
    /// Written as a list: always sent as an array.
    pub list: bool,
}

impl MappedValue {
    pub fn parse(source: &ValueSource) -> Result<Self, String> {
        let terms = source
            .sources()
            .iter()
            .map(|s| Term::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        let list = matches!(source, ValueSource::List(_));
        if !list && terms.is_empty() {
            return Err("needs a value".into());
        }
        Ok(Self { terms, list })
    }

    pub fn fields(&self) -> impl Iterator<Item = &FieldRef> {
        self.terms.iter().flat_map(Term::fields)
    }

    /// The value sent: a list flattens its terms' values and drops the empty ones.
    pub fn render(&self, scope: &Scope<'_>) -> Value {
        if !self.list {
            return self.terms[0].render(scope);
        }
        let mut items = Vec::new();
        for term in &self.terms {
            match term.render(scope) {
                Value::Null => {}
                Value::Array(values) => items.extend(values.into_iter().filter(|v| !v.is_null())),
                other => items.push(other),
            }
        }
        Value::Array(items)
    }
}

/// The value as OpenText takes it for the attribute, or why it does not fit. Null stays null
/// (an empty multi-value attribute is an empty array).
pub fn coerce(attribute: &AttributeDefinition, value: Value) -> Result<Value, String> {
    if attribute.multi_value {
        let items = match value {
            Value::Null => Vec::new(),
            Value::Array(items) => items,
            one => vec![one],
        };
        return items
            .into_iter()
            .filter(|v| !v.is_null())
            .map(|v| coerce_one(attribute, v))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    match value {
        Value::Array(mut items) if items.len() <= 1 => {
            coerce_one(attribute, items.pop().unwrap_or(Value::Null))
        }
        Value::Array(items) => Err(format!(
            "{} takes one value; the mapping gives {} values",
            attribute.describe(),
            items.len()
        )),
        one => coerce_one(attribute, one),
    }
}

fn coerce_one(attribute: &AttributeDefinition, value: Value) -> Result<Value, String> {
    if value.is_null() {
        return Ok(value);
    }
    let text = value_text(&value).unwrap_or_default();
    let text = text.trim();
    let mismatch = || {
        format!(
            "`{text}` does not fit {}: {}",
            attribute.describe(),
            expected(&attribute.attribute_type)
        )
    };
    match &attribute.attribute_type {
        AttributeType::Other(_) => Ok(value),
        AttributeType::Text => Ok(match value {
            Value::String(_) => value,
            other => Value::String(value_text(&other).unwrap_or_default()),
        }),
        AttributeType::Integer | AttributeType::User => {
            text.parse::<i64>().map(Value::from).map_err(|_| mismatch())
        }
        AttributeType::Real => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(mismatch),
        AttributeType::Boolean => match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(Value::Bool(true)),
            "false" | "0" | "no" => Ok(Value::Bool(false)),
            _ => Err(mismatch()),
        },
        AttributeType::Date if is_date(text) => Ok(Value::String(text.to_string())),
        AttributeType::Date => Err(mismatch()),
    }
}

fn expected(t: &AttributeType) -> &'static str {
    match t {
        AttributeType::Integer => "an integer is needed",
        AttributeType::User => "a user is given by its numeric Content Server id",
        AttributeType::Real => "a number is needed",
        AttributeType::Boolean => "true or false is needed",
        AttributeType::Date => "a date `YYYY-MM-DD` or an ISO 8601 timestamp is needed",
        AttributeType::Text | AttributeType::Other(_) => "",
    }
}

/// `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SS` or an RFC 3339 timestamp.
fn is_date(text: &str) -> bool {
    date_time(text).is_some()
}

/// The moment a date value names: a date is its midnight, an RFC 3339 timestamp is taken in
/// UTC. OpenText answers a date attribute as `YYYY-MM-DDTHH:MM:SS`, whatever form was sent.
pub(crate) fn date_time(text: &str) -> Option<chrono::NaiveDateTime> {
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .or_else(|| chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S").ok())
        .or_else(|| {
            chrono::DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| t.naive_utc())
        })
}

/// Whether values of a 4ALLPORTAL field type can go into the attribute (`None`: they can;
/// `Some(reason)`: they cannot). Text attributes take anything.
pub fn field_type_fits(field_type: &str, attribute: &AttributeDefinition) -> Option<String> {
    let is_list = field_type.ends_with("List");
    let base = field_type.trim_end_matches("List");
    let kind = if base.contains("Timestamp") || base.contains("Date") {
        "date"
    } else if base.contains("Integer") || base.contains("Long") {
        "integer"
    } else if base.contains("Decimal") || base.contains("Double") || base.contains("Float") {
        "number"
    } else if base.contains("Boolean") {
        "boolean"
    } else {
        "text"
    };
    let fits = match &attribute.attribute_type {
        AttributeType::Text | AttributeType::Other(_) => true,
        AttributeType::Integer | AttributeType::User => kind == "integer",
        AttributeType::Real => kind == "integer" || kind == "number",
        AttributeType::Date => kind == "date",
        AttributeType::Boolean => kind == "boolean",
    };
    if !fits {
        return Some(format!(
            "type mismatch: the attribute is {} but the field is `{field_type}`",
            attribute.describe()
        ));
    }
    if is_list && !attribute.multi_value {
        return Some(format!(
            "type mismatch: `{field_type}` is a list field but the attribute {} takes one value",
            attribute.describe()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::allportal::ModuleObject;
    use serde_json::json;

    fn product() -> ModuleObject {
        serde_json::from_value(json!({
            "id": "p1",
            "claims": [{"value": ["food safe", "ATEX"], "dimensions": null}],
            "article_number": [{"value": "4711", "dimensions": null}]
        }))
        .unwrap()
    }

    fn attr(t: AttributeType, multi: bool) -> AttributeDefinition {
        AttributeDefinition {
            key: "9830_2".into(),
            name: "A".into(),
            attribute_type: t,
            multi_value: multi,
        }
    }

    #[test]
    fn constants_lists_and_list_fields() {
        let p = product();
        let scope = Scope::of(&p);
        let render = |s: ValueSource| MappedValue::parse(&s).unwrap().render(&scope);
        assert_eq!(render("'in review'".into()), json!("in review"));
        assert_eq!(render("claims".into()), json!(["food safe", "ATEX"]));
        assert_eq!(render("{id}-{claims}".into()), json!("p1-food safe, ATEX"));
        assert_eq!(render("missing".into()), Value::Null);
        let list = ValueSource::List(vec!["article_number".into()]);
        assert_eq!(render(list), json!(["4711"]));
        let mixed = ValueSource::List(vec!["claims".into(), "'CE'".into(), "missing".into()]);
        assert_eq!(render(mixed), json!(["food safe", "ATEX", "CE"]));
        let bare = Term::parse("in review").unwrap_err();
        assert!(bare.contains("'in review'"), "{bare}");
    }

    #[test]
    fn coerces_to_the_attribute_type() {
        let int = attr(AttributeType::Integer, false);
        assert_eq!(coerce(&int, json!("42")).unwrap(), json!(42));
        assert!(coerce(&int, json!("4a")).unwrap_err().contains("integer"));
        assert!(
            coerce(&int, json!(["1", "2"]))
                .unwrap_err()
                .contains("2 values")
        );
        let multi = attr(AttributeType::Text, true);
        assert_eq!(coerce(&multi, json!("a")).unwrap(), json!(["a"]));
        assert_eq!(coerce(&multi, Value::Null).unwrap(), json!([]));
        let date = attr(AttributeType::Date, false);
        assert!(coerce(&date, json!("2025-01-31")).is_ok());
        assert!(coerce(&date, json!("2025-01-01T00:00:00.000Z")).is_ok());
        assert!(coerce(&date, json!("31.01.2025")).is_err());
        let flag = attr(AttributeType::Boolean, false);
        assert_eq!(coerce(&flag, json!("true")).unwrap(), json!(true));
        assert!(field_type_fits("CEInteger", &date).is_some());
        assert!(field_type_fits("CETimestamp", &date).is_none());
        assert!(field_type_fits("CEVarcharList", &attr(AttributeType::Text, false)).is_some());
        assert!(field_type_fits("CEVarcharList", &multi).is_none());
    }
}
