//! Listeners (v2): the five operations, their request models and their rules.

use crate::auth::Tenant;
use crate::error::{json_response, ApiError, ApiResult};
use crate::request::{BodyCall, Call};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use compat::format::Timestamp;
use compat::validate::{self, Fields};
use compat::{ErrorItem, Errors, Loc, Value};
use serde::Serialize;
use store::{Listener, ListenerPatch, NewListener, Plan, StoreError, Versioned};
use uuid::Uuid;

/// The listener's JSON, fields in the reference's order.
#[derive(Serialize)]
struct ListenerOut<'a> {
    version: &'a Option<String>,
    compute_type: &'a str,
    compute_id: &'a str,
    compute_config: ComputeConfigOut<'a>,
    id: Uuid,
    created_at: Timestamp,
    updated_at: Timestamp,
}

#[derive(Serialize)]
struct ComputeConfigOut<'a> {
    k8s_namespaces: &'a Option<Vec<String>>,
}

fn to_json(l: &Listener) -> ListenerOut<'_> {
    ListenerOut {
        version: &l.version,
        compute_type: &l.compute_type,
        compute_id: &l.compute_id,
        compute_config: ComputeConfigOut {
            k8s_namespaces: &l.k8s_namespaces,
        },
        id: l.id,
        created_at: Timestamp(l.created_at),
        updated_at: Timestamp(l.updated_at),
    }
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("Listener ID {id} not found."))
}

/// Listeners belong to self-hosted enterprise organizations only.
fn require_enterprise(tenant: &Tenant) -> ApiResult<()> {
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
fn is_namespace_name(ns: &str) -> bool {
    let b = ns.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&b.len())
        && ok(&b[0])
        && ok(&b[b.len() - 1])
        && b.iter().all(|c| ok(c) || *c == b'-')
}

/// `ListenerComputeConfig`: `k8s_namespaces` is an optional list of distinct namespace
/// names; a bad list fails as a whole with the first problem found.
fn compute_config(v: &Value, loc: Loc, errs: &mut Errors) -> Option<Option<Vec<String>>> {
    let ns_loc = loc.key("k8s_namespaces");
    let mut m = validate::model(v, loc, errs)?;
    let raw = m.raw("k8s_namespaces").cloned();
    let namespaces = m.optional("k8s_namespaces", |v, loc, errs| {
        validate::list(v, loc, errs, validate::string)
    })?;
    if let (Some(list), Some(raw)) = (&namespaces, raw) {
        let mut seen = std::collections::HashSet::new();
        for ns in list {
            let problem = if !is_namespace_name(ns) {
                Some(format!("'{ns}' is not a valid Kubernetes namespace name"))
            } else if !seen.insert(ns.as_str()) {
                Some(format!("duplicate namespace '{ns}'"))
            } else {
                None
            };
            if let Some(problem) = problem {
                m.errs.push(ErrorItem::value_error(ns_loc, &problem, raw));
                return None;
            }
        }
    }
    Some(namespaces)
}

struct CreateRequest {
    version: Option<String>,
    compute_id: String,
    k8s_namespaces: Option<Vec<String>>,
}

impl CreateRequest {
    fn validate(m: &mut Fields<'_>) -> Option<Self> {
        let version = m.optional("version", validate::string);
        let compute_type = m.required("compute_type", |v, l, e| {
            validate::literal(v, l, e, &["k8s"])
        });
        let compute_id = m.required("compute_id", |v, l, e| {
            validate::string_len(v, l, e, Some(1), None)
        });
        let config = m.required("compute_config", compute_config);
        compute_type?;
        Some(CreateRequest {
            version: version?,
            compute_id: compute_id?,
            k8s_namespaces: config?,
        })
    }
}

/// `ListenerPatchRequest`: `compute_type` and `compute_id` are not part of it, so a
/// patch ignores them like any unknown field.
fn patch_request(m: &mut Fields<'_>) -> Option<ListenerPatch> {
    let version = m.optional("version", validate::string);
    let config = m.optional("compute_config", compute_config);
    Some(ListenerPatch {
        version: version?,
        k8s_namespaces: config?,
    })
}

pub async fn create(State(app): State<AppState>, call: BodyCall) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let req = call
        .body_model(&mut errs)
        .and_then(|mut m| CreateRequest::validate(&mut m));
    let req = ApiError::validated(errs, req)?;
    let l = create_in(&app, &call.tenant, req).await?;
    Ok(json_response(StatusCode::CREATED, &to_json(&l)))
}

/// Creates a listener from the console's form, validated as the API's body is.
pub(crate) async fn create_from(
    app: &AppState,
    tenant: &Tenant,
    body: &compat::Value,
) -> ApiResult<Listener> {
    let mut errs = Vec::new();
    let req = validate::model(body, Loc::new("body"), &mut errs)
        .and_then(|mut m| CreateRequest::validate(&mut m));
    let req = ApiError::validated(errs, req)?;
    create_in(app, tenant, req).await
}

async fn create_in(app: &AppState, tenant: &Tenant, req: CreateRequest) -> ApiResult<Listener> {
    require_enterprise(tenant)?;
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

pub async fn list(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let paging = call.paging(&mut errs);
    let (limit, db_offset, offset) = ApiError::validated(errs, paging)?;
    require_enterprise(&call.tenant)?;
    let workspace = call.tenant.workspace_id;
    // The versions of the page first; only listeners not rendered at that version are read
    // whole ([`crate::bodies`]).
    let page: Vec<_> = app
        .store
        .listener_versions(workspace, limit, db_offset)
        .await?
        .into_iter()
        .map(|(id, version)| (id, app.bodies.known(id, version)))
        .collect();
    let missing: Vec<Uuid> = page
        .iter()
        .filter(|(_, known)| known.is_none())
        .map(|(id, _)| *id)
        .collect();
    let read = if missing.is_empty() {
        Vec::new()
    } else {
        app.store.listeners_by_ids(workspace, &missing).await?
    };
    let mut resources = Vec::with_capacity(page.len());
    for (id, known) in page {
        // Neither remembered nor read: deleted since the versions were read, so it is no
        // longer on the page.
        if let Some(body) = known {
            resources.push(body);
        } else if let Some(l) = read.iter().find(|l| l.id == id) {
            resources.push(body(&app, l)?);
        }
    }
    Ok(crate::Page::response(resources, offset))
}

pub async fn get(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let id = call.path_uuid("listener_id", &mut errs);
    let id = ApiError::validated(errs, id)?;
    require_enterprise(&call.tenant)?;
    let workspace = call.tenant.workspace_id;
    let version = app
        .store
        .version(Versioned::Listener, workspace, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    if let Some(known) = app.bodies.known(id, version) {
        return Ok(json_response(StatusCode::OK, &known));
    }
    let l = app
        .store
        .get_listener(workspace, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(json_response(StatusCode::OK, &body(&app, &l)?))
}

/// The listener's JSON, rendered once per version ([`crate::bodies`]).
fn body(app: &AppState, l: &Listener) -> ApiResult<std::sync::Arc<serde_json::value::RawValue>> {
    app.bodies.get(l.id, l.updated_at, || Ok(to_json(l)))
}

pub async fn patch(State(app): State<AppState>, call: BodyCall) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let id = call.path_uuid("listener_id", &mut errs);
    let patch = call
        .body_model(&mut errs)
        .and_then(|mut m| patch_request(&mut m));
    let (id, patch) = ApiError::validated(errs, id.zip(patch))?;
    require_enterprise(&call.tenant)?;
    let l = app
        .store
        .patch_listener(call.tenant.workspace_id, id, patch)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(json_response(StatusCode::OK, &body(&app, &l)?))
}

pub async fn delete(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let id = call.path_uuid("listener_id", &mut errs);
    let id = ApiError::validated(errs, id)?;
    require_enterprise(&call.tenant)?;
    match app
        .store
        .delete_listener(call.tenant.workspace_id, id)
        .await
    {
        Ok(true) => {
            // Its keys were revoked with it: no request may pass on a remembered one.
            app.keys.forget_all();
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Ok(false) => Err(not_found(id)),
        Err(StoreError::InUse) => Err(ApiError::Conflict(format!(
            "Listener ID {id} is used by deployments and cannot be deleted."
        ))),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::is_namespace_name;

    #[test]
    fn namespace_names() {
        for ok in ["a", "agents", "a-1", "0", &"a".repeat(63)] {
            assert!(is_namespace_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64), "é"] {
            assert!(!is_namespace_name(bad), "{bad}");
        }
    }
}
