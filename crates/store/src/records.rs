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
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    pub fn scope(&self) -> KeyScope {
        match self.workspace_id {
            Some(workspace_id) => KeyScope::Workspace {
                org_id: self.org_id,
                workspace_id,
            },
            None => KeyScope::Org {
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
