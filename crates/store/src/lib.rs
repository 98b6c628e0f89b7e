//! hostplane's storage: the [`Store`] trait, the records it reads and writes, every
//! operation written once over both databases (`transactions/`, through what each
//! backend provides in `sql.rs`: statements, locks, the few spellings that differ), and
//! one module per backend (`sqlite/`, `postgres/`). The state machine's rules are pure
//! functions in [`lifecycle`]. All SQL lives in this crate.

pub mod changes;
pub mod config;
mod keys;
pub mod lifecycle;
pub mod postgres;
pub mod records;
mod rows;
mod sql;
pub mod sqlite;
mod transactions;

use async_trait::async_trait;
use std::sync::Arc;
use uuid::Uuid;

pub use config::{ListenerConfig, RevisionConfig, SourceConfig};
pub use keys::{generate_key, hash_key};
pub use lifecycle::delete_outcome;
pub use records::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule of the schema refused the write.
    #[error("conflict")]
    Conflict,
    /// A referenced row does not exist.
    #[error("not found")]
    NotFound,
    /// The row is still referenced (a listener that deployments use).
    #[error("in use")]
    InUse,
    /// The row changed since it was read (optimistic concurrency); read again and retry.
    #[error("changed concurrently")]
    Stale,
    /// A value the database cannot hold or compare: PostgreSQL text cannot contain the
    /// NUL character.
    #[error("unrepresentable text: {0}")]
    Unrepresentable(String),
    /// The database cannot be reached right now (pool timeout, connection refused).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A boxed future borrowing a connection, for closures run inside a transaction.
pub(crate) type BoxFut<'c, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'c>>;

/// What a first start inserts: the `default` organization (enterprise plan), its
/// `default` workspace and a key for that workspace.
#[derive(Debug, Clone)]
pub struct FirstStart {
    pub org: Org,
    pub workspace: Workspace,
    pub key_hash: String,
}

impl FirstStart {
    fn new(key_hash: &str) -> Self {
        // Stored in whole microseconds, so the records match what is read back.
        let created_at =
            chrono::DateTime::from_timestamp_micros(now_micros()).unwrap_or_else(chrono::Utc::now);
        let org_id = Uuid::new_v4();
        FirstStart {
            org: Org {
                id: org_id,
                name: "default".into(),
                plan: Plan::Enterprise,
                created_at,
            },
            workspace: Workspace {
                id: Uuid::new_v4(),
                org_id,
                name: "default".into(),
                created_at,
            },
            key_hash: key_hash.to_owned(),
        }
    }

    fn key_scope(&self) -> KeyScope {
        KeyScope::Workspace {
            org_id: self.org.id,
            workspace_id: self.workspace.id,
        }
    }
}

/// What the first start on an empty database created.
#[derive(Debug, Clone)]
pub struct Bootstrapped {
    pub org: Org,
    pub workspace: Workspace,
    pub key_id: Uuid,
    /// The key's value: only when it was generated here (never the configured one).
    pub generated_key: Option<String>,
}

/// Everything hostplane stores, in eight parts: identities, listeners, deployments, their
/// uploads, the git hosts they deploy from, Agent Auth's providers and tokens, the data
/// plane's side of them, and the web console's sessions.
pub trait Store:
    IdentityStore
    + ListenerStore
    + DeploymentStore
    + UploadStore
    + IntegrationStore
    + AgentAuthStore
    + DataPlaneStore
    + ConsoleStore
    + Send
    + Sync
    + 'static
{
}

/// Both databases, whose parts are each written once over `sql::Backend`.
impl<B: sql::Backend> Store for B {}

/// Organizations, workspaces and API keys, and the store's own health.
#[async_trait]
pub trait IdentityStore: Send + Sync {
    /// Creates the default organization, workspace and key (`key`, or a generated one)
    /// when no organization exists yet; safe when several processes start at once.
    /// `None` when there was data.
    async fn bootstrap(&self, key: Option<&str>) -> Result<Option<Bootstrapped>> {
        let generated = key.is_none().then(generate_key);
        let value = key.map(str::to_owned).or_else(|| generated.clone());
        let first = FirstStart::new(&hash_key(value.as_deref().unwrap_or_default()));
        Ok(self
            .insert_first_start(&first)
            .await?
            .map(|key_id| Bootstrapped {
                org: first.org,
                workspace: first.workspace,
                key_id,
                generated_key: generated,
            }))
    }

    /// The backend's half of [`IdentityStore::bootstrap`]: in one transaction that only
    /// one process runs at a time, inserts `first` when there is no organization yet,
    /// and returns the new key's id (`None` when there was data).
    async fn insert_first_start(&self, first: &FirstStart) -> Result<Option<Uuid>>;

    async fn create_org(&self, name: &str, plan: Plan) -> Result<Org>;
    async fn list_orgs(&self) -> Result<Vec<Org>>;
    /// `NotFound` when the organization does not exist.
    async fn create_workspace(&self, org_id: Uuid, name: &str) -> Result<Workspace>;
    async fn list_workspaces(&self, org_id: Option<Uuid>) -> Result<Vec<Workspace>>;
    /// Stores a key by its hash; `NotFound` when the org or workspace does not exist.
    async fn create_api_key(&self, scope: KeyScope, key_hash: &str) -> Result<ApiKey>;
    async fn list_api_keys(&self) -> Result<Vec<ApiKey>>;
    /// One key by id, revoked or not.
    async fn get_api_key(&self, id: Uuid) -> Result<Option<ApiKey>>;
    /// `NotFound` when no such key exists; revoking twice is fine.
    async fn revoke_api_key(&self, id: Uuid) -> Result<()>;
    /// The live key with this hash and the workspace a request with it would act in
    /// (the key's own workspace, or `requested` for an organization key), in one query.
    async fn authenticate(
        &self,
        key_hash: &str,
        requested: Option<Uuid>,
    ) -> Result<Option<(ApiKey, Option<WorkspaceAccess>)>>;
    async fn get_workspace(&self, id: Uuid) -> Result<Option<(Workspace, Plan)>>;
    fn pool_stats(&self) -> PoolStats;
    async fn resource_counts(&self) -> Result<ResourceCounts>;
}

/// Listeners (v2).
#[async_trait]
pub trait ListenerStore: Send + Sync {
    /// `Conflict` when the workspace already has a listener with this `compute_id`.
    async fn create_listener(&self, new: NewListener) -> Result<Listener>;
    async fn list_listeners(&self, workspace: Uuid, window: Window) -> Result<Vec<Listener>>;
    async fn get_listener(&self, workspace: Uuid, id: Uuid) -> Result<Option<Listener>>;
    /// `(id, updated_at)` of the listeners [`ListenerStore::list_listeners`] would return,
    /// in its order: a change to a listener always moves its `updated_at` forward, so
    /// callers that remember rendered listeners by version read only these two columns.
    async fn listener_versions(
        &self,
        workspace: Uuid,
        window: Window,
    ) -> Result<Vec<(Uuid, chrono::DateTime<chrono::Utc>)>>;
    /// The workspace's listeners among `ids`, in no particular order.
    async fn listeners_by_ids(&self, workspace: Uuid, ids: &[Uuid]) -> Result<Vec<Listener>>;
    /// A listener of any workspace (administration).
    async fn find_listener(&self, id: Uuid) -> Result<Option<Listener>>;
    /// The ids of every listener of the workspace, oldest first (for placement).
    async fn listener_ids(&self, workspace: Uuid) -> Result<Vec<Uuid>>;
    /// The workspace's oldest listener.
    async fn oldest_listener(&self, workspace: Uuid) -> Result<Option<Uuid>>;
    async fn patch_listener(
        &self,
        workspace: Uuid,
        id: Uuid,
        patch: ListenerPatch,
    ) -> Result<Option<Listener>>;
    /// `InUse` when deployments still use the listener.
    async fn delete_listener(&self, workspace: Uuid, id: Uuid) -> Result<bool>;
}

/// Deployments and their revisions.
#[async_trait]
pub trait DeploymentStore: Send + Sync {
    /// Creates a deployment and its first revision; `Conflict` when the name is taken.
    async fn create_deployment(&self, new: Deployment, first: NewRevision) -> Result<Deployment>;
    async fn list_deployments(
        &self,
        workspace: Uuid,
        filter: &DeploymentFilter,
        window: Window,
    ) -> Result<Vec<Deployment>>;
    async fn get_deployment(&self, workspace: Uuid, id: Uuid) -> Result<Option<Deployment>>;
    /// The `updated_at` of a listener or deployment of the workspace, which every change
    /// to it moves forward; `None` when it does not exist there.
    async fn version(
        &self,
        kind: Versioned,
        workspace: Uuid,
        id: Uuid,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>>;
    /// Writes `next` over the deployment if it still has `expected_updated_at` (`Stale`
    /// otherwise), adding `revision` when given: it becomes the latest, and older
    /// revisions still waiting are skipped.
    async fn save_deployment(
        &self,
        next: Deployment,
        expected_updated_at: chrono::DateTime<chrono::Utc>,
        revision: Option<NewRevision>,
    ) -> Result<Deployment>;
    async fn delete_deployment(
        &self,
        workspace: Uuid,
        id: Uuid,
        force: bool,
    ) -> Result<DeleteOutcome>;
    /// Newest first; `None` when the deployment does not exist in the workspace.
    async fn list_revisions(
        &self,
        workspace: Uuid,
        deployment: Uuid,
        filter: &RevisionFilter,
        window: Window,
    ) -> Result<Option<Vec<Revision>>>;
    async fn get_revision(
        &self,
        workspace: Uuid,
        deployment: Uuid,
        id: Uuid,
    ) -> Result<Option<Revision>>;
}

/// Uploaded source tarballs: issued URLs, quota holds while a `PUT` runs, completion and
/// garbage collection.
#[async_trait]
pub trait UploadStore: Send + Sync {
    /// Records an issued upload (by the hash of its token), unless the deployment
    /// already has `max_outstanding` unexpired uploads not yet completed: then `false`.
    async fn create_upload(
        &self,
        deployment: Uuid,
        token_hash: &str,
        object_path: &str,
        expires_at: chrono::DateTime<chrono::Utc>,
        max_outstanding: i64,
    ) -> Result<bool>;
    /// Starts writing an unexpired, incomplete upload that no other request is writing:
    /// in one transaction per workspace, holds room in the workspace's quota for it
    /// (see [`UploadRoom`]) until it completes, is released, or `room.until` passes.
    async fn reserve_upload(&self, token_hash: &str, room: UploadRoom) -> Result<Reservation>;
    /// Gives back what [`UploadStore::reserve_upload`] held for an upload that did not complete.
    async fn release_upload(&self, token_hash: &str) -> Result<()>;
    /// Marks an upload complete (its size counts against the quota from now on, its
    /// reservation ends); `Conflict` when another request completed it first.
    async fn complete_upload(&self, token_hash: &str, size_bytes: i64) -> Result<()>;
    /// True when `object_path` was issued for this deployment and uploaded completely.
    async fn upload_completed(&self, deployment: Uuid, object_path: &str) -> Result<bool>;
    /// Garbage collection of one stored tarball: forgets the upload of `object_path`
    /// when it is expired and never completed, or completed before `unused_since` and
    /// named by no revision of its deployment. True when no upload of that path is left,
    /// so its file can go.
    async fn collect_upload(
        &self,
        object_path: &str,
        unused_since: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool>;
}

/// Integrations (git hosts with their sealed credentials) and push deliveries.
#[async_trait]
pub trait IntegrationStore: Send + Sync {
    /// `Conflict` when the workspace has an integration of that name.
    async fn create_integration(&self, new: Integration) -> Result<Integration>;
    /// Oldest first; of one workspace, or of all.
    async fn list_integrations(&self, workspace: Option<Uuid>) -> Result<Vec<Integration>>;
    /// By id, whatever its workspace (callers check it).
    async fn get_integration(&self, id: Uuid) -> Result<Option<Integration>>;
    /// Saves every field but the id, workspace and kind; `NotFound` when it is gone.
    async fn update_integration(&self, changed: Integration) -> Result<()>;
    /// Refused while a deployment of its workspace deploys from it.
    async fn delete_integration(&self, id: Uuid) -> Result<IntegrationDeleted>;
    /// The `github` deployments, oldest first (of one workspace, or of all).
    async fn github_deployments(&self, workspace: Option<Uuid>) -> Result<Vec<Deployment>>;
    /// Records a push delivery; false when it was recorded before.
    async fn record_delivery(&self, integration: Uuid, delivery: &str) -> Result<bool>;
    /// Forgets a recorded delivery that could not be acted on, so a redelivery can.
    async fn forget_delivery(&self, integration: Uuid, delivery: &str) -> Result<()>;
}

/// Agent Auth: OAuth providers, the tokens obtained from them, sign-ins under way and
/// agent connections; every read and write is of one workspace.
#[async_trait]
pub trait AgentAuthStore: Send + Sync {
    /// `Conflict` when the workspace has a provider of that `provider_id`.
    async fn create_provider(&self, new: OAuthProvider) -> Result<OAuthProvider>;
    /// Oldest first.
    async fn list_providers(&self, workspace: Uuid) -> Result<Vec<OAuthProvider>>;
    async fn get_provider(
        &self,
        workspace: Uuid,
        provider_id: &str,
    ) -> Result<Option<OAuthProvider>>;
    /// Saves the changeable fields; `NotFound` when it is gone.
    async fn update_provider(&self, changed: OAuthProvider) -> Result<OAuthProvider>;
    /// Deletes a provider with its tokens, sign-ins and connections; false when unknown.
    async fn delete_provider(&self, workspace: Uuid, provider_id: &str) -> Result<bool>;

    /// The workspace's tokens, oldest first, narrowed by `filter`.
    async fn list_tokens(&self, workspace: Uuid, filter: &TokenFilter) -> Result<Vec<OAuthToken>>;
    async fn get_token(&self, workspace: Uuid, id: Uuid) -> Result<Option<OAuthToken>>;
    /// Saves a token's secrets, expiry, label and default flag (a default token makes the
    /// owner's other tokens of that provider not default); `NotFound` when it is gone.
    async fn update_token(&self, changed: OAuthToken) -> Result<OAuthToken>;
    /// Deletes these tokens of the workspace; how many were deleted.
    async fn delete_tokens(&self, workspace: Uuid, ids: &[Uuid]) -> Result<u64>;

    async fn create_auth_request(&self, new: AuthRequest) -> Result<()>;
    /// How many of the workspace's sign-ins are pending and unexpired.
    async fn pending_auth_requests(&self, workspace: Uuid) -> Result<i64>;
    async fn get_auth_request(&self, workspace: Uuid, id: Uuid) -> Result<Option<AuthRequest>>;
    /// The pending, unexpired sign-in whose `state` hashes to `state_hash`, now
    /// `Exchanging` so that no other callback can use it; `None` when there is none (or
    /// it is not of `workspace`, when one is given).
    async fn take_auth_request(
        &self,
        state_hash: &str,
        workspace: Option<Uuid>,
    ) -> Result<Option<AuthRequest>>;
    /// Ends an `Exchanging` sign-in (saving the token when it completed) and wakes its
    /// waiters on every replica.
    async fn finish_auth_request(&self, id: Uuid, outcome: AuthOutcome) -> Result<()>;
    /// A receiver that changes when the sign-in finishes.
    fn watch_auth_request(&self, id: Uuid) -> tokio::sync::watch::Receiver<i64>;
    /// Forgets sign-ins that expired before `before`; how many.
    async fn sweep_auth_requests(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64>;

    /// An agent's connections, oldest first.
    async fn list_connections(
        &self,
        workspace: Uuid,
        agent_id: &str,
    ) -> Result<Vec<AgentConnection>>;
    /// `NotFound` when the token is not the workspace's; `Conflict` when the agent is
    /// connected to it already.
    async fn create_connection(&self, new: NewConnection) -> Result<AgentConnection>;
    /// False when the agent has no such connection.
    async fn delete_connection(&self, workspace: Uuid, agent_id: &str, id: Uuid) -> Result<bool>;
}

/// What listener agents read and report. Every write that changes what a listener should
/// run (deployment create, save, delete; revision claims, reports and expired leases)
/// moves the listener's generation in the same transaction and wakes its pollers.
#[async_trait]
pub trait DataPlaneStore: Send + Sync {
    /// Wakes when the listener's generation moves (see [`changes::Changes`]).
    fn subscribe(&self, listener: Uuid) -> tokio::sync::watch::Receiver<i64>;
    /// Wakes every poller (shutdown).
    fn wake_all(&self);
    /// Records the agent's facts and version, marks the listener seen and renews the
    /// leases the agent holds; the listener's generation, `None` when it does not exist.
    async fn heartbeat(&self, listener: Uuid, beat: AgentBeat) -> Result<Option<i64>>;
    /// The listener's whole desired state, read in one snapshot.
    async fn desired(&self, listener: Uuid) -> Result<Option<DesiredRows>>;
    /// One agent takes a waiting revision of a deployment placed on the listener.
    async fn claim(
        &self,
        listener: Uuid,
        revision: Uuid,
        agent_id: &str,
        lease_until: chrono::DateTime<chrono::Utc>,
    ) -> Result<ClaimOutcome>;
    /// Applies an agent's report, checked against the state machine.
    async fn report(&self, listener: Uuid, revision: Uuid, report: Report)
        -> Result<ReportOutcome>;
    /// A revision of a deployment placed on the listener, as far as serving its build's
    /// source needs it.
    async fn build_source(&self, listener: Uuid, revision: Uuid) -> Result<Option<BuildSource>>;
    /// Removes a deployment of the listener that is awaiting deletion.
    async fn confirm_deleted(&self, listener: Uuid, deployment: Uuid) -> Result<DeletedOutcome>;
    /// Stores log lines of deployments placed on the listener, keeping at most `keep`
    /// lines per deployment and kind (oldest dropped first); `NotFound` (and nothing
    /// stored) when a line names a deployment or revision the listener does not have.
    async fn append_logs(&self, listener: Uuid, lines: Vec<NewLogLine>, keep: i64) -> Result<()>;
    /// Log lines of a deployment of the workspace; `None` when it does not exist there.
    async fn read_logs(&self, workspace: Uuid, query: &LogQuery) -> Result<Option<Vec<LogEntry>>>;
    /// Puts revisions whose lease expired back where they were (`BUILDING` →
    /// `AWAITING_BUILD`, `DEPLOYING` → `AWAITING_DEPLOY`); how many.
    async fn release_expired_leases(&self) -> Result<u64>;
}

/// The web console: sign-in sessions and what agents report of their listeners.
#[async_trait]
pub trait ConsoleStore: Send + Sync {
    /// Keeps a session until `expires_at` (and drops sessions that have expired).
    async fn create_session(
        &self,
        token_hash: &str,
        key_hash: &str,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<()>;
    /// The hash of the key that signed the session in, while it has not expired.
    async fn session_key(&self, token_hash: &str) -> Result<Option<String>>;
    /// Ends a session; ending one that does not exist is fine.
    async fn delete_session(&self, token_hash: &str) -> Result<()>;
    /// The last heartbeat of each listener of the workspace that has had one.
    async fn agent_states(&self, workspace: Uuid) -> Result<Vec<AgentState>>;
}

/// The resources [`DeploymentStore::version`] reads.
#[derive(Debug, Clone, Copy)]
pub enum Versioned {
    Listener,
    Deployment,
}

impl Versioned {
    /// The table it lives in.
    pub(crate) fn table(self) -> &'static str {
        match self {
            Versioned::Listener => "listeners",
            Versioned::Deployment => "deployments",
        }
    }
}

/// Options for opening a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// PostgreSQL pool size (SQLite uses a fixed small pool).
    pub max_connections: u32,
    /// How long a request waits for a connection before the database counts as unavailable.
    pub acquire_timeout: std::time::Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 16,
            acquire_timeout: std::time::Duration::from_secs(5),
        }
    }
}

/// Opens the database named by `url` (`sqlite://...` or `postgres://...`) and brings its
/// schema up to date.
pub async fn open(url: &str, opts: &StoreOptions) -> Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::open(url, opts).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url, opts).await?))
    } else {
        Err(StoreError::Other(format!(
            "unsupported database URL {url:?}: use sqlite://PATH or postgres://..."
        )))
    }
}

/// Runs a write on a task of its own, so it reaches its commit or its rollback even when
/// the caller stops waiting (a client that disconnects, a request that times out). A
/// dropped request can lose its answer, never leave a transaction open on a pooled
/// connection or half a write behind; an answer is only ever given after the commit.
pub(crate) async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(work)
        .await
        .map_err(|e| StoreError::Other(format!("write task failed: {e}")))?
}

/// Current time in whole microseconds, the resolution every timestamp is stored in.
pub(crate) fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        map_sqlx(e)
    }
}

fn map_sqlx(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
        // SQLite reports a RESTRICT violation with the trigger code (1811), not 787.
        sqlx::Error::Database(db)
            if db.is_foreign_key_violation()
                || db.message().contains("FOREIGN KEY constraint failed") =>
        {
            StoreError::NotFound
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::Io(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => StoreError::Unavailable(e.to_string()),
        // 22021: a byte sequence invalid in the encoding (NUL, for PostgreSQL text).
        sqlx::Error::Database(db) if db.code().as_deref() == Some("22021") => {
            StoreError::Unrepresentable(db.message().to_owned())
        }
        sqlx::Error::Database(db) if is_unavailable_code(db.code().as_deref()) => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::Database(db) => {
            StoreError::Other(format!("{} (code {:?})", db.message(), db.code()))
        }
        _ => StoreError::Other(e.to_string()),
    }
}

/// PostgreSQL states meaning the server is going away or not accepting work; SQLite's
/// BUSY/LOCKED after the busy timeout.
fn is_unavailable_code(code: Option<&str>) -> bool {
    matches!(code, Some(c) if c.starts_with("08") || c.starts_with("57P")
        || c == "53300" || c == "5" || c == "6")
}

/// One query for every resource count (the same SQL on both backends).
pub(crate) const COUNTS_SQL: &str = "SELECT \
    (SELECT COUNT(*) FROM organizations) AS organizations, \
    (SELECT COUNT(*) FROM workspaces) AS workspaces, \
    (SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL) AS api_keys, \
    (SELECT COUNT(*) FROM listeners) AS listeners, \
    (SELECT COUNT(*) FROM deployments) AS deployments, \
    (SELECT COUNT(*) FROM revisions) AS revisions";
