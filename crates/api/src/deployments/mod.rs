//! Deployments (v2) and their revisions: every route of the reference, plus the routes
//! the official CLI calls that the reference leaves out (push-token, upload-url). What
//! each does is [`crate::operations::deployments`].

pub mod models;
mod output;
pub mod uploads;

use crate::error::{json_response, ApiError, ApiResult};
use crate::operations::deployments::{self as ops, PatchRequest};
use crate::request::{BodyCall, Call};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use compat::{ErrorItem, Loc};
use serde_json::{json, Value};
use store::{Deployment, DeploymentFilter, RevisionFilter};
use uuid::Uuid;

use output::{revision_json, to_json};

/// `tracked_packages` from newer clients: kept when it is a list of strings.
fn tracked_packages(call: &BodyCall) -> Option<Value> {
    let compat::body::Body::Present(compat::Value::Object(fields)) = &call.body else {
        return None;
    };
    let v = fields.get("tracked_packages")?.to_json();
    v.as_array()
        .filter(|a| a.iter().all(Value::is_string))
        .map(|_| v.clone())
}

pub async fn create(State(app): State<AppState>, call: BodyCall) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let req = call.body_schema(&models::CREATE, &mut errs);
    let req = models::typed(ApiError::validated(errs, req)?)?;
    let d = ops::create(&app, &call.tenant, req, tracked_packages(&call)).await?;
    Ok(json_response(StatusCode::CREATED, &to_json(&app, &d)?))
}

pub async fn list(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let paging = call.paging(&mut errs);
    let remote_reconciled = call.query_bool("remote_reconciled", &mut errs);
    let deployment_type = match call.query.get("deployment_type") {
        None => Some(None),
        Some(raw) => compat::validate::literal(
            &compat::Value::Str(raw.to_owned()),
            Loc::new("query").key("deployment_type"),
            &mut errs,
            models::DEPLOYMENT_TYPES,
        )
        .map(|t| Some(t.to_owned())),
    };
    let ((window, offset), (remote_reconciled, deployment_type)) =
        ApiError::validated(errs, paging.zip(remote_reconciled.zip(deployment_type)))?;
    // Ids that are not UUIDs match nothing (the reference does not validate them).
    let ids = call.query_str("deployment_ids").map(|raw| {
        raw.split(',')
            .filter_map(|s| Uuid::parse_str(s.trim()).ok())
            .collect::<Vec<_>>()
    });
    let filter = DeploymentFilter {
        name: call.query_str("name"),
        name_contains: call.query_str("name_contains"),
        status: call.query_str("status"),
        remote_reconciled,
        image_version: call.query_str("image_version"),
        deployment_type,
        ids,
    };
    let items = ops::list(&app, &call.tenant, &filter, window).await?;
    let resources = items
        .iter()
        .map(|d| body(&app, d))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(crate::Page::response(resources, offset))
}

/// The deployment named by the path of an operation that takes nothing else.
pub(crate) async fn load_deployment(app: &AppState, call: &Call) -> ApiResult<Deployment> {
    let mut errs = Vec::new();
    let id = call.path_uuid("deployment_id", &mut errs);
    let id = ApiError::validated(errs, id)?;
    ops::get(app, &call.tenant, id).await
}

pub async fn get(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let id = call.path_uuid("deployment_id", &mut errs);
    let id = ApiError::validated(errs, id)?;
    // The current version first: a body already rendered at it needs nothing more
    // ([`crate::bodies`]).
    let version = ops::version(&app, &call.tenant, id).await?;
    if let Some(known) = app.bodies.known(id, version) {
        return Ok(json_response(StatusCode::OK, &known));
    }
    let d = ops::get(&app, &call.tenant, id).await?;
    Ok(json_response(StatusCode::OK, &body(&app, &d)?))
}

/// The deployment's JSON, rendered once per version ([`crate::bodies`]).
fn body(app: &AppState, d: &Deployment) -> ApiResult<std::sync::Arc<serde_json::value::RawValue>> {
    app.bodies.get(d.id, d.updated_at, || to_json(app, d))
}

pub async fn patch(State(app): State<AppState>, call: BodyCall) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let id = call.path_uuid("deployment_id", &mut errs);
    let req = call.body_schema(&models::PATCH, &mut errs);
    let (id, req) = ApiError::validated(errs, id.zip(req))?;
    let req: PatchRequest = models::typed(req)?;
    let saved = ops::patch(&app, &call.tenant, id, &req, &tracked_packages(&call)).await?;
    Ok(json_response(StatusCode::OK, &to_json(&app, &saved)?))
}

pub async fn delete(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let id = call.path_uuid("deployment_id", &mut errs);
    let _delete_tracing_project = call.query_bool("delete_tracing_project", &mut errs);
    let force = call.query_bool("force", &mut errs);
    let (id, force) = ApiError::validated(errs, id.zip(force))?;
    ops::delete(&app, &call.tenant, id, force.unwrap_or(false)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /v2/deployments?deployment_ids=...`: at most 100 ids, each reported.
pub async fn delete_many(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let loc = Loc::new("query").key("deployment_ids");
    let raw: Vec<&str> = call.query.get_all("deployment_ids").collect();
    let mut ids = Vec::new();
    if raw.is_empty() {
        errs.push(ErrorItem::missing(loc.clone(), compat::Value::Null));
    }
    // As in pydantic, a list that is too long fails on its length alone, before (and
    // instead of) its items.
    if raw.len() > 100 {
        errs.push(
            ErrorItem::new(
                "too_long",
                loc,
                format!(
                    "List should have at most 100 items after validation, not {}",
                    raw.len()
                ),
                compat::Value::List(
                    raw.iter()
                        .map(|s| compat::Value::Str((*s).to_owned()))
                        .collect(),
                ),
            )
            .with_ctx(json!({"field_type": "List", "max_length": 100, "actual_length": raw.len()})),
        );
    } else {
        for (i, r) in raw.iter().enumerate() {
            if let Some(u) = compat::validate::uuid_text(r, loc.index(i), &mut errs) {
                ids.push(u);
            }
        }
    }
    ApiError::check(errs)?;
    let mut unique = Vec::new();
    for id in ids {
        if !unique.contains(&id) {
            unique.push(id);
        }
    }
    let mut deleted = Vec::new();
    let mut failed = Vec::new();
    for id in &unique {
        match ops::delete(&app, &call.tenant, *id, false).await {
            Ok(()) => deleted.push(json!(id)),
            Err(ApiError::NotFound(detail)) => failed.push(json!({"id": id, "detail": detail})),
            Err(e) => return Err(e),
        }
    }
    if deleted.is_empty() {
        return Err(ops::not_found(unique[0]));
    }
    let status = if failed.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    Ok(json_response(
        status,
        &json!({ "deleted": deleted, "failed": failed }),
    ))
}

pub async fn list_revisions(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let id = call.path_uuid("deployment_id", &mut errs);
    let paging = call.paging(&mut errs);
    let remote_reconciled = call.query_bool("remote_reconciled", &mut errs);
    let (id, ((window, offset), remote_reconciled)) =
        ApiError::validated(errs, id.zip(paging.zip(remote_reconciled)))?;
    let statuses = call.query_str("status").map(|s| {
        s.split(',')
            .map(|x| x.trim().to_owned())
            .filter(|x| !x.is_empty())
            .collect()
    });
    let filter = RevisionFilter {
        statuses,
        remote_reconciled,
    };
    let items = ops::revisions(&app, &call.tenant, id, &filter, window).await?;
    let resources: Vec<_> = items.iter().map(revision_json).collect();
    Ok(crate::Page::response(resources, offset))
}

pub async fn get_revision(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let id = call.path_uuid("deployment_id", &mut errs);
    let rid = call.path_uuid("revision_id", &mut errs);
    let (id, rid) = ApiError::validated(errs, id.zip(rid))?;
    let (_, r) = ops::revision(&app, &call.tenant, id, rid).await?;
    Ok(json_response(StatusCode::OK, &revision_json(&r)))
}

/// A new revision with an older revision's source and configuration.
pub async fn redeploy(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let id = call.path_uuid("deployment_id", &mut errs);
    let rid = call.path_uuid("revision_id", &mut errs);
    let (id, rid) = ApiError::validated(errs, id.zip(rid))?;
    let saved = ops::redeploy(&app, &call.tenant, id, rid).await?;
    Ok(json_response(StatusCode::OK, &to_json(&app, &saved)?))
}
