//! The agent's side of the data-plane protocol: one method per call, typed with the
//! `protocol` crate, every answer's `protocol_version` checked.

use protocol::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;
use uuid::Uuid;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The control plane answered with an error status.
    #[error("{status}: {detail}")]
    Refused { status: u16, detail: String },
    /// It could not be reached, or its answer could not be read.
    #[error("{0}")]
    Transport(String),
}

pub type CallResult<T> = Result<T, CallError>;

/// A credential call's answer, `None` when the control plane has no registry.
fn without_registry<T>(answer: CallResult<T>) -> CallResult<Option<T>> {
    match answer {
        Ok(credential) => Ok(Some(credential)),
        Err(CallError::Refused {
            status: 404,
            detail,
        }) if detail == NO_REGISTRY => Ok(None),
        Err(e) => Err(e),
    }
}

/// An error answer: its `detail`, or its text when it has none.
fn refused(status: u16, body: &[u8]) -> CallError {
    let detail = serde_json::from_slice::<ErrorAnswer>(body)
        .map(|e| e.detail)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
    CallError::Refused { status, detail }
}

/// A client of one listener's data-plane routes.
#[derive(Clone)]
pub struct ControlPlane {
    http: reqwest::Client,
    base: String,
    key: String,
    pub agent_id: String,
}

impl ControlPlane {
    pub fn new(url: &str, listener: Uuid, key: &str, agent_id: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Below the server's keep-alive bound (its header timeout, 10 s by default),
            // so a pooled connection is not reused just as the server closes it.
            .pool_idle_timeout(Duration::from_secs(5))
            .user_agent(concat!("hostplane-listener/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(ControlPlane {
            http,
            base: format!(
                "{}/dataplane/v1/listeners/{listener}",
                url.trim_end_matches('/')
            ),
            key: key.to_owned(),
            agent_id: agent_id.to_owned(),
        })
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> CallResult<T> {
        let res = req
            .header("x-api-key", &self.key)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let status = res.status().as_u16();
        let bytes = res
            .bytes()
            .await
            .map_err(|e| CallError::Transport(e.to_string()))?;
        if status != 200 {
            return Err(refused(status, &bytes));
        }
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| CallError::Transport(format!("unreadable answer: {e}")))?;
        if value
            .get("protocol_version")
            .and_then(serde_json::Value::as_u64)
            != Some(u64::from(PROTOCOL_VERSION))
        {
            return Err(CallError::Transport(format!(
                "the control plane answered with another protocol version than {PROTOCOL_VERSION}"
            )));
        }
        serde_json::from_value(value)
            .map_err(|e| CallError::Transport(format!("unreadable answer: {e}")))
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> CallResult<T> {
        let req = self.http.post(format!("{}{path}", self.base)).json(body);
        self.send(req, Duration::from_secs(30)).await
    }

    pub async fn heartbeat(&self, beat: &Heartbeat) -> CallResult<HeartbeatAnswer> {
        self.post("/heartbeat", beat).await
    }

    /// The desired state, waiting up to `wait` for a generation past `after`.
    pub async fn desired(&self, after: i64, wait: Duration) -> CallResult<DesiredState> {
        let url = format!(
            "{}/desired?protocol_version={PROTOCOL_VERSION}&after={after}&wait={}",
            self.base,
            wait.as_secs()
        );
        self.send(self.http.get(url), wait + Duration::from_secs(30))
            .await
    }

    pub async fn claim(&self, revision: Uuid) -> CallResult<ClaimAnswer> {
        let body = Claim {
            protocol_version: PROTOCOL_VERSION,
            agent_id: self.agent_id.clone(),
        };
        self.post(&format!("/revisions/{revision}/claim"), &body)
            .await
    }

    /// Reports a revision's outcome: `failure` gives a failed one its reason and message;
    /// `image` is what a build produced (`BUILT`).
    pub async fn report(
        &self,
        revision: Uuid,
        status: ReportStatus,
        failure: Option<&crate::runner::Failure>,
        image: Option<String>,
    ) -> CallResult<StatusAnswer> {
        let body = StatusReport {
            protocol_version: PROTOCOL_VERSION,
            agent_id: self.agent_id.clone(),
            status,
            reason: failure.map(|f| f.reason.clone()),
            message: failure.map(|f| f.message.clone()),
            image,
        };
        self.post(&format!("/revisions/{revision}/status"), &body)
            .await
    }

    /// A pull-only login to the control plane's registry; `None` when it has none.
    pub async fn registry_credential(&self) -> CallResult<Option<RegistryCredential>> {
        let body = RegistryCredentialRequest {
            protocol_version: PROTOCOL_VERSION,
            agent_id: self.agent_id.clone(),
        };
        without_registry(self.post("/registry-credential", &body).await)
    }

    /// What a build Job of `revision` (held by this agent) needs; `None` when the
    /// control plane has no registry.
    pub async fn build_credential(&self, revision: Uuid) -> CallResult<Option<BuildCredential>> {
        let body = BuildCredentialRequest {
            protocol_version: PROTOCOL_VERSION,
            agent_id: self.agent_id.clone(),
        };
        let path = format!("/revisions/{revision}/build-credential");
        without_registry(self.post(&path, &body).await)
    }

    /// Writes the source tarball of a revision whose build this agent holds to `dest`;
    /// more than `max_bytes` is refused.
    pub async fn source(
        &self,
        revision: Uuid,
        dest: &std::path::Path,
        max_bytes: u64,
    ) -> CallResult<u64> {
        use tokio::io::AsyncWriteExt;
        let url = format!(
            "{}/revisions/{revision}/source?protocol_version={PROTOCOL_VERSION}&agent_id={}",
            self.base, self.agent_id
        );
        let transport = |e: &dyn std::fmt::Display| CallError::Transport(e.to_string());
        let mut res = self
            .http
            .get(url)
            .header("x-api-key", &self.key)
            .timeout(Duration::from_secs(600))
            .send()
            .await
            .map_err(|e| transport(&e))?;
        let status = res.status().as_u16();
        if status != 200 {
            let bytes = res.bytes().await.map_err(|e| transport(&e))?;
            return Err(refused(status, &bytes));
        }
        let mut file = tokio::fs::File::create(dest)
            .await
            .map_err(|e| transport(&e))?;
        let mut written = 0u64;
        while let Some(chunk) = res.chunk().await.map_err(|e| transport(&e))? {
            written += chunk.len() as u64;
            if written > max_bytes {
                return Err(CallError::Transport(format!(
                    "the source archive is larger than {max_bytes} bytes"
                )));
            }
            file.write_all(&chunk).await.map_err(|e| transport(&e))?;
        }
        file.flush().await.map_err(|e| transport(&e))?;
        Ok(written)
    }

    pub async fn deleted(&self, deployment: Uuid) -> CallResult<DeletedAnswer> {
        let body = Deleted {
            protocol_version: PROTOCOL_VERSION,
            agent_id: self.agent_id.clone(),
        };
        self.post(&format!("/deployments/{deployment}/deleted"), &body)
            .await
    }

    pub async fn logs(&self, lines: Vec<LogLine>) -> CallResult<LogsAnswer> {
        let body = LogBatch {
            protocol_version: PROTOCOL_VERSION,
            lines,
        };
        self.post("/logs", &body).await
    }
}

/// The registry login an agent pulls with, asked for when first needed and again before
/// it expires; a control plane without a registry is asked again after a while.
pub struct RegistryLogins {
    control: ControlPlane,
    cached: tokio::sync::Mutex<Option<(Option<RegistryCredential>, chrono::DateTime<chrono::Utc>)>>,
}

impl RegistryLogins {
    pub fn new(control: ControlPlane) -> Self {
        RegistryLogins {
            control,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// The login, if the control plane has a registry and `image` is on it.
    pub async fn for_image(&self, image: &str) -> Option<RegistryCredential> {
        let now = chrono::Utc::now();
        let mut cached = self.cached.lock().await;
        let fresh = cached.as_ref().is_some_and(|(_, until)| *until > now);
        if !fresh {
            match self.control.registry_credential().await {
                Ok(login) => {
                    // Renewed ten minutes before it runs out; "no registry" is asked
                    // again after five.
                    let until = login
                        .as_ref()
                        .map_or(now + chrono::Duration::minutes(5), |l| {
                            l.expires_at - chrono::Duration::minutes(10)
                        });
                    *cached = Some((login, until));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot get a registry login; pulling without one");
                    return None;
                }
            }
        }
        let login = cached.as_ref()?.0.clone()?;
        (image_host(image) == Some(login.registry.as_str())).then_some(login)
    }
}

/// The registry host an image reference names (`host[:port]/path...`), if it names one.
pub fn image_host(image: &str) -> Option<&str> {
    let (first, _) = image.split_once('/')?;
    (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
}
