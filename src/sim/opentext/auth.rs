//! Authentication: OTCS tickets (`POST /api/v1/auth`, header `OTCSTicket`, a fresh ticket on every
//! response, sliding expiry), OTDS tickets (`OTDSTicket`) and OAuth2 client-credentials Bearer
//! tokens. Tickets carry an HMAC so they need no per-ticket state; sessions expire as a whole.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::Sim;
use super::params::Params;
use super::respond::ot_error;

/// Who an authenticated request acts as.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) user_id: i64,
    pub(crate) name: String,
}

#[derive(Debug, Clone)]
struct Session {
    caller: Caller,
    expires: Instant,
}

/// Session and token registry; `Debug` shows counts only.
pub(crate) struct Auth {
    key: [u8; 32],
    ttl: Duration,
    next: AtomicU64,
    sessions: RwLock<HashMap<u64, Session>>,
    /// OTDS tickets and OAuth access tokens → session.
    tokens: RwLock<HashMap<String, u64>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("ttl", &self.ttl)
            .field(
                "sessions",
                &self.sessions.read().map(|s| s.len()).unwrap_or(0),
            )
            .finish_non_exhaustive()
    }
}

impl Auth {
    pub(crate) fn new(ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            key: rand::random(),
            ttl,
            next: AtomicU64::new(1),
            sessions: RwLock::new(HashMap::new()),
            tokens: RwLock::new(HashMap::new()),
        })
    }

    fn new_session(&self, caller: Caller) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut sessions = self.sessions.write().expect("sessions poisoned");
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(
            id,
            Session {
                caller,
                expires: now + self.ttl,
            },
        );
        id
    }

    fn mac(&self, text: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(text.as_bytes());
        URL_SAFE_NO_PAD.encode(&mac.finalize().into_bytes()[..18])
    }

    /// A new ticket for a session; every call returns a different string.
    pub(crate) fn ticket(&self, session: u64) -> String {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let text = format!("{session}.{seq}");
        format!("{text}.{}", self.mac(&text))
    }

    fn session_of_ticket(&self, ticket: &str) -> Option<u64> {
        let (text, mac) = ticket.rsplit_once('.')?;
        if self.mac(text) != mac {
            return None;
        }
        text.split('.').next()?.parse().ok()
    }

    /// Validates a session and slides its expiry.
    fn touch(&self, session: u64) -> Option<Caller> {
        let mut sessions = self.sessions.write().expect("sessions poisoned");
        let entry = sessions.get_mut(&session)?;
        let now = Instant::now();
        if entry.expires <= now {
            sessions.remove(&session);
            return None;
        }
        entry.expires = now + self.ttl;
        Some(entry.caller.clone())
    }

    /// Forgets every session, ticket and token (fault injection: ticket expiry).
    pub(crate) fn expire_all(&self) {
        self.sessions.write().expect("sessions poisoned").clear();
        self.tokens.write().expect("tokens poisoned").clear();
    }

    fn token_for(&self, caller: Caller, prefix: &str) -> String {
        let session = self.new_session(caller);
        let token = format!(
            "{prefix}{}",
            URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>())
        );
        self.tokens
            .write()
            .expect("tokens poisoned")
            .insert(token.clone(), session);
        token
    }

    fn session_of_token(&self, token: &str) -> Option<u64> {
        self.tokens
            .read()
            .expect("tokens poisoned")
            .get(token)
            .copied()
    }

    /// Finds the session a request authenticates with, in Content Server's order of preference.
    fn authenticate(&self, headers: &HeaderMap) -> Option<u64> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        if let Some(ticket) = header("otcsticket") {
            return self.session_of_ticket(ticket);
        }
        if let Some(ticket) = cookie(headers, "otcsticket").or_else(|| cookie(headers, "LLCookie"))
        {
            return self.session_of_ticket(&ticket);
        }
        if let Some(ticket) = header("otdsticket") {
            return self.session_of_token(ticket);
        }
        let bearer = header("authorization").and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
        bearer.and_then(|t| self.session_of_token(t.trim()))
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.to_owned())
}

/// Middleware for every `/api/…` call except login and ping: 401 `{"error": …}` without a valid
/// credential; otherwise a refreshed `OTCSTicket` header on the response.
pub(crate) async fn require_auth(State(sim): State<Sim>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let public = path.ends_with("/api/v1/ping")
        || (path.ends_with("/api/v1/auth") && req.method() == "POST");
    if public {
        return next.run(req).await;
    }
    let Some(session) = sim.auth.authenticate(req.headers()) else {
        return ot_error(401, "Authentication Required");
    };
    let Some(caller) = sim.auth.touch(session) else {
        return ot_error(401, "Authentication Required: your session has expired");
    };
    req.extensions_mut().insert(caller);
    let mut response = next.run(req).await;
    if let Ok(value) = HeaderValue::from_str(&sim.auth.ticket(session)) {
        response.headers_mut().insert("OTCSTicket", value);
    }
    response
}

fn check_password(sim: &Sim, user: &str, password: &str) -> Option<Caller> {
    let store = sim.store.read().expect("store poisoned");
    store
        .seed
        .users
        .iter()
        .find(|u| u.name.eq_ignore_ascii_case(user) && u.password == password)
        .map(|u| Caller {
            user_id: u.id,
            name: u.name.clone(),
        })
}

/// `POST /api/v1/auth` (form `username`, `password`, optional `domain`) → `{"ticket": …}`.
pub(crate) async fn login(State(sim): State<Sim>, params: Params) -> Response {
    let Some(user) = params.str("username").filter(|u| !u.is_empty()) else {
        return ot_error(500, "Argument username is required");
    };
    let Some(password) = params.str("password") else {
        return ot_error(500, "Argument password is required");
    };
    // A domain is accepted and ignored: the simulator has a single user directory.
    match check_password(&sim, &user, &password) {
        Some(caller) => {
            let session = sim.auth.new_session(caller);
            let ticket = sim.auth.ticket(session);
            let mut response = axum::Json(json!({"ticket": ticket})).into_response();
            if let Ok(value) = HeaderValue::from_str(&ticket) {
                response.headers_mut().insert("OTCSTicket", value);
            }
            response
        }
        None => ot_error(401, "Invalid username/password specified."),
    }
}

/// `GET /api/v1/auth`: the current user (also how OTDS tickets and Bearer tokens are exchanged
/// for an `OTCSTicket`, which the middleware adds).
pub(crate) async fn whoami(axum::Extension(caller): axum::Extension<Caller>) -> Response {
    axum::Json(json!({"data": {"id": caller.user_id, "name": caller.name, "type": 0}}))
        .into_response()
}

/// `DELETE /api/v1/auth`: ends the session.
pub(crate) async fn logout(State(sim): State<Sim>, headers: HeaderMap) -> Response {
    if let Some(session) = sim.auth.authenticate(&headers) {
        sim.auth
            .sessions
            .write()
            .expect("sessions poisoned")
            .remove(&session);
    }
    axum::Json(json!({})).into_response()
}

/// OTDS `POST /otdsws/rest/authentication/credentials` (`userName`) and the newer
/// `/otdsws/v1/authentication/credentials` (`user_name`), JSON bodies.
pub(crate) async fn otds_credentials(State(sim): State<Sim>, body: axum::body::Bytes) -> Response {
    let input: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let user = input["userName"]
        .as_str()
        .or(input["user_name"].as_str())
        .unwrap_or("");
    let password = input["password"].as_str().unwrap_or("");
    match check_password(&sim, user, password) {
        Some(caller) => {
            let user_id = format!("{}@Content Server Members", caller.name);
            let ticket = sim.auth.token_for(caller, "*OTDSSSO*");
            axum::Json(json!({
                "token": STANDARD.encode(rand::random::<[u8; 16]>()),
                "userId": user_id, "user_id": user_id,
                "ticket": ticket, "resourceID": null, "failureReason": null,
                "password_expiration_time": 0, "continuation": false,
            }))
            .into_response()
        }
        None => (
            axum::http::StatusCode::UNAUTHORIZED,
            axum::Json(
                json!({"status": 1, "error": "Authentication failed", "errorDetails": null}),
            ),
        )
            .into_response(),
    }
}

/// OTDS `POST /otdsws/oauth2/token`, `grant_type=client_credentials`, client id/secret in the form
/// (one client library) or as HTTP Basic auth (another).
pub(crate) async fn oauth_token(
    State(sim): State<Sim>,
    headers: HeaderMap,
    params: Params,
) -> Response {
    let oauth_error = |status: u16, code: &str| {
        (
            axum::http::StatusCode::from_u16(status).expect("valid status"),
            axum::Json(json!({"error": code, "error_description": code})),
        )
            .into_response()
    };
    if params.str("grant_type").as_deref() != Some("client_credentials") {
        return oauth_error(400, "unsupported_grant_type");
    }
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())));
    let (id, secret) = match basic {
        Some(pair) => pair,
        None => (
            params.str("client_id").unwrap_or_default(),
            params.str("client_secret").unwrap_or_default(),
        ),
    };
    let caller = {
        let store = sim.store.read().expect("store poisoned");
        store
            .seed
            .oauth_clients
            .iter()
            .find(|c| c.client_id == id && c.client_secret == secret)
            .map(|c| Caller {
                user_id: store.user_id_or_admin(Some(&c.user)),
                name: c.user.clone(),
            })
    };
    let Some(caller) = caller else {
        return oauth_error(401, "invalid_client");
    };
    let token = sim.auth.token_for(caller, "");
    axum::Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": sim.auth.ttl.as_secs(),
        "scope": params.str("scope").unwrap_or_default(),
    }))
    .into_response()
}

/// `GET /api/v1/members/{id}`: a user or group by id (Content Server spec, `GetMemberInfo`). The
/// spec's schema declares `data` as an array; Content Server answers with the member object, as
/// here. An unknown id gets the spec's 400 "Could not get a member for {id}".
pub(crate) async fn member(
    State(sim): State<Sim>,
    axum::extract::Path(id): axum::extract::Path<i64>,
) -> Response {
    let store = sim.store.read().expect("store poisoned");
    match store.member_json(id) {
        Some(data) => {
            let (kind, kind_name) = (data["type"].clone(), data["type_name"].clone());
            axum::Json(json!({"data": data, "type": kind, "type_name": kind_name})).into_response()
        }
        None => ot_error(400, format!("Could not get a member for {id}")),
    }
}
