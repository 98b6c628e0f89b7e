//! The web console's sign-in sessions: a session names the key that signed in, and every
//! page authenticates that key again, so a revoked key ends its sessions at once.

use crate::auth;
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use store::{ApiKey, KeyScope, Workspace, WorkspaceAccess};
use uuid::Uuid;

/// Signs in with a key's value; the new session's token (the cookie's value), and the
/// key. `Unauthorized` for a key that is not valid, `Forbidden` for a listener key.
pub async fn sign_in(
    app: &AppState,
    key: &str,
    lifetime: chrono::Duration,
) -> ApiResult<(String, ApiKey)> {
    let hash = store::hash_key(key);
    let (record, _) = auth::key_by_hash(&*app.store, &app.keys, hash.clone(), None).await?;
    if matches!(record.scope(), KeyScope::Listener { .. }) {
        return Err(ApiError::Forbidden(
            "A listener key cannot sign in: use a workspace or organization key.".into(),
        ));
    }
    let token = store::generate_key();
    let expires = chrono::Utc::now() + lifetime;
    app.store
        .create_session(&store::hash_key(&token), &hash, expires)
        .await?;
    Ok((token, record))
}

/// The key of the session with this token, authenticated again with `workspace` as the
/// workspace it would act in; `Unauthorized` when the session or its key is gone.
pub async fn key_of(
    app: &AppState,
    token_hash: &str,
    workspace: Option<Uuid>,
) -> ApiResult<(ApiKey, Option<WorkspaceAccess>)> {
    let gone = || ApiError::Unauthorized("Not authenticated".into());
    let key_hash = app.store.session_key(token_hash).await?.ok_or_else(gone)?;
    auth::key_by_hash(&*app.store, &app.keys, key_hash, workspace).await
}

pub async fn sign_out(app: &AppState, token_hash: &str) -> ApiResult<()> {
    Ok(app.store.delete_session(token_hash).await?)
}

/// The workspaces an organization key may open.
pub async fn workspaces(app: &AppState, org_id: Uuid) -> ApiResult<Vec<Workspace>> {
    Ok(app.store.list_workspaces(Some(org_id)).await?)
}
