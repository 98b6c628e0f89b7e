//! Integrations (the git hosts `github` deployments build from) and what is done with
//! them: the operator's create, rotate and delete (the admin CLI), the workspace's lists
//! of integrations and repositories, the source rules of a `github` deployment, the
//! commit a revision builds, its source tarball for the agent, and push events.

use crate::auth::Tenant;
use crate::error::{ApiError, ApiResult};
use crate::git::{self, GitError, Repository};
use crate::operations::deployments::rules::source_error;
use crate::secrets::SecretBox;
use crate::AppState;
use serde_json::{Map, Value};
use store::{Integration, IntegrationDeleted, IntegrationKind, SourceConfig, Store, StoreError};
use uuid::Uuid;

/// Where fetched git sources are kept: `<storage>/hostplane-git/<deployment>/<revision>.tar.gz`.
pub const GIT_PREFIX: &str = "hostplane-git";

pub fn not_found(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("Integration ID {id} not found."))
}

/// What an operator gives to create an integration (credentials in the clear; they are
/// sealed here).
#[derive(Debug, Clone)]
pub struct NewIntegration {
    pub workspace_id: Uuid,
    pub name: String,
    pub kind: IntegrationKind,
    pub base_url: String,
    pub api_url: Option<String>,
    pub app_id: Option<i64>,
    pub installation_id: Option<i64>,
    pub credential: String,
    pub webhook_secret: Option<String>,
}

/// Why an operator's call did nothing.
#[derive(Debug)]
pub enum AdminError {
    /// A mistake, in words for the CLI.
    Refused(String),
    Store(StoreError),
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError::Store(e)
    }
}

pub type AdminResult<T> = Result<T, AdminError>;

fn refused(msg: impl Into<String>) -> AdminError {
    AdminError::Refused(msg.into())
}

/// A GitHub App's private key must sign tokens: an RSA key in PEM.
fn check_app_key(pem: &str) -> AdminResult<()> {
    jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes())
        .map(|_| ())
        .map_err(|e| {
            refused(format!(
                "the GitHub App private key is not an RSA key in PEM: {e}"
            ))
        })
}

fn check_url(what: &str, url: &str) -> AdminResult<()> {
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && !url.contains('?')
        && !url.contains('#')
        && !url.contains('@')
        && url.split("://").nth(1).is_some_and(|rest| !rest.is_empty());
    if ok {
        Ok(())
    } else {
        Err(refused(format!(
            "{what} must be an http(s) URL without credentials, query or fragment: {url}"
        )))
    }
}

/// Creates an integration with its credential sealed.
pub async fn create(
    store: &dyn Store,
    secrets: &SecretBox,
    new: NewIntegration,
) -> AdminResult<Integration> {
    check_url("the base URL", &new.base_url)?;
    if let Some(api) = &new.api_url {
        check_url("the API URL", api)?;
    }
    if store.get_workspace(new.workspace_id).await?.is_none() {
        return Err(refused(format!(
            "no workspace with id {}",
            new.workspace_id
        )));
    }
    if new.name.trim().is_empty() {
        return Err(refused("the name must not be empty"));
    }
    if new.credential.trim().is_empty() {
        return Err(refused("the credential must not be empty"));
    }
    if new.kind == IntegrationKind::GithubApp {
        // The installation may come later, through the App's install link.
        if new.app_id.is_none() || new.api_url.is_none() {
            return Err(refused(
                "a GitHub App integration needs --app-id and --api-url",
            ));
        }
        check_app_key(&new.credential)?;
    }
    let id = Uuid::new_v4();
    let now = chrono::Utc::now();
    let integration = Integration {
        id,
        workspace_id: new.workspace_id,
        name: new.name.clone(),
        kind: new.kind,
        base_url: new.base_url.trim_end_matches('/').to_owned(),
        api_url: new.api_url.map(|u| u.trim_end_matches('/').to_owned()),
        app_id: new.app_id,
        installation_id: new.installation_id,
        credential: secrets.seal(new.credential.trim().as_bytes(), id),
        webhook_secret: new.webhook_secret.map(|s| secrets.seal(s.as_bytes(), id)),
        created_at: now,
        updated_at: now,
    };
    match store.create_integration(integration).await {
        Err(StoreError::Conflict) => Err(refused(format!(
            "the workspace already has an integration named '{}'",
            new.name
        ))),
        other => Ok(other?),
    }
}

/// Replaces an integration's credential and/or webhook secret (rotation).
pub async fn rotate(
    store: &dyn Store,
    secrets: &SecretBox,
    id: Uuid,
    credential: Option<String>,
    webhook_secret: Option<String>,
) -> AdminResult<Integration> {
    let mut found = store
        .get_integration(id)
        .await?
        .ok_or_else(|| refused(format!("no integration with id {id}")))?;
    if credential.is_none() && webhook_secret.is_none() {
        return Err(refused(
            "give --credential-file and/or --webhook-secret-file",
        ));
    }
    if let Some(c) = credential {
        if found.kind == IntegrationKind::GithubApp {
            check_app_key(&c)?;
        }
        found.credential = secrets.seal(c.trim().as_bytes(), id);
    }
    if let Some(w) = webhook_secret {
        found.webhook_secret = Some(secrets.seal(w.as_bytes(), id));
    }
    store.update_integration(found.clone()).await?;
    Ok(found)
}

/// Deletes an integration no deployment uses.
pub async fn delete(store: &dyn Store, id: Uuid) -> AdminResult<()> {
    match store.delete_integration(id).await? {
        IntegrationDeleted::Deleted => Ok(()),
        IntegrationDeleted::NotFound => Err(refused(format!("no integration with id {id}"))),
        IntegrationDeleted::InUse(ids) => Err(refused(format!(
            "integration {id} is used by deployments {}; delete them first",
            ids.iter()
                .map(Uuid::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The workspace's integrations, oldest first.
pub async fn list(app: &AppState, tenant: &Tenant) -> ApiResult<Vec<Integration>> {
    Ok(app
        .store
        .list_integrations(Some(tenant.workspace_id))
        .await?)
}

/// An integration of the workspace (else `None`).
async fn of_workspace(app: &AppState, workspace: Uuid, id: Uuid) -> ApiResult<Option<Integration>> {
    Ok(app
        .store
        .get_integration(id)
        .await?
        .filter(|i| i.workspace_id == workspace))
}

/// The integration of the workspace a `source_config.integration_id` names (`None`
/// when it names none, is not a UUID, or is not the workspace's).
async fn named(
    app: &AppState,
    workspace: Uuid,
    id: Option<&str>,
) -> ApiResult<Option<Integration>> {
    match id.map(Uuid::parse_str) {
        Some(Ok(id)) => of_workspace(app, workspace, id).await,
        _ => Ok(None),
    }
}

/// The token that reaches the integration's host now.
async fn token(app: &AppState, integration: &Integration) -> Result<String, GitError> {
    let secret = app
        .secrets
        .open(&integration.credential, integration.id)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            GitError(format!(
                "the credential of integration '{}' cannot be unsealed with this server's \
                 secret key",
                integration.name
            ))
        })?;
    app.forge.token(integration, &secret).await
}

/// The repositories an integration of the workspace can read.
pub async fn repositories(
    app: &AppState,
    tenant: &Tenant,
    id: Uuid,
) -> ApiResult<(Integration, Vec<Repository>)> {
    let integration = of_workspace(app, tenant.workspace_id, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let listed = match token(app, &integration).await {
        Ok(token) => app.forge.repositories(&integration, &token).await,
        Err(e) => Err(e),
    };
    let repos = listed.map_err(|e| {
        ApiError::BadRequest(format!(
            "Cannot list the repositories of integration ID {id}: {e}"
        ))
    })?;
    Ok((integration, repos))
}

fn text<'a>(obj: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    obj.get(field).and_then(Value::as_str)
}

/// The rules of a `github` deployment's create, after the common source rules: its
/// integration is the workspace's, its repository is on the integration's host and
/// readable with its credential, and it names a ref. Returns the commit the ref names
/// now (`None` when the repository has no such ref: the build then fails saying so).
pub async fn check_github(
    app: &AppState,
    workspace: Uuid,
    source_config: &Map<String, Value>,
    revision: &Map<String, Value>,
) -> ApiResult<Option<String>> {
    let Some(integration_id) = text(source_config, "integration_id") else {
        if app
            .store
            .list_integrations(Some(workspace))
            .await?
            .is_empty()
        {
            return Err(source_error(
                "'github' source requires a GitHub integration, which this control plane does \
                 not provide.",
            ));
        }
        return Err(source_error(
            "'source_config.integration_id' is required for 'github' source.",
        ));
    };
    let Some(integration) = named(app, workspace, Some(integration_id)).await? else {
        return Err(source_error(format!(
            "integration ID '{integration_id}' not found in LangSmith workspace ID '{workspace}'."
        )));
    };
    let Some(repo_url) = text(source_config, "repo_url") else {
        return Err(source_error(
            "'source_config.repo_url' is required for 'github' source.",
        ));
    };
    let Some(repo_ref) = text(revision, "repo_ref") else {
        return Err(source_error(
            "'source_revision_config.repo_ref' is required for 'github' source.",
        ));
    };
    if source_config.get("build_on_push") == Some(&Value::Bool(true))
        && repo_ref.starts_with("refs/tags/")
    {
        return Err(source_error(
            "'source_config.build_on_push' cannot be enabled when \
             'source_revision_config.repo_ref' is a tag.",
        ));
    }
    commit_of(app, &integration, repo_url, repo_ref).await
}

/// The commit `repo_ref` of `repo_url` names now; a 400 when the repository is not on
/// the integration's host or cannot be read.
async fn commit_of(
    app: &AppState,
    integration: &Integration,
    repo_url: &str,
    repo_ref: &str,
) -> ApiResult<Option<String>> {
    if !git::on_host(integration, repo_url) {
        return Err(source_error(format!(
            "repository '{repo_url}' is not on the host of integration ID '{}' ({}).",
            integration.id, integration.base_url
        )));
    }
    let resolved = match token(app, integration).await {
        Ok(token) => app.forge.resolve(repo_url, &token, repo_ref).await,
        Err(e) => Err(e),
    };
    resolved.map_err(|e| {
        source_error(format!(
            "repository '{repo_url}' cannot be read with integration ID '{}': {e}",
            integration.id
        ))
    })
}

/// The commit a new revision of a stored `github` deployment builds: what its
/// `repo_ref` names now.
pub async fn current_commit(
    app: &AppState,
    workspace: Uuid,
    source_config: &Value,
    revision_config: &Value,
) -> ApiResult<Option<String>> {
    let config = SourceConfig::of(source_config);
    let repo_ref = store::RevisionConfig::of(revision_config).repo_ref;
    let integration = named(app, workspace, config.integration_id.as_deref()).await?;
    match (integration, config.repo_url, repo_ref) {
        (Some(i), Some(url), Some(r)) => commit_of(app, &i, &url, &r).await,
        (None, _, _) => Err(source_error(format!(
            "the deployment's integration ID '{}' is gone from LangSmith workspace ID \
             '{workspace}'.",
            config.integration_id.unwrap_or_default()
        ))),
        _ => Err(source_error(
            "'source_revision_config.repo_ref' is required for 'github' source.",
        )),
    }
}

/// The source tarball of a `github` revision: fetched from its host the first time an
/// agent asks, then kept (only the newest revision's of each deployment) until the
/// deployment goes.
pub async fn git_source(
    app: &AppState,
    found: &store::BuildSource,
    revision: Uuid,
) -> ApiResult<tokio::fs::File> {
    let deployment = found.deployment_id;
    let dir = app
        .config
        .storage_dir
        .join(GIT_PREFIX)
        .join(deployment.to_string());
    let dest = dir.join(format!("{revision}.tar.gz"));
    if let Ok(file) = tokio::fs::File::open(&dest).await {
        return Ok(file);
    }
    let failed = |e: String| {
        ApiError::Unprocessable(format!(
            "Cannot fetch the source of revision {revision}: {e}"
        ))
    };
    let config = &found.source_config;
    let wanted = &found.revision_config;
    let repo_ref = wanted.repo_ref.clone().unwrap_or_default();
    let Some(commit) = wanted.repo_commit_sha.clone() else {
        return Err(failed(format!(
            "the repository has no branch, tag or commit '{repo_ref}'"
        )));
    };
    let integration = named(app, found.workspace_id, config.integration_id.as_deref())
        .await?
        .ok_or_else(|| failed("the deployment's integration is gone".into()))?;
    let repo_url = config.repo_url.clone().unwrap_or_default();
    if !git::on_host(&integration, &repo_url) {
        return Err(failed(format!(
            "repository '{repo_url}' is not on the integration's host"
        )));
    }
    let token = token(app, &integration).await.map_err(|e| failed(e.0))?;
    crate::operations::uploads::owner_only_dir(&dir)
        .await
        .map_err(|e| ApiError::Internal(format!("creating {}: {e}", dir.display())))?;
    let scratch = app
        .config
        .storage_dir
        .join(GIT_PREFIX)
        .join(format!(".fetch-{}", Uuid::new_v4()));
    let branch =
        (!repo_ref.starts_with("refs/") && !git::is_commit(&repo_ref)).then_some(repo_ref.as_str());
    let size = app
        .forge
        .archive(&repo_url, &token, &commit, branch, &scratch, &dest)
        .await
        .map_err(|e| failed(e.0))?;
    tracing::info!(%revision, %commit, size, "fetched a git source");
    // Only the newest source of a deployment is kept.
    if let Ok(mut entries) = tokio::fs::read_dir(&dir).await {
        while let Ok(Some(e)) = entries.next_entry().await {
            if e.path() != dest {
                let _ = tokio::fs::remove_file(e.path()).await;
            }
        }
    }
    tokio::fs::File::open(&dest)
        .await
        .map_err(|e| ApiError::Internal(format!("opening {}: {e}", dest.display())))
}

/// A push event as delivered to the webhook route.
#[derive(Debug)]
pub struct Push {
    pub integration: Uuid,
    /// `X-GitHub-Event`.
    pub event: Option<String>,
    /// `X-GitHub-Delivery`.
    pub delivery: Option<String>,
    /// `X-Hub-Signature-256`: `sha256=<hex>`.
    pub signature: Option<String>,
    pub body: Vec<u8>,
}

/// What a delivery did.
#[derive(Debug, PartialEq)]
pub enum PushOutcome {
    /// Not a push to a branch (a ping, another event, a deleted branch): nothing to do.
    Ignored(String),
    /// The delivery was acted on before.
    Duplicate,
    /// The deployments that got a revision building the pushed commit.
    Built(Vec<Uuid>),
}

#[derive(serde::Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    repository: PushRepository,
}

#[derive(serde::Deserialize)]
struct PushRepository {
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    clone_url: Option<String>,
}

fn bad_signature() -> ApiError {
    ApiError::Unauthorized("The webhook signature is missing or invalid.".into())
}

/// Whether `signature` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret`.
pub fn signed(secret: &[u8], body: &[u8], signature: &str) -> bool {
    use hmac::Mac;
    let Some(hex) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// Acts on a signed push event: every `build_on_push` deployment of the integration
/// that follows the pushed branch of that repository gets a revision building the
/// pushed commit, once per delivery.
pub async fn push(app: &AppState, push: Push) -> ApiResult<PushOutcome> {
    // An unknown integration and a bad signature look the same to the sender.
    let integration = app
        .store
        .get_integration(push.integration)
        .await?
        .ok_or_else(bad_signature)?;
    let secret = integration
        .webhook_secret
        .as_deref()
        .and_then(|s| app.secrets.open(s, integration.id))
        .ok_or_else(bad_signature)?;
    if !push
        .signature
        .as_deref()
        .is_some_and(|sig| signed(&secret, &push.body, sig))
    {
        return Err(bad_signature());
    }
    match push.event.as_deref() {
        Some("push") => {}
        other => {
            return Ok(PushOutcome::Ignored(format!(
                "event '{}' is not a push",
                other.unwrap_or_default()
            )))
        }
    }
    let payload: PushPayload = serde_json::from_slice(&push.body)
        .map_err(|e| ApiError::BadRequest(format!("The push event cannot be read: {e}")))?;
    let Some(branch) = payload.git_ref.strip_prefix("refs/heads/") else {
        return Ok(PushOutcome::Ignored(format!(
            "'{}' is not a branch",
            payload.git_ref
        )));
    };
    if payload.deleted
        || !git::is_commit(&payload.after)
        || payload.after.bytes().all(|b| b == b'0')
    {
        return Ok(PushOutcome::Ignored(format!(
            "branch '{branch}' was deleted"
        )));
    }
    if let Some(delivery) = &push.delivery {
        if !app.store.record_delivery(integration.id, delivery).await? {
            return Ok(PushOutcome::Duplicate);
        }
    }
    let repos: Vec<String> = [payload.repository.html_url, payload.repository.clone_url]
        .into_iter()
        .flatten()
        .map(|u| git::normalize_url(&u))
        .collect();
    let built = followers(app, &integration, branch, &repos).await?;
    let mut created = Vec::new();
    for (workspace, id) in built {
        match crate::operations::deployments::build_commit(app, workspace, id, &payload.after).await
        {
            Ok(true) => created.push(id),
            Ok(false) => {}
            Err(e) => {
                // Let a redelivery try again.
                if let Some(delivery) = &push.delivery {
                    let _ = app.store.forget_delivery(integration.id, delivery).await;
                }
                return Err(e);
            }
        }
    }
    Ok(PushOutcome::Built(created))
}

/// Whether a new commit on the deployment's branch should build: `build_on_push`, and
/// not being deleted.
fn builds_on_push(d: &store::Deployment) -> bool {
    SourceConfig::of(&d.source_config).build_on_push == Some(true)
        && d.status != store::lifecycle::DeploymentStatus::AwaitingDelete
}

/// The `build_on_push` deployments of `integration` that follow `branch` of one of
/// `repos` (normalized URLs): (workspace, id) pairs, oldest first.
async fn followers(
    app: &AppState,
    integration: &Integration,
    branch: &str,
    repos: &[String],
) -> ApiResult<Vec<(Uuid, Uuid)>> {
    let id = integration.id.to_string();
    Ok(app
        .store
        .github_deployments(Some(integration.workspace_id))
        .await?
        .into_iter()
        .filter(|d| {
            let c = SourceConfig::of(&d.source_config);
            let r = store::RevisionConfig::of(&d.source_revision_config);
            builds_on_push(d)
                && c.integration_id.as_deref() == Some(id.as_str())
                && c.repo_url
                    .is_some_and(|u| repos.contains(&git::normalize_url(&u)))
                && r.repo_ref
                    .is_some_and(|b| b == branch || b == format!("refs/heads/{branch}"))
        })
        .map(|d| (d.workspace_id, d.id))
        .collect())
}

/// One round of polling: every `build_on_push` deployment whose branch moved gets a
/// revision building the new commit. Returns how many did.
pub async fn poll(app: &AppState) -> ApiResult<usize> {
    let mut built = 0;
    for d in app.store.github_deployments(None).await? {
        if !builds_on_push(&d) {
            continue;
        }
        let now = store::RevisionConfig::of(&d.source_revision_config).repo_commit_sha;
        match current_commit(
            app,
            d.workspace_id,
            &d.source_config,
            &d.source_revision_config,
        )
        .await
        {
            Ok(Some(commit)) if now.as_deref() != Some(commit.as_str()) => {
                if crate::operations::deployments::build_commit(app, d.workspace_id, d.id, &commit)
                    .await?
                {
                    built += 1;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(deployment = %d.id, error = ?e, "cannot poll the deployment's branch")
            }
        }
    }
    Ok(built)
}

/// The `state` a GitHub App's install link carries so that its setup callback may record
/// the installation: an HMAC of the integration's id keyed with its (sealed) private key,
/// so only this server can make it and it changes when the key is rotated.
pub fn install_state(secrets: &SecretBox, integration: &Integration) -> Option<String> {
    use hmac::Mac;
    let key = secrets.open(&integration.credential, integration.id)?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("hostplane-install:{}", integration.id).as_bytes());
    Some(hex::encode(&mac.finalize().into_bytes()[..16]))
}

/// A GitHub App integration's [`install_state`] and the path of its setup callback.
pub async fn install_link(
    store: &dyn Store,
    secrets: &SecretBox,
    id: Uuid,
) -> AdminResult<(String, String)> {
    let found = store
        .get_integration(id)
        .await?
        .filter(|i| i.kind == IntegrationKind::GithubApp)
        .ok_or_else(|| refused(format!("no GitHub App integration with id {id}")))?;
    let state = install_state(secrets, &found)
        .ok_or_else(|| refused("the integration's key cannot be unsealed with this secret key"))?;
    Ok((state, format!("/v2/auth/setup/{id}")))
}

/// `GET /v2/auth/setup/{id}`: records the installation a GitHub App was just given on
/// the integration `id`, when `state` is its [`install_state`]. The answer is the
/// integration's name.
pub async fn record_installation(
    app: &AppState,
    id: &str,
    installation: Option<i128>,
    state: Option<&str>,
) -> ApiResult<String> {
    let invalid = || {
        ApiError::BadRequest(
            "This installation link is not valid: ask the operator for the integration's \
             install link (hostplane admin integration install-link)."
                .into(),
        )
    };
    let Ok(id) = Uuid::parse_str(id) else {
        return Err(invalid());
    };
    let found = app.store.get_integration(id).await?;
    let Some(mut found) = found.filter(|i| i.kind == IntegrationKind::GithubApp) else {
        return Err(invalid());
    };
    let expected = install_state(&app.secrets, &found).ok_or_else(invalid)?;
    let given = state.unwrap_or_default();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        given.as_bytes(),
        expected.as_bytes(),
    )) {
        return Err(invalid());
    }
    let installation = installation
        .and_then(|n| i64::try_from(n).ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::BadRequest("The answer has no valid installation_id.".into()))?;
    found.installation_id = Some(installation);
    app.store.update_integration(found.clone()).await?;
    app.forge.forget(found.id);
    Ok(found.name)
}
