//! The records the store reads and writes.

use crate::lifecycle::{DeploymentStatus, RevisionStatus};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    /// Self-hosted enterprise: every feature, listeners included.
    Enterprise,
    /// No listeners.
    Standard,
}

impl Plan {
    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Enterprise => "enterprise",
            Plan::Standard => "standard",
        }
    }

    pub fn parse(s: &str) -> Option<Plan> {
        match s {
            "enterprise" => Some(Plan::Enterprise),
            "standard" => Some(Plan::Standard),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Org {
    pub id: Uuid,
    pub name: String,
    pub plan: Plan,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Workspace {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// What a key may act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScope {
    /// One workspace (of this organization).
    Workspace { org_id: Uuid, workspace_id: Uuid },
    /// Every workspace of an organization; requests must name one.
    Org { org_id: Uuid },
    /// One listener's data-plane routes, nothing else.
    Listener {
        org_id: Uuid,
        workspace_id: Uuid,
        listener_id: Uuid,
    },
}

impl KeyScope {
    /// The key's columns: organization, workspace, listener.
    pub fn columns(self) -> (Uuid, Option<Uuid>, Option<Uuid>) {
        match self {
            KeyScope::Workspace {
                org_id,
                workspace_id,
            } => (org_id, Some(workspace_id), None),
            KeyScope::Org { org_id } => (org_id, None, None),
            KeyScope::Listener {
                org_id,
                workspace_id,
                listener_id,
            } => (org_id, Some(workspace_id), Some(listener_id)),
        }
    }
}

/// A stored key, without its value.
#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    pub id: Uuid,
    /// SHA-256 of the key's value, hex; never printed.
    #[serde(skip)]
    pub key_hash: String,
    pub org_id: Uuid,
    pub workspace_id: Option<Uuid>,
    /// Set for a listener key.
    pub listener_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    pub fn scope(&self) -> KeyScope {
        match (self.workspace_id, self.listener_id) {
            (Some(workspace_id), Some(listener_id)) => KeyScope::Listener {
                org_id: self.org_id,
                workspace_id,
                listener_id,
            },
            (Some(workspace_id), None) => KeyScope::Workspace {
                org_id: self.org_id,
                workspace_id,
            },
            (None, _) => KeyScope::Org {
                org_id: self.org_id,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub compute_type: String,
    pub compute_id: String,
    pub version: Option<String>,
    pub k8s_namespaces: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewListener {
    pub workspace_id: Uuid,
    pub compute_type: String,
    pub compute_id: String,
    pub version: Option<String>,
    pub k8s_namespaces: Option<Vec<String>>,
}

/// A listener change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ListenerPatch {
    pub version: Option<String>,
    /// `Some(None)` clears the namespaces.
    pub k8s_namespaces: Option<Option<Vec<String>>>,
}

/// A stored timestamp (microseconds since the epoch); one out of range is a corrupt row.
pub(crate) fn micros_to_time(us: i64) -> crate::Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| {
        crate::StoreError::Other(format!("a stored timestamp is out of range: {us}"))
    })
}

pub(crate) fn namespaces_to_text(ns: &Option<Vec<String>>) -> Option<String> {
    ns.as_ref()
        .map(|v| serde_json::to_string(v).unwrap_or_else(|_| "[]".into()))
}

/// A stored namespace list; text that is not a JSON list of strings is a corrupt row.
pub(crate) fn namespaces_from_text(text: Option<String>) -> crate::Result<Option<Vec<String>>> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| {
            crate::StoreError::Other(format!("a stored namespace list cannot be read: {e}"))
        })
    })
    .transpose()
}

/// A stored deployment. JSON documents are kept as the API normalized them.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub name: String,
    pub source: String,
    pub source_config: serde_json::Value,
    pub source_revision_config: serde_json::Value,
    /// Sealed by the API; opaque here.
    pub secrets: String,
    pub secret_references: Option<serde_json::Value>,
    pub tracked_packages: Option<serde_json::Value>,
    pub deployment_type: Option<String>,
    pub listener_id: Option<Uuid>,
    pub status: DeploymentStatus,
    pub latest_revision_id: Option<Uuid>,
    pub active_revision_id: Option<Uuid>,
    pub image_version: Option<String>,
    pub remote_reconciled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    pub id: Uuid,
    pub deployment_id: Uuid,
    pub source: String,
    pub source_revision_config: serde_json::Value,
    pub status: RevisionStatus,
    pub remote_reconciled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// What the data plane did with it.
    pub data_plane: RevisionProgress,
}

/// A revision's data-plane side: the claim on it, what its build produced, why it failed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RevisionProgress {
    /// The agent replica holding the revision (while `BUILDING` or `DEPLOYING`).
    pub lease_holder: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The image a build produced (`BUILT`).
    pub image: Option<String>,
    pub reason: Option<String>,
    pub message: Option<String>,
}

/// A revision to add: where it comes from and its configuration.
#[derive(Debug, Clone)]
pub struct NewRevision {
    pub source: String,
    pub source_revision_config: serde_json::Value,
    pub status: RevisionStatus,
}

/// Filters of the deployment list; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct DeploymentFilter {
    pub name: Option<String>,
    pub name_contains: Option<String>,
    pub status: Option<String>,
    pub remote_reconciled: Option<bool>,
    pub image_version: Option<String>,
    pub deployment_type: Option<String>,
    /// Only these ids (an empty list matches nothing).
    pub ids: Option<Vec<Uuid>>,
}

/// Filters of the revision list.
#[derive(Debug, Clone, Default)]
pub struct RevisionFilter {
    /// Any of these statuses.
    pub statuses: Option<Vec<String>>,
    pub remote_reconciled: Option<bool>,
}

/// What deleting a deployment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    NotFound,
    /// Gone at once: no data plane had picked it up (or `force` on one awaiting deletion).
    Removed,
    /// Marked `AWAITING_DELETE` until a data plane confirms the teardown.
    MarkedForDeletion,
}

pub(crate) fn json_text(v: &serde_json::Value) -> String {
    v.to_string()
}

/// Reads back a JSON column. The API accepts bodies nested up to 256 levels (Python's
/// limit, see compat), past serde_json's default of 128, so the limit is lifted here for
/// what we stored ourselves; text that does not parse is a corrupt row, an error.
pub(crate) fn json_from_text(t: &str) -> crate::Result<serde_json::Value> {
    use serde::Deserialize;
    let mut de = serde_json::Deserializer::from_str(t);
    de.disable_recursion_limit();
    serde_json::Value::deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| crate::StoreError::Other(format!("a stored JSON value cannot be read: {e}")))
}

/// Connection pool occupancy.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolStats {
    pub size: u32,
    pub idle: usize,
    pub max: u32,
    /// Transactions of SQLite's group commit of listener creates (0 on PostgreSQL,
    /// which commits each create on its own).
    pub group_commits: u64,
    /// Creates those transactions acknowledged: more than `group_commits` when batches
    /// formed.
    pub group_committed_writes: u64,
}

/// How many of each resource exist, across all workspaces.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResourceCounts {
    pub organizations: i64,
    pub workspaces: i64,
    pub api_keys: i64,
    pub listeners: i64,
    pub deployments: i64,
    pub revisions: i64,
}

/// The workspace an authenticated request acts in, as far as authorization needs it.
#[derive(Debug, Clone, Copy)]
pub struct WorkspaceAccess {
    pub org_id: Uuid,
    pub plan: Plan,
}

/// What a heartbeat records of the listener's agent.
#[derive(Debug, Clone)]
pub struct AgentBeat {
    pub agent_id: String,
    /// Becomes the listener's `version`.
    pub version: String,
    /// The heartbeat's facts as JSON (mode, cluster, observed deployments).
    pub facts: String,
    /// Leases `agent_id` holds on this listener's revisions last until then.
    pub lease_until: DateTime<Utc>,
}

/// A listener's desired state as stored: its generation and every deployment placed on
/// it, each with its newest and its active revision.
#[derive(Debug, Clone)]
pub struct DesiredRows {
    pub listener: Listener,
    pub generation: i64,
    pub deployments: Vec<PlacedDeployment>,
}

#[derive(Debug, Clone)]
pub struct PlacedDeployment {
    pub deployment: Deployment,
    pub latest: Option<Revision>,
    pub active: Option<Revision>,
}

/// What a claim did, or why it was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimOutcome {
    /// The agent holds the revision now, in this status, until `lease_expires_at`.
    Claimed {
        status: RevisionStatus,
        lease_expires_at: DateTime<Utc>,
    },
    NotFound,
    /// Another agent holds it and its lease has not expired.
    Held {
        status: RevisionStatus,
        until: DateTime<Utc>,
    },
    /// Its status cannot be claimed (superseded, finished, not yet created).
    NotClaimable(RevisionStatus),
    /// Its deployment is being deleted.
    Deleting,
}

/// A report an agent makes about a revision it holds.
#[derive(Debug, Clone)]
pub struct Report {
    pub agent_id: String,
    /// `AWAITING_DEPLOY` for a finished build (with `image`), `BUILD_FAILED`,
    /// `DEPLOYED` or `DEPLOY_FAILED`.
    pub status: RevisionStatus,
    pub image: Option<String>,
    pub reason: Option<String>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReportOutcome {
    /// Applied (or the same report again): the revision's status now.
    Done(RevisionStatus),
    NotFound,
    /// The state machine does not allow this move.
    NotAllowed {
        from: RevisionStatus,
        to: RevisionStatus,
    },
    /// The agent does not hold the revision.
    NotHolder(RevisionStatus),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DeletedOutcome {
    /// Removed now.
    Gone,
    /// No deployment of this id is placed on the listener (any more).
    NotFound,
    /// The deployment is not being deleted.
    NotDeleting(DeploymentStatus),
}

/// A log line to store.
#[derive(Debug, Clone)]
pub struct NewLogLine {
    pub deployment_id: Uuid,
    pub revision_id: Uuid,
    /// `deploy` or `build`.
    pub kind: &'static str,
    pub at: DateTime<Utc>,
    pub level: String,
    pub message: String,
}

/// A stored log line.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub level: String,
    pub message: String,
}

/// The part of a list to read: at most `limit` rows, after skipping `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub limit: i64,
    pub offset: i64,
}

impl Window {
    /// At most `limit` rows after the first `offset`.
    pub const fn new(limit: i64, offset: i64) -> Window {
        Window { limit, offset }
    }

    /// The first `limit` rows.
    pub const fn first(limit: i64) -> Window {
        Window::new(limit, 0)
    }
}

/// Which log lines to read, and in which order.
#[derive(Debug, Clone)]
pub struct LogQuery {
    pub deployment_id: Uuid,
    pub revision_id: Option<Uuid>,
    pub kind: &'static str,
    pub descending: bool,
    /// Lines after (ascending) or before (descending) this `(at, seq)` position.
    pub cursor: Option<(i64, i64)>,
    /// Upper-cased level to match exactly.
    pub level: Option<String>,
    /// Text the message must contain.
    pub contains: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: i64,
}

/// Why a claim is refused (see [`crate::lifecycle::claim`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimRefusal {
    NotClaimable,
    Held,
}

/// Why a report is refused (see [`crate::lifecycle::report`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportRefusal {
    NotAllowed,
    NotHolder,
}

/// What serving a build's source needs to know of a revision.
#[derive(Debug, Clone)]
pub struct BuildSource {
    pub status: RevisionStatus,
    pub lease_holder: Option<String>,
    pub workspace_id: Uuid,
    pub deployment_id: Uuid,
    /// The revision's `source`.
    pub source: String,
    pub revision_config: crate::RevisionConfig,
    /// The deployment's `source_config`.
    pub source_config: crate::SourceConfig,
}

/// How an integration signs in to its git host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IntegrationKind {
    /// A token (personal access token, GitHub Enterprise, GitLab, Gitea): `credential`.
    Token,
    /// A GitHub App installation: `credential` is the app's private key, from which
    /// installation tokens are minted.
    GithubApp,
}

impl IntegrationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IntegrationKind::Token => "token",
            IntegrationKind::GithubApp => "github_app",
        }
    }
}

/// A git host a workspace deploys from. `credential` and `webhook_secret` are sealed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Integration {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub name: String,
    pub kind: IntegrationKind,
    /// Where repositories live: `repo_url`s start with it (`https://github.com`).
    pub base_url: String,
    /// The host's GitHub-compatible REST API (`https://api.github.com`), if any.
    pub api_url: Option<String>,
    pub app_id: Option<i64>,
    pub installation_id: Option<i64>,
    #[serde(skip)]
    pub credential: String,
    #[serde(skip)]
    pub webhook_secret: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What deleting an integration did.
#[derive(Debug, Clone, PartialEq)]
pub enum IntegrationDeleted {
    Deleted,
    NotFound,
    /// Deployments (ids) still deploy from it.
    InUse(Vec<Uuid>),
}

/// A listener's generation after a write moved it, to announce after the commit.
pub type Bump = (Uuid, i64);

/// What a listener's agent last said of itself in a heartbeat.
#[derive(Debug, Clone)]
pub struct AgentState {
    pub listener_id: Uuid,
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The facts of the last heartbeat (mode, cluster, observed deployments), as sent.
    pub facts: Option<serde_json::Value>,
}

/// The room an upload asks for in its workspace's quota when its `PUT` starts.
#[derive(Debug, Clone, Copy)]
pub struct UploadRoom {
    /// The workspace's quota, in bytes.
    pub quota: i64,
    /// Bytes to hold if there is room for them (the announced length, else the largest
    /// upload allowed).
    pub want: i64,
    /// Fewer than this left is no room at all (the announced length, else 1).
    pub need: i64,
    /// When the hold ends if the upload neither completes nor is released.
    pub until: DateTime<Utc>,
}

impl UploadRoom {
    /// The bytes to hold when `used` are completed or held by other uploads.
    pub fn bytes(&self, used: i64) -> Option<i64> {
        let left = self.quota.saturating_sub(used);
        (left >= self.need.max(1)).then(|| self.want.min(left))
    }
}

/// What [`crate::UploadStore::reserve_upload`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Reservation {
    /// Unknown, expired, completed, or being written by another request.
    Unavailable,
    /// The quota has no room: `used` bytes are completed or held.
    NoRoom { used: i64 },
    /// `bytes` are held for this upload; `used` were taken by others.
    Held {
        deployment: Uuid,
        object_path: String,
        bytes: i64,
        used: i64,
    },
}

/// An OAuth provider of a workspace (Agent Auth). `client_secret` is sealed.
#[derive(Debug, Clone, PartialEq)]
pub struct OAuthProvider {
    pub id: Uuid,
    pub workspace_id: Uuid,
    /// The workspace's own name for it (`google`), unique in the workspace.
    pub provider_id: String,
    pub name: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub auth_url: String,
    pub token_url: String,
    pub uses_pkce: bool,
    pub code_challenge_method: Option<String>,
    pub provider_type: Option<String>,
    pub mcp_server_url: Option<String>,
    pub token_endpoint_auth_method: String,
    pub is_dynamic_client: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A token obtained from a provider for one end user. `access_token` and
/// `refresh_token` are sealed.
#[derive(Debug, Clone, PartialEq)]
pub struct OAuthToken {
    pub id: Uuid,
    pub workspace_id: Uuid,
    /// The provider's row id ([`OAuthProvider::id`]).
    pub provider_row: Uuid,
    /// The provider's `provider_id`.
    pub provider_id: String,
    pub owner: String,
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub scopes: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub provider_account_label: Option<String>,
    pub is_default: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Where a sign-in stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRequestStatus {
    /// Waiting for the user to come back from the provider.
    Pending,
    /// The callback arrived; the code is being exchanged (used once).
    Exchanging,
    Completed,
    Failed,
}

impl AuthRequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthRequestStatus::Pending => "pending",
            AuthRequestStatus::Exchanging => "exchanging",
            AuthRequestStatus::Completed => "completed",
            AuthRequestStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => AuthRequestStatus::Pending,
            "exchanging" => AuthRequestStatus::Exchanging,
            "completed" => AuthRequestStatus::Completed,
            "failed" => AuthRequestStatus::Failed,
            _ => return None,
        })
    }
}

/// A sign-in under way. `verifier` (PKCE) is sealed; `state_hash` is the SHA-256 of the
/// `state` sent to the provider.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthRequest {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub provider_row: Uuid,
    pub state_hash: String,
    pub verifier: Option<String>,
    pub owner: String,
    pub agent_id: Option<String>,
    pub scopes: Vec<String>,
    pub is_default: bool,
    pub status: AuthRequestStatus,
    pub token_id: Option<Uuid>,
    pub error: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// A token connected to an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConnection {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub agent_id: String,
    pub token: OAuthToken,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// How a finished sign-in ends.
#[derive(Debug, Clone)]
pub enum AuthOutcome {
    /// The token obtained (already sealed), saved and linked to the request.
    Completed(Box<OAuthToken>),
    /// Why it failed, in words.
    Failed(String),
}

/// Which of a workspace's tokens [`crate::AgentAuthStore::list_tokens`] reads.
#[derive(Debug, Clone, Default)]
pub struct TokenFilter {
    /// Of this provider (its `provider_id`).
    pub provider_id: Option<String>,
    pub owner: Option<String>,
    /// Only tokens of providers whose `provider_type` is this.
    pub provider_type: Option<String>,
}

/// A connection to make.
#[derive(Debug, Clone)]
pub struct NewConnection {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub agent_id: String,
    pub token_id: Uuid,
    pub created_by: String,
}
