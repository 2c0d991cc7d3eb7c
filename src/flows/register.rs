//! `register allportal`: the 4ALLPORTAL webhook the configured flows need, derived from their
//! triggers, and its registration (create, update, or nothing to do) through 4ALLPORTAL's
//! webhook API (`allportal-api.md` §4.1).
//!
//! One webhook, found by its URL (`server.public_url` + `/webhooks/allportal`), with one event
//! entry per (event type, trigger module, 4APQL query, `simple` content): each flow's trigger
//! events plus `moduleobject_delete` (which every flow records), narrowed by the trigger
//! conditions that have a 4APQL form (see [`super::backfill::trigger_query`]; a delete carries
//! no query: the object is gone). Modules the dependency index polls are not in the webhook;
//! the reconciliation feed reads them.
//!
//! The 2022 API documents only `POST /api/system/webhooks`. Listing the webhooks
//! (`GET /api/system/webhooks`) is inferred from newer versions; where it answers 404/405 the
//! webhook cannot be read back: it is then applied under the id remembered from the last
//! registration (or created), and drift cannot be detected.

use std::collections::BTreeSet;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::backfill::trigger_query;
use super::mapping::FlowsConfig;
use crate::clients::UpstreamError;
use crate::clients::allportal::{AllportalClient, Webhook, WebhookEvent};

/// Where 4ALLPORTAL delivers, below `server.public_url`.
pub const WEBHOOK_PATH: &str = "webhooks/allportal";
const DELETE: &str = "moduleobject_delete";

/// The webhook URL for the bridge's public base URL.
pub fn webhook_url(public_url: &url::Url) -> String {
    let base = public_url.as_str().trim_end_matches('/');
    format!("{base}/{WEBHOOK_PATH}")
}

/// The event entries the enabled flows need, sorted, without duplicates.
pub fn wanted_events(flows: &FlowsConfig) -> Vec<WebhookEvent> {
    let mut events = BTreeSet::new();
    for (_, mapping) in flows.enabled() {
        let trigger = &mapping.trigger;
        let query = trigger_query(&trigger.conditions);
        let kinds = trigger
            .events
            .iter()
            .map(String::as_str)
            .chain([DELETE])
            .collect::<BTreeSet<_>>();
        for kind in kinds {
            events.insert(WebhookEvent {
                id: None,
                kind: kind.to_string(),
                module: Some(trigger.module.clone()),
                query: if kind == DELETE { None } else { query.clone() },
                content_type: "simple".into(),
            });
        }
    }
    events.into_iter().collect()
}

/// An entry as compared: without its id.
fn key(event: &WebhookEvent) -> WebhookEvent {
    WebhookEvent {
        id: None,
        query: event.query.clone().filter(|q| !q.trim().is_empty()),
        ..event.clone()
    }
}

fn describe(event: &WebhookEvent) -> String {
    format!(
        "{} {}{} ({})",
        event.kind,
        event.module.as_deref().unwrap_or("<any module>"),
        event
            .query
            .as_deref()
            .map(|q| format!(" where {q}"))
            .unwrap_or_default(),
        event.content_type
    )
}

/// What differs between the registered webhook and the wanted events: `+` to add, `-` to
/// remove, and an inactive webhook. Empty: in line.
pub fn differences(existing: Option<&Webhook>, wanted: &[WebhookEvent]) -> Vec<String> {
    let Some(existing) = existing else {
        return std::iter::once("+ webhook (not registered)".to_string())
            .chain(wanted.iter().map(|e| format!("+ {}", describe(e))))
            .collect();
    };
    let have: BTreeSet<WebhookEvent> = existing.events.iter().map(key).collect();
    let want: BTreeSet<WebhookEvent> = wanted.iter().map(key).collect();
    let mut lines = Vec::new();
    if existing.active == Some(false) {
        lines.push("~ webhook is inactive; activate".to_string());
    }
    lines.extend(want.difference(&have).map(|e| format!("+ {}", describe(e))));
    lines.extend(have.difference(&want).map(|e| format!("- {}", describe(e))));
    lines
}

/// What a registration did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Registration {
    /// `create`, `update` or `unchanged`.
    pub action: &'static str,
    pub url: String,
    /// The webhook's id in 4ALLPORTAL (none before a create).
    pub id: Option<String>,
    /// `+`/`-` lines (see [`differences`]).
    pub changes: Vec<String>,
    /// Whether the registered webhook could be read back (else it was applied unread).
    pub compared: bool,
    pub dry_run: bool,
}

/// How 4ALLPORTAL proves its deliveries, from `[sources.allportal]`.
pub enum WebhookAuth {
    /// The `token` scheme: a custom request header carrying the secret.
    Header {
        name: String,
        token: SecretString,
    },
    /// The other schemes: the webhook's `secret` field (the simulator signs Standard Webhooks
    /// with it; what a real 4ALLPORTAL does with it is not documented, see
    /// `docs/webhooks-allportal.md`).
    Secret(SecretString),
    None,
}

/// Registers the webhook at `url` for `flows`: finds it by URL, and creates or replaces it when
/// its events differ (the credential cannot be compared: 4ALLPORTAL does not show it back).
/// `remembered` is the id of the last registration, used where 4ALLPORTAL cannot list
/// webhooks. The credential is sent, never shown.
pub async fn register(
    allportal: &AllportalClient,
    flows: &FlowsConfig,
    url: &str,
    auth: WebhookAuth,
    remembered: Option<String>,
    dry_run: bool,
) -> Result<Registration, UpstreamError> {
    let wanted = wanted_events(flows);
    let listed = allportal.webhooks().await?;
    let compared = listed.is_some();
    let existing = listed
        .unwrap_or_default()
        .into_iter()
        .find(|w| w.url == url);
    let (action, id, changes) = match &existing {
        Some(hook) => {
            let changes = differences(Some(hook), &wanted);
            let action = if changes.is_empty() {
                "unchanged"
            } else {
                "update"
            };
            (action, hook.id.clone(), changes)
        }
        None if !compared && remembered.is_some() => (
            "update",
            remembered,
            vec!["~ webhook applied unread (4ALLPORTAL cannot list webhooks)".to_string()],
        ),
        None => ("create", None, differences(None, &wanted)),
    };
    let mut registration = Registration {
        action,
        url: url.to_string(),
        id,
        changes,
        compared,
        dry_run,
    };
    if dry_run || action == "unchanged" {
        return Ok(registration);
    }
    // Headers someone added in 4ALLPORTAL stay; the token header is (re)set.
    let mut header = existing.and_then(|w| w.header).unwrap_or_default();
    let secret = match auth {
        WebhookAuth::Header { name, token } => {
            header.insert(name, token.expose_secret().to_string());
            None
        }
        WebhookAuth::Secret(secret) => Some(secret),
        WebhookAuth::None => None,
    };
    let saved = allportal
        .save_webhook(&Webhook {
            id: registration.id.clone(),
            active: Some(true),
            url: url.to_string(),
            header: (!header.is_empty()).then_some(header),
            secret,
            events: wanted,
        })
        .await?;
    registration.id = saved.id;
    Ok(registration)
}

/// Drift of the registered webhook from what the flows need: `None` when 4ALLPORTAL cannot
/// list webhooks, else the differences (empty: in line).
pub async fn drift(
    allportal: &AllportalClient,
    flows: &FlowsConfig,
    url: &str,
) -> Result<Option<Vec<String>>, UpstreamError> {
    let Some(listed) = allportal.webhooks().await? else {
        return Ok(None);
    };
    let existing = listed.iter().find(|w| w.url == url);
    Ok(Some(differences(existing, &wanted_events(flows))))
}
