//! Source tarball uploads (`upload-url`, then a `PUT` to hostplane itself) and registry
//! push tokens (`push-token`, see `crate::registry`): the routes the official CLI calls for builds.

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
/// Upload URLs of one deployment that may be outstanding (issued, unused, unexpired).
pub const MAX_OUTSTANDING_UPLOADS: i64 = 10;

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

const PARTIAL_SUFFIX: &str = ".partial";

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

/// Creates `dir` and its missing parents readable by the owner only.
pub async fn owner_only_dir(dir: &std::path::Path) -> std::io::Result<()> {
    tokio::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .await
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

/// Removes the uploaded tarballs of a deployment that is gone.
/// Opens a stored tarball by its object path; `None` for a path that is not one of
/// hostplane's uploads or whose file is gone.
pub async fn open_stored(app: &AppState, object_path: &str) -> Option<tokio::fs::File> {
    let plain = object_path.starts_with(OBJECT_PREFIX)
        && std::path::Path::new(object_path)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain {
        return None;
    }
    tokio::fs::File::open(app.config.storage_dir.join(object_path))
        .await
        .ok()
}

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

/// Removes what no upload needs any more from `storage_dir`: partial files not written
/// to for `stale_partial` (a replica sharing the folder may be writing fresher ones),
/// files of uploads that expired unused or were completed before `unused_grace` ago and
/// are named by no revision, and files no upload knows of. Returns the files removed.
pub async fn collect_garbage(
    store: &dyn store::Store,
    storage_dir: &std::path::Path,
    stale_partial: std::time::Duration,
    unused_grace: std::time::Duration,
) -> std::io::Result<usize> {
    let root = storage_dir.join(OBJECT_PREFIX);
    let unused_since = chrono::Utc::now()
        - chrono::Duration::from_std(unused_grace).unwrap_or(chrono::Duration::MAX);
    let mut removed = 0;
    let mut dirs = match tokio::fs::read_dir(&root).await {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    while let Some(dir) = dirs.next_entry().await? {
        let mut files = match tokio::fs::read_dir(dir.path()).await {
            Ok(f) => f,
            Err(_) => continue, // not a folder, or gone meanwhile
        };
        let mut left = 0;
        while let Some(file) = files.next_entry().await? {
            let name = file.file_name().to_string_lossy().into_owned();
            let garbage = if name.ends_with(PARTIAL_SUFFIX) {
                let age = file
                    .metadata()
                    .await?
                    .modified()?
                    .elapsed()
                    .unwrap_or_default();
                age >= stale_partial
            } else {
                let object_path = format!(
                    "{OBJECT_PREFIX}{}/{name}",
                    dir.file_name().to_string_lossy()
                );
                match store.collect_upload(&object_path, unused_since).await {
                    Ok(gone) => gone,
                    Err(e) => {
                        tracing::warn!(error = %e, "upload garbage collection stopped");
                        return Ok(removed);
                    }
                }
            };
            if garbage && tokio::fs::remove_file(file.path()).await.is_ok() {
                removed += 1;
            } else {
                left += 1;
            }
        }
        if left == 0 {
            // Fails harmlessly when an upload started in it meanwhile.
            let _ = tokio::fs::remove_dir(dir.path()).await;
        }
    }
    Ok(removed)
}

/// Runs [`collect_garbage`] at start and then every ten minutes, for the life of the
/// process: partial files are stale after the upload time limit, unused uploads after a
/// day.
pub fn spawn_janitor(
    app_store: std::sync::Arc<dyn store::Store>,
    storage_dir: std::path::PathBuf,
    upload_timeout: std::time::Duration,
) {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(600);
    const UNUSED_GRACE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
    tokio::spawn(async move {
        loop {
            match collect_garbage(&*app_store, &storage_dir, upload_timeout, UNUSED_GRACE).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "removed unused upload files"),
                Err(e) => tracing::warn!(error = %e, "upload garbage collection failed"),
            }
            tokio::time::sleep(EVERY).await;
        }
    });
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
