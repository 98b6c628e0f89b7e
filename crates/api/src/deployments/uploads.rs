//! Source tarball uploads (`upload-url`, then a `PUT` to hostplane itself) and registry
//! push tokens (`push-token`, see `crate::registry`): the routes the official CLI calls for builds.

use super::load_deployment;
use crate::error::{json_response, ApiError, ApiResult};
use crate::operations::uploads::{self, owner_only_dir, PARTIAL_SUFFIX};
use crate::request::Call;
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

/// `POST /v2/deployments/{id}/upload-url`: a signed, expiring, single-use URL on this
/// server that accepts one gzip tarball.
pub async fn upload_url(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let d = load_deployment(&app, &call).await?;
    let (token, object_path) = uploads::issue(&app, &d).await?;
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
/// memory), refusing anything that is not gzip, over the size limit or over the
/// workspace's quota. Room in the quota is held before the first byte is written
/// ([`uploads::hold`]) and given back whatever ends the request short of completion, as
/// is the partial file.
pub async fn put_upload(
    State(app): State<AppState>,
    Path(token): Path<String>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let announced = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let hold = uploads::hold(&app, &token, announced).await?;
    let (object_path, held) = (hold.object_path.clone(), hold.bytes);
    let too_large = || hold.too_large();
    let written = async {
        let final_path = app.config.storage_dir.join(&object_path);
        let dir = final_path
            .parent()
            .ok_or_else(|| ApiError::Internal(format!("no folder for {object_path}")))?
            .to_owned();
        owner_only_dir(&dir).await.map_err(io_error)?;
        let partial = PartialFile(dir.join(format!(".{}{PARTIAL_SUFFIX}", Uuid::new_v4())));
        let size = stream_to_file(body, &partial.0, held, too_large).await?;
        Ok((partial, final_path, size))
    }
    .await;
    let (partial, final_path, size) = match written {
        Ok(done) => done,
        Err(e) => {
            // Given back before the answer, so that the URL works again at once.
            hold.release().await;
            return Err(e);
        }
    };
    hold.complete(size).await?;
    tokio::fs::rename(&partial.0, &final_path)
        .await
        .map_err(io_error)?;
    Ok(StatusCode::OK.into_response())
}

/// An upload being written: removed when dropped, which is on every path (an error, a
/// client that goes away, the time limit), and a no-op once it was renamed into place.
struct PartialFile(std::path::PathBuf);

impl Drop for PartialFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                let path = self.0.display();
                tracing::warn!(error = %e, %path, "could not remove a partial upload");
            }
        }
    }
}

fn io_error(e: std::io::Error) -> ApiError {
    ApiError::Internal(format!("upload storage: {e}"))
}

async fn stream_to_file(
    body: Body,
    path: &std::path::Path,
    limit: u64,
    too_large: impl Fn() -> ApiError,
) -> ApiResult<u64> {
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
            return Err(too_large());
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

/// `POST /v2/deployments/{id}/push-token`: a registry login for the deployment's
/// workspace (see [`crate::registry`]).
pub async fn push_token(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let d = load_deployment(&app, &call).await?;
    if d.source != "internal_docker" {
        return Err(ApiError::BadRequest(
            "push token is only available for 'internal_docker' source deployments".into(),
        ));
    }
    crate::registry::push_token(&app, d.workspace_id, call.tenant.key_id)
}
