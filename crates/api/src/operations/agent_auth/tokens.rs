//! The tokens a workspace holds (listed, labelled, revoked) and the tokens connected to
//! its agents.

use super::{conflict_or, token_not_found};
use crate::auth::Tenant;
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use store::{AgentConnection, NewConnection, OAuthToken, StoreError, TokenFilter};
use uuid::Uuid;

/// The workspace's tokens that `filter` selects.
pub async fn list_tokens(
    app: &AppState,
    tenant: &Tenant,
    filter: TokenFilter,
) -> ApiResult<Vec<OAuthToken>> {
    Ok(app.store.list_tokens(tenant.workspace_id, &filter).await?)
}

/// Revokes (deletes) the workspace's tokens that `filter` selects; how many.
pub async fn revoke_tokens(app: &AppState, tenant: &Tenant, filter: TokenFilter) -> ApiResult<u64> {
    let ids: Vec<Uuid> = list_tokens(app, tenant, filter)
        .await?
        .iter()
        .map(|t| t.id)
        .collect();
    Ok(app.store.delete_tokens(tenant.workspace_id, &ids).await?)
}

/// The `provider_type` of Slack providers.
pub const SLACK: &str = "slack";

pub fn slack_tokens() -> TokenFilter {
    TokenFilter {
        provider_type: Some(SLACK.into()),
        ..TokenFilter::default()
    }
}

async fn token(app: &AppState, tenant: &Tenant, token_id: &str) -> ApiResult<OAuthToken> {
    let id = Uuid::parse_str(token_id).map_err(|_| token_not_found(token_id))?;
    app.store
        .get_token(tenant.workspace_id, id)
        .await?
        .ok_or_else(|| token_not_found(token_id))
}

/// Changes a token's label and default flag (null keeps them).
pub async fn update_token(
    app: &AppState,
    tenant: &Tenant,
    token_id: &str,
    label: Option<String>,
    is_default: Option<bool>,
) -> ApiResult<OAuthToken> {
    let mut t = token(app, tenant, token_id).await?;
    if label.is_some() {
        t.provider_account_label = label;
    }
    t.is_default = is_default.unwrap_or(t.is_default);
    app.store.update_token(t).await.map_err(|e| match e {
        StoreError::NotFound => token_not_found(token_id),
        e => e.into(),
    })
}

pub async fn delete_token(app: &AppState, tenant: &Tenant, token_id: &str) -> ApiResult<()> {
    let t = token(app, tenant, token_id).await?;
    match app
        .store
        .delete_tokens(tenant.workspace_id, &[t.id])
        .await?
    {
        0 => Err(token_not_found(token_id)),
        _ => Ok(()),
    }
}

pub async fn list_connections(
    app: &AppState,
    tenant: &Tenant,
    agent_id: &str,
) -> ApiResult<Vec<AgentConnection>> {
    Ok(app
        .store
        .list_connections(tenant.workspace_id, agent_id)
        .await?)
}

pub async fn create_connection(
    app: &AppState,
    tenant: &Tenant,
    agent_id: &str,
    token_id: &str,
) -> ApiResult<AgentConnection> {
    let t = token(app, tenant, token_id).await?;
    let new = NewConnection {
        id: Uuid::new_v4(),
        workspace_id: tenant.workspace_id,
        agent_id: agent_id.to_owned(),
        token_id: t.id,
        created_by: tenant.key_id.to_string(),
    };
    app.store.create_connection(new).await.map_err(|e| match e {
        StoreError::NotFound => token_not_found(token_id),
        e => conflict_or(
            e,
            format!("Agent '{agent_id}' is already connected to OAuth token '{token_id}'"),
        ),
    })
}

pub async fn delete_connection(
    app: &AppState,
    tenant: &Tenant,
    agent_id: &str,
    connection_id: &str,
) -> ApiResult<()> {
    let not_found = || ApiError::NotFound(format!("Connection '{connection_id}' not found"));
    let id = Uuid::parse_str(connection_id).map_err(|_| not_found())?;
    match app
        .store
        .delete_connection(tenant.workspace_id, agent_id, id)
        .await?
    {
        true => Ok(()),
        false => Err(not_found()),
    }
}
