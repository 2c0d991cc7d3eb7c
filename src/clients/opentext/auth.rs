//! OpenText login and session: the credential header sent with every call, its refresh from
//! each response, and a single-flight re-login when a call meets an expired session.
//!
//! Modes (config `opentext.auth`):
//! - `otcs`: `POST /api/v1/auth` (form `username`, `password`, `domain`) → `OTCSTicket`.
//! - `otds`: OTDS `/otdsws/rest/authentication/credentials` → `OTDSTicket` header.
//! - `oauth2`: OTDS `/otdsws/oauth2/token` (client credentials) → `Authorization: Bearer`.
//!
//! In every mode, a response carrying an `OTCSTicket` header switches the session to that
//! ticket: Content Server hands out a fresh ticket with each call (and exchanges OTDS
//! credentials for one), so following it keeps the sliding 30-minute session alive.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use super::map_error;
use super::routes::{AUTH, OTDS_CREDENTIALS, OTDS_TOKEN, Route};
use crate::clients::config::{OpentextAuth, OpentextConfig};
use crate::clients::error::UpstreamError;
use crate::clients::transport::{Deadline, Transport, decode_json};

pub const OTCS_TICKET: HeaderName = HeaderName::from_static("otcsticket");
pub const OTDS_TICKET: HeaderName = HeaderName::from_static("otdsticket");

/// The header that authenticates a call. `Debug` never shows the value.
#[derive(Clone)]
pub(crate) struct Credential {
    pub name: HeaderName,
    value: SecretString,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({}: <redacted>)", self.name)
    }
}

impl Credential {
    fn new(name: HeaderName, value: String) -> Self {
        Self {
            name,
            value: SecretString::from(value),
        }
    }

    /// The header value, marked sensitive so HTTP-level logging redacts it.
    pub fn header_value(&self) -> Result<HeaderValue, UpstreamError> {
        let mut value = HeaderValue::from_str(self.value.expose_secret())
            .map_err(|_| UpstreamError::decode("credential is not a valid header value"))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// What is needed to log in; secrets stay in `SecretString`s.
pub(crate) struct Login {
    mode: OpentextAuth,
    username: String,
    password: SecretString,
    domain: Option<String>,
    client_id: Option<String>,
    client_secret: Option<SecretString>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("mode", &self.mode)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl Login {
    pub fn from_config(config: &OpentextConfig) -> Self {
        Self {
            mode: config.auth,
            username: config.username.clone(),
            password: config.password.clone(),
            domain: config.domain.clone(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
        }
    }

    pub fn needs_otds(&self) -> bool {
        self.mode != OpentextAuth::Otcs
    }

    /// Performs the login of the configured mode.
    async fn login(
        &self,
        otcs: &Transport,
        otds: Option<&Transport>,
    ) -> Result<Credential, UpstreamError> {
        match self.mode {
            OpentextAuth::Otcs => self.otcs_ticket(otcs).await,
            OpentextAuth::Otds => self.otds_ticket(otds_of(otds)?).await,
            OpentextAuth::Oauth2 => self.oauth2_token(otds_of(otds)?).await,
        }
    }

    async fn otcs_ticket(&self, otcs: &Transport) -> Result<Credential, UpstreamError> {
        #[derive(Deserialize)]
        struct Ticket {
            ticket: String,
        }
        let mut form = vec![
            ("username", self.username.as_str()),
            ("password", self.password.expose_secret()),
        ];
        if let Some(domain) = &self.domain {
            form.push(("domain", domain));
        }
        let response = send_login(otcs, AUTH, |r| r.form(&form)).await?;
        let ticket: Ticket = decode_json(response, login_error).await?;
        Ok(Credential::new(OTCS_TICKET, ticket.ticket))
    }

    async fn otds_ticket(&self, otds: &Transport) -> Result<Credential, UpstreamError> {
        #[derive(Deserialize)]
        struct Ticket {
            ticket: String,
        }
        let body = serde_json::json!({
            "userName": self.username,
            "password": self.password.expose_secret(),
        });
        let response = send_login(otds, OTDS_CREDENTIALS, |r| r.json(&body)).await?;
        let ticket: Ticket = decode_json(response, login_error).await?;
        Ok(Credential::new(OTDS_TICKET, ticket.ticket))
    }

    async fn oauth2_token(&self, otds: &Transport) -> Result<Credential, UpstreamError> {
        #[derive(Deserialize)]
        struct Token {
            access_token: String,
        }
        let (Some(id), Some(secret)) = (&self.client_id, &self.client_secret) else {
            return Err(UpstreamError::invalid(
                "oauth2 login needs client_id and client_secret",
            ));
        };
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", id.as_str()),
            ("client_secret", secret.expose_secret()),
        ];
        let response = send_login(otds, OTDS_TOKEN, |r| r.form(&form)).await?;
        let token: Token = decode_json(response, login_error).await?;
        Ok(Credential::new(
            http::header::AUTHORIZATION,
            format!("Bearer {}", token.access_token),
        ))
    }
}

fn otds_of(otds: Option<&Transport>) -> Result<&Transport, UpstreamError> {
    otds.ok_or_else(|| UpstreamError::invalid("OTDS login mode without OTDS transport"))
}

async fn send_login(
    transport: &Transport,
    route: Route,
    shape: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, UpstreamError> {
    let url = transport.route_url(route.path, &[])?;
    let method = Method::from_bytes(route.method.as_bytes()).map_err(UpstreamError::invalid)?;
    transport
        .send(Deadline::Total, || {
            Ok(shape(transport.request(method.clone(), url.clone())?))
        })
        .await
}

/// A rejected login is `Unauthorized` whatever status says so: OTCS answers 401, an expired
/// or wrong OTDS credential 400/401 (`{"status":1034,"error":"Expired OTDS SSO ticket"}`).
fn login_error(answer: crate::clients::error::ErrorAnswer) -> UpstreamError {
    match answer.status.as_u16() {
        400 | 401 | 403 => UpstreamError::Unauthorized {
            message: answer.message,
        },
        _ => map_error(answer),
    }
}

#[derive(Debug)]
struct State {
    /// Bumped by every login; a 401 names the generation it failed with, so only the first of
    /// many concurrent 401s logs in again.
    generation: u64,
    credential: Option<Credential>,
    /// When OpenText last accepted the credential (an answer other than 401, or the login).
    confirmed_at: Option<Instant>,
}

/// The current session of one client, shared by all its calls.
#[derive(Debug)]
pub(crate) struct Session {
    login: Login,
    state: RwLock<State>,
    login_lock: Mutex<()>,
    logins: AtomicU64,
}

impl Session {
    pub fn new(login: Login) -> Self {
        Self {
            login,
            state: RwLock::new(State {
                generation: 0,
                credential: None,
                confirmed_at: None,
            }),
            login_lock: Mutex::new(()),
            logins: AtomicU64::new(0),
        }
    }

    /// Logins performed so far (the status endpoint and tests use it).
    pub fn logins(&self) -> u64 {
        self.logins.load(Ordering::Relaxed)
    }

    /// The credential to use now, logging in first if there is none.
    pub async fn current(
        &self,
        otcs: &Transport,
        otds: Option<&Transport>,
    ) -> Result<(u64, Credential), UpstreamError> {
        {
            let state = self.state.read().await;
            if let Some(c) = &state.credential {
                return Ok((state.generation, c.clone()));
            }
        }
        self.relogin(0, otcs, otds).await
    }

    /// Logs in again unless someone already did since generation `failed` was current.
    pub async fn relogin(
        &self,
        failed: u64,
        otcs: &Transport,
        otds: Option<&Transport>,
    ) -> Result<(u64, Credential), UpstreamError> {
        let _single_flight = self.login_lock.lock().await;
        {
            let state = self.state.read().await;
            if let Some(c) = &state.credential
                && state.generation != failed
            {
                return Ok((state.generation, c.clone()));
            }
        }
        self.logins.fetch_add(1, Ordering::Relaxed);
        let credential = self.login.login(otcs, otds).await?;
        let mut state = self.state.write().await;
        state.generation += 1;
        state.credential = Some(credential.clone());
        state.confirmed_at = Some(Instant::now());
        tracing::debug!(generation = state.generation, "logged in to OpenText");
        Ok((state.generation, credential))
    }

    /// Takes what an answer says of the session it was made with, if that session is still
    /// current (a late answer from before a re-login must not bring back the old session): any
    /// answer but 401 confirms it, and a ticket it carries replaces the one held.
    pub async fn refresh(&self, generation: u64, response: &reqwest::Response) {
        if response.status() == http::StatusCode::UNAUTHORIZED {
            return;
        }
        let ticket = response
            .headers()
            .get(OTCS_TICKET)
            .and_then(|v| v.to_str().ok())
            .filter(|ticket| !ticket.is_empty());
        let mut state = self.state.write().await;
        if state.generation == generation {
            state.confirmed_at = Some(Instant::now());
            if let Some(ticket) = ticket {
                state.credential = Some(Credential::new(OTCS_TICKET, ticket.to_string()));
            }
        }
    }

    /// Whether OpenText accepted the credential less than `age` ago.
    pub async fn confirmed_within(&self, age: Duration) -> bool {
        let state = self.state.read().await;
        state.confirmed_at.is_some_and(|at| at.elapsed() < age)
    }
}
