//! Signing in and out. Signing in with an API key creates a server-side session; the
//! browser keeps only a random token in an HttpOnly cookie, the database only its hash
//! and the hash of the key. A session ends when its owner signs out, when it expires, or
//! when its key is revoked (every page authenticates the key again).

use super::{encode, layout, same_origin, see_other, ConsoleError, ConsoleResult};
use crate::auth::{self, Tenant};
use crate::error::ApiError;
use crate::operations::sessions;
use crate::AppState;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use serde::Deserialize;
use store::{ApiKey, KeyScope, WorkspaceAccess};
use subtle::ConstantTimeEq;
use uuid::Uuid;

const COOKIE: &str = "hostplane_session";
/// How long a session lasts after sign-in.
const LIFETIME: chrono::Duration = chrono::Duration::hours(12);

/// A signed-in visitor of a page.
pub struct Session {
    token_hash: String,
    pub key: ApiKey,
    /// The token forms must send back (derived from the cookie, which pages cannot read).
    pub csrf: String,
}

/// A signed-in visitor acting in the workspace of the page's URL.
pub struct Visit {
    pub session: Session,
    pub tenant: Tenant,
}

impl Session {
    /// Whether this key may choose among its organization's workspaces.
    pub fn is_org_key(&self) -> bool {
        matches!(self.key.scope(), KeyScope::Org { .. })
    }

    /// Fails unless `sent` is this session's CSRF token.
    pub fn check_csrf(&self, sent: &str) -> Result<(), ConsoleError> {
        if bool::from(self.csrf.as_bytes().ct_eq(sent.as_bytes())) {
            Ok(())
        } else {
            Err(ConsoleError::Api(ApiError::Forbidden(
                "This form has expired; reload the page and try again.".into(),
            )))
        }
    }
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| !v.is_empty())
}

fn csrf_of(token: &str) -> String {
    store::hash_key(&format!("csrf:{token}"))
}

/// The page a request is for, to come back to after signing in.
pub fn here(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/console", |p| p.as_str())
}

/// Where the visitor is sent to sign in, coming back to `next` afterwards.
pub fn sign_in_location(next: &str) -> String {
    format!("/console/sign-in?next={}", encode(next))
}

/// Only a path of this console is a place to come back to (no other site, no scheme).
fn safe_next(next: Option<&str>) -> Option<&str> {
    next.filter(|n| {
        (n.starts_with("/o/") || n.starts_with("/console/"))
            && !n.contains("//")
            && !n.contains('\\')
            && n.bytes().all(|b| b.is_ascii_graphic())
    })
}

/// The session of the request, its key authenticated again (with `workspace` as the
/// workspace it would act in); a missing, expired or revoked one sends the visitor to
/// sign in and then to `back` (the page itself, or for a form the page it was on).
async fn session(
    app: &AppState,
    headers: &HeaderMap,
    back: &str,
    workspace: Option<Uuid>,
) -> ConsoleResult<(Session, Option<WorkspaceAccess>)> {
    let sign_in = || ConsoleError::SignIn {
        next: back.to_owned(),
    };
    let token = cookie_token(headers).ok_or_else(sign_in)?;
    let token_hash = store::hash_key(&token);
    let (key, access) = match sessions::key_of(app, &token_hash, workspace).await {
        Ok(found) => found,
        Err(ApiError::Unauthorized(_)) => return Err(sign_in()),
        Err(e) => return Err(e.into()),
    };
    let session = Session {
        token_hash,
        key,
        csrf: csrf_of(&token),
    };
    Ok((session, access))
}

/// The session of a request for a page of workspace `workspace` (see [`session`]).
pub async fn visit(
    app: &AppState,
    headers: &HeaderMap,
    back: &str,
    workspace: Uuid,
) -> ConsoleResult<Visit> {
    let (session, access) = session(app, headers, back, Some(workspace)).await?;
    let tenant = auth::tenant(&session.key, access, Some(workspace))?;
    Ok(Visit { session, tenant })
}

/// The visitor of a page of the workspace in its URL (`/o/{workspace_id}/...`), sent back
/// to this very page after signing in.
impl axum::extract::FromRequestParts<AppState> for Visit {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        app: &AppState,
    ) -> ConsoleResult<Self> {
        let params = axum::extract::RawPathParams::from_request_parts(parts, app).await;
        let raw = params.ok().and_then(|p| {
            p.iter()
                .find(|(n, _)| *n == "workspace_id")
                .map(|(_, v)| v.to_owned())
        });
        let ws = super::path_id(raw.as_deref().unwrap_or(""))?;
        visit(app, &parts.headers, here(&parts.uri), ws).await
    }
}

/// The workspace a key lands in: its own, or for an organization key the list to choose.
fn landing(key: &ApiKey) -> String {
    match key.scope() {
        KeyScope::Workspace { workspace_id, .. } => format!("/o/{workspace_id}/host/deployments"),
        _ => "/console/workspaces".into(),
    }
}

pub async fn home(State(app): State<AppState>, headers: HeaderMap) -> ConsoleResult {
    let (session, _) = session(&app, &headers, "/console", None).await?;
    Ok(Redirect::to(&landing(&session.key)).into_response())
}

#[derive(Deserialize)]
pub struct Next {
    next: Option<String>,
}

pub async fn sign_in_page(Query(q): Query<Next>) -> Response {
    sign_in_form(q.next.as_deref(), None)
}

fn sign_in_form(next: Option<&str>, problem: Option<&str>) -> Response {
    let status = if problem.is_some() {
        axum::http::StatusCode::UNAUTHORIZED
    } else {
        axum::http::StatusCode::OK
    };
    let body = html! {
        section.narrow {
            h1 { "Sign in" }
            p { "Use an API key of a workspace or an organization (the key " code { "hostplane serve" } " printed on its first start, or one from " code { "hostplane admin api-key create" } ")." }
            @if let Some(problem) = problem {
                p.error role="alert" { (problem) }
            }
            form method="post" action="/console/sign-in" {
                @if let Some(next) = safe_next(next) {
                    input type="hidden" name="next" value=(next);
                }
                label for="api-key" { "API key" }
                input #api-key type="password" name="api_key" required autocomplete="current-password" autofocus;
                button type="submit" { "Sign in" }
            }
        }
    };
    (status, layout::page("Sign in", None, body)).into_response()
}

#[derive(Deserialize)]
pub struct SignIn {
    api_key: String,
    next: Option<String>,
}

pub async fn sign_in(
    State(app): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> ConsoleResult {
    same_origin(&app, &headers)?;
    let key = form.api_key.trim();
    let refused = |text: &str| Ok(sign_in_form(form.next.as_deref(), Some(text)));
    if key.is_empty() {
        return refused("Enter an API key.");
    }
    let (token, record) = match sessions::sign_in(&app, key, LIFETIME).await {
        Ok(signed_in) => signed_in,
        Err(ApiError::Unauthorized(_)) => return refused("That API key is not valid."),
        Err(ApiError::Forbidden(text)) => return refused(&text),
        Err(e) => return Err(e.into()),
    };
    let secure = if secure_transport(&app, &headers) {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        LIFETIME.num_seconds()
    );
    let next = safe_next(form.next.as_deref())
        .map(str::to_owned)
        .unwrap_or_else(|| landing(&record));
    let mut res = see_other(&next);
    if let Ok(v) = cookie.parse() {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(res)
}

/// Whether the browser reached this server over HTTPS (directly as configured, or
/// through a proxy that says so).
fn secure_transport(app: &AppState, headers: &HeaderMap) -> bool {
    app.config.public_url.starts_with("https://")
        || headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

#[derive(Deserialize)]
pub struct Csrf {
    pub csrf: String,
}

pub async fn sign_out(
    State(app): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<Csrf>,
) -> ConsoleResult {
    same_origin(&app, &headers)?;
    let (session, _) = session(&app, &headers, "/console", None).await?;
    session.check_csrf(&form.csrf)?;
    sessions::sign_out(&app, &session.token_hash).await?;
    let mut res = see_other("/console/sign-in");
    let gone = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = gone.parse() {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(res)
}

/// The workspaces an organization key can open.
pub async fn workspaces(
    State(app): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> ConsoleResult {
    let (session, _) = session(&app, &headers, here(&uri), None).await?;
    let listed = match session.key.scope() {
        KeyScope::Org { org_id } => sessions::workspaces(&app, org_id).await?,
        _ => return Ok(Redirect::to(&landing(&session.key)).into_response()),
    };
    let body = html! {
        h1 { "Workspaces" }
        p { "This organization key can act in any of its organization's workspaces." }
        ul.cards {
            @for w in &listed {
                li {
                    a href={ "/o/" (w.id) "/host/deployments" } { (w.name) }
                    " " span.muted { (w.id) }
                }
            }
        }
    };
    let nav = layout::Nav {
        workspace: None,
        current: layout::Tab::Workspaces,
        session: &session,
    };
    Ok(layout::page("Workspaces", Some(&nav), body).into_response())
}
