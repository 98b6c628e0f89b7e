//! The data plane's own OpenAPI document, served at `/dataplane/openapi.json`.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// The document, written by hand from the `protocol` crate's types; a contract test
/// checks it against the router and against real answers.
pub const DOCUMENT: &str = include_str!("openapi.json");

pub async fn serve() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        DOCUMENT,
    )
        .into_response()
}
