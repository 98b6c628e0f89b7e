//! The console's style sheet and script, compiled into the binary. Their URLs carry a
//! hash of their contents, so browsers may keep them for a year: a new build has new
//! URLs.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::OnceLock;

const FILES: [(&str, &str, &str); 2] = [
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    ),
];

/// A short hash of every asset: the version part of their URLs.
fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let all: String = FILES.iter().map(|(_, _, body)| *body).collect();
        store::hash_key(&all)[..16].to_owned()
    })
}

/// Where a page links `name` from.
pub fn url(name: &str) -> String {
    format!("/console/assets/{}/{name}", version())
}

pub async fn serve(Path((asked, name)): Path<(String, String)>) -> Response {
    match FILES.iter().find(|(file, _, _)| *file == name) {
        Some((_, kind, body)) if asked == version() => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            *body,
        )
            .into_response(),
        _ => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}
