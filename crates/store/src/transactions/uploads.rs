//! Uploaded source tarballs: issued URLs, quota holds while a `PUT` runs, completion and
//! garbage collection ([`UploadStore`]).

use crate::records::*;
use crate::rows::Columns;
use crate::sql::{query, work, Backend, Conn};
use crate::{now_micros, Result, StoreError, UploadStore};
use async_trait::async_trait;
use uuid::Uuid;

#[async_trait]
impl<B: Backend> UploadStore for B {
    async fn create_upload(
        &self,
        dep: Uuid,
        token_hash: &str,
        object_path: &str,
        expires_at: chrono::DateTime<chrono::Utc>,
        max_outstanding: i64,
    ) -> Result<bool> {
        let (hash, path) = (token_hash.to_owned(), object_path.to_owned());
        self.transaction(work(move |c: &mut B::Conn| {
            Box::pin(async move {
                let q = query(
                    "SELECT COUNT(*) AS n FROM uploads WHERE deployment_id = $1 \
                 AND completed_at IS NULL AND expires_at > $2",
                );
                let outstanding = c
                    .fetch_one(q.bind(dep).bind(now_micros()))
                    .await?
                    .int("n")?;
                if outstanding >= max_outstanding {
                    return Ok(false);
                }
                let q = query(
                    "INSERT INTO uploads (token_hash, deployment_id, object_path, expires_at) \
                 VALUES ($1, $2, $3, $4)",
                )
                .bind(hash)
                .bind(dep)
                .bind(path)
                .bind(expires_at.timestamp_micros());
                c.execute(q).await?;
                Ok(true)
            })
        }))
        .await
    }

    async fn reserve_upload(&self, token_hash: &str, room: UploadRoom) -> Result<Reservation> {
        let hash = token_hash.to_owned();
        self.transaction(work(move |c: &mut B::Conn| {
            Box::pin(async move {
                let now = now_micros();
                let lock = c.dialect().for_update();
                let sql = format!(
                    "SELECT deployment_id, object_path FROM uploads WHERE token_hash = $1 \
                 AND completed_at IS NULL AND expires_at > $2 \
                 AND (reserved_until IS NULL OR reserved_until <= $2){lock}"
                );
                let Some(row) = c.fetch_optional(query(sql).bind(&hash).bind(now)).await? else {
                    return Ok(Reservation::Unavailable);
                };
                let (deployment, object_path) = crate::rows::upload(&row)?;
                // One reservation at a time per workspace, so that the sum below counts every
                // other hold.
                let sql = format!(
                    "SELECT id FROM workspaces WHERE id = \
                 (SELECT workspace_id FROM deployments WHERE id = $1){lock}"
                );
                c.fetch_all(query(sql).bind(deployment)).await?;
                let q = query(
                    "SELECT CAST(SUM(CASE WHEN u.completed_at IS NOT NULL THEN u.size_bytes \
                   WHEN u.reserved_until > $2 THEN u.reserved_bytes ELSE 0 END) AS BIGINT) \
                   AS used \
                 FROM uploads u JOIN deployments d ON d.id = u.deployment_id \
                 WHERE d.workspace_id = (SELECT workspace_id FROM deployments WHERE id = $1)",
                );
                let used = c
                    .fetch_one(q.bind(deployment).bind(now))
                    .await?
                    .opt_int("used")?
                    .unwrap_or(0);
                let Some(bytes) = room.bytes(used) else {
                    return Ok(Reservation::NoRoom { used });
                };
                let q = query(
                    "UPDATE uploads SET reserved_bytes = $1, reserved_until = $2 \
                 WHERE token_hash = $3",
                );
                c.execute(
                    q.bind(bytes)
                        .bind(room.until.timestamp_micros())
                        .bind(&hash),
                )
                .await?;
                Ok(Reservation::Held {
                    deployment,
                    object_path,
                    bytes,
                    used,
                })
            })
        }))
        .await
    }

    async fn release_upload(&self, token_hash: &str) -> Result<()> {
        let q = query(
            "UPDATE uploads SET reserved_bytes = NULL, reserved_until = NULL \
         WHERE token_hash = $1 AND completed_at IS NULL",
        )
        .bind(token_hash);
        self.execute(q).await?;
        Ok(())
    }

    async fn complete_upload(&self, token_hash: &str, size: i64) -> Result<()> {
        let q = query(
            "UPDATE uploads SET completed_at = $1, size_bytes = $2, reserved_bytes = NULL, \
         reserved_until = NULL WHERE token_hash = $3 AND completed_at IS NULL",
        )
        .bind(now_micros())
        .bind(size)
        .bind(token_hash);
        let done = self.execute(q).await?;
        if done == 0 {
            return Err(StoreError::Conflict);
        }
        Ok(())
    }

    async fn upload_completed(&self, dep: Uuid, object_path: &str) -> Result<bool> {
        let q = query(
            "SELECT token_hash FROM uploads WHERE deployment_id = $1 AND object_path = $2 \
         AND completed_at IS NOT NULL LIMIT 1",
        );
        let found = self
            .read_one(q.bind(dep).bind(object_path), |_| Ok(()))
            .await?;
        Ok(found.is_some())
    }

    async fn collect_upload(
        &self,
        object_path: &str,
        unused_since: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool> {
        let (path, cutoff) = (object_path.to_owned(), unused_since.timestamp_micros());
        self.transaction(work(move |c: &mut B::Conn| {
            Box::pin(async move {
                let named = c
                    .dialect()
                    .json_field("r.source_revision_config", "source_tarball_path");
                let sql = format!(
                    "DELETE FROM uploads WHERE object_path = $1 AND ( \
                   (completed_at IS NULL AND expires_at < $2) OR \
                   (completed_at < $3 AND NOT EXISTS (SELECT 1 FROM revisions r \
                      WHERE r.deployment_id = uploads.deployment_id \
                        AND {named} = uploads.object_path)))"
                );
                c.execute(query(sql).bind(&path).bind(now_micros()).bind(cutoff))
                    .await?;
                let q = query("SELECT COUNT(*) AS n FROM uploads WHERE object_path = $1");
                Ok(c.fetch_one(q.bind(&path)).await?.int("n")? == 0)
            })
        }))
        .await
    }
}
