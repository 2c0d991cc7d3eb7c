//! Master-data snapshots: the selected fields of an object as canonical JSON (machine-readable)
//! and as a small, self-contained HTML page a product manager can open. Neither contains the
//! modification time, so unchanged data renders to identical bytes (and causes no upload).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::fields::value_text;
use crate::clients::allportal::ModuleObject;

/// The snapshot's data: field → values with their dimensions, in field-name order.
pub fn snapshot_json(object: &ModuleObject, fields: &[String]) -> Value {
    let selected: BTreeMap<&str, Value> = object
        .fields
        .iter()
        .filter(|(name, _)| fields.is_empty() || fields.iter().any(|f| f == *name))
        .map(|(name, values)| {
            let values: Vec<Value> = values
                .iter()
                .map(|v| json!({"value": v.value, "dimensions": v.dimensions}))
                .collect();
            (name.as_str(), Value::Array(values))
        })
        .collect();
    json!({
        "module": object.module,
        "id": object.id,
        "fields": selected,
    })
}

/// Pretty JSON bytes of [`snapshot_json`].
pub fn snapshot_json_bytes(object: &ModuleObject, fields: &[String]) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(&snapshot_json(object, fields))
        .expect("JSON values always serialize");
    bytes.push(b'\n');
    bytes
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// One row of a rendered table.
pub struct Row {
    pub cells: Vec<String>,
}

/// A complete HTML page with a title, an optional lead paragraph and one table.
pub fn html_page(title: &str, lead: Option<&str>, header: &[&str], rows: &[Row]) -> Vec<u8> {
    let mut html = String::new();
    html.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    html.push_str(&format!("<title>{}</title>\n", escape_html(title)));
    html.push_str(
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
         th,td{border:1px solid #999;padding:4px 8px;text-align:left;vertical-align:top}\
         th{background:#eee}</style>\n</head>\n<body>\n",
    );
    html.push_str(&format!("<h1>{}</h1>\n", escape_html(title)));
    if let Some(lead) = lead {
        html.push_str(&format!("<p>{}</p>\n", escape_html(lead)));
    }
    html.push_str("<table>\n<thead><tr>");
    for h in header {
        html.push_str(&format!("<th>{}</th>", escape_html(h)));
    }
    html.push_str("</tr></thead>\n<tbody>\n");
    for row in rows {
        html.push_str("<tr>");
        for cell in &row.cells {
            html.push_str(&format!("<td>{}</td>", escape_html(cell)));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</tbody>\n</table>\n</body>\n</html>\n");
    html.into_bytes()
}

fn dimensions_text(dimensions: &Option<BTreeMap<String, String>>) -> String {
    match dimensions {
        None => "all".into(),
        Some(d) if d.is_empty() => "all".into(),
        Some(d) => d
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The human-readable rendering: one row per field value with its locale/channel.
pub fn snapshot_html(object: &ModuleObject, fields: &[String], title: &str) -> Vec<u8> {
    let mut rows = Vec::new();
    for (name, values) in &object.fields {
        if !(fields.is_empty() || fields.iter().any(|f| f == name)) {
            continue;
        }
        for v in values {
            rows.push(Row {
                cells: vec![
                    name.clone(),
                    dimensions_text(&v.dimensions),
                    value_text(&v.value).unwrap_or_default(),
                ],
            });
        }
    }
    let lead = format!(
        "{} {} — master data as held in 4ALLPORTAL.",
        object.module.as_deref().unwrap_or("object"),
        object.id
    );
    html_page(title, Some(&lead), &["Field", "Dimensions", "Value"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(name: &str) -> ModuleObject {
        serde_json::from_value(json!({
            "id": "p1", "module": "product", "mod_time": "2025-01-01T00:00:00.000Z",
            "name": [{"value": name, "dimensions": {"locale": "en_US"}}],
            "status": [{"value": "launch_ready", "dimensions": null}]
        }))
        .unwrap()
    }

    #[test]
    fn json_snapshot_selects_fields_and_ignores_mod_time() {
        let mut p = product("Pump");
        let a = snapshot_json_bytes(&p, &["name".into()]);
        p.mod_time = Some("2026-01-01T00:00:00.000Z".into());
        assert_eq!(a, snapshot_json_bytes(&p, &["name".into()]));
        let v: Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["fields"]["name"][0]["value"], "Pump");
        assert!(v["fields"].get("status").is_none());
    }

    #[test]
    fn html_escapes_values() {
        let html = String::from_utf8(snapshot_html(&product("<b>&"), &[], "T <1>")).unwrap();
        assert!(html.contains("&lt;b&gt;&amp;"));
        assert!(html.contains("<title>T &lt;1&gt;</title>"));
        assert!(html.contains("locale: en_US"));
        assert!(!html.contains("<b>&"));
    }
}
