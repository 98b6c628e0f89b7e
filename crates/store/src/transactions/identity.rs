//! Organizations, workspaces and API keys.

use crate::records::*;
use crate::rows::{api_key, authenticated, org, workspace, workspace_with_plan, Columns};
use crate::sql::{query, work, Backend, Conn, Lock};
use crate::{now_micros, FirstStart, IdentityStore, Result, StoreError};
use async_trait::async_trait;
use uuid::Uuid;

async fn insert_key<C: Conn>(c: &mut C, scope: KeyScope, key_hash: &str) -> Result<ApiKey> {
    let (org_id, ws, listener) = scope.columns();
    let row = c
        .fetch_one(
            query(
                "INSERT INTO api_keys (id, key_hash, org_id, workspace_id, listener_id, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6) \
                 RETURNING id, key_hash, org_id, workspace_id, listener_id, created_at, revoked_at",
            )
            .bind(Uuid::new_v4())
            .bind(key_hash)
            .bind(org_id)
            .bind(ws)
            .bind(listener)
            .bind(now_micros()),
        )
        .await?;
    api_key(&row)
}

async fn insert_org<C: Conn>(c: &mut C, id: Uuid, name: &str, plan: Plan, at: i64) -> Result<Org> {
    let q = query(
        "INSERT INTO organizations (id, name, plan, created_at) VALUES ($1, $2, $3, $4) \
         RETURNING *",
    );
    org(&c
        .fetch_one(q.bind(id).bind(name).bind(plan.as_str()).bind(at))
        .await?)
}

async fn insert_workspace<C: Conn>(
    c: &mut C,
    id: Uuid,
    org_id: Uuid,
    name: &str,
    at: i64,
) -> Result<Workspace> {
    let q = query(
        "INSERT INTO workspaces (id, org_id, name, created_at) VALUES ($1, $2, $3, $4) \
         RETURNING *",
    );
    workspace(
        &c.fetch_one(q.bind(id).bind(org_id).bind(name).bind(at))
            .await?,
    )
}

#[async_trait]
impl<B: Backend> IdentityStore for B {
    async fn insert_first_start(&self, first: &FirstStart) -> Result<Option<Uuid>> {
        let first = first.clone();
        self.transaction(work(move |c: &mut B::Conn| {
            Box::pin(async move {
                c.lock(Lock::Bootstrap).await?;
                let count = c
                    .fetch_one(query("SELECT COUNT(*) AS n FROM organizations"))
                    .await?
                    .int("n")?;
                if count > 0 {
                    return Ok(None);
                }
                let (org, ws) = (&first.org, &first.workspace);
                let at = org.created_at.timestamp_micros();
                insert_org(c, org.id, &org.name, org.plan, at).await?;
                let at = ws.created_at.timestamp_micros();
                insert_workspace(c, ws.id, org.id, &ws.name, at).await?;
                let key = insert_key(c, first.key_scope(), &first.key_hash).await?;
                Ok(Some(key.id))
            })
        }))
        .await
    }

    async fn create_org(&self, name: &str, plan: Plan) -> Result<Org> {
        let name = name.to_owned();
        self.run(work(move |c: &mut B::Conn| {
            Box::pin(async move { insert_org(c, Uuid::new_v4(), &name, plan, now_micros()).await })
        }))
        .await
    }

    async fn list_orgs(&self) -> Result<Vec<Org>> {
        self.read(
            query("SELECT * FROM organizations ORDER BY created_at, id"),
            org,
        )
        .await
    }

    async fn create_workspace(&self, org_id: Uuid, name: &str) -> Result<Workspace> {
        let name = name.to_owned();
        self.run(work(move |c: &mut B::Conn| {
            Box::pin(async move {
                insert_workspace(c, Uuid::new_v4(), org_id, &name, now_micros()).await
            })
        }))
        .await
    }

    async fn list_workspaces(&self, org_id: Option<Uuid>) -> Result<Vec<Workspace>> {
        let q = query(
            "SELECT * FROM workspaces WHERE $1 IS NULL OR org_id = $1 ORDER BY created_at, id",
        );
        self.read(q.bind(org_id), workspace).await
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
        let key_hash = key_hash.to_owned();
        self.run(work(move |c: &mut B::Conn| {
            Box::pin(async move { insert_key(c, scope, &key_hash).await })
        }))
        .await
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        self.read(
            query("SELECT * FROM api_keys ORDER BY created_at, id"),
            api_key,
        )
        .await
    }

    async fn get_api_key(&self, id: Uuid) -> Result<Option<ApiKey>> {
        let q = query("SELECT * FROM api_keys WHERE id = $1").bind(id);
        self.read_one(q, api_key).await
    }

    async fn revoke_api_key(&self, id: Uuid) -> Result<()> {
        let q = query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
            .bind(now_micros())
            .bind(id);
        let done = Backend::execute(self, q).await?;
        if done == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn authenticate(
        &self,
        key_hash: &str,
        requested: Option<Uuid>,
    ) -> Result<Option<(ApiKey, Option<WorkspaceAccess>)>> {
        let q = query(
            "SELECT k.id, k.key_hash, k.org_id, k.workspace_id, k.listener_id, k.created_at, \
               k.revoked_at, w.org_id AS ws_org, o.plan AS ws_plan \
             FROM api_keys k \
             LEFT JOIN workspaces w ON w.id = COALESCE(k.workspace_id, $2) \
             LEFT JOIN organizations o ON o.id = w.org_id \
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
        );
        self.read_one(q.bind(key_hash).bind(requested), authenticated)
            .await
    }

    async fn get_workspace(&self, id: Uuid) -> Result<Option<(Workspace, Plan)>> {
        let q = query(
            "SELECT w.*, o.plan FROM workspaces w JOIN organizations o ON o.id = w.org_id \
             WHERE w.id = $1",
        );
        self.read_one(q.bind(id), workspace_with_plan).await
    }

    fn pool_stats(&self) -> PoolStats {
        Backend::pool_stats(self)
    }

    async fn resource_counts(&self) -> Result<ResourceCounts> {
        let counts = self.read_one(query(crate::COUNTS_SQL), crate::rows::counts);
        counts
            .await?
            .ok_or_else(|| StoreError::Other("no counts".into()))
    }
}
