//! The PostgreSQL backend: a connection pool; several `hostplane serve` processes on one
//! database behave as one service because every rule is enforced by the database.

use crate::lifecycle::{DeploymentStatus, RevisionStatus};
use crate::records::*;
use crate::rows::{
    api_key, deployment, listener, org, revision, revision_columns_as, workspace, Columns,
    DEPLOYMENT_COLUMNS, LISTENER_COLUMNS, REVISION_COLUMNS,
};
use crate::{now_micros, FirstStart, Result, StoreError, StoreOptions, Versioned};
use async_trait::async_trait;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

mod console;
mod dataplane;
use dataplane::bump_for_deployment;

pub struct PgStore {
    pool: PgPool,
    /// Wake-ups for this replica's desired-state long-polls, fed by `NOTIFY`.
    changes: std::sync::Arc<crate::changes::Changes>,
}

/// The advisory lock that lets one replica at a time run the first-start setup (creates
/// in a workspace lock on a hash of the workspace id instead).
const BOOTSTRAP_LOCK: i64 = 0x686f_7374_0001;

impl PgStore {
    pub async fn open(url: &str, opts: &StoreOptions) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.acquire_timeout)
            // No ping before each use: it doubled the round trips of every read. A
            // connection that died while idle fails its next query (a 503), and sqlx then
            // closes it, so the pool heals after an outage without a restart.
            .test_before_acquire(false)
            .connect(url)
            .await?;
        // sqlx holds an advisory lock while migrating, so replicas may start together.
        sqlx::migrate!("migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Other(format!("migration failed: {e}")))?;
        let changes = std::sync::Arc::<crate::changes::Changes>::default();
        dataplane::follow_notifications(pool.clone(), changes.clone());
        Ok(PgStore { pool, changes })
    }
}

/// Runs `f` in a transaction on a task of its own (see [`crate::detached`]): committed
/// when `f` succeeds, rolled back otherwise, whatever happens to the caller.
async fn in_tx<T, F>(pool: &PgPool, f: F) -> Result<T>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut sqlx::PgConnection) -> crate::BoxFut<'c, Result<T>> + Send + 'static,
{
    let pool = pool.clone();
    crate::detached(async move {
        let mut tx = pool.begin().await?;
        match f(&mut tx).await {
            Ok(value) => {
                tx.commit().await?;
                Ok(value)
            }
            Err(e) => {
                tx.rollback().await?;
                Err(e)
            }
        }
    })
    .await
}

async fn insert_key(
    conn: &mut sqlx::PgConnection,
    scope: KeyScope,
    key_hash: &str,
) -> Result<ApiKey> {
    let (org_id, ws, listener) = scope.columns();
    let row = sqlx::query(
        "INSERT INTO api_keys (id, key_hash, org_id, workspace_id, listener_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         RETURNING id, key_hash, org_id, workspace_id, listener_id, created_at, revoked_at",
    )
    .bind(Uuid::new_v4())
    .bind(key_hash)
    .bind(org_id)
    .bind(ws)
    .bind(listener)
    .bind(now_micros())
    .fetch_one(&mut *conn)
    .await?;
    api_key(&row)
}

#[async_trait]
impl crate::IdentityStore for PgStore {
    async fn insert_first_start(&self, first: &FirstStart) -> Result<Option<Uuid>> {
        let first = first.clone();
        in_tx(&self.pool, move |conn| {
            Box::pin(async move {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(BOOTSTRAP_LOCK)
                    .execute(&mut *conn)
                    .await?;
                let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM organizations")
                    .fetch_one(&mut *conn)
                    .await?;
                if count > 0 {
                    return Ok(None);
                }
                let (org, ws) = (&first.org, &first.workspace);
                sqlx::query(
                    "INSERT INTO organizations (id, name, plan, created_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(org.id)
                .bind(&org.name)
                .bind(org.plan.as_str())
                .bind(org.created_at.timestamp_micros())
                .execute(&mut *conn)
                .await?;
                sqlx::query(
                    "INSERT INTO workspaces (id, org_id, name, created_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(ws.id)
                .bind(org.id)
                .bind(&ws.name)
                .bind(ws.created_at.timestamp_micros())
                .execute(&mut *conn)
                .await?;
                let key = insert_key(conn, first.key_scope(), &first.key_hash).await?;
                Ok(Some(key.id))
            })
        })
        .await
    }

    async fn create_org(&self, name: &str, plan: Plan) -> Result<Org> {
        let row = sqlx::query(
            "INSERT INTO organizations (id, name, plan, created_at) VALUES ($1, \
                               $2, $3, $4) RETURNING *",
        )
        .bind(Uuid::new_v4())
        .bind(name)
        .bind(plan.as_str())
        .bind(now_micros())
        .fetch_one(&self.pool)
        .await?;
        org(&row)
    }

    async fn list_orgs(&self) -> Result<Vec<Org>> {
        let rows = sqlx::query("SELECT * FROM organizations ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(org).collect()
    }

    async fn create_workspace(&self, org_id: Uuid, name: &str) -> Result<Workspace> {
        let row = sqlx::query(
            "INSERT INTO workspaces (id, org_id, name, created_at) VALUES ($1, \
                               $2, $3, $4) RETURNING *",
        )
        .bind(Uuid::new_v4())
        .bind(org_id)
        .bind(name)
        .bind(now_micros())
        .fetch_one(&self.pool)
        .await?;
        workspace(&row)
    }

    async fn list_workspaces(&self, org_id: Option<Uuid>) -> Result<Vec<Workspace>> {
        let rows = sqlx::query(
            "SELECT * FROM workspaces WHERE $1::uuid IS NULL OR org_id = $1 \
                                ORDER BY created_at, id",
        )
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(workspace).collect()
    }

    async fn create_api_key(&self, scope: KeyScope, key_hash: &str) -> Result<ApiKey> {
        if let KeyScope::Workspace {
            org_id,
            workspace_id,
        } = scope
        {
            match self.get_workspace(workspace_id).await? {
                Some((ws, _)) if ws.org_id == org_id => {}
                _ => return Err(StoreError::NotFound),
            }
        }
        let mut conn = self.pool.acquire().await?;
        insert_key(&mut conn, scope, key_hash).await
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(api_key).collect()
    }

    async fn get_api_key(&self, id: Uuid) -> Result<Option<ApiKey>> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(api_key).transpose()
    }

    async fn revoke_api_key(&self, id: Uuid) -> Result<()> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
                .bind(now_micros())
                .bind(id)
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn authenticate(
        &self,
        key_hash: &str,
        requested: Option<Uuid>,
    ) -> Result<Option<(ApiKey, Option<WorkspaceAccess>)>> {
        let row = sqlx::query(
            "SELECT k.id, k.key_hash, k.org_id, k.workspace_id, k.listener_id, k.created_at, \
               k.revoked_at, \
               w.org_id AS ws_org, o.plan AS ws_plan \
             FROM api_keys k \
             LEFT JOIN workspaces w ON w.id = COALESCE(k.workspace_id, $2::uuid) \
             LEFT JOIN organizations o ON o.id = w.org_id \
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
        )
        .bind(key_hash)
        .bind(requested)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(crate::rows::authenticated).transpose()
    }

    async fn get_workspace(&self, id: Uuid) -> Result<Option<(Workspace, Plan)>> {
        let row = sqlx::query(
            "SELECT w.*, o.plan FROM workspaces w JOIN organizations o ON o.id = w.org_id WHERE \
             w.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(crate::rows::workspace_with_plan)
            .transpose()
    }

    fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: self.pool.num_idle(),
            max: self.pool.options().get_max_connections(),
            ..PoolStats::default()
        }
    }

    async fn resource_counts(&self) -> Result<ResourceCounts> {
        let row = sqlx::query(crate::COUNTS_SQL).fetch_one(&self.pool).await?;
        crate::rows::counts(&row)
    }
}

#[async_trait]
impl crate::ListenerStore for PgStore {
    async fn create_listener(&self, new: NewListener) -> Result<Listener> {
        // Creates in one workspace take turns (a transaction-scoped advisory lock), so
        // creation times grow in commit order and a page, once read, never gains an
        // older row, across every replica.
        in_tx(&self.pool, move |conn| {
            Box::pin(async move {
                sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))")
                    .bind(new.workspace_id)
                    .execute(&mut *conn)
                    .await?;
                let sql = format!(
                    "INSERT INTO listeners ({LISTENER_COLUMNS}) \
                     SELECT $1, $2, $3, $4, $5, $6, t, t FROM \
                       (SELECT GREATEST($7, COALESCE((SELECT MAX(created_at) FROM listeners WHERE \
                       workspace_id = $2), 0) + 1) AS t) s \
                     RETURNING {LISTENER_COLUMNS}"
                );
                let row = sqlx::query(&sql)
                    .bind(Uuid::new_v4())
                    .bind(new.workspace_id)
                    .bind(&new.compute_type)
                    .bind(&new.compute_id)
                    .bind(&new.version)
                    .bind(namespaces_to_text(&new.k8s_namespaces))
                    .bind(now_micros())
                    .fetch_one(&mut *conn)
                    .await?;
                listener(&row)
            })
        })
        .await
    }

    async fn list_listeners(
        &self,
        workspace: Uuid,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Listener>> {
        let sql = format!(
            "SELECT {LISTENER_COLUMNS} FROM listeners WHERE workspace_id = $1 \
             ORDER BY created_at, id LIMIT $2 OFFSET $3"
        );
        let rows = sqlx::query(&sql)
            .bind(workspace)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(listener).collect()
    }

    async fn get_listener(&self, workspace: Uuid, id: Uuid) -> Result<Option<Listener>> {
        let sql =
            format!("SELECT {LISTENER_COLUMNS} FROM listeners WHERE id = $1 AND workspace_id = $2");
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(workspace)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(listener).transpose()
    }

    async fn listener_versions(
        &self,
        workspace: Uuid,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<(Uuid, chrono::DateTime<chrono::Utc>)>> {
        let rows = sqlx::query(
            "SELECT id, updated_at FROM listeners WHERE workspace_id = $1 \
             ORDER BY created_at, id LIMIT $2 OFFSET $3",
        )
        .bind(workspace)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.uuid("id")?, r.time("updated_at")?)))
            .collect()
    }

    async fn listeners_by_ids(&self, workspace: Uuid, ids: &[Uuid]) -> Result<Vec<Listener>> {
        let sql = format!(
            "SELECT {LISTENER_COLUMNS} FROM listeners WHERE workspace_id = $1 AND id = ANY($2)"
        );
        let rows = sqlx::query(&sql)
            .bind(workspace)
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(listener).collect()
    }

    async fn find_listener(&self, id: Uuid) -> Result<Option<Listener>> {
        let sql = format!("SELECT {LISTENER_COLUMNS} FROM listeners WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(listener).transpose()
    }

    async fn listener_ids(&self, workspace: Uuid) -> Result<Vec<Uuid>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM listeners WHERE workspace_id = $1 ORDER BY created_at, id",
        )
        .bind(workspace)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn oldest_listener(&self, workspace: Uuid) -> Result<Option<Uuid>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM listeners WHERE workspace_id = $1 ORDER BY created_at, id LIMIT 1",
        )
        .bind(workspace)
        .fetch_optional(&self.pool)
        .await?)
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
               updated_at = GREATEST($4, updated_at + 1) \
             WHERE id = $5 AND workspace_id = $6 RETURNING {LISTENER_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(&patch.version)
            .bind(patch.k8s_namespaces.is_some())
            .bind(patch.k8s_namespaces.as_ref().and_then(namespaces_to_text))
            .bind(now_micros())
            .bind(id)
            .bind(workspace)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(listener).transpose()
    }

    async fn delete_listener(&self, workspace: Uuid, id: Uuid) -> Result<bool> {
        self.write(move |conn| {
            Box::pin(async move {
                let done = sqlx::query("DELETE FROM listeners WHERE id = $1 AND workspace_id = $2")
                    .bind(id)
                    .bind(workspace)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| match StoreError::from(e) {
                        // Deployments still point at it.
                        StoreError::NotFound => StoreError::InUse,
                        other => other,
                    })?;
                if done.rows_affected() == 0 {
                    // Not the caller's listener (or none): no key and no poller is touched.
                    return Ok((false, Vec::new()));
                }
                // Its keys go with it.
                sqlx::query(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) \
                     WHERE listener_id = $2",
                )
                .bind(now_micros())
                .bind(id)
                .execute(&mut *conn)
                .await?;
                // Its pollers wake and find it gone.
                Ok((true, vec![(id, i64::MAX)]))
            })
        })
        .await
    }
}

async fn insert_revision(
    conn: &mut sqlx::PgConnection,
    deployment_id: Uuid,
    rev: &NewRevision,
    now: i64,
) -> Result<Uuid> {
    // Older revisions still waiting are superseded.
    let superseded = format!(
        "UPDATE revisions SET status = $3, updated_at = GREATEST($1, updated_at + 1) \
         WHERE deployment_id = $2 AND status IN ({})",
        RevisionStatus::superseded_sql()
    );
    sqlx::query(&superseded)
        .bind(now)
        .bind(deployment_id)
        .bind(RevisionStatus::Skipped.as_str())
        .execute(&mut *conn)
        .await?;
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO revisions (id, deployment_id, source, source_revision_config, status, \
         remote_reconciled, created_at, updated_at) \
         SELECT $1, $2, $3, $4, $5, (SELECT listener_id IS NOT NULL FROM deployments WHERE id = \
         $2), t, t FROM \
           (SELECT GREATEST($6, COALESCE((SELECT MAX(created_at) FROM revisions WHERE \
           deployment_id = $2), 0) + 1) AS t) s",
    )
    .bind(id)
    .bind(deployment_id)
    .bind(&rev.source)
    .bind(json_text(&rev.source_revision_config))
    .bind(rev.status.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE deployments SET latest_revision_id = $1 WHERE id = $2")
        .bind(id)
        .bind(deployment_id)
        .execute(&mut *conn)
        .await?;
    Ok(id)
}

async fn deployment_by_id(conn: &mut sqlx::PgConnection, id: Uuid) -> Result<Deployment> {
    let sql = format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = $1");
    let row = sqlx::query(&sql).bind(id).fetch_one(&mut *conn).await?;
    deployment(&row)
}

#[async_trait]
impl crate::DeploymentStore for PgStore {
    async fn create_deployment(&self, new: Deployment, first: NewRevision) -> Result<Deployment> {
        self.write(move |conn| {
            Box::pin(async move {
                // Creates in a workspace take turns so creation times follow commit order.
                sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 1))")
                    .bind(new.workspace_id)
                    .execute(&mut *conn)
                    .await?;
                let now = now_micros();
                let sql = format!(
                    "INSERT INTO deployments ({DEPLOYMENT_COLUMNS}) \
                     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL, NULL, NULL, \
                     $11::uuid IS NOT NULL, t, t FROM \
                       (SELECT GREATEST($13, COALESCE((SELECT MAX(created_at) FROM deployments \
                       WHERE workspace_id = $2), 0) + 1) AS t) s"
                );
                sqlx::query(&sql)
                    .bind(new.id)
                    .bind(new.workspace_id)
                    .bind(&new.name)
                    .bind(&new.source)
                    .bind(json_text(&new.source_config))
                    .bind(json_text(&new.source_revision_config))
                    .bind(&new.secrets)
                    .bind(new.secret_references.as_ref().map(json_text))
                    .bind(new.tracked_packages.as_ref().map(json_text))
                    .bind(&new.deployment_type)
                    .bind(new.listener_id)
                    .bind(new.status.as_str())
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                insert_revision(conn, new.id, &first, now).await?;
                let bumps = bump_for_deployment(conn, new.id).await?;
                Ok((deployment_by_id(conn, new.id).await?, bumps))
            })
        })
        .await
    }

    async fn list_deployments(
        &self,
        workspace: Uuid,
        f: &DeploymentFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Deployment>> {
        let sql = format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE workspace_id = $1 \
               AND ($2::text IS NULL OR name = $2) \
               AND ($3::text IS NULL OR strpos(name, $3) > 0) \
               AND ($4::text IS NULL OR status = $4) \
               AND ($5::boolean IS NULL OR remote_reconciled = $5) \
               AND ($6::text IS NULL OR image_version = $6) \
               AND ($7::text IS NULL OR deployment_type = $7) \
               AND ($8::uuid[] IS NULL OR id = ANY($8)) \
             ORDER BY created_at, id LIMIT $9 OFFSET $10"
        );
        let rows = sqlx::query(&sql)
            .bind(workspace)
            .bind(&f.name)
            .bind(&f.name_contains)
            .bind(&f.status)
            .bind(f.remote_reconciled)
            .bind(&f.image_version)
            .bind(&f.deployment_type)
            .bind(&f.ids)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(deployment).collect()
    }

    async fn get_deployment(&self, workspace: Uuid, id: Uuid) -> Result<Option<Deployment>> {
        let sql = format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = $1 AND workspace_id = $2"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(workspace)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(deployment).transpose()
    }

    async fn version(
        &self,
        kind: Versioned,
        workspace: Uuid,
        id: Uuid,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        let sql = format!(
            "SELECT updated_at FROM {} WHERE id = $1 AND workspace_id = $2",
            kind.table()
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(workspace)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(|r| r.time("updated_at")).transpose()
    }

    async fn save_deployment(
        &self,
        next: Deployment,
        expected: chrono::DateTime<chrono::Utc>,
        rev: Option<NewRevision>,
    ) -> Result<Deployment> {
        self.write(move |conn| {
            Box::pin(async move {
                let now = now_micros();
                let done = sqlx::query(
                    "UPDATE deployments SET source_config = $1, source_revision_config = $2, \
                     secrets = $3, \
                       secret_references = $4, tracked_packages = $5, status = $6, updated_at = \
                       GREATEST($7, updated_at + 1) \
                     WHERE id = $8 AND workspace_id = $9 AND updated_at = $10",
                )
                .bind(json_text(&next.source_config))
                .bind(json_text(&next.source_revision_config))
                .bind(&next.secrets)
                .bind(next.secret_references.as_ref().map(json_text))
                .bind(next.tracked_packages.as_ref().map(json_text))
                .bind(next.status.as_str())
                .bind(now)
                .bind(next.id)
                .bind(next.workspace_id)
                .bind(expected.timestamp_micros())
                .execute(&mut *conn)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::Stale);
                }
                if let Some(rev) = rev {
                    insert_revision(conn, next.id, &rev, now).await?;
                }
                let bumps = bump_for_deployment(conn, next.id).await?;
                Ok((deployment_by_id(conn, next.id).await?, bumps))
            })
        })
        .await
    }

    async fn delete_deployment(
        &self,
        workspace: Uuid,
        id: Uuid,
        force: bool,
    ) -> Result<DeleteOutcome> {
        self.write(move |conn| {
            Box::pin(async move {
                let status: Option<String> = sqlx::query_scalar(
                    "SELECT status FROM deployments WHERE id = $1 AND workspace_id = $2 FOR UPDATE",
                )
                .bind(id)
                .bind(workspace)
                .fetch_optional(&mut *conn)
                .await?;
                let Some(status) = status else {
                    return Ok((DeleteOutcome::NotFound, Vec::new()));
                };
                let statuses: Vec<String> =
                    sqlx::query_scalar("SELECT status FROM revisions WHERE deployment_id = $1")
                        .bind(id)
                        .fetch_all(&mut *conn)
                        .await?;
                let outcome = crate::rows::delete_outcome(&status, &statuses, force)?;
                let bumps = bump_for_deployment(conn, id).await?;
                match outcome {
                    DeleteOutcome::Removed => {
                        sqlx::query("DELETE FROM deployments WHERE id = $1")
                            .bind(id)
                            .execute(&mut *conn)
                            .await?;
                    }
                    DeleteOutcome::MarkedForDeletion => {
                        sqlx::query(
                            "UPDATE deployments SET status = $3, \
                                     updated_at = GREATEST($1, updated_at + 1) WHERE id = $2",
                        )
                        .bind(now_micros())
                        .bind(id)
                        .bind(DeploymentStatus::AwaitingDelete.as_str())
                        .execute(&mut *conn)
                        .await?;
                    }
                    DeleteOutcome::NotFound => {}
                }
                Ok((outcome, bumps))
            })
        })
        .await
    }

    async fn list_revisions(
        &self,
        workspace: Uuid,
        dep: Uuid,
        f: &RevisionFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Option<Vec<Revision>>> {
        if self.get_deployment(workspace, dep).await?.is_none() {
            return Ok(None);
        }
        let sql = format!(
            "SELECT {REVISION_COLUMNS} FROM revisions WHERE deployment_id = $1 \
               AND ($2::text[] IS NULL OR status = ANY($2)) \
               AND ($3::boolean IS NULL OR remote_reconciled = $3) \
             ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5"
        );
        let rows = sqlx::query(&sql)
            .bind(dep)
            .bind(&f.statuses)
            .bind(f.remote_reconciled)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(revision)
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    async fn get_revision(&self, workspace: Uuid, dep: Uuid, id: Uuid) -> Result<Option<Revision>> {
        let sql = format!(
            "SELECT {} FROM revisions r JOIN deployments d ON d.id = r.deployment_id \
             WHERE r.id = $1 AND r.deployment_id = $2 AND d.workspace_id = $3",
            revision_columns_as("r", "")
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(dep)
            .bind(workspace)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(revision).transpose()
    }

    async fn create_upload(
        &self,
        dep: Uuid,
        token_hash: &str,
        object_path: &str,
        expires_at: chrono::DateTime<chrono::Utc>,
        max_outstanding: i64,
    ) -> Result<bool> {
        let (hash, path) = (token_hash.to_owned(), object_path.to_owned());
        in_tx(&self.pool, move |conn| {
            Box::pin(async move {
                let outstanding: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM uploads WHERE deployment_id = $1 \
                     AND completed_at IS NULL AND expires_at > $2",
                )
                .bind(dep)
                .bind(now_micros())
                .fetch_one(&mut *conn)
                .await?;
                if outstanding >= max_outstanding {
                    return Ok(false);
                }
                sqlx::query(
                    "INSERT INTO uploads (token_hash, deployment_id, object_path, expires_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&hash)
                .bind(dep)
                .bind(&path)
                .bind(expires_at.timestamp_micros())
                .execute(&mut *conn)
                .await?;
                Ok(true)
            })
        })
        .await
    }

    async fn reserve_upload(&self, token_hash: &str, room: UploadRoom) -> Result<Reservation> {
        let hash = token_hash.to_owned();
        in_tx(&self.pool, move |conn| {
            Box::pin(async move {
                let now = now_micros();
                let row = sqlx::query(
                    "SELECT deployment_id, object_path FROM uploads WHERE token_hash = $1 \
                     AND completed_at IS NULL AND expires_at > $2 \
                     AND (reserved_until IS NULL OR reserved_until <= $2) FOR UPDATE",
                )
                .bind(&hash)
                .bind(now)
                .fetch_optional(&mut *conn)
                .await?;
                let Some(row) = row else {
                    return Ok(Reservation::Unavailable);
                };
                let (deployment, object_path) = crate::rows::upload(&row)?;
                let dep = deployment;
                // One reservation at a time per workspace, so that the sum below
                // counts every other hold.
                sqlx::query(
                    "SELECT 1 FROM workspaces WHERE id = \
                     (SELECT workspace_id FROM deployments WHERE id = $1) FOR UPDATE",
                )
                .bind(dep)
                .execute(&mut *conn)
                .await?;
                let used: Option<i64> = sqlx::query_scalar(
                    "SELECT SUM(CASE WHEN u.completed_at IS NOT NULL THEN u.size_bytes \
                       WHEN u.reserved_until > $2 THEN u.reserved_bytes ELSE 0 END)::BIGINT \
                     FROM uploads u JOIN deployments d ON d.id = u.deployment_id \
                     WHERE d.workspace_id = (SELECT workspace_id FROM deployments WHERE id = $1)",
                )
                .bind(dep)
                .bind(now)
                .fetch_one(&mut *conn)
                .await?;
                let used = used.unwrap_or(0);
                let Some(bytes) = room.bytes(used) else {
                    return Ok(Reservation::NoRoom { used });
                };
                sqlx::query(
                    "UPDATE uploads SET reserved_bytes = $1, reserved_until = $2 \
                     WHERE token_hash = $3",
                )
                .bind(bytes)
                .bind(room.until.timestamp_micros())
                .bind(&hash)
                .execute(&mut *conn)
                .await?;
                Ok(Reservation::Held {
                    deployment,
                    object_path,
                    bytes,
                    used,
                })
            })
        })
        .await
    }

    async fn release_upload(&self, token_hash: &str) -> Result<()> {
        sqlx::query(
            "UPDATE uploads SET reserved_bytes = NULL, reserved_until = NULL \
             WHERE token_hash = $1 AND completed_at IS NULL",
        )
        .bind(token_hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn complete_upload(&self, token_hash: &str, size: i64) -> Result<()> {
        let done = sqlx::query(
            "UPDATE uploads SET completed_at = $1, size_bytes = $2, reserved_bytes = NULL, \
             reserved_until = NULL WHERE \
                                token_hash = $3 AND completed_at IS NULL",
        )
        .bind(now_micros())
        .bind(size)
        .bind(token_hash)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict);
        }
        Ok(())
    }

    async fn upload_completed(&self, dep: Uuid, object_path: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM uploads WHERE deployment_id = $1 AND object_path = $2 AND \
             completed_at IS NOT NULL",
        )
        .bind(dep)
        .bind(object_path)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    async fn collect_upload(
        &self,
        object_path: &str,
        unused_since: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool> {
        let (path, cutoff) = (object_path.to_owned(), unused_since.timestamp_micros());
        in_tx(&self.pool, move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "DELETE FROM uploads WHERE object_path = $1 AND ( \
                       (completed_at IS NULL AND expires_at < $2) OR \
                       (completed_at < $3 AND NOT EXISTS (SELECT 1 FROM revisions r \
                          WHERE r.deployment_id = uploads.deployment_id \
                            AND (r.source_revision_config::jsonb ->> 'source_tarball_path') = \
                            uploads.object_path)))",
                )
                .bind(&path)
                .bind(now_micros())
                .bind(cutoff)
                .execute(&mut *conn)
                .await?;
                let left: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM uploads WHERE \
                                                    object_path = $1",
                )
                .bind(&path)
                .fetch_one(&mut *conn)
                .await?;
                Ok(left == 0)
            })
        })
        .await
    }
}
