//! The integrations page: the git hosts an operator connected to the workspace (made
//! with `hostplane admin integration`; credentials are never shown) and the `github`
//! deployments that build from each.

use super::layout::{self, table, time, Nav, Tab};
use super::session;
use super::ConsoleResult;
use crate::operations::{deployments, integrations};
use crate::AppState;
use axum::extract::State;
use axum::response::IntoResponse;
use maud::html;

pub async fn list(State(app): State<AppState>, visit: session::Visit) -> ConsoleResult {
    let ws = visit.tenant.workspace_id;
    let all = integrations::list(&app, &visit.tenant).await?;
    let from_git: Vec<_> =
        deployments::list(&app, &visit.tenant, &Default::default(), super::EVERY)
            .await?
            .into_iter()
            .filter(|d| d.source == "github")
            .collect();
    let body = html! {
        h1 { "Integrations" }
        p { "Git hosts this workspace deploys " code { "github" } " deployments from. An operator adds them with " code { "hostplane admin integration create" } "; their credentials are never shown." }
        @if all.is_empty() {
            p.empty { "No integration yet." }
        } @else {
            (table(
                &["Name", "Kind", "Host", "REST API", "Installation", "Created", "Deployments"],
                false,
                html! {
                    @for i in &all {
                        @let id = i.id.to_string();
                        tr {
                            td { (i.name) br; span.muted { (i.id) } }
                            td { (i.kind.as_str()) }
                            td { code { (i.base_url) } }
                            td { @if let Some(api) = &i.api_url { code { (api) } } @else { span.muted { "none" } } }
                            td { (i.installation_id.map(|n| n.to_string()).unwrap_or_default()) }
                            td { (time(&i.created_at)) }
                            td {
                                ul.plain {
                                    @for d in from_git.iter().filter(|d| store::SourceConfig::of(&d.source_config).integration_id.as_deref() == Some(id.as_str())) {
                                        li { a href={ "/o/" (ws) "/host/deployments/" (d.id) } { (d.name) } }
                                    }
                                }
                            }
                        }
                    }
                },
            ))
        }
    };
    let nav = Nav {
        workspace: Some(ws),
        current: Tab::Integrations,
        session: &visit.session,
    };
    Ok(layout::page("Integrations", Some(&nav), body).into_response())
}
