//! Webhook management (`allportal-api.md` §4.1): the `Webhook` and `WebhookEvent` models of the
//! 2022 OpenAPI spec and its `POST /api/system/webhooks`, which stores a webhook and returns it
//! with ids. Two behaviours are inferred, not documented: `POST` with the id of a stored
//! webhook replaces it (the spec has no PUT), and `GET /api/system/webhooks` lists them (the
//! 2022 spec has no list; newer versions may). `secret` is write-only: never listed.
//!
//! After every object write, each active webhook with an event entry whose `type`, `module` and
//! 4APQL `query` match the object gets one delivery (the simulator's change body, signed as
//! Standard Webhooks with the webhook's `secret`, else the simulator's), with the webhook's
//! custom `header`s (e.g. the token a receiver checks). Every `contentType` gets that body.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::Sim;
use super::api::error;
use super::model::Object;
use super::query;

const EVENT_TYPES: [&str; 5] = [
    "system_reload",
    "session_create",
    "moduleobject_create",
    "moduleobject_modify",
    "moduleobject_delete",
];
const CONTENT_TYPES: [&str; 4] = ["simple", "complete", "field_list", "individual_body"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Webhook {
    #[serde(default)]
    pub(crate) id: Option<String>,
    #[serde(default)]
    pub(crate) active: Option<bool>,
    pub(crate) url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) header: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing)]
    pub(crate) secret: Option<String>,
    #[serde(default)]
    pub(crate) events: Option<Vec<WebhookEvent>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WebhookEvent {
    #[serde(default)]
    pub(crate) id: Option<String>,
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) module: Option<String>,
    #[serde(default)]
    pub(crate) query: Option<String>,
    pub(crate) content_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) field_list: Option<Vec<String>>,
}

impl Webhook {
    /// Whether a write of `kind` to `object` (of `module`) triggers this webhook.
    pub(crate) fn wants(&self, kind: &str, module: &str, object: Option<&Object>) -> bool {
        self.active.unwrap_or(true)
            && self.events.iter().flatten().any(|e| {
                e.kind == kind
                    && e.module.as_deref().is_none_or(|m| m == module)
                    && match (e.query.as_deref().filter(|q| !q.trim().is_empty()), object) {
                        (None, _) => true,
                        (Some(text), Some(object)) => {
                            query::parse(text).is_ok_and(|expr| query::matches(&expr, object))
                        }
                        // A deleted object cannot be matched against a query.
                        (Some(_), None) => false,
                    }
            })
    }
}

pub(crate) fn router(sim: Sim) -> Router {
    Router::new()
        .route(
            "/api/system/webhooks",
            get(list_webhooks).post(save_webhook),
        )
        .with_state(sim)
}

async fn list_webhooks(State(sim): State<Sim>) -> Response {
    let hooks = sim.hooks.read().expect("webhooks poisoned");
    axum::Json(hooks.values().cloned().collect::<Vec<_>>()).into_response()
}

fn check(hook: &Webhook) -> Result<(), String> {
    if url::Url::parse(&hook.url).is_err() {
        return Err(format!("Invalid url '{}'", hook.url));
    }
    for event in hook.events.iter().flatten() {
        if !EVENT_TYPES.contains(&event.kind.as_str()) {
            return Err(format!("Invalid event type '{}'", event.kind));
        }
        if !CONTENT_TYPES.contains(&event.content_type.as_str()) {
            return Err(format!("Invalid contentType '{}'", event.content_type));
        }
        if let Some(text) = event.query.as_deref().filter(|q| !q.trim().is_empty()) {
            query::parse(text).map_err(|e| format!("Invalid query: {e}"))?;
        }
    }
    Ok(())
}

async fn save_webhook(
    State(sim): State<Sim>,
    axum::Json(mut hook): axum::Json<Webhook>,
) -> Response {
    if let Err(message) = check(&hook) {
        return error(StatusCode::BAD_REQUEST, message);
    }
    let mut hooks = sim.hooks.write().expect("webhooks poisoned");
    let id = match hook.id.clone() {
        Some(id) if hooks.contains_key(&id) => id,
        Some(id) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("Webhook '{id}' does not exist"),
            );
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    hook.id = Some(id.clone());
    for event in hook.events.iter_mut().flatten() {
        event
            .id
            .get_or_insert_with(|| uuid::Uuid::new_v4().to_string());
    }
    hooks.insert(id, hook.clone());
    axum::Json(hook).into_response()
}
