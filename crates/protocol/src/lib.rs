//! The data-plane protocol: what a listener agent and the control plane say to each
//! other under `/dataplane/v1/listeners/{listener_id}/...`. The server and the agent both
//! build on these types, so the two cannot drift apart. Every request and every answer
//! carries [`PROTOCOL_VERSION`]; the server refuses versions it does not speak.
//!
//! The calls, all made by the agent (the control plane never connects to a cluster):
//! - `POST heartbeat` ([`Heartbeat`] → [`HeartbeatAnswer`]);
//! - `GET desired?after=N&wait=S&protocol_version=1` (→ [`DesiredState`]);
//! - `POST revisions/{id}/claim` ([`Claim`] → [`ClaimAnswer`]);
//! - `GET revisions/{id}/source?agent_id=A&protocol_version=1` (the tarball's bytes);
//! - `POST revisions/{id}/status` ([`StatusReport`] → [`StatusAnswer`]);
//! - `POST deployments/{id}/deleted` ([`Deleted`] → [`DeletedAnswer`]);
//! - `POST logs` ([`LogBatch`] → [`LogsAnswer`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The `detail` of the `404` that `registry-credential` and `build-credential` answer
/// when the control plane has no registry (other `404`s mean an unknown listener or
/// revision).
pub const NO_REGISTRY: &str =
    "This control plane has no container registry configured (HOSTPLANE_REGISTRY_URL).";

/// Most lines one [`LogBatch`] may carry.
pub const MAX_LOG_BATCH: usize = 1000;
/// Longest log message kept, in bytes; longer ones are cut at a character boundary.
pub const MAX_LOG_MESSAGE_BYTES: usize = 16 * 1024;
/// Longest `wait` of a desired-state long-poll, in seconds.
pub const MAX_WAIT_SECONDS: u64 = 60;

/// Liveness and what the agent sees. Renews the leases `agent_id` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub protocol_version: u32,
    /// Names one agent replica; claims and leases belong to it.
    pub agent_id: String,
    /// Becomes the listener's public `version`.
    pub agent_version: String,
    /// `native`, `lgp`, `render`, `containers`, or another agent's own mode name.
    pub mode: String,
    /// Free-form facts about the cluster or host (Kubernetes version, node count...).
    #[serde(default)]
    pub cluster: Map<String, Value>,
    /// What the agent observes of each deployment it runs.
    #[serde(default)]
    pub deployments: Vec<Observed>,
}

/// One deployment as the agent observes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observed {
    pub deployment_id: Uuid,
    pub revision_id: Option<Uuid>,
    /// The agent's word for where the deployment is: `pending`, `progressing`,
    /// `available`, `degraded`, `failed`, `deleting`...
    pub phase: String,
    #[serde(default)]
    pub ready_replicas: u32,
    #[serde(default)]
    pub total_replicas: u32,
    /// Where the deployment answers (URL or host:port), when known.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatAnswer {
    pub protocol_version: u32,
    /// The listener's desired-state generation now.
    pub generation: i64,
    /// How often the agent should send heartbeats.
    pub heartbeat_interval_seconds: u64,
    /// How long a claim lasts without a heartbeat.
    pub lease_seconds: u64,
}

/// The listener's whole desired state: every deployment placed on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredState {
    pub protocol_version: u32,
    pub listener_id: Uuid,
    /// Grows with every change to what the listener should run.
    pub generation: i64,
    /// The namespaces the listener may deploy into.
    pub namespaces: Vec<String>,
    pub deployments: Vec<DesiredDeployment>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredDeployment {
    pub id: Uuid,
    pub name: String,
    /// `listener_config.k8s_namespace` of the deployment, else the listener's first
    /// namespace (deployments of other sources than `external_docker` name none).
    pub namespace: Option<String>,
    /// `dev_free`, `dev`, `prod`, `dev_zero`, or none.
    pub deployment_type: Option<String>,
    /// The public deployment status (`AWAITING_DATABASE`, `READY`, `AWAITING_DELETE`...).
    pub status: String,
    /// True when the deployment is being deleted: tear it down, then call `deleted`.
    pub deleting: bool,
    /// The revision last reported `DEPLOYED`.
    pub active_revision_id: Option<Uuid>,
    /// The revision to run: the newest one, unless it failed, was skipped or was
    /// interrupted, in which case the active one (none when nothing ever deployed).
    pub revision: Option<DesiredRevision>,
    /// `source_config.resource_spec` as the user gave it (replicas, CPU, memory...).
    pub resource_spec: Option<Value>,
    /// Names of the user's own secrets the deployment reads (`secret_references`).
    pub secret_references: Option<Value>,
    /// The deployment's secrets, unsealed: environment variables for the server.
    pub env: Vec<EnvVar>,
}

/// A revision's public status, as the server sends it and agents match it. A name this
/// version does not know reads as [`RevisionStatus::Unknown`], so a newer server's
/// status does not break an older agent's desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RevisionStatus {
    Creating,
    Queued,
    AwaitingBuild,
    Building,
    AwaitingDeploy,
    Deploying,
    CreateFailed,
    BuildFailed,
    DeployFailed,
    Deployed,
    Skipped,
    Interrupted,
    #[serde(other)]
    Unknown,
}

impl RevisionStatus {
    /// Every status, in the reference's order.
    pub const ALL: [RevisionStatus; 13] = [
        RevisionStatus::Creating,
        RevisionStatus::Queued,
        RevisionStatus::AwaitingBuild,
        RevisionStatus::Building,
        RevisionStatus::AwaitingDeploy,
        RevisionStatus::Deploying,
        RevisionStatus::CreateFailed,
        RevisionStatus::BuildFailed,
        RevisionStatus::DeployFailed,
        RevisionStatus::Deployed,
        RevisionStatus::Skipped,
        RevisionStatus::Interrupted,
        RevisionStatus::Unknown,
    ];

    /// The status's name on the wire and in the database (`AWAITING_DEPLOY`).
    pub fn as_str(self) -> &'static str {
        use RevisionStatus::*;
        match self {
            Creating => "CREATING",
            Queued => "QUEUED",
            AwaitingBuild => "AWAITING_BUILD",
            Building => "BUILDING",
            AwaitingDeploy => "AWAITING_DEPLOY",
            Deploying => "DEPLOYING",
            CreateFailed => "CREATE_FAILED",
            BuildFailed => "BUILD_FAILED",
            DeployFailed => "DEPLOY_FAILED",
            Deployed => "DEPLOYED",
            Skipped => "SKIPPED",
            Interrupted => "INTERRUPTED",
            Unknown => "UNKNOWN",
        }
    }

    /// The status of this name; `None` for a name that is not one.
    pub fn parse(s: &str) -> Option<RevisionStatus> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The status named `name` (`Unknown` for a name this version does not know).
    pub fn from_name(name: &str) -> Self {
        use serde::de::IntoDeserializer;
        let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
            name.into_deserializer();
        Self::deserialize(de).unwrap_or(RevisionStatus::Unknown)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredRevision {
    pub id: Uuid,
    pub status: RevisionStatus,
    /// The image to run: the revision's `image_uri`, or what its build produced. None
    /// while a source revision still needs building.
    pub image: Option<String>,
    /// For a source revision (`internal_source`) whose tarball is uploaded: how to build
    /// it; `None` before the upload, when there is nothing to build yet.
    pub build: Option<BuildSpec>,
    /// The agent replica holding the revision's claim, if any.
    pub lease_holder: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// What a build needs beyond the tarball (`GET revisions/{id}/source`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildSpec {
    pub langgraph_config_path: Option<String>,
    pub install_command: Option<String>,
    pub build_command: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

/// Take a revision: `AWAITING_DEPLOY → DEPLOYING` or `AWAITING_BUILD → BUILDING`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    pub protocol_version: u32,
    pub agent_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimAnswer {
    pub protocol_version: u32,
    pub revision_id: Uuid,
    /// `DEPLOYING` or `BUILDING`.
    pub status: RevisionStatus,
    pub lease_expires_at: DateTime<Utc>,
}

/// What an agent may report of a revision it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReportStatus {
    /// The build produced `image`; the revision then awaits deploy.
    Built,
    BuildFailed,
    Deployed,
    DeployFailed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    pub protocol_version: u32,
    pub agent_id: String,
    pub status: ReportStatus,
    /// A short machine-readable cause (`ImagePullBackOff`, `HealthCheckTimeout`...).
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// Required with `BUILT`: the image the build pushed.
    #[serde(default)]
    pub image: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusAnswer {
    pub protocol_version: u32,
    pub revision_id: Uuid,
    /// The revision's status after the report.
    pub status: RevisionStatus,
}

/// Teardown of a deployment in `AWAITING_DELETE` is done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deleted {
    pub protocol_version: u32,
    pub agent_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeletedAnswer {
    pub protocol_version: u32,
    pub deployment_id: Uuid,
    pub deleted: bool,
}

/// Asks for what a build Job needs ([`BuildCredential`]).
pub type BuildCredentialRequest = RegistryCredentialRequest;

/// Asks for a pull-only login to the control plane's registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryCredentialRequest {
    pub protocol_version: u32,
    pub agent_id: String,
}

/// A login to the control plane's registry that may pull the listener's own workspace's
/// images (those under `registry`/`repository_prefix`) and nothing else, not push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistryCredential {
    pub protocol_version: u32,
    /// The registry's host (and port), as image references name it.
    pub registry: String,
    /// Repositories the login may pull: those whose path starts with this.
    pub repository_prefix: String,
    pub username: String,
    pub password: String,
    /// Ask for a new one before this.
    pub expires_at: DateTime<Utc>,
}

/// What the holder of a build claim hands the job that builds where the agent does not
/// (a Kubernetes Job): where to fetch the source, and a login to push the image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildCredential {
    pub protocol_version: u32,
    /// Fetches this revision's source tarball (`GET`), no other key needed; only while
    /// the revision is `BUILDING` and until `expires_at`.
    pub source_url: String,
    /// The registry's host (and port) to push to.
    pub registry: String,
    /// Repositories the login may push to and pull from: those starting with this.
    pub repository_prefix: String,
    pub username: String,
    pub password: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogKind {
    Deploy,
    Build,
}

impl LogKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LogKind::Deploy => "deploy",
            LogKind::Build => "build",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogBatch {
    pub protocol_version: u32,
    pub lines: Vec<LogLine>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLine {
    pub deployment_id: Uuid,
    pub revision_id: Uuid,
    pub kind: LogKind,
    pub timestamp: DateTime<Utc>,
    /// `DEBUG`, `INFO`, `WARNING`, `ERROR`, `CRITICAL` (kept upper-cased).
    pub level: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogsAnswer {
    pub protocol_version: u32,
    pub accepted: usize,
}

/// Every error answer: `{"detail": "..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    pub detail: String,
}

/// The error text for a request of another protocol version.
pub fn version_mismatch(theirs: u32) -> String {
    if theirs > PROTOCOL_VERSION {
        format!(
            "The agent speaks data-plane protocol version {theirs}, but this server speaks \
             version {PROTOCOL_VERSION}: upgrade the server, or run an agent that speaks \
             version {PROTOCOL_VERSION}."
        )
    } else {
        format!(
            "The agent speaks data-plane protocol version {theirs}, but this server speaks \
             version {PROTOCOL_VERSION}: upgrade the agent."
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status's name (the database's and the reference's) is its name on the wire.
    #[test]
    fn status_names_are_the_wire_names() {
        for status in RevisionStatus::ALL {
            let wire = serde_json::to_value(status).unwrap_or_default();
            assert_eq!(wire.as_str(), Some(status.as_str()), "{status:?}");
            assert_eq!(RevisionStatus::parse(status.as_str()), Some(status));
            assert_eq!(RevisionStatus::from_name(status.as_str()), status);
        }
        assert_eq!(RevisionStatus::parse("LATER"), None);
        assert_eq!(RevisionStatus::from_name("LATER"), RevisionStatus::Unknown);
    }

    #[test]
    fn report_names_are_the_revision_statuses() {
        for (s, text) in [
            (ReportStatus::Built, "\"BUILT\""),
            (ReportStatus::BuildFailed, "\"BUILD_FAILED\""),
            (ReportStatus::Deployed, "\"DEPLOYED\""),
            (ReportStatus::DeployFailed, "\"DEPLOY_FAILED\""),
        ] {
            assert_eq!(serde_json::to_string(&s).unwrap_or_default(), text);
        }
    }

    #[test]
    fn revision_statuses_travel_as_their_names() {
        assert_eq!(
            RevisionStatus::from_name("AWAITING_BUILD"),
            RevisionStatus::AwaitingBuild
        );
        assert_eq!(
            serde_json::to_string(&RevisionStatus::DeployFailed).unwrap_or_default(),
            "\"DEPLOY_FAILED\""
        );
        // A status a newer server adds does not break this agent's desired state.
        assert_eq!(RevisionStatus::from_name("PAUSED"), RevisionStatus::Unknown);
        let read: Result<Vec<RevisionStatus>, _> =
            serde_json::from_str(r#"["PAUSED", "DEPLOYED"]"#);
        assert_eq!(
            read.ok(),
            Some(vec![RevisionStatus::Unknown, RevisionStatus::Deployed])
        );
    }

    #[test]
    fn mismatch_names_both_versions() {
        let newer = version_mismatch(PROTOCOL_VERSION + 1);
        assert!(newer.contains(&format!("version {}", PROTOCOL_VERSION + 1)));
        assert!(newer.contains(&format!("version {PROTOCOL_VERSION}")));
        assert!(newer.contains("upgrade the server"));
        assert!(version_mismatch(0).contains("upgrade the agent"));
    }
}
