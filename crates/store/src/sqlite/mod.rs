//! The SQLite backend: one file, WAL mode, `synchronous=FULL` so that an acknowledged
//! write survives a crash of the process or the machine.

use crate::lifecycle::{DeploymentStatus, RevisionStatus};
use crate::records::*;
use crate::rows::{
    api_key, deployment, listener, org, revision, revision_columns_as, workspace, Columns,
    DEPLOYMENT_COLUMNS, LISTENER_COLUMNS, REVISION_COLUMNS,
};
use crate::{now_micros, FirstStart, Result, StoreError, StoreOptions, Versioned};
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

mod console;
mod dataplane;
mod reads;
use dataplane::bump_for_deployment;
use reads::Readers;

pub struct SqliteStore {
    pool: SqlitePool,
    /// The hot reads, on the calling thread (see `reads.rs`).
    readers: Readers,
    /// Wake-ups for desired-state long-polls (one process serves an SQLite file).
    changes: std::sync::Arc<crate::changes::Changes>,
    /// Listener creates go through one writer that commits them in batches.
    creates: tokio::sync::mpsc::Sender<CreateJob>,
    /// What that writer has committed.
    grouped: std::sync::Arc<Grouped>,
}

/// Group commit's work so far: transactions committed, and creates acknowledged by them.
#[derive(Default)]
struct Grouped {
    commits: std::sync::atomic::AtomicU64,
    writes: std::sync::atomic::AtomicU64,
}

type CreateJob = (NewListener, tokio::sync::oneshot::Sender<Result<Listener>>);

/// Largest number of creates committed together.
const GROUP_COMMIT_MAX: usize = 128;

/// Group commit: every create waiting when the writer is free goes into one
/// transaction, so one `fsync` acknowledges them all; each insert has its own
/// savepoint, so a conflict fails only its own request. Answers are sent only after
/// the commit is durable.
async fn create_writer(
    pool: SqlitePool,
    mut jobs: tokio::sync::mpsc::Receiver<CreateJob>,
    grouped: std::sync::Arc<Grouped>,
) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < GROUP_COMMIT_MAX {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (news, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let outcome = immediate(&pool, move |conn| {
            Box::pin(async move {
                let mut results = Vec::with_capacity(news.len());
                for new in &news {
                    sqlx::query("SAVEPOINT one").execute(&mut *conn).await?;
                    let result = insert_listener(conn, new).await;
                    let undo = if result.is_err() {
                        "ROLLBACK TO one"
                    } else {
                        "RELEASE one"
                    };
                    sqlx::query(undo).execute(&mut *conn).await?;
                    if result.is_err() {
                        sqlx::query("RELEASE one").execute(&mut *conn).await?;
                    }
                    results.push(result);
                }
                Ok(results)
            })
        })
        .await;
        match outcome {
            Ok(results) => {
                use std::sync::atomic::Ordering::Relaxed;
                grouped.commits.fetch_add(1, Relaxed);
                let acknowledged = results.iter().filter(|r| r.is_ok()).count();
                grouped.writes.fetch_add(acknowledged as u64, Relaxed);
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                let text = e.to_string();
                for reply in replies {
                    let err = match &e {
                        StoreError::Unavailable(_) => StoreError::Unavailable(text.clone()),
                        _ => StoreError::Other(text.clone()),
                    };
                    let _ = reply.send(Err(err));
                }
            }
        }
    }
}

/// One statement, so the timestamp is taken under the write lock: creation times grow in
/// commit order and a page, once read, never gains an older row.
async fn insert_listener(conn: &mut sqlx::SqliteConnection, new: &NewListener) -> Result<Listener> {
    let sql = format!(
        "INSERT INTO listeners ({LISTENER_COLUMNS}) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, t, t FROM \
           (SELECT MAX(?7, COALESCE((SELECT MAX(created_at) FROM listeners WHERE workspace_id = \
           ?2), 0) + 1) AS t) \
         RETURNING {LISTENER_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(Uuid::new_v4().to_string())
        .bind(new.workspace_id.to_string())
        .bind(&new.compute_type)
        .bind(&new.compute_id)
        .bind(&new.version)
        .bind(namespaces_to_text(&new.k8s_namespaces))
        .bind(now_micros())
        .fetch_one(&mut *conn)
        .await?;
    listener(&row)
}

impl SqliteStore {
    pub async fn open(url: &str, opts: &StoreOptions) -> Result<Self> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Other(format!("bad SQLite URL: {e}")))?;
        let file = connect.get_filename().to_path_buf();
        if file.as_os_str().is_empty() || file == std::path::Path::new(":memory:") {
            return Err(StoreError::Other(
                "SQLite needs a database file (sqlite://PATH): an in-memory database would \
                 lose everything at exit"
                    .into(),
            ));
        }
        create_owner_only(&file)?;
        let connect = connect
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(connect)
            .await?;
        sqlx::migrate!("migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Other(format!("migration failed: {e}")))?;
        let readers = Readers::open(file)?;
        let (creates, jobs) = tokio::sync::mpsc::channel(1024);
        let grouped = std::sync::Arc::<Grouped>::default();
        tokio::spawn(create_writer(pool.clone(), jobs, grouped.clone()));
        Ok(SqliteStore {
            pool,
            readers,
            creates,
            grouped,
            changes: Default::default(),
        })
    }

    /// How every connection of the pool is really set up, read back from SQLite rather
    /// than from our options: `(journal_mode, synchronous, foreign_keys)` for each, all
    /// of them held at once so that each is a different connection.
    pub async fn connection_settings(&self) -> Result<Vec<(String, i64, i64)>> {
        let max = self.pool.options().get_max_connections();
        let mut held = Vec::new();
        for _ in 0..max {
            held.push(self.pool.acquire().await?);
        }
        let mut out = Vec::new();
        for conn in &mut held {
            let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut **conn)
                .await?;
            let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut **conn)
                .await?;
            let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
                .fetch_one(&mut **conn)
                .await?;
            out.push((journal, synchronous, foreign_keys));
        }
        Ok(out)
    }
}

async fn insert_key(
    conn: &mut sqlx::SqliteConnection,
    scope: KeyScope,
    key_hash: &str,
) -> Result<ApiKey> {
    let (org_id, ws, listener) = scope.columns();
    let row = sqlx::query(
        "INSERT INTO api_keys (id, key_hash, org_id, workspace_id, listener_id, created_at) \
         VALUES (?, ?, ?, ?, ?, ?) \
         RETURNING id, key_hash, org_id, workspace_id, listener_id, created_at, revoked_at",
    )
    .bind(Uuid::new_v4().to_string())
    .bind(key_hash)
    .bind(org_id.to_string())
    .bind(ws.map(|w| w.to_string()))
    .bind(listener.map(|l| l.to_string()))
    .bind(now_micros())
    .fetch_one(&mut *conn)
    .await?;
    api_key(&row)
}

#[async_trait]
impl crate::IdentityStore for SqliteStore {
    async fn insert_first_start(&self, first: &FirstStart) -> Result<Option<Uuid>> {
        let first = first.clone();
        immediate(&self.pool, move |conn| {
            Box::pin(async move {
                let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM organizations")
                    .fetch_one(&mut *conn)
                    .await?;
                if count > 0 {
                    return Ok(None);
                }
                let (org, ws) = (&first.org, &first.workspace);
                sqlx::query(
                    "INSERT INTO organizations (id, name, plan, created_at) VALUES (?, ?, ?, ?)",
                )
                .bind(org.id.to_string())
                .bind(&org.name)
                .bind(org.plan.as_str())
                .bind(org.created_at.timestamp_micros())
                .execute(&mut *conn)
                .await?;
                sqlx::query(
                    "INSERT INTO workspaces (id, org_id, name, created_at) VALUES (?, ?, ?, ?)",
                )
                .bind(ws.id.to_string())
                .bind(org.id.to_string())
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
            "INSERT INTO organizations (id, name, plan, created_at) VALUES (?, \
                               ?, ?, ?) RETURNING *",
        )
        .bind(Uuid::new_v4().to_string())
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
            "INSERT INTO workspaces (id, org_id, name, created_at) VALUES (?, ?, ?, ?) RETURNING *",
        )
        .bind(Uuid::new_v4().to_string())
        .bind(org_id.to_string())
        .bind(name)
        .bind(now_micros())
        .fetch_one(&self.pool)
        .await?;
        workspace(&row)
    }

    async fn list_workspaces(&self, org_id: Option<Uuid>) -> Result<Vec<Workspace>> {
        let rows = sqlx::query(
            "SELECT * FROM workspaces WHERE ?1 IS NULL OR org_id = ?1 ORDER BY created_at, id",
        )
        .bind(org_id.map(|o| o.to_string()))
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
        let row = sqlx::query("SELECT * FROM api_keys WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(api_key).transpose()
    }

    async fn revoke_api_key(&self, id: Uuid) -> Result<()> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?")
                .bind(now_micros())
                .bind(id.to_string())
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
        self.readers.optional(
            "SELECT k.id, k.key_hash, k.org_id, k.workspace_id, k.listener_id, k.created_at, \
               k.revoked_at, \
               w.org_id AS ws_org, o.plan AS ws_plan \
             FROM api_keys k \
             LEFT JOIN workspaces w ON w.id = COALESCE(k.workspace_id, ?2) \
             LEFT JOIN organizations o ON o.id = w.org_id \
             WHERE k.key_hash = ?1 AND k.revoked_at IS NULL",
            (key_hash, requested.map(|r| r.to_string())),
            |r| crate::rows::authenticated(r),
        )
    }

    async fn get_workspace(&self, id: Uuid) -> Result<Option<(Workspace, Plan)>> {
        let row = sqlx::query(
            "SELECT w.*, o.plan FROM workspaces w JOIN organizations o ON o.id = w.org_id WHERE \
             w.id = ?",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(crate::rows::workspace_with_plan)
            .transpose()
    }

    fn pool_stats(&self) -> PoolStats {
        use std::sync::atomic::Ordering::Relaxed;
        PoolStats {
            size: self.pool.size(),
            idle: self.pool.num_idle(),
            max: self.pool.options().get_max_connections(),
            group_commits: self.grouped.commits.load(Relaxed),
            group_committed_writes: self.grouped.writes.load(Relaxed),
        }
    }

    async fn resource_counts(&self) -> Result<ResourceCounts> {
        let row = sqlx::query(crate::COUNTS_SQL).fetch_one(&self.pool).await?;
        crate::rows::counts(&row)
    }
}

#[async_trait]
impl crate::ListenerStore for SqliteStore {
    async fn create_listener(&self, new: NewListener) -> Result<Listener> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let gone = || StoreError::Unavailable("the SQLite writer has stopped".into());
        self.creates.send((new, reply)).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    async fn list_listeners(
        &self,
        workspace: Uuid,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Listener>> {
        let sql = format!(
            "SELECT {LISTENER_COLUMNS} FROM listeners WHERE workspace_id = ? \
             ORDER BY created_at, id LIMIT ? OFFSET ?"
        );
        self.readers
            .all(&sql, (workspace.to_string(), limit, offset), |r| {
                listener(r)
            })
    }

    async fn get_listener(&self, workspace: Uuid, id: Uuid) -> Result<Option<Listener>> {
        let sql =
            format!("SELECT {LISTENER_COLUMNS} FROM listeners WHERE id = ? AND workspace_id = ?");
        self.readers
            .optional(&sql, (id.to_string(), workspace.to_string()), |r| {
                listener(r)
            })
    }

    async fn listener_versions(
        &self,
        workspace: Uuid,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<(Uuid, chrono::DateTime<chrono::Utc>)>> {
        self.readers.all(
            "SELECT id, updated_at FROM listeners WHERE workspace_id = ? \
             ORDER BY created_at, id LIMIT ? OFFSET ?",
            (workspace.to_string(), limit, offset),
            |r| Ok((r.uuid("id")?, r.time("updated_at")?)),
        )
    }

    async fn listeners_by_ids(&self, workspace: Uuid, ids: &[Uuid]) -> Result<Vec<Listener>> {
        let sql = format!(
            "SELECT {LISTENER_COLUMNS} FROM listeners WHERE workspace_id = ? \
             AND id IN (SELECT value FROM json_each(?))"
        );
        let ids = serde_json::to_string(ids).map_err(|e| StoreError::Other(e.to_string()))?;
        self.readers
            .all(&sql, (workspace.to_string(), ids), |r| listener(r))
    }

    async fn find_listener(&self, id: Uuid) -> Result<Option<Listener>> {
        let sql = format!("SELECT {LISTENER_COLUMNS} FROM listeners WHERE id = ?");
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(listener).transpose()
    }

    async fn listener_ids(&self, workspace: Uuid) -> Result<Vec<Uuid>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM listeners WHERE workspace_id = ? ORDER BY created_at, id",
        )
        .bind(workspace.to_string())
        .fetch_all(&self.pool)
        .await?;
        ids.iter()
            .map(|id| {
                Uuid::parse_str(id).map_err(|e| StoreError::Other(format!("listener id: {e}")))
            })
            .collect()
    }

    async fn oldest_listener(&self, workspace: Uuid) -> Result<Option<Uuid>> {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT id FROM listeners WHERE workspace_id = ? ORDER BY created_at, id LIMIT 1",
        )
        .bind(workspace.to_string())
        .fetch_optional(&self.pool)
        .await?;
        id.map(|id| {
            Uuid::parse_str(&id).map_err(|e| StoreError::Other(format!("listener id: {e}")))
        })
        .transpose()
    }

    async fn patch_listener(
        &self,
        workspace: Uuid,
        id: Uuid,
        patch: ListenerPatch,
    ) -> Result<Option<Listener>> {
        let sql = format!(
            "UPDATE listeners SET \
               version = COALESCE(?1, version), \
               k8s_namespaces = CASE WHEN ?2 THEN ?3 ELSE k8s_namespaces END, \
               updated_at = MAX(?4, updated_at + 1) \
             WHERE id = ?5 AND workspace_id = ?6 RETURNING {LISTENER_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(&patch.version)
            .bind(patch.k8s_namespaces.is_some())
            .bind(patch.k8s_namespaces.as_ref().and_then(namespaces_to_text))
            .bind(now_micros())
            .bind(id.to_string())
            .bind(workspace.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(listener).transpose()
    }

    async fn delete_listener(&self, workspace: Uuid, id: Uuid) -> Result<bool> {
        self.write(move |conn| {
            Box::pin(async move {
                let done = sqlx::query("DELETE FROM listeners WHERE id = ? AND workspace_id = ?")
                    .bind(id.to_string())
                    .bind(workspace.to_string())
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
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE listener_id = ?",
                )
                .bind(now_micros())
                .bind(id.to_string())
                .execute(&mut *conn)
                .await?;
                // Its pollers wake and find it gone.
                Ok((true, vec![(id, i64::MAX)]))
            })
        })
        .await
    }
}

/// Creates the database file readable by its owner only, before SQLite creates it with
/// the process umask; SQLite gives the `-wal` and `-shm` files the database file's mode.
fn create_owner_only(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if path.as_os_str().is_empty() || path == std::path::Path::new(":memory:") {
        return Ok(());
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), "the database file is readable by \
                                                            other users; consider chmod 600");
                }
            }
            Ok(())
        }
        Err(e) => Err(StoreError::Other(format!(
            "cannot create the database file {}: {e}",
            path.display()
        ))),
    }
}

/// Runs `f` inside `BEGIN IMMEDIATE ... COMMIT` (rolled back on error) on a task of its
/// own (see [`crate::detached`]): the write lock is taken first, so the transaction
/// cannot fail half-way on a lock upgrade, and it ends whatever happens to the caller.
async fn immediate<T, F>(pool: &SqlitePool, f: F) -> Result<T>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut sqlx::SqliteConnection) -> crate::BoxFut<'c, Result<T>>
        + Send
        + 'static,
{
    let pool = pool.clone();
    crate::detached(async move {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
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

async fn insert_revision(
    conn: &mut sqlx::SqliteConnection,
    deployment_id: Uuid,
    rev: &NewRevision,
    now: i64,
) -> Result<()> {
    // Older revisions still waiting are superseded.
    let superseded = format!(
        "UPDATE revisions SET status = ?3, updated_at = MAX(?1, updated_at + 1) \
         WHERE deployment_id = ?2 AND status IN ({})",
        RevisionStatus::superseded_sql()
    );
    sqlx::query(&superseded)
        .bind(now)
        .bind(deployment_id.to_string())
        .bind(RevisionStatus::Skipped.as_str())
        .execute(&mut *conn)
        .await?;
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO revisions (id, deployment_id, source, source_revision_config, status, \
         remote_reconciled, created_at, updated_at) \
         SELECT ?1, ?2, ?3, ?4, ?5, (SELECT listener_id IS NOT NULL FROM deployments WHERE id = \
         ?2), t, t FROM \
           (SELECT MAX(?6, COALESCE((SELECT MAX(created_at) FROM revisions WHERE deployment_id = \
           ?2), 0) + 1) AS t)",
    )
    .bind(id.to_string())
    .bind(deployment_id.to_string())
    .bind(&rev.source)
    .bind(json_text(&rev.source_revision_config))
    .bind(rev.status.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    // The new revision is the latest.
    sqlx::query("UPDATE deployments SET latest_revision_id = ? WHERE id = ?")
        .bind(id.to_string())
        .bind(deployment_id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

impl SqliteStore {
    async fn deployment_by_id(conn: &mut sqlx::SqliteConnection, id: Uuid) -> Result<Deployment> {
        let sql = format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = ?");
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_one(&mut *conn)
            .await?;
        deployment(&row)
    }
}

#[async_trait]
impl crate::DeploymentStore for SqliteStore {
    async fn create_deployment(&self, new: Deployment, first: NewRevision) -> Result<Deployment> {
        self.write(move |conn| {
            Box::pin(async move {
                let now = now_micros();
                let sql = format!(
                    "INSERT INTO deployments ({DEPLOYMENT_COLUMNS}) \
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, NULL, NULL, NULL, \
                     ?11 IS NOT NULL, t, t FROM \
                       (SELECT MAX(?13, COALESCE((SELECT MAX(created_at) FROM deployments WHERE \
                       workspace_id = ?2), 0) + 1) AS t)"
                );
                sqlx::query(&sql)
                    .bind(new.id.to_string())
                    .bind(new.workspace_id.to_string())
                    .bind(&new.name)
                    .bind(&new.source)
                    .bind(json_text(&new.source_config))
                    .bind(json_text(&new.source_revision_config))
                    .bind(&new.secrets)
                    .bind(new.secret_references.as_ref().map(json_text))
                    .bind(new.tracked_packages.as_ref().map(json_text))
                    .bind(&new.deployment_type)
                    .bind(new.listener_id.map(|l| l.to_string()))
                    .bind(new.status.as_str())
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                insert_revision(conn, new.id, &first, now).await?;
                let bumps = bump_for_deployment(conn, new.id).await?;
                Ok((Self::deployment_by_id(conn, new.id).await?, bumps))
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
        let ids = f.ids.as_ref().map(|ids| {
            serde_json::to_string(&ids.iter().map(Uuid::to_string).collect::<Vec<_>>())
                .unwrap_or_default()
        });
        let sql = format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE workspace_id = ?1 \
               AND (?2 IS NULL OR name = ?2) \
               AND (?3 IS NULL OR instr(name, ?3) > 0) \
               AND (?4 IS NULL OR status = ?4) \
               AND (?5 IS NULL OR remote_reconciled = ?5) \
               AND (?6 IS NULL OR image_version = ?6) \
               AND (?7 IS NULL OR deployment_type = ?7) \
               AND (?8 IS NULL OR id IN (SELECT value FROM json_each(?8))) \
             ORDER BY created_at, id LIMIT ?9 OFFSET ?10"
        );
        let params = rusqlite::params![
            workspace.to_string(),
            f.name,
            f.name_contains,
            f.status,
            f.remote_reconciled,
            f.image_version,
            f.deployment_type,
            ids,
            limit,
            offset,
        ];
        self.readers.all(&sql, params, |r| deployment(r))
    }

    async fn get_deployment(&self, workspace: Uuid, id: Uuid) -> Result<Option<Deployment>> {
        let sql = format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = ? AND workspace_id = ?"
        );
        self.readers
            .optional(&sql, (id.to_string(), workspace.to_string()), |r| {
                deployment(r)
            })
    }

    async fn version(
        &self,
        kind: Versioned,
        workspace: Uuid,
        id: Uuid,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        let sql = format!(
            "SELECT updated_at FROM {} WHERE id = ? AND workspace_id = ?",
            kind.table()
        );
        self.readers
            .optional(&sql, (id.to_string(), workspace.to_string()), |r| {
                r.time("updated_at")
            })
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
                    "UPDATE deployments SET source_config = ?1, source_revision_config = ?2, \
                     secrets = ?3, \
                       secret_references = ?4, tracked_packages = ?5, status = ?6, updated_at = \
                       MAX(?7, updated_at + 1) \
                     WHERE id = ?8 AND workspace_id = ?9 AND updated_at = ?10",
                )
                .bind(json_text(&next.source_config))
                .bind(json_text(&next.source_revision_config))
                .bind(&next.secrets)
                .bind(next.secret_references.as_ref().map(json_text))
                .bind(next.tracked_packages.as_ref().map(json_text))
                .bind(next.status.as_str())
                .bind(now)
                .bind(next.id.to_string())
                .bind(next.workspace_id.to_string())
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
                Ok((Self::deployment_by_id(conn, next.id).await?, bumps))
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
                    "SELECT status FROM deployments \
                                                                 WHERE id = ? AND workspace_id = ?",
                )
                .bind(id.to_string())
                .bind(workspace.to_string())
                .fetch_optional(&mut *conn)
                .await?;
                let Some(status) = status else {
                    return Ok((DeleteOutcome::NotFound, Vec::new()));
                };
                let statuses: Vec<String> = sqlx::query_scalar(
                    "SELECT status FROM revisions \
                                                                WHERE deployment_id = ?",
                )
                .bind(id.to_string())
                .fetch_all(&mut *conn)
                .await?;
                let outcome = crate::rows::delete_outcome(&status, &statuses, force)?;
                let bumps = bump_for_deployment(conn, id).await?;
                match outcome {
                    DeleteOutcome::Removed => {
                        sqlx::query(
                            "DELETE FROM deployments WHERE id = \
                                     ?",
                        )
                        .bind(id.to_string())
                        .execute(&mut *conn)
                        .await?;
                    }
                    DeleteOutcome::MarkedForDeletion => {
                        sqlx::query(
                            "UPDATE deployments SET status = ?3, \
                                     updated_at = MAX(?1, updated_at + 1) WHERE id = ?2",
                        )
                        .bind(now_micros())
                        .bind(id.to_string())
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
        let statuses = f
            .statuses
            .as_ref()
            .map(|s| serde_json::to_string(s).unwrap_or_default());
        let sql = format!(
            "SELECT {REVISION_COLUMNS} FROM revisions WHERE deployment_id = ?1 \
               AND (?2 IS NULL OR status IN (SELECT value FROM json_each(?2))) \
               AND (?3 IS NULL OR remote_reconciled = ?3) \
             ORDER BY created_at DESC, id DESC LIMIT ?4 OFFSET ?5"
        );
        let rows = sqlx::query(&sql)
            .bind(dep.to_string())
            .bind(statuses)
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
             WHERE r.id = ? AND r.deployment_id = ? AND d.workspace_id = ?",
            revision_columns_as("r", "")
        );
        let params = (id.to_string(), dep.to_string(), workspace.to_string());
        self.readers.optional(&sql, params, |r| revision(r))
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
        immediate(&self.pool, move |conn| {
            Box::pin(async move {
                let outstanding: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM uploads WHERE deployment_id = ?1 \
                     AND completed_at IS NULL AND expires_at > ?2",
                )
                .bind(dep.to_string())
                .bind(now_micros())
                .fetch_one(&mut *conn)
                .await?;
                if outstanding >= max_outstanding {
                    return Ok(false);
                }
                sqlx::query(
                    "INSERT INTO uploads (token_hash, deployment_id, object_path, expires_at) \
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .bind(&hash)
                .bind(dep.to_string())
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
        immediate(&self.pool, move |conn| {
            Box::pin(async move {
                let now = now_micros();
                let row = sqlx::query(
                    "SELECT deployment_id, object_path FROM uploads WHERE token_hash = ?1 \
                     AND completed_at IS NULL AND expires_at > ?2 \
                     AND (reserved_until IS NULL OR reserved_until <= ?2)",
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
                let used: Option<i64> = sqlx::query_scalar(
                    "SELECT SUM(CASE WHEN u.completed_at IS NOT NULL THEN u.size_bytes \
                       WHEN u.reserved_until > ?2 THEN u.reserved_bytes ELSE 0 END) \
                     FROM uploads u JOIN deployments d ON d.id = u.deployment_id \
                     WHERE d.workspace_id = (SELECT workspace_id FROM deployments WHERE id = ?1)",
                )
                .bind(dep.to_string())
                .bind(now)
                .fetch_one(&mut *conn)
                .await?;
                let used = used.unwrap_or(0);
                let Some(bytes) = room.bytes(used) else {
                    return Ok(Reservation::NoRoom { used });
                };
                sqlx::query(
                    "UPDATE uploads SET reserved_bytes = ?1, reserved_until = ?2 \
                     WHERE token_hash = ?3",
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
             WHERE token_hash = ?1 AND completed_at IS NULL",
        )
        .bind(token_hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn complete_upload(&self, token_hash: &str, size: i64) -> Result<()> {
        let done = sqlx::query(
            "UPDATE uploads SET completed_at = ?, size_bytes = ?, reserved_bytes = NULL, \
             reserved_until = NULL WHERE \
                                token_hash = ? AND completed_at IS NULL",
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
            "SELECT COUNT(*) FROM uploads WHERE deployment_id = ? AND object_path = ? AND \
             completed_at IS NOT NULL",
        )
        .bind(dep.to_string())
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
        immediate(&self.pool, move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "DELETE FROM uploads WHERE object_path = ?1 AND ( \
                       (completed_at IS NULL AND expires_at < ?2) OR \
                       (completed_at < ?3 AND NOT EXISTS (SELECT 1 FROM revisions r \
                          WHERE r.deployment_id = uploads.deployment_id \
                            AND json_extract(r.source_revision_config, '$.source_tarball_path') = \
                            uploads.object_path)))",
                )
                .bind(&path)
                .bind(now_micros())
                .bind(cutoff)
                .execute(&mut *conn)
                .await?;
                let left: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM uploads WHERE \
                                                    object_path = ?",
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
