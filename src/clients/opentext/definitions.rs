//! What OpenText is configured with, read for checking a mapping: category definitions
//! (attribute types, from the category create form), workspace types with their templates,
//! and legal holds.
//!
//! Category definitions do not change while the bridge runs; each is read once per process
//! and cached in the client.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::OpentextClient;
use super::routes::{CATEGORY_CREATE_FORM, HOLDS, WORKSPACE_TYPES};
use super::types::{NodeId, as_i64, list_items};
use crate::clients::error::UpstreamError;

/// The type of a category attribute, as its category form describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum AttributeType {
    Text,
    Integer,
    Real,
    Date,
    Boolean,
    /// A Content Server user, given by the user's numeric id.
    User,
    /// A type the bridge does not check (sets, …); values are sent unchecked.
    Other(String),
}

impl std::fmt::Display for AttributeType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttributeType::Text => f.write_str("text"),
            AttributeType::Integer => f.write_str("integer"),
            AttributeType::Real => f.write_str("real number"),
            AttributeType::Date => f.write_str("date"),
            AttributeType::Boolean => f.write_str("boolean"),
            AttributeType::User => f.write_str("user"),
            AttributeType::Other(name) => f.write_str(name),
        }
    }
}

/// One attribute of a category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttributeDefinition {
    /// `{category}_{attribute}`.
    pub key: String,
    pub name: String,
    pub attribute_type: AttributeType,
    /// Takes several values (sent as a JSON array).
    pub multi_value: bool,
}

impl AttributeDefinition {
    /// `` `Name` (multi-value text) `` for messages.
    pub fn describe(&self) -> String {
        let multi = if self.multi_value { "multi-value " } else { "" };
        format!("`{}` ({multi}{})", self.name, self.attribute_type)
    }
}

/// A category and its attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CategoryDefinition {
    pub id: i64,
    pub name: String,
    pub attributes: Vec<AttributeDefinition>,
}

impl CategoryDefinition {
    pub fn attribute(&self, key: &str) -> Option<&AttributeDefinition> {
        self.attributes.iter().find(|a| a.key == key)
    }
}

/// A workspace type registered for a business object type, with its templates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkspaceType {
    pub id: i64,
    pub name: String,
    /// `(id, name)` of each template.
    pub templates: Vec<(NodeId, String)>,
    pub rm_enabled: bool,
}

/// A legal or other hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hold {
    pub id: i64,
    pub name: String,
}

impl OpentextClient {
    /// The definition of `category` (`GET /v1/forms/nodes/categories/create?id=<node>&
    /// category_id=<category>`, the Alpaca form for applying it to `node`; any container the
    /// category may be applied to will do). Read once per process, then cached.
    pub async fn category_definition(
        &self,
        node: NodeId,
        category: i64,
    ) -> Result<Arc<CategoryDefinition>, UpstreamError> {
        if let Some(found) = self.cached_category(category) {
            return Ok(found);
        }
        let (node, cat) = (node.to_string(), category.to_string());
        let answer = self
            .call_json(CATEGORY_CREATE_FORM, &[], |r| {
                r.query(&[("id", node.as_str()), ("category_id", cat.as_str())])
            })
            .await?;
        let definition = Arc::new(parse_category_form(category, &answer)?);
        self.inner
            .categories
            .write()
            .expect("category cache poisoned")
            .insert(category, definition.clone());
        Ok(definition)
    }

    /// A category definition already read by this process.
    pub fn cached_category(&self, category: i64) -> Option<Arc<CategoryDefinition>> {
        self.inner
            .categories
            .read()
            .expect("category cache poisoned")
            .get(&category)
            .cloned()
    }

    /// The workspace types registered for `bo_type` of this bridge's external system
    /// (`GET /v2/businessworkspacetypes`), with their templates.
    pub async fn workspace_types(
        &self,
        bo_type: &str,
    ) -> Result<Vec<WorkspaceType>, UpstreamError> {
        let ext = self.ext_system_id().to_string();
        let answer = self
            .call_json(WORKSPACE_TYPES, &[], |r| {
                r.query(&[("ext_system_id", ext.as_str()), ("bo_type", bo_type)])
            })
            .await?;
        Ok(list_items(&answer)
            .into_iter()
            .filter_map(|item| {
                let p = item.pointer("/data/properties")?;
                let templates = p
                    .get("templates")
                    .and_then(Value::as_array)
                    .map(|ts| {
                        ts.iter()
                            .filter_map(|t| Some((as_i64(t.get("id")?)?, text(t, "name"))))
                            .collect()
                    })
                    .unwrap_or_default();
                Some(WorkspaceType {
                    id: as_i64(p.get("wksp_type_id")?)?,
                    name: text(p, "wksp_type_name"),
                    templates,
                    rm_enabled: p.get("rm_enabled").and_then(Value::as_bool) == Some(true),
                })
            })
            .collect())
    }

    /// Every hold (`GET /v1/holds`).
    pub async fn holds(&self) -> Result<Vec<Hold>, UpstreamError> {
        let answer = self.call_json(HOLDS, &[], |r| r).await?;
        let list = answer
            .get("data")
            .or_else(|| answer.pointer("/results/data/holds"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(list
            .iter()
            .filter_map(|h| {
                Some(Hold {
                    id: as_i64(h.get("HoldID")?)?,
                    name: text(h, "HoldName"),
                })
            })
            .collect())
    }
}

fn text(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Reads a category create form: `schema.properties["<cat>_<attr>"]` gives each attribute's
/// title and JSON type (`array` for a multi-value attribute, its item type under `items`);
/// `options.fields["<cat>_<attr>"].type` refines it (`date`, `otcs_user_picker`). The form may
/// come bare or wrapped as `forms[0]`.
pub(crate) fn parse_category_form(
    category: i64,
    answer: &Value,
) -> Result<CategoryDefinition, UpstreamError> {
    let form = answer.pointer("/forms/0").unwrap_or(answer);
    let properties = form
        .pointer("/schema/properties")
        .and_then(Value::as_object)
        .ok_or_else(|| UpstreamError::decode("category form without schema.properties"))?;
    let cat = category.to_string();
    let prefix = format!("{category}_");
    let mut attributes = Vec::new();
    for (key, schema) in properties {
        if !key.starts_with(&prefix) || *key == format!("{category}_1") {
            continue;
        }
        let option = form
            .pointer(&format!("/options/fields/{key}/type"))
            .and_then(Value::as_str);
        let (json_type, multi_value) = match schema.get("type").and_then(Value::as_str) {
            Some("array") if schema.pointer("/items/properties").is_some() => ("set", true),
            Some("array") => (
                schema
                    .pointer("/items/type")
                    .and_then(Value::as_str)
                    .unwrap_or("string"),
                true,
            ),
            Some(t) => (t, false),
            None => ("string", false),
        };
        let option = option.or_else(|| {
            form.pointer(&format!("/options/fields/{key}/fields/item/type"))
                .and_then(Value::as_str)
        });
        let attribute_type = match (json_type, option) {
            (_, Some("date" | "datetime")) => AttributeType::Date,
            (_, Some(o)) if o.contains("user") => AttributeType::User,
            ("string", _) if schema.get("format").and_then(Value::as_str) == Some("date") => {
                AttributeType::Date
            }
            ("string", _) => AttributeType::Text,
            ("integer", _) => AttributeType::Integer,
            ("number", _) => AttributeType::Real,
            ("boolean", _) => AttributeType::Boolean,
            (other, _) => AttributeType::Other(other.to_string()),
        };
        attributes.push(AttributeDefinition {
            key: key.clone(),
            name: text(schema, "title"),
            attribute_type,
            multi_value,
        });
    }
    let name = form
        .pointer("/schema/title")
        .and_then(Value::as_str)
        .or_else(|| {
            form.pointer(&format!("/options/fields/{cat}_1/label"))
                .and_then(Value::as_str)
        })
        .unwrap_or_default()
        .to_string();
    Ok(CategoryDefinition {
        id: category,
        name,
        attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_types_and_multi_value_from_the_form() {
        let form = json!({"forms": [{
            "data": {"9830_2": null, "9830_3": []},
            "options": {"fields": {
                "9830_4": {"type": "date"},
                "9830_5": {"type": "otcs_user_picker"}
            }},
            "schema": {"title": "Product Data", "properties": {
                "9830_1": {"type": "object"},
                "9830_2": {"title": "Article Number", "type": "string"},
                "9830_3": {"title": "Claims", "type": "array", "items": {"type": "string"}},
                "9830_4": {"title": "Launch Date", "type": "string"},
                "9830_5": {"title": "Owner", "type": "integer"},
                "9830_6": {"title": "Units", "type": "integer"}
            }}
        }]});
        let def = parse_category_form(9830, &form).unwrap();
        assert_eq!(def.name, "Product Data");
        let t = |k: &str| {
            def.attribute(k)
                .map(|a| (a.attribute_type.clone(), a.multi_value))
        };
        assert_eq!(t("9830_1"), None);
        assert_eq!(t("9830_2"), Some((AttributeType::Text, false)));
        assert_eq!(t("9830_3"), Some((AttributeType::Text, true)));
        assert_eq!(t("9830_4"), Some((AttributeType::Date, false)));
        assert_eq!(t("9830_5"), Some((AttributeType::User, false)));
        assert_eq!(t("9830_6"), Some((AttributeType::Integer, false)));
    }
}
