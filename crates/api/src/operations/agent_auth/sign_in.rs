//! A user's sign-in at a provider: `authenticate` (a stored token, refreshed when due, or
//! a new sign-in with PKCE), `wait` for it, and the callback that exchanges the code.

use super::{
    endpoints, get_provider, open, seal, token_not_found, EXPIRY_MARGIN, INVALID_STATE,
    MAX_PENDING_SIGN_INS, MAX_WAIT_SECONDS, SIGN_IN_TTL,
};
use crate::auth::Tenant;
use crate::error::{ApiError, ApiResult};
use crate::oauth::{Grant, Obtained, OutboundError};
use crate::AppState;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use store::{
    AuthOutcome, AuthRequest, AuthRequestStatus, OAuthProvider, OAuthToken, StoreError, TokenFilter,
};
use uuid::Uuid;

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
    let got = match app
        .outbound
        .token(&ends, Grant::Refresh(refresh_token))
        .await
    {
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
        .token(&ends, Grant::Code { code, verifier })
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
