//! The web console: server-rendered pages on the API's own port, for people who would
//! rather look than read JSON. Every page is one HTML answer plus two cached assets (a
//! style sheet and a small script, both compiled into the binary); everything works
//! without the script except following logs as they arrive.
//!
//! Safety: maud escapes every value put into a page; the Content-Security-Policy allows
//! only this server's own script and style sheet (no inline code); a session is an
//! HttpOnly, SameSite=Strict cookie that names a server-side session; every form that
//! changes something carries the session's CSRF token and must come from this origin.
//! A page reads only the workspace in its URL, and only when the session's key may act
//! in it (the same check as the API's `X-Tenant-Id`).

mod assets;
mod deployments;
mod integrations;
mod layout;
mod listeners;
mod session;

use crate::error::ApiError;
use crate::AppState;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use uuid::Uuid;

pub use session::Session;

/// The console's routes. The deployment page's path is the one the official CLI prints
/// after a deploy (`<dashboard>/o/<workspace id>/host/deployments/<deployment id>`).
pub fn router() -> Router<AppState> {
    let deployment = "/o/{workspace_id}/host/deployments/{deployment_id}";
    Router::new()
        .route("/console", get(session::home))
        .route(
            "/console/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/console/sign-out", post(session::sign_out))
        .route("/console/workspaces", get(session::workspaces))
        .route("/console/assets/{version}/{name}", get(assets::serve))
        .route("/o/{workspace_id}", get(deployments::to_list))
        .route("/o/{workspace_id}/host", get(deployments::to_list))
        .route("/o/{workspace_id}/host/deployments", get(deployments::list))
        .route(deployment, get(deployments::show))
        .route(&format!("{deployment}/logs"), get(deployments::logs))
        .route(
            &format!("{deployment}/delete"),
            get(deployments::confirm_delete).post(deployments::delete),
        )
        .route(
            &format!("{deployment}/revisions/{{revision_id}}/redeploy"),
            post(deployments::redeploy),
        )
        .route(
            "/o/{workspace_id}/host/integrations",
            get(integrations::list),
        )
        .route(
            "/o/{workspace_id}/host/listeners",
            get(listeners::list).post(listeners::create),
        )
        .route_layer(axum::middleware::from_fn(crate::telemetry::tag_route))
        .layer(axum::middleware::from_fn(security_headers))
}

/// Why a console request did not get its page.
pub enum ConsoleError {
    /// No valid session: off to the sign-in page, back to `next` afterwards.
    SignIn { next: String },
    /// An error page with the API's status and text.
    Api(ApiError),
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> Self {
        ConsoleError::Api(e)
    }
}

impl From<store::StoreError> for ConsoleError {
    fn from(e: store::StoreError) -> Self {
        ConsoleError::Api(e.into())
    }
}

pub type ConsoleResult<T = Response> = Result<T, ConsoleError>;

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        match self {
            ConsoleError::SignIn { next } => {
                Redirect::to(&session::sign_in_location(&next)).into_response()
            }
            ConsoleError::Api(e) => {
                let (status, text) = e.status_and_text();
                layout::error_page(status, &text)
            }
        }
    }
}

/// A path segment that must be a UUID; anything else is a page that does not exist.
fn path_id(raw: &str) -> Result<Uuid, ConsoleError> {
    Uuid::parse_str(raw).map_err(|_| ConsoleError::Api(ApiError::NotFound("Not Found".into())))
}

/// The policy every console answer carries: only this origin's script, style sheet and
/// form targets; no inline code, no framing, no plugins.
/// What a page reads when it shows or looks up all of a workspace's listeners or
/// deployments.
const EVERY: store::Window = store::Window::first(10_000);

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                   base-uri 'none'";

async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let headers = res.headers_mut();
    let set = |headers: &mut HeaderMap, name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::CONTENT_SECURITY_POLICY, CSP);
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::REFERRER_POLICY, "same-origin");
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    res
}

/// Refuses a state-changing request another site made: the browser's `Sec-Fetch-Site`
/// must not say cross-site, and an `Origin` must be this server's own: the host the
/// request was sent to, the host a proxy forwarded (`X-Forwarded-Host`), or the
/// configured public URL's.
fn same_origin(app: &AppState, headers: &HeaderMap) -> Result<(), ConsoleError> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let authority = |url: &str| {
        url.split_once("://").map(|(_, rest)| {
            rest.split('/')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase()
        })
    };
    let cross_site = matches!(text("sec-fetch-site"), Some("cross-site" | "same-site"));
    let origin_ok = match text("origin").map(authority) {
        None => true,
        Some(None) => false,
        Some(Some(origin)) => [
            text("host").map(str::to_ascii_lowercase),
            text("x-forwarded-host").map(str::to_ascii_lowercase),
            authority(&app.config.public_url),
        ]
        .contains(&Some(origin)),
    };
    if cross_site || !origin_ok {
        return Err(ConsoleError::Api(ApiError::Forbidden(
            "This form was sent from another site; open the console and try again.".into(),
        )));
    }
    Ok(())
}

/// `s` with every byte but letters, digits and `-._~` percent-encoded, for a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A redirect after a form was handled (303: the browser fetches the page with GET).
fn see_other(location: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, location.to_owned())],
    )
        .into_response()
}
