//! What operators read agrees with what the binary emits: the metric table in
//! `docs/operations.md`, the alert rules and the Grafana dashboard against a real `/metrics`
//! scrape, and the documented log fields against real JSON log lines. The bridge runs as the
//! real binary against both simulators; waits are bounded, nothing asserts timings.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::cluster::{DEADLINE, Sims, free_port, write_config};
use common::{ALLPORTAL_SECRET, signed};
use serde_json::{Value, json};
use tokio::time::Instant;
use xecm_bridge::sim::allportal::ids;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `xecm-bridge serve` with JSON logs at `info`, its stderr in a file.
struct Bridge {
    base: String,
    log: PathBuf,
    child: Child,
    http: reqwest::Client,
    _sims: Sims,
}

impl Bridge {
    async fn start(dir: &Path) -> Bridge {
        let sims = Sims::start(0, 0).await;
        let port = free_port();
        let store = format!("sqlite://{}/bridge.db", dir.display());
        let config = write_config(dir, "bridge", port, &store, &sims);
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str("\n[log]\nformat = \"json\"\nfilter = \"info\"\n");
        std::fs::write(&config, text).unwrap();
        let log = dir.join("bridge.log");
        let child = Command::new(env!("CARGO_BIN_EXE_xecm-bridge"))
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .expect("start the bridge");
        let bridge = Bridge {
            base: format!("http://127.0.0.1:{port}"),
            log,
            child,
            http: reqwest::Client::new(),
            _sims: sims,
        };
        bridge
            .wait_for("the bridge to become ready", || async {
                let ready = bridge.http.get(bridge.url("/readyz")).send().await;
                ready.is_ok_and(|r| r.status().is_success()).then_some(())
            })
            .await;
        bridge
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every log line, each parsed as one JSON object (a line that is not fails the test).
    fn log_lines(&self) -> Vec<serde_json::Map<String, Value>> {
        self.log_text()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| match serde_json::from_str::<Value>(line) {
                Ok(Value::Object(map)) => map,
                _ => panic!("a log line is not one JSON object: {line}"),
            })
            .collect()
    }

    async fn wait_for<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "waited in vain for {what}\n--- log ---\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn scrape(&self) -> String {
        let response = self.http.get(self.url("/metrics")).send().await.unwrap();
        assert!(response.status().is_success());
        response.text().await.unwrap()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One family of the exposition: its type, whether it has a `# HELP`, the label names seen.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: bool,
    labels: BTreeSet<String>,
    series: Vec<(BTreeMap<String, String>, f64)>,
}

/// Parses the Prometheus text format (as much as the exporter writes).
fn parse_exposition(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            families.entry(name.into()).or_default().kind = kind.into();
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest.split_once(' ').unwrap();
            families.entry(name.into()).or_default().help = true;
        } else if !line.is_empty() && !line.starts_with('#') {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|base| families.get(*base).is_some_and(|f| f.kind == "histogram"))
                })
                .unwrap_or(name);
            let labels: BTreeMap<String, String> = labels
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap();
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .filter(|(k, _)| k != "le")
                .collect();
            let entry = families.entry(family.into()).or_default();
            entry.labels.extend(labels.keys().cloned());
            entry
                .series
                .push((labels, value.parse().unwrap_or(f64::NAN)));
        }
    }
    families
}

/// The rows of the markdown table that follows `heading` in `docs/operations.md`: the first
/// column without backticks, and the other columns as written.
fn doc_table(heading: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(format!("{ROOT}/docs/operations.md")).unwrap();
    let section = text
        .split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("docs/operations.md has a `{heading}` section"));
    section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|row| {
            row.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().trim_matches('`').to_string())
                .collect()
        })
        .collect()
}

/// `a`, `b` → {a, b}; an empty cell → {}.
fn label_cell(cell: &str) -> BTreeSet<String> {
    cell.split(',')
        .map(|l| l.trim().trim_matches('`').to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Every metric name in a PromQL expression or dashboard query, histogram suffixes removed.
fn metric_names(expr: &str, families: &BTreeMap<String, Family>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        if word.starts_with("xecm_") || word.starts_with("process_") {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| word.strip_suffix(s).filter(|b| families.contains_key(*b)))
                .unwrap_or(&word);
            names.insert(base.to_string());
        }
        word.clear();
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_docs_alerts_and_dashboard_match_the_exposition() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = Bridge::start(dir.path()).await;
    // Before any webhook: a restarted bridge must already expose everything.
    let families = parse_exposition(&bridge.scrape().await);

    for (name, family) in &families {
        assert!(family.help, "`{name}` has a # HELP line");
    }
    let build = &families["xecm_build_info"];
    assert_eq!(build.series.len(), 1);
    assert_eq!(build.series[0].0["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(build.series[0].1, 1.0);
    let received = &families["xecm_webhooks_received_total"];
    for source in ["allportal", "opentext"] {
        assert!(
            received
                .series
                .iter()
                .any(|(labels, value)| labels["source"] == source && *value == 0.0),
            "xecm_webhooks_received_total{{source=\"{source}\"}} is 0 from the start"
        );
    }
    let outcomes = &families["xecm_flow_outcomes_total"];
    assert!(
        outcomes
            .series
            .iter()
            .any(|(l, _)| l["flow"] == "launch" && l["outcome"] == "success"),
        "the configured flow's outcomes are registered at start"
    );

    // The one family documented to appear with its first use: a rejected request.
    assert!(!families.contains_key("xecm_webhooks_rejected_total"));
    let rejected = bridge
        .http
        .post(bridge.url("/webhooks/allportal"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), reqwest::StatusCode::UNAUTHORIZED);
    let families = parse_exposition(&bridge.scrape().await);

    // The documented table, both ways: every documented family is exposed with its type and
    // labels, and every exposed family is documented.
    let rows = doc_table("## Metrics");
    assert!(!rows.is_empty(), "the metric table has rows");
    let mut documented = BTreeSet::new();
    for row in &rows {
        let (name, kind, labels) = (&row[0], &row[1], label_cell(&row[2]));
        documented.insert(name.clone());
        let family = families
            .get(name)
            .unwrap_or_else(|| panic!("documented `{name}` is not exposed"));
        assert_eq!(&family.kind, kind, "type of `{name}`");
        assert_eq!(family.labels, labels, "labels of `{name}`");
    }
    let exposed: BTreeSet<String> = families.keys().cloned().collect();
    let undocumented: Vec<_> = exposed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "exposed but not documented: {undocumented:?}"
    );

    // Alert rules (the example file and the chart's copy) and dashboard queries name only
    // exposed families.
    let rules_file = format!("{ROOT}/docs/alerts/prometheus-rules.yaml");
    let chart_rules = format!("{ROOT}/helm/xecm-bridge/files/prometheus-rules.yaml");
    let rules = std::fs::read_to_string(&rules_file).unwrap();
    assert_eq!(
        rules,
        std::fs::read_to_string(&chart_rules).unwrap(),
        "the chart ships the documented alert rules unchanged"
    );
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(&rules).unwrap();
    let mut alert_count = 0;
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let expr = rule["expr"].as_str().expect("expr");
            alert_count += 1;
            let names = metric_names(expr, &families);
            assert!(!names.is_empty(), "rule {rule:?} uses a metric");
            for name in names {
                assert!(
                    exposed.contains(&name),
                    "alert `{expr}` uses unknown `{name}`"
                );
            }
        }
    }
    assert!(
        alert_count >= 5,
        "the example rules cover the main failure modes"
    );

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{ROOT}/docs/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut queries = Vec::new();
    collect_exprs(&dashboard, &mut queries);
    assert!(queries.len() >= 8, "the dashboard has panels with queries");
    for expr in &queries {
        let names = metric_names(expr, &families);
        assert!(!names.is_empty(), "dashboard query `{expr}` uses a metric");
        for name in names {
            assert!(
                exposed.contains(&name),
                "dashboard query `{expr}` uses unknown `{name}`"
            );
        }
    }
}

/// `xecm-bridge healthcheck` as the image's HEALTHCHECK runs it: no configuration file, no
/// secrets, only the listen address in the environment (a wildcard address is probed on loopback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_needs_only_the_listen_address() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = Bridge::start(dir.path()).await;
    let port = bridge.base.rsplit(':').next().unwrap().to_string();
    let probe = |listen: String| {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_xecm-bridge"))
                .arg("healthcheck")
                .env_clear()
                .env("XECM_BRIDGE__SERVER__LISTEN", listen)
                .output()
                .expect("run healthcheck")
        })
    };
    let healthy = probe(format!("0.0.0.0:{port}")).await.unwrap();
    assert!(
        healthy.status.success(),
        "healthy server: {}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    let closed = probe(format!("127.0.0.1:{}", free_port())).await.unwrap();
    assert!(!closed.status.success(), "nothing listening: unhealthy");
    assert!(String::from_utf8_lossy(&closed.stderr).contains("unhealthy"));
}

fn collect_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_documented_fields_at_the_top_level() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = Bridge::start(dir.path()).await;
    let body = json!({
        "event": "moduleobject_modify",
        "module": "product",
        "object_id": ids::PRODUCT_PUMP_A100,
    })
    .to_string()
    .into_bytes();
    let url = bridge.url("/webhooks/allportal");
    let response = signed(&bridge.http, &url, ALLPORTAL_SECRET, "msg_logs_1", &body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let object_key = format!("product/{}", ids::PRODUCT_PUMP_A100);

    // The worker reconciles the object; its line names flow and object.
    let lines = bridge
        .wait_for("the launch flow to reconcile the object", || async {
            let lines = bridge.log_lines();
            lines
                .iter()
                .any(|l| l.get("message") == Some(&json!("reconciled")))
                .then_some(lines)
        })
        .await;

    for line in &lines {
        for nested in ["span", "spans", "fields"] {
            assert!(!line.contains_key(nested), "no nested `{nested}`: {line:?}");
        }
    }
    let with = |field: &str, value: &str| -> Vec<&serde_json::Map<String, Value>> {
        lines
            .iter()
            .filter(|l| l.get(field) == Some(&json!(value)))
            .collect()
    };

    // One access line for the request, with the request's fields at the top level.
    let access: Vec<_> = with("request_id", &request_id)
        .into_iter()
        .filter(|l| l.get("message") == Some(&json!("request")))
        .collect();
    assert_eq!(access.len(), 1, "one access line per request: {access:?}");
    assert_eq!(access[0]["method"], "POST");
    assert_eq!(access[0]["path"], "/webhooks/allportal");
    assert_eq!(access[0]["status"], 202);
    assert!(access[0]["duration_ms"].is_number());

    // The stored event: its id and object beside the request id.
    let stored = with("request_id", &request_id)
        .into_iter()
        .find(|l| l.get("message") == Some(&json!("event stored")))
        .expect("an `event stored` line");
    assert_eq!(stored["object_key"], object_key.as_str());
    assert_eq!(stored["source"], "allportal");
    assert!(stored["event_id"].as_str().is_some_and(|id| !id.is_empty()));

    let reconciled = with("object_key", &object_key)
        .into_iter()
        .find(|l| l.get("message") == Some(&json!("reconciled")))
        .expect("a `reconciled` line for the object");
    assert_eq!(reconciled["flow"], "launch");

    // Lists are arrays.
    let started = lines
        .iter()
        .find(|l| l.get("message") == Some(&json!("worker started")))
        .expect("a `worker started` line");
    assert_eq!(
        started["flows"],
        json!(["launch"]),
        "a list field is a JSON array"
    );

    // Every documented field occurs as a top-level value in the real output.
    let rows = doc_table("## Logs");
    assert!(rows.len() >= 5, "the log field table has rows");
    for row in rows {
        let field = &row[0];
        assert!(
            lines
                .iter()
                .any(|l| l.get(field).is_some_and(|v| v.is_string() || v.is_number())),
            "documented log field `{field}` appears top-level in the real log"
        );
    }
    for secret in [ALLPORTAL_SECRET, "sim-allportal-api-key"] {
        assert!(!bridge.log_text().contains(secret), "no secret in the log");
    }
}
