//! Deployments and their revisions: creating (placement, the rules beyond the schema,
//! sealed secrets), patching under optimistic concurrency, deleting, redeploying, and
//! reading them and their logs, all within the caller's workspace.

mod placement;
pub mod rules;
mod save;

use crate::auth::Tenant;
use crate::error::{ApiError, ApiResult};
use crate::operations::{integrations, uploads};
use crate::AppState;
use serde_json::Value;
use store::lifecycle::DeploymentStatus;
use store::{
    DeleteOutcome, Deployment, DeploymentFilter, LogEntry, LogQuery, Revision, RevisionFilter,
    StoreError, Versioned, Window,
};
use uuid::Uuid;

use placement::{default_listener, place_on_listener};
use save::{merge_fields, new_revision, revision_config, save_with_retries, unless_stale};

/// A create request as validation left it: every value already has its model's shape.
#[derive(Debug, serde::Deserialize)]
pub struct CreateRequest {
    pub name: String,
    pub source: String,
    pub source_config: serde_json::Map<String, serde_json::Value>,
    pub source_revision_config: serde_json::Map<String, serde_json::Value>,
    /// Sealed as sent (a list of `SECRET`s).
    pub secrets: serde_json::Value,
    pub secret_references: Option<serde_json::Value>,
}

/// A patch request as validation left it; `None` is a field absent or null.
#[derive(Debug, serde::Deserialize)]
pub struct PatchRequest {
    pub revision_source: Option<String>,
    pub source_config: Option<serde_json::Map<String, serde_json::Value>>,
    pub source_revision_config: Option<serde_json::Map<String, serde_json::Value>>,
    pub secrets: Option<serde_json::Value>,
    pub secret_references: Option<serde_json::Value>,
}

pub fn not_found(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("Deployment ID {id} not found."))
}

fn revision_not_found(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("Revision ID {id} not found."))
}

/// Creates a deployment and its first revision. `tracked_packages` is kept as sent.
pub async fn create(
    app: &AppState,
    tenant: &Tenant,
    req: CreateRequest,
    tracked_packages: Option<Value>,
) -> ApiResult<Deployment> {
    let CreateRequest {
        name,
        source,
        mut source_config,
        source_revision_config: mut revision,
        secrets,
        secret_references,
    } = req;
    rules::check_name(&name)?;
    rules::check_create(
        &source,
        &source_config,
        &revision,
        secret_references.is_some(),
    )?;
    let id = Uuid::new_v4();
    if let Some(path) = revision.get("source_tarball_path").and_then(Value::as_str) {
        uploads::check_tarball_path(app, id, path).await?;
    }
    let workspace = tenant.workspace_id;
    if source == "github" {
        let commit = integrations::check_github(app, workspace, &source_config, &revision).await?;
        revision.insert(
            "repo_commit_sha".into(),
            commit.map_or(Value::Null, Value::String),
        );
    }
    let listener_id = if source == "external_docker" {
        place_on_listener(app, workspace, &mut source_config).await?
    } else {
        default_listener(app, workspace).await?
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
        tracked_packages,
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
        Ok(d) => Ok(d),
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

pub async fn list(
    app: &AppState,
    tenant: &Tenant,
    filter: &DeploymentFilter,
    window: Window,
) -> ApiResult<Vec<Deployment>> {
    Ok(app
        .store
        .list_deployments(tenant.workspace_id, filter, window)
        .await?)
}

/// The deployment's current version; 404 when it is not the workspace's.
pub async fn version(
    app: &AppState,
    tenant: &Tenant,
    id: Uuid,
) -> ApiResult<chrono::DateTime<chrono::Utc>> {
    app.store
        .version(Versioned::Deployment, tenant.workspace_id, id)
        .await?
        .ok_or_else(|| not_found(id))
}

pub async fn get(app: &AppState, tenant: &Tenant, id: Uuid) -> ApiResult<Deployment> {
    app.store
        .get_deployment(tenant.workspace_id, id)
        .await?
        .ok_or_else(|| not_found(id))
}

/// Applies a patch: fields merged one by one, secrets sealed, and a new revision when
/// what runs changes; retried while other writers get in between.
pub async fn patch(
    app: &AppState,
    tenant: &Tenant,
    id: Uuid,
    req: &PatchRequest,
    tracked: &Option<Value>,
) -> ApiResult<Deployment> {
    let patch_config = req.source_config.as_ref();
    let patch_revision = req.source_revision_config.as_ref();
    let revision_source = req.revision_source.as_deref();
    save_with_retries(move || async move {
        let current = get(app, tenant, id).await?;
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
        let source = revision_source.unwrap_or(&current.source);
        if creates_revision && source == "github" {
            let commit = integrations::current_commit(
                app,
                tenant.workspace_id,
                &next.source_config,
                &next.source_revision_config,
            )
            .await?;
            set_commit(&mut next.source_revision_config, commit);
        }
        let revision = creates_revision.then(|| new_revision(source, &next.source_revision_config));
        let saved = app
            .store
            .save_deployment(next, current.updated_at, revision)
            .await;
        unless_stale(id, saved)
    })
    .await
}

/// Deletes a deployment: at once when no listener runs it (or `force`), else once its
/// listener confirms; its uploaded tarballs go with it.
pub async fn delete(app: &AppState, tenant: &Tenant, id: Uuid, force: bool) -> ApiResult<()> {
    match app
        .store
        .delete_deployment(tenant.workspace_id, id, force)
        .await?
    {
        DeleteOutcome::NotFound => Err(not_found(id)),
        DeleteOutcome::Removed => {
            uploads::remove_files(app, id).await;
            Ok(())
        }
        DeleteOutcome::MarkedForDeletion => Ok(()),
    }
}

/// The revisions of a deployment, newest first.
pub async fn revisions(
    app: &AppState,
    tenant: &Tenant,
    id: Uuid,
    filter: &RevisionFilter,
    window: Window,
) -> ApiResult<Vec<Revision>> {
    app.store
        .list_revisions(tenant.workspace_id, id, filter, window)
        .await?
        .ok_or_else(|| not_found(id))
}

/// A revision of a deployment of the workspace, with its deployment.
pub async fn revision(
    app: &AppState,
    tenant: &Tenant,
    id: Uuid,
    rid: Uuid,
) -> ApiResult<(Deployment, Revision)> {
    let d = get(app, tenant, id).await?;
    let r = app
        .store
        .get_revision(tenant.workspace_id, id, rid)
        .await?
        .ok_or_else(|| revision_not_found(rid))?;
    Ok((d, r))
}

/// Adds a revision with the source and configuration of revision `rid`.
pub async fn redeploy(
    app: &AppState,
    tenant: &Tenant,
    id: Uuid,
    rid: Uuid,
) -> ApiResult<Deployment> {
    save_with_retries(move || async move {
        let (d, r) = revision(app, tenant, id, rid).await?;
        let next = new_revision(&r.source, &r.source_revision_config);
        let saved = app
            .store
            .save_deployment(d.clone(), d.updated_at, Some(next))
            .await;
        unless_stale(d.id, saved)
    })
    .await
}

fn set_commit(config: &mut Value, commit: Option<String>) {
    if let Some(c) = config.as_object_mut() {
        c.insert(
            "repo_commit_sha".into(),
            commit.map_or(Value::Null, Value::String),
        );
    }
}

/// A new revision of a `github` deployment building `commit` (a push to its branch);
/// `false` when its newest revision already builds that commit.
pub async fn build_commit(
    app: &AppState,
    workspace: Uuid,
    id: Uuid,
    commit: &str,
) -> ApiResult<bool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let created = &AtomicBool::new(false);
    save_with_retries(move || async move {
        created.store(false, Ordering::Relaxed);
        let d = app
            .store
            .get_deployment(workspace, id)
            .await?
            .ok_or_else(|| not_found(id))?;
        let now = store::RevisionConfig::of(&d.source_revision_config).repo_commit_sha;
        if now.as_deref() == Some(commit) {
            return Ok(Some(d));
        }
        let mut next = d.clone();
        set_commit(&mut next.source_revision_config, Some(commit.to_owned()));
        let revision = new_revision(&d.source, &next.source_revision_config);
        let saved = app
            .store
            .save_deployment(next, d.updated_at, Some(revision))
            .await;
        created.store(saved.is_ok(), Ordering::Relaxed);
        unless_stale(id, saved)
    })
    .await?;
    Ok(created.load(Ordering::Relaxed))
}

/// Log lines of a deployment (of one of its revisions, when the query names one).
pub async fn logs(app: &AppState, tenant: &Tenant, query: &LogQuery) -> ApiResult<Vec<LogEntry>> {
    let id = query.deployment_id;
    if let Some(rid) = query.revision_id {
        revision(app, tenant, id, rid).await?;
    }
    app.store
        .read_logs(tenant.workspace_id, query)
        .await?
        .ok_or_else(|| not_found(id))
}
