//! The data plane's side of the SQLite backend: heartbeats, desired state, claims,
//! reports, deletions confirmed, logs, expired leases. Writes run under `BEGIN IMMEDIATE`
//! and announce the generations they moved after their commit.

use super::{immediate, SqliteStore};
use crate::lifecycle::{self, DeploymentStatus, RevisionStatus};
use crate::records::*;
use crate::rows::{build_source, deployment, listener, log_entry, optional_revision, qualified};
use crate::rows::{deployment_status, revision, revision_columns_as, revision_status, Columns};
use crate::rows::{DEPLOYMENT_COLUMNS, LISTENER_COLUMNS};
use crate::{now_micros, Result, StoreError};
use async_trait::async_trait;
use sqlx::SqliteConnection;
use uuid::Uuid;

/// Moves the generation of `listener`.
pub(super) async fn bump_listener(
    conn: &mut SqliteConnection,
    listener: Uuid,
) -> Result<Vec<Bump>> {
    let g: Option<i64> = sqlx::query_scalar(
        "UPDATE listeners SET generation = generation + 1 WHERE id = ? RETURNING generation",
    )
    .bind(listener.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(g.map(|g| (listener, g)).into_iter().collect())
}

/// Moves the generation of the listener `deployment` is placed on (if any), in one
/// statement: it runs inside the write lock of every deployment write.
pub(super) async fn bump_for_deployment(
    conn: &mut SqliteConnection,
    deployment: Uuid,
) -> Result<Vec<Bump>> {
    let row: Option<(String, i64)> = sqlx::query_as(
        "UPDATE listeners SET generation = generation + 1 \
         WHERE id = (SELECT listener_id FROM deployments WHERE id = ?) \
         RETURNING id, generation",
    )
    .bind(deployment.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|(id, g)| {
        Uuid::parse_str(&id)
            .map(|id| (id, g))
            .map_err(|e| StoreError::Other(format!("listener id: {e}")))
    })
    .into_iter()
    .collect()
}

impl SqliteStore {
    pub(super) fn announce(&self, bumps: &[Bump]) {
        for &(listener, generation) in bumps {
            self.changes.bump(listener, generation);
        }
    }

    /// [`immediate`], then announces the generations `f` moved.
    pub(super) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> crate::BoxFut<'c, Result<(T, Vec<Bump>)>>
            + Send
            + 'static,
    {
        let (value, bumps) = immediate(&self.pool, f).await?;
        self.announce(&bumps);
        Ok(value)
    }
}

/// From a revision `r` (`?1`) of a deployment `d` placed on the listener (`?2`).
const REVISION_IN_LISTENER: &str = "FROM revisions r JOIN deployments d ON d.id = r.deployment_id \
     WHERE r.id = ?1 AND d.listener_id = ?2";

#[async_trait]
impl crate::DataPlaneStore for SqliteStore {
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
                let generation: Option<i64> = sqlx::query_scalar(
                    "UPDATE listeners SET \
                       updated_at = CASE WHEN version IS ?2 THEN updated_at \
                         ELSE MAX(?3, updated_at + 1) END, \
                       version = ?2, last_seen_at = ?3, agent = ?4 \
                     WHERE id = ?1 RETURNING generation",
                )
                .bind(listener.to_string())
                .bind(&beat.version)
                .bind(now)
                .bind(&beat.facts)
                .fetch_optional(&mut *conn)
                .await?;
                if generation.is_some() {
                    sqlx::query(
                        "UPDATE revisions SET lease_expires_at = ?1 \
                         WHERE lease_holder = ?2 AND status IN ('BUILDING', 'DEPLOYING') \
                           AND deployment_id IN (SELECT id FROM deployments WHERE listener_id = ?3)",
                    )
                    .bind(beat.lease_until.timestamp_micros())
                    .bind(&beat.agent_id)
                    .bind(listener.to_string())
                    .execute(&mut *conn)
                    .await?;
                }
                Ok((generation, Vec::new()))
            })
        })
        .await
    }

    async fn desired(&self, listener_id: Uuid) -> Result<Option<DesiredRows>> {
        let mut tx = self.pool.begin().await?;
        let sql = format!("SELECT {LISTENER_COLUMNS}, generation FROM listeners WHERE id = ?");
        let Some(row) = sqlx::query(&sql)
            .bind(listener_id.to_string())
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
             WHERE d.listener_id = ? ORDER BY d.created_at, d.id",
            qualified("d", DEPLOYMENT_COLUMNS),
            revision_columns_as("l", "l_"),
            revision_columns_as("a", "a_"),
        );
        let rows = sqlx::query(&sql)
            .bind(listener_id.to_string())
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
                let sql = format!(
                    "SELECT r.status, r.lease_holder, r.lease_expires_at, d.status AS d_status \
                     {REVISION_IN_LISTENER}"
                );
                let Some(row) = sqlx::query(&sql)
                    .bind(revision_id.to_string())
                    .bind(listener.to_string())
                    .fetch_optional(&mut *conn)
                    .await?
                else {
                    return Ok((ClaimOutcome::NotFound, Vec::new()));
                };
                let now = now_micros();
                let status = revision_status(&row.text("status")?)?;
                if deployment_status(&row.text("d_status")?)? == DeploymentStatus::AwaitingDelete {
                    return Ok((ClaimOutcome::Deleting, Vec::new()));
                }
                let holder = row.opt_text("lease_holder")?;
                let expires = row.opt_int("lease_expires_at")?.unwrap_or(0);
                let next = match lifecycle::claim(status, holder.as_deref(), expires >= now, &agent)
                {
                    Ok(next) => next,
                    Err(ClaimRefusal::NotClaimable) => {
                        return Ok((ClaimOutcome::NotClaimable(status), Vec::new()))
                    }
                    Err(ClaimRefusal::Held) => {
                        let until = crate::records::micros_to_time(expires)?;
                        return Ok((ClaimOutcome::Held { status, until }, Vec::new()));
                    }
                };
                sqlx::query(
                    "UPDATE revisions SET status = ?2, lease_holder = ?3, lease_expires_at = ?4, \
                       updated_at = CASE WHEN status = ?2 THEN updated_at \
                         ELSE MAX(?5, updated_at + 1) END \
                     WHERE id = ?1",
                )
                .bind(revision_id.to_string())
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
                let sql = format!(
                    "SELECT {}, \
                       (SELECT created_at FROM revisions WHERE id = d.active_revision_id) \
                         AS d_active_created \
                     {REVISION_IN_LISTENER}",
                    revision_columns_as("r", "")
                );
                let Some(row) = sqlx::query(&sql)
                    .bind(revision_id.to_string())
                    .bind(listener.to_string())
                    .fetch_optional(&mut *conn)
                    .await?
                else {
                    return Ok((ReportOutcome::NotFound, Vec::new()));
                };
                let rev = revision(&row)?;
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
                    "UPDATE revisions SET status = ?2, lease_holder = NULL, lease_expires_at = NULL, \
                       image = COALESCE(?3, image), status_reason = ?4, status_message = ?5, \
                       updated_at = MAX(?6, updated_at + 1) \
                     WHERE id = ?1",
                )
                .bind(revision_id.to_string())
                .bind(next.as_str())
                .bind(&report.image)
                .bind(&report.reason)
                .bind(&report.message)
                .bind(now)
                .execute(&mut *conn)
                .await?;
                if next == RevisionStatus::Deployed {
                    let created = rev.created_at.timestamp_micros();
                    let newer_than_active = row
                        .opt_int("d_active_created")?
                        .is_none_or(|active| active <= created);
                    if newer_than_active {
                        sqlx::query(
                            "UPDATE deployments SET active_revision_id = ?2, \
                               status = CASE WHEN status = ?3 THEN status ELSE ?4 END, \
                               updated_at = MAX(?5, updated_at + 1) \
                             WHERE id = ?1",
                        )
                        .bind(rev.deployment_id.to_string())
                        .bind(revision_id.to_string())
                        .bind(DeploymentStatus::AwaitingDelete.as_str())
                        .bind(DeploymentStatus::Ready.as_str())
                        .bind(now)
                        .execute(&mut *conn)
                        .await?;
                    }
                    let skip = format!(
                        "UPDATE revisions SET status = ?1, updated_at = MAX(?2, updated_at + 1) \
                         WHERE deployment_id = ?3 AND created_at < ?4 AND status IN ({})",
                        RevisionStatus::superseded_sql()
                    );
                    sqlx::query(&skip)
                        .bind(RevisionStatus::Skipped.as_str())
                        .bind(now)
                        .bind(rev.deployment_id.to_string())
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
                insert_log(
                    conn,
                    &NewLogLine {
                        deployment_id: rev.deployment_id,
                        revision_id,
                        kind,
                        at: crate::records::micros_to_time(now)?,
                        level: level.into(),
                        message: text,
                    },
                )
                .await?;
                let bumps = bump_listener(conn, listener).await?;
                Ok((ReportOutcome::Done(next), bumps))
            })
        })
        .await
    }

    async fn build_source(&self, listener: Uuid, revision_id: Uuid) -> Result<Option<BuildSource>> {
        let sql = format!(
            "SELECT {} {REVISION_IN_LISTENER}",
            revision_columns_as("r", "")
        );
        let row = sqlx::query(&sql)
            .bind(revision_id.to_string())
            .bind(listener.to_string())
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
                    "SELECT status FROM deployments WHERE id = ? AND listener_id = ?",
                )
                .bind(deployment_id.to_string())
                .bind(listener.to_string())
                .fetch_optional(&mut *conn)
                .await?;
                let Some(status) = status else {
                    return Ok((DeletedOutcome::NotFound, Vec::new()));
                };
                let status = deployment_status(&status)?;
                if status != DeploymentStatus::AwaitingDelete {
                    return Ok((DeletedOutcome::NotDeleting(status), Vec::new()));
                }
                sqlx::query("DELETE FROM deployments WHERE id = ?")
                    .bind(deployment_id.to_string())
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
                let mut owned = std::collections::HashSet::new();
                for line in &lines {
                    if owned.insert((line.deployment_id, line.revision_id)) {
                        let found: Option<i64> = sqlx::query_scalar(
                            "SELECT 1 FROM revisions r JOIN deployments d ON d.id = \
                             r.deployment_id WHERE r.id = ? AND d.id = ? AND d.listener_id = ?",
                        )
                        .bind(line.revision_id.to_string())
                        .bind(line.deployment_id.to_string())
                        .bind(listener.to_string())
                        .fetch_optional(&mut *conn)
                        .await?;
                        if found.is_none() {
                            return Err(StoreError::NotFound);
                        }
                    }
                }
                let mut kinds = std::collections::HashSet::new();
                for line in &lines {
                    insert_log(conn, line).await?;
                    kinds.insert((line.deployment_id, line.kind));
                }
                for (dep, kind) in kinds {
                    sqlx::query(
                        "DELETE FROM logs WHERE deployment_id = ?1 AND kind = ?2 AND seq <= \
                           (SELECT seq FROM logs WHERE deployment_id = ?1 AND kind = ?2 \
                            ORDER BY seq DESC LIMIT 1 OFFSET ?3)",
                    )
                    .bind(dep.to_string())
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
        let mut tx = self.pool.begin().await?;
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM deployments WHERE id = ? AND workspace_id = ?")
                .bind(q.deployment_id.to_string())
                .bind(workspace.to_string())
                .fetch_optional(&mut *tx)
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
            "SELECT seq, at, level, message FROM logs WHERE deployment_id = ?1 AND kind = ?2 \
               AND (?3 IS NULL OR revision_id = ?3) \
               AND (?4 IS NULL OR level = ?4) \
               AND (?5 IS NULL OR instr(message, ?5) > 0) \
               AND (?6 IS NULL OR at >= ?6) AND (?7 IS NULL OR at <= ?7) \
               AND (?8 IS NULL OR (at, seq) {cmp} (?8, ?9)) \
             ORDER BY at {order}, seq {order} LIMIT ?10"
        );
        let rows = sqlx::query(&sql)
            .bind(q.deployment_id.to_string())
            .bind(q.kind)
            .bind(q.revision_id.map(|r| r.to_string()))
            .bind(&q.level)
            .bind(&q.contains)
            .bind(q.since.map(|t| t.timestamp_micros()))
            .bind(q.until.map(|t| t.timestamp_micros()))
            .bind(q.cursor.map(|c| c.0))
            .bind(q.cursor.map(|c| c.1))
            .bind(q.limit)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.iter().map(log_entry).collect::<Result<_>>().map(Some)
    }

    async fn release_expired_leases(&self) -> Result<u64> {
        self.write(move |conn| {
            Box::pin(async move {
                let now = now_micros();
                let rows = sqlx::query(
                    "SELECT r.id, r.status, d.listener_id FROM revisions r \
                     JOIN deployments d ON d.id = r.deployment_id \
                     WHERE r.lease_holder IS NOT NULL AND r.lease_expires_at < ? \
                       AND r.status IN ('BUILDING', 'DEPLOYING')",
                )
                .bind(now)
                .fetch_all(&mut *conn)
                .await?;
                let mut listeners = std::collections::BTreeSet::new();
                for row in &rows {
                    let status = revision_status(&row.text("status")?)?;
                    let Some(back) = lifecycle::released_status(status) else {
                        continue;
                    };
                    sqlx::query(
                        "UPDATE revisions SET status = ?2, lease_holder = NULL, \
                           lease_expires_at = NULL, updated_at = MAX(?3, updated_at + 1) \
                         WHERE id = ?1",
                    )
                    .bind(row.text("id")?)
                    .bind(back.as_str())
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
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

async fn insert_log(conn: &mut SqliteConnection, line: &NewLogLine) -> Result<()> {
    sqlx::query(
        "INSERT INTO logs (deployment_id, revision_id, kind, at, level, message) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(line.deployment_id.to_string())
    .bind(line.revision_id.to_string())
    .bind(line.kind)
    .bind(line.at.timestamp_micros())
    .bind(&line.level)
    .bind(&line.message)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
