//! Every acknowledged event survives `kill -9`: the real binary gets a burst of signed webhooks,
//! is killed with SIGKILL while requests are still arriving, restarted, and every event that got
//! a 202 is found in the store.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use xecm_bridge::config::Settings;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("bridge.toml");
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
[store]
url = "sqlite://{}/bridge.db"
[sources.allportal]
secrets = ["{ALLPORTAL_SECRET}"]
[sources.opentext]
secrets = ["{OPENTEXT_SECRET}"]
"#,
        dir.display()
    );
    std::fs::write(&path, toml).unwrap();
    path
}

fn start(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_xecm-bridge"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the bridge")
}

async fn wait_healthy(client: &reqwest::Client, base: &str) {
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the bridge did not become ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    let mut bridge = start(&config);
    wait_healthy(&client, &base).await;

    // A burst from 32 concurrent senders; the process is killed while they are still sending.
    let url = format!("{base}/webhooks/allportal");
    let answered = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for sender in 0..32 {
        let client = client.clone();
        let url = url.clone();
        let answered = answered.clone();
        senders.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0.. {
                let id = format!("msg_{sender}_{n}");
                let body = product_event(&format!("{sender}-{n}"));
                match signed(&client, &url, ALLPORTAL_SECRET, &id, &body)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED => {
                        let receipt: serde_json::Value = match r.json().await {
                            Ok(v) => v,
                            Err(_) => break,
                        };
                        acknowledged
                            .push((id, receipt["accepted"][0].as_str().unwrap().to_string()));
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => break,
                }
            }
            acknowledged
        }));
    }
    // Kill once a good number of events were acknowledged, with requests still in flight.
    while answered.load(Ordering::Relaxed) < 300 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bridge.kill().expect("SIGKILL");
    bridge.wait().unwrap();
    let mut acknowledged = Vec::new();
    for sender in senders {
        acknowledged.extend(sender.await.unwrap());
    }
    assert!(
        acknowledged.len() >= 300,
        "only {} acknowledged",
        acknowledged.len()
    );

    // Restart on the same store; every acknowledged event is there, under the id it was given.
    let mut bridge = start(&config);
    wait_healthy(&client, &base).await;
    let settings = Settings::from_toml(&[&std::fs::read_to_string(&config).unwrap()]).unwrap();
    let store = xecm_bridge::store::open(&settings.store).await.unwrap();
    for (source_id, event_id) in &acknowledged {
        let event = store.get_event(event_id).await.unwrap();
        let event = event.unwrap_or_else(|| panic!("acknowledged event {source_id} lost"));
        assert_eq!(&event.source_event_id, source_id);
    }
    // A redelivery after the restart is recognised as a duplicate of the stored event.
    let (source_id, event_id) = &acknowledged[0];
    let n: Vec<&str> = source_id.trim_start_matches("msg_").split('_').collect();
    let body = product_event(&format!("{}-{}", n[0], n[1]));
    let receipt: serde_json::Value = signed(&client, &url, ALLPORTAL_SECRET, source_id, &body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(receipt["duplicates"][0].as_str(), Some(event_id.as_str()));
    store.close().await;
    bridge.kill().unwrap();
    bridge.wait().unwrap();
}

/// The disk guard answers before the disk fills: over its budget (`store.max_bytes`), webhooks
/// get 503 `store-full` with `Retry-After` and a problem body, `/readyz` says why, and nothing
/// is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_refuses_webhooks_and_says_why() {
    let app = spawn_app("[store]\nmax_bytes = 1\n").await;
    let client = reqwest::Client::new();
    let url = app.url("/webhooks/allportal");
    let response = signed(
        &client,
        &url,
        ALLPORTAL_SECRET,
        "msg_full",
        &product_event("1"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "60");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = response.json().await.unwrap();
    assert!(
        problem["type"].as_str().unwrap().ends_with("/store-full"),
        "{problem}"
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("store.max_bytes"),
        "{problem}"
    );

    let ready = client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let problem: serde_json::Value = ready.json().await.unwrap();
    assert!(
        problem["type"].as_str().unwrap().ends_with("/store-full"),
        "{problem}"
    );
    assert_eq!(app.store.count_events().await.unwrap(), 0, "nothing stored");
    app.stop().await;
}
