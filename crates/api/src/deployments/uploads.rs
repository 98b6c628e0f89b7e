//! Source tarball uploads (`upload-url`, then a `PUT` to hostplane itself) and registry
//! push tokens (`push-token`): the routes the official CLI calls for builds.

use super::load_deployment;
use crate::error::{json_response, ApiError, ApiResult};
use crate::request::Call;
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::json;
use store::StoreError;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

/// Object paths hostplane issues start with this; only those are checked on PATCH.
pub const OBJECT_PREFIX: &str = "hostplane-uploads/";
/// How long an upload URL stays valid.
const UPLOAD_TTL: chrono::Duration = chrono::Duration::minutes(30);

fn token_hash(token: &str) -> String {
    store::hash_key(token)
}

/// `POST /v2/deployments/{id}/upload-url`: a signed, expiring, single-use URL on this
/// server that accepts one gzip tarball.
pub async fn upload_url(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let d = load_deployment(&app, &call).await?;
    let id = d.id;
    if d.source != "internal_source" {
        return Err(ApiError::BadRequest(
            "upload URL is only available for 'internal_source' source deployments".into(),
        ));
    }
    let token = store::generate_key();
    let object_path = format!("{OBJECT_PREFIX}{id}/{}.tar.gz", Uuid::new_v4());
    app.store
        .create_upload(
            id,
            &token_hash(&token),
            &object_path,
            chrono::Utc::now() + UPLOAD_TTL,
        )
        .await?;
    let base = app.config.public_url.trim_end_matches('/');
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "upload_url": format!("{base}/uploads/{token}"),
            "object_path": object_path,
            "upload_headers": { "Content-Type": "application/gzip" },
        }),
    ))
}

/// `PUT /uploads/{token}`: streams the tarball to the storage folder (never whole in
/// memory), refusing anything that is not gzip or is over the size limit.
pub async fn put_upload(
    State(app): State<AppState>,
    Path(token): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let hash = token_hash(&token);
    let (_, object_path) = app.store.find_upload(&hash).await?.ok_or_else(|| {
        ApiError::Forbidden("This upload URL is unknown, expired or already used.".into())
    })?;
    let limit = app.config.max_upload_bytes;
    let final_path = app.config.storage_dir.join(&object_path);
    let dir = final_path.parent().ok_or(ApiError::Internal)?.to_owned();
    owner_only_dir(&dir).await.map_err(io_error)?;
    let partial = dir.join(format!(".{}.partial", Uuid::new_v4()));
    let written = stream_to_file(body, &partial, limit).await;
    let size = match written {
        Ok(size) => size,
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
    };
    match app.store.complete_upload(&hash, size as i64).await {
        Ok(()) => {}
        Err(StoreError::Conflict) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(ApiError::Forbidden(
                "This upload URL is unknown, expired or already used.".into(),
            ));
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e.into());
        }
    }
    tokio::fs::rename(&partial, &final_path)
        .await
        .map_err(io_error)?;
    Ok(StatusCode::OK.into_response())
}

/// Creates `dir` and its missing parents readable by the owner only.
pub async fn owner_only_dir(dir: &std::path::Path) -> std::io::Result<()> {
    tokio::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .await
}

fn io_error(e: std::io::Error) -> ApiError {
    tracing::error!(error = %e, "upload storage error");
    ApiError::Internal
}

async fn stream_to_file(body: Body, path: &std::path::Path, limit: u64) -> ApiResult<u64> {
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await
        .map_err(io_error)?;
    let mut body = body;
    let mut size: u64 = 0;
    let mut head: Vec<u8> = Vec::with_capacity(2);
    while let Some(chunk) = body
        .frame()
        .await
        .map(|f| f.map(|f| f.into_data().unwrap_or_default()))
    {
        let chunk =
            chunk.map_err(|_| ApiError::BadRequest("The upload was interrupted.".into()))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(ApiError::PayloadTooLarge(format!(
                "Uploads are limited to {limit} bytes."
            )));
        }
        if head.len() < 2 {
            head.extend(chunk.iter().take(2 - head.len()));
        }
        file.write_all(&chunk).await.map_err(io_error)?;
    }
    if head != [0x1f, 0x8b] {
        return Err(ApiError::BadRequest(
            "The upload is not a gzip-compressed tarball.".into(),
        ));
    }
    file.sync_all().await.map_err(io_error)?;
    Ok(size)
}

/// Removes the uploaded tarballs of a deployment that is gone.
pub async fn remove_files(app: &AppState, deployment: Uuid) {
    let dir = app
        .config
        .storage_dir
        .join(OBJECT_PREFIX)
        .join(deployment.to_string());
    if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(error = %e, dir = %dir.display(), "could not remove uploaded tarballs");
        }
    }
}

/// A `source_tarball_path` must be a plain relative path (no `.` or `..` segments, no
/// empty segments, no leading `/` or backslashes), so that it cannot name hostplane's own
/// storage in a disguise; one in hostplane's namespace must name an upload issued for
/// this deployment and completed. Other paths refer to storage hostplane does not manage.
pub async fn check_tarball_path(app: &AppState, deployment: Uuid, path: &str) -> ApiResult<()> {
    let field = "'source_revision_config.source_tarball_path'";
    let plain = !path.is_empty()
        && !path.contains(['\\', '\0'])
        && path.split('/').all(|s| !matches!(s, "" | "." | ".."));
    if !plain {
        return Err(ApiError::BadRequest(format!(
            "Source configuration error: {field} '{path}' is not a plain relative object path."
        )));
    }
    if !path.starts_with(OBJECT_PREFIX) || app.store.upload_completed(deployment, path).await? {
        return Ok(());
    }
    Err(ApiError::BadRequest(format!(
        "Source configuration error: {field} '{path}' was not uploaded for this deployment."
    )))
}

/// `POST /v2/deployments/{id}/push-token`: credentials for the operator's registry.
pub async fn push_token(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let d = load_deployment(&app, &call).await?;
    if d.source != "internal_docker" {
        return Err(ApiError::BadRequest(
            "push token is only available for 'internal_docker' source deployments".into(),
        ));
    }
    let registry = app.config.registry.as_ref().ok_or_else(|| {
        ApiError::BadRequest(
            "push token is unavailable: this control plane has no container registry configured (HOSTPLANE_REGISTRY_URL)".into(),
        )
    })?;
    let password = registry.password().map_err(|e| {
        tracing::error!(error = %e, "cannot read the registry token file");
        ApiError::Unavailable("The registry credentials cannot be read right now.".into())
    })?;
    let mut out = json!({ "token": password, "registry_url": registry.url });
    if let Some(user) = &registry.username {
        out["username"] = json!(user);
    }
    Ok(json_response(StatusCode::OK, &out))
}
