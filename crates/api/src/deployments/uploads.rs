//! Source tarball uploads (`upload-url`, then a `PUT` to hostplane itself) and registry
//! push tokens (`push-token`, see `crate::registry`): the routes the official CLI calls for builds.

use super::load_deployment;
use crate::error::{json_response, ApiError, ApiResult};
use crate::operations::uploads::{
    owner_only_dir, MAX_OUTSTANDING_UPLOADS, OBJECT_PREFIX, PARTIAL_SUFFIX, UPLOAD_TTL,
};
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
    let issued = app
        .store
        .create_upload(
            id,
            &token_hash(&token),
            &object_path,
            chrono::Utc::now() + UPLOAD_TTL,
            MAX_OUTSTANDING_UPLOADS,
        )
        .await?;
    if !issued {
        return Err(ApiError::TooManyRequests(format!(
            "This deployment already has {MAX_OUTSTANDING_UPLOADS} upload URLs that are neither \
             used nor expired; use one, or wait until they expire ({} minutes after issue).",
            UPLOAD_TTL.num_minutes()
        )));
    }
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
/// workspace's quota. Room in the quota is held atomically before the first byte is
/// written (the announced length, else what is left up to the size limit), so parallel
/// uploads cannot pass it together; it is given back whatever ends the request short of
/// completion, as is the partial file.
pub async fn put_upload(
    State(app): State<AppState>,
    Path(token): Path<String>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let hash = token_hash(&token);
    let quota = app.config.upload_quota_bytes;
    let max = app.config.max_upload_bytes;
    let announced = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let room = store::UploadRoom {
        quota: as_i64(quota),
        want: as_i64(announced.unwrap_or(max).min(max)),
        need: as_i64(announced.unwrap_or(1).min(max)),
        until: chrono::Utc::now()
            + chrono::Duration::from_std(app.config.upload_timeout)
                .unwrap_or(chrono::Duration::MAX)
            + chrono::Duration::minutes(1),
    };
    let over_quota = |used: i64| {
        ApiError::PayloadTooLarge(format!(
            "This workspace's uploads are limited to {quota} bytes in all; {used} are in use."
        ))
    };
    let unavailable =
        || ApiError::Forbidden("This upload URL is unknown, expired or already used.".into());
    let (object_path, held, used) = match app.store.reserve_upload(&hash, room).await? {
        store::Reservation::Unavailable => return Err(unavailable()),
        store::Reservation::NoRoom { used } => return Err(over_quota(used)),
        store::Reservation::Held {
            object_path,
            bytes,
            used,
            ..
        } => (object_path, u64::try_from(bytes).unwrap_or(0), used),
    };
    let reservation = Held(Some((app.store.clone(), hash.clone())));
    let too_large = || {
        if held < max {
            over_quota(used)
        } else {
            ApiError::PayloadTooLarge(format!("Uploads are limited to {max} bytes."))
        }
    };
    let written = async {
        if announced.is_some_and(|n| n > held) {
            return Err(too_large());
        }
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
            reservation.release().await;
            return Err(e);
        }
    };
    match app.store.complete_upload(&hash, size as i64).await {
        Ok(()) => reservation.completed(),
        Err(StoreError::Conflict) => return Err(unavailable()),
        Err(e) => return Err(e.into()),
    }
    tokio::fs::rename(&partial.0, &final_path)
        .await
        .map_err(io_error)?;
    Ok(StatusCode::OK.into_response())
}

/// Quota held for an upload being written: given back by [`Held::release`] when the
/// upload fails, or when dropped before it completed (a client that goes away, the time
/// limit: then just after the request ends).
struct Held(Option<(std::sync::Arc<dyn store::Store>, String)>);

impl Held {
    fn completed(mut self) {
        self.0 = None;
    }

    async fn release(mut self) {
        if let Some((store, hash)) = self.0.take() {
            if let Err(e) = store.release_upload(&hash).await {
                // The hold ends by itself at its deadline.
                tracing::warn!(error = %e, "could not release an upload's quota");
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(hold) = self.0.take() {
            tokio::spawn(Held(Some(hold)).release());
        }
    }
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
