//! Deploying from git: an integration made with `hostplane admin`, its repositories
//! through the v1 routes, `github` deployments that the control plane fetches from a
//! real git server (git's own `git http-backend` behind token authentication, on
//! 127.0.0.1; a stand-in plays only the forge's REST API), signed push events, and the
//! tenancy of it all. With a container-mode agent on Docker, the deployment builds and
//! rolls out each pushed commit; on PostgreSQL the same control-plane flow runs
//! without an agent.

#![allow(clippy::unwrap_used)]

mod support;

use hmac::Mac;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use support::agent::listener_with_key;
use support::engine::{skipped, Cleanup, Engine, ListenerAgent, BASE_IMAGE};
use support::{
    admin, http, other_workspace, postgres_db, sqlite_db, try_http, wait_until, Db, Server, TempDir,
};

const TOKEN: &str = "gh-test-token-0123456789";
const WEBHOOK_SECRET: &str = "push-secret-9876";

/// The git server and the repositories it serves.
struct GitHost {
    child: Child,
    port: u16,
    root: TempDir,
    work: TempDir,
}

impl Drop for GitHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.email=dev@example.com", "-c", "user.name=dev"])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl GitHost {
    /// Serves `acme/agent` with one commit on `main`.
    fn start(app_public_key: Option<&Path>) -> GitHost {
        let root = TempDir::new("githost");
        let work = TempDir::new("gitwork");
        std::fs::create_dir_all(root.0.join("acme")).unwrap();
        git(
            &root.0.join("acme"),
            &["init", "-q", "--bare", "-b", "main", "agent.git"],
        );
        git(&work.0, &["init", "-q", "-b", "main"]);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/githost.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(&root.0).arg(TOKEN);
        if let Some(key) = app_public_key {
            cmd.arg(key);
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let mut out = support::reader(child.stdout.take().unwrap());
        let line = support::read_until(&mut out, "githost listening on ");
        let port = line
            .trim()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<u16>()
            .unwrap();
        let host = GitHost {
            child,
            port,
            root,
            work,
        };
        host.commit("main", "v1");
        host
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/git", self.port)
    }

    fn repo_url(&self) -> String {
        format!("{}/acme/agent", self.base_url())
    }

    /// Commits a project whose image says `GREETING=<greeting>` to `branch` and pushes
    /// it: the commit.
    fn commit(&self, branch: &str, greeting: &str) -> String {
        let w = &self.work.0;
        if git(w, &["branch", "--list", branch]).is_empty() && !git(w, &["branch"]).is_empty() {
            git(w, &["checkout", "-q", "-b", branch]);
        } else if !git(w, &["branch"]).is_empty() {
            git(w, &["checkout", "-q", branch]);
        }
        let config = json!({
            "dependencies": ["."],
            "graphs": {"agent": "./agent.py:graph"},
            "base_image": BASE_IMAGE,
            "dockerfile_lines": [format!("ENV GREETING={greeting}")],
        });
        std::fs::write(w.join("langgraph.json"), config.to_string()).unwrap();
        std::fs::write(w.join("agent.py"), "graph = None\n").unwrap();
        git(w, &["add", "."]);
        git(w, &["commit", "-q", "-m", greeting]);
        let bare = self.root.0.join("acme/agent.git");
        git(w, &["push", "-q", bare.to_str().unwrap(), branch]);
        git(w, &["rev-parse", "HEAD"])
    }

    fn refused(&self) -> u64 {
        let (_, body) = http(self.port, "GET", "/stats", &[], "");
        serde_json::from_str::<Value>(&body).unwrap()["refused"]
            .as_u64()
            .unwrap()
    }
}

/// `hostplane admin integration ...` with the server's secret key.
fn integration_admin(db: &Db, args: &[&str]) -> std::process::Output {
    support::admin_command(db)
        .arg("integration")
        .args(args)
        .output()
        .unwrap()
}

fn create_integration(db: &Db, host: &GitHost, workspace: &str) -> String {
    let token = db.dir.0.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let secret = db.dir.0.join("webhook-secret");
    std::fs::write(&secret, WEBHOOK_SECRET).unwrap();
    let api = format!("http://127.0.0.1:{}/api", host.port);
    let out = integration_admin(
        db,
        &[
            "create",
            "--workspace",
            workspace,
            "--name",
            "acme-git",
            "--base-url",
            &host.base_url(),
            "--api-url",
            &api,
            "--token-file",
            token.to_str().unwrap(),
            "--webhook-secret-file",
            secret.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Neither the token nor the webhook secret is ever printed.
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains(TOKEN) && !text.contains(WEBHOOK_SECRET),
        "{text}"
    );
    created["id"].as_str().unwrap().to_owned()
}

fn sign(body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn push_event(host: &GitHost, branch: &str, commit: &str) -> String {
    json!({
        "ref": format!("refs/heads/{branch}"),
        "before": "0".repeat(40),
        "after": commit,
        "deleted": false,
        "repository": {
            "html_url": host.repo_url(),
            "clone_url": format!("{}.git", host.repo_url()),
        },
    })
    .to_string()
}

/// Delivers a push event: status and body.
fn deliver(
    server: &Server,
    integration: &str,
    delivery: &str,
    body: &str,
    signature: Option<&str>,
) -> (u16, Value) {
    let mut headers = vec![
        ("X-GitHub-Event", "push"),
        ("X-GitHub-Delivery", delivery),
        ("Content-Type", "application/json"),
    ];
    if let Some(s) = signature {
        headers.push(("X-Hub-Signature-256", s));
    }
    let (status, text) = http(
        server.port,
        "POST",
        &format!("/webhooks/v1/integrations/{integration}/push"),
        &headers,
        body,
    );
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn revisions(server: &Server, dep: &str) -> Vec<Value> {
    let (status, list) = server.call(
        "GET",
        &format!("/v2/deployments/{dep}/revisions?limit=100"),
        None,
    );
    assert_eq!(status, 200);
    list["resources"].as_array().unwrap().clone()
}

fn github_deployment(integration: &str, repo_url: &str, repo_ref: &str, name: &str) -> Value {
    json!({
        "name": name,
        "source": "github",
        "source_config": {
            "integration_id": integration,
            "repo_url": repo_url,
            "build_on_push": true,
            "deployment_type": "dev",
        },
        "source_revision_config": {"repo_ref": repo_ref, "langgraph_config_path": "langgraph.json"},
        "secrets": [],
    })
}

/// The control plane's side on one backend: integrations, repositories, the source
/// rules, revisions at the resolved commit, push events and tenancy. Returns the
/// integration and the deployment, for the build part.
fn control_plane(db: &Db, server: &Server, host: &GitHost) -> (String, String) {
    let workspaces = admin(db, &["workspace", "list"]);
    let ws = workspaces[0]["id"].as_str().unwrap().to_owned();

    println!("no integration yet: [] and github deployments refused");
    let (status, list) = server.call("GET", "/v1/integrations/github/install", None);
    assert_eq!((status, list), (200, json!([])));
    let mut none = github_deployment("", &host.repo_url(), "main", "early");
    none["source_config"]["integration_id"] = Value::Null;
    let (status, body) = server.call("POST", "/v2/deployments", Some(none));
    assert_eq!(
        (status, body),
        (
            400,
            json!({"detail": "Source configuration error: 'github' source requires a GitHub integration, which this control plane does not provide."})
        )
    );
    let unknown = uuid::Uuid::new_v4().to_string();
    let (status, body) = server.call(
        "POST",
        "/v2/deployments",
        Some(github_deployment(
            &unknown,
            &host.repo_url(),
            "main",
            "early",
        )),
    );
    assert_eq!(
        (status, body),
        (
            400,
            json!({"detail": format!("Source configuration error: integration ID '{unknown}' not found in LangSmith workspace ID '{ws}'.")})
        )
    );

    let integration = create_integration(db, host, &ws);
    println!("the integration and its repositories, through both v1 pairs");
    for prefix in ["/v1/integrations/github", "/v1/integrations/forge/github"] {
        let (status, list) = server.call("GET", &format!("{prefix}/install"), None);
        assert_eq!(
            (status, list),
            (
                200,
                json!([{"id": integration, "installation_id": 0, "name": "acme-git"}])
            )
        );
        let (status, repos) = server.call("GET", &format!("{prefix}/{integration}/repos"), None);
        assert_eq!(
            (status, repos),
            (
                200,
                json!([{
                    "host_integration_id": integration,
                    "id": 1000,
                    "name": "agent",
                    "owner": "acme",
                    "url": host.repo_url(),
                    "default_branch": "main",
                }])
            )
        );
    }
    let unknown = uuid::Uuid::new_v4();
    let (status, body) = server.call(
        "GET",
        &format!("/v1/integrations/github/{unknown}/repos"),
        None,
    );
    assert_eq!(
        (status, body),
        (
            404,
            json!({"detail": format!("Integration ID {unknown} not found.")})
        )
    );

    println!("source rules: each mistake a 400 that says which, nothing created");
    let err = |body: Value| {
        let (status, answer) = server.call("POST", "/v2/deployments", Some(body));
        assert_eq!(status, 400, "{answer}");
        answer["detail"].as_str().unwrap().to_owned()
    };
    let mut missing_ref = github_deployment(&integration, &host.repo_url(), "main", "a");
    missing_ref["source_revision_config"]["repo_ref"] = Value::Null;
    assert_eq!(
        err(missing_ref),
        "Source configuration error: 'source_revision_config.repo_ref' is required for 'github' source."
    );
    let mut no_id = github_deployment(&integration, &host.repo_url(), "main", "a");
    no_id["source_config"]["integration_id"] = Value::Null;
    assert_eq!(
        err(no_id),
        "Source configuration error: 'source_config.integration_id' is required for 'github' source."
    );
    assert_eq!(
        err(github_deployment(&integration, &host.repo_url(), "refs/tags/v1", "a")),
        "Source configuration error: 'source_config.build_on_push' cannot be enabled when 'source_revision_config.repo_ref' is a tag."
    );
    let elsewhere = "https://elsewhere.example.com/acme/agent";
    assert_eq!(
        err(github_deployment(&integration, elsewhere, "main", "a")),
        format!(
            "Source configuration error: repository '{elsewhere}' is not on the host of integration ID '{integration}' ({}).",
            host.base_url()
        )
    );
    let missing_repo = format!("{}/acme/missing", host.base_url());
    let unreadable = err(github_deployment(&integration, &missing_repo, "main", "a"));
    assert!(
        unreadable.starts_with(&format!(
            "Source configuration error: repository '{missing_repo}' cannot be read with integration ID '{integration}': reading the repository's refs failed: "
        )),
        "{unreadable}"
    );
    assert!(!unreadable.contains(TOKEN), "{unreadable}");
    let (_, list) = server.call("GET", "/v2/deployments", None);
    assert_eq!(list["resources"], json!([]));

    println!("a github deployment: its first revision records the commit main names");
    let first = git(&host.work.0, &["rev-parse", "HEAD"]);
    let (status, d) = server.call(
        "POST",
        "/v2/deployments",
        Some(github_deployment(
            &integration,
            &host.repo_url(),
            "main",
            "from-git",
        )),
    );
    assert_eq!(status, 201, "{d}");
    let dep = d["id"].as_str().unwrap().to_owned();
    assert_eq!(d["source_revision_config"]["repo_commit_sha"], first);
    let revs = revisions(server, &dep);
    assert_eq!(revs.len(), 1);
    assert_eq!(revs[0]["source"], "github");
    assert_eq!(revs[0]["source_revision_config"]["repo_commit_sha"], first);

    println!("tenancy: another workspace sees nothing and cannot use the integration");
    let (_, other_key) = other_workspace(db);
    let other = |method: &str, path: &str, body: &str| {
        let (status, text) = http(
            server.port,
            method,
            path,
            &[
                ("X-Api-Key", &other_key),
                ("Content-Type", "application/json"),
            ],
            body,
        );
        (status, serde_json::from_str::<Value>(&text).unwrap())
    };
    assert_eq!(
        other("GET", "/v1/integrations/github/install", ""),
        (200, json!([]))
    );
    assert_eq!(
        other(
            "GET",
            &format!("/v1/integrations/github/{integration}/repos"),
            ""
        ),
        (
            404,
            json!({"detail": format!("Integration ID {integration} not found.")})
        )
    );
    assert_eq!(other("GET", &format!("/v2/deployments/{dep}"), "").0, 404);
    let (status, body) = other(
        "POST",
        "/v2/deployments",
        &github_deployment(&integration, &host.repo_url(), "main", "stolen").to_string(),
    );
    assert_eq!(status, 400);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with(&format!("Source configuration error: integration ID '{integration}' not found in LangSmith workspace ID '")),
        "{body}"
    );

    println!("deleting an integration in use is refused");
    let out = integration_admin(db, &["delete", &integration]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "hostplane: integration {integration} is used by deployments {dep}; delete them first"
        )
    );
    (integration, dep)
}

/// Push events: an unsigned, a tampered and a wrongly signed one change nothing; a push
/// to another branch changes nothing; a signed push to `main` makes one revision at the
/// pushed commit, once however often it is delivered. Returns that commit.
fn pushes(server: &Server, host: &GitHost, integration: &str, dep: &str, greeting: &str) -> String {
    let before = revisions(server, dep).len();
    let commit = host.commit("main", greeting);
    let body = push_event(host, "main", &commit);
    let refused = json!({"detail": "The webhook signature is missing or invalid."});
    let delivery = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        deliver(server, integration, &delivery, &body, None),
        (401, refused.clone())
    );
    let tampered = body.replace(&commit, &"f".repeat(40));
    assert_eq!(
        deliver(
            server,
            integration,
            &delivery,
            &tampered,
            Some(&sign(&body))
        ),
        (401, refused.clone())
    );
    assert_eq!(
        deliver(
            server,
            &uuid::Uuid::new_v4().to_string(),
            &delivery,
            &body,
            Some(&sign(&body))
        ),
        (401, refused)
    );
    assert_eq!(revisions(server, dep).len(), before);
    let dev = push_event(host, "dev", &commit);
    assert_eq!(
        deliver(
            server,
            integration,
            &uuid::Uuid::new_v4().to_string(),
            &dev,
            Some(&sign(&dev))
        ),
        (200, json!({"duplicate": false, "deployments": []}))
    );
    assert_eq!(revisions(server, dep).len(), before);

    assert_eq!(
        deliver(server, integration, &delivery, &body, Some(&sign(&body))),
        (200, json!({"duplicate": false, "deployments": [dep]}))
    );
    assert_eq!(
        deliver(server, integration, &delivery, &body, Some(&sign(&body))),
        (200, json!({"duplicate": true, "deployments": []}))
    );
    let revs = revisions(server, dep);
    assert_eq!(revs.len(), before + 1);
    assert_eq!(revs[0]["source_revision_config"]["repo_commit_sha"], commit);
    commit
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn git_sources_on_postgres() {
    let db = postgres_db();
    let keys = TempDir::new("app-keys");
    let (app_key, app_public, other_key) = (
        keys.0.join("app.pem"),
        keys.0.join("app.pub.pem"),
        keys.0.join("other.pem"),
    );
    for key in [&app_key, &other_key] {
        openssl(&["genrsa", "-out", key.to_str().unwrap(), "2048"]);
    }
    openssl(&[
        "rsa",
        "-in",
        app_key.to_str().unwrap(),
        "-pubout",
        "-out",
        app_public.to_str().unwrap(),
    ]);
    let host = GitHost::start(Some(&app_public));
    let server = Server::start(&db);
    let (integration, dep) = control_plane(&db, &server, &host);
    pushes(&server, &host, &integration, &dep, "v2");
    assert_eq!(
        host.refused(),
        0,
        "hostplane sent a request without the token"
    );

    println!("a GitHub App integration: installation tokens minted with the app's key");
    let ws = admin(&db, &["workspace", "list"])[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let api = format!("http://127.0.0.1:{}/api", host.port);
    let out = integration_admin(
        &db,
        &[
            "create",
            "--workspace",
            &ws,
            "--name",
            "acme-app",
            "--base-url",
            &host.base_url(),
            "--api-url",
            &api,
            "--private-key-file",
            app_key.to_str().unwrap(),
            "--app-id",
            "4242",
            "--installation-id",
            "77",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app: Value = serde_json::from_slice(&out.stdout).unwrap();
    let app_id = app["id"].as_str().unwrap().to_owned();
    let (_, list) = server.call("GET", "/v1/integrations/github/install", None);
    assert_eq!(
        list,
        json!([
            {"id": integration, "installation_id": 0, "name": "acme-git"},
            {"id": app_id, "installation_id": 77, "name": "acme-app"},
        ])
    );
    let repos = format!("/v1/integrations/github/{app_id}/repos");
    let (status, body) = server.call("GET", &repos, None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["host_integration_id"], app_id.as_str());
    assert_eq!(body[0]["url"], host.repo_url());
    // A key the host does not know for the app: no token, a 400 that says so.
    let out = integration_admin(
        &db,
        &[
            "rotate",
            &app_id,
            "--credential-file",
            other_key.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A fresh server: the first one keeps the token it minted for 50 minutes.
    let fresh = Server::start_with(&db, &[], &server.key);
    let (status, body) = fresh.call("GET", &repos, None);
    assert_eq!(
        (status, body),
        (
            400,
            json!({"detail": format!("Cannot list the repositories of integration ID {app_id}: the host refused an installation token for installation 77 (HTTP 401)")})
        )
    );
    drop(fresh);

    println!("branch polling: a replica started with --git-poll-secs follows main");
    let poller = Server::start_with(&db, &["--git-poll-secs", "1"], &server.key);
    let third = host.commit("main", "v3");
    wait_until("the poll to build the new commit", 30, || {
        revisions(&poller, &dep)[0]["source_revision_config"]["repo_commit_sha"] == third.as_str()
    });
    // One revision per commit, however many polls see it.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let at_third = revisions(&poller, &dep)
        .iter()
        .filter(|r| r["source_revision_config"]["repo_commit_sha"] == third.as_str())
        .count();
    assert_eq!(at_third, 1);
    drop(poller);

    println!("once its deployment is gone, the integration can be deleted");
    assert_eq!(
        server
            .call("DELETE", &format!("/v2/deployments/{dep}"), None)
            .0,
        204
    );
    let out = integration_admin(&db, &["delete", &integration]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, list) = server.call("GET", "/v1/integrations/github/install", None);
    assert_eq!(
        (status, list),
        (
            200,
            json!([{"id": app_id, "installation_id": 77, "name": "acme-app"}])
        )
    );
}

fn env_of(port: u16) -> String {
    match try_http(port, "GET", "/env", &[], "") {
        Ok((200, body)) => body,
        other => panic!("{other:?}"),
    }
}

#[test]
fn git_sources_build_on_docker() {
    if skipped("git_sources_build_on_docker") {
        return;
    }
    let engine = Engine::docker();
    engine.images();
    let db = sqlite_db();
    let host = GitHost::start(None);
    let server = Server::start(&db);
    // The listener comes first: deployments go to the workspace's oldest listener.
    let (listener, key) = listener_with_key(&server, &db, "git-builder");
    let _cleanup = Cleanup(&engine, listener.clone());
    let base = 31000 + (std::process::id() % 500) as u16 * 4;
    let agent = ListenerAgent::start(
        &server,
        &db,
        &engine,
        &listener,
        &key,
        &format!("{base}-{}", base + 3),
        &[],
    );
    let (integration, dep) = control_plane(&db, &server, &host);

    println!("the first commit builds and answers");
    let latest = |server: &Server| revisions(server, &dep)[0].clone();
    let first = latest(&server)["id"].as_str().unwrap().to_owned();
    support::wait_until_or(
        "the git revision to be DEPLOYED",
        240,
        || server.revision_status(&dep, &first) == "DEPLOYED",
        || format!("{:?}", server.revision_logs(&dep, &first, "build_logs")),
    );
    let port = agent.address(&dep);
    assert!(env_of(port).lines().any(|l| l == "GREETING=v1"));

    println!("a signed push builds the pushed commit and rolls it out");
    pushes(&server, &host, &integration, &dep, "v2");
    let second = latest(&server)["id"].as_str().unwrap().to_owned();
    wait_until("the pushed revision to be DEPLOYED", 240, || {
        server.revision_status(&dep, &second) == "DEPLOYED"
    });
    wait_until("the new image to answer", 30, || {
        env_of(agent.address(&dep))
            .lines()
            .any(|l| l == "GREETING=v2")
    });

    println!("a ref the repository does not have: BUILD_FAILED saying so");
    let (status, d) = server.call(
        "POST",
        "/v2/deployments",
        Some(github_deployment(
            &integration,
            &host.repo_url(),
            "no-such-branch",
            "bad-ref",
        )),
    );
    assert_eq!(status, 201, "{d}");
    let bad = d["id"].as_str().unwrap().to_owned();
    let rev = d["latest_revision_id"].as_str().unwrap().to_owned();
    assert_eq!(d["source_revision_config"]["repo_commit_sha"], Value::Null);
    wait_until("the unknown ref to fail", 60, || {
        server.revision_status(&bad, &rev) == "BUILD_FAILED"
    });
    let last = server
        .revision_logs(&bad, &rev, "build_logs")
        .pop()
        .unwrap();
    assert!(
        last.ends_with(&format!(
            "Cannot fetch the source of revision {rev}: the repository has no branch, tag or commit 'no-such-branch'"
        )),
        "{last}"
    );
    assert_eq!(
        host.refused(),
        0,
        "hostplane sent a request without the token"
    );
    drop(agent);
}
