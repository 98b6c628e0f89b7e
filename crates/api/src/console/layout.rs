//! What every console page shares: the document, the navigation, error pages, and small
//! formatting helpers.

use super::assets;
use super::session::Session;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};
use uuid::Uuid;

#[derive(PartialEq, Eq, Clone, Copy)]
pub enum Tab {
    Deployments,
    Listeners,
    Integrations,
    Workspaces,
}

/// The navigation of a signed-in page.
pub struct Nav<'a> {
    pub workspace: Option<Uuid>,
    pub current: Tab,
    pub session: &'a Session,
}

/// A whole HTML page.
pub fn page(title: &str, nav: Option<&Nav<'_>>, main: Markup) -> Response {
    let doc = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · hostplane" }
                link rel="stylesheet" href=(assets::url("console.css"));
                script src=(assets::url("console.js")) defer {}
            }
            body {
                header.top {
                    a.brand href="/console" { "hostplane" }
                    @if let Some(nav) = nav {
                        nav aria-label="Main" {
                            @if let Some(ws) = nav.workspace {
                                (tab(nav, Tab::Deployments, &format!("/o/{ws}/host/deployments"), "Deployments"))
                                (tab(nav, Tab::Listeners, &format!("/o/{ws}/host/listeners"), "Listeners"))
                                (tab(nav, Tab::Integrations, &format!("/o/{ws}/host/integrations"), "Integrations"))
                            }
                            @if nav.session.is_org_key() {
                                (tab(nav, Tab::Workspaces, "/console/workspaces", "Workspaces"))
                            }
                        }
                        form.sign-out method="post" action="/console/sign-out" {
                            input type="hidden" name="csrf" value=(nav.session.csrf);
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main { (main) }
            }
        }
    };
    Html(doc.into_string()).into_response()
}

fn tab(nav: &Nav<'_>, which: Tab, href: &str, label: &str) -> Markup {
    html! {
        @if nav.current == which {
            a href=(href) aria-current="page" { (label) }
        } @else {
            a href=(href) { (label) }
        }
    }
}

/// A page that says what went wrong, with the status the API would have answered.
pub fn error_page(status: StatusCode, text: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = html! {
        section.narrow {
            h1 { (title) }
            p.error role="alert" { (text) }
            p { a href="/console" { "Back to the console" } }
        }
    };
    (status, page(title, None, body)).into_response()
}

/// How the console writes a time: UTC, to the second (pages and followed log lines alike).
pub const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S UTC";

/// A time as UTC, to the second, machine-readable too.
pub fn time(at: &DateTime<Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339()) { (at.format(TIME_FORMAT)) }
    }
}

/// A status word as a badge (the class picks its colour).
pub fn badge(status: &str) -> Markup {
    let tone = match status {
        "READY" | "DEPLOYED" | "online" => "ok",
        s if s.contains("FAILED") || s == "offline" => "bad",
        "AWAITING_DELETE" | "UNUSED" | "SKIPPED" | "INTERRUPTED" | "UNKNOWN" => "muted",
        _ => "busy",
    };
    html! { span class={ "badge " (tone) } { (status) } }
}

/// The first part of an id, with the whole id as its title.
pub fn short_id(id: &Uuid) -> Markup {
    let text = id.to_string();
    html! { code title=(text) { (text[..8]) } }
}

/// A table that scrolls sideways on narrow screens: a header row of `columns` (and a last
/// one named only for screen readers when the rows end with `actions`) over `rows`.
pub fn table(columns: &[&str], actions: bool, rows: Markup) -> Markup {
    html! {
        div.scroll {
            table {
                thead { tr {
                    @for column in columns { th scope="col" { (column) } }
                    @if actions { th scope="col" { span.visually-hidden { "Actions" } } }
                } }
                tbody { (rows) }
            }
        }
    }
}
