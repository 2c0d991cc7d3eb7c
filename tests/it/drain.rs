//! Graceful drain of the real binary on SIGTERM, for each `serve --role`: `/readyz` turns 503 at
//! once, the listener keeps accepting (new connections too) and answering for
//! `server.drain_secs`, deliveries sent meanwhile get 202 and are stored, and the process then
//! exits with status 0 within `server.shutdown_timeout_secs`.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::cluster::free_port;
use common::*;
use reqwest::StatusCode;
use tokio::time::{Instant, sleep};

const DRAIN_SECS: u64 = 3;
const SHUTDOWN_TIMEOUT_SECS: u64 = 10;
/// Hang guard for start-up; never a timing assertion.
const START_GUARD: Duration = Duration::from_secs(60);

struct Bridge {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Bridge {
    fn start(dir: &Path, role: &str) -> Bridge {
        let port = free_port();
        let config = dir.join("bridge.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[server]
listen = "127.0.0.1:{port}"
drain_secs = {DRAIN_SECS}
shutdown_timeout_secs = {SHUTDOWN_TIMEOUT_SECS}
[store]
url = "sqlite://{store}/bridge.db"
[admin]
token = "{ADMIN_TOKEN}"
[sources.allportal]
secrets = ["{ALLPORTAL_SECRET}"]
[sources.opentext]
secrets = ["{OPENTEXT_SECRET}"]
[worker]
poll_interval_ms = 50
shutdown_grace_secs = 2
reconcile_allportal_interval_secs = 0
reconcile_opentext_interval_secs = 0
"#,
                store = dir.display()
            ),
        )
        .expect("write config");
        let log = dir.join("bridge.log");
        let child = Command::new(env!("CARGO_BIN_EXE_xecm-bridge"))
            .args(["serve", "--role", role, "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start the bridge");
        Bridge {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn fail(&self, message: &str) -> ! {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        panic!("{message}\n--- bridge log ---\n{log}");
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_GUARD;
        while Instant::now() < deadline {
            if let Ok(r) = reqwest::get(self.url("/readyz")).await
                && r.status().is_success()
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.fail(&format!("the bridge exited at start: {status}"));
            }
            sleep(Duration::from_millis(50)).await;
        }
        self.fail("the bridge did not become ready");
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the exit; fails after the shutdown timeout plus a margin for process teardown.
    async fn wait_exit(&mut self, signalled: Instant) -> std::process::ExitStatus {
        let limit = Duration::from_secs(SHUTDOWN_TIMEOUT_SECS + 5);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if signalled.elapsed() > limit {
                let _ = self.child.kill();
                self.fail("the bridge did not exit within the shutdown timeout");
            }
            sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new client per request, so every request opens a new connection to the listener.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

async fn drain(role: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bridge = Bridge::start(dir.path(), role);
    bridge.wait_ready().await;
    let takes_webhooks = role != "worker";

    bridge.sigterm();
    let signalled = Instant::now();
    // Readiness turns at once (the loop only covers the signal's delivery).
    loop {
        let status = reqwest::get(bridge.url("/readyz"))
            .await
            .unwrap_or_else(|e| bridge.fail(&format!("readyz during the drain: {e}")))
            .status();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(DRAIN_SECS),
            "readyz stayed {status}"
        );
        sleep(Duration::from_millis(10)).await;
    }

    // Until the drain window ends, every request on a new connection is served.
    let mut sent = 0;
    while signalled.elapsed() < Duration::from_secs(DRAIN_SECS) - Duration::from_millis(700) {
        let client = fresh_client();
        let health = client.get(bridge.url("/healthz")).send().await;
        match health {
            Ok(r) => assert_eq!(r.status(), StatusCode::OK),
            Err(e) => bridge.fail(&format!("healthz during the drain: {e}")),
        }
        if takes_webhooks {
            let body = product_event(&format!("drain-{sent}"));
            let response = signed(
                &client,
                &bridge.url("/webhooks/allportal"),
                ALLPORTAL_SECRET,
                &format!("msg_drain_{sent}"),
                &body,
            )
            .send()
            .await
            .unwrap_or_else(|e| bridge.fail(&format!("delivery {sent} during the drain: {e}")));
            assert_eq!(response.status(), StatusCode::ACCEPTED, "delivery {sent}");
            sent += 1;
        }
        sleep(Duration::from_millis(50)).await;
    }
    let status = bridge.wait_exit(signalled).await;
    assert!(status.success(), "exit status {status}");
    // The listener was open for the drain window: the process did not exit before it ended.
    assert!(signalled.elapsed() >= Duration::from_secs(DRAIN_SECS));

    if takes_webhooks {
        assert!(sent > 0, "no delivery was sent during the drain");
        let text = std::fs::read_to_string(dir.path().join("bridge.toml")).unwrap();
        let settings = xecm_bridge::config::Settings::from_toml(&[&text]).expect("settings");
        let store = xecm_bridge::store::open(&settings.store)
            .await
            .expect("store");
        assert_eq!(store.count_events().await.unwrap(), sent as i64);
        store.close().await;
    }
}

#[tokio::test]
async fn role_all_drains_then_exits_cleanly() {
    drain("all").await;
}

#[tokio::test]
async fn role_api_drains_then_exits_cleanly() {
    drain("api").await;
}

#[tokio::test]
async fn role_worker_drains_then_exits_cleanly() {
    drain("worker").await;
}

/// A request that never completes (its body never comes) does not hold the exit: the process
/// still ends, with status 0, within the shutdown timeout.
#[tokio::test]
async fn a_stuck_request_does_not_hold_the_exit_past_the_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bridge = Bridge::start(dir.path(), "api");
    bridge.wait_ready().await;
    let address = bridge.base.trim_start_matches("http://").to_string();
    let mut stuck = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    stuck
        .write_all(
            b"POST /webhooks/allportal HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
              content-length: 100\r\nexpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let mut buf = [0u8; 128];
    let n = stuck.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 100"),
        "the request reached the handler"
    );

    bridge.sigterm();
    let signalled = Instant::now();
    let status = bridge.wait_exit(signalled).await;
    assert!(status.success(), "exit status {status}");
    assert!(signalled.elapsed() >= Duration::from_secs(DRAIN_SECS));
}
