//! What listener agents read and report. Writes lock rows in one order (deployment,
//! revision, listener) so that on PostgreSQL they cannot deadlock, and move the
//! generation of every listener whose desired state they change.

use crate::lifecycle::{self, DeploymentStatus, DeploymentView, RevisionRules, RevisionStatus};
use crate::records::*;
use crate::rows::{build_source, deployment, deployment_status, listener, log_entry};
use crate::rows::{optional_revision, qualified, revision, revision_columns_as, revision_status};
use crate::rows::{Columns, DEPLOYMENT_COLUMNS, LISTENER_COLUMNS};
use crate::sql::{query, work, Backend, BumpOf, Conn};
use crate::transactions::deployments::skip_waiting;
use crate::transactions::status_list;
use crate::{now_micros, DataPlaneStore, Result, StoreError};
use async_trait::async_trait;
use uuid::Uuid;

/// Most log lines one statement inserts (6 arguments each, under either backend's limit).
const LOG_LINES_PER_INSERT: usize = 1000;

/// Locks the deployment of a revision placed on the listener: its status and when its
/// active revision was created.
async fn lock_deployment_of<C: Conn>(
    c: &mut C,
    revision_id: Uuid,
    listener: Uuid,
) -> Result<Option<DeploymentView>> {
    let sql = format!(
        "SELECT d.status, (SELECT created_at FROM revisions WHERE id = d.active_revision_id) \
           AS active_created_at \
         FROM deployments d JOIN revisions r ON r.deployment_id = d.id \
         WHERE r.id = $1 AND d.listener_id = $2{}",
        c.dialect().for_update_of("d")
    );
    let Some(row) = c
        .fetch_optional(query(sql).bind(revision_id).bind(listener))
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(DeploymentView {
        status: deployment_status(&row.text("status")?)?,
        active_created_at: row
            .opt_int("active_created_at")?
            .map(micros_to_time)
            .transpose()?,
    }))
}

async fn lock_revision<C: Conn>(c: &mut C, revision_id: Uuid) -> Result<Revision> {
    let sql = format!(
        "SELECT {} FROM revisions r WHERE r.id = $1{}",
        revision_columns_as("r", ""),
        c.dialect().for_update()
    );
    revision(&c.fetch_one(query(sql).bind(revision_id)).await?)
}

/// Inserts log lines, many per statement.
async fn insert_logs<C: Conn>(c: &mut C, lines: &[NewLogLine]) -> Result<()> {
    for chunk in lines.chunks(LOG_LINES_PER_INSERT) {
        let values = (0..chunk.len())
            .map(|i| {
                let n = i * 6;
                format!(
                    "(${}, ${}, ${}, ${}, ${}, ${})",
                    n + 1,
                    n + 2,
                    n + 3,
                    n + 4,
                    n + 5,
                    n + 6
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut q = query(format!(
            "INSERT INTO logs (deployment_id, revision_id, kind, at, level, message) \
             VALUES {values}"
        ));
        for l in chunk {
            q = q
                .bind(l.deployment_id)
                .bind(l.revision_id)
                .bind(l.kind)
                .bind(l.at.timestamp_micros())
                .bind(&l.level)
                .bind(&l.message);
        }
        c.execute(q).await?;
    }
    Ok(())
}

#[async_trait]
impl<B: Backend> DataPlaneStore for B {
    fn subscribe(&self, listener: Uuid) -> tokio::sync::watch::Receiver<i64> {
        self.changes().subscribe(listener)
    }

    fn wake_all(&self) {
        self.changes().wake_all();
    }

    async fn heartbeat(&self, listener: Uuid, beat: AgentBeat) -> Result<Option<i64>> {
        self.write(work(move |c: &mut B::Conn| {
            Box::pin(async move {
                let now = now_micros();
                // Revisions before the listener: the lock order of every write.
                let sql = format!(
                    "UPDATE revisions SET lease_expires_at = $1 \
                     WHERE lease_holder = $2 AND status IN ({}) \
                       AND deployment_id IN (SELECT id FROM deployments WHERE listener_id = $3)",
                    status_list(RevisionStatus::leased())
                );
                let q = query(sql)
                    .bind(beat.lease_until.timestamp_micros())
                    .bind(&beat.agent_id)
                    .bind(listener);
                c.execute(q).await?;
                let sql = format!(
                    "UPDATE listeners SET \
                       updated_at = CASE WHEN version IS NOT DISTINCT FROM $2 THEN updated_at \
                         ELSE {}($3, updated_at + 1) END, \
                       version = $2, last_seen_at = $3, agent = $4 \
                     WHERE id = $1 RETURNING generation",
                    c.dialect().greatest()
                );
                let q = query(sql)
                    .bind(listener)
                    .bind(&beat.version)
                    .bind(now)
                    .bind(&beat.facts);
                let generation = c.fetch_optional(q).await?;
                let generation = generation.map(|r| r.int("generation")).transpose()?;
                Ok((generation, Vec::new()))
            })
        }))
        .await
    }

    async fn desired(&self, listener_id: Uuid) -> Result<Option<DesiredRows>> {
        self.snapshot(work(move |c: &mut B::Conn| {
            Box::pin(async move {
                let sql =
                    format!("SELECT {LISTENER_COLUMNS}, generation FROM listeners WHERE id = $1");
                let Some(row) = c.fetch_optional(query(sql).bind(listener_id)).await? else {
                    return Ok(None);
                };
                let (found, generation) = (listener(&row)?, row.int("generation")?);
                let sql = format!(
                    "SELECT {}, {}, {} FROM deployments d \
                     LEFT JOIN revisions l ON l.id = d.latest_revision_id \
                     LEFT JOIN revisions a ON a.id = d.active_revision_id \
                     WHERE d.listener_id = $1 ORDER BY d.created_at, d.id",
                    qualified("d", DEPLOYMENT_COLUMNS),
                    revision_columns_as("l", "l_"),
                    revision_columns_as("a", "a_"),
                );
                let rows = c.fetch_all(query(sql).bind(listener_id)).await?;
                let deployments = rows
                    .iter()
                    .map(|r| {
                        Ok(PlacedDeployment {
                            deployment: deployment(r)?,
                            latest: optional_revision(r, "l_")?,
                            active: optional_revision(r, "a_")?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Some(DesiredRows {
                    listener: found,
                    generation,
                    deployments,
                }))
            })
        }))
        .await
    }

    async fn claim(
        &self,
        listener: Uuid,
        revision_id: Uuid,
        agent_id: &str,
        lease_until: chrono::DateTime<chrono::Utc>,
    ) -> Result<ClaimOutcome> {
        let agent = agent_id.to_owned();
        self.write(work(move |c: &mut B::Conn| {
            Box::pin(async move {
                let Some(dep) = lock_deployment_of(c, revision_id, listener).await? else {
                    return Ok((ClaimOutcome::NotFound, Vec::new()));
                };
                if dep.status == DeploymentStatus::AwaitingDelete {
                    return Ok((ClaimOutcome::Deleting, Vec::new()));
                }
                let rev = lock_revision(c, revision_id).await?;
                let now = now_micros();
                let lease = &rev.data_plane;
                let expires = lease.lease_expires_at.map_or(0, |t| t.timestamp_micros());
                let holder = lease.lease_holder.as_deref();
                let next = match lifecycle::claim(rev.status, holder, expires >= now, &agent) {
                    Ok(next) => next,
                    Err(ClaimRefusal::NotClaimable) => {
                        return Ok((ClaimOutcome::NotClaimable(rev.status), Vec::new()))
                    }
                    Err(ClaimRefusal::Held) => {
                        let until = micros_to_time(expires)?;
                        let held = ClaimOutcome::Held {
                            status: rev.status,
                            until,
                        };
                        return Ok((held, Vec::new()));
                    }
                };
                let sql = format!(
                    "UPDATE revisions SET status = $2, lease_holder = $3, lease_expires_at = $4, \
                       updated_at = CASE WHEN status = $2 THEN updated_at \
                         ELSE {}($5, updated_at + 1) END \
                     WHERE id = $1",
                    c.dialect().greatest()
                );
                let q = query(sql)
                    .bind(revision_id)
                    .bind(next.as_str())
                    .bind(&agent)
                    .bind(lease_until.timestamp_micros())
                    .bind(now);
                c.execute(q).await?;
                let bumps = c.bump(BumpOf::Listener(listener)).await?;
                let claimed = ClaimOutcome::Claimed {
                    status: next,
                    lease_expires_at: lease_until,
                };
                Ok((claimed, bumps))
            })
        }))
        .await
    }

    async fn report(
        &self,
        listener: Uuid,
        revision_id: Uuid,
        report: Report,
    ) -> Result<ReportOutcome> {
        self.write(work(move |c: &mut B::Conn| {
            Box::pin(async move {
                let Some(dep) = lock_deployment_of(c, revision_id, listener).await? else {
                    return Ok((ReportOutcome::NotFound, Vec::new()));
                };
                let rev = lock_revision(c, revision_id).await?;
                let effect = match lifecycle::report_effect(&rev, dep, &report) {
                    Ok(Some(effect)) => effect,
                    Ok(None) => return Ok((ReportOutcome::Done(rev.status), Vec::new())),
                    Err(ReportRefusal::NotAllowed) => {
                        let refused = ReportOutcome::NotAllowed {
                            from: rev.status,
                            to: report.status,
                        };
                        return Ok((refused, Vec::new()));
                    }
                    Err(ReportRefusal::NotHolder) => {
                        return Ok((ReportOutcome::NotHolder(rev.status), Vec::new()))
                    }
                };
                let now = now_micros();
                let sql = format!(
                    "UPDATE revisions SET status = $2, lease_holder = NULL, \
                       lease_expires_at = NULL, image = COALESCE($3, image), \
                       status_reason = $4, status_message = $5, {} \
                     WHERE id = $1",
                    c.dialect().advance("updated_at", "$6")
                );
                let q = query(sql)
                    .bind(revision_id)
                    .bind(effect.revision.as_str())
                    .bind(&report.image)
                    .bind(&report.reason)
                    .bind(&report.message)
                    .bind(now);
                c.execute(q).await?;
                if let Some(status) = effect.activate {
                    let sql = format!(
                        "UPDATE deployments SET active_revision_id = $2, status = $3, {} \
                         WHERE id = $1",
                        c.dialect().advance("updated_at", "$4")
                    );
                    let q = query(sql)
                        .bind(rev.deployment_id)
                        .bind(revision_id)
                        .bind(status.as_str())
                        .bind(now);
                    c.execute(q).await?;
                }
                if effect.skip_older {
                    let created = rev.created_at.timestamp_micros();
                    skip_waiting(c, rev.deployment_id, Some(created), now).await?;
                }
                let (kind, level, message) = effect.log;
                let line = NewLogLine {
                    deployment_id: rev.deployment_id,
                    revision_id,
                    kind,
                    at: micros_to_time(now)?,
                    level: level.into(),
                    message,
                };
                insert_logs(c, std::slice::from_ref(&line)).await?;
                let bumps = c.bump(BumpOf::Listener(listener)).await?;
                Ok((ReportOutcome::Done(effect.revision), bumps))
            })
        }))
        .await
    }

    async fn build_source(&self, listener: Uuid, revision_id: Uuid) -> Result<Option<BuildSource>> {
        let q = query(format!(
            "SELECT {}, d.workspace_id, d.source_config AS d_source_config \
             FROM revisions r JOIN deployments d ON d.id = r.deployment_id \
             WHERE r.id = $1 AND d.listener_id = $2",
            revision_columns_as("r", "")
        ));
        self.read_one(q.bind(revision_id).bind(listener), build_source)
            .await
    }

    async fn confirm_deleted(&self, listener: Uuid, deployment_id: Uuid) -> Result<DeletedOutcome> {
        self.write(work(move |c: &mut B::Conn| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT status FROM deployments WHERE id = $1 AND listener_id = $2{}",
                    c.dialect().for_update()
                );
                let q = query(sql).bind(deployment_id).bind(listener);
                let Some(row) = c.fetch_optional(q).await? else {
                    return Ok((DeletedOutcome::NotFound, Vec::new()));
                };
                let status = deployment_status(&row.text("status")?)?;
                if status != DeploymentStatus::AwaitingDelete {
                    return Ok((DeletedOutcome::NotDeleting(status), Vec::new()));
                }
                let q = query("DELETE FROM deployments WHERE id = $1");
                c.execute(q.bind(deployment_id)).await?;
                let bumps = c.bump(BumpOf::Listener(listener)).await?;
                Ok((DeletedOutcome::Gone, bumps))
            })
        }))
        .await
    }

    async fn append_logs(&self, listener: Uuid, lines: Vec<NewLogLine>, keep: i64) -> Result<()> {
        self.write(work(move |c: &mut B::Conn| {
            Box::pin(async move {
                let mut named: Vec<Uuid> = lines.iter().map(|l| l.revision_id).collect();
                named.sort();
                named.dedup();
                let sql = format!(
                    "SELECT r.id, r.deployment_id FROM revisions r \
                     JOIN deployments d ON d.id = r.deployment_id \
                     WHERE d.listener_id = $1 AND r.id {}",
                    c.dialect().any("$2")
                );
                let owned = c
                    .fetch_all(query(sql).bind(listener).bind(named.as_slice()))
                    .await?
                    .iter()
                    .map(|r| Ok((r.uuid("deployment_id")?, r.uuid("id")?)))
                    .collect::<Result<std::collections::HashSet<_>>>()?;
                if lines
                    .iter()
                    .any(|l| !owned.contains(&(l.deployment_id, l.revision_id)))
                {
                    return Err(StoreError::NotFound);
                }
                insert_logs(c, &lines).await?;
                let mut kinds: Vec<(Uuid, &str)> =
                    lines.iter().map(|l| (l.deployment_id, l.kind)).collect();
                kinds.sort();
                kinds.dedup();
                for (dep, kind) in kinds {
                    let q = query(
                        "DELETE FROM logs WHERE deployment_id = $1 AND kind = $2 AND seq <= \
                           (SELECT seq FROM logs WHERE deployment_id = $1 AND kind = $2 \
                            ORDER BY seq DESC LIMIT 1 OFFSET $3)",
                    );
                    c.execute(q.bind(dep).bind(kind).bind(keep)).await?;
                }
                Ok(((), Vec::new()))
            })
        }))
        .await
    }

    async fn read_logs(&self, workspace: Uuid, q: &LogQuery) -> Result<Option<Vec<LogEntry>>> {
        let exists = query("SELECT id FROM deployments WHERE id = $1 AND workspace_id = $2");
        let exists = exists.bind(q.deployment_id).bind(workspace);
        if self.read_one(exists, |_| Ok(())).await?.is_none() {
            return Ok(None);
        }
        let (cmp, order) = if q.descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        let sql = format!(
            "SELECT seq, at, level, message FROM logs WHERE deployment_id = $1 AND kind = $2 \
               AND ($3 IS NULL OR revision_id = $3) \
               AND ($4 IS NULL OR level = $4) \
               AND ($5 IS NULL OR {position}(message, $5) > 0) \
               AND ($6 IS NULL OR at >= $6) AND ($7 IS NULL OR at <= $7) \
               AND ($8 IS NULL OR (at, seq) {cmp} ($8, $9)) \
             ORDER BY at {order}, seq {order} LIMIT $10",
            position = B::Conn::DIALECT.position()
        );
        let lines = query(sql)
            .bind(q.deployment_id)
            .bind(q.kind)
            .bind(q.revision_id)
            .bind(&q.level)
            .bind(&q.contains)
            .bind(q.since.map(|t| t.timestamp_micros()))
            .bind(q.until.map(|t| t.timestamp_micros()))
            .bind(q.cursor.map(|c| c.0))
            .bind(q.cursor.map(|c| c.1))
            .bind(q.limit);
        self.read(lines, log_entry).await.map(Some)
    }

    async fn release_expired_leases(&self) -> Result<u64> {
        self.write(work(move |c: &mut B::Conn| {
            Box::pin(async move {
                let now = now_micros();
                let sql = format!(
                    "SELECT r.id, r.status, d.listener_id FROM revisions r \
                     JOIN deployments d ON d.id = r.deployment_id \
                     WHERE r.lease_holder IS NOT NULL AND r.lease_expires_at < $1 \
                       AND r.status IN ({}){}",
                    status_list(RevisionStatus::leased()),
                    c.dialect().for_update_of("r")
                );
                let rows = c.fetch_all(query(sql).bind(now)).await?;
                let mut listeners = std::collections::BTreeSet::new();
                for row in &rows {
                    let status = revision_status(&row.text("status")?)?;
                    let Some(back) = lifecycle::released_status(status) else {
                        continue;
                    };
                    let sql = format!(
                        "UPDATE revisions SET status = $2, lease_holder = NULL, \
                           lease_expires_at = NULL, {} WHERE id = $1",
                        c.dialect().advance("updated_at", "$3")
                    );
                    let q = query(sql)
                        .bind(row.uuid("id")?)
                        .bind(back.as_str())
                        .bind(now);
                    c.execute(q).await?;
                    if let Some(l) = row.opt_uuid("listener_id")? {
                        listeners.insert(l);
                    }
                }
                let mut bumps = Vec::new();
                for l in listeners {
                    bumps.extend(c.bump(BumpOf::Listener(l)).await?);
                }
                Ok((rows.len() as u64, bumps))
            })
        }))
        .await
    }
}
