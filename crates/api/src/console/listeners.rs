//! The listeners page: where deployments run, whether each listener's agent is online,
//! and a form that creates a listener and issues its key (shown once, with the command
//! that starts its agent).

use super::deployments::namespace;
use super::layout::{self, badge, table, time, Nav, Tab};
use super::session::{self, Visit};
use super::{path_id, same_origin, ConsoleResult};
use crate::error::ApiError;
use crate::operations::{deployments, listeners};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Form;
use maud::html;
use serde::Deserialize;
use std::collections::HashMap;
use store::Listener;
use uuid::Uuid;

/// What the form showed last: an error, or the listener just created with its key.
enum Outcome {
    Nothing,
    Refused(StatusCode, String),
    Created(Listener, String),
}

pub async fn list(State(app): State<AppState>, visit: Visit) -> ConsoleResult {
    page(&app, &visit, Outcome::Nothing).await
}

async fn page(app: &AppState, visit: &Visit, outcome: Outcome) -> ConsoleResult {
    let ws = visit.tenant.workspace_id;
    let listeners = listeners::list(app, &visit.tenant, super::EVERY).await?;
    let agents: HashMap<Uuid, _> = listeners::agent_states(app, &visit.tenant)
        .await?
        .into_iter()
        .map(|a| (a.listener_id, a))
        .collect();
    let deployments =
        deployments::list(app, &visit.tenant, &Default::default(), super::EVERY).await?;
    let now = chrono::Utc::now();
    let lease = chrono::Duration::from_std(app.config.dataplane.lease).unwrap_or_default();
    let status = match &outcome {
        Outcome::Refused(status, _) => *status,
        _ => StatusCode::OK,
    };
    let body = html! {
        h1 { "Listeners" }
        p { "A listener is a place deployments run: a Kubernetes cluster (its namespaces) or one Docker or Podman host. Its agent, " code { "hostplane listener" } ", runs what the control plane asks for." }
        @match &outcome {
            Outcome::Created(l, key) => {
                section.created aria-labelledby="created-title" {
                    h2 #created-title { "Listener " (l.compute_id) " created" }
                    p { "Its key is shown only this once. Start the agent where the deployments should run:" }
                    pre.command { code {
                        "HOSTPLANE_LISTENER_KEY=" (key) " \\\n"
                        "  hostplane listener --control-plane-url " (app.config.public_url) " \\\n"
                        "  --listener-id " (l.id) " --mode native"
                    } }
                    p.muted { "Use " code { "--mode containers" } " on a Docker or Podman host, " code { "--mode lgp" } " with the LangGraph Platform operator, or " code { "--mode render" } " to write manifests for GitOps." }
                }
            }
            Outcome::Refused(_, problem) => { p.error role="alert" { (problem) } }
            Outcome::Nothing => {}
        }
        @if listeners.is_empty() {
            p.empty { "No listener yet: create one below." }
        } @else {
            (table(
                &["Compute ID", "Namespaces", "Agent version", "Mode", "Last heartbeat", "State", "Deployments"],
                false,
                html! {
                    @for l in &listeners {
                        @let agent = agents.get(&l.id);
                        @let seen = agent.and_then(|a| a.last_seen_at);
                        @let online = seen.is_some_and(|at| now - at <= lease);
                        @let mode = agent.and_then(|a| a.facts.as_ref()).and_then(|f| f.get("mode")).and_then(|m| m.as_str());
                        tr {
                            td { (l.compute_id) br; span.muted { (l.id) } }
                            td { (l.k8s_namespaces.as_deref().unwrap_or_default().join(", ")) }
                            td { (l.version.as_deref().unwrap_or("")) }
                            td { (mode.unwrap_or("")) }
                            td { @if let Some(at) = seen { (time(&at)) } @else { span.muted { "never" } } }
                            td { (badge(if online { "online" } else { "offline" })) }
                            td {
                                ul.plain {
                                    @for d in deployments.iter().filter(|d| d.listener_id == Some(l.id)) {
                                        li {
                                            a href={ "/o/" (ws) "/host/deployments/" (d.id) } { (d.name) }
                                            @if let Some(ns) = namespace(d) { span.muted { " in " (ns) } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                },
            ))
        }
        h2 { "Create a listener" }
        form.stacked method="post" {
            input type="hidden" name="csrf" value=(visit.session.csrf);
            label for="compute_id" { "Compute ID" }
            input #compute_id type="text" name="compute_id" required placeholder="my-cluster";
            label for="namespaces" { "Namespaces (separated by commas or spaces)" }
            input #namespaces type="text" name="namespaces" placeholder="agents";
            button type="submit" { "Create listener and key" }
        }
    };
    let nav = Nav {
        workspace: Some(ws),
        current: Tab::Listeners,
        session: &visit.session,
    };
    Ok((status, layout::page("Listeners", Some(&nav), body)).into_response())
}

#[derive(Deserialize)]
pub struct CreateForm {
    csrf: String,
    compute_id: String,
    #[serde(default)]
    namespaces: String,
}

pub async fn create(
    State(app): State<AppState>,
    Path(ws): Path<String>,
    headers: HeaderMap,
    Form(form): Form<CreateForm>,
) -> ConsoleResult {
    same_origin(&app, &headers)?;
    let ws = path_id(&ws)?;
    let visit = session::visit(&app, &headers, &format!("/o/{ws}/host/listeners"), ws).await?;
    visit.session.check_csrf(&form.csrf)?;
    let namespaces: Vec<serde_json::Value> = form
        .namespaces
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|n| !n.is_empty())
        .map(|n| n.into())
        .collect();
    // The form as the API's body, validated the same way.
    let body = compat::Value::from(&serde_json::json!({
        "compute_type": "k8s",
        "compute_id": form.compute_id.trim(),
        "compute_config": { "k8s_namespaces": namespaces },
    }));
    let created = match crate::listeners::create_from(&app, &visit.tenant, &body).await {
        Ok(l) => l,
        Err(e @ ApiError::Internal(_)) => return Err(e.into()),
        Err(e) => {
            let (status, text) = e.status_and_text();
            return page(&app, &visit, Outcome::Refused(status, text)).await;
        }
    };
    let key = listeners::issue_key(&app, &visit.tenant, &created).await?;
    let res = page(&app, &visit, Outcome::Created(created, key)).await?;
    Ok((StatusCode::CREATED, res).into_response())
}
