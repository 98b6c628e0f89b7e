//! Deployments and their revisions.

use crate::lifecycle::{DeploymentStatus, RevisionRules, RevisionStatus};
use crate::records::*;
use crate::rows::{deployment, revision, revision_columns_as, Columns};
use crate::rows::{DEPLOYMENT_COLUMNS, REVISION_COLUMNS};
use crate::sql::{query, work, Backend, BumpOf, Conn, Lock};
use crate::transactions::status_list;
use crate::{now_micros, DeploymentStore, Result, StoreError, Versioned};
use async_trait::async_trait;
use uuid::Uuid;

/// Adds a revision as the deployment's latest; the older ones still waiting are
/// superseded.
async fn insert_revision<C: Conn>(
    c: &mut C,
    deployment_id: Uuid,
    rev: &NewRevision,
    now: i64,
) -> Result<()> {
    skip_waiting(c, deployment_id, None, now).await?;
    let id = Uuid::new_v4();
    let sql = format!(
        "INSERT INTO revisions (id, deployment_id, source, source_revision_config, status, \
         remote_reconciled, created_at, updated_at) \
         SELECT $1, $2, $3, $4, $5, (SELECT listener_id IS NOT NULL FROM deployments \
         WHERE id = $2), t, t FROM \
           (SELECT {}($6, COALESCE((SELECT MAX(created_at) FROM revisions \
            WHERE deployment_id = $2), 0) + 1) AS t) s",
        c.dialect().greatest()
    );
    let q = query(sql)
        .bind(id)
        .bind(deployment_id)
        .bind(&rev.source)
        .bind(json_text(&rev.source_revision_config))
        .bind(rev.status.as_str())
        .bind(now);
    c.execute(q).await?;
    let q = query("UPDATE deployments SET latest_revision_id = $1 WHERE id = $2");
    c.execute(q.bind(id).bind(deployment_id)).await?;
    Ok(())
}

/// Marks `SKIPPED` the deployment's revisions still waiting (those created before
/// `created_before` only, when given): a newer revision supersedes them.
pub(crate) async fn skip_waiting<C: Conn>(
    c: &mut C,
    deployment_id: Uuid,
    created_before: Option<i64>,
    now: i64,
) -> Result<u64> {
    let sql = format!(
        "UPDATE revisions SET status = $1, {} \
         WHERE deployment_id = $3 AND ($4 IS NULL OR created_at < $4) AND status IN ({})",
        c.dialect().advance("updated_at", "$2"),
        status_list(RevisionStatus::superseded())
    );
    let q = query(sql)
        .bind(RevisionStatus::Skipped.as_str())
        .bind(now)
        .bind(deployment_id)
        .bind(created_before);
    c.execute(q).await
}

async fn deployment_by_id<C: Conn>(c: &mut C, id: Uuid) -> Result<Deployment> {
    let q = query(format!(
        "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = $1"
    ));
    deployment(&c.fetch_one(q.bind(id)).await?)
}

fn time(r: &dyn Columns) -> Result<chrono::DateTime<chrono::Utc>> {
    r.time("updated_at")
}

#[async_trait]
impl<B: Backend> DeploymentStore for B {
    async fn create_deployment(&self, new: Deployment, first: NewRevision) -> Result<Deployment> {
        self.write(work(move |c: &mut B::Conn| {
            Box::pin(async move {
                c.lock(Lock::DeploymentCreates(new.workspace_id)).await?;
                let now = now_micros();
                let sql = format!(
                    "INSERT INTO deployments ({DEPLOYMENT_COLUMNS}) \
                     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL, NULL, NULL, \
                     $11 IS NOT NULL, t, t FROM \
                       (SELECT {}($13, COALESCE((SELECT MAX(created_at) FROM deployments \
                        WHERE workspace_id = $2), 0) + 1) AS t) s",
                    c.dialect().greatest()
                );
                let q = query(sql)
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
                    .bind(now);
                c.execute(q).await?;
                insert_revision(c, new.id, &first, now).await?;
                let bumps = c.bump(BumpOf::DeploymentsListener(new.id)).await?;
                Ok((deployment_by_id(c, new.id).await?, bumps))
            })
        }))
        .await
    }

    async fn list_deployments(
        &self,
        workspace: Uuid,
        f: &DeploymentFilter,
        window: Window,
    ) -> Result<Vec<Deployment>> {
        let d = B::Conn::DIALECT;
        let sql = format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE workspace_id = $1 \
               AND ($2 IS NULL OR name = $2) \
               AND ($3 IS NULL OR {position}(name, $3) > 0) \
               AND ($4 IS NULL OR status = $4) \
               AND ($5 IS NULL OR remote_reconciled = $5) \
               AND ($6 IS NULL OR image_version = $6) \
               AND ($7 IS NULL OR deployment_type = $7) \
               AND ($8 IS NULL OR id {any}) \
             ORDER BY created_at, id LIMIT $9 OFFSET $10",
            position = d.position(),
            any = d.any("$8"),
        );
        let q = query(sql)
            .bind(workspace)
            .bind(&f.name)
            .bind(&f.name_contains)
            .bind(&f.status)
            .bind(f.remote_reconciled)
            .bind(&f.image_version)
            .bind(&f.deployment_type)
            .bind(&f.ids)
            .bind(window.limit)
            .bind(window.offset);
        self.read(q, deployment).await
    }

    async fn get_deployment(&self, workspace: Uuid, id: Uuid) -> Result<Option<Deployment>> {
        let q = query(format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = $1 AND workspace_id = $2"
        ));
        self.read_one(q.bind(id).bind(workspace), deployment).await
    }

    async fn version(
        &self,
        kind: Versioned,
        workspace: Uuid,
        id: Uuid,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        let q = query(format!(
            "SELECT updated_at FROM {} WHERE id = $1 AND workspace_id = $2",
            kind.table()
        ));
        self.read_one(q.bind(id).bind(workspace), time).await
    }

    async fn save_deployment(
        &self,
        next: Deployment,
        expected: chrono::DateTime<chrono::Utc>,
        rev: Option<NewRevision>,
    ) -> Result<Deployment> {
        self.write(work(move |c: &mut B::Conn| {
            Box::pin(async move {
                let now = now_micros();
                let sql = format!(
                    "UPDATE deployments SET source_config = $1, source_revision_config = $2, \
                       secrets = $3, secret_references = $4, tracked_packages = $5, \
                       status = $6, {} \
                     WHERE id = $8 AND workspace_id = $9 AND updated_at = $10",
                    c.dialect().advance("updated_at", "$7")
                );
                let q = query(sql)
                    .bind(json_text(&next.source_config))
                    .bind(json_text(&next.source_revision_config))
                    .bind(&next.secrets)
                    .bind(next.secret_references.as_ref().map(json_text))
                    .bind(next.tracked_packages.as_ref().map(json_text))
                    .bind(next.status.as_str())
                    .bind(now)
                    .bind(next.id)
                    .bind(next.workspace_id)
                    .bind(expected.timestamp_micros());
                if c.execute(q).await? == 0 {
                    return Err(StoreError::Stale);
                }
                if let Some(rev) = rev {
                    insert_revision(c, next.id, &rev, now).await?;
                }
                let bumps = c.bump(BumpOf::DeploymentsListener(next.id)).await?;
                Ok((deployment_by_id(c, next.id).await?, bumps))
            })
        }))
        .await
    }

    async fn delete_deployment(
        &self,
        workspace: Uuid,
        id: Uuid,
        force: bool,
    ) -> Result<DeleteOutcome> {
        self.write(work(move |c: &mut B::Conn| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT status FROM deployments WHERE id = $1 AND workspace_id = $2{}",
                    c.dialect().for_update()
                );
                let Some(row) = c
                    .fetch_optional(query(sql).bind(id).bind(workspace))
                    .await?
                else {
                    return Ok((DeleteOutcome::NotFound, Vec::new()));
                };
                let status = row.text("status")?;
                let q = query("SELECT status FROM revisions WHERE deployment_id = $1").bind(id);
                let statuses = c
                    .fetch_all(q)
                    .await?
                    .iter()
                    .map(|r| r.text("status"))
                    .collect::<Result<Vec<_>>>()?;
                let outcome = crate::rows::delete_outcome(&status, &statuses, force)?;
                let bumps = c.bump(BumpOf::DeploymentsListener(id)).await?;
                match outcome {
                    DeleteOutcome::Removed => {
                        let q = query("DELETE FROM deployments WHERE id = $1");
                        c.execute(q.bind(id)).await?;
                    }
                    DeleteOutcome::MarkedForDeletion => {
                        let sql = format!(
                            "UPDATE deployments SET status = $3, {} WHERE id = $2",
                            c.dialect().advance("updated_at", "$1")
                        );
                        let q = query(sql)
                            .bind(now_micros())
                            .bind(id)
                            .bind(DeploymentStatus::AwaitingDelete.as_str());
                        c.execute(q).await?;
                    }
                    DeleteOutcome::NotFound => {}
                }
                Ok((outcome, bumps))
            })
        }))
        .await
    }

    async fn list_revisions(
        &self,
        workspace: Uuid,
        dep: Uuid,
        f: &RevisionFilter,
        window: Window,
    ) -> Result<Option<Vec<Revision>>> {
        if self.get_deployment(workspace, dep).await?.is_none() {
            return Ok(None);
        }
        let sql = format!(
            "SELECT {REVISION_COLUMNS} FROM revisions WHERE deployment_id = $1 \
               AND ($2 IS NULL OR status {}) \
               AND ($3 IS NULL OR remote_reconciled = $3) \
             ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5",
            B::Conn::DIALECT.any("$2")
        );
        let q = query(sql)
            .bind(dep)
            .bind(&f.statuses)
            .bind(f.remote_reconciled)
            .bind(window.limit)
            .bind(window.offset);
        self.read(q, revision).await.map(Some)
    }

    async fn get_revision(&self, workspace: Uuid, dep: Uuid, id: Uuid) -> Result<Option<Revision>> {
        let q = query(format!(
            "SELECT {} FROM revisions r JOIN deployments d ON d.id = r.deployment_id \
             WHERE r.id = $1 AND r.deployment_id = $2 AND d.workspace_id = $3",
            revision_columns_as("r", "")
        ));
        self.read_one(q.bind(id).bind(dep).bind(workspace), revision)
            .await
    }
}
