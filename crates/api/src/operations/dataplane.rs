//! The data plane: what a listener's agents report and are told. Every operation acts
//! only on the listener whose key made the request; the store's state machine
//! ([`store::lifecycle`]) decides what a claim or a report may do, and this module
//! turns its refusals into answers an agent can act on.

use crate::error::{ApiError, ApiResult};
use crate::AppState;
use protocol::*;
use store::lifecycle::RevisionStatus;
use store::{ClaimOutcome, DeletedOutcome, ReportOutcome, StoreError};
use uuid::Uuid;

pub fn listener_gone(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("Listener ID {id} not found."))
}

fn revision_not_found(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("Revision ID {id} not found."))
}

/// An agent's name: 1 to 253 characters, no control characters.
pub fn agent_id(id: &str) -> ApiResult<&str> {
    if id.is_empty() || id.len() > 253 || id.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(
            "agent_id must be 1 to 253 characters without control characters.".into(),
        ));
    }
    Ok(id)
}

fn lease_until(app: &AppState) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
        + chrono::Duration::from_std(app.config.dataplane.lease)
            .unwrap_or(chrono::Duration::seconds(60))
}

/// Records a heartbeat (and renews the leases its agent holds); the listener's
/// generation.
pub async fn heartbeat(app: &AppState, listener: Uuid, beat: &Heartbeat) -> ApiResult<i64> {
    agent_id(&beat.agent_id)?;
    if beat.agent_version.is_empty() || beat.agent_version.len() > 128 {
        return Err(ApiError::Unprocessable(
            "agent_version must be 1 to 128 characters.".into(),
        ));
    }
    let facts = serde_json::json!({
        "agent_id": beat.agent_id,
        "mode": beat.mode,
        "cluster": beat.cluster,
        "deployments": beat.deployments,
    });
    let record = store::AgentBeat {
        agent_id: beat.agent_id.clone(),
        version: beat.agent_version.clone(),
        facts: facts.to_string(),
        lease_until: lease_until(app),
    };
    app.store
        .heartbeat(listener, record)
        .await?
        .ok_or_else(|| listener_gone(listener))
}

/// Wakes when the listener's generation moves past what it was.
pub fn subscribe(app: &AppState, listener: Uuid) -> tokio::sync::watch::Receiver<i64> {
    app.store.subscribe(listener)
}

/// The listener's desired state now.
pub async fn desired(app: &AppState, listener: Uuid) -> ApiResult<DesiredState> {
    let rows = app
        .store
        .desired(listener)
        .await?
        .ok_or_else(|| listener_gone(listener))?;
    desired_state(app, rows)
}

fn desired_state(app: &AppState, rows: store::DesiredRows) -> ApiResult<DesiredState> {
    let namespaces = rows.listener.k8s_namespaces.unwrap_or_default();
    let deployments = rows
        .deployments
        .into_iter()
        .map(|placed| desired_deployment(app, placed, namespaces.first()))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(DesiredState {
        protocol_version: PROTOCOL_VERSION,
        listener_id: rows.listener.id,
        generation: rows.generation,
        namespaces,
        deployments,
    })
}

/// The revision a deployment should run: its newest, unless that one failed, was
/// skipped or interrupted; then the one last deployed.
fn target_revision(placed: &store::PlacedDeployment) -> Option<&store::Revision> {
    use RevisionStatus::*;
    match &placed.latest {
        Some(latest)
            if !matches!(
                latest.status,
                CreateFailed | BuildFailed | DeployFailed | Skipped | Interrupted | Unknown
            ) =>
        {
            Some(latest)
        }
        _ => placed.active.as_ref(),
    }
}

/// One deployment of the desired state; `first_namespace` is where deployments that
/// name none run.
fn desired_deployment(
    app: &AppState,
    placed: store::PlacedDeployment,
    first_namespace: Option<&String>,
) -> ApiResult<DesiredDeployment> {
    let d = &placed.deployment;
    let source = store::SourceConfig::of(&d.source_config);
    let revision = target_revision(&placed).map(|r| {
        let config = store::RevisionConfig::of(&r.source_revision_config);
        // Nothing to build before the source is uploaded; a git source is fetched when
        // the build asks for it.
        let buildable = match r.source.as_str() {
            "internal_source" => config.source_tarball_path.is_some(),
            "github" => true,
            _ => false,
        };
        let build = buildable.then(|| BuildSpec {
            langgraph_config_path: config.langgraph_config_path,
            install_command: source.install_command.clone(),
            build_command: source.build_command.clone(),
        });
        DesiredRevision {
            id: r.id,
            status: r.status,
            image: r.data_plane.image.clone().or(config.image_uri),
            build,
            lease_holder: r.data_plane.lease_holder.clone(),
            created_at: r.created_at,
        }
    });
    Ok(DesiredDeployment {
        id: d.id,
        name: d.name.clone(),
        namespace: source
            .namespace()
            .map(str::to_owned)
            .or_else(|| first_namespace.cloned()),
        deployment_type: d.deployment_type.clone(),
        status: d.status.as_str().to_owned(),
        deleting: d.status == store::lifecycle::DeploymentStatus::AwaitingDelete,
        active_revision_id: d.active_revision_id,
        revision,
        resource_spec: source.resource_spec.clone(),
        secret_references: d.secret_references.clone(),
        env: env(app, d)?,
    })
}

/// The deployment's secrets, unsealed, as environment variables.
fn env(app: &AppState, d: &store::Deployment) -> ApiResult<Vec<EnvVar>> {
    let plain = app
        .secrets
        .open(&d.secrets, d.id)
        .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p).ok())
        .ok_or_else(|| {
            ApiError::Internal(format!(
                "the secrets of deployment {} cannot be opened",
                d.id
            ))
        })?;
    Ok(plain
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            Some(EnvVar {
                name: s.get("name")?.as_str()?.to_owned(),
                value: s.get("value")?.as_str()?.to_owned(),
            })
        })
        .collect())
}

/// An agent takes a waiting revision; the status it holds it in and until when.
pub async fn claim(
    app: &AppState,
    listener: Uuid,
    revision_id: Uuid,
    agent: &str,
) -> ApiResult<(RevisionStatus, chrono::DateTime<chrono::Utc>)> {
    let who = agent_id(agent)?;
    match app
        .store
        .claim(listener, revision_id, who, lease_until(app))
        .await?
    {
        ClaimOutcome::Claimed {
            status,
            lease_expires_at,
        } => Ok((status, lease_expires_at)),
        ClaimOutcome::NotFound => Err(revision_not_found(revision_id)),
        ClaimOutcome::Held { status, until } => Err(ApiError::Conflict(format!(
            "Revision {revision_id} is {} under a claim another agent holds until {}.",
            status.as_str(),
            until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ))),
        ClaimOutcome::NotClaimable(RevisionStatus::Skipped) => Err(ApiError::Conflict(format!(
            "Revision {revision_id} is SKIPPED: a newer revision superseded it."
        ))),
        ClaimOutcome::NotClaimable(status) => Err(ApiError::Conflict(format!(
            "Revision {revision_id} is {}; only a revision in AWAITING_DEPLOY or \
             AWAITING_BUILD can be claimed.",
            status.as_str()
        ))),
        ClaimOutcome::Deleting => Err(ApiError::Conflict(format!(
            "The deployment of revision {revision_id} is being deleted."
        ))),
    }
}

/// Applies an agent's report; the revision's status after it.
pub async fn report(
    app: &AppState,
    listener: Uuid,
    revision_id: Uuid,
    req: StatusReport,
) -> ApiResult<RevisionStatus> {
    agent_id(&req.agent_id)?;
    let status = match req.status {
        ReportStatus::Built => RevisionStatus::AwaitingDeploy,
        ReportStatus::BuildFailed => RevisionStatus::BuildFailed,
        ReportStatus::Deployed => RevisionStatus::Deployed,
        ReportStatus::DeployFailed => RevisionStatus::DeployFailed,
    };
    if req.status == ReportStatus::Built && req.image.as_deref().is_none_or(str::is_empty) {
        return Err(ApiError::Unprocessable(
            "A BUILT report needs the image it built.".into(),
        ));
    }
    let bounded = |s: Option<String>, max: usize| s.map(|s| truncate(s, max));
    let outcome = app
        .store
        .report(
            listener,
            revision_id,
            store::Report {
                agent_id: req.agent_id,
                status,
                image: req.image,
                reason: bounded(req.reason, 256),
                message: bounded(req.message, MAX_LOG_MESSAGE_BYTES),
            },
        )
        .await?;
    let reported = match req.status {
        ReportStatus::Built => "BUILT",
        _ => status.as_str(),
    };
    match outcome {
        ReportOutcome::Done(now) => Ok(now),
        ReportOutcome::NotFound => Err(revision_not_found(revision_id)),
        ReportOutcome::NotAllowed { from, .. } => Err(ApiError::Conflict(format!(
            "Revision {revision_id} cannot go from {} to {reported}.",
            from.as_str()
        ))),
        ReportOutcome::NotHolder(now) => Err(ApiError::Conflict(format!(
            "Revision {revision_id} is {}, and this agent does not hold its claim.",
            now.as_str()
        ))),
    }
}

/// The uploaded tarball of a source revision, for the agent that holds its build.
pub async fn source(
    app: &AppState,
    listener: Uuid,
    revision_id: Uuid,
    who: &str,
) -> ApiResult<tokio::fs::File> {
    agent_id(who)?;
    let found = app
        .store
        .build_source(listener, revision_id)
        .await?
        .ok_or_else(|| revision_not_found(revision_id))?;
    if found.status != RevisionStatus::Building || found.lease_holder.as_deref() != Some(who) {
        return Err(ApiError::Conflict(format!(
            "Revision {revision_id} is {}; its source goes only to the agent holding its \
             build.",
            found.status.as_str()
        )));
    }
    revision_source(app, revision_id, &found).await
}

/// The agent confirms a deployment being deleted is gone: it goes from the store, with
/// its uploaded tarballs.
pub async fn deleted(
    app: &AppState,
    listener: Uuid,
    deployment_id: Uuid,
    agent: &str,
) -> ApiResult<()> {
    agent_id(agent)?;
    match app.store.confirm_deleted(listener, deployment_id).await? {
        DeletedOutcome::Gone => {
            crate::operations::uploads::remove_files(app, deployment_id).await;
            Ok(())
        }
        DeletedOutcome::NotFound => Err(crate::operations::deployments::not_found(deployment_id)),
        DeletedOutcome::NotDeleting(status) => Err(ApiError::Conflict(format!(
            "Deployment {deployment_id} is {}, not AWAITING_DELETE: only a deployment being \
             deleted can be confirmed gone.",
            status.as_str()
        ))),
    }
}

/// Stores a batch of log lines; how many were accepted.
pub async fn logs(app: &AppState, listener: Uuid, batch: LogBatch) -> ApiResult<usize> {
    if batch.lines.len() > MAX_LOG_BATCH {
        return Err(ApiError::Unprocessable(format!(
            "A batch holds at most {MAX_LOG_BATCH} lines; this one has {}.",
            batch.lines.len()
        )));
    }
    let accepted = batch.lines.len();
    let lines = batch
        .lines
        .into_iter()
        .map(|l| store::NewLogLine {
            deployment_id: l.deployment_id,
            revision_id: l.revision_id,
            kind: l.kind.as_str(),
            at: l.timestamp,
            level: truncate(l.level.to_uppercase(), 16),
            message: truncate(l.message, MAX_LOG_MESSAGE_BYTES),
        })
        .collect::<Vec<_>>();
    if !lines.is_empty() {
        match app
            .store
            .append_logs(listener, lines, app.config.dataplane.log_retention)
            .await
        {
            Err(StoreError::NotFound) => {
                return Err(ApiError::NotFound(
                    "A line names a deployment or revision this listener does not run.".into(),
                ))
            }
            other => other?,
        }
    }
    Ok(accepted)
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// A pull-only registry login for the agent `who` of the listener whose key is `key`:
/// the images of the key's workspace and nothing else.
pub fn registry_credential(
    app: &AppState,
    key: crate::auth::ListenerKey,
    who: &str,
) -> ApiResult<protocol::RegistryCredential> {
    agent_id(who)?;
    let login = crate::registry::pull_login(app, key.workspace_id, key.key_id)?;
    Ok(protocol::RegistryCredential {
        protocol_version: protocol::PROTOCOL_VERSION,
        registry: login.registry,
        repository_prefix: login.prefix,
        username: login.username,
        password: login.password,
        expires_at: login.expires_at,
    })
}

/// What a build Job of `revision` needs, for the agent `who` holding its build: where to
/// fetch the source and a login to push under the key's workspace's prefix.
pub async fn build_credential(
    app: &AppState,
    key: crate::auth::ListenerKey,
    listener: Uuid,
    revision: Uuid,
    who: &str,
) -> ApiResult<protocol::BuildCredential> {
    agent_id(who)?;
    let found = building(app, listener, revision).await?;
    if found.lease_holder.as_deref() != Some(who) {
        return Err(ApiError::Conflict(format!(
            "Revision {revision} is BUILDING, and this agent does not hold its claim."
        )));
    }
    let login =
        crate::registry::build_login(app, key.workspace_id, key.key_id, listener, revision)?;
    Ok(protocol::BuildCredential {
        protocol_version: protocol::PROTOCOL_VERSION,
        source_url: format!(
            "{}{}/revisions/{revision}/build-source?token={}",
            app.config.public_url.trim_end_matches('/'),
            crate::dataplane::PREFIX.replace("{listener_id}", &listener.to_string()),
            login.source_token
        ),
        registry: login.push.registry,
        repository_prefix: login.push.prefix,
        username: login.push.username,
        password: login.push.password,
        expires_at: login.push.expires_at,
    })
}

/// The source of a revision being built, for the bearer of its source credential.
pub async fn source_by_token(
    app: &AppState,
    listener: Uuid,
    revision: Uuid,
    token: &str,
) -> ApiResult<tokio::fs::File> {
    if crate::registry::source_listener(app, revision, token) != Some(listener) {
        return Err(ApiError::Unauthorized(
            "The build's source credential is invalid or expired.".into(),
        ));
    }
    let found = building(app, listener, revision).await?;
    revision_source(app, revision, &found).await
}

/// A revision of the listener that is `BUILDING` (else 404 or 409).
async fn building(app: &AppState, listener: Uuid, revision: Uuid) -> ApiResult<store::BuildSource> {
    let found = app
        .store
        .build_source(listener, revision)
        .await?
        .ok_or_else(|| revision_not_found(revision))?;
    if found.status != RevisionStatus::Building {
        return Err(ApiError::Conflict(format!(
            "Revision {revision} is {}; its source goes only to its build.",
            found.status.as_str()
        )));
    }
    Ok(found)
}

/// The source tarball of `revision`: fetched from git for a `github` revision, else
/// the uploaded one.
async fn revision_source(
    app: &AppState,
    revision: Uuid,
    found: &store::BuildSource,
) -> ApiResult<tokio::fs::File> {
    if found.source == "github" {
        return crate::operations::integrations::git_source(app, found, revision).await;
    }
    let path = found
        .revision_config
        .source_tarball_path
        .as_deref()
        .ok_or_else(|| {
            ApiError::NotFound(format!("Revision {revision} has no uploaded source."))
        })?;
    crate::operations::uploads::open_stored(app, path)
        .await
        .ok_or_else(|| ApiError::NotFound(format!("The source of revision {revision} is gone.")))
}
