//! Deployments (v2) and their revisions: every operation of the reference, plus the
//! routes the official CLI calls that the reference leaves out (push-token, upload-url).

pub mod models;
mod output;
mod placement;
pub mod rules;
mod save;
pub mod uploads;

use crate::error::{json_response, ApiError, ApiResult};
use crate::request::{BodyCall, Call};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use compat::{ErrorItem, Loc};
use serde_json::{json, Value};
use store::lifecycle::DeploymentStatus;
use store::{
    DeleteOutcome, Deployment, DeploymentFilter, Revision, RevisionFilter, StoreError, Versioned,
};
use uuid::Uuid;

use output::{revision_json, to_json};
use placement::{default_listener, place_on_listener};
use save::{merge_fields, new_revision, revision_config, save_with_retries, unless_stale};

pub(crate) fn not_found(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("Deployment ID {id} not found."))
}

fn revision_not_found(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("Revision ID {id} not found."))
}

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
    let models::CreateRequest {
        name,
        source,
        mut source_config,
        source_revision_config: revision,
        secrets,
        secret_references,
    } = models::typed(ApiError::validated(errs, req)?)?;

    rules::check_name(&name)?;
    rules::check_create(
        &source,
        &source_config,
        &revision,
        secret_references.is_some(),
    )?;
    let id = Uuid::new_v4();
    if let Some(path) = revision.get("source_tarball_path").and_then(Value::as_str) {
        uploads::check_tarball_path(&app, id, path).await?;
    }
    let workspace = call.tenant.workspace_id;
    let listener_id = if source == "external_docker" {
        place_on_listener(&app, workspace, &mut source_config).await?
    } else {
        default_listener(&app, workspace).await?
    };

    let config = revision_config(revision);
    let first = new_revision(&source, &config);
    let deployment = Deployment {
        id,
        workspace_id: workspace,
        name: name.clone(),
        source,
        deployment_type: source_config
            .get("deployment_type")
            .and_then(Value::as_str)
            .map(str::to_owned),
        source_config: Value::Object(source_config),
        source_revision_config: config,
        secrets: app.secrets.seal(secrets.to_string().as_bytes(), id),
        secret_references,
        tracked_packages: tracked_packages(&call),
        listener_id,
        status: DeploymentStatus::AwaitingDatabase,
        latest_revision_id: None,
        active_revision_id: None,
        image_version: None,
        remote_reconciled: false,
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
    };
    match app.store.create_deployment(deployment, first).await {
        Ok(d) => Ok(json_response(StatusCode::CREATED, &to_json(&app, &d)?)),
        Err(StoreError::Conflict) => Err(ApiError::Conflict(format!(
            "Deployment name '{name}' already exists in LangSmith workspace ID '{workspace}'."
        ))),
        Err(StoreError::NotFound) => Err(rules::source_error(format!(
            "listener ID '{}' not found in LangSmith workspace ID '{workspace}'.",
            listener_id.map(|l| l.to_string()).unwrap_or_default()
        ))),
        Err(e) => Err(e.into()),
    }
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
    let ((limit, db_offset, offset), (remote_reconciled, deployment_type)) =
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
    let items = app
        .store
        .list_deployments(call.tenant.workspace_id, &filter, limit, db_offset)
        .await?;
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
    app.store
        .get_deployment(call.tenant.workspace_id, id)
        .await?
        .ok_or_else(|| not_found(id))
}

pub async fn get(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let id = call.path_uuid("deployment_id", &mut errs);
    let id = ApiError::validated(errs, id)?;
    // The current version first: a body already rendered at it needs nothing more
    // ([`crate::bodies`]).
    let version = app
        .store
        .version(Versioned::Deployment, call.tenant.workspace_id, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    if let Some(known) = app.bodies.known(id, version) {
        return Ok(json_response(StatusCode::OK, &known));
    }
    let d = app
        .store
        .get_deployment(call.tenant.workspace_id, id)
        .await?
        .ok_or_else(|| not_found(id))?;
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
    let req: models::PatchRequest = models::typed(req)?;
    let workspace = call.tenant.workspace_id;
    let patch_config = req.source_config.as_ref();
    let patch_revision = req.source_revision_config.as_ref();
    let revision_source = req.revision_source.as_deref();
    let tracked = tracked_packages(&call);

    let (app, req, tracked) = (&app, &req, &tracked);
    let saved = save_with_retries(move || async move {
        let current = app
            .store
            .get_deployment(workspace, id)
            .await?
            .ok_or_else(|| not_found(id))?;
        rules::check_patch(
            &current.source,
            &current.source_config,
            patch_config,
            patch_revision,
            revision_source.is_some(),
            req.secret_references.is_some(),
        )?;
        if let Some(path) = patch_revision
            .and_then(|r| r.get("source_tarball_path"))
            .and_then(Value::as_str)
        {
            uploads::check_tarball_path(app, id, path).await?;
        }
        let mut next = current.clone();
        merge_fields(&mut next.source_config, patch_config);
        merge_fields(&mut next.source_revision_config, patch_revision);
        if let Some(secrets) = &req.secrets {
            next.secrets = app.secrets.seal(secrets.to_string().as_bytes(), id);
        }
        if req.secret_references.is_some() {
            next.secret_references = req.secret_references.clone();
        }
        if tracked.is_some() {
            next.tracked_packages = tracked.clone();
        }
        let revision_fields_set = patch_revision.is_some_and(|r| r.values().any(|v| !v.is_null()));
        let resource_spec_set = patch_config
            .and_then(|c| c.get("resource_spec"))
            .is_some_and(|v| !v.is_null());
        let creates_revision = revision_fields_set
            || req.secrets.is_some()
            || req.secret_references.is_some()
            || resource_spec_set;
        let revision = creates_revision.then(|| {
            new_revision(
                revision_source.unwrap_or(&current.source),
                &next.source_revision_config,
            )
        });
        let saved = app
            .store
            .save_deployment(next, current.updated_at, revision)
            .await;
        unless_stale(id, saved)
    })
    .await?;
    Ok(json_response(StatusCode::OK, &to_json(app, &saved)?))
}

pub async fn delete(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let id = call.path_uuid("deployment_id", &mut errs);
    let _delete_tracing_project = call.query_bool("delete_tracing_project", &mut errs);
    let force = call.query_bool("force", &mut errs);
    let (id, force) = ApiError::validated(errs, id.zip(force))?;
    delete_one(&app, call.tenant.workspace_id, id, force.unwrap_or(false)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Deletes a deployment of `workspace` (the API's delete and the console's): at once when
/// no listener runs it (or `force`), else once its listener confirms.
pub(crate) async fn delete_one(
    app: &AppState,
    workspace: Uuid,
    id: Uuid,
    force: bool,
) -> ApiResult<()> {
    match app.store.delete_deployment(workspace, id, force).await? {
        DeleteOutcome::NotFound => Err(not_found(id)),
        DeleteOutcome::Removed => {
            uploads::remove_files(app, id).await;
            Ok(())
        }
        DeleteOutcome::MarkedForDeletion => Ok(()),
    }
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
        match app
            .store
            .delete_deployment(call.tenant.workspace_id, *id, false)
            .await?
        {
            DeleteOutcome::NotFound => {
                failed.push(json!({"id": id, "detail": format!("Deployment ID {id} not found.")}))
            }
            DeleteOutcome::Removed => {
                uploads::remove_files(&app, *id).await;
                deleted.push(json!(id));
            }
            DeleteOutcome::MarkedForDeletion => deleted.push(json!(id)),
        }
    }
    if deleted.is_empty() {
        return Err(not_found(unique[0]));
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
    let (id, ((limit, db_offset, offset), remote_reconciled)) =
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
    let items = app
        .store
        .list_revisions(call.tenant.workspace_id, id, &filter, limit, db_offset)
        .await?
        .ok_or_else(|| not_found(id))?;
    let resources: Vec<_> = items.iter().map(revision_json).collect();
    Ok(crate::Page::response(resources, offset))
}

async fn load_revision(app: &AppState, call: &Call) -> ApiResult<(Deployment, Revision)> {
    let mut errs = Vec::new();
    let id = call.path_uuid("deployment_id", &mut errs);
    let rid = call.path_uuid("revision_id", &mut errs);
    let (id, rid) = ApiError::validated(errs, id.zip(rid))?;
    find_revision(app, call.tenant.workspace_id, id, rid).await
}

/// A revision of a deployment of `workspace`, with its deployment.
async fn find_revision(
    app: &AppState,
    workspace: Uuid,
    id: Uuid,
    rid: Uuid,
) -> ApiResult<(Deployment, Revision)> {
    let d = app
        .store
        .get_deployment(workspace, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let r = app
        .store
        .get_revision(workspace, id, rid)
        .await?
        .ok_or_else(|| revision_not_found(rid))?;
    Ok((d, r))
}

pub async fn get_revision(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let (_, r) = load_revision(&app, &call).await?;
    Ok(json_response(StatusCode::OK, &revision_json(&r)))
}

/// A new revision with an older revision's source and configuration.
pub async fn redeploy(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let id = call.path_uuid("deployment_id", &mut errs);
    let rid = call.path_uuid("revision_id", &mut errs);
    let (id, rid) = ApiError::validated(errs, id.zip(rid))?;
    let saved = redeploy_revision(&app, call.tenant.workspace_id, id, rid).await?;
    Ok(json_response(StatusCode::OK, &to_json(&app, &saved)?))
}

/// Adds a revision with the source and configuration of revision `rid` (the API's
/// redeploy and the console's).
pub(crate) async fn redeploy_revision(
    app: &AppState,
    workspace: Uuid,
    id: Uuid,
    rid: Uuid,
) -> ApiResult<Deployment> {
    save_with_retries(move || async move {
        let (d, r) = find_revision(app, workspace, id, rid).await?;
        let revision = new_revision(&r.source, &r.source_revision_config);
        let saved = app
            .store
            .save_deployment(d.clone(), d.updated_at, Some(revision))
            .await;
        unless_stale(d.id, saved)
    })
    .await
}
