//! OpenText Content Server / Extended ECM client: ticket session, business workspaces, folders,
//! documents and versions (streamed uploads, Large File Upload above a threshold), categories,
//! workflows, records management, workspace roles and Assigned Access on folders.
//!
//! Encoding follows what OpenText's servers accept (reference §1.2): writes are
//! `application/x-www-form-urlencoded` with one `body` field holding JSON; uploads are
//! `multipart/form-data` with a `body` part and a `file` part. Where the references disagree on
//! a field's place or name, the client sends both forms and says so at the call.

pub mod auth;
pub mod callback;
mod definitions;
pub mod members;
mod nodes;
mod permissions;
mod records;
pub mod routes;
pub mod types;
mod upload;
mod workflows;
mod workspaces;

use std::sync::Arc;

use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use url::Url;

use self::auth::{Login, Session};
use self::routes::{AUTH_INFO, Route};
use super::error::{ErrorAnswer, TransportErrorKind, UpstreamError};
use super::transport::{
    CircuitState, Clock, Deadline, StreamBody, SystemClock, Transport, TransportPolicy,
    check_status, decode_json,
};
use crate::clients::config::OpentextConfig;

pub use definitions::{
    AttributeDefinition, AttributeType, CategoryDefinition, Hold, WorkspaceType,
};
pub use permissions::Access;
pub use types::*;

/// Name of this upstream in metrics and errors.
pub const UPSTREAM: &str = "opentext";
/// Name of the OTDS upstream (login only).
pub const UPSTREAM_OTDS: &str = "opentext-otds";

/// How long an accepted credential is taken as valid without asking: OpenText ends a session
/// after minutes of inactivity (a ticket lives as long as it is used), so a streamed upload
/// right after another call skips the session check that would cost a request of the rate
/// limit. Should the session end all the same, the upload is refused with 401 and repeated.
const SESSION_CONFIRMED_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// OpenText's error conventions on top of HTTP: 500 "already exists" is a conflict (resolve by
/// lookup, never retry); 400 "does not exist or you do not have permission" is not-found; 409 is
/// a metadata edit conflict. This is the only place that reads message text.
pub(crate) fn map_error(answer: ErrorAnswer) -> UpstreamError {
    let text = answer.message.to_ascii_lowercase();
    let status = answer.status.as_u16();
    if matches!(status, 400 | 500) && text.contains("already exists") {
        return UpstreamError::Conflict {
            message: answer.message,
        };
    }
    let not_found = [
        "does not exist",
        "not found",
        "no permission",
        "do not have permission",
    ]
    .iter()
    .any(|p| text.contains(p))
        || text.contains("could not get a node");
    if matches!(status, 400 | 500) && not_found {
        return UpstreamError::NotFound {
            message: answer.message,
        };
    }
    answer.into_error()
}

/// The OpenText client. Cheap to clone; clones share the session.
#[derive(Clone)]
pub struct OpentextClient {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport,
    otds: Option<Transport>,
    session: Session,
    ext_system_id: String,
    multipart_threshold: u64,
    multipart_part: u64,
    members: members::MemberCache,
    /// Category definitions read by this process ([`Self::category_definition`]).
    categories: std::sync::RwLock<std::collections::BTreeMap<i64, Arc<CategoryDefinition>>>,
}

impl std::fmt::Debug for OpentextClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpentextClient")
            .field("base_url", &self.inner.transport.base_url().as_str())
            .field("session", &self.inner.session)
            .field("ext_system_id", &self.inner.ext_system_id)
            .finish_non_exhaustive()
    }
}

impl OpentextClient {
    pub fn new(config: &OpentextConfig) -> Result<Self, UpstreamError> {
        Self::with_policy(config, (&config.transport).into(), Arc::new(SystemClock))
    }

    /// Like [`Self::new`] with an explicit policy and clock (tests, tuning).
    pub fn with_policy(
        config: &OpentextConfig,
        policy: TransportPolicy,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, UpstreamError> {
        let login = Login::from_config(config);
        let otds = if login.needs_otds() {
            let base = otds_base(config)?;
            Some(Transport::with_tls(
                UPSTREAM_OTDS,
                base,
                policy.clone(),
                clock.clone(),
                config.tls(),
            )?)
        } else {
            None
        };
        // `GET /api` answers without a ticket (the REST API's version list): the probe while
        // Content Server is down.
        let transport = Transport::with_tls(
            UPSTREAM,
            config.base_url.clone(),
            policy,
            clock,
            config.tls(),
        )?
        .with_probe(&["api"])
        .with_limits(config.limits());
        Ok(Self {
            inner: Arc::new(Inner {
                transport,
                otds,
                session: Session::new(login),
                ext_system_id: config.ext_system_id.clone(),
                multipart_threshold: config.multipart_threshold_bytes,
                multipart_part: config.multipart_part_bytes.max(1),
                members: members::MemberCache::default(),
                categories: Default::default(),
            }),
        })
    }

    pub fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    /// State of the Content Server circuit breaker (status endpoint).
    pub fn circuit_state(&self) -> CircuitState {
        self.inner.transport.circuit_state()
    }

    /// The external system id 4ALLPORTAL business objects are registered under.
    pub fn ext_system_id(&self) -> &str {
        &self.inner.ext_system_id
    }

    /// Number of logins since start (a high rate means tickets expire too fast).
    pub fn logins(&self) -> u64 {
        self.inner.session.logins()
    }

    /// Sends a call with the session credential; on 401 logs in again (once for all
    /// concurrent callers) and repeats the call once. Returns the answer whatever its status.
    async fn call(
        &self,
        deadline: Deadline,
        route: Route,
        params: &[&str],
        shape: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, UpstreamError> {
        let inner = &*self.inner;
        let (method, url) = self.target(route, params)?;
        let (mut generation, mut credential) = inner
            .session
            .current(&inner.transport, inner.otds.as_ref())
            .await?;
        let mut relogged = false;
        loop {
            let value = credential.header_value()?;
            let response = inner
                .transport
                .send(deadline, || {
                    let request = inner.transport.request(method.clone(), url.clone())?;
                    Ok(shape(
                        request.header(credential.name.clone(), value.clone()),
                    ))
                })
                .await?;
            if response.status() == http::StatusCode::UNAUTHORIZED && !relogged {
                relogged = true;
                (generation, credential) = inner
                    .session
                    .relogin(generation, &inner.transport, inner.otds.as_ref())
                    .await?;
                continue;
            }
            inner.session.refresh(generation, &response).await;
            return Ok(response);
        }
    }

    /// [`Self::call`] and decode the JSON answer, mapping error answers.
    async fn call_json(
        &self,
        route: Route,
        params: &[&str],
        shape: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Value, UpstreamError> {
        let response = self.call(Deadline::Total, route, params, shape).await?;
        decode_json(response, map_error).await
    }

    /// A write with the `body` form field convention.
    async fn call_body(
        &self,
        route: Route,
        params: &[&str],
        body: &Value,
    ) -> Result<Value, UpstreamError> {
        let form = [("body", body.to_string())];
        self.call_json(route, params, |r| r.form(&form)).await
    }

    /// A call with a streamed body. The body cannot be resent after a 401, so a session that
    /// OpenText has not accepted within [`SESSION_CONFIRMED_FOR`] is checked first with a cheap
    /// authenticated call (which also refreshes the ticket); should the session still expire in
    /// between, the client logs in again and returns a retryable error so the caller re-runs
    /// the upload with a fresh stream.
    async fn call_stream(
        &self,
        route: Route,
        params: &[&str],
        body: &StreamBody,
        build: impl Fn(reqwest::Body, RequestBuilder) -> Result<RequestBuilder, UpstreamError>,
    ) -> Result<Value, UpstreamError> {
        let inner = &*self.inner;
        let (method, url) = self.target(route, params)?;
        if !inner.session.confirmed_within(SESSION_CONFIRMED_FOR).await {
            let check = self.call(Deadline::Total, AUTH_INFO, &[], |r| r).await?;
            check_status(check, map_error).await?;
        }
        let (generation, credential) = inner
            .session
            .current(&inner.transport, inner.otds.as_ref())
            .await?;
        let value = credential.header_value()?;
        let response = inner
            .transport
            .send_stream(body, |b| {
                let request = inner
                    .transport
                    .request(method.clone(), url.clone())?
                    .header(credential.name.clone(), value.clone());
                build(b, request)
            })
            .await?;
        if response.status() == http::StatusCode::UNAUTHORIZED {
            inner
                .session
                .relogin(generation, &inner.transport, inner.otds.as_ref())
                .await?;
            return Err(UpstreamError::Transport {
                kind: TransportErrorKind::Other,
                message: "session expired during a streamed upload; logged in again, \
                          the upload can be retried"
                    .into(),
            });
        }
        inner.session.refresh(generation, &response).await;
        decode_json(response, map_error).await
    }

    fn target(&self, route: Route, params: &[&str]) -> Result<(Method, Url), UpstreamError> {
        let method = Method::from_bytes(route.method.as_bytes()).map_err(UpstreamError::invalid)?;
        let url = self.inner.transport.route_url(route.path, params)?;
        Ok((method, url))
    }
}

/// The OTDS base URL: configured, or the origin of the Content Server URL.
fn otds_base(config: &OpentextConfig) -> Result<Url, UpstreamError> {
    match &config.otds_url {
        Some(url) => Ok(url.clone()),
        None => Url::parse(&config.base_url.origin().ascii_serialization())
            .map_err(|e| UpstreamError::invalid(format!("cannot derive OTDS URL: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn answer(status: u16, message: &str) -> UpstreamError {
        map_error(ErrorAnswer {
            status: StatusCode::from_u16(status).unwrap(),
            message: message.into(),
            retry_after: None,
        })
    }

    #[test]
    fn opentext_errors_map_to_decisions() {
        assert!(matches!(
            answer(500, "An item with the name 'x' already exists."),
            UpstreamError::Conflict { .. }
        ));
        assert!(matches!(
            answer(
                400,
                "Sorry, the item you requested could not be accessed. Either it does not exist \
                 or you do not have permission to access it."
            ),
            UpstreamError::NotFound { .. }
        ));
        assert!(matches!(
            answer(409, "Could not update metadata (edit conflict)."),
            UpstreamError::EditConflict { .. }
        ));
        assert!(matches!(
            answer(400, "Missing required parameter 'name'"),
            UpstreamError::BadRequest { status: 400, .. }
        ));
        assert!(matches!(
            answer(500, "Could not get a node for 12"),
            UpstreamError::NotFound { .. }
        ));
        let other = answer(500, "Invalid block size");
        assert!(matches!(
            other,
            UpstreamError::Unavailable { status: 500, .. }
        ));
        assert!(!other.is_retryable());
    }
}
