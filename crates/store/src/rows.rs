//! Turning result rows into records, once for both backends. The backends differ only
//! in how a UUID column is stored (text in SQLite, `uuid` in PostgreSQL), which the
//! [`Columns`] implementations hide.

use crate::lifecycle::{DeploymentStatus, RevisionStatus};
use crate::records::*;
use crate::{Result, StoreError};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use uuid::Uuid;

pub(crate) const LISTENER_COLUMNS: &str = "id, workspace_id, compute_type, compute_id, version, \
    k8s_namespaces, created_at, updated_at";
pub(crate) const DEPLOYMENT_COLUMNS: &str = "id, workspace_id, name, source, source_config, \
    source_revision_config, secrets, secret_references, tracked_packages, deployment_type, \
    listener_id, status, latest_revision_id, active_revision_id, image_version, remote_reconciled, \
    created_at, updated_at";
pub(crate) const REVISION_COLUMNS: &str =
    "id, deployment_id, source, source_revision_config, status, \
    remote_reconciled, created_at, updated_at, lease_holder, lease_expires_at, image, \
    status_reason, status_message";

/// [`REVISION_COLUMNS`] of table alias `table`, each renamed `{prefix}{column}`.
pub(crate) fn revision_columns_as(table: &str, prefix: &str) -> String {
    REVISION_COLUMNS
        .split(", ")
        .map(|c| format!("{table}.{c} AS {prefix}{c}", c = c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Typed column access on a row of either backend.
pub(crate) trait Columns {
    fn text(&self, col: &str) -> Result<String>;
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
    fn int(&self, col: &str) -> Result<i64>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>>;
    fn flag(&self, col: &str) -> Result<bool>;
    fn opt_uuid(&self, col: &str) -> Result<Option<Uuid>>;

    fn uuid(&self, col: &str) -> Result<Uuid> {
        self.opt_uuid(col)?
            .ok_or_else(|| StoreError::Other(format!("{col} is null")))
    }

    fn time(&self, col: &str) -> Result<chrono::DateTime<chrono::Utc>> {
        micros_to_time(self.int(col)?)
    }

    fn json(&self, col: &str) -> Result<serde_json::Value> {
        json_from_text(&self.text(col)?)
    }

    fn opt_json(&self, col: &str) -> Result<Option<serde_json::Value>> {
        self.opt_text(col)?
            .as_deref()
            .map(json_from_text)
            .transpose()
    }
}

macro_rules! common_columns {
    () => {
        fn text(&self, col: &str) -> Result<String> {
            self.try_get(col).map_err(StoreError::from)
        }
        fn opt_text(&self, col: &str) -> Result<Option<String>> {
            self.try_get(col).map_err(StoreError::from)
        }
        fn int(&self, col: &str) -> Result<i64> {
            self.try_get(col).map_err(StoreError::from)
        }
        fn opt_int(&self, col: &str) -> Result<Option<i64>> {
            self.try_get(col).map_err(StoreError::from)
        }
        fn flag(&self, col: &str) -> Result<bool> {
            self.try_get(col).map_err(StoreError::from)
        }
    };
}

/// A uuid SQLite keeps as text.
pub(crate) fn uuid_text(col: &str, text: Option<&str>) -> Result<Option<Uuid>> {
    text.map(|t| {
        Uuid::parse_str(t).map_err(|e| StoreError::Other(format!("bad uuid in {col}: {e}")))
    })
    .transpose()
}

impl Columns for SqliteRow {
    common_columns!();

    fn opt_uuid(&self, col: &str) -> Result<Option<Uuid>> {
        let text: Option<&str> = self.try_get(col).map_err(StoreError::from)?;
        uuid_text(col, text)
    }
}

impl Columns for PgRow {
    common_columns!();

    fn opt_uuid(&self, col: &str) -> Result<Option<Uuid>> {
        self.try_get(col).map_err(StoreError::from)
    }
}

/// A corrupt row is an error (logged where it surfaces), never a silent default.
fn corrupt(what: &str, text: &str) -> StoreError {
    StoreError::Other(format!("a stored {what} is not one: {text:?}"))
}

fn plan(text: &str) -> Result<Plan> {
    Plan::parse(text).ok_or_else(|| corrupt("plan", text))
}

pub(crate) fn revision_status(text: &str) -> Result<RevisionStatus> {
    RevisionStatus::parse(text).ok_or_else(|| corrupt("revision status", text))
}

pub(crate) fn deployment_status(text: &str) -> Result<DeploymentStatus> {
    DeploymentStatus::parse(text).ok_or_else(|| corrupt("deployment status", text))
}

/// [`crate::lifecycle::delete_outcome`] from the stored status names.
pub(crate) fn delete_outcome(
    status: &str,
    revision_statuses: &[String],
    force: bool,
) -> Result<crate::DeleteOutcome> {
    let revisions = revision_statuses
        .iter()
        .map(|s| revision_status(s))
        .collect::<Result<Vec<_>>>()?;
    Ok(crate::lifecycle::delete_outcome(
        deployment_status(status)?,
        &revisions,
        force,
    ))
}

pub(crate) fn listener(r: &dyn Columns) -> Result<Listener> {
    Ok(Listener {
        id: r.uuid("id")?,
        workspace_id: r.uuid("workspace_id")?,
        compute_type: r.text("compute_type")?,
        compute_id: r.text("compute_id")?,
        version: r.opt_text("version")?,
        k8s_namespaces: namespaces_from_text(r.opt_text("k8s_namespaces")?)?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
    })
}

pub(crate) fn org(r: &dyn Columns) -> Result<Org> {
    Ok(Org {
        id: r.uuid("id")?,
        name: r.text("name")?,
        plan: plan(&r.text("plan")?)?,
        created_at: r.time("created_at")?,
    })
}

pub(crate) fn workspace(r: &dyn Columns) -> Result<Workspace> {
    Ok(Workspace {
        id: r.uuid("id")?,
        org_id: r.uuid("org_id")?,
        name: r.text("name")?,
        created_at: r.time("created_at")?,
    })
}

pub(crate) fn workspace_with_plan(r: &dyn Columns) -> Result<(Workspace, Plan)> {
    Ok((workspace(r)?, plan(&r.text("plan")?)?))
}

pub(crate) fn api_key(r: &dyn Columns) -> Result<ApiKey> {
    Ok(ApiKey {
        id: r.uuid("id")?,
        key_hash: r.text("key_hash")?,
        org_id: r.uuid("org_id")?,
        workspace_id: r.opt_uuid("workspace_id")?,
        listener_id: r.opt_uuid("listener_id")?,
        created_at: r.time("created_at")?,
        revoked_at: r.opt_int("revoked_at")?.map(micros_to_time).transpose()?,
    })
}

/// A key with the workspace it acts in (`ws_org`, `ws_plan` from the join).
pub(crate) fn authenticated(r: &dyn Columns) -> Result<(ApiKey, Option<WorkspaceAccess>)> {
    let access = match (r.opt_uuid("ws_org")?, r.opt_text("ws_plan")?) {
        (Some(org_id), Some(p)) => Some(WorkspaceAccess {
            org_id,
            plan: plan(&p)?,
        }),
        _ => None,
    };
    Ok((api_key(r)?, access))
}

pub(crate) fn deployment(r: &dyn Columns) -> Result<Deployment> {
    Ok(Deployment {
        id: r.uuid("id")?,
        workspace_id: r.uuid("workspace_id")?,
        name: r.text("name")?,
        source: r.text("source")?,
        source_config: r.json("source_config")?,
        source_revision_config: r.json("source_revision_config")?,
        secrets: r.text("secrets")?,
        secret_references: r.opt_json("secret_references")?,
        tracked_packages: r.opt_json("tracked_packages")?,
        deployment_type: r.opt_text("deployment_type")?,
        listener_id: r.opt_uuid("listener_id")?,
        status: deployment_status(&r.text("status")?)?,
        latest_revision_id: r.opt_uuid("latest_revision_id")?,
        active_revision_id: r.opt_uuid("active_revision_id")?,
        image_version: r.opt_text("image_version")?,
        remote_reconciled: r.flag("remote_reconciled")?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
    })
}

pub(crate) fn revision(r: &dyn Columns) -> Result<Revision> {
    revision_prefixed(r, "")
}

/// A revision read from columns named `{prefix}{column}`.
pub(crate) fn revision_prefixed(r: &dyn Columns, prefix: &str) -> Result<Revision> {
    let c = |name: &str| format!("{prefix}{name}");
    Ok(Revision {
        id: r.uuid(&c("id"))?,
        deployment_id: r.uuid(&c("deployment_id"))?,
        source: r.text(&c("source"))?,
        source_revision_config: r.json(&c("source_revision_config"))?,
        status: revision_status(&r.text(&c("status"))?)?,
        remote_reconciled: r.flag(&c("remote_reconciled"))?,
        created_at: r.time(&c("created_at"))?,
        updated_at: r.time(&c("updated_at"))?,
        data_plane: RevisionProgress {
            lease_holder: r.opt_text(&c("lease_holder"))?,
            lease_expires_at: r
                .opt_int(&c("lease_expires_at"))?
                .map(micros_to_time)
                .transpose()?,
            image: r.opt_text(&c("image"))?,
            reason: r.opt_text(&c("status_reason"))?,
            message: r.opt_text(&c("status_message"))?,
        },
    })
}

/// A log line (`seq, at, level, message`).
pub(crate) fn log_entry(r: &dyn Columns) -> Result<LogEntry> {
    Ok(LogEntry {
        seq: r.int("seq")?,
        at: r.time("at")?,
        level: r.text("level")?,
        message: r.text("message")?,
    })
}

pub(crate) fn counts(r: &dyn Columns) -> Result<ResourceCounts> {
    Ok(ResourceCounts {
        organizations: r.int("organizations")?,
        workspaces: r.int("workspaces")?,
        api_keys: r.int("api_keys")?,
        listeners: r.int("listeners")?,
        deployments: r.int("deployments")?,
        revisions: r.int("revisions")?,
    })
}

/// An upload row: its deployment and object path.
pub(crate) fn upload(r: &dyn Columns) -> Result<(Uuid, String)> {
    Ok((r.uuid("deployment_id")?, r.text("object_path")?))
}

/// `columns` of table alias `table`.
pub(crate) fn qualified(table: &str, columns: &str) -> String {
    columns
        .split(',')
        .map(|c| format!("{table}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A joined revision that may be absent (its `id` column null).
pub(crate) fn optional_revision(r: &dyn Columns, prefix: &str) -> Result<Option<Revision>> {
    if r.opt_uuid(&format!("{prefix}id"))?.is_none() {
        return Ok(None);
    }
    revision_prefixed(r, prefix).map(Some)
}

/// A revision (columns as [`REVISION_COLUMNS`]) with its deployment's `workspace_id`
/// and `d_source_config`.
pub(crate) fn build_source(r: &dyn Columns) -> Result<BuildSource> {
    let rev = revision(r)?;
    Ok(BuildSource {
        status: rev.status,
        lease_holder: rev.data_plane.lease_holder.clone(),
        workspace_id: r.uuid("workspace_id")?,
        deployment_id: rev.deployment_id,
        source: rev.source,
        revision_config: crate::RevisionConfig::of(&rev.source_revision_config),
        source_config: crate::SourceConfig::of(&r.json("d_source_config")?),
    })
}

pub(crate) const INTEGRATION_COLUMNS: &str = "id, workspace_id, name, kind, base_url, api_url, \
    app_id, installation_id, credential, webhook_secret, created_at, updated_at";

pub(crate) fn integration(r: &dyn Columns) -> Result<Integration> {
    let kind = match r.text("kind")?.as_str() {
        "token" => IntegrationKind::Token,
        "github_app" => IntegrationKind::GithubApp,
        other => {
            return Err(StoreError::Other(format!(
                "unknown integration kind {other}"
            )))
        }
    };
    Ok(Integration {
        id: r.uuid("id")?,
        workspace_id: r.uuid("workspace_id")?,
        name: r.text("name")?,
        kind,
        base_url: r.text("base_url")?,
        api_url: r.opt_text("api_url")?,
        app_id: r.opt_int("app_id")?,
        installation_id: r.opt_int("installation_id")?,
        credential: r.text("credential")?,
        webhook_secret: r.opt_text("webhook_secret")?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
    })
}

pub(crate) fn agent_state(r: &dyn Columns) -> Result<AgentState> {
    Ok(AgentState {
        listener_id: r.uuid("id")?,
        last_seen_at: r.opt_int("last_seen_at")?.map(micros_to_time).transpose()?,
        facts: r.opt_json("agent")?,
    })
}

pub(crate) const PROVIDER_COLUMNS: &str = "id, workspace_id, provider_id, name, client_id, \
    client_secret, auth_url, token_url, uses_pkce, code_challenge_method, provider_type, \
    mcp_server_url, token_endpoint_auth_method, is_dynamic_client, created_at, updated_at";

pub(crate) fn oauth_provider(r: &dyn Columns) -> Result<OAuthProvider> {
    Ok(OAuthProvider {
        id: r.uuid("id")?,
        workspace_id: r.uuid("workspace_id")?,
        provider_id: r.text("provider_id")?,
        name: r.text("name")?,
        client_id: r.text("client_id")?,
        client_secret: r.opt_text("client_secret")?,
        auth_url: r.text("auth_url")?,
        token_url: r.text("token_url")?,
        uses_pkce: r.flag("uses_pkce")?,
        code_challenge_method: r.opt_text("code_challenge_method")?,
        provider_type: r.opt_text("provider_type")?,
        mcp_server_url: r.opt_text("mcp_server_url")?,
        token_endpoint_auth_method: r.text("token_endpoint_auth_method")?,
        is_dynamic_client: r.flag("is_dynamic_client")?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
    })
}

/// A token with its provider's `provider_id` (tables `oauth_tokens t` and
/// `oauth_providers p`).
pub(crate) const TOKEN_SELECT: &str = "SELECT t.id, t.workspace_id, t.provider_row, \
    p.provider_id, t.owner, t.access_token, t.refresh_token, t.scopes, t.expires_at, \
    t.provider_account_label, t.is_default, t.created_at, t.updated_at \
    FROM oauth_tokens t JOIN oauth_providers p ON p.id = t.provider_row";

fn text_list(r: &dyn Columns, col: &str) -> Result<Vec<String>> {
    serde_json::from_value(r.json(col)?)
        .map_err(|e| StoreError::Other(format!("{col} is not a list of strings: {e}")))
}

pub(crate) fn oauth_token(r: &dyn Columns) -> Result<OAuthToken> {
    Ok(OAuthToken {
        id: r.uuid("id")?,
        workspace_id: r.uuid("workspace_id")?,
        provider_row: r.uuid("provider_row")?,
        provider_id: r.text("provider_id")?,
        owner: r.text("owner")?,
        access_token: r.text("access_token")?,
        refresh_token: r.opt_text("refresh_token")?,
        scopes: text_list(r, "scopes")?,
        expires_at: r.opt_int("expires_at")?.map(micros_to_time).transpose()?,
        provider_account_label: r.opt_text("provider_account_label")?,
        is_default: r.flag("is_default")?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
    })
}

pub(crate) const AUTH_REQUEST_COLUMNS: &str = "id, workspace_id, provider_row, state_hash, \
    verifier, owner, agent_id, scopes, is_default, status, token_id, error, expires_at, \
    created_at";

pub(crate) fn auth_request(r: &dyn Columns) -> Result<AuthRequest> {
    let status = r.text("status")?;
    Ok(AuthRequest {
        id: r.uuid("id")?,
        workspace_id: r.uuid("workspace_id")?,
        provider_row: r.uuid("provider_row")?,
        state_hash: r.text("state_hash")?,
        verifier: r.opt_text("verifier")?,
        owner: r.text("owner")?,
        agent_id: r.opt_text("agent_id")?,
        scopes: text_list(r, "scopes")?,
        is_default: r.flag("is_default")?,
        status: AuthRequestStatus::parse(&status)
            .ok_or_else(|| StoreError::Other(format!("unknown sign-in status {status}")))?,
        token_id: r.opt_uuid("token_id")?,
        error: r.opt_text("error")?,
        expires_at: r.time("expires_at")?,
        created_at: r.time("created_at")?,
    })
}

/// A connection joined with its token ([`TOKEN_SELECT`] plus `c.*` renamed `conn_*`).
pub(crate) fn agent_connection(r: &dyn Columns) -> Result<AgentConnection> {
    Ok(AgentConnection {
        id: r.uuid("conn_id")?,
        workspace_id: r.uuid("workspace_id")?,
        agent_id: r.text("conn_agent_id")?,
        token: oauth_token(r)?,
        created_by: r.text("conn_created_by")?,
        created_at: r.time("conn_created_at")?,
    })
}
