//! Uploaded source tarballs in the storage folder: where they live, which paths a
//! revision may name, and what goes when a deployment or an upload is done with.

use crate::error::{ApiError, ApiResult};
use crate::AppState;
use uuid::Uuid;

/// Object paths hostplane issues start with this; only those are checked on PATCH.
pub const OBJECT_PREFIX: &str = "hostplane-uploads/";
/// How long an upload URL stays valid.
pub const UPLOAD_TTL: chrono::Duration = chrono::Duration::minutes(30);
/// Upload URLs of one deployment that may be outstanding (issued, unused, unexpired).
pub const MAX_OUTSTANDING_UPLOADS: i64 = 10;

/// Files being written end with this until they are complete.
pub const PARTIAL_SUFFIX: &str = ".partial";

/// Creates `dir` and its missing parents readable by the owner only.
pub async fn owner_only_dir(dir: &std::path::Path) -> std::io::Result<()> {
    tokio::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .await
}

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
