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

/// Removes the uploaded (and git-fetched) tarballs of a deployment that is gone.
pub async fn remove_files(app: &AppState, deployment: Uuid) {
    for prefix in [OBJECT_PREFIX, crate::operations::integrations::GIT_PREFIX] {
        let dir = app
            .config
            .storage_dir
            .join(prefix)
            .join(deployment.to_string());
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(error = %e, dir = %dir.display(), "could not remove source tarballs");
            }
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

/// Issues an upload URL for an `internal_source` deployment: the URL's token (its last
/// segment; only its hash is stored) and the object path the tarball will have. At most
/// [`MAX_OUTSTANDING_UPLOADS`] may be outstanding per deployment.
pub async fn issue(app: &AppState, d: &store::Deployment) -> ApiResult<(String, String)> {
    if d.source != "internal_source" {
        return Err(ApiError::BadRequest(
            "upload URL is only available for 'internal_source' source deployments".into(),
        ));
    }
    let token = store::generate_key();
    let object_path = format!("{OBJECT_PREFIX}{}/{}.tar.gz", d.id, Uuid::new_v4());
    let issued = app
        .store
        .create_upload(
            d.id,
            &store::hash_key(&token),
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
    Ok((token, object_path))
}

/// Room held in the workspace's quota for an upload being written: given back by
/// [`Hold::release`] when the upload fails, or when dropped before it completed (a client
/// that goes away, the time limit: then just after the request ends).
pub struct Hold {
    held: Option<(std::sync::Arc<dyn store::Store>, String)>,
    /// Where the tarball goes.
    pub object_path: String,
    /// The most bytes the upload may write.
    pub bytes: u64,
    /// Bytes the workspace's other uploads use or hold.
    used: i64,
    quota: u64,
    max: u64,
}

/// Starts the upload of URL `token`: holds room for `announced` bytes (its
/// Content-Length), else for what is left up to the size limit, atomically per workspace,
/// so that parallel uploads cannot pass the quota together.
pub async fn hold(app: &AppState, token: &str, announced: Option<u64>) -> ApiResult<Hold> {
    let hash = store::hash_key(token);
    let quota = app.config.upload_quota_bytes;
    let max = app.config.max_upload_bytes;
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
    match app.store.reserve_upload(&hash, room).await? {
        store::Reservation::Unavailable => Err(unavailable()),
        store::Reservation::NoRoom { used } => Err(over_quota(quota, used)),
        store::Reservation::Held {
            object_path,
            bytes,
            used,
            ..
        } => {
            let hold = Hold {
                held: Some((app.store.clone(), hash)),
                object_path,
                bytes: u64::try_from(bytes).unwrap_or(0),
                used,
                quota,
                max,
            };
            match announced {
                Some(n) if n > hold.bytes => {
                    let refused = hold.too_large();
                    hold.release().await;
                    Err(refused)
                }
                _ => Ok(hold),
            }
        }
    }
}

fn unavailable() -> ApiError {
    ApiError::Forbidden("This upload URL is unknown, expired or already used.".into())
}

fn over_quota(quota: u64, used: i64) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "This workspace's uploads are limited to {quota} bytes in all; {used} are in use."
    ))
}

impl Hold {
    /// The answer to an upload longer than the room held: the quota's, or the size
    /// limit's when that is what bounds it.
    pub fn too_large(&self) -> ApiError {
        if self.bytes < self.max {
            over_quota(self.quota, self.used)
        } else {
            ApiError::PayloadTooLarge(format!("Uploads are limited to {} bytes.", self.max))
        }
    }

    /// Marks the upload complete with `size` bytes: they count against the quota from
    /// now on, and the URL is used.
    pub async fn complete(mut self, size: u64) -> ApiResult<()> {
        let Some((store, hash)) = self.held.take() else {
            return Ok(());
        };
        match store.complete_upload(&hash, size as i64).await {
            Ok(()) => Ok(()),
            Err(store::StoreError::Conflict) => Err(unavailable()),
            Err(e) => {
                self.held = Some((store, hash));
                Err(e.into())
            }
        }
    }

    /// Gives the room back (the upload failed), before the answer goes out.
    pub async fn release(mut self) {
        if let Some(held) = self.held.take() {
            give_back(held).await;
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            tokio::spawn(give_back(held));
        }
    }
}

async fn give_back((store, hash): (std::sync::Arc<dyn store::Store>, String)) {
    if let Err(e) = store.release_upload(&hash).await {
        // The hold ends by itself at its deadline.
        tracing::warn!(error = %e, "could not release an upload's quota");
    }
}
