//! 4ALLPORTAL simulator: `/api/modules/…` objects, schema, audit and media with Bearer API-key
//! auth, plus Standard Webhooks–signed change events (reference: `allportal-api.md` §3–5).

mod api;
mod control;
mod model;
mod query;
mod sample;
mod webhooks;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::middleware::{from_fn, from_fn_with_state};
use serde_json::{Value, json};

pub use model::{FieldSchema, ModuleSchema};
pub use sample::{
    Catalogue, SeedMedia, SeedObject, generated_product_id, ids, large_catalogue, sample_catalogue,
    sample_pdf, sample_png,
};

use super::blob::ScratchDir;
use super::faults::{FaultSettings, Faults};
use super::handle::{SimControl, SimHandle};
use super::requests::{RequestLog, RequestRecord};
use super::signing::{WebhookDelivery, WebhookTarget, deliver};
use model::{Store, format_time};

/// Start options. `Debug` hides the API key and the webhook secret.
#[derive(Clone)]
pub struct AllportalSimOptions {
    /// The API key accepted as `Authorization: Bearer <key>`.
    pub api_key: String,
    /// The user the API key belongs to; writes made with the key are attributed to this user.
    pub api_user: String,
    /// Where change webhooks go.
    pub webhook_url: Option<url::Url>,
    /// Standard Webhooks secret (`whsec_<base64>`) used to sign them.
    pub webhook_secret: Option<String>,
    /// Send a change webhook automatically after every write (like a configured 4ALLPORTAL webhook
    /// with `moduleobject_create|modify|delete` triggers); otherwise only on `POST /_sim/webhooks/send`.
    pub auto_webhooks: bool,
    /// With `auto_webhooks`: deliver the change webhook before answering the write (the echo of
    /// a write then reaches the receiver before the writer has its response); otherwise it is
    /// sent in the background after the answer.
    pub webhooks_before_response: bool,
    pub faults: FaultSettings,
    /// Modules and objects loaded at start.
    pub seed: Option<Catalogue>,
}

impl Default for AllportalSimOptions {
    fn default() -> Self {
        Self {
            api_key: "sim-allportal-api-key".into(),
            api_user: "api_bridge".into(),
            webhook_url: None,
            webhook_secret: None,
            auto_webhooks: false,
            webhooks_before_response: false,
            faults: FaultSettings::default(),
            seed: None,
        }
    }
}

impl std::fmt::Debug for AllportalSimOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AllportalSimOptions")
            .field("api_key", &"<redacted>")
            .field("api_user", &self.api_user)
            .field("webhook_url", &self.webhook_url)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("auto_webhooks", &self.auto_webhooks)
            .field("webhooks_before_response", &self.webhooks_before_response)
            .field("faults", &self.faults)
            .field("seed_objects", &self.seed.as_ref().map(|c| c.objects.len()))
            .finish()
    }
}

/// Shared state of one running 4ALLPORTAL simulator.
#[derive(Clone)]
pub(crate) struct Sim {
    store: Arc<RwLock<Store>>,
    /// API key → user.
    api_keys: Arc<RwLock<BTreeMap<String, String>>>,
    faults: Faults,
    log: RequestLog,
    webhook: Arc<RwLock<WebhookTarget>>,
    /// Webhooks registered through `POST /api/system/webhooks`, by id.
    hooks: Arc<RwLock<BTreeMap<String, webhooks::Webhook>>>,
    auto_webhooks: Arc<std::sync::atomic::AtomicBool>,
    webhooks_before_response: Arc<std::sync::atomic::AtomicBool>,
    http: reqwest::Client,
    scratch: Arc<ScratchDir>,
}

fn unavailable_body() -> Value {
    json!({"code": "503", "name": "SERVICE_UNAVAILABLE", "message": "Service Unavailable"})
}

/// Starts the simulator on `listen` (use `127.0.0.1:0` in tests).
pub async fn spawn(listen: SocketAddr, opts: AllportalSimOptions) -> anyhow::Result<SimHandle> {
    let sim = Sim {
        store: Arc::new(RwLock::new(Store::default())),
        api_keys: Arc::new(RwLock::new(BTreeMap::from([(
            opts.api_key.clone(),
            opts.api_user.clone(),
        )]))),
        faults: Faults::new(opts.faults.clone(), unavailable_body),
        log: RequestLog::default(),
        webhook: Arc::new(RwLock::new(WebhookTarget {
            url: opts.webhook_url.as_ref().map(|u| u.to_string()),
            secret: opts.webhook_secret.clone(),
        })),
        hooks: Arc::default(),
        auto_webhooks: Arc::new(opts.auto_webhooks.into()),
        webhooks_before_response: Arc::new(opts.webhooks_before_response.into()),
        http: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()?,
        scratch: ScratchDir::create()?,
    };
    if let Some(seed) = &opts.seed {
        control::load_catalogue(&sim, seed).map_err(|e| anyhow::anyhow!("seed: {e}"))?;
    }
    let api = api::router(sim.clone())
        .merge(webhooks::router(sim.clone()))
        .layer(from_fn_with_state(sim.clone(), api::require_api_key));
    let router = Router::new()
        .merge(api)
        .nest("/_sim", control::router(sim.clone()))
        .layer(from_fn_with_state(
            sim.faults.clone(),
            super::faults::inject,
        ))
        .layer(from_fn_with_state(sim.log.clone(), super::requests::record))
        .layer(from_fn(no_store));
    SimHandle::serve(listen, router, "", Arc::new(sim)).await
}

/// The simulator never lets intermediaries cache its answers.
async fn no_store(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let mut response = next.run(req).await;
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    response
}

impl Sim {
    /// Sends a signed change event for one object to the configured (or given) URL.
    pub(crate) async fn send_change_webhook(
        &self,
        module: &str,
        object_id: &str,
        event: &str,
        url_override: Option<String>,
    ) -> Result<WebhookDelivery, String> {
        let target = self.webhook.read().expect("webhook poisoned").clone();
        let url = url_override
            .or(target.url)
            .ok_or("no webhook URL configured")?;
        let secret = target.secret.ok_or("no webhook secret configured")?;
        let mod_time = {
            let store = self.store.read().expect("store poisoned");
            store
                .object(module, object_id)
                .map(|o| format_time(o.mod_time))
                .unwrap_or_else(|| format_time(chrono::Utc::now()))
        };
        let body = json!({
            "event": event,
            "module": module,
            "object_id": object_id,
            "mod_time": mod_time,
        });
        Ok(deliver(&self.http, &url, &secret, &BTreeMap::new(), body).await)
    }

    /// After a write: sends the change webhooks when automatic webhooks are on, before the
    /// answer (`webhooks_before_response`) or in the background after it.
    pub(crate) async fn after_write(&self, module: &str, ids: &[(String, &'static str)]) {
        use std::sync::atomic::Ordering;
        let before = self.webhooks_before_response.load(Ordering::Relaxed);
        let registered = self.deliver_registered(module, ids);
        if before {
            futures::future::join_all(registered).await;
        } else {
            for delivery in registered {
                tokio::spawn(delivery);
            }
        }
        if !self.auto_webhooks.load(Ordering::Relaxed) {
            return;
        }
        for (id, event) in ids {
            let sim = self.clone();
            let (module, id, event) = (module.to_owned(), id.clone(), *event);
            let send = async move {
                if let Err(err) = sim.send_change_webhook(&module, &id, event, None).await {
                    tracing::debug!(error = %err, "automatic webhook not sent");
                }
            };
            if before {
                send.await;
            } else {
                tokio::spawn(send);
            }
        }
    }
}

impl Sim {
    /// The deliveries of each write to every registered webhook that wants it (see
    /// [`webhooks`]), one per webhook.
    fn deliver_registered(
        &self,
        module: &str,
        ids: &[(String, &'static str)],
    ) -> Vec<impl std::future::Future<Output = WebhookDelivery> + Send + 'static> {
        let mut deliveries = Vec::new();
        let fallback = self
            .webhook
            .read()
            .expect("webhook poisoned")
            .secret
            .clone();
        let hooks: Vec<webhooks::Webhook> = self
            .hooks
            .read()
            .expect("webhooks poisoned")
            .values()
            .cloned()
            .collect();
        let store = self.store.read().expect("store poisoned");
        for (id, event) in ids {
            let object = store.object(module, id);
            for hook in hooks.iter().filter(|h| h.wants(event, module, object)) {
                let Some(secret) = hook.secret.clone().or_else(|| fallback.clone()) else {
                    continue;
                };
                let body = json!({
                    "event": event,
                    "module": module,
                    "object_id": id,
                    "mod_time": object.map_or_else(|| format_time(chrono::Utc::now()), |o| format_time(o.mod_time)),
                });
                let (http, url) = (self.http.clone(), hook.url.clone());
                let headers = hook.header.clone().unwrap_or_default();
                deliveries.push(async move { deliver(&http, &url, &secret, &headers, body).await });
            }
        }
        deliveries
    }
}

impl SimControl for Sim {
    fn state_json(&self) -> Value {
        control::state_json(self)
    }

    fn requests(&self) -> Vec<RequestRecord> {
        self.log.snapshot()
    }

    fn clear_requests(&self) {
        self.log.clear();
    }

    fn set_faults(&self, faults: FaultSettings) {
        self.faults.set(faults);
    }
}
