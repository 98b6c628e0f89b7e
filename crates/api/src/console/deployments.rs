//! Deployment pages: the list with filters and paging, one deployment with its revisions
//! and logs (followed live by the script), redeploy and delete.

use super::layout::{self, badge, short_id, table, time, Nav, Tab};
use super::session::{self, Csrf, Visit};
use super::{encode, path_id, same_origin, see_other, ConsoleError, ConsoleResult};
use crate::auth::Tenant;
use crate::error::{json_response, ApiError};
use crate::logs::{cursor_text, parse_cursor};
use crate::operations::{deployments as ops, listeners};
use crate::AppState;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;
use std::collections::HashMap;
use store::lifecycle::DeploymentStatus;
use store::{Deployment, DeploymentFilter, LogEntry, LogQuery, RevisionFilter, Window};
use uuid::Uuid;

/// Deployments a list page shows.
const PAGE: i64 = 25;
/// Revisions the deployment page shows (newest first).
const REVISIONS: i64 = 50;
/// Log lines the deployment page starts with (the newest), and that one poll returns.
const LOG_LINES: i64 = 500;
const LEVELS: [&str; 5] = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"];

/// The namespace a deployment runs in, when its configuration names one.
pub fn namespace(d: &Deployment) -> Option<String> {
    store::SourceConfig::of(&d.source_config)
        .namespace()
        .map(str::to_owned)
}

/// Listener ids of the workspace with their compute ids (none on a plan without
/// listeners).
async fn compute_ids(app: &AppState, tenant: &Tenant) -> ConsoleResult<HashMap<Uuid, String>> {
    let listeners = match listeners::list(app, tenant, super::EVERY).await {
        Err(ApiError::Forbidden(_)) => Vec::new(),
        listed => listed?,
    };
    Ok(listeners
        .into_iter()
        .map(|l| (l.id, l.compute_id))
        .collect())
}

/// A visit to one deployment's pages: the workspace and deployment from the path (a
/// malformed id is a page that does not exist) and the visitor's session. A form posted
/// there must come from this site, and signing in again returns to the deployment's page.
pub struct DeploymentVisit {
    visit: Visit,
    id: Uuid,
}

impl FromRequestParts<AppState> for DeploymentVisit {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> ConsoleResult<Self> {
        let form = parts.method != Method::GET;
        if form {
            same_origin(app, &parts.headers)?;
        }
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, app)
            .await
            .map_err(|_| ConsoleError::Api(ApiError::NotFound("Not Found".into())))?;
        let segment = |name: &str| path_id(params.get(name).map_or("", String::as_str));
        let (ws, id) = (segment("workspace_id")?, segment("deployment_id")?);
        let page = format!("/o/{ws}/host/deployments/{id}");
        let back = if form {
            &page
        } else {
            session::here(&parts.uri)
        };
        let visit = session::visit(app, &parts.headers, back, ws).await?;
        Ok(DeploymentVisit { visit, id })
    }
}

pub async fn to_list(Path(ws): Path<String>) -> ConsoleResult {
    let ws = path_id(&ws)?;
    Ok(Redirect::to(&format!("/o/{ws}/host/deployments")).into_response())
}

#[derive(Deserialize)]
pub struct ListQuery {
    name: Option<String>,
    status: Option<String>,
    offset: Option<String>,
    done: Option<String>,
}

pub async fn list(
    State(app): State<AppState>,
    visit: session::Visit,
    Query(q): Query<ListQuery>,
) -> ConsoleResult {
    let ws = visit.tenant.workspace_id;
    let name = q.name.as_deref().map(str::trim).filter(|n| !n.is_empty());
    let status = q
        .status
        .as_deref()
        .filter(|s| DeploymentStatus::ALL.iter().any(|x| x.as_str() == *s));
    let offset = q
        .offset
        .as_deref()
        .and_then(|o| o.parse::<i64>().ok())
        .unwrap_or(0)
        .clamp(0, i64::MAX / 2);
    let filter = DeploymentFilter {
        name_contains: name.map(str::to_owned),
        status: status.map(str::to_owned),
        ..Default::default()
    };
    let mut items = ops::list(&app, &visit.tenant, &filter, Window::new(PAGE + 1, offset)).await?;
    let more = items.len() as i64 > PAGE;
    items.truncate(PAGE as usize);
    let listeners = compute_ids(&app, &visit.tenant).await?;
    let page_link = |to: i64| {
        let mut link = format!("/o/{ws}/host/deployments?offset={to}");
        if let Some(n) = name {
            link.push_str(&format!("&name={}", encode(n)));
        }
        if let Some(s) = status {
            link.push_str(&format!("&status={s}"));
        }
        link
    };
    let body = html! {
        h1 { "Deployments" }
        @if q.done.as_deref() == Some("deleted") {
            p.notice role="status" { "The deployment was deleted (or will be, once its listener has removed it)." }
        }
        form.filters method="get" role="search" {
            label for="name" { "Name contains" }
            input #name type="search" name="name" value=(name.unwrap_or(""));
            label for="status" { "Status" }
            select #status name="status" {
                option value="" { "Any" }
                @for s in DeploymentStatus::ALL {
                    option value=(s.as_str()) selected[status == Some(s.as_str())] { (s.as_str()) }
                }
            }
            button type="submit" { "Filter" }
        }
        @if items.is_empty() {
            p.empty { "No deployment matches." }
        } @else {
            (table(
                &["Name", "Status", "Active revision", "Listener", "Namespace", "Created", "Updated"],
                false,
                html! {
                    @for d in &items {
                        tr {
                            td { a href={ "/o/" (ws) "/host/deployments/" (d.id) } { (d.name) } }
                            td { (badge(d.status.as_str())) }
                            td { @if let Some(r) = d.active_revision_id { (short_id(&r)) } @else { span.muted { "none" } } }
                            td { (listener_cell(d.listener_id, &listeners)) }
                            td { (namespace(d).unwrap_or_default()) }
                            td { (time(&d.created_at)) }
                            td { (time(&d.updated_at)) }
                        }
                    }
                },
            ))
        }
        nav.pager aria-label="Pages" {
            @if offset > 0 {
                a rel="prev" href=(page_link((offset - PAGE).max(0))) { "← Previous" }
            }
            @if more {
                a rel="next" href=(page_link(offset + PAGE)) { "Next →" }
            }
        }
    };
    let nav = Nav {
        workspace: Some(ws),
        current: Tab::Deployments,
        session: &visit.session,
    };
    Ok(layout::page("Deployments", Some(&nav), body))
}

fn listener_cell(id: Option<Uuid>, listeners: &HashMap<Uuid, String>) -> Markup {
    html! {
        @match id {
            Some(id) => @match listeners.get(&id) {
                Some(compute) => span title=(id) { (compute) },
                None => (short_id(&id)),
            },
            None => span.muted { "none" },
        }
    }
}

#[derive(Deserialize, Default)]
pub struct LogFilter {
    kind: Option<String>,
    level: Option<String>,
    revision: Option<String>,
    after: Option<String>,
    done: Option<String>,
}

impl LogFilter {
    fn kind(&self) -> &'static str {
        match self.kind.as_deref() {
            Some("build") => "build",
            _ => "deploy",
        }
    }

    fn level(&self) -> Option<&'static str> {
        let asked = self.level.as_deref()?.to_ascii_uppercase();
        LEVELS.into_iter().find(|l| *l == asked)
    }

    fn revision(&self) -> Option<Uuid> {
        self.revision
            .as_deref()
            .and_then(|r| Uuid::parse_str(r).ok())
    }

    /// The newest lines (descending) or, after a cursor, the next ones (ascending).
    fn query(&self, deployment_id: Uuid) -> LogQuery {
        let cursor = self.after.as_deref().and_then(parse_cursor);
        LogQuery {
            deployment_id,
            revision_id: self.revision(),
            kind: self.kind(),
            descending: cursor.is_none(),
            cursor,
            level: self.level().map(str::to_owned),
            contains: None,
            since: None,
            until: None,
            limit: LOG_LINES,
        }
    }
}

/// Log lines in the order they were written, and the cursor past the last one.
async fn read_logs(
    app: &AppState,
    tenant: &Tenant,
    id: Uuid,
    filter: &LogFilter,
) -> ConsoleResult<(Vec<LogEntry>, Option<String>)> {
    let query = filter.query(id);
    let mut lines = ops::logs(app, tenant, &query).await?;
    if query.descending {
        lines.reverse();
    }
    let cursor = lines
        .last()
        .map(|l| cursor_text((l.at.timestamp_micros(), l.seq)))
        .or_else(|| filter.after.clone());
    Ok((lines, cursor))
}

pub async fn show(
    State(app): State<AppState>,
    DeploymentVisit { visit, id }: DeploymentVisit,
    Query(filter): Query<LogFilter>,
) -> ConsoleResult {
    let ws = visit.tenant.workspace_id;
    let d = ops::get(&app, &visit.tenant, id).await?;
    let revisions = ops::revisions(
        &app,
        &visit.tenant,
        id,
        &RevisionFilter::default(),
        Window::first(REVISIONS),
    )
    .await?;
    let listener = match d.listener_id {
        Some(l) => match listeners::get(&app, &visit.tenant, l).await {
            Ok(l) => Some(l),
            Err(ApiError::Forbidden(_) | ApiError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let filter = LogFilter {
        after: None,
        ..filter
    };
    let (lines, cursor) = read_logs(&app, &visit.tenant, id, &filter).await?;
    let base = format!("/o/{ws}/host/deployments/{id}");
    let csrf = &visit.session.csrf;
    let image = revisions
        .first()
        .and_then(|r| store::RevisionConfig::of(&r.source_revision_config).image_uri);
    let notice = match filter.done.as_deref() {
        Some("redeployed") => Some("A new revision was created from the one you chose."),
        _ => None,
    };
    let body = html! {
        p.crumbs { a href={ "/o/" (ws) "/host/deployments" } { "Deployments" } " / " }
        h1 { (d.name) " " (badge(d.status.as_str())) }
        @if let Some(notice) = notice { p.notice role="status" { (notice) } }
        dl.facts {
            dt { "ID" } dd { code { (d.id) } }
            dt { "Listener" } dd {
                @match &listener {
                    Some(l) => { (l.compute_id) " " span.muted { (l.id) } },
                    None => span.muted { "none" },
                }
            }
            dt { "Namespace" } dd { (namespace(&d).unwrap_or_default()) }
            @if let Some(image) = image { dt { "Image" } dd { code { (image) } } }
            @if let Some(repo) = store::SourceConfig::of(&d.source_config).repo_url.filter(|_| d.source == "github") {
                dt { "Repository" } dd {
                    code { (repo) }
                    @if let Some(r) = store::RevisionConfig::of(&d.source_revision_config).repo_ref { " at " code { (r) } }
                }
            }
            dt { "Created" } dd { (time(&d.created_at)) }
            dt { "Updated" } dd { (time(&d.updated_at)) }
        }
        p { a.button.danger href={ (base) "/delete" } { "Delete…" } }
        h2 { "Revisions" }
        (table(
            &["Revision", "Status", "Reason", "Created", "Updated"],
            true,
            html! {
                @for r in &revisions {
                    tr.live[d.active_revision_id == Some(r.id)] {
                        td {
                            (short_id(&r.id))
                            @if d.active_revision_id == Some(r.id) { " " strong.live-mark { "live" } }
                            @if let Some(sha) = store::RevisionConfig::of(&r.source_revision_config).repo_commit_sha {
                                br; span.muted { "commit " code title=(sha) { (sha.get(..12).unwrap_or(&sha)) } }
                            }
                        }
                        td { (badge(r.status.as_str())) }
                        td.reason {
                            @if let Some(reason) = &r.data_plane.reason { strong { (reason) } " " }
                            @if let Some(message) = &r.data_plane.message { (message) }
                        }
                        td { (time(&r.created_at)) }
                        td { (time(&r.updated_at)) }
                        td {
                            form method="post" action={ (base) "/revisions/" (r.id) "/redeploy" } {
                                input type="hidden" name="csrf" value=(csrf);
                                button type="submit" aria-label={ "Redeploy revision " (r.id) } { "Redeploy" }
                            }
                        }
                    }
                }
            },
        ))
        h2 #logs { "Logs" }
        form.filters method="get" action={ (base) "#logs" } {
            label for="kind" { "Kind" }
            select #kind name="kind" {
                option value="deploy" selected[filter.kind() == "deploy"] { "Deploy" }
                option value="build" selected[filter.kind() == "build"] { "Build" }
            }
            label for="level" { "Level" }
            select #level name="level" {
                option value="" { "Any" }
                @for l in LEVELS { option value=(l) selected[filter.level() == Some(l)] { (l) } }
            }
            label for="revision" { "Revision" }
            select #revision name="revision" {
                option value="" { "All" }
                @for r in &revisions {
                    option value=(r.id) selected[filter.revision() == Some(r.id)] { (r.id.to_string()[..8]) " · " (r.status.as_str()) }
                }
            }
            button type="submit" { "Show" }
            label.follow for="follow" { input #follow type="checkbox"; " Follow" }
        }
        div.logs #log-lines tabindex="0" aria-live="polite" aria-label="Log lines"
            data-source={ (base) "/logs?kind=" (filter.kind()) "&level=" (filter.level().unwrap_or("")) "&revision=" (filter.revision().map(|r| r.to_string()).unwrap_or_default()) }
            data-after=(cursor.unwrap_or_default()) {
            @if lines.is_empty() { p.empty #no-lines { "No log lines yet." } }
            @for line in &lines { (log_line(line)) }
        }
    };
    let nav = Nav {
        workspace: Some(ws),
        current: Tab::Deployments,
        session: &visit.session,
    };
    Ok(layout::page(&d.name, Some(&nav), body))
}

fn log_line(l: &LogEntry) -> Markup {
    html! {
        div class={ "line " (l.level.to_ascii_lowercase()) } {
            (time(&l.at)) " " span.level { (l.level) } " " span.message { (l.message) }
        }
    }
}

#[derive(serde::Serialize)]
struct LogLineOut<'a> {
    at: String,
    level: &'a str,
    message: &'a str,
}

/// The lines after `after`, as JSON, for the script that follows logs.
pub async fn logs(
    State(app): State<AppState>,
    DeploymentVisit { visit, id }: DeploymentVisit,
    Query(filter): Query<LogFilter>,
) -> ConsoleResult {
    let (lines, after) = read_logs(&app, &visit.tenant, id, &filter).await?;
    let out: Vec<_> = lines
        .iter()
        .map(|l| LogLineOut {
            at: l.at.format(layout::TIME_FORMAT).to_string(),
            level: &l.level,
            message: &l.message,
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "lines": out, "after": after }),
    ))
}

pub async fn redeploy(
    State(app): State<AppState>,
    DeploymentVisit { visit, id }: DeploymentVisit,
    Path(params): Path<HashMap<String, String>>,
    Form(form): Form<Csrf>,
) -> ConsoleResult {
    let rid = path_id(params.get("revision_id").map_or("", String::as_str))?;
    let ws = visit.tenant.workspace_id;
    visit.session.check_csrf(&form.csrf)?;
    ops::redeploy(&app, &visit.tenant, id, rid).await?;
    Ok(see_other(&format!(
        "/o/{ws}/host/deployments/{id}?done=redeployed"
    )))
}

fn delete_page(visit: &Visit, d: &Deployment, problem: Option<&str>) -> Response {
    let ws = visit.tenant.workspace_id;
    let base = format!("/o/{ws}/host/deployments/{}", d.id);
    let body = html! {
        section.narrow {
            h1 { "Delete " (d.name) "?" }
            p { "The deployment, its revisions and its logs go away. If a listener runs it, the listener first removes what it runs." }
            @if let Some(problem) = problem { p.error role="alert" { (problem) } }
            form method="post" action={ (base) "/delete" } {
                input type="hidden" name="csrf" value=(visit.session.csrf);
                label for="confirm" { "Type the deployment's name to confirm" }
                input #confirm type="text" name="confirm" required autocomplete="off";
                button.danger type="submit" { "Delete deployment" }
                " " a href=(base) { "Cancel" }
            }
        }
    };
    let nav = Nav {
        workspace: Some(ws),
        current: Tab::Deployments,
        session: &visit.session,
    };
    let status = if problem.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    (status, layout::page("Delete deployment", Some(&nav), body)).into_response()
}

pub async fn confirm_delete(
    State(app): State<AppState>,
    DeploymentVisit { visit, id }: DeploymentVisit,
) -> ConsoleResult {
    let d = ops::get(&app, &visit.tenant, id).await?;
    Ok(delete_page(&visit, &d, None))
}

#[derive(Deserialize)]
pub struct DeleteForm {
    csrf: String,
    confirm: String,
}

pub async fn delete(
    State(app): State<AppState>,
    DeploymentVisit { visit, id }: DeploymentVisit,
    Form(form): Form<DeleteForm>,
) -> ConsoleResult {
    let ws = visit.tenant.workspace_id;
    visit.session.check_csrf(&form.csrf)?;
    let d = ops::get(&app, &visit.tenant, id).await?;
    if form.confirm != d.name {
        let problem = "The name does not match; nothing was deleted.";
        return Ok(delete_page(&visit, &d, Some(problem)));
    }
    match ops::delete(&app, &visit.tenant, id, false).await {
        Ok(()) | Err(ApiError::NotFound(_)) => {
            Ok(see_other(&format!("/o/{ws}/host/deployments?done=deleted")))
        }
        Err(e) => Err(ConsoleError::Api(e)),
    }
}
