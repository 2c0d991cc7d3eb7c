//! The chart's values schema describes `config.flows` exactly as the binary reads it: the flow
//! part of `helm/xecm-bridge/values.schema.json` is generated from the Rust types of the
//! `[flows]` configuration (their serde attributes included: unknown keys refused, defaults
//! optional), and this test fails when the two differ. After changing those types, regenerate
//! with `XECM_BLESS_SCHEMA=1 cargo test values_schema`.

use schemars::generate::SchemaSettings;
use serde_json::Value;
use xecm_bridge::flows::FlowsConfig;

const VALUES_SCHEMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/helm/xecm-bridge/values.schema.json"
);

/// The draft-07 schema of `[flows]` (Helm validates values with draft 07), and its definitions.
fn generated() -> (Value, serde_json::Map<String, Value>) {
    let root = SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<FlowsConfig>();
    let mut root = serde_json::to_value(root).expect("schema serializes");
    strip_number_formats(&mut root);
    let object = root.as_object_mut().expect("an object schema");
    object.remove("$schema");
    object.remove("title");
    let definitions = match object.remove("definitions") {
        Some(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    (root, definitions)
}

/// schemars marks integer widths (`"format": "uint64"`); validators may reject unknown formats
/// and the width is checked by the binary anyway.
fn strip_number_formats(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map
                .get("format")
                .and_then(Value::as_str)
                .is_some_and(|f| f.starts_with("int") || f.starts_with("uint") || f == "double")
            {
                map.remove("format");
            }
            map.values_mut().for_each(strip_number_formats);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_number_formats),
        _ => {}
    }
}

#[test]
fn the_values_schema_describes_flows_as_the_binary_reads_them() {
    let text = std::fs::read_to_string(VALUES_SCHEMA).expect("values.schema.json");
    let mut schema: Value = serde_json::from_str(&text).expect("values.schema.json is JSON");
    let (flows, definitions) = generated();
    assert!(
        flows["additionalProperties"] == Value::Bool(false),
        "unknown flows are refused, as the binary refuses them"
    );

    if std::env::var_os("XECM_BLESS_SCHEMA").is_some() {
        schema["properties"]["config"]["properties"]["flows"] = flows;
        let existing = schema["definitions"].as_object_mut().expect("definitions");
        existing.extend(definitions);
        let pretty = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        std::fs::write(VALUES_SCHEMA, pretty).expect("write values.schema.json");
        return;
    }

    assert_eq!(
        schema["properties"]["config"]["properties"]["flows"], flows,
        "config.flows in values.schema.json is not the generated schema; \
         regenerate with XECM_BLESS_SCHEMA=1 cargo test values_schema"
    );
    for (name, definition) in &definitions {
        assert_eq!(
            &schema["definitions"][name], definition,
            "definition `{name}` in values.schema.json is not the generated one; \
             regenerate with XECM_BLESS_SCHEMA=1 cargo test values_schema"
        );
    }
}
