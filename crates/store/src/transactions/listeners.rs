//! Listeners.

use crate::records::*;
use crate::rows::{listener, Columns, LISTENER_COLUMNS};
use crate::sql::{query, work, Backend, Conn};
use crate::{now_micros, ListenerStore, Result, StoreError};
use async_trait::async_trait;
use uuid::Uuid;

/// Inserts a listener in one statement, so its creation time is taken under the lock
/// its writer holds: creation times grow in commit order, and a page, once read, never
/// gains an older row.
pub(crate) async fn insert<C: Conn>(c: &mut C, new: &NewListener) -> Result<Listener> {
    let sql = format!(
        "INSERT INTO listeners ({LISTENER_COLUMNS}) \
         SELECT $1, $2, $3, $4, $5, $6, t, t FROM \
           (SELECT {greatest}($7, COALESCE((SELECT MAX(created_at) FROM listeners \
            WHERE workspace_id = $2), 0) + 1) AS t) s \
         RETURNING {LISTENER_COLUMNS}",
        greatest = c.dialect().greatest()
    );
    let q = query(sql)
        .bind(Uuid::new_v4())
        .bind(new.workspace_id)
        .bind(&new.compute_type)
        .bind(&new.compute_id)
        .bind(&new.version)
        .bind(namespaces_to_text(&new.k8s_namespaces))
        .bind(now_micros());
    listener(&c.fetch_one(q).await?)
}

fn id(r: &dyn Columns) -> Result<Uuid> {
    r.uuid("id")
}

#[async_trait]
impl<B: Backend> ListenerStore for B {
    async fn create_listener(&self, new: NewListener) -> Result<Listener> {
        Backend::create_listener(self, new).await
    }

    async fn list_listeners(&self, workspace: Uuid, window: Window) -> Result<Vec<Listener>> {
        let q = query(format!(
            "SELECT {LISTENER_COLUMNS} FROM listeners WHERE workspace_id = $1 \
             ORDER BY created_at, id LIMIT $2 OFFSET $3"
        ));
        self.read(
            q.bind(workspace).bind(window.limit).bind(window.offset),
            listener,
        )
        .await
    }

    async fn get_listener(&self, workspace: Uuid, id: Uuid) -> Result<Option<Listener>> {
        let q = query(format!(
            "SELECT {LISTENER_COLUMNS} FROM listeners WHERE id = $1 AND workspace_id = $2"
        ));
        self.read_one(q.bind(id).bind(workspace), listener).await
    }

    async fn listener_versions(
        &self,
        workspace: Uuid,
        window: Window,
    ) -> Result<Vec<(Uuid, chrono::DateTime<chrono::Utc>)>> {
        let q = query(
            "SELECT id, updated_at FROM listeners WHERE workspace_id = $1 \
             ORDER BY created_at, id LIMIT $2 OFFSET $3",
        );
        self.read(
            q.bind(workspace).bind(window.limit).bind(window.offset),
            |r| Ok((r.uuid("id")?, r.time("updated_at")?)),
        )
        .await
    }

    async fn listeners_by_ids(&self, workspace: Uuid, ids: &[Uuid]) -> Result<Vec<Listener>> {
        let q = query(format!(
            "SELECT {LISTENER_COLUMNS} FROM listeners WHERE workspace_id = $1 AND id {}",
            B::Conn::DIALECT.any("$2")
        ));
        self.read(q.bind(workspace).bind(ids), listener).await
    }

    async fn find_listener(&self, id: Uuid) -> Result<Option<Listener>> {
        let q = query(format!(
            "SELECT {LISTENER_COLUMNS} FROM listeners WHERE id = $1"
        ));
        self.read_one(q.bind(id), listener).await
    }

    async fn listener_ids(&self, workspace: Uuid) -> Result<Vec<Uuid>> {
        let q = query("SELECT id FROM listeners WHERE workspace_id = $1 ORDER BY created_at, id");
        self.read(q.bind(workspace), id).await
    }

    async fn oldest_listener(&self, workspace: Uuid) -> Result<Option<Uuid>> {
        let q = query(
            "SELECT id FROM listeners WHERE workspace_id = $1 ORDER BY created_at, id LIMIT 1",
        );
        self.read_one(q.bind(workspace), id).await
    }

    async fn patch_listener(
        &self,
        workspace: Uuid,
        id: Uuid,
        patch: ListenerPatch,
    ) -> Result<Option<Listener>> {
        let sql = format!(
            "UPDATE listeners SET \
               version = COALESCE($1, version), \
               k8s_namespaces = CASE WHEN $2 THEN $3 ELSE k8s_namespaces END, \
               {} WHERE id = $5 AND workspace_id = $6 RETURNING {LISTENER_COLUMNS}",
            B::Conn::DIALECT.advance("updated_at", "$4")
        );
        let q = query(sql)
            .bind(&patch.version)
            .bind(patch.k8s_namespaces.is_some())
            .bind(patch.k8s_namespaces.as_ref().and_then(namespaces_to_text))
            .bind(now_micros())
            .bind(id)
            .bind(workspace);
        let row = self
            .run(work(move |c: &mut B::Conn| {
                Box::pin(
                    async move { c.fetch_optional(q).await?.map(|r| listener(&r)).transpose() },
                )
            }))
            .await?;
        Ok(row)
    }

    async fn delete_listener(&self, workspace: Uuid, id: Uuid) -> Result<bool> {
        self.write(work(move |c: &mut B::Conn| {
            Box::pin(async move {
                let q = query("DELETE FROM listeners WHERE id = $1 AND workspace_id = $2");
                let done = c
                    .execute(q.bind(id).bind(workspace))
                    .await
                    .map_err(|e| match e {
                        // Deployments still point at it.
                        StoreError::NotFound => StoreError::InUse,
                        other => other,
                    })?;
                if done == 0 {
                    // Not the caller's listener (or none): no key and no poller is touched.
                    return Ok((false, Vec::new()));
                }
                // Its keys go with it.
                let q = query(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) \
                     WHERE listener_id = $2",
                );
                c.execute(q.bind(now_micros()).bind(id)).await?;
                // Its pollers wake and find it gone.
                Ok((true, vec![(id, i64::MAX)]))
            })
        }))
        .await
    }
}
