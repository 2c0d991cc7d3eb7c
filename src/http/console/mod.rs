//! The operator console under `/ui/`: server-rendered HTML pages over the same store and flow
//! functions the admin API uses, with a little plain JavaScript for refresh. Every asset is
//! embedded in the binary. Off unless `[console].enabled`; served by the `api` and `all` roles.
//!
//! Access ([`session`]): sign in with `admin.token` (or the same bearer header from a reverse
//! proxy); every action is a POST form carrying the session's CSRF token and is logged with the
//! session id as who and the action and target as what.

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};

use super::AppState;

mod actions;
mod chart;
pub mod config;
mod events;
mod flows;
mod layout;
mod objects;
mod overview;
pub mod session;
mod sign_in;

pub use config::ConsoleConfig;

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// The console's routes (all under `/ui/`), with its security headers.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(overview::page))
        .route("/ui/sign-in", get(sign_in::form).post(sign_in::submit))
        .route("/ui/sign-out", post(sign_in::sign_out))
        .route("/ui/events", get(events::list))
        .route("/ui/events/{id}", get(events::detail))
        .route("/ui/events/{id}/replay", post(actions::replay_one))
        .route("/ui/dead-letters", get(actions::dead_letters))
        .route("/ui/dead-letters/replay", post(actions::replay_matching))
        .route("/ui/plan", get(actions::plan))
        .route("/ui/objects", get(objects::lookup))
        .route("/ui/objects/{module}/{id}", get(objects::timeline))
        .route("/ui/objects/{module}/{id}/resync", post(actions::resync))
        .route("/ui/flows", get(flows::page))
        .route("/ui/assets/console.css", get(css))
        .route("/ui/assets/console.js", get(js))
        .layer(middleware::from_fn(security_headers))
}

async fn css() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

async fn js() -> Response {
    asset(JS, "text/javascript; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Pages are not cached, framed or given to other sites; scripts and styles come from the
/// console alone.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A page that could not be shown: its status and one sentence an operator can act on.
#[derive(Debug)]
pub struct ConsoleError {
    status: StatusCode,
    message: String,
}

impl ConsoleError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// The CSRF token of a form was missing or wrong.
    pub fn forbidden_csrf() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "The form's CSRF token is missing or wrong, so nothing was done. Reload the page and \
             try again.",
        )
    }
}

impl From<crate::store::StoreError> for ConsoleError {
    fn from(error: crate::store::StoreError) -> Self {
        if let crate::store::StoreError::Invalid(detail) = error {
            return Self::bad_request(detail);
        }
        // The database's own text stays in the log: it can name tables, hosts or users.
        tracing::error!(%error, "console: store error");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The store could not answer; retry later (details in the bridge's log).",
        )
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body: Markup = layout::bare(
            title,
            html! {
                h1 { (self.status.as_u16()) " " (title) }
                p role="alert" { (self.message) }
                p { a href="/ui/" { "Back to the overview" } }
            },
        );
        (self.status, body).into_response()
    }
}

pub type PageResult = Result<Response, ConsoleError>;
