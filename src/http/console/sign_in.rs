//! Sign-in with the admin token, and sign-out.

use axum::Form;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use secrecy::SecretString;
use serde::Deserialize;

use super::session::{self, Operator};
use super::{ConsoleError, layout};
use crate::http::AppState;

fn sign_in_page(state: &AppState, refused: bool) -> Markup {
    layout::bare(
        "Sign in",
        html! {
            h1 { "xecm-bridge console" }
            @if state.admin.token.is_none() {
                p role="alert" {
                    "No " code { "admin.token" } " is configured, so nobody can sign in. \
                     Set one and restart the bridge."
                }
            } @else {
                @if refused {
                    p role="alert" .error { "That token is not the admin token." }
                }
                form method="post" action="/ui/sign-in" {
                    label for="token" { "Admin token" }
                    input id="token" name="token" type="password" autocomplete="current-password"
                        required autofocus;
                    button type="submit" { "Sign in" }
                }
                p.hint { "The token is the bridge's " code { "admin.token" } "; it is not stored in the browser." }
            }
        },
    )
}

/// `GET /ui/sign-in`.
pub async fn form(State(state): State<AppState>) -> Markup {
    sign_in_page(&state, false)
}

#[derive(Deserialize)]
pub struct SignIn {
    #[serde(default = "empty_secret")]
    token: SecretString,
}

fn empty_secret() -> SecretString {
    SecretString::from(String::new())
}

/// `POST /ui/sign-in`: a matching token gets a session cookie; any other answer is the same
/// form with the same message, after the same constant-time comparison.
pub async fn submit(State(state): State<AppState>, Form(form): Form<SignIn>) -> Response {
    use secrecy::ExposeSecret;
    let key = session::session_key(&state);
    let accepted = session::token_matches(&state, form.token.expose_secret());
    let Some(key) = key.filter(|_| accepted) else {
        tracing::warn!("console: sign-in refused");
        return (StatusCode::UNAUTHORIZED, sign_in_page(&state, true)).into_response();
    };
    let session_id = session::new_session_id();
    let lifetime = state.console.session_minutes as i64 * 60;
    let expires = crate::store::now_millis() / 1000 + lifetime;
    let cookie = session::new_cookie(&key, &session_id, expires);
    tracing::info!(session = %session_id, action = "sign-in", "console action");
    (
        [(
            header::SET_COOKIE,
            session::set_cookie(&cookie, lifetime, state.console.cookie_secure),
        )],
        Redirect::to("/ui/"),
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

/// `POST /ui/sign-out`: the cookie is removed from the browser.
pub async fn sign_out(
    operator: Operator,
    State(state): State<AppState>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, ConsoleError> {
    if !operator.csrf_ok(&form.csrf) {
        return Err(ConsoleError::forbidden_csrf());
    }
    tracing::info!(session = %operator.session, action = "sign-out", "console action");
    Ok((
        [(
            header::SET_COOKIE,
            session::set_cookie("", 0, state.console.cookie_secure),
        )],
        Redirect::to("/ui/sign-in"),
    )
        .into_response())
}
