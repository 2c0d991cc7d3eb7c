//! OpenText Content Server / xECM simulator: the REST subset of `opentext-api.md` (auth, business
//! workspaces and their types, nodes, documents and versions, categories with typed and
//! multi-value attributes and their create forms, large file upload, workflows, records
//! management, holds, roles and their members, users and groups with the member search), plus the signed callback the OpenText side of the bridge sends.
//! Templates (with their folders) and RM classifications are nodes, as in Content Server.
//!
//! The API is served under `/otcs/cs/api/…` (the base URL a client is configured with is
//! `http://addr/otcs/cs`) and, for convenience, also under `/api/…`. OTDS lives at `/otdsws/…`.

mod auth;
mod control;
mod members;
mod model;
mod nodes;
mod params;
mod permissions;
mod respond;
mod rm;
mod seed;
mod workflows;
mod workspaces;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use serde_json::{Value, json};

pub use seed::{
    OpentextSeed, SAMPLE_ADMIN_PASSWORD, SAMPLE_ADMIN_USER, SAMPLE_OAUTH_CLIENT_ID,
    SAMPLE_OAUTH_CLIENT_SECRET, SeedAttribute, SeedCategory, SeedGroup, SeedHold, SeedOauthClient,
    SeedRmClassification, SeedUser, SeedWorkflowMap, SeedWorkspaceType, sample_ids,
};

use super::blob::ScratchDir;
use super::faults::{FaultSettings, Faults};
use super::handle::{SimControl, SimHandle};
use super::requests::{RequestLog, RequestRecord};
use super::signing::{WebhookDelivery, WebhookTarget, deliver};
use model::Store;

/// Start options. `Debug` hides the callback secret (seeded passwords are hidden by their types).
#[derive(Clone)]
pub struct OpentextSimOptions {
    /// Users, OAuth clients, categories, workspace types/templates, workflow maps, RM data.
    pub seed: OpentextSeed,
    /// Sliding session lifetime of tickets and tokens (Content Server's default is 30 minutes).
    pub ticket_ttl_secs: u64,
    pub faults: FaultSettings,
    /// Where workflow-decision and partner-document callbacks go.
    pub callback_url: Option<url::Url>,
    /// Standard Webhooks secret (`whsec_<base64>`) for those callbacks.
    pub callback_secret: Option<String>,
    /// Large File Upload limits (`GET /api/v2/multipart/settings`) and the part size it assigns.
    pub multipart_min_size: u64,
    pub multipart_max_size: u64,
    pub multipart_part_size: u64,
}

impl Default for OpentextSimOptions {
    fn default() -> Self {
        Self {
            seed: OpentextSeed::sample(),
            ticket_ttl_secs: 30 * 60,
            faults: FaultSettings::default(),
            callback_url: None,
            callback_secret: None,
            multipart_min_size: 1024,
            multipart_max_size: 64 * 1024 * 1024 * 1024,
            multipart_part_size: 16 * 1024 * 1024,
        }
    }
}

impl std::fmt::Debug for OpentextSimOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpentextSimOptions")
            .field("seed", &self.seed)
            .field("ticket_ttl_secs", &self.ticket_ttl_secs)
            .field("faults", &self.faults)
            .field("callback_url", &self.callback_url)
            .field(
                "callback_secret",
                &self.callback_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("multipart_min_size", &self.multipart_min_size)
            .field("multipart_max_size", &self.multipart_max_size)
            .field("multipart_part_size", &self.multipart_part_size)
            .finish()
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct MultipartLimits {
    min: u64,
    max: u64,
    part: u64,
}

/// Shared state of one running OpenText simulator.
#[derive(Clone)]
pub(crate) struct Sim {
    store: Arc<RwLock<Store>>,
    auth: Arc<auth::Auth>,
    faults: Faults,
    log: RequestLog,
    callback: Arc<RwLock<WebhookTarget>>,
    http: reqwest::Client,
    scratch: Arc<ScratchDir>,
    multipart: MultipartLimits,
}

fn unavailable_body() -> Value {
    json!({"error": "Service Unavailable"})
}

fn api_routes() -> Router<Sim> {
    Router::new()
        .route("/api/v1/ping", get(ping))
        .route(
            "/api/v1/auth",
            post(auth::login).get(auth::whoami).delete(auth::logout),
        )
        .route("/api/v1/members/{id}", get(auth::member))
        .route("/api/v2/members", get(members::search))
        .merge(workspaces::routes())
        .merge(nodes::routes())
        .merge(permissions::routes())
        .merge(workflows::routes())
        .merge(rm::routes())
}

/// Starts the simulator on `listen` (use `127.0.0.1:0` in tests).
pub async fn spawn(listen: SocketAddr, opts: OpentextSimOptions) -> anyhow::Result<SimHandle> {
    let sim = Sim {
        store: Arc::new(RwLock::new(Store::new(opts.seed.clone()))),
        auth: auth::Auth::new(Duration::from_secs(opts.ticket_ttl_secs)),
        faults: Faults::new(opts.faults.clone(), unavailable_body),
        log: RequestLog::default(),
        callback: Arc::new(RwLock::new(WebhookTarget {
            url: opts.callback_url.as_ref().map(|u| u.to_string()),
            secret: opts.callback_secret.clone(),
        })),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        scratch: ScratchDir::create()?,
        multipart: MultipartLimits {
            min: opts.multipart_min_size,
            max: opts.multipart_max_size,
            part: opts.multipart_part_size.max(1),
        },
    };
    let api = api_routes().layer(from_fn_with_state(sim.clone(), auth::require_auth));
    let router = Router::new()
        .nest("/otcs/cs", api.clone())
        .merge(api)
        .route(
            "/otdsws/rest/authentication/credentials",
            post(auth::otds_credentials),
        )
        .route(
            "/otdsws/v1/authentication/credentials",
            post(auth::otds_credentials),
        )
        .route("/otdsws/oauth2/token", post(auth::oauth_token))
        .nest("/_sim", control::routes())
        .with_state(sim.clone())
        .layer(from_fn_with_state(sim.clone(), expire_tickets_on_request))
        .layer(from_fn_with_state(
            sim.faults.clone(),
            super::faults::inject,
        ))
        .layer(from_fn_with_state(sim.log.clone(), super::requests::record));
    SimHandle::serve(listen, router, "/otcs/cs", Arc::new(sim)).await
}

async fn ping() -> axum::response::Response {
    respond::ok(
        json!({"rest_api": [{"build": 2, "href": "api/v1", "version": 1}, {"href": "api/v2", "version": 2}]}),
    )
}

/// Applies a pending `expire_tickets` fault before the request is authenticated.
async fn expire_tickets_on_request(
    axum::extract::State(sim): axum::extract::State<Sim>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    sim.apply_ticket_expiry();
    next.run(req).await
}

impl Sim {
    /// `expire_tickets` is a one-shot action: forget all credentials, then clear the flag.
    fn apply_ticket_expiry(&self) {
        let faults = self.faults.get();
        if faults.expire_tickets {
            self.auth.expire_all();
            self.faults.set(FaultSettings {
                expire_tickets: false,
                outage_secs: None,
                ..faults
            });
        }
    }

    /// Signs and posts a callback body to the configured target; the outcome is kept in state.
    pub(crate) async fn send_callback(&self, body: Value) -> Result<WebhookDelivery, String> {
        let target = self.callback.read().expect("callback poisoned").clone();
        let url = target.url.ok_or("no callback URL configured")?;
        let secret = target.secret.ok_or("no callback secret configured")?;
        let delivery = deliver(&self.http, &url, &secret, &Default::default(), body).await;
        self.store
            .write()
            .expect("store poisoned")
            .callbacks
            .push(serde_json::to_value(&delivery).unwrap_or_default());
        Ok(delivery)
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
        self.apply_ticket_expiry();
    }
}
