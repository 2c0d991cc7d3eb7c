//! Everything the demo runs in one process: both simulators, the bridge (HTTP and worker) on an
//! SQLite store in a temporary directory, and the settings that tie them together.

use std::path::PathBuf;

use anyhow::Context as _;
use base64::Engine as _;
use rand::RngCore as _;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clients::Upstreams;
use crate::config::Settings;
use crate::server::{self, Role};
use crate::sim::SimHandle;
use crate::sim::allportal::{self as ap_sim, AllportalSimOptions, sample_catalogue};
use crate::sim::opentext::{self as ot_sim, OpentextSimOptions};
use crate::store::Store;

/// The mapping of all seven flows against the simulators' sample catalogue; the demo uses it
/// unchanged so that what it shows is what `config/example.toml` configures.
const EXAMPLE: &str = include_str!("../../config/example.toml");

/// A temporary directory removed on drop (the store lives here).
pub struct TempDir(PathBuf);

impl TempDir {
    fn create() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("xecm-bridge-demo-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self(path))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Credentials made up for this run only. Only `--keep-running` prints the admin token and the
/// 4ALLPORTAL API key, because a person exploring the running systems needs them; the signing
/// secrets are never shown.
struct Secrets {
    allportal_webhook: String,
    opentext_callback: String,
    allportal_api_key: String,
    admin_token: String,
}

impl Secrets {
    fn generate() -> Self {
        Self {
            allportal_webhook: whsec(),
            opentext_callback: whsec(),
            allportal_api_key: random_token(),
            admin_token: random_token(),
        }
    }
}

fn random_bytes() -> [u8; 24] {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

fn whsec() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(random_bytes())
    )
}

fn random_token() -> String {
    hex::encode(random_bytes())
}

/// The running demo environment.
pub struct Stack {
    pub allportal: SimHandle,
    pub opentext: SimHandle,
    pub bridge_url: String,
    pub store: std::sync::Arc<dyn Store>,
    pub upstreams: Upstreams,
    pub admin_token: String,
    pub allportal_api_key: String,
    shutdown: CancellationToken,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    dir: TempDir,
}

impl Stack {
    /// Binds the bridge first (so the simulators know where to send their signed webhooks),
    /// starts the simulators with the sample data, then the bridge with its worker.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = TempDir::create()?;
        let secrets = Secrets::generate();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the bridge listener")?;
        let bridge_url = format!("http://{}", listener.local_addr()?);
        let allportal = ap_sim::spawn(
            "127.0.0.1:0".parse()?,
            AllportalSimOptions {
                api_key: secrets.allportal_api_key.clone(),
                webhook_url: Some(format!("{bridge_url}/webhooks/allportal").parse()?),
                webhook_secret: Some(secrets.allportal_webhook.clone()),
                // Every write, the bridge's own included, sends its change webhook, and before
                // the write is answered: the echo of a write-back races its response.
                auto_webhooks: true,
                webhooks_before_response: true,
                seed: Some(sample_catalogue()),
                ..AllportalSimOptions::default()
            },
        )
        .await
        .context("cannot start the 4ALLPORTAL simulator")?;
        let opentext = ot_sim::spawn(
            "127.0.0.1:0".parse()?,
            OpentextSimOptions {
                callback_url: Some(format!("{bridge_url}/webhooks/opentext").parse()?),
                callback_secret: Some(secrets.opentext_callback.clone()),
                ..OpentextSimOptions::default()
            },
        )
        .await
        .context("cannot start the OpenText simulator")?;
        let settings = settings(&dir, &secrets, &allportal, &opentext)?;
        let on_problem = settings.mapping_check.on_problem;
        let state = server::build_state(settings).await?;
        server::check_mapping(&state, on_problem).await?;
        let store = state.store.clone();
        let upstreams = state.upstreams.clone();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(server::run(state, Role::All, listener, shutdown.clone()));
        Ok(Self {
            allportal,
            opentext,
            bridge_url,
            store,
            upstreams,
            admin_token: secrets.admin_token,
            allportal_api_key: secrets.allportal_api_key,
            shutdown,
            server: Some(server),
            dir,
        })
    }

    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("bridge.db")
    }

    /// Stops the bridge (draining its worker), then the simulators; the store goes with the
    /// temporary directory.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.context("bridge task")??;
        }
        let Self {
            allportal,
            opentext,
            ..
        } = self;
        allportal.shutdown().await;
        opentext.shutdown().await;
        Ok(())
    }
}

/// The example configuration with only what a local run needs changed: listen address, store,
/// the simulators' URLs and this run's secrets; quick polling and retries, no reconciliation
/// pollers (every change in the demo arrives as a signed webhook or callback).
fn settings(
    dir: &TempDir,
    secrets: &Secrets,
    allportal: &SimHandle,
    opentext: &SimHandle,
) -> anyhow::Result<Settings> {
    let overrides = format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_timeout_secs = 5
drain_secs = 0
[store]
url = "sqlite://{store}"
[admin]
token = "{admin}"
[console]
enabled = true
cookie_secure = false
[log]
filter = "warn"
[sources.allportal]
secrets = [{ap_secret}]
[sources.opentext]
secrets = [{ot_secret}]
[allportal]
base_url = "{ap}"
api_key = "{api_key}"
[allportal.transport]
max_retries = 1
backoff_base_ms = 10
backoff_max_ms = 50
[opentext]
base_url = "{ot}"
username = "{user}"
password = "{password}"
[opentext.transport]
max_retries = 1
backoff_base_ms = 10
backoff_max_ms = 50
[worker]
poll_interval_ms = 50
retry_schedule_secs = [1, 1, 1]
reconcile_allportal_interval_secs = 0
reconcile_opentext_interval_secs = 0
shutdown_grace_secs = 5
"#,
        store = dir.path().join("bridge.db").display(),
        admin = secrets.admin_token,
        ap_secret = json!(secrets.allportal_webhook),
        ot_secret = json!(secrets.opentext_callback),
        ap = allportal.base_url(),
        api_key = secrets.allportal_api_key,
        ot = opentext.base_url(),
        user = ot_sim::SAMPLE_ADMIN_USER,
        password = ot_sim::SAMPLE_ADMIN_PASSWORD,
    );
    Ok(Settings::from_toml(&[EXAMPLE, &overrides])?)
}
