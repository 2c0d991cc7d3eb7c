//! Who may use the console: a sign-in with the admin token (or the same bearer header set by a
//! reverse proxy), a stateless signed session cookie, and a CSRF token on every action.
//!
//! The cookie is `<session id>.<expiry (unix s)>.<HMAC-SHA256 hex>`, keyed by a key derived
//! from `admin.token`: changing the token signs every session out. The CSRF token is an HMAC
//! of the session id under the same key, so it needs no server-side state either.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::http::AppState;

/// The session cookie's name.
pub const COOKIE: &str = "xecm_console";
/// The session id of requests signed in by a reverse proxy's bearer header.
const PROXY_SESSION: &str = "proxy";

type HmacSha256 = Hmac<Sha256>;

/// A signed-in operator. Every console page takes one; without a session the browser is sent
/// to the sign-in form.
#[derive(Debug, Clone)]
pub struct Operator {
    /// Names the operator in the action log (a session id, or `proxy`).
    pub session: String,
    /// The token every form of this session must send back (`csrf`).
    pub csrf: String,
}

impl Operator {
    /// Whether a form's `csrf` field is this session's token.
    pub fn csrf_ok(&self, presented: &str) -> bool {
        bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes()))
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Some(key) = session_key(state) else {
            return Err(Redirect::to("/ui/sign-in").into_response());
        };
        let session = if bearer_ok(&parts.headers, state) {
            Some(PROXY_SESSION.to_string())
        } else {
            cookie(&parts.headers, COOKIE)
                .and_then(|value| verify_cookie(&key, value, crate::store::now_millis() / 1000))
        };
        match session {
            Some(session) => Ok(Operator {
                csrf: csrf_token(&key, &session),
                session,
            }),
            None => Err(Redirect::to("/ui/sign-in").into_response()),
        }
    }
}

/// The signing key: an HMAC of a fixed label under the admin token. `None` without a token
/// (nobody can sign in then).
pub fn session_key(state: &AppState) -> Option<[u8; 32]> {
    let token = state.admin.token.as_ref()?;
    let mut mac = HmacSha256::new_from_slice(token.expose_secret().as_bytes()).ok()?;
    mac.update(b"xecm-bridge console session key v1");
    Some(mac.finalize().into_bytes().into())
}

/// Whether `presented` is the admin token. Both sides are hashed first, so the comparison takes
/// the same time whatever the presented token's length or content.
pub fn token_matches(state: &AppState, presented: &str) -> bool {
    let Some(token) = &state.admin.token else {
        return false;
    };
    let expected = Sha256::digest(token.expose_secret().as_bytes());
    let presented = Sha256::digest(presented.as_bytes());
    bool::from(expected.ct_eq(&presented))
}

fn bearer_ok(headers: &HeaderMap, state: &AppState) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::ingest::verify::bearer_credentials)
        .is_some_and(|presented| token_matches(state, presented))
}

fn mac(key: &[u8; 32], parts: &[&[u8]]) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
        mac.update(b"\n");
    }
    hex::encode(mac.finalize().into_bytes())
}

/// The CSRF token of one session.
pub fn csrf_token(key: &[u8; 32], session: &str) -> String {
    mac(key, &[b"csrf", session.as_bytes()])
}

/// A new session's cookie value, valid until `expires` (unix seconds).
pub fn new_cookie(key: &[u8; 32], session: &str, expires: i64) -> String {
    let expires = expires.to_string();
    let signature = mac(key, &[b"session", session.as_bytes(), expires.as_bytes()]);
    format!("{session}.{expires}.{signature}")
}

/// The session id of a cookie value whose signature holds and that has not expired by `now`.
pub fn verify_cookie(key: &[u8; 32], value: &str, now: i64) -> Option<String> {
    let mut parts = value.split('.');
    let (session, expires, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || session.is_empty() || session == PROXY_SESSION {
        return None;
    }
    let expected = mac(key, &[b"session", session.as_bytes(), expires.as_bytes()]);
    let valid = bool::from(expected.as_bytes().ct_eq(signature.as_bytes()));
    (valid && expires.parse::<i64>().ok()? > now).then(|| session.to_string())
}

/// The `Set-Cookie` header of a session: `HttpOnly`, `SameSite=Strict`, limited to `/ui/`,
/// `Secure` unless `[console].cookie_secure` is off.
pub fn set_cookie(value: &str, max_age_secs: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/ui/; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{secure}"
    ))
    .expect("cookie values are ASCII")
}

/// One cookie's value from the `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A fresh random session id.
pub fn new_session_id() -> String {
    hex::encode(rand::random::<[u8; 12]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn a_signed_cookie_verifies_until_it_expires() {
        let value = new_cookie(&KEY, "abc", 1_000);
        assert_eq!(verify_cookie(&KEY, &value, 999).as_deref(), Some("abc"));
        assert_eq!(verify_cookie(&KEY, &value, 1_000), None);
    }

    #[test]
    fn a_changed_cookie_or_key_is_refused() {
        let value = new_cookie(&KEY, "abc", 1_000);
        assert_eq!(verify_cookie(&[8; 32], &value, 0), None);
        let longer = value.replace(".1000.", ".9000.");
        assert_eq!(verify_cookie(&KEY, &longer, 0), None);
        let other = value.replacen("abc", "abd", 1);
        assert_eq!(verify_cookie(&KEY, &other, 0), None);
        assert_eq!(verify_cookie(&KEY, "abc.1000", 0), None);
    }

    #[test]
    fn the_csrf_token_is_per_session() {
        assert_ne!(csrf_token(&KEY, "a"), csrf_token(&KEY, "b"));
        assert_eq!(csrf_token(&KEY, "a"), csrf_token(&KEY, "a"));
    }

    #[test]
    fn the_cookie_header_is_strict() {
        let header = set_cookie("v", 60, true);
        let text = header.to_str().unwrap();
        assert!(text.contains("HttpOnly") && text.contains("SameSite=Strict"));
        assert!(text.ends_with("; Secure"));
        assert!(
            !set_cookie("v", 60, false)
                .to_str()
                .unwrap()
                .contains("Secure")
        );
    }
}
