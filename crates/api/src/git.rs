//! Reaching the git hosts of integrations: a credential for each (a token as given, or a
//! GitHub App installation token minted from the app's key and cached), the refs of a
//! repository (`git ls-remote`), one commit as a source tarball (a shallow `git fetch`
//! and `git archive`), and repository lists from a GitHub-compatible REST API.
//!
//! Git runs as the installed `git` binary with no user or system configuration, no
//! prompts, only the `http` and `https` protocols, and the credential in an HTTP header
//! (never in a URL or an argument), under a timeout and a size limit.

use base64::Engine;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};
use store::{Integration, IntegrationKind};
use tokio::process::Command;

/// Limits of the control plane's git work.
#[derive(Debug, Clone)]
pub struct GitConfig {
    /// Each git command and each REST request ends after this long.
    pub timeout: Duration,
    /// Largest fetched repository data, and largest source tarball, in bytes.
    pub max_bytes: u64,
    /// How often followed branches are polled for new commits (none: only push events).
    pub poll_interval: Option<Duration>,
}

impl Default for GitConfig {
    fn default() -> Self {
        GitConfig {
            timeout: Duration::from_secs(120),
            max_bytes: 200 * 1024 * 1024,
            poll_interval: None,
        }
    }
}

/// Why git work failed, in words fit for a 400 or a `BUILD_FAILED` reason.
#[derive(Debug, Clone, PartialEq)]
pub struct GitError(pub String);

impl std::fmt::Display for GitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type GitResult<T> = Result<T, GitError>;

/// One repository of a host's list.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Repository {
    pub id: i64,
    pub name: String,
    pub owner: String,
    pub url: String,
    pub default_branch: String,
}

/// Git and REST access for every integration, with minted tokens cached.
pub struct Forge {
    config: GitConfig,
    http: reqwest::Client,
    /// GitHub App installation tokens by integration, with when they stop being used.
    minted: Mutex<HashMap<uuid::Uuid, (String, SystemTime)>>,
}

impl std::fmt::Debug for Forge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forge")
            .field("config", &self.config)
            .finish()
    }
}

/// What the REST API says of one repository (GitHub's shape, also Gitea's).
#[derive(serde::Deserialize)]
struct RestRepository {
    id: i64,
    name: String,
    owner: RestOwner,
    html_url: String,
    #[serde(default)]
    default_branch: Option<String>,
}

#[derive(serde::Deserialize)]
struct RestOwner {
    login: String,
}

#[derive(serde::Deserialize)]
struct InstallationRepositories {
    repositories: Vec<RestRepository>,
}

#[derive(serde::Deserialize)]
struct InstallationToken {
    token: String,
}

/// Repositories read from a host's list, at most this many pages of 100.
const MAX_PAGES: usize = 20;

/// `https://host/path` without a trailing `/` or `.git`, lower-case scheme and host: two
/// spellings of one repository compare equal.
pub fn normalize_url(url: &str) -> String {
    let trimmed = url.trim().trim_end_matches('/');
    let trimmed = trimmed.strip_suffix(".git").unwrap_or(trimmed);
    match trimmed.split_once("://") {
        Some((scheme, rest)) => {
            let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
            let path = if path.is_empty() {
                String::new()
            } else {
                format!("/{path}")
            };
            format!(
                "{}://{}{path}",
                scheme.to_ascii_lowercase(),
                host.to_ascii_lowercase()
            )
        }
        None => trimmed.to_owned(),
    }
}

/// Whether `repo_url` is an `http(s)` URL of a repository on the integration's host, so
/// that its credential is only ever sent there.
pub fn on_host(integration: &Integration, repo_url: &str) -> bool {
    let base = normalize_url(&integration.base_url);
    let repo = normalize_url(repo_url);
    (repo.starts_with("https://") || repo.starts_with("http://"))
        && repo
            .strip_prefix(&base)
            .is_some_and(|rest| rest.len() > 1 && rest.starts_with('/'))
        && !repo.contains("/../")
        && !repo.contains('?')
        && !repo.contains('#')
        && !repo.contains('@')
}

/// A full commit id.
pub fn is_commit(r: &str) -> bool {
    r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Forge {
    pub fn new(config: GitConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hostplane/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Forge {
            config,
            http,
            minted: Mutex::default(),
        }
    }

    pub fn config(&self) -> &GitConfig {
        &self.config
    }

    /// The token to reach the integration's host with: the stored one, or (a GitHub
    /// App) an installation token minted with the app's private key `secret`.
    pub async fn token(&self, integration: &Integration, secret: &str) -> GitResult<String> {
        match integration.kind {
            IntegrationKind::Token => Ok(secret.to_owned()),
            IntegrationKind::GithubApp => self.installation_token(integration, secret).await,
        }
    }

    /// Drops the cached installation token of an integration (its installation changed).
    pub fn forget(&self, integration: uuid::Uuid) {
        if let Ok(mut m) = self.minted.lock() {
            m.remove(&integration);
        }
    }

    async fn installation_token(&self, integration: &Integration, key: &str) -> GitResult<String> {
        let now = SystemTime::now();
        if let Some((token, until)) = self
            .minted
            .lock()
            .ok()
            .and_then(|m| m.get(&integration.id).cloned())
        {
            if until > now {
                return Ok(token);
            }
        }
        let (Some(app_id), Some(installation)) = (integration.app_id, integration.installation_id)
        else {
            return Err(GitError(
                "the GitHub App integration has no app id or installation id".into(),
            ));
        };
        let api = integration
            .api_url
            .as_deref()
            .ok_or_else(|| GitError("the GitHub App integration has no REST API URL".into()))?;
        let iat = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .saturating_sub(60);
        // GitHub takes app tokens of at most ten minutes.
        let claims = serde_json::json!({ "iat": iat, "exp": iat + 540, "iss": app_id.to_string() });
        let signing = jsonwebtoken::EncodingKey::from_rsa_pem(key.as_bytes())
            .map_err(|e| GitError(format!("the GitHub App's private key is not usable: {e}")))?;
        let jwt = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &signing,
        )
        .map_err(|e| GitError(format!("cannot sign the GitHub App token: {e}")))?;
        let url = format!(
            "{}/app/installations/{installation}/access_tokens",
            api.trim_end_matches('/')
        );
        let answer = self
            .rest(
                self.http.post(&url).bearer_auth(jwt),
                &url,
                &format!("the host refused an installation token for installation {installation}"),
            )
            .await?;
        let minted: InstallationToken = answer
            .json()
            .await
            .map_err(|e| GitError(format!("unreadable installation token answer: {e}")))?;
        // Installation tokens last an hour; use one for 50 minutes.
        if let Ok(mut m) = self.minted.lock() {
            m.insert(
                integration.id,
                (minted.token.clone(), now + Duration::from_secs(50 * 60)),
            );
        }
        Ok(minted.token)
    }

    /// The repositories the credential can read, from the host's REST API.
    pub async fn repositories(
        &self,
        integration: &Integration,
        token: &str,
    ) -> GitResult<Vec<Repository>> {
        let api = integration.api_url.as_deref().ok_or_else(|| {
            GitError(format!(
                "integration '{}' has no repository API (its api_url is not set); name the \
                 repository's URL in source_config.repo_url instead",
                integration.name
            ))
        })?;
        let api = api.trim_end_matches('/');
        let mut all = Vec::new();
        for page in 1..=MAX_PAGES {
            let url = match integration.kind {
                IntegrationKind::GithubApp => {
                    format!("{api}/installation/repositories?per_page=100&page={page}")
                }
                IntegrationKind::Token => format!("{api}/user/repos?per_page=100&page={page}"),
            };
            let answer = self
                .rest(
                    self.http.get(&url).bearer_auth(token),
                    &url,
                    "the host's API refused to list repositories",
                )
                .await?;
            let repos: Vec<RestRepository> = match integration.kind {
                IntegrationKind::GithubApp => answer
                    .json::<InstallationRepositories>()
                    .await
                    .map(|r| r.repositories),
                IntegrationKind::Token => answer.json().await,
            }
            .map_err(|e| GitError(format!("unreadable repository list: {e}")))?;
            let full = repos.len() == 100;
            all.extend(repos.into_iter().map(|r| Repository {
                id: r.id,
                name: r.name,
                owner: r.owner.login,
                url: r.html_url,
                default_branch: r.default_branch.unwrap_or_else(|| "main".into()),
            }));
            if !full {
                break;
            }
        }
        Ok(all)
    }

    /// Sends a request to the host's REST API: its answer when it succeeded, else
    /// `refused` with the status.
    async fn rest(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
        refused: &str,
    ) -> GitResult<reqwest::Response> {
        let answer = request
            .header("Accept", "application/vnd.github+json")
            .send()
            .await
            .map_err(|e| GitError(format!("cannot reach {url}: {}", plain(&e))))?;
        let status = answer.status();
        if status.is_success() {
            Ok(answer)
        } else {
            Err(GitError(format!("{refused} (HTTP {})", status.as_u16())))
        }
    }

    /// `git` with no configuration but ours: the credential as an HTTP header, no
    /// prompts, only http(s).
    fn git(&self, token: &str) -> Command {
        let mut cmd = Command::new("git");
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", "/nonexistent")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_ALLOW_PROTOCOL", "http:https")
            .env("GIT_CONFIG_COUNT", "2")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env(
                "GIT_CONFIG_VALUE_0",
                format!("Authorization: Basic {basic}"),
            )
            .env("GIT_CONFIG_KEY_1", "http.followRedirects")
            .env("GIT_CONFIG_VALUE_1", "false")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `cmd` to its end within the timeout: its standard output, or the reason.
    async fn run(&self, mut cmd: Command, what: &str) -> GitResult<Vec<u8>> {
        let child = cmd
            .spawn()
            .map_err(|e| GitError(format!("cannot run git: {e}")))?;
        let out = tokio::time::timeout(self.config.timeout, child.wait_with_output())
            .await
            .map_err(|_| {
                GitError(format!(
                    "{what} did not finish within {} s",
                    self.config.timeout.as_secs()
                ))
            })?
            .map_err(|e| GitError(format!("cannot run git: {e}")))?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(GitError(format!(
                "{what} failed: {}",
                git_message(&out.stderr)
            )))
        }
    }

    /// The refs of a repository: (commit, ref name) pairs, tags peeled.
    pub async fn refs(&self, repo_url: &str, token: &str) -> GitResult<Vec<(String, String)>> {
        let mut cmd = self.git(token);
        cmd.args(["ls-remote", "--", repo_url]);
        let out = self.run(cmd, "reading the repository's refs").await?;
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(sha, name)| (sha.to_owned(), name.to_owned()))
            .collect())
    }

    /// The commit `repo_ref` names: a branch (`main`), a full ref (`refs/tags/v1`), or a
    /// commit id; `None` when the repository has no such ref.
    pub async fn resolve(
        &self,
        repo_url: &str,
        token: &str,
        repo_ref: &str,
    ) -> GitResult<Option<String>> {
        let refs = self.refs(repo_url, token).await?;
        Ok(resolve_in(&refs, repo_ref))
    }

    /// Fetches `commit` of the repository (shallow) and writes its files as a gzipped
    /// tarball to `dest`; `branch` is fetched instead when the host will not serve a
    /// commit by id. Work happens in `scratch`, removed after.
    pub async fn archive(
        &self,
        repo_url: &str,
        token: &str,
        commit: &str,
        branch: Option<&str>,
        scratch: &Path,
        dest: &Path,
    ) -> GitResult<u64> {
        let result = async {
            let io = |e: std::io::Error| GitError(format!("cannot prepare the fetch: {e}"));
            tokio::fs::create_dir_all(scratch).await.map_err(io)?;
            let mut init = self.git(token);
            init.args(["init", "-q", "--bare"]).arg(scratch);
            self.run(init, "git init").await?;
            let fetched = self.fetch(repo_url, token, scratch, commit, 1).await;
            if let Err(by_id) = fetched {
                let Some(branch) = branch else {
                    return Err(by_id);
                };
                self.fetch(
                    repo_url,
                    token,
                    scratch,
                    &format!("refs/heads/{branch}"),
                    50,
                )
                .await?;
                let mut has = self.git(token);
                has.arg("-C").arg(scratch).args([
                    "cat-file",
                    "-e",
                    &format!("{commit}^{{commit}}"),
                ]);
                self.run(has, "finding the commit").await.map_err(|_| {
                    GitError(format!(
                        "commit {commit} is not among the last 50 of branch '{branch}'"
                    ))
                })?;
            }
            let partial = dest.with_extension("partial");
            let mut archive = self.git(token);
            archive
                .arg("-C")
                .arg(scratch)
                .args(["archive", "--format=tar.gz", "-o"])
                .arg(&partial)
                .arg(commit);
            self.run(archive, "writing the source tarball").await?;
            let size = tokio::fs::metadata(&partial).await.map_err(io)?.len();
            if size > self.config.max_bytes {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(too_large(self.config.max_bytes));
            }
            tokio::fs::rename(&partial, dest).await.map_err(io)?;
            Ok(size)
        }
        .await;
        let _ = tokio::fs::remove_dir_all(scratch).await;
        result
    }

    /// `git fetch` of one ref or commit into `repo`, killed when the repository grows
    /// past the size limit.
    async fn fetch(
        &self,
        repo_url: &str,
        token: &str,
        repo: &Path,
        what: &str,
        depth: u32,
    ) -> GitResult<()> {
        let mut cmd = self.git(token);
        cmd.arg("-C")
            .arg(repo)
            .args([
                "fetch",
                "-q",
                "--no-tags",
                &format!("--depth={depth}"),
                "--",
            ])
            .args([repo_url, what]);
        let mut child = cmd
            .spawn()
            .map_err(|e| GitError(format!("cannot run git: {e}")))?;
        let mut stderr = child.stderr.take();
        let read_err = async move {
            let mut buf = Vec::new();
            if let Some(s) = stderr.as_mut() {
                let _ = tokio::io::AsyncReadExt::read_to_end(s, &mut buf).await;
            }
            buf
        };
        let err_task = tokio::spawn(read_err);
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let status = loop {
            tokio::select! {
                status = child.wait() => break status.map_err(|e| GitError(format!("cannot run git: {e}")))?,
                _ = tick.tick() => {
                    if dir_size(repo.to_path_buf()).await > self.config.max_bytes {
                        let _ = child.kill().await;
                        return Err(too_large(self.config.max_bytes));
                    }
                    if tokio::time::Instant::now() >= deadline {
                        let _ = child.kill().await;
                        return Err(GitError(format!(
                            "fetching the source did not finish within {} s",
                            self.config.timeout.as_secs()
                        )));
                    }
                }
            }
        };
        let err = err_task.await.unwrap_or_default();
        if status.success() {
            Ok(())
        } else {
            Err(GitError(format!(
                "fetching {what} failed: {}",
                git_message(&err)
            )))
        }
    }
}

fn too_large(max: u64) -> GitError {
    GitError(format!(
        "the repository's source is larger than the limit of {max} bytes"
    ))
}

/// The commit `repo_ref` names among `refs` (see [`Forge::resolve`]).
pub fn resolve_in(refs: &[(String, String)], repo_ref: &str) -> Option<String> {
    if is_commit(repo_ref) {
        return Some(repo_ref.to_ascii_lowercase());
    }
    let wanted: Vec<String> = if repo_ref.starts_with("refs/") {
        vec![repo_ref.to_owned()]
    } else {
        vec![
            format!("refs/heads/{repo_ref}"),
            format!("refs/tags/{repo_ref}"),
        ]
    };
    wanted.iter().find_map(|name| {
        // An annotated tag: the commit is the peeled entry.
        let peeled = format!("{name}^{{}}");
        refs.iter()
            .find(|(_, n)| *n == peeled)
            .or_else(|| refs.iter().find(|(_, n)| n == name))
            .map(|(sha, _)| sha.clone())
    })
}

/// The last meaningful line git wrote, without any credential it might echo.
fn git_message(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .rfind(|l| !l.to_ascii_lowercase().contains("authorization"))
        .unwrap_or("git gave no reason");
    line.strip_prefix("fatal: ").unwrap_or(line).to_owned()
}

/// An HTTP client error without the URL's query (which could carry a token).
fn plain(e: &reqwest::Error) -> String {
    let mut e = e.to_string();
    if let Some(i) = e.find('?') {
        e.truncate(i);
    }
    e
}

/// Bytes under `dir`.
async fn dir_size(dir: PathBuf) -> u64 {
    tokio::task::spawn_blocking(move || {
        let mut total = 0;
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for entry in entries.flatten() {
                match entry.metadata() {
                    Ok(m) if m.is_dir() => stack.push(entry.path()),
                    Ok(m) => total += m.len(),
                    Err(_) => {}
                }
            }
        }
        total
    })
    .await
    .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn integration(base: &str) -> Integration {
        Integration {
            id: uuid::Uuid::nil(),
            workspace_id: uuid::Uuid::nil(),
            name: "git".into(),
            kind: IntegrationKind::Token,
            base_url: base.into(),
            api_url: None,
            app_id: None,
            installation_id: None,
            credential: String::new(),
            webhook_secret: None,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn credentials_go_only_to_their_host() {
        let i = integration("https://git.example.com/");
        for ok in [
            "https://git.example.com/acme/agent",
            "https://GIT.example.com/acme/agent.git",
            "https://git.example.com/acme/agent/",
        ] {
            assert!(on_host(&i, ok), "{ok}");
        }
        for bad in [
            "https://git.example.com",
            "https://git.example.com.evil.net/acme/agent",
            "https://git.example.comx/acme/agent",
            "http://other.example.com/acme/agent",
            "file:///etc/passwd",
            "ext::sh -c id",
            "https://git.example.com/acme/../../x",
            "https://git.example.com/a?b",
            "https://user@git.example.com/a",
        ] {
            assert!(!on_host(&i, bad), "{bad}");
        }
    }

    #[test]
    fn refs_resolve_branches_tags_and_commits() {
        let sha = |c: char| c.to_string().repeat(40);
        let refs = vec![
            (sha('a'), "HEAD".to_owned()),
            (sha('a'), "refs/heads/main".to_owned()),
            (sha('b'), "refs/heads/dev".to_owned()),
            (sha('c'), "refs/tags/v1".to_owned()),
            (sha('d'), "refs/tags/v1^{}".to_owned()),
        ];
        assert_eq!(resolve_in(&refs, "main"), Some(sha('a')));
        assert_eq!(resolve_in(&refs, "dev"), Some(sha('b')));
        assert_eq!(resolve_in(&refs, "refs/tags/v1"), Some(sha('d')));
        assert_eq!(resolve_in(&refs, "v1"), Some(sha('d')));
        assert_eq!(resolve_in(&refs, "nope"), None);
        assert_eq!(resolve_in(&refs, &"E".repeat(40)), Some(sha('e')));
    }
}
