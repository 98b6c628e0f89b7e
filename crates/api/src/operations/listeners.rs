//! Listeners: where deployments run. They belong to self-hosted enterprise
//! organizations only, so every operation first checks the plan.

use crate::auth::Tenant;
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use store::{KeyScope, Listener, ListenerPatch, NewListener, Plan, StoreError, Versioned, Window};
use uuid::Uuid;

/// A listener to create, as validated at the edge.
pub struct Create {
    pub version: Option<String>,
    pub compute_id: String,
    pub k8s_namespaces: Option<Vec<String>>,
}

pub fn not_found(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("Listener ID {id} not found."))
}

/// The plan rule of every listener operation.
fn authorize(tenant: &Tenant) -> ApiResult<()> {
    match tenant.plan {
        Plan::Enterprise => Ok(()),
        Plan::Standard => Err(ApiError::Forbidden(format!(
            "Listeners cannot be created for LangSmith workspace ID '{}'. Creating listeners is \
             only allowed for LangSmith organizations with self-hosted enterprise plans.",
            tenant.workspace_id
        ))),
    }
}

/// A Kubernetes namespace name (an RFC 1123 label).
pub fn is_namespace_name(ns: &str) -> bool {
    let b = ns.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&b.len())
        && ok(&b[0])
        && ok(&b[b.len() - 1])
        && b.iter().all(|c| ok(c) || *c == b'-')
}

/// What is wrong with a list of namespaces, if anything: the first name that is not one,
/// or the first repeated.
pub fn namespaces_problem(list: &[String]) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    list.iter().find_map(|ns| {
        if !is_namespace_name(ns) {
            Some(format!("'{ns}' is not a valid Kubernetes namespace name"))
        } else if !seen.insert(ns.as_str()) {
            Some(format!("duplicate namespace '{ns}'"))
        } else {
            None
        }
    })
}

pub async fn create(app: &AppState, tenant: &Tenant, req: Create) -> ApiResult<Listener> {
    authorize(tenant)?;
    let workspace_id = tenant.workspace_id;
    let new = NewListener {
        workspace_id,
        compute_type: "k8s".into(),
        compute_id: req.compute_id.clone(),
        version: req.version,
        k8s_namespaces: req.k8s_namespaces,
    };
    match app.store.create_listener(new).await {
        Ok(l) => Ok(l),
        Err(StoreError::Conflict) => Err(ApiError::Conflict(format!(
            "Listener for LangSmith workspace ID '{workspace_id}' and compute ID '{}' already \
             exists.",
            req.compute_id
        ))),
        Err(e) => Err(e.into()),
    }
}

/// A page of the workspace's listeners, oldest first.
pub async fn list(app: &AppState, tenant: &Tenant, window: Window) -> ApiResult<Vec<Listener>> {
    authorize(tenant)?;
    Ok(app
        .store
        .list_listeners(tenant.workspace_id, window)
        .await?)
}

/// `(id, version)` of the listeners [`list`] would return: a reader that remembers
/// listeners by version reads whole only those it does not have ([`by_ids`]).
pub async fn versions(
    app: &AppState,
    tenant: &Tenant,
    window: Window,
) -> ApiResult<Vec<(Uuid, chrono::DateTime<chrono::Utc>)>> {
    authorize(tenant)?;
    Ok(app
        .store
        .listener_versions(tenant.workspace_id, window)
        .await?)
}

/// The workspace's listeners among `ids`, in no particular order.
pub async fn by_ids(app: &AppState, tenant: &Tenant, ids: &[Uuid]) -> ApiResult<Vec<Listener>> {
    authorize(tenant)?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(app.store.listeners_by_ids(tenant.workspace_id, ids).await?)
}

/// The listener's current version; 404 when it is not the workspace's.
pub async fn version(
    app: &AppState,
    tenant: &Tenant,
    id: Uuid,
) -> ApiResult<chrono::DateTime<chrono::Utc>> {
    authorize(tenant)?;
    app.store
        .version(Versioned::Listener, tenant.workspace_id, id)
        .await?
        .ok_or_else(|| not_found(id))
}

pub async fn get(app: &AppState, tenant: &Tenant, id: Uuid) -> ApiResult<Listener> {
    authorize(tenant)?;
    app.store
        .get_listener(tenant.workspace_id, id)
        .await?
        .ok_or_else(|| not_found(id))
}

pub async fn patch(
    app: &AppState,
    tenant: &Tenant,
    id: Uuid,
    patch: ListenerPatch,
) -> ApiResult<Listener> {
    authorize(tenant)?;
    app.store
        .patch_listener(tenant.workspace_id, id, patch)
        .await?
        .ok_or_else(|| not_found(id))
}

/// Deletes a listener no deployment uses; its keys are revoked with it.
pub async fn delete(app: &AppState, tenant: &Tenant, id: Uuid) -> ApiResult<()> {
    authorize(tenant)?;
    match app.store.delete_listener(tenant.workspace_id, id).await {
        Ok(true) => {
            // No request may pass on a remembered key of it.
            app.keys.forget_all();
            Ok(())
        }
        Ok(false) => Err(not_found(id)),
        Err(StoreError::InUse) => Err(ApiError::Conflict(format!(
            "Listener ID {id} is used by deployments and cannot be deleted."
        ))),
        Err(e) => Err(e.into()),
    }
}

/// A new key for the listener's agent (what `hostplane admin api-key create --listener`
/// makes); its value is returned once and only its hash is stored.
pub async fn issue_key(app: &AppState, tenant: &Tenant, listener: &Listener) -> ApiResult<String> {
    authorize(tenant)?;
    let scope = KeyScope::Listener {
        org_id: tenant.org_id,
        workspace_id: tenant.workspace_id,
        listener_id: listener.id,
    };
    let value = store::generate_key();
    app.store
        .create_api_key(scope, &store::hash_key(&value))
        .await?;
    Ok(value)
}

/// What each listener's agent said in its last heartbeat.
pub async fn agent_states(app: &AppState, tenant: &Tenant) -> ApiResult<Vec<store::AgentState>> {
    authorize(tenant)?;
    Ok(app.store.agent_states(tenant.workspace_id).await?)
}

#[cfg(test)]
mod tests {
    use super::{is_namespace_name, namespaces_problem};

    #[test]
    fn namespace_names() {
        for ok in ["a", "agents", "a-1", "0", &"a".repeat(63)] {
            assert!(is_namespace_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64), "é"] {
            assert!(!is_namespace_name(bad), "{bad}");
        }
        let list = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(namespaces_problem(&list(&["a", "b"])), None);
        assert_eq!(
            namespaces_problem(&list(&["a", "B", "a"])).as_deref(),
            Some("'B' is not a valid Kubernetes namespace name")
        );
        assert_eq!(
            namespaces_problem(&list(&["a", "b", "a"])).as_deref(),
            Some("duplicate namespace 'a'")
        );
    }
}
