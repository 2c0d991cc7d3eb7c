//! Shared test helpers: an in-process bridge on a loopback port with its own SQLite store, and an
//! independent Standard Webhooks signer (written here with `hmac` directly, not the bridge's code).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use xecm_bridge::config::Settings;
use xecm_bridge::server::{self, Role};
use xecm_bridge::store::Store;

pub mod cluster;
mod db;
#[allow(unused_imports)]
pub use db::*;

pub const ALLPORTAL_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const OPENTEXT_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
pub const OTHER_SECRET: &str = "whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldCBrZXk=";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

pub struct TestApp {
    pub addr: SocketAddr,
    pub store: Arc<dyn Store>,
    pub dir: TempDir,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Graceful shutdown, as on SIGTERM.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server result");
        }
    }
}

/// The configuration every test starts from: both sources on Standard Webhooks, an admin token,
/// and a store in `dir`. `extra` is TOML merged on top.
pub fn test_settings(dir: &TempDir, extra: &str) -> Settings {
    let base = format!(
        r#"
[server]
drain_secs = 0
[store]
url = "sqlite://{}/bridge.db"
[admin]
token = "{ADMIN_TOKEN}"
[sources.allportal]
secrets = ["{ALLPORTAL_SECRET}"]
[sources.opentext]
secrets = ["{OPENTEXT_SECRET}"]
"#,
        dir.path().display()
    );
    Settings::from_toml(&[&base, extra]).expect("test settings are valid")
}

pub async fn spawn_app(extra: &str) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = test_settings(&dir, extra);
    spawn_with(settings, dir).await
}

pub async fn spawn_with(settings: Settings, dir: TempDir) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = server::build_state(settings).await.expect("state");
    let store = state.store.clone();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server::run(state, Role::All, listener, shutdown.clone()));
    TestApp {
        addr,
        store,
        dir,
        shutdown,
        task: Some(task),
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>` with the key from `whsec_<base64>`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("secret is base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("v1,{signature}")
}

/// A signed webhook request ready to send.
pub fn signed(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    id: &str,
    body: &[u8],
) -> reqwest::RequestBuilder {
    let ts = now();
    client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sign(secret, id, ts, body))
        .body(body.to_vec())
}

pub fn product_event(object_id: &str) -> Vec<u8> {
    serde_json::json!({
        "event": "moduleobject_modify",
        "module": "product",
        "object_id": object_id,
    })
    .to_string()
    .into_bytes()
}
