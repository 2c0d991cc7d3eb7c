//! Field access on a 4ALLPORTAL object: `article_number`, `name@en_US`, `name@en_US/erp`,
//! `name@/erp` (channel only), plus the system keys `id`, `module`, `mod_time`, `type`, and
//! scoped names (`object.…`, `item.…`, `asset.…`) that say which object of a rule is meant.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::clients::allportal::ModuleObject;

/// System keys every object has; they need no schema entry.
pub const SYSTEM_KEYS: [&str; 4] = ["id", "module", "mod_time", "type"];

/// Which object of a rule a name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ScopeName {
    /// The object the event is about.
    Object,
    /// A related object the content is about (account, partner: each product).
    Item,
    /// A related file object (assets).
    Asset,
}

/// A parsed field reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRef {
    /// `None`: the nearest object of the rule (asset, else item, else object).
    pub scope: Option<ScopeName>,
    pub field: String,
    pub locale: Option<String>,
    pub channel: Option<String>,
}

impl FieldRef {
    /// Parses `[scope.]field[@locale[/channel]]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (name, dims) = match text.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (text, None),
        };
        let (scope, field) = match name.split_once('.') {
            Some(("object", f)) => (Some(ScopeName::Object), f),
            Some(("item", f)) => (Some(ScopeName::Item), f),
            Some(("asset", f)) => (Some(ScopeName::Asset), f),
            Some((other, _)) => {
                return Err(format!(
                    "`{text}`: unknown scope `{other}` (use object., item. or asset.)"
                ));
            }
            None => (None, name),
        };
        if field.is_empty()
            || !field
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!("`{text}` is not a field name"));
        }
        let (locale, channel) = match dims {
            None => (None, None),
            Some(d) => {
                let (l, c) = match d.split_once('/') {
                    Some((l, c)) => (l, Some(c)),
                    None => (d, None),
                };
                let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
                let locale = non_empty(l);
                let channel = c.and_then(non_empty);
                if locale.is_none() && channel.is_none() {
                    return Err(format!("`{text}`: `@` needs a locale and/or `/channel`"));
                }
                (locale, channel)
            }
        };
        Ok(Self {
            scope,
            field: field.to_string(),
            locale,
            channel,
        })
    }

    pub fn with_dimensions(mut self, locale: Option<&str>, channel: Option<&str>) -> Self {
        if self.locale.is_none() {
            self.locale = locale.map(str::to_string);
        }
        if self.channel.is_none() {
            self.channel = channel.map(str::to_string);
        }
        self
    }

    pub fn is_system(&self) -> bool {
        SYSTEM_KEYS.contains(&self.field.as_str())
    }

    /// The value on `object` (system keys included), best fitting the dimensions.
    pub fn value(&self, object: &ModuleObject) -> Option<Value> {
        match self.field.as_str() {
            "id" => return Some(Value::String(object.id.clone())),
            "module" => return object.module.clone().map(Value::String),
            "mod_time" => return object.mod_time.clone().map(Value::String),
            "type" => return object.object_type.clone().map(Value::String),
            _ => {}
        }
        object
            .value_for(&self.field, self.locale.as_deref(), self.channel.as_deref())
            .filter(|v| !v.is_null())
            .cloned()
    }
}

/// Text of a value as it appears in names and attributes: strings as they are, lists joined
/// with `, `, null as nothing.
pub fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(value_text)
                .collect::<Vec<_>>()
                .join(", "),
        ),
        other => Some(other.to_string()),
    }
}

/// The objects a rule can read, plus computed values (e.g. `data_hash`).
#[derive(Debug, Clone, Default)]
pub struct Scope<'a> {
    pub object: Option<&'a ModuleObject>,
    pub item: Option<&'a ModuleObject>,
    pub asset: Option<&'a ModuleObject>,
    /// Values computed by the flow, looked up by plain name before the objects.
    pub computed: BTreeMap<String, String>,
}

impl<'a> Scope<'a> {
    pub fn of(object: &'a ModuleObject) -> Self {
        Self {
            object: Some(object),
            ..Self::default()
        }
    }

    pub fn with_item(&self, item: &'a ModuleObject) -> Self {
        Self {
            item: Some(item),
            ..self.clone()
        }
    }

    pub fn with_asset(&self, asset: &'a ModuleObject) -> Self {
        Self {
            asset: Some(asset),
            ..self.clone()
        }
    }

    pub fn compute(mut self, name: &str, value: impl Into<String>) -> Self {
        self.computed.insert(name.to_string(), value.into());
        self
    }

    /// The nearest object (asset, else item, else object).
    pub fn nearest(&self) -> Option<&'a ModuleObject> {
        self.asset.or(self.item).or(self.object)
    }

    fn target(&self, scope: Option<ScopeName>) -> Option<&'a ModuleObject> {
        match scope {
            None => self.nearest(),
            Some(ScopeName::Object) => self.object,
            Some(ScopeName::Item) => self.item,
            Some(ScopeName::Asset) => self.asset,
        }
    }

    pub fn value(&self, field: &FieldRef) -> Option<Value> {
        if field.scope.is_none()
            && field.locale.is_none()
            && field.channel.is_none()
            && let Some(v) = self.computed.get(&field.field)
        {
            return Some(Value::String(v.clone()));
        }
        field.value(self.target(field.scope)?)
    }

    pub fn text(&self, field: &FieldRef) -> Option<String> {
        self.value(field).as_ref().and_then(value_text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn product() -> ModuleObject {
        serde_json::from_value(json!({
            "id": "p1", "module": "product", "mod_time": "2025-01-01T00:00:00.000Z",
            "name": [{"value": "Pump", "dimensions": {"locale": "en_US"}},
                     {"value": "Pumpe", "dimensions": {"locale": "de_DE"}}],
            "claims": [{"value": ["a", "b"], "dimensions": null}],
            "article_number": [{"value": "4711", "dimensions": null}]
        }))
        .unwrap()
    }

    #[test]
    fn parses_scopes_and_dimensions() {
        let f = FieldRef::parse("item.name@en_US/erp").unwrap();
        assert_eq!(f.scope, Some(ScopeName::Item));
        assert_eq!(f.field, "name");
        assert_eq!(f.locale.as_deref(), Some("en_US"));
        assert_eq!(f.channel.as_deref(), Some("erp"));
        let c = FieldRef::parse("name@/erp").unwrap();
        assert_eq!((c.locale, c.channel.as_deref()), (None, Some("erp")));
        assert!(FieldRef::parse("x.name").is_err());
        assert!(FieldRef::parse("na me").is_err());
        assert!(FieldRef::parse("name@").is_err());
    }

    #[test]
    fn reads_values_system_keys_and_computed() {
        let p = product();
        let scope = Scope::of(&p).compute("data_hash", "abc");
        let text = |s: &str| scope.text(&FieldRef::parse(s).unwrap());
        assert_eq!(text("name@de_DE").as_deref(), Some("Pumpe"));
        assert_eq!(text("article_number").as_deref(), Some("4711"));
        assert_eq!(text("claims").as_deref(), Some("a, b"));
        assert_eq!(text("id").as_deref(), Some("p1"));
        assert_eq!(text("data_hash").as_deref(), Some("abc"));
        assert_eq!(text("missing"), None);
        assert_eq!(text("asset.name"), None);
    }
}
