//! Integrations (v1): the four routes of the reference (`github` and its `forge` twin
//! list the same integrations and repositories), and hostplane's own push webhook. What
//! each does is [`crate::operations::integrations`].

use crate::error::{json_response, ApiError, ApiResult};
use crate::operations::integrations::{self as ops, Push, PushOutcome};
use crate::request::Call;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;
use uuid::Uuid;

/// `GithubIntegration`.
#[derive(Serialize)]
struct IntegrationOut<'a> {
    id: Uuid,
    /// A token integration has no installation: 0.
    installation_id: i64,
    name: &'a str,
}

/// `GithubRepository`.
#[derive(Serialize)]
struct RepositoryOut<'a> {
    host_integration_id: Uuid,
    id: i64,
    name: &'a str,
    owner: &'a str,
    url: &'a str,
    default_branch: &'a str,
}

/// `GET /v1/integrations/github/install` (and `/forge/github/install`).
pub async fn list(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let all = ops::list(&app, &call.tenant).await?;
    let out: Vec<_> = all
        .iter()
        .map(|i| IntegrationOut {
            id: i.id,
            installation_id: i.installation_id.unwrap_or(0),
            name: &i.name,
        })
        .collect();
    Ok(json_response(StatusCode::OK, &out))
}

/// `GET /v1/integrations/github/{integration_id}/repos` (and the `forge` one).
pub async fn repositories(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let id = call.path_uuid("integration_id", &mut errs);
    let id = ApiError::validated(errs, id)?;
    let (integration, repos) = ops::repositories(&app, &call.tenant, id).await?;
    let out: Vec<_> = repos
        .iter()
        .map(|r| RepositoryOut {
            host_integration_id: integration.id,
            id: r.id,
            name: &r.name,
            owner: &r.owner,
            url: &r.url,
            default_branch: &r.default_branch,
        })
        .collect();
    Ok(json_response(StatusCode::OK, &out))
}

/// Where forges deliver push events (hostplane's own route, no API key).
pub const WEBHOOK_ROUTE: &str = "/webhooks/v1/integrations/{integration_id}/push";

/// [`WEBHOOK_ROUTE`]: a forge's push event, signed with the integration's webhook secret
/// (`X-Hub-Signature-256`).
pub async fn push(
    State(app): State<AppState>,
    Path(integration): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let integration = Uuid::parse_str(&integration).map_err(|_| {
        ApiError::Unauthorized("The webhook signature is missing or invalid.".into())
    })?;
    let outcome = ops::push(
        &app,
        Push {
            integration,
            event: header("x-github-event"),
            delivery: header("x-github-delivery"),
            signature: header("x-hub-signature-256"),
            body: body.to_vec(),
        },
    )
    .await?;
    Ok(match outcome {
        PushOutcome::Ignored(why) => {
            json_response(StatusCode::ACCEPTED, &serde_json::json!({ "ignored": why }))
        }
        PushOutcome::Duplicate => json_response(
            StatusCode::OK,
            &serde_json::json!({ "duplicate": true, "deployments": [] }),
        ),
        PushOutcome::Built(ids) => json_response(
            StatusCode::OK,
            &serde_json::json!({ "duplicate": false, "deployments": ids }),
        ),
    })
}
