//! Agent Auth end to end, on both backends: the official `langchain-auth` 0.3.0 SDK,
//! unchanged, against the real binary, with users signing in at real OAuth 2.0 servers
//! (Authlib's, and the MCP Python SDK's for discovery) on 127.0.0.1; then every route
//! with another workspace's ids, where tokens may not appear, the address policy, and
//! the GitHub App setup callback.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use support::{Db, Server};

const PACKAGES: &[&str] = &[
    "langchain-auth==0.3.0",
    "Authlib==1.9.10",
    "Flask==3.1.3",
    "mcp==2.3.0",
];

fn python() -> std::path::PathBuf {
    support::python::venv("agent-auth", PACKAGES).join("bin/python")
}

fn script(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(name)
}

/// One of `oauth_servers.py`'s servers, stopped on drop.
struct OAuthServer {
    child: Child,
    url: String,
}

impl OAuthServer {
    fn start(mode: &str, args: &[&str]) -> OAuthServer {
        let mut child = Command::new(python())
            .arg(script("oauth_servers.py"))
            .arg(mode)
            .args(args)
            // Plain HTTP on loopback, whatever Host a client sends.
            .env("AUTHLIB_INSECURE_TRANSPORT", "1")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = support::reader(child.stdout.take().unwrap());
        let line = support::read_until(&mut out, "listening on ");
        let port: u16 = line.trim().rsplit(' ').next().unwrap().parse().unwrap();
        // Keep reading so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in out.lines() {});
        OAuthServer {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for OAuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request with another key than the server's own.
fn call_as(
    server: &Server,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let (status, text) = support::http(
        server.port,
        method,
        path,
        &[("X-Api-Key", key), ("Content-Type", "application/json")],
        &body,
    );
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn agent_auth_with_the_official_sdk(db: Db) {
    let key = format!("hp_test_{}", uuid::Uuid::new_v4().simple());
    let server = Server::start_with(
        &db,
        &["--auth-allow-private-networks", "--auth-timeout-secs", "1"],
        &key,
    );
    let callbacks = format!("{}/auth/callback/", server.url());
    let authlib = OAuthServer::start("authlib", &[&callbacks]);
    let mcp = OAuthServer::start("mcp", &[]);

    let out = Command::new("timeout")
        .arg("180")
        .arg(python())
        .arg(script("agent_auth_sdk.py"))
        .env("LANGSMITH_API_URL", server.url())
        .env("LANGSMITH_API_KEY", &key)
        .env("OAUTH_URL", &authlib.url)
        .env("MCP_URL", &mcp.url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the SDK run failed:\n{stdout}\n{}\n--- server log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    eprintln!("wait woke {} ms after the callback", summary["wake_ms"]);

    tenancy(&db, &server, &summary);
    secrets_stay_secret(&db, &server, &authlib);
}

/// Another workspace, route by route, with the first one's ids: 404s and empty lists,
/// and nothing of the first workspace changes.
fn tenancy(db: &Db, server: &Server, summary: &Value) {
    let (_, other) = support::other_workspace(db);
    let as_other =
        |method: &str, path: &str, body: Option<Value>| call_as(server, &other, method, path, body);
    let tokens = summary["tokens"].as_array().unwrap();
    let token = tokens[0]["id"].as_str().unwrap();
    let (status, conn) = server.call(
        "POST",
        "/v2/auth/agents/agent-1/connections",
        Some(json!({ "oauth_token_id": token })),
    );
    assert_eq!(status, 201, "{conn}");
    assert_eq!(conn["agent_id"], "agent-1");
    assert_eq!(conn["oauth_token_id"], token);
    let conn_id = conn["id"].as_str().unwrap();
    let pending_state = summary["pending_url"]
        .as_str()
        .unwrap()
        .split("state=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    let auth_id = summary["pending_auth_id"].as_str().unwrap();
    let not_found = |what: &str| json!({ "detail": what });

    // Providers: the other workspace sees none and reaches none.
    assert_eq!(
        as_other("GET", "/v2/auth/providers", None),
        (200, json!([]))
    );
    for method in ["GET", "DELETE"] {
        assert_eq!(
            as_other(method, "/v2/auth/providers/acme", None),
            (404, not_found("OAuth provider 'acme' not found"))
        );
    }
    assert_eq!(
        as_other(
            "PATCH",
            "/v2/auth/providers/acme",
            Some(json!({"name": "x"}))
        ),
        (404, not_found("OAuth provider 'acme' not found"))
    );
    assert_eq!(
        as_other(
            "POST",
            "/v2/auth/authenticate",
            Some(json!({"provider": "acme", "scopes": [], "user_id": "alice"}))
        ),
        (404, not_found("OAuth provider 'acme' not found"))
    );
    // The first workspace's sign-in: not found, and its state is not usable here.
    assert_eq!(
        as_other("GET", &format!("/v2/auth/wait/{auth_id}?timeout=0"), None),
        (200, json!({"status": "not_found", "token": null}))
    );
    let invalid =
        not_found("This sign-in link is not valid: it is unknown, expired or already used.");
    assert_eq!(
        as_other(
            "POST",
            "/v2/auth/callback/acme",
            Some(json!({"code": "c", "state": pending_state}))
        ),
        (400, invalid.clone())
    );
    assert_eq!(
        as_other(
            "GET",
            &format!("/v2/auth/callback/acme?code=c&state={pending_state}"),
            None
        ),
        (400, invalid)
    );
    assert_eq!(
        server.call("GET", &format!("/v2/auth/wait/{auth_id}?timeout=0"), None),
        (200, json!({"status": "timeout", "token": null})),
        "the first workspace's sign-in is still pending"
    );
    // Tokens.
    assert_eq!(as_other("GET", "/v2/auth/tokens", None), (200, json!([])));
    assert_eq!(
        as_other("GET", "/v2/auth/tokens/exists?provider_id=acme", None),
        (200, json!({"has_token": false}))
    );
    assert_eq!(
        as_other("DELETE", "/v2/auth/tokens?provider_id=acme", None),
        (
            200,
            json!({"message": "Revoked 0 token(s)", "provider_id": "acme"})
        )
    );
    let token_404 = not_found(&format!("OAuth token '{token}' not found"));
    assert_eq!(
        as_other(
            "PATCH",
            &format!("/v2/auth/tokens/{token}/metadata"),
            Some(json!({"provider_account_label": "stolen"}))
        ),
        (404, token_404.clone())
    );
    assert_eq!(
        as_other("DELETE", &format!("/v2/auth/tokens/{token}"), None),
        (404, token_404.clone())
    );
    assert_eq!(
        as_other("GET", "/v2/auth/tokens/workspace/slack/exists", None),
        (200, json!({"has_token": false}))
    );
    assert_eq!(
        as_other("DELETE", "/v2/auth/tokens/workspace/slack", None),
        (200, json!({"message": "Revoked 0 Slack token(s)"}))
    );
    // Connections.
    assert_eq!(
        as_other("GET", "/v2/auth/agents/agent-1/connections", None),
        (200, json!({"data": []}))
    );
    assert_eq!(
        as_other(
            "POST",
            "/v2/auth/agents/agent-1/connections",
            Some(json!({"oauth_token_id": token}))
        ),
        (404, token_404)
    );
    assert_eq!(
        as_other(
            "DELETE",
            &format!("/v2/auth/agents/agent-1/connections/{conn_id}"),
            None
        ),
        (404, not_found(&format!("Connection '{conn_id}' not found")))
    );

    // Provider ids are the workspace's own: the other one may use "acme" too.
    let (status, theirs) = as_other(
        "POST",
        "/v2/auth/providers",
        Some(
            json!({"provider_id": "acme", "name": "Theirs", "client_id": "c",
                    "auth_url": "https://a.example/auth", "token_url": "https://a.example/token"}),
        ),
    );
    assert_eq!(status, 200, "{theirs}");
    assert_eq!(
        as_other("GET", "/v2/auth/providers/acme", None).1["name"],
        "Theirs"
    );
    // ... and "docs": discovery runs (and fails here) instead of a conflict.
    let (status, body) = as_other(
        "POST",
        "/v2/auth/providers/mcp-discover",
        Some(
            json!({"provider_id": "docs", "name": "D", "mcp_server_url": "http://127.0.0.1:9/mcp"}),
        ),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("MCP discovery failed: protected-resource metadata (RFC 9728): "),
        "{body}"
    );

    // The first workspace still has all of it.
    let (_, providers) = server.call("GET", "/v2/auth/providers", None);
    let names: Vec<_> = providers
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["provider_id"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme", "public", "slack", "docs"]);
    assert_eq!(server.call("GET", "/v2/auth/tokens", None).1, json!(tokens));
    let (_, conns) = server.call("GET", "/v2/auth/agents/agent-1/connections", None);
    assert_eq!(conns["data"][0]["id"], conn_id);
    // Its own deletes work.
    let (status, _) = server.call(
        "DELETE",
        &format!("/v2/auth/agents/agent-1/connections/{conn_id}"),
        None,
    );
    assert_eq!(status, 204);
    let (status, label) = server.call(
        "PATCH",
        &format!("/v2/auth/tokens/{token}/metadata"),
        Some(json!({"provider_account_label": "work", "is_default": true})),
    );
    assert_eq!(status, 200, "{label}");
    assert_eq!(label["provider_account_label"], "work");
    assert_eq!(
        server
            .call("DELETE", &format!("/v2/auth/tokens/{token}"), None)
            .0,
        204
    );
}

/// Token values never reach the log or the database in the clear, and the server never
/// sent a token request the test did not cause.
fn secrets_stay_secret(db: &Db, server: &Server, authlib: &OAuthServer) {
    let stats: Value = serde_json::from_str(&get_text(&format!("{}/stats", authlib.url))).unwrap();
    // alice's, bob's, hank's, gina's and the Slack codes, erin's code (which the server
    // gave up on after 1 s), and two refreshes: bob's, and one for hank's four
    // concurrent requests; a replayed or forged callback never reached it.
    assert_eq!(stats["token_requests"], 8, "{stats}");
    assert_eq!(stats["refreshes"], 2, "{stats}");
    let log = server.log_text();
    for secret in ["at-", "rt-", "mcp-at-", "hp-secret"] {
        assert!(
            !log.contains(secret),
            "{secret} appears in the server log:\n{log}"
        );
    }
    if db.url.starts_with("sqlite://") {
        let path = db.url.trim_start_matches("sqlite://");
        let mut bytes = std::fs::read(path).unwrap();
        bytes.extend(std::fs::read(format!("{path}-wal")).unwrap_or_default());
        let text = String::from_utf8_lossy(&bytes);
        for secret in ["at-", "rt-", "hp-secret"] {
            assert!(!text.contains(secret), "{secret} is stored in the clear");
        }
    }
}

/// The body of a GET of `url` (a server on 127.0.0.1).
fn get_text(url: &str) -> String {
    let url = url.trim_start_matches("http://127.0.0.1:");
    let (port, path) = url.split_once('/').unwrap();
    support::http(port.parse().unwrap(), "GET", &format!("/{path}"), &[], "").1
}

#[tokio::test]
async fn agent_auth_on_sqlite() {
    agent_auth_with_the_official_sdk(support::sqlite_db()).await;
}

#[tokio::test]
async fn agent_auth_on_postgres() {
    agent_auth_with_the_official_sdk(support::postgres_db()).await;
}

/// Without `--auth-allow-private-networks`, provider URLs on loopback are refused
/// before any connection; link-local ones always are.
#[test]
fn private_addresses_are_refused_by_default() {
    let db = support::sqlite_db();
    let server = Server::start(&db);
    let discover = |url: &str| {
        server.call(
            "POST",
            "/v2/auth/providers/mcp-discover",
            Some(json!({"provider_id": "p", "name": "P", "mcp_server_url": url})),
        )
    };
    let (status, body) = discover("http://127.0.0.1:9/mcp");
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["detail"],
        "MCP discovery failed: http://127.0.0.1:9/mcp may not be reached: a loopback address"
    );
    let (status, body) = discover("http://localhost:9/mcp");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .ends_with("localhost may not be reached: a loopback address"),
        "{body}"
    );
    let (status, body) = discover("http://[fe80::1]/mcp");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("link-local"),
        "{body}"
    );
    // Nothing was created.
    assert_eq!(
        server.call("GET", "/v2/auth/providers", None),
        (200, json!([]))
    );
}

/// A GitHub App integration made without an installation gets it from the App's setup
/// callback, but only with the integration's install state.
#[test]
fn github_app_setup_records_the_installation() {
    let db = support::sqlite_db();
    let server = Server::start(&db);
    let dir = support::TempDir::new("app-key");
    let pem = dir.0.join("app.pem");
    let ok = Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&pem)
        .arg("2048")
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl genrsa failed");
    let ws = support::admin(&db, &["workspace", "list"])[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let storage = db.dir.0.join("storage");
    let created = support::admin(
        &db,
        &[
            "integration",
            "create",
            "--workspace",
            &ws,
            "--name",
            "app",
            "--base-url",
            "https://github.example",
            "--api-url",
            "https://api.github.example",
            "--app-id",
            "42",
            "--private-key-file",
            pem.to_str().unwrap(),
            "--storage-dir",
            storage.to_str().unwrap(),
        ],
    );
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["installation_id"], Value::Null);
    let link = support::admin(
        &db,
        &[
            "integration",
            "install-link",
            id,
            "--storage-dir",
            storage.to_str().unwrap(),
        ],
    );
    assert_eq!(link["setup_path"], format!("/v2/auth/setup/{id}"));
    let state = link["state"].as_str().unwrap();

    let setup = |query: &str| {
        support::http(
            server.port,
            "GET",
            &format!("/v2/auth/setup/{id}?{query}"),
            &[],
            "",
        )
    };
    let (status, page) = setup("installation_id=77&setup_action=install&state=forged");
    assert_eq!(status, 400, "{page}");
    assert!(
        page.contains("This installation link is not valid"),
        "{page}"
    );
    let (status, page) = setup(&format!(
        "installation_id=77&setup_action=install&state={state}"
    ));
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("recorded on integration app"), "{page}");
    let listed = support::admin(&db, &["integration", "list"]);
    assert_eq!(listed[0]["installation_id"], 77);
    let (_, apps) = server.call("GET", "/v1/integrations/github/install", None);
    assert_eq!(
        apps,
        json!([{"id": id, "installation_id": 77, "name": "app"}])
    );
}

/// The location a GET of `path` on `port` redirects to.
fn redirect_of(port: u16, path: &str) -> String {
    let (status, headers, body) =
        support::exchange_with_headers(port, "GET", path, &[], b"").unwrap();
    assert_eq!(status, 302, "{path}: {}", String::from_utf8_lossy(&body));
    headers
        .into_iter()
        .find(|(k, _)| k == "location")
        .map(|(_, v)| v)
        .unwrap()
}

/// Two replicas on one PostgreSQL: a `wait` on one is woken by the callback the other
/// received (PostgreSQL `NOTIFY`), long before its periodic re-check.
#[test]
fn wait_wakes_across_replicas() {
    let db = support::postgres_db();
    let key = format!("hp_test_{}", uuid::Uuid::new_v4().simple());
    // Replicas behind one address share their public URL; the browser comes back to b.
    let public = "http://hostplane.example";
    let flags = ["--auth-allow-private-networks", "--public-url", public];
    let a = Server::start_with(&db, &flags, &key);
    let b = Server::start_with(&db, &flags, &key);
    let authlib = OAuthServer::start("authlib", &[public]);
    let (status, body) = a.call(
        "POST",
        "/v2/auth/providers",
        Some(json!({
            "provider_id": "acme", "name": "Acme", "client_id": "hp-basic",
            "client_secret": "hp-secret", "uses_pkce": true,
            "token_endpoint_auth_method": "client_secret_basic",
            "auth_url": format!("{}/authorize", authlib.url),
            "token_url": format!("{}/token", authlib.url),
        })),
    );
    assert_eq!(status, 200, "{body}");
    let (_, started) = a.call(
        "POST",
        "/v2/auth/authenticate",
        Some(json!({"provider": "acme", "scopes": ["read"], "user_id": "alice"})),
    );
    let auth_id = started["auth_id"].as_str().unwrap().to_owned();
    let url = started["url"].as_str().unwrap();
    let authorize = url.split_once("127.0.0.1:").unwrap().1;
    let (oauth_port, authorize) = authorize.split_once('/').unwrap();
    let port = a.port;
    let key2 = key.clone();
    let waiter = std::thread::spawn(move || {
        let (status, body) = support::http(
            port,
            "GET",
            &format!("/v2/auth/wait/{auth_id}?timeout=30"),
            &[("X-Api-Key", &key2)],
            "",
        );
        (status, body, std::time::Instant::now())
    });
    // The waiter is waiting (its request is in) before the user comes back.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let back = redirect_of(
        oauth_port.parse().unwrap(),
        &format!("/{authorize}&user=alice"),
    );
    let path = back.strip_prefix(public).unwrap();
    let (status, page) = support::http(b.port, "GET", path, &[], "");
    let called_back = std::time::Instant::now();
    assert_eq!(status, 200, "{page}");
    let (status, body, woke) = waiter.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "completed", "{body}");
    assert!(body["token"].as_str().unwrap().starts_with("at-"));
    let after = woke.saturating_duration_since(called_back);
    eprintln!("the other replica's wait woke {after:?} after the callback");
    assert!(after < std::time::Duration::from_millis(2500), "{after:?}");
}
