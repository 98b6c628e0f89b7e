//! Routing answers that FastAPI gives before any handler runs: 404, 405 and the 307
//! trailing-slash redirect.

use crate::error::ApiError;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::Response;

/// The prefix self-hosted installs serve the API under.
pub const SELF_HOSTED_PREFIX: &str = "/api-host";

fn template_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len()
        && t.iter().zip(&p).all(|(t, p)| {
            if t.starts_with('{') {
                !p.is_empty()
            } else {
                t == p
            }
        })
}

fn is_route(path: &str) -> bool {
    let path = path
        .strip_prefix(SELF_HOSTED_PREFIX)
        .filter(|p| p.starts_with('/'))
        .unwrap_or(path);
    crate::route_templates()
        .iter()
        .any(|t| template_matches(t, path))
}

/// A tarball upload (`PUT /uploads/{token}`) or a build's source download (which may
/// fetch a git source first): these get the longer upload time limit.
pub fn is_transfer(path: &str) -> bool {
    let source = path.starts_with("/dataplane/v1/listeners/")
        && (path.ends_with("/source") || path.ends_with("/build-source"));
    source
        || path
            .strip_prefix(SELF_HOSTED_PREFIX)
            .unwrap_or(path)
            .starts_with("/uploads/")
}

/// How long a long-poll may wait before answering, beyond the usual time limit: a
/// desired-state poll up to a minute, Agent Auth's `wait` up to five.
pub fn long_poll_wait(path: &str) -> Option<std::time::Duration> {
    let secs = if path.starts_with("/dataplane/v1/listeners/") && path.ends_with("/desired") {
        protocol::MAX_WAIT_SECONDS
    } else if path
        .strip_prefix(SELF_HOSTED_PREFIX)
        .unwrap_or(path)
        .starts_with("/v2/auth/wait/")
    {
        crate::operations::agent_auth::MAX_WAIT_SECONDS
    } else {
        return None;
    };
    Some(std::time::Duration::from_secs(secs))
}

/// No route matched: a redirect when the path without its trailing slash is a route
/// (Location keeps the query), otherwise 404.
pub async fn fallback(uri: Uri) -> ApiError {
    let path = uri.path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        if !trimmed.is_empty() && is_route(trimmed) {
            let location = match uri.query() {
                Some(q) => format!("{trimmed}?{q}"),
                None => trimmed.to_owned(),
            };
            return ApiError::Redirect(location);
        }
    }
    ApiError::route_not_found()
}

/// A route matched but not its method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// FastAPI routes no `HEAD` (axum answers `HEAD` on every `GET` route): around the whole
/// router, `HEAD` is routed as a method no route serves, so a route answers it with its
/// own 405 (and other paths with their 404 or 307); no `Allow` header lists `HEAD`.
pub async fn no_head(mut req: Request, next: Next) -> Response {
    let head = req.method() == Method::HEAD;
    if head {
        *req.method_mut() = Method::TRACE;
    }
    let mut res = next.run(req).await;
    if res.status() == StatusCode::METHOD_NOT_ALLOWED {
        let allow = res
            .headers()
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|m| *m != "HEAD")
                    .collect::<Vec<_>>()
                    .join(", ")
            });
        if let Some(allow) = allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
            res.headers_mut().insert(header::ALLOW, allow);
        }
        if head {
            // A HEAD answer has no body (the server would drop it on the wire anyway).
            *res.body_mut() = Body::empty();
            res.headers_mut().remove(header::CONTENT_LENGTH);
        }
    }
    res
}
