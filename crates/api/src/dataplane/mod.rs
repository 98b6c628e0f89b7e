//! The data-plane protocol's server side (`/dataplane/v1/listeners/{listener_id}/...`):
//! what listener agents call to learn what to run and to report what happened. The
//! wire types live in the `protocol` crate; this module authenticates the agent (a
//! listener key of that very listener), checks the protocol version, and calls
//! [`crate::operations::dataplane`]. Not part of the compatible API:
//! its own document is served at `/dataplane/openapi.json`.

pub mod openapi;

/// Where the data-plane routes live.
pub const PREFIX: &str = "/dataplane/v1/listeners/{listener_id}";

use crate::error::{json_response, ApiError, ApiResult};
use crate::operations::dataplane as ops;
use crate::AppState;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, RawQuery, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use compat::query::Query;
use protocol::*;
use serde::de::DeserializeOwned;
use std::time::Duration;
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
    /// The listener key it came with.
    key: crate::auth::ListenerKey,
    query: Query,
    path: Vec<(String, String)>,
    body: axum::body::Bytes,
}

impl FromRequest<AppState> for Agent {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &AppState) -> Result<Self, ApiError> {
        let (mut parts, body) = req.into_parts();
        let path = RawPathParams::from_request_parts(&mut parts, app)
            .await
            .map(|p| owned(&p))
            .unwrap_or_default();
        let listener_id = path_uuid(&path, "listener_id")?;
        let key = crate::auth::authenticate_listener(
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
            key,
            query: Query::parse(parts.uri.query()),
            path,
            body,
        })
    }
}

fn owned(params: &RawPathParams) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
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

fn ok<T: serde::Serialize>(body: &T) -> ApiResult<Response> {
    Ok(json_response(StatusCode::OK, body))
}

pub async fn heartbeat(State(app): State<AppState>, agent: Agent) -> ApiResult<Response> {
    let beat: Heartbeat = agent.body()?;
    let generation = ops::heartbeat(&app, agent.listener_id, &beat).await?;
    let config = &app.config.dataplane;
    ok(&HeartbeatAnswer {
        protocol_version: PROTOCOL_VERSION,
        generation,
        heartbeat_interval_seconds: config.heartbeat_interval().as_secs(),
        lease_seconds: config.lease.as_secs(),
    })
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
    let mut changes = ops::subscribe(&app, agent.listener_id);
    loop {
        let state = ops::desired(&app, agent.listener_id).await?;
        let closing = app
            .config
            .closing
            .load(std::sync::atomic::Ordering::Relaxed);
        if state.generation > after || closing || tokio::time::Instant::now() >= deadline {
            return ok(&state);
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

pub async fn claim(State(app): State<AppState>, agent: Agent) -> ApiResult<Response> {
    let revision_id = agent.path_uuid("revision_id")?;
    let req: Claim = agent.body()?;
    let (status, lease_expires_at) =
        ops::claim(&app, agent.listener_id, revision_id, &req.agent_id).await?;
    ok(&ClaimAnswer {
        protocol_version: PROTOCOL_VERSION,
        revision_id,
        status: RevisionStatus::from_name(status.as_str()),
        lease_expires_at,
    })
}

pub async fn report(State(app): State<AppState>, agent: Agent) -> ApiResult<Response> {
    let revision_id = agent.path_uuid("revision_id")?;
    let req: StatusReport = agent.body()?;
    let now = ops::report(&app, agent.listener_id, revision_id, req).await?;
    ok(&StatusAnswer {
        protocol_version: PROTOCOL_VERSION,
        revision_id,
        status: RevisionStatus::from_name(now.as_str()),
    })
}

/// Streams the tarball of a source revision to the agent that holds its build.
pub async fn source(State(app): State<AppState>, agent: Agent) -> ApiResult<Response> {
    let revision_id = agent.path_uuid("revision_id")?;
    agent.query_version()?;
    let who = agent.query.get("agent_id").unwrap_or_default().to_owned();
    let file = ops::source(&app, agent.listener_id, revision_id, &who).await?;
    tarball(file).await
}

/// A tarball, streamed.
async fn tarball(file: tokio::fs::File) -> ApiResult<Response> {
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
    ops::deleted(&app, agent.listener_id, deployment_id, &req.agent_id).await?;
    ok(&DeletedAnswer {
        protocol_version: PROTOCOL_VERSION,
        deployment_id,
        deleted: true,
    })
}

pub async fn logs(State(app): State<AppState>, agent: Agent) -> ApiResult<Response> {
    let batch: LogBatch = agent.body()?;
    let accepted = ops::logs(&app, agent.listener_id, batch).await?;
    ok(&LogsAnswer {
        protocol_version: PROTOCOL_VERSION,
        accepted,
    })
}

/// A pull-only login for the registry, for images under the listener's own workspace.
pub async fn registry_credential(State(app): State<AppState>, agent: Agent) -> ApiResult<Response> {
    let req: RegistryCredentialRequest = agent.body()?;
    ok(&ops::registry_credential(&app, agent.key, &req.agent_id)?)
}

/// What a build Job needs from the holder of a build claim.
pub async fn build_credential(State(app): State<AppState>, agent: Agent) -> ApiResult<Response> {
    let revision_id = agent.path_uuid("revision_id")?;
    let req: BuildCredentialRequest = agent.body()?;
    let answer = ops::build_credential(
        &app,
        agent.key,
        agent.listener_id,
        revision_id,
        &req.agent_id,
    )
    .await?;
    ok(&answer)
}

/// The source tarball, for the bearer of the build's source credential (`?token=`); no
/// key: a build Job holds only that credential.
pub async fn build_source(
    State(app): State<AppState>,
    params: RawPathParams,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let path = owned(&params);
    let listener_id = path_uuid(&path, "listener_id")?;
    let revision_id = path_uuid(&path, "revision_id")?;
    let query = Query::parse(raw.as_deref());
    let token = query.get("token").unwrap_or_default();
    let file = ops::source_by_token(&app, listener_id, revision_id, token).await?;
    tarball(file).await
}
