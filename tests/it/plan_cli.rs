//! `xecm-bridge plan --event FILE`: the real binary, with the example mapping, against both
//! simulators, prints every operation the launch flow would perform and writes nothing.

use std::process::Command;

use xecm_bridge::sim::allportal::{self, AllportalSimOptions, ids};
use xecm_bridge::sim::opentext::{self, OpentextSimOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_lists_the_launch_operations_and_writes_nothing() {
    let loopback = "127.0.0.1:0".parse().unwrap();
    let options = AllportalSimOptions {
        seed: Some(allportal::sample_catalogue()),
        ..AllportalSimOptions::default()
    };
    let ap = allportal::spawn(loopback, options).await.unwrap();
    let ot = opentext::spawn(loopback, OpentextSimOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml"))
            .unwrap();
    // Later tables of the same name are not allowed in TOML, so the overrides come as env vars.
    std::fs::write(dir.path().join("bridge.toml"), example).unwrap();
    let event = dir.path().join("event.json");
    let body = serde_json::json!({"event": "moduleobject_modify", "module": "product", "object_id": ids::PRODUCT_PUMP_A100});
    std::fs::write(&event, body.to_string()).unwrap();

    let run = {
        let (binary, dir, event) = (
            env!("CARGO_BIN_EXE_xecm-bridge"),
            dir.path().to_owned(),
            event.clone(),
        );
        let (ap_url, ot_url) = (ap.base_url(), ot.base_url());
        tokio::task::spawn_blocking(move || {
            Command::new(binary)
                .args(["plan", "--config"])
                .arg(dir.join("bridge.toml"))
                .arg("--event")
                .arg(&event)
                .args(["--flow", "launch"])
                .env(
                    "XECM_BRIDGE__STORE__URL",
                    format!("sqlite://{}/bridge.db", dir.display()),
                )
                .env("XECM_BRIDGE__ALLPORTAL__BASE_URL", ap_url)
                .env("XECM_BRIDGE__OPENTEXT__BASE_URL", ot_url)
                .env("RUST_LOG", "warn")
                .output()
                .unwrap()
        })
    };
    let output = run.await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    let plan = &printed["plans"][0];
    assert_eq!(plan["flow"], "launch");
    let actions: Vec<&str> = plan["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions.first(), Some(&"create_workspace"), "{plan}");
    assert!(actions.contains(&"upload_document"), "{actions:?}");
    let writes: Vec<_> = ot
        .requests()
        .into_iter()
        .filter(|r| r.is_write() && !r.path.ends_with("/auth"))
        .collect();
    assert!(writes.is_empty(), "a plan writes nothing: {writes:?}");
}
