//! Agent Auth: a workspace's OAuth providers, the sign-in of an end user at one (the
//! authorization URL, the callback's code exchange, the long-poll that waits for it),
//! the tokens obtained (reused, refreshed, labelled, revoked) and the tokens connected
//! to agents. Secrets (client secrets, tokens, PKCE verifiers) are sealed with the
//! server's key, bound to their row, and opened only to answer `authenticate` and `wait`.

use crate::auth::Tenant;
use crate::error::{ApiError, ApiResult};
use crate::oauth::{Endpoints, Obtained, OutboundError};
use crate::AppState;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use store::{
    AgentConnection, AuthOutcome, AuthRequest, AuthRequestStatus, NewConnection, OAuthProvider,
    OAuthToken, StoreError, TokenFilter,
};
use uuid::Uuid;

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

/// `authenticate`'s request.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Authenticate {
    pub user_id: Option<String>,
    pub ls_user_id: Option<String>,
    pub agent_id: Option<String>,
    pub provider: String,
    pub scopes: Vec<String>,
    pub force_new: Option<bool>,
    pub token_id: Option<Uuid>,
    pub is_default: Option<bool>,
}

/// `authenticate`'s answer.
#[derive(Debug, Clone)]
pub enum Authenticated {
    /// A stored token covers the scopes (refreshed if it had expired).
    Token {
        owner: String,
        access_token: String,
        token: Box<OAuthToken>,
    },
    /// The user must sign in at `url`; `expired` when a token was there but could not be
    /// refreshed.
    SignIn {
        owner: String,
        url: String,
        auth_id: Uuid,
        expired: bool,
    },
}

fn covers(t: &OAuthToken, scopes: &[String]) -> bool {
    scopes.iter().all(|s| t.scopes.contains(s))
}

fn expired(t: &OAuthToken, now: DateTime<Utc>) -> bool {
    t.expires_at.is_some_and(|at| at <= now + EXPIRY_MARGIN)
}

fn expiry(o: &Obtained, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    o.expires_in
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .map(|d| now + d)
}

pub async fn authenticate(
    app: &AppState,
    tenant: &Tenant,
    req: Authenticate,
) -> ApiResult<Authenticated> {
    let owner = req
        .user_id
        .clone()
        .or_else(|| req.ls_user_id.clone())
        .ok_or_else(|| ApiError::BadRequest("user_id or ls_user_id is required".into()))?;
    let ws = tenant.workspace_id;
    let provider = get_provider(app, tenant, &req.provider).await?;
    let mut expired_seen = false;
    if !req.force_new.unwrap_or(false) {
        let now = Utc::now();
        for t in candidates(app, tenant, &req, &provider, &owner).await? {
            if !covers(&t, &req.scopes) {
                continue;
            }
            if !expired(&t, now) {
                let access_token = open(app, &t.access_token, t.id)?;
                return Ok(Authenticated::Token {
                    owner,
                    access_token,
                    token: Box::new(t),
                });
            }
            expired_seen = true;
            if let Some(done) = refresh(app, &provider, t).await? {
                let access_token = open(app, &done.access_token, done.id)?;
                return Ok(Authenticated::Token {
                    owner,
                    access_token,
                    token: Box::new(done),
                });
            }
        }
    }
    let (url, auth_id) = start_sign_in(app, ws, &provider, &owner, &req).await?;
    Ok(Authenticated::SignIn {
        owner,
        url,
        auth_id,
        expired: expired_seen,
    })
}

/// The tokens `authenticate` may hand out, best first: the one asked for by id; else
/// the agent's connected tokens of the provider, then the owner's (default first, then
/// newest).
async fn candidates(
    app: &AppState,
    tenant: &Tenant,
    req: &Authenticate,
    provider: &OAuthProvider,
    owner: &str,
) -> ApiResult<Vec<OAuthToken>> {
    let ws = tenant.workspace_id;
    if let Some(id) = req.token_id {
        let t = app.store.get_token(ws, id).await?;
        let t = t.filter(|t| t.provider_row == provider.id && t.owner == owner);
        return Ok(vec![t.ok_or_else(|| token_not_found(&id.to_string()))?]);
    }
    let mut out = Vec::new();
    if let Some(agent) = &req.agent_id {
        let connected = app.store.list_connections(ws, agent).await?;
        out.extend(
            connected
                .into_iter()
                .map(|c| c.token)
                .filter(|t| t.provider_row == provider.id),
        );
    }
    let filter = TokenFilter {
        provider_id: Some(provider.provider_id.clone()),
        owner: Some(owner.to_owned()),
        provider_type: None,
    };
    let mut own = app.store.list_tokens(ws, &filter).await?;
    own.sort_by_key(|t| {
        (
            std::cmp::Reverse(t.is_default),
            std::cmp::Reverse(t.created_at),
        )
    });
    out.extend(own);
    Ok(out)
}

/// Turns, one at a time, of work on one id (a token's refresh).
#[derive(Default)]
pub struct Turns {
    locks:
        std::sync::Mutex<std::collections::HashMap<Uuid, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

impl Turns {
    /// Waits for the turn of `id`; it lasts as long as the guard.
    pub async fn turn(&self, id: Uuid) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            // Locks nobody holds or waits for go.
            locks.retain(|_, l| std::sync::Arc::strong_count(l) > 1);
            locks.entry(id).or_default().clone()
        };
        lock.lock_owned().await
    }
}

/// Refreshes an expired token with its refresh token; `None` when it has none or the
/// provider refuses (the user signs in again).
async fn refresh(
    app: &AppState,
    provider: &OAuthProvider,
    mut t: OAuthToken,
) -> ApiResult<Option<OAuthToken>> {
    if t.refresh_token.is_none() {
        return Ok(None);
    }
    // One refresh of a token at a time in this process: the ones that waited find it
    // fresh and use it (a provider that rotates refresh tokens would refuse them).
    let _turn = app.refreshes.turn(t.id).await;
    match app.store.get_token(t.workspace_id, t.id).await? {
        Some(now) if !expired(&now, Utc::now()) => return Ok(Some(now)),
        Some(now) => t = now,
        None => return Ok(None),
    }
    let Some(sealed) = t.refresh_token.clone() else {
        return Ok(None);
    };
    let refresh_token = open(app, &sealed, t.id)?;
    let ends = endpoints(app, provider)?;
    let got = match app.outbound.refresh(&ends, &refresh_token).await {
        Ok(got) => got,
        Err(OutboundError(why)) => {
            // Another request may have refreshed it first (and the provider rotated the
            // refresh token this one used): its result serves this one too.
            let again = app.store.get_token(t.workspace_id, t.id).await?;
            if let Some(fresh) = again.filter(|f| !expired(f, Utc::now())) {
                return Ok(Some(fresh));
            }
            tracing::info!(token = %t.id, provider = %provider.provider_id, %why, "refresh failed; the user signs in again");
            return Ok(None);
        }
    };
    let now = Utc::now();
    t.access_token = seal(app, &got.access_token, t.id);
    if let Some(r) = &got.refresh_token {
        t.refresh_token = Some(seal(app, r, t.id));
    }
    t.expires_at = expiry(&got, now);
    if let Some(scopes) = got.scopes {
        t.scopes = scopes;
    }
    match app.store.update_token(t).await {
        Ok(saved) => Ok(Some(saved)),
        // Revoked meanwhile: sign in again.
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn hash_state(state: &str) -> String {
    hex::encode(Sha256::digest(state.as_bytes()))
}

async fn start_sign_in(
    app: &AppState,
    ws: Uuid,
    provider: &OAuthProvider,
    owner: &str,
    req: &Authenticate,
) -> ApiResult<(String, Uuid)> {
    let verifier = if provider.uses_pkce {
        match provider.code_challenge_method.as_deref() {
            None | Some("S256") => Some(crate::oauth::new_verifier()),
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "OAuth provider '{}' uses the code_challenge_method '{other}'; only S256 is supported",
                    provider.provider_id
                )))
            }
        }
    } else {
        None
    };
    if app.store.pending_auth_requests(ws).await? >= MAX_PENDING_SIGN_INS {
        return Err(ApiError::TooManyRequests(format!(
            "The workspace has {MAX_PENDING_SIGN_INS} sign-ins pending; wait for some to \
             finish or expire (after 10 minutes)."
        )));
    }
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let state = URL_SAFE_NO_PAD.encode(raw);
    let url = endpoints(app, provider)?
        .authorization_url(&req.scopes, &state, verifier.as_deref())
        .map_err(|OutboundError(why)| {
            ApiError::BadRequest(format!(
                "OAuth provider '{}' cannot be used: {why}",
                provider.provider_id
            ))
        })?;
    let id = Uuid::new_v4();
    let now = Utc::now();
    app.store
        .create_auth_request(AuthRequest {
            id,
            workspace_id: ws,
            provider_row: provider.id,
            state_hash: hash_state(&state),
            verifier: verifier.map(|v| seal(app, &v, id)),
            owner: owner.to_owned(),
            agent_id: req.agent_id.clone(),
            scopes: req.scopes.clone(),
            is_default: req.is_default.unwrap_or(true),
            status: AuthRequestStatus::Pending,
            token_id: None,
            error: None,
            expires_at: now + SIGN_IN_TTL,
            created_at: now,
        })
        .await?;
    Ok((url, id))
}

/// What `wait` found.
#[derive(Debug, Clone, PartialEq)]
pub enum Waited {
    Completed(String),
    Timeout,
    NotFound,
}

/// Waits up to `timeout` seconds (0 to [`MAX_WAIT_SECONDS`]) for a sign-in of the
/// workspace to finish; woken by the callback on any replica.
pub async fn wait(
    app: &AppState,
    tenant: &Tenant,
    auth_id: &str,
    timeout: i128,
) -> ApiResult<Waited> {
    let Ok(id) = Uuid::parse_str(auth_id) else {
        return Ok(Waited::NotFound);
    };
    let secs = timeout.clamp(0, i128::from(MAX_WAIT_SECONDS)) as u64;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut changed = app.store.watch_auth_request(id);
    loop {
        let Some(r) = app.store.get_auth_request(tenant.workspace_id, id).await? else {
            return Ok(Waited::NotFound);
        };
        match r.status {
            AuthRequestStatus::Completed => {
                let token = match r.token_id {
                    Some(t) => app.store.get_token(tenant.workspace_id, t).await?,
                    None => None,
                };
                return Ok(match token {
                    Some(t) => Waited::Completed(open(app, &t.access_token, t.id)?),
                    // Revoked since.
                    None => Waited::NotFound,
                });
            }
            AuthRequestStatus::Failed => {
                return Err(ApiError::BadRequest(format!(
                    "The sign-in failed: {}",
                    r.error.unwrap_or_default()
                )))
            }
            AuthRequestStatus::Pending if r.expires_at <= Utc::now() => {
                return Ok(Waited::NotFound)
            }
            AuthRequestStatus::Pending | AuthRequestStatus::Exchanging => {}
        }
        if app
            .config
            .closing
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Ok(Waited::Timeout);
        }
        // Woken by the callback; a check every few seconds covers a lost notification.
        let nap = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        tokio::select! {
            _ = changed.changed() => {}
            _ = tokio::time::sleep_until(nap.min(deadline)) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            // One last look: it may have finished at the very end.
            let r = app.store.get_auth_request(tenant.workspace_id, id).await?;
            if !r.is_some_and(|r| r.status == AuthRequestStatus::Completed) {
                return Ok(Waited::Timeout);
            }
        }
    }
}

/// What the provider sent back to the callback.
#[derive(Debug, Clone, Default)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// Finishes a sign-in: the `state` is used once; the code is exchanged and the token
/// saved. `workspace` is the caller's when the callback comes with a key. The answer
/// is the provider's name.
pub async fn callback(
    app: &AppState,
    provider_id: &str,
    params: CallbackParams,
    workspace: Option<Uuid>,
) -> ApiResult<String> {
    let invalid = || ApiError::BadRequest(INVALID_STATE.into());
    let state = params.state.as_deref().ok_or_else(invalid)?;
    let req = app
        .store
        .take_auth_request(&hash_state(state), workspace)
        .await?
        .ok_or_else(invalid)?;
    // The sign-in is taken: it ends here whatever becomes of this request (a task of its
    // own, so a client that goes away or the request time limit cannot leave it hanging).
    let (app, provider_id) = (app.clone(), provider_id.to_owned());
    tokio::spawn(async move {
        let (outcome, answer) = match settle(&app, &req, &provider_id, params).await {
            Ok((token, name)) => (AuthOutcome::Completed(Box::new(token)), Ok(name)),
            Err((why, answer)) => (AuthOutcome::Failed(why), Err(answer)),
        };
        app.store.finish_auth_request(req.id, outcome).await?;
        answer
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the callback's task failed: {e}")))?
}

/// What a taken sign-in comes to: the token (sealed) and the provider's name, or why it
/// failed (kept with the sign-in) and the answer for the callback.
async fn settle(
    app: &AppState,
    req: &AuthRequest,
    provider_id: &str,
    params: CallbackParams,
) -> Result<(OAuthToken, String), (String, ApiError)> {
    let internal = |e: ApiError| ("the server could not finish the sign-in".to_owned(), e);
    let provider = app
        .store
        .list_providers(req.workspace_id)
        .await
        .map_err(|e| internal(e.into()))?
        .into_iter()
        .find(|p| p.id == req.provider_row && p.provider_id == provider_id);
    let Some(provider) = provider else {
        return Err((
            "the provider's answer came to another provider's callback".into(),
            ApiError::BadRequest(INVALID_STATE.into()),
        ));
    };
    if let Some(error) = params.error {
        let said = match params.error_description {
            Some(d) => format!("{error} ({d})"),
            None => error,
        };
        let answer = format!("{} refused the sign-in: {said}", provider.name);
        return Err((
            format!("the provider refused: {said}"),
            ApiError::BadRequest(answer),
        ));
    }
    let Some(code) = params.code else {
        return Err((
            "the provider's answer has no code".into(),
            ApiError::BadRequest("The provider's answer has neither a code nor an error.".into()),
        ));
    };
    let verifier = match &req.verifier {
        Some(v) => Some(open(app, v, req.id).map_err(internal)?),
        None => None,
    };
    let ends = endpoints(app, &provider).map_err(internal)?;
    let got = app
        .outbound
        .exchange(&ends, &code, verifier)
        .await
        .map_err(|OutboundError(why)| {
            let answer = format!("{} did not give a token: {why}", provider.name);
            (why, ApiError::BadGateway(answer))
        })?;
    let id = Uuid::new_v4();
    let now = Utc::now();
    let token = OAuthToken {
        id,
        workspace_id: req.workspace_id,
        provider_row: provider.id,
        provider_id: provider.provider_id.clone(),
        owner: req.owner.clone(),
        access_token: seal(app, &got.access_token, id),
        refresh_token: got.refresh_token.as_deref().map(|r| seal(app, r, id)),
        scopes: got.scopes.clone().unwrap_or_else(|| req.scopes.clone()),
        expires_at: expiry(&got, now),
        provider_account_label: None,
        is_default: req.is_default,
        created_at: now,
        updated_at: now,
    };
    Ok((token, provider.name))
}

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
