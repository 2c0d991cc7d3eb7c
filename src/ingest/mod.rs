//! Inbound webhooks: signature verification on the raw bytes, then tolerant payload parsing, then
//! deduplicating storage. Nothing is stored before verification succeeds and the payload parses.

use bytes::Bytes;
use http::HeaderMap;

use crate::clients::opentext::callback::CallbackShape;
use crate::config_error::ConfigError;
use crate::store::{
    InsertOutcome, NewEvent, Source, Store, StoreError, StoredEvent, now_millis, state,
};
use crate::worker::Router;
pub use config::{SourceConfig, SourcesConfig};

pub mod callback;
pub mod config;
pub mod payload;
pub mod verify;

use payload::{ParsedEvent, PayloadError};
use verify::{Verified, Verifier, VerifyError};

/// Request headers kept with each event for audit; never credentials or signatures.
const KEPT_HEADERS: [&str; 5] = [
    "content-type",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "x-request-id",
];

/// One verifier per source, built once at start-up.
#[derive(Debug)]
pub struct Verifiers {
    allportal: Verifier,
    opentext: Verifier,
    /// Configured id / timestamp header names per source, also worth keeping.
    extra_headers: Vec<(Source, String)>,
    /// Where the fields of an OpenText callback are (`[callbacks]`).
    callback_shape: CallbackShape,
}

impl Verifiers {
    pub fn new(cfg: &SourcesConfig) -> Result<Self, ConfigError> {
        let build = |name: &str, source: &SourceConfig| {
            Verifier::new(source)
                .map_err(|problem| ConfigError(format!("`sources.{name}`: {problem}")))
        };
        let mut extra_headers = Vec::new();
        for (source, config) in [
            (Source::Allportal, &cfg.allportal),
            (Source::Opentext, &cfg.opentext),
        ] {
            for name in [&config.id_header, &config.timestamp_header]
                .into_iter()
                .flatten()
            {
                extra_headers.push((source, name.to_ascii_lowercase()));
            }
        }
        Ok(Self {
            allportal: build("allportal", &cfg.allportal)?,
            opentext: build("opentext", &cfg.opentext)?,
            extra_headers,
            callback_shape: CallbackShape::default(),
        })
    }

    /// Reads OpenText callbacks in `shape` instead of the bridge's own format.
    pub fn with_callback_shape(mut self, shape: CallbackShape) -> Self {
        self.callback_shape = shape;
        self
    }

    fn for_source(&self, source: Source) -> &Verifier {
        match source {
            Source::Allportal => &self.allportal,
            Source::Opentext => &self.opentext,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one request stored: event ids, new and already known.
#[derive(Debug, Default, serde::Serialize)]
pub struct Receipt {
    pub accepted: Vec<String>,
    pub duplicates: Vec<String>,
}

/// Verifies, parses, routes and stores one webhook request: each event is stored with the jobs
/// of the flows that want it (`router`; an OpenText callback: [`callback::route`]), or as
/// `ignored` (4ALLPORTAL) or a dead letter (OpenText), in one transaction, so the worker only
/// sees work. Returns only after the new events are durable.
pub async fn ingest(
    store: &dyn Store,
    verifiers: &Verifiers,
    router: &Router,
    source: Source,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Receipt, IngestError> {
    let now = now_millis();
    let verified = verifiers
        .for_source(source)
        .verify(headers, body, now / 1000)?;
    let parsed = match source {
        Source::Allportal => payload::parse_allportal(&verified)?,
        Source::Opentext => payload::parse_opentext_shaped(&verified, &verifiers.callback_shape)?,
    };
    let kept = kept_headers(headers, verifiers, source);
    // When runs depend on an event's object (an asset, an item), the store adds their resyncs in
    // the transaction that stores the event; an event no flow wants is still `ignored` itself.
    let mut events = Vec::with_capacity(parsed.len());
    for mut event in parsed {
        let view = routing_view(source, &mut event, now);
        let destination = match source {
            Source::Allportal => callback::Destination::Flows(router.flows_for(&view)),
            Source::Opentext => callback::route(store, router, &event, &view).await?,
        };
        let mut new = new_event(source, &verified, event, kept.clone(), now);
        match destination {
            // A 4ALLPORTAL event no flow wants is `ignored` (most of them are not business
            // events for the bridge); an OpenText callback always is.
            callback::Destination::Flows(flows) => new.routing = Some(flows),
            callback::Destination::DeadLetter(reason) => {
                new.routing = Some(Vec::new());
                new.dead_letter = Some(reason);
            }
        }
        events.push(new);
    }
    let described: Vec<_> = events
        .iter()
        .map(|e| (e.object_key.clone(), e.dead_letter.clone()))
        .collect();
    let mut receipt = Receipt::default();
    // One line per event, so that `event_id` and `object_key` are single searchable values.
    let outcomes = store.insert_events(events).await?;
    for (outcome, (object_key, dead_letter)) in outcomes.into_iter().zip(described) {
        let object_key = object_key.as_deref().unwrap_or_default();
        match outcome {
            InsertOutcome::Accepted(id) => {
                match dead_letter {
                    Some(reason) => tracing::warn!(
                        %source, event_id = %id, object_key, %reason,
                        "event stored as a dead letter: no flow can handle it"
                    ),
                    None => tracing::info!(%source, event_id = %id, object_key, "event stored"),
                }
                receipt.accepted.push(id);
            }
            InsertOutcome::Duplicate(id) => {
                tracing::info!(%source, event_id = %id, object_key, "event stored before; duplicate");
                receipt.duplicates.push(id);
            }
        }
    }
    Ok(receipt)
}

/// The parsed event as the flows' routing rules read it (not stored yet: no id). Routing is the
/// payload's last reader (the store keeps the body's bytes), so the view takes it.
fn routing_view(source: Source, event: &mut ParsedEvent, now: i64) -> StoredEvent {
    StoredEvent {
        id: String::new(),
        source: source.as_str().to_string(),
        source_event_id: event.source_event_id.clone(),
        kind: event.kind.clone(),
        module: event.module.clone(),
        object_id: event.object_id.clone(),
        object_key: event.object_key.clone(),
        payload: std::mem::take(&mut event.payload),
        raw_body: Vec::new(),
        headers: serde_json::Value::Null,
        received_at: now,
        state: state::PENDING.to_string(),
        attempts: 0,
        next_attempt_at: now,
        last_error: None,
        updated_at: now,
    }
}

fn new_event(
    source: Source,
    verified: &Verified,
    event: ParsedEvent,
    headers: serde_json::Value,
    now: i64,
) -> NewEvent {
    NewEvent {
        source,
        source_event_id: event.source_event_id,
        kind: event.kind,
        module: event.module,
        object_id: event.object_id,
        object_key: event.object_key,
        raw_body: verified.body().clone(),
        span: event.span,
        headers,
        received_at: now,
        routing: None,
        dead_letter: None,
    }
}

fn kept_headers(headers: &HeaderMap, verifiers: &Verifiers, source: Source) -> serde_json::Value {
    let extra = verifiers
        .extra_headers
        .iter()
        .filter(|(s, _)| *s == source)
        .map(|(_, name)| name.as_str());
    let map = KEPT_HEADERS
        .into_iter()
        .chain(extra)
        .filter_map(|name| {
            let value = headers.get(name)?.to_str().ok()?;
            Some((name.to_string(), serde_json::Value::from(value)))
        })
        .collect();
    serde_json::Value::Object(map)
}
