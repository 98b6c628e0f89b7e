//! The data plane's side of the PostgreSQL backend. Writes lock rows in one order
//! (deployment, revision, listener) so that they cannot deadlock, and announce the
//! generations they move with `NOTIFY` on [`CHANNEL`], which every replica listens to.

use super::{in_tx, PgStore};
use crate::lifecycle::{self, DeploymentStatus, RevisionStatus};
use crate::records::*;
use crate::rows::{build_source, deployment, listener, log_entry, optional_revision, qualified};
use crate::rows::{deployment_status, revision, revision_columns_as, Columns};
use crate::rows::{DEPLOYMENT_COLUMNS, LISTENER_COLUMNS};
use crate::{now_micros, Result, StoreError};
use async_trait::async_trait;
use sqlx::PgConnection;
use uuid::Uuid;

/// The `NOTIFY` channel of generation changes; payload `<listener id>:<generation>`.
pub(super) const CHANNEL: &str = "hostplane_generations";

/// Moves the generation of `listener` and announces it at commit.
pub(super) async fn bump_listener(conn: &mut PgConnection, listener: Uuid) -> Result<Vec<Bump>> {
    let g: Option<i64> = sqlx::query_scalar(
        "WITH b AS (UPDATE listeners SET generation = generation + 1 WHERE id = $1 \
           RETURNING id, generation) \
         SELECT b.generation FROM b, \
           LATERAL (SELECT pg_notify($2, b.id::text || ':' || b.generation::text)) n",
    )
    .bind(listener)
    .bind(CHANNEL)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(g.map(|g| (listener, g)).into_iter().collect())
}

/// Moves the generation of the listener `deployment` is placed on (if any) and
/// announces it at commit, in one statement.
pub(super) async fn bump_for_deployment(
    conn: &mut PgConnection,
    deployment: Uuid,
) -> Result<Vec<Bump>> {
    let row: Option<(Uuid, i64)> = sqlx::query_as(
        "WITH b AS (UPDATE listeners SET generation = generation + 1 \
           WHERE id = (SELECT listener_id FROM deployments WHERE id = $1) \
           RETURNING id, generation) \
         SELECT b.id, b.generation FROM b, \
           LATERAL (SELECT pg_notify($2, b.id::text || ':' || b.generation::text)) n",
    )
    .bind(deployment)
    .bind(CHANNEL)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.into_iter().collect())
}

/// Follows [`CHANNEL`] on a connection of its own and wakes local pollers; after a lost
/// connection (notifications may have been missed) it wakes them all.
pub(super) fn follow_notifications(
    pool: sqlx::PgPool,
    changes: std::sync::Arc<crate::changes::Changes>,
) {
    tokio::spawn(async move {
        loop {
            let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for data-plane changes; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(e) = listener.listen(CHANNEL).await {
                tracing::warn!(error = %e, "LISTEN failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            changes.wake_all();
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => {
                        if let Some((id, generation)) = n.payload().split_once(':') {
                            if let (Ok(id), Ok(g)) = (Uuid::parse_str(id), generation.parse()) {
                                changes.bump(id, g);
                            }
                        }
                    }
                    // The connection dropped: anything may have been missed.
                    Ok(None) => changes.wake_all(),
                    Err(e) => {
                        tracing::warn!(error = %e, "data-plane change feed lost; reconnecting");
                        changes.wake_all();
                        break;
                    }
                }
            }
        }
    });
}

impl PgStore {
    /// [`in_tx`], then announces the generations `f` moved to this replica's pollers
    /// at once (the others hear the `NOTIFY`).
    pub(super) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut PgConnection) -> crate::BoxFut<'c, Result<(T, Vec<Bump>)>>
            + Send
            + 'static,
    {
        let (value, bumps) = in_tx(&self.pool, f).await?;
        for (listener, generation) in bumps {
            self.changes.bump(listener, generation);
        }
        Ok(value)
    }
}

/// Locks the deployment of a revision placed on the listener; its status.
async fn lock_deployment_of(
    conn: &mut PgConnection,
    revision_id: Uuid,
    listener: Uuid,
) -> Result<Option<DeploymentStatus>> {
    let status: Option<String> = sqlx::query_scalar(
        "SELECT d.status FROM deployments d JOIN revisions r ON r.deployment_id = d.id \
         WHERE r.id = $1 AND d.listener_id = $2 FOR UPDATE OF d",
    )
    .bind(revision_id)
    .bind(listener)
    .fetch_optional(&mut *conn)
    .await?;
    status.as_deref().map(deployment_status).transpose()
}

async fn lock_revision(conn: &mut PgConnection, revision_id: Uuid) -> Result<Revision> {
    let sql = format!(
        "SELECT {} FROM revisions r WHERE r.id = $1 FOR UPDATE",
        revision_columns_as("r", "")
    );
    let row = sqlx::query(&sql)
        .bind(revision_id)
        .fetch_one(&mut *conn)
        .await?;
    revision(&row)
}

#[async_trait]
impl crate::DataPlaneStore for PgStore {
    fn subscribe(&self, listener: Uuid) -> tokio::sync::watch::Receiver<i64> {
        self.changes.subscribe(listener)
    }

    fn wake_all(&self) {
        self.changes.wake_all();
    }

    async fn heartbeat(&self, listener: Uuid, beat: AgentBeat) -> Result<Option<i64>> {
        self.write(move |conn| {
            Box::pin(async move {
                let now = now_micros();
                // Revisions before the listener: the lock order of every write.
                sqlx::query(
                    "UPDATE revisions SET lease_expires_at = $1 \
                     WHERE lease_holder = $2 AND status IN ('BUILDING', 'DEPLOYING') \
                       AND deployment_id IN (SELECT id FROM deployments WHERE listener_id = $3)",
                )
                .bind(beat.lease_until.timestamp_micros())
                .bind(&beat.agent_id)
                .bind(listener)
                .execute(&mut *conn)
                .await?;
                let generation: Option<i64> = sqlx::query_scalar(
                    "UPDATE listeners SET \
                       updated_at = CASE WHEN version IS NOT DISTINCT FROM $2 THEN updated_at \
                         ELSE GREATEST($3, updated_at + 1) END, \
                       version = $2, last_seen_at = $3, agent = $4 \
                     WHERE id = $1 RETURNING generation",
                )
                .bind(listener)
                .bind(&beat.version)
                .bind(now)
                .bind(&beat.facts)
                .fetch_optional(&mut *conn)
                .await?;
                Ok((generation, Vec::new()))
            })
        })
        .await
    }

    async fn desired(&self, listener_id: Uuid) -> Result<Option<DesiredRows>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let sql = format!("SELECT {LISTENER_COLUMNS}, generation FROM listeners WHERE id = $1");
        let Some(row) = sqlx::query(&sql)
            .bind(listener_id)
            .fetch_optional(&mut *tx)
            .await?
        else {
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
        let rows = sqlx::query(&sql)
            .bind(listener_id)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
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
    }

    async fn claim(
        &self,
        listener: Uuid,
        revision_id: Uuid,
        agent_id: &str,
        lease_until: chrono::DateTime<chrono::Utc>,
    ) -> Result<ClaimOutcome> {
        let agent = agent_id.to_owned();
        self.write(move |conn| {
            Box::pin(async move {
                let Some(d_status) = lock_deployment_of(conn, revision_id, listener).await? else {
                    return Ok((ClaimOutcome::NotFound, Vec::new()));
                };
                if d_status == DeploymentStatus::AwaitingDelete {
                    return Ok((ClaimOutcome::Deleting, Vec::new()));
                }
                let rev = lock_revision(conn, revision_id).await?;
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
                        let until = crate::records::micros_to_time(expires)?;
                        let held = ClaimOutcome::Held {
                            status: rev.status,
                            until,
                        };
                        return Ok((held, Vec::new()));
                    }
                };
                sqlx::query(
                    "UPDATE revisions SET status = $2, lease_holder = $3, lease_expires_at = $4, \
                       updated_at = CASE WHEN status = $2 THEN updated_at \
                         ELSE GREATEST($5, updated_at + 1) END \
                     WHERE id = $1",
                )
                .bind(revision_id)
                .bind(next.as_str())
                .bind(&agent)
                .bind(lease_until.timestamp_micros())
                .bind(now)
                .execute(&mut *conn)
                .await?;
                let bumps = bump_listener(conn, listener).await?;
                let claimed = ClaimOutcome::Claimed {
                    status: next,
                    lease_expires_at: lease_until,
                };
                Ok((claimed, bumps))
            })
        })
        .await
    }

    async fn report(
        &self,
        listener: Uuid,
        revision_id: Uuid,
        report: Report,
    ) -> Result<ReportOutcome> {
        self.write(move |conn| {
            Box::pin(async move {
                if lock_deployment_of(conn, revision_id, listener).await?.is_none() {
                    return Ok((ReportOutcome::NotFound, Vec::new()));
                }
                let rev = lock_revision(conn, revision_id).await?;
                let decision = lifecycle::report(
                    rev.status,
                    rev.data_plane.lease_holder.as_deref(),
                    &report.agent_id,
                    rev.data_plane.image.as_deref(),
                    report.status,
                    report.image.as_deref(),
                );
                let next = match decision {
                    Ok(Some(next)) => next,
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
                sqlx::query(
                    "UPDATE revisions SET status = $2, lease_holder = NULL, lease_expires_at = NULL, \
                       image = COALESCE($3, image), status_reason = $4, status_message = $5, \
                       updated_at = GREATEST($6, updated_at + 1) \
                     WHERE id = $1",
                )
                .bind(revision_id)
                .bind(next.as_str())
                .bind(&report.image)
                .bind(&report.reason)
                .bind(&report.message)
                .bind(now)
                .execute(&mut *conn)
                .await?;
                if next == RevisionStatus::Deployed {
                    let created = rev.created_at.timestamp_micros();
                    sqlx::query(
                        "UPDATE deployments d SET active_revision_id = $2, \
                           status = CASE WHEN status = $3 THEN status ELSE $4 END, \
                           updated_at = GREATEST($5, updated_at + 1) \
                         WHERE id = $1 AND (active_revision_id IS NULL OR $6 >= \
                           (SELECT created_at FROM revisions WHERE id = d.active_revision_id))",
                    )
                    .bind(rev.deployment_id)
                    .bind(revision_id)
                    .bind(DeploymentStatus::AwaitingDelete.as_str())
                    .bind(DeploymentStatus::Ready.as_str())
                    .bind(now)
                    .bind(created)
                    .execute(&mut *conn)
                    .await?;
                    let skip = format!(
                        "UPDATE revisions SET status = $1, updated_at = GREATEST($2, updated_at + 1) \
                         WHERE deployment_id = $3 AND created_at < $4 AND status IN ({})",
                        RevisionStatus::superseded_sql()
                    );
                    sqlx::query(&skip)
                        .bind(RevisionStatus::Skipped.as_str())
                        .bind(now)
                        .bind(rev.deployment_id)
                        .bind(created)
                        .execute(&mut *conn)
                        .await?;
                }
                let (kind, level, text) = lifecycle::report_log_line(
                    revision_id,
                    next,
                    report.image.as_deref(),
                    report.reason.as_deref(),
                    report.message.as_deref(),
                );
                let line = NewLogLine {
                    deployment_id: rev.deployment_id,
                    revision_id,
                    kind,
                    at: crate::records::micros_to_time(now)?,
                    level: level.into(),
                    message: text,
                };
                insert_logs(conn, std::slice::from_ref(&line)).await?;
                let bumps = bump_listener(conn, listener).await?;
                Ok((ReportOutcome::Done(next), bumps))
            })
        })
        .await
    }

    async fn build_source(&self, listener: Uuid, revision_id: Uuid) -> Result<Option<BuildSource>> {
        let sql = format!(
            "SELECT {} FROM revisions r JOIN deployments d ON d.id = r.deployment_id \
             WHERE r.id = $1 AND d.listener_id = $2",
            revision_columns_as("r", "")
        );
        let row = sqlx::query(&sql)
            .bind(revision_id)
            .bind(listener)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref()
            .map(|r| build_source(&revision(r)?))
            .transpose()
    }

    async fn confirm_deleted(&self, listener: Uuid, deployment_id: Uuid) -> Result<DeletedOutcome> {
        self.write(move |conn| {
            Box::pin(async move {
                let status: Option<String> = sqlx::query_scalar(
                    "SELECT status FROM deployments WHERE id = $1 AND listener_id = $2 FOR UPDATE",
                )
                .bind(deployment_id)
                .bind(listener)
                .fetch_optional(&mut *conn)
                .await?;
                let Some(status) = status else {
                    return Ok((DeletedOutcome::NotFound, Vec::new()));
                };
                let status = deployment_status(&status)?;
                if status != DeploymentStatus::AwaitingDelete {
                    return Ok((DeletedOutcome::NotDeleting(status), Vec::new()));
                }
                sqlx::query("DELETE FROM deployments WHERE id = $1")
                    .bind(deployment_id)
                    .execute(&mut *conn)
                    .await?;
                let bumps = bump_listener(conn, listener).await?;
                Ok((DeletedOutcome::Gone, bumps))
            })
        })
        .await
    }

    async fn append_logs(&self, listener: Uuid, lines: Vec<NewLogLine>, keep: i64) -> Result<()> {
        self.write(move |conn| {
            Box::pin(async move {
                let mut pairs: Vec<(Uuid, Uuid)> = lines
                    .iter()
                    .map(|l| (l.deployment_id, l.revision_id))
                    .collect();
                pairs.sort();
                pairs.dedup();
                let (deps, revs): (Vec<Uuid>, Vec<Uuid>) = pairs.iter().copied().unzip();
                let owned: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM UNNEST($1::uuid[], $2::uuid[]) AS p(dep, rev) \
                     JOIN revisions r ON r.id = p.rev AND r.deployment_id = p.dep \
                     JOIN deployments d ON d.id = p.dep AND d.listener_id = $3",
                )
                .bind(&deps)
                .bind(&revs)
                .bind(listener)
                .fetch_one(&mut *conn)
                .await?;
                if owned != pairs.len() as i64 {
                    return Err(StoreError::NotFound);
                }
                insert_logs(conn, &lines).await?;
                let mut kinds: Vec<(Uuid, &str)> =
                    lines.iter().map(|l| (l.deployment_id, l.kind)).collect();
                kinds.sort();
                kinds.dedup();
                for (dep, kind) in kinds {
                    sqlx::query(
                        "DELETE FROM logs WHERE deployment_id = $1 AND kind = $2 AND seq <= \
                           (SELECT seq FROM logs WHERE deployment_id = $1 AND kind = $2 \
                            ORDER BY seq DESC LIMIT 1 OFFSET $3)",
                    )
                    .bind(dep)
                    .bind(kind)
                    .bind(keep)
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(((), Vec::new()))
            })
        })
        .await
    }

    async fn read_logs(&self, workspace: Uuid, q: &LogQuery) -> Result<Option<Vec<LogEntry>>> {
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM deployments WHERE id = $1 AND workspace_id = $2")
                .bind(q.deployment_id)
                .bind(workspace)
                .fetch_optional(&self.pool)
                .await?;
        if exists.is_none() {
            return Ok(None);
        }
        let (cmp, order) = if q.descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        let sql = format!(
            "SELECT seq, at, level, message FROM logs WHERE deployment_id = $1 AND kind = $2 \
               AND ($3::uuid IS NULL OR revision_id = $3) \
               AND ($4::text IS NULL OR level = $4) \
               AND ($5::text IS NULL OR strpos(message, $5) > 0) \
               AND ($6::bigint IS NULL OR at >= $6) AND ($7::bigint IS NULL OR at <= $7) \
               AND ($8::bigint IS NULL OR (at, seq) {cmp} ($8, $9::bigint)) \
             ORDER BY at {order}, seq {order} LIMIT $10"
        );
        let rows = sqlx::query(&sql)
            .bind(q.deployment_id)
            .bind(q.kind)
            .bind(q.revision_id)
            .bind(&q.level)
            .bind(&q.contains)
            .bind(q.since.map(|t| t.timestamp_micros()))
            .bind(q.until.map(|t| t.timestamp_micros()))
            .bind(q.cursor.map(|c| c.0))
            .bind(q.cursor.map(|c| c.1))
            .bind(q.limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(log_entry).collect::<Result<_>>().map(Some)
    }

    async fn release_expired_leases(&self) -> Result<u64> {
        self.write(move |conn| {
            Box::pin(async move {
                let now = now_micros();
                use RevisionStatus::{AwaitingBuild, AwaitingDeploy, Building, Deploying};
                let sql = format!(
                    "UPDATE revisions r SET \
                       status = CASE r.status WHEN '{}' THEN '{}' ELSE '{}' END, \
                       lease_holder = NULL, lease_expires_at = NULL, \
                       updated_at = GREATEST($1, r.updated_at + 1) \
                     FROM deployments d \
                     WHERE d.id = r.deployment_id AND r.lease_holder IS NOT NULL \
                       AND r.lease_expires_at < $1 AND r.status IN ('{}', '{}') \
                     RETURNING d.listener_id",
                    Building.as_str(),
                    AwaitingBuild.as_str(),
                    AwaitingDeploy.as_str(),
                    Building.as_str(),
                    Deploying.as_str(),
                );
                debug_assert_eq!(lifecycle::released_status(Deploying), Some(AwaitingDeploy));
                let rows = sqlx::query(&sql).bind(now).fetch_all(&mut *conn).await?;
                let mut listeners = std::collections::BTreeSet::new();
                for row in &rows {
                    if let Some(l) = row.opt_uuid("listener_id")? {
                        listeners.insert(l);
                    }
                }
                let mut bumps = Vec::new();
                for l in listeners {
                    bumps.extend(bump_listener(conn, l).await?);
                }
                Ok((rows.len() as u64, bumps))
            })
        })
        .await
    }
}

/// Inserts log lines in one statement.
async fn insert_logs(conn: &mut PgConnection, lines: &[NewLogLine]) -> Result<()> {
    let mut deps = Vec::with_capacity(lines.len());
    let mut revs = Vec::with_capacity(lines.len());
    let mut kinds = Vec::with_capacity(lines.len());
    let mut ats = Vec::with_capacity(lines.len());
    let mut levels = Vec::with_capacity(lines.len());
    let mut messages = Vec::with_capacity(lines.len());
    for l in lines {
        deps.push(l.deployment_id);
        revs.push(l.revision_id);
        kinds.push(l.kind);
        ats.push(l.at.timestamp_micros());
        levels.push(l.level.as_str());
        messages.push(l.message.as_str());
    }
    sqlx::query(
        "INSERT INTO logs (deployment_id, revision_id, kind, at, level, message) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], \
           $6::text[])",
    )
    .bind(&deps)
    .bind(&revs)
    .bind(&kinds)
    .bind(&ats)
    .bind(&levels)
    .bind(&messages)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
