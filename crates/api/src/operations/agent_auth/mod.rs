//! Agent Auth: a workspace's OAuth providers, the sign-in of an end user at one (the
//! authorization URL, the callback's code exchange, the long-poll that waits for it),
//! the tokens obtained (reused, refreshed, labelled, revoked) and the tokens connected
//! to agents. Secrets (client secrets, tokens, PKCE verifiers) are sealed with the
//! server's key, bound to their row, and opened only to answer `authenticate` and `wait`.
//!
//! This file holds the providers (created by hand or discovered from an MCP server) and
//! what the other parts share; `sign_in.rs` the flow, `tokens.rs` the tokens and the
//! agents' connections.

use crate::auth::Tenant;
use crate::error::{ApiError, ApiResult};
use crate::oauth::{Endpoints, OutboundError};
use crate::AppState;
use chrono::Utc;
use store::{OAuthProvider, StoreError};
use uuid::Uuid;

mod sign_in;
mod tokens;
pub use sign_in::*;
pub use tokens::*;

/// How long a user has to finish signing in.
pub const SIGN_IN_TTL: chrono::Duration = chrono::Duration::minutes(10);
/// The longest `wait` holds a request open, in seconds.
pub const MAX_WAIT_SECONDS: u64 = 300;
/// The most sign-ins a workspace may have pending at once (each is a row until it is
/// swept); more answer 429.
pub const MAX_PENDING_SIGN_INS: i64 = 1000;
/// A token this close to its expiry is refreshed before it is handed out.
const EXPIRY_MARGIN: chrono::Duration = chrono::Duration::seconds(30);
/// What a callback with an unknown, used, expired or foreign `state` is told.
pub const INVALID_STATE: &str =
    "This sign-in link is not valid: it is unknown, expired or already used.";

pub fn provider_not_found(provider_id: &str) -> ApiError {
    ApiError::NotFound(format!("OAuth provider '{provider_id}' not found"))
}

pub fn token_not_found(token_id: &str) -> ApiError {
    ApiError::NotFound(format!("OAuth token '{token_id}' not found"))
}

/// A provider as a client creates it (`client_secret` in the clear; sealed here).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct NewProvider {
    pub provider_id: String,
    pub name: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub auth_url: String,
    pub token_url: String,
    pub uses_pkce: Option<bool>,
    pub code_challenge_method: Option<String>,
    pub provider_type: Option<String>,
    pub token_endpoint_auth_method: Option<String>,
}

/// A provider's changes: a field left out (or null) keeps its value.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct ProviderPatch {
    pub name: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub auth_url: Option<String>,
    pub token_url: Option<String>,
    pub uses_pkce: Option<bool>,
    pub code_challenge_method: Option<String>,
}

fn seal(app: &AppState, value: &str, row: Uuid) -> String {
    app.secrets.seal(value.as_bytes(), row)
}

fn open(app: &AppState, sealed: &str, row: Uuid) -> ApiResult<String> {
    app.secrets
        .open(sealed, row)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            ApiError::Internal(format!(
                "a secret of row {row} does not open with the server's key"
            ))
        })
}

fn conflict_or(e: StoreError, msg: String) -> ApiError {
    match e {
        StoreError::Conflict => ApiError::Conflict(msg),
        e => e.into(),
    }
}

pub async fn create_provider(
    app: &AppState,
    tenant: &Tenant,
    new: NewProvider,
) -> ApiResult<OAuthProvider> {
    let id = Uuid::new_v4();
    let provider_id = new.provider_id.clone();
    let row = OAuthProvider {
        id,
        workspace_id: tenant.workspace_id,
        provider_id: new.provider_id,
        name: new.name,
        client_id: new.client_id,
        client_secret: new.client_secret.map(|s| seal(app, &s, id)),
        auth_url: new.auth_url,
        token_url: new.token_url,
        uses_pkce: new.uses_pkce.unwrap_or(false),
        code_challenge_method: Some(new.code_challenge_method.unwrap_or_else(|| "S256".into())),
        provider_type: new.provider_type,
        mcp_server_url: None,
        token_endpoint_auth_method: new
            .token_endpoint_auth_method
            .unwrap_or_else(|| "client_secret_post".into()),
        is_dynamic_client: false,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    };
    save_new(app, row, &provider_id).await
}

async fn save_new(
    app: &AppState,
    row: OAuthProvider,
    provider_id: &str,
) -> ApiResult<OAuthProvider> {
    app.store
        .create_provider(row)
        .await
        .map_err(|e| conflict_or(e, format!("OAuth provider '{provider_id}' already exists")))
}

/// Creates a provider from an MCP server's URL: discovery and dynamic registration.
pub async fn discover_provider(
    app: &AppState,
    tenant: &Tenant,
    provider_id: String,
    name: String,
    mcp_server_url: String,
) -> ApiResult<OAuthProvider> {
    if app
        .store
        .get_provider(tenant.workspace_id, &provider_id)
        .await?
        .is_some()
    {
        return Err(ApiError::Conflict(format!(
            "OAuth provider '{provider_id}' already exists"
        )));
    }
    // Discovery makes several calls; together they finish well within the request's
    // time limit, so the client hears why rather than a timeout.
    let budget = app.config.request_timeout.mul_f64(2.0 / 3.0);
    let redirect = callback_url(app, &provider_id);
    let discovery = app.outbound.discover_mcp(&mcp_server_url, &redirect, &name);
    let found = tokio::time::timeout(budget, discovery)
        .await
        .unwrap_or_else(|_| {
            Err(OutboundError(format!(
                "it took longer than {} s",
                budget.as_secs_f64()
            )))
        })
        .map_err(|e| ApiError::BadRequest(format!("MCP discovery failed: {e}")))?;
    let id = Uuid::new_v4();
    let row = OAuthProvider {
        id,
        workspace_id: tenant.workspace_id,
        provider_id: provider_id.clone(),
        name,
        client_id: found.client_id,
        client_secret: found.client_secret.map(|s| seal(app, &s, id)),
        auth_url: found.auth_url,
        token_url: found.token_url,
        uses_pkce: found.uses_pkce,
        code_challenge_method: Some("S256".into()),
        provider_type: None,
        mcp_server_url: Some(mcp_server_url),
        token_endpoint_auth_method: found.auth_method,
        is_dynamic_client: true,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    };
    save_new(app, row, &provider_id).await
}

pub async fn list_providers(app: &AppState, tenant: &Tenant) -> ApiResult<Vec<OAuthProvider>> {
    Ok(app.store.list_providers(tenant.workspace_id).await?)
}

pub async fn get_provider(
    app: &AppState,
    tenant: &Tenant,
    provider_id: &str,
) -> ApiResult<OAuthProvider> {
    app.store
        .get_provider(tenant.workspace_id, provider_id)
        .await?
        .ok_or_else(|| provider_not_found(provider_id))
}

pub async fn update_provider(
    app: &AppState,
    tenant: &Tenant,
    provider_id: &str,
    patch: ProviderPatch,
) -> ApiResult<OAuthProvider> {
    let mut p = get_provider(app, tenant, provider_id).await?;
    let keep = |new: Option<String>, old: &mut String| {
        if let Some(v) = new {
            *old = v;
        }
    };
    keep(patch.name, &mut p.name);
    keep(patch.client_id, &mut p.client_id);
    keep(patch.auth_url, &mut p.auth_url);
    keep(patch.token_url, &mut p.token_url);
    if let Some(secret) = patch.client_secret {
        p.client_secret = Some(seal(app, &secret, p.id));
    }
    p.uses_pkce = patch.uses_pkce.unwrap_or(p.uses_pkce);
    if patch.code_challenge_method.is_some() {
        p.code_challenge_method = patch.code_challenge_method;
    }
    app.store.update_provider(p).await.map_err(|e| match e {
        StoreError::NotFound => provider_not_found(provider_id),
        e => e.into(),
    })
}

pub async fn delete_provider(app: &AppState, tenant: &Tenant, provider_id: &str) -> ApiResult<()> {
    match app
        .store
        .delete_provider(tenant.workspace_id, provider_id)
        .await?
    {
        true => Ok(()),
        false => Err(provider_not_found(provider_id)),
    }
}

/// Where a provider sends the user back: this server's browser callback
/// (`/auth/callback/{provider_id}` under the public URL).
pub fn callback_url(app: &AppState, provider_id: &str) -> String {
    let mut url = reqwest::Url::parse(&app.config.public_url)
        .unwrap_or_else(|_| reqwest::Url::parse("http://127.0.0.1:1985").expect("a URL"));
    let base = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{base}/auth/callback/"));
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().push(provider_id);
    }
    url.to_string()
}

/// The provider's endpoints with its secret opened.
fn endpoints<'a>(app: &AppState, p: &'a OAuthProvider) -> ApiResult<Endpoints<'a>> {
    let client_secret = match &p.client_secret {
        Some(s) => Some(open(app, s, p.id)?),
        None => None,
    };
    Ok(Endpoints {
        client_id: &p.client_id,
        client_secret,
        auth_url: &p.auth_url,
        token_url: &p.token_url,
        auth_method: &p.token_endpoint_auth_method,
        redirect_uri: callback_url(app, &p.provider_id),
        resource: p.mcp_server_url.as_deref(),
    })
}
