//! Category values through the real binary against both simulators: a list reaches a
//! multi-value attribute as a JSON array with one item per value, a constant is sent as
//! written, an unchanged array is not written again, and a value that does not fit the
//! attribute's type fails the event for good, naming the attribute and the object.

use serde_json::{Value, json};

use crate::common::ADMIN_TOKEN;
use crate::common::cluster::{BridgeProcess, FAST_WORKER, Sims, free_port, write_config_for};
use xecm_bridge::sim::allportal::ids;

/// A bridge running the example `launch` mapping with `categories` added to its workspace.
async fn bridge(
    dir: &std::path::Path,
    sims: &Sims,
    categories: &[(&str, toml::Value)],
) -> BridgeProcess {
    let port = free_port();
    let store = format!("sqlite://{}/bridge.db", dir.display());
    let path = write_config_for(dir, "bridge", port, &store, sims, &["launch"], FAST_WORKER);
    let mut doc: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    let cats = doc["flows"]["launch"]["workspace"]["categories"]
        .as_table()
        .unwrap()
        .clone();
    let mut cats = cats;
    for (key, value) in categories {
        cats.insert((*key).into(), value.clone());
    }
    let ws = doc
        .get_mut("flows")
        .and_then(|f| f.get_mut("launch"))
        .and_then(|l| l.get_mut("workspace"))
        .and_then(toml::Value::as_table_mut)
        .unwrap();
    ws.insert("categories".into(), toml::Value::Table(cats));
    std::fs::write(&path, toml::to_string(&doc).unwrap()).unwrap();
    BridgeProcess::start(&path, port).await
}

fn launch_workspace(sims: &Sims) -> Value {
    sims.ot.state()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| {
            n["workspace"]["references"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["bo_type"] == "product" && r["bo_id"] == ids::PRODUCT_PUMP_A100)
        })
        .cloned()
        .expect("launch workspace")
}

#[tokio::test(flavor = "multi_thread")]
async fn list_fields_go_as_arrays_and_constants_as_written() {
    let sims = Sims::start(0, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let bridge = bridge(
        dir.path(),
        &sims,
        &[
            ("9830_9", "'pending'".into()),
            ("9830_11", "mod_time".into()),
            // A list: the claims field's items, then a constant; one JSON array.
            (
                "9830_10",
                toml::Value::Array(vec!["claims".into(), "'CE marked'".into()]),
            ),
        ],
    )
    .await;
    bridge.webhook("msg_1", ids::PRODUCT_PUMP_A100).await;
    bridge.settle().await;
    let ws = launch_workspace(&sims);
    let cat = &ws["categories"]["9830"];
    // A joined string would be stored as one item "energy efficient, CE marked".
    assert_eq!(
        cat["9830_10"],
        json!(["energy efficient", "CE marked"]),
        "{cat}"
    );
    assert!(
        cat["9830_11"].as_str().is_some_and(|d| d.starts_with("20")),
        "{cat}"
    );
    assert_eq!(cat["9830_9"], "pending", "{cat}");
    assert_eq!(cat["9830_2"], "4711", "{cat}");
    // Nothing changed: a second event writes no category (arrays compare item by item).
    sims.ot.clear_requests();
    bridge.webhook("msg_2", ids::PRODUCT_PUMP_A100).await;
    bridge.settle().await;
    let category_writes: Vec<String> = sims
        .ot
        .requests()
        .into_iter()
        .filter(|r| r.is_write() && r.path.contains("/categories"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(category_writes.is_empty(), "{category_writes:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_value_that_does_not_fit_the_attribute_fails_for_good() {
    let sims = Sims::start(0, 0).await;
    let dir = tempfile::tempdir().unwrap();
    // Launch Date is a Date attribute; packaging holds text such as "carton".
    let bridge = bridge(dir.path(), &sims, &[("9830_11", "packaging".into())]).await;
    bridge.webhook("msg_1", ids::PRODUCT_PUMP_A100).await;
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let dead = loop {
        let answer: Value = http
            .get(format!("{}/api/v1/events?state=dead", bridge.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(event) = answer["events"].as_array().and_then(|e| e.first()) {
            break event.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dead letter: {answer}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let error = dead["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("9830_11"), "{dead}");
    assert!(error.contains(ids::PRODUCT_PUMP_A100), "{dead}");
    assert!(error.contains("`Launch Date` (date)"), "{dead}");
    // Failed at the first attempt (a mapping error is not retried), and nothing was created.
    assert_eq!(dead["attempts"], 1, "{dead}");
    let creates = sims
        .ot
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/api/v2/businessworkspaces"))
        .count();
    assert_eq!(creates, 0);
}
