//! Who is calling and which workspace the call acts in.

use crate::error::{ApiError, ApiResult};
use axum::http::HeaderMap;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use store::{ApiKey, KeyScope, Plan, Store, WorkspaceAccess};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// Keys that authenticated recently, by key hash and requested workspace, so that a
/// request needs no database round trip for its key. An entry lives `ttl` at most: a key
/// revoked elsewhere (`hostplane admin api-key revoke`, a listener deleted through
/// another replica, a workspace removed) stops working within that time on every server,
/// and at once on a server that revokes it itself ([`KeyCache::forget_all`]). Unknown
/// and revoked keys are never remembered: every failed attempt asks the database.
pub struct KeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<(String, Option<Uuid>), Entry>>,
}

type Entry = (Instant, ApiKey, Option<WorkspaceAccess>);

/// Entries kept at most; past it the cache starts over.
const MAX_ENTRIES: usize = 10_000;

impl KeyCache {
    /// A cache whose entries live `ttl` (zero: nothing is remembered).
    pub fn new(ttl: Duration) -> Self {
        KeyCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(
        &self,
        hash: &str,
        requested: Option<Uuid>,
    ) -> Option<(ApiKey, Option<WorkspaceAccess>)> {
        let entries = self.entries.lock().ok()?;
        let (at, key, workspace) = entries.get(&(hash.to_owned(), requested))?;
        (at.elapsed() < self.ttl).then(|| (key.clone(), *workspace))
    }

    fn put(
        &self,
        hash: String,
        requested: Option<Uuid>,
        key: &ApiKey,
        workspace: Option<WorkspaceAccess>,
    ) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert((hash, requested), (Instant::now(), key.clone(), workspace));
        }
    }

    /// Forgets every key: called after this server revoked some.
    pub fn forget_all(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }
}

/// The workspace a request acts in.
#[derive(Debug, Clone, Copy)]
pub struct Tenant {
    /// The organization of the key (and of the workspace).
    pub org_id: Uuid,
    pub workspace_id: Uuid,
    pub plan: Plan,
    /// The API key the request was made with.
    pub key_id: Uuid,
}

const NOT_AUTHENTICATED: &str = "Not authenticated";
const INVALID_KEY: &str = "Invalid API key";
pub const REQUIRES_WORKSPACE: &str = "requires workspace specification";
pub const LISTENER_KEY_ONLY: &str =
    "This API key belongs to a listener: it can only call that listener's data-plane routes.";
pub const NEEDS_LISTENER_KEY: &str = "Data-plane routes need a listener key: create one with \
     `hostplane admin api-key create --listener <listener id>`.";

/// `X-Api-Key`, or `Authorization: Bearer` when that is absent or empty.
fn credentials(headers: &HeaderMap) -> Option<String> {
    let api_key = headers
        .get("x-api-key")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if let Some(key) = api_key.filter(|k| !k.is_empty()) {
        return Some(key);
    }
    let auth = headers.get("authorization")?;
    let auth = String::from_utf8_lossy(auth.as_bytes());
    let (scheme, token) = auth.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

fn no_access(workspace: &str) -> ApiError {
    ApiError::Forbidden(format!(
        "API key does not have access to LangSmith workspace ID '{workspace}'."
    ))
}

/// The live key the request carries, looked up with the workspace it would act in.
async fn find_key(
    store: &dyn Store,
    keys: &KeyCache,
    headers: &HeaderMap,
    requested: Option<Uuid>,
) -> ApiResult<(ApiKey, Option<WorkspaceAccess>)> {
    let key =
        credentials(headers).ok_or_else(|| ApiError::Unauthorized(NOT_AUTHENTICATED.into()))?;
    key_by_hash(store, keys, store::hash_key(&key), requested).await
}

/// The live key with this hash, looked up with the workspace it would act in.
pub async fn key_by_hash(
    store: &dyn Store,
    keys: &KeyCache,
    hash: String,
    requested: Option<Uuid>,
) -> ApiResult<(ApiKey, Option<WorkspaceAccess>)> {
    if let Some(known) = keys.get(&hash, requested) {
        return Ok(known);
    }
    // One round trip: the key and the workspace it would act in.
    let (record, workspace) = store
        .authenticate(&hash, requested)
        .await?
        .ok_or_else(|| ApiError::Unauthorized(INVALID_KEY.into()))?;
    // The index finds the row by hash; the final comparison is constant-time so the
    // answer's timing does not depend on how much of a guessed hash matched.
    if !bool::from(record.key_hash.as_bytes().ct_eq(hash.as_bytes())) {
        return Err(ApiError::Unauthorized(INVALID_KEY.into()));
    }
    keys.put(hash, requested, &record, workspace);
    Ok((record, workspace))
}

/// Authenticates a data-plane request: only a key of `listener` itself passes.
/// The listener key a data-plane request came with.
#[derive(Debug, Clone, Copy)]
pub struct ListenerKey {
    pub key_id: Uuid,
    pub workspace_id: Uuid,
}

pub async fn authenticate_listener(
    store: &dyn Store,
    keys: &KeyCache,
    headers: &HeaderMap,
    listener: Uuid,
) -> ApiResult<ListenerKey> {
    let (record, _) = find_key(store, keys, headers, None).await?;
    match record.scope() {
        KeyScope::Listener {
            listener_id,
            workspace_id,
            ..
        } if listener_id == listener => Ok(ListenerKey {
            key_id: record.id,
            workspace_id,
        }),
        KeyScope::Listener { .. } => Err(ApiError::Forbidden(format!(
            "This listener key does not have access to listener ID '{listener}'."
        ))),
        _ => Err(ApiError::Forbidden(NEEDS_LISTENER_KEY.into())),
    }
}

/// Authenticates the request and resolves its workspace.
pub async fn authenticate(
    store: &dyn Store,
    keys: &KeyCache,
    headers: &HeaderMap,
) -> ApiResult<Tenant> {
    let tenant_header = headers
        .get("x-tenant-id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
        .filter(|v| !v.is_empty());
    let requested = tenant_header
        .as_deref()
        .map(|t| Uuid::parse_str(t).map_err(|_| t.to_owned()));
    let (record, workspace) =
        find_key(store, keys, headers, requested.clone().and_then(Result::ok)).await?;
    let requested = match requested {
        Some(Ok(id)) => Some(id),
        Some(Err(text)) => return Err(no_access(&text)),
        None => None,
    };
    tenant(&record, workspace, requested)
}

/// The workspace a request with `record` acts in: the key's own, or `requested` (which an
/// organization key must give); `workspace` is what the store found for it.
pub fn tenant(
    record: &ApiKey,
    workspace: Option<WorkspaceAccess>,
    requested: Option<Uuid>,
) -> ApiResult<Tenant> {
    let workspace_id = match (record.scope(), requested) {
        (KeyScope::Listener { .. }, _) => {
            return Err(ApiError::Forbidden(LISTENER_KEY_ONLY.into()))
        }
        (KeyScope::Workspace { workspace_id, .. }, None) => workspace_id,
        (KeyScope::Workspace { workspace_id, .. }, Some(asked)) if asked == workspace_id => {
            workspace_id
        }
        (KeyScope::Workspace { .. }, Some(asked)) => return Err(no_access(&asked.to_string())),
        (KeyScope::Org { .. }, None) => return Err(ApiError::Forbidden(REQUIRES_WORKSPACE.into())),
        (KeyScope::Org { .. }, Some(asked)) => asked,
    };
    let plan = match workspace {
        Some(ws) if ws.org_id == record.org_id => ws.plan,
        _ => return Err(no_access(&workspace_id.to_string())),
    };
    Ok(Tenant {
        org_id: record.org_id,
        workspace_id,
        plan,
        key_id: record.id,
    })
}
