//! The data-plane protocol's server side (`/dataplane/v1/listeners/{listener_id}/...`):
//! what listener agents call to learn what to run and to report what happened. The
//! wire types live in the `protocol` crate; this module authenticates the agent (a
//! listener key of that very listener), checks the protocol version, and maps each
//! call onto the store, whose state machine decides. Not part of the compatible API:
//! its own document is served at `/dataplane/openapi.json`.

pub mod openapi;

/// Where the data-plane routes live.
pub const PREFIX: &str = "/dataplane/v1/listeners/{listener_id}";

use crate::error::{json_response, ApiError, ApiResult};
use crate::AppState;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use compat::query::Query;
use protocol::*;
use serde::de::DeserializeOwned;
use std::time::Duration;
use store::lifecycle::RevisionStatus;
use store::{ClaimOutcome, DeletedOutcome, ReportOutcome, StoreError};
use uuid::Uuid;

/// Settings of the data plane.
#[derive(Debug, Clone)]
pub struct DataPlaneConfig {
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// Log lines kept per deployment and kind (deploy, build); the oldest go first.
    pub log_retention: i64,
}

impl Default for DataPlaneConfig {
    fn default() -> Self {
        DataPlaneConfig {
            lease: Duration::from_secs(60),
            log_retention: 10_000,
        }
    }
}

impl DataPlaneConfig {
    /// Heartbeats come three times per lease, so one lost heartbeat loses no claim.
    pub fn heartbeat_interval(&self) -> Duration {
        (self.lease / 3).max(Duration::from_secs(1))
    }
}

/// An authenticated data-plane request: the listener it is for (the key's own), its
/// query and its raw body.
pub struct Agent {
    pub listener_id: Uuid,
    query: Query,
    path: Vec<(String, String)>,
    body: axum::body::Bytes,
}

impl FromRequest<AppState> for Agent {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &AppState) -> Result<Self, ApiError> {
        let (mut parts, body) = req.into_parts();
        let path: Vec<(String, String)> = RawPathParams::from_request_parts(&mut parts, app)
            .await
            .map(|p| {
                p.iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let listener_id = path_uuid(&path, "listener_id")?;
        crate::auth::authenticate_listener(
            app.store.as_ref(),
            &app.keys,
            &parts.headers,
            listener_id,
        )
        .await?;
        let limit = app.config.max_body_bytes;
        let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
            ApiError::PayloadTooLarge(format!(
                "Request body is larger than the limit of {limit} bytes."
            ))
        })?;
        Ok(Agent {
            listener_id,
            query: Query::parse(parts.uri.query()),
            path,
            body,
        })
    }
}

fn path_uuid(path: &[(String, String)], name: &str) -> ApiResult<Uuid> {
    path.iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| Uuid::parse_str(v).ok())
        .ok_or_else(ApiError::route_not_found)
}

/// Refuses any protocol version but ours, naming both.
fn check_version(theirs: u64) -> ApiResult<()> {
    if theirs == u64::from(PROTOCOL_VERSION) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(version_mismatch(
            u32::try_from(theirs).unwrap_or(u32::MAX),
        )))
    }
}

impl Agent {
    fn path_uuid(&self, name: &str) -> ApiResult<Uuid> {
        path_uuid(&self.path, name)
    }

    /// The JSON body as `T`, after its `protocol_version` is checked.
    fn body<T: DeserializeOwned>(&self) -> ApiResult<T> {
        let value: serde_json::Value = serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::Unprocessable(format!("The body is not JSON: {e}.")))?;
        match value.get("protocol_version").map(serde_json::Value::as_u64) {
            Some(Some(v)) => check_version(v)?,
            _ => {
                return Err(ApiError::Unprocessable(format!(
                    "The body needs an integer protocol_version (this server speaks version \
                     {PROTOCOL_VERSION})."
                )))
            }
        }
        serde_json::from_value(value)
            .map_err(|e| ApiError::Unprocessable(format!("Invalid body: {e}.")))
    }

    /// The `protocol_version` query parameter of a GET, checked.
    fn query_version(&self) -> ApiResult<()> {
        match self.query.get("protocol_version").map(str::parse::<u64>) {
            Some(Ok(v)) => check_version(v),
            _ => Err(ApiError::Unprocessable(format!(
                "The query needs an integer protocol_version (this server speaks version \
                 {PROTOCOL_VERSION})."
            ))),
        }
    }

    /// An optional integer query parameter, at least `min`.
    fn query_number(&self, name: &str, default: i64, min: i64) -> ApiResult<i64> {
        match self.query.get(name) {
            None => Ok(default),
            Some(raw) => raw
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= min)
                .ok_or_else(|| {
                    ApiError::Unprocessable(format!(
                        "Query parameter {name} must be an integer >= {min}."
                    ))
                }),
        }
    }
}

fn agent_id(id: &str) -> ApiResult<&str> {
    if id.is_empty() || id.len() > 253 || id.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(
            "agent_id must be 1 to 253 characters without control characters.".into(),
        ));
    }
    Ok(id)
}

fn listener_gone(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("Listener ID {id} not found."))
}

fn revision_not_found(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("Revision ID {id} not found."))
}

fn ok<T: serde::Serialize>(body: &T) -> ApiResult<Response> {
    Ok(json_response(StatusCode::OK, body))
}

pub async fn heartbeat(State(app): State<AppState>, agent: Agent) -> ApiResult<Response> {
    let beat: Heartbeat = agent.body()?;
    agent_id(&beat.agent_id)?;
    if beat.agent_version.is_empty() || beat.agent_version.len() > 128 {
        return Err(ApiError::Unprocessable(
            "agent_version must be 1 to 128 characters.".into(),
        ));
    }
    let config = &app.config.dataplane;
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
        lease_until: lease_until(config),
    };
    let generation = app
        .store
        .heartbeat(agent.listener_id, record)
        .await?
        .ok_or_else(|| listener_gone(agent.listener_id))?;
    ok(&HeartbeatAnswer {
        protocol_version: PROTOCOL_VERSION,
        generation,
        heartbeat_interval_seconds: config.heartbeat_interval().as_secs(),
        lease_seconds: config.lease.as_secs(),
    })
}

fn lease_until(config: &DataPlaneConfig) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
        + chrono::Duration::from_std(config.lease).unwrap_or(chrono::Duration::seconds(60))
}

/// The long-poll: answers at once when the generation is past `after`, otherwise when
/// it moves or `wait` seconds pass (or the server shuts down), whichever comes first.
pub async fn desired(State(app): State<AppState>, agent: Agent) -> ApiResult<Response> {
    agent.query_version()?;
    let after = agent.query_number("after", -1, i64::MIN)?;
    let wait = agent
        .query_number("wait", 0, 0)?
        .min(MAX_WAIT_SECONDS as i64);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait as u64);
    // Subscribed before reading, so a change between the read and the wait wakes it.
    let mut changes = app.store.subscribe(agent.listener_id);
    loop {
        let rows = app
            .store
            .desired(agent.listener_id)
            .await?
            .ok_or_else(|| listener_gone(agent.listener_id))?;
        let closing = app
            .config
            .closing
            .load(std::sync::atomic::Ordering::Relaxed);
        if rows.generation > after || closing || tokio::time::Instant::now() >= deadline {
            return ok(&desired_state(&app, rows)?);
        }
        // Counted in `dataplane_polls_waiting` while it waits for a change.
        let _waiting = crate::telemetry::Held::up(metrics::gauge!("dataplane_polls_waiting"));
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    tokio::time::sleep_until(deadline).await;
                }
            }
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
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
    let text = |v: &serde_json::Value, key: &str| {
        v.get(key)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    let revision = target_revision(&placed).map(|r| {
        let config = &r.source_revision_config;
        let build = (d.source == "internal_source").then(|| BuildSpec {
            langgraph_config_path: text(config, "langgraph_config_path"),
            install_command: text(&d.source_config, "install_command"),
            build_command: text(&d.source_config, "build_command"),
        });
        DesiredRevision {
            id: r.id,
            status: r.status.as_str().to_owned(),
            image: r
                .data_plane
                .image
                .clone()
                .or_else(|| text(config, "image_uri")),
            build,
            lease_holder: r.data_plane.lease_holder.clone(),
            created_at: r.created_at,
        }
    });
    Ok(DesiredDeployment {
        id: d.id,
        name: d.name.clone(),
        namespace: d
            .source_config
            .get("listener_config")
            .and_then(|c| text(c, "k8s_namespace"))
            .or_else(|| first_namespace.cloned()),
        deployment_type: d.deployment_type.clone(),
        status: d.status.as_str().to_owned(),
        deleting: d.status == store::lifecycle::DeploymentStatus::AwaitingDelete,
        active_revision_id: d.active_revision_id,
        revision,
        resource_spec: d.source_config.get("resource_spec").cloned(),
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

pub async fn claim(State(app): State<AppState>, agent: Agent) -> ApiResult<Response> {
    let revision_id = agent.path_uuid("revision_id")?;
    let req: Claim = agent.body()?;
    let who = agent_id(&req.agent_id)?;
    let outcome = app
        .store
        .claim(
            agent.listener_id,
            revision_id,
            who,
            lease_until(&app.config.dataplane),
        )
        .await?;
    match outcome {
        ClaimOutcome::Claimed {
            status,
            lease_expires_at,
        } => ok(&ClaimAnswer {
            protocol_version: PROTOCOL_VERSION,
            revision_id,
            status: status.as_str().to_owned(),
            lease_expires_at,
        }),
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

pub async fn report(State(app): State<AppState>, agent: Agent) -> ApiResult<Response> {
    let revision_id = agent.path_uuid("revision_id")?;
    let req: StatusReport = agent.body()?;
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
            agent.listener_id,
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
        ReportOutcome::Done(now) => ok(&StatusAnswer {
            protocol_version: PROTOCOL_VERSION,
            revision_id,
            status: now.as_str().to_owned(),
        }),
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

/// Streams the tarball of a source revision to the agent that holds its build.
pub async fn source(State(app): State<AppState>, agent: Agent) -> ApiResult<Response> {
    let revision_id = agent.path_uuid("revision_id")?;
    agent.query_version()?;
    let who = agent.query.get("agent_id").unwrap_or_default().to_owned();
    agent_id(&who)?;
    let found = app
        .store
        .build_source(agent.listener_id, revision_id)
        .await?
        .ok_or_else(|| revision_not_found(revision_id))?;
    if found.status != RevisionStatus::Building || found.lease_holder.as_deref() != Some(&who) {
        return Err(ApiError::Conflict(format!(
            "Revision {revision_id} is {}; its source goes only to the agent holding its \
             build.",
            found.status.as_str()
        )));
    }
    let path = found.tarball_path.ok_or_else(|| {
        ApiError::NotFound(format!("Revision {revision_id} has no uploaded source."))
    })?;
    let file = crate::deployments::uploads::open_stored(&app, &path)
        .await
        .ok_or_else(|| {
            ApiError::NotFound(format!("The source of revision {revision_id} is gone."))
        })?;
    let len = file.metadata().await.map(|m| m.len()).ok();
    let stream = tokio_util::io::ReaderStream::new(file);
    let mut res = Body::from_stream(stream).into_response();
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/gzip"),
    );
    if let Some(len) = len {
        headers.insert(header::CONTENT_LENGTH, len.into());
    }
    Ok(res)
}

pub async fn deleted(State(app): State<AppState>, agent: Agent) -> ApiResult<Response> {
    let deployment_id = agent.path_uuid("deployment_id")?;
    let req: Deleted = agent.body()?;
    agent_id(&req.agent_id)?;
    match app
        .store
        .confirm_deleted(agent.listener_id, deployment_id)
        .await?
    {
        DeletedOutcome::Gone => {
            crate::deployments::uploads::remove_files(&app, deployment_id).await;
            ok(&DeletedAnswer {
                protocol_version: PROTOCOL_VERSION,
                deployment_id,
                deleted: true,
            })
        }
        DeletedOutcome::NotFound => Err(crate::deployments::not_found(deployment_id)),
        DeletedOutcome::NotDeleting(status) => Err(ApiError::Conflict(format!(
            "Deployment {deployment_id} is {}, not AWAITING_DELETE: only a deployment being \
             deleted can be confirmed gone.",
            status.as_str()
        ))),
    }
}

pub async fn logs(State(app): State<AppState>, agent: Agent) -> ApiResult<Response> {
    let batch: LogBatch = agent.body()?;
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
            .append_logs(agent.listener_id, lines, app.config.dataplane.log_retention)
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
    ok(&LogsAnswer {
        protocol_version: PROTOCOL_VERSION,
        accepted,
    })
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

/// Every few seconds, puts revisions whose lease ran out back where they were, so
/// another agent replica can claim them (a claim also takes over an expired lease on
/// its own; this makes the public status honest in between).
pub fn spawn_lease_sweeper(store: std::sync::Arc<dyn store::Store>, lease: Duration) {
    let every = (lease / 4).clamp(Duration::from_millis(250), Duration::from_secs(15));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match store.release_expired_leases().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(revisions = n, "released expired data-plane leases"),
                Err(e) => tracing::warn!(error = %e, "releasing expired leases failed"),
            }
        }
    });
}
