//! The web console against the real binary: sessions, workspace isolation, CSRF and
//! origin checks, escaping, security headers and every action, over plain HTTP on both
//! backends; then a walk through it in headless Chromium (sign in from the CLI's link,
//! follow logs as an agent sends them, redeploy, delete, sign out), which also takes the
//! screenshots under `docs/console/`.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use support::agent::Agent;
use support::{admin, exchange_with_headers, other_workspace, postgres_db, sqlite_db, Db, Server};

const IMAGE: &str = "docker.io/acme/agent@sha256:\
    aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// The policy every console page carries.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                   base-uri 'none'";

/// A console answer: status, headers and body.
struct Page {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Page {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn location(&self) -> &str {
        self.header("location").unwrap_or_default()
    }

    /// The session token the answer sets.
    fn session(&self) -> String {
        let cookie = self.header("set-cookie").unwrap();
        let (pair, _) = cookie.split_once(';').unwrap();
        pair.strip_prefix("hostplane_session=").unwrap().to_owned()
    }

    /// The CSRF token of the page's forms.
    fn csrf(&self) -> String {
        let at = self.body.find("name=\"csrf\" value=\"").unwrap() + 19;
        self.body[at..at + 64].to_owned()
    }

    /// The text of the page's one alert (`role="alert"`), as the browser shows it; fails
    /// when there is none or more than one.
    fn alert(&self) -> String {
        let marker = "role=\"alert\">";
        assert_eq!(self.body.matches(marker).count(), 1, "{}", self.body);
        let at = self.body.find(marker).unwrap() + marker.len();
        let text = &self.body[at..at + self.body[at..].find('<').unwrap()];
        text.replace("&#39;", "'")
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    }
}

/// A browser without a browser: requests with a session cookie and form bodies.
struct Visitor<'a> {
    server: &'a Server,
    session: Option<String>,
}

impl Visitor<'_> {
    fn send(&self, method: &str, path: &str, form: &str, extra: &[(&str, &str)]) -> Page {
        let cookie = self
            .session
            .as_ref()
            .map(|s| format!("hostplane_session={s}"));
        let mut headers: Vec<(&str, &str)> =
            vec![("Content-Type", "application/x-www-form-urlencoded")];
        if let Some(c) = &cookie {
            headers.push(("Cookie", c));
        }
        headers.extend_from_slice(extra);
        let (status, headers, body) =
            exchange_with_headers(self.server.port, method, path, &headers, form.as_bytes())
                .unwrap();
        Page {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    fn get(&self, path: &str) -> Page {
        self.send("GET", path, "", &[])
    }

    fn post(&self, path: &str, form: &str) -> Page {
        self.send("POST", path, form, &[])
    }

    /// Signs in with `key`; the answer to the sign-in form.
    fn sign_in(&mut self, key: &str, next: &str) -> Page {
        let form = format!("api_key={}&next={}", enc(key), enc(next));
        let page = self.post("/console/sign-in", &form);
        if page.status == 303 {
            self.session = Some(page.session());
        }
        page
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An image deployment on `listener`: `(workspace id, deployment id, revision id)`.
fn deploy(server: &Server, name: &str, listener: &str) -> (String, String, String) {
    let (status, d) = server.call(
        "POST",
        "/v2/deployments",
        Some(json!({
            "name": name, "source": "external_docker",
            "source_config": {"listener_id": listener},
            "source_revision_config": {"image_uri": IMAGE}, "secrets": [],
        })),
    );
    assert_eq!(status, 201, "{d}");
    let text = |k: &str| d[k].as_str().unwrap().to_owned();
    (text("tenant_id"), text("id"), text("latest_revision_id"))
}

fn revisions(server: &Server, dep: &str) -> Vec<Value> {
    let (status, body) = server.call("GET", &format!("/v2/deployments/{dep}/revisions"), None);
    assert_eq!(status, 200, "{body}");
    body["resources"].as_array().unwrap().clone()
}

/// Sessions, isolation, CSRF, escaping and every action, through plain HTTP.
fn console_over_http(db: &Db) {
    let server = Server::start(db);
    let hostile = "<script>alert('cid')</script>";
    let (status, l) = server.call(
        "POST",
        "/v2/listeners",
        Some(json!({"compute_type": "k8s", "compute_id": hostile,
                    "compute_config": {"k8s_namespaces": ["ns"]}})),
    );
    assert_eq!(status, 201, "{l}");
    let listener = l["id"].as_str().unwrap();
    let key = admin(db, &["api-key", "create", "--listener", listener]);
    let agent = Agent::new(server.port, listener, key["key"].as_str().unwrap(), "a1");
    let (ws, dep, rev) = deploy(&server, "escaped", listener);
    let link = format!("/o/{ws}/host/deployments/{dep}");
    let mut visitor = Visitor {
        server: &server,
        session: None,
    };

    // The CLI's link asks for a sign-in first, and comes back after it.
    let page = visitor.get(&link);
    assert_eq!(page.status, 303);
    assert_eq!(
        page.location(),
        format!("/console/sign-in?next={}", enc(&link))
    );
    assert_eq!(page.header("content-security-policy"), Some(CSP));
    let refused = visitor.sign_in("hp_not_a_key", &link);
    assert_eq!(refused.status, 401);
    assert_eq!(refused.alert(), "That API key is not valid.");
    assert!(refused.header("set-cookie").is_none());
    let refused = visitor.sign_in(&agent.key, &link);
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.alert(),
        "A listener key cannot sign in: use a workspace or organization key."
    );
    // Another site's page cannot sign a visitor in.
    let form = format!("api_key={}", enc(&server.key));
    let page = visitor.send(
        "POST",
        "/console/sign-in",
        &form,
        &[("Origin", "http://evil.example")],
    );
    assert_eq!(page.status, 403);
    // Its own origin passes, also behind a proxy that forwards the host it was asked for.
    let page = visitor.send("POST", "/console/sign-in", &form, &[("Origin", "http://x")]);
    assert_eq!(page.status, 303);
    let proxied = [
        ("Origin", "https://hostplane.example"),
        ("X-Forwarded-Host", "hostplane.example"),
    ];
    let page = visitor.send("POST", "/console/sign-in", &form, &proxied);
    assert_eq!(page.status, 303);
    let page = visitor.sign_in(&server.key, &link);
    assert_eq!((page.status, page.location()), (303, link.as_str()));
    let cookie = page.header("set-cookie").unwrap();
    assert!(
        cookie.ends_with("; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200"),
        "{cookie}"
    );
    // Behind a proxy that terminates HTTPS the cookie is Secure.
    let page = visitor.send(
        "POST",
        "/console/sign-in",
        &form,
        &[("X-Forwarded-Proto", "https")],
    );
    assert!(page.header("set-cookie").unwrap().ends_with("; Secure"));

    // The deployment's page: user-controlled strings arrive as text.
    agent.heartbeat(json!([]));
    assert_eq!(agent.claim(&rev).0, 200);
    agent.logs(
        json!([{"deployment_id": dep, "revision_id": rev, "kind": "deploy",
        "timestamp": "2026-11-01T10:00:00Z", "level": "ERROR",
        "message": "<img src=x onerror=alert(1)> failed"}]),
    );
    let (status, _) = agent.report(
        &rev,
        "DEPLOY_FAILED",
        json!({"reason": "Crash<b>", "message": "exit \"1\" & <i>gone</i>"}),
    );
    assert_eq!(status, 200);
    let page = visitor.get(&link);
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.header("content-security-policy"), Some(CSP));
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("referrer-policy"), Some("same-origin"));
    assert!(page
        .body
        .contains("&lt;img src=x onerror=alert(1)&gt; failed"));
    assert!(page.body.contains(
        "<strong>Crash&lt;b&gt;</strong> exit &quot;1&quot; &amp; &lt;i&gt;gone&lt;/i&gt;"
    ));
    assert!(page
        .body
        .contains("&lt;script&gt;alert('cid')&lt;/script&gt;"));
    assert!(!page.body.contains("<img") && !page.body.contains("<script>alert"));
    assert!(!page.body.contains("style=") && !page.body.contains("onclick"));
    // The log lines the script follows.
    let logs = visitor.get(&format!("{link}/logs?kind=deploy&level=ERROR&revision="));
    assert_eq!(logs.status, 200);
    let logs: Value = serde_json::from_str(&logs.body).unwrap();
    assert_eq!(
        logs["lines"][0],
        json!({"at": "2026-11-01 10:00:00 UTC", "level": "ERROR",
               "message": "<img src=x onerror=alert(1)> failed"})
    );
    assert_eq!(
        logs["lines"][1]["message"],
        format!("Revision {rev} failed to deploy: Crash<b>: exit \"1\" & <i>gone</i>")
    );
    assert_eq!(logs["lines"].as_array().unwrap().len(), 2);
    let after = logs["after"].as_str().unwrap();
    let more = visitor.get(&format!("{link}/logs?kind=deploy&after={after}"));
    let more: Value = serde_json::from_str(&more.body).unwrap();
    assert_eq!(more, json!({"lines": [], "after": after}));

    // Lists and the listeners page.
    let list = visitor.get(&format!("/o/{ws}/host/deployments?name=esc&status=READY"));
    assert_eq!(list.status, 200);
    assert!(list.body.contains("No deployment matches."));
    let list = visitor.get(&format!("/o/{ws}/host/deployments?name=esc"));
    assert!(list.body.contains(&format!("href=\"{link}\">escaped</a>")));
    // Paging: 25 a page, in the API's order.
    for i in 0..25 {
        deploy(&server, &format!("page-{i:02}"), listener);
    }
    let first = visitor.get(&format!("/o/{ws}/host/deployments"));
    assert_eq!(first.body.matches("<tr><td><a href=").count(), 25);
    assert!(first.body.contains(&format!(
        "<a rel=\"next\" href=\"/o/{ws}/host/deployments?offset=25\">Next →</a>"
    )));
    assert!(!first.body.contains("rel=\"prev\""));
    let second = visitor.get(&format!("/o/{ws}/host/deployments?offset=25"));
    assert_eq!(second.body.matches("<tr><td><a href=").count(), 1);
    assert!(second.body.contains("page-24"));
    assert!(second.body.contains(&format!(
        "<a rel=\"prev\" href=\"/o/{ws}/host/deployments?offset=0\">← Previous</a>"
    )));
    assert!(!second.body.contains("rel=\"next\""));
    let filtered = visitor.get(&format!("/o/{ws}/host/deployments?name=page-1&offset=x"));
    assert_eq!(filtered.body.matches("<tr><td><a href=").count(), 10);
    // Integrations: listed with their host, never their credential (the name is
    // escaped like every value).
    let empty = visitor.get(&format!("/o/{ws}/host/integrations"));
    assert_eq!(empty.status, 200);
    assert!(empty.body.contains("No integration yet."));
    let token = db.dir.0.join("console-token");
    std::fs::write(&token, "console-secret-token").unwrap();
    let out = support::bin()
        .args([
            "admin",
            "--database-url",
            &db.url,
            "--json",
            "integration",
            "create",
        ])
        .args([
            "--workspace",
            &ws,
            "--name",
            hostile,
            "--base-url",
            "https://git.example.com",
        ])
        .arg("--token-file")
        .arg(&token)
        .env("HOSTPLANE_SECRET_KEY", support::SECRET_KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let integrations = visitor.get(&format!("/o/{ws}/host/integrations"));
    assert_eq!(integrations.status, 200);
    assert!(integrations
        .body
        .contains("<code>https://git.example.com</code>"));
    assert!(integrations
        .body
        .contains("&lt;script&gt;alert('cid')&lt;/script&gt;"));
    assert!(!integrations.body.contains(hostile));
    assert!(!integrations.body.contains("console-secret-token"));
    let listeners = visitor.get(&format!("/o/{ws}/host/listeners"));
    assert_eq!(listeners.status, 200);
    assert!(listeners.body.contains("test-agent/1.0"));
    assert!(listeners.body.contains("scripted"));
    // The row of a listener on the listeners page, by its compute id.
    let row = |page: &str, compute_id: &str| -> String {
        page.split("<tr>")
            .find(|r| r.contains(&format!("<td>{compute_id}<br>")))
            .unwrap_or_else(|| panic!("no row for {compute_id}:\n{page}"))
            .to_owned()
    };
    let escaped = "&lt;script&gt;alert('cid')&lt;/script&gt;";
    assert!(
        row(&listeners.body, escaped).contains("<span class=\"badge ok\">online</span>"),
        "{}",
        listeners.body
    );
    // A listener whose agent never called stays offline; one whose last heartbeat is
    // older than a lease (60 s) goes offline.
    let (status, quiet) = server.call(
        "POST",
        "/v2/listeners",
        Some(json!({"compute_type": "k8s", "compute_id": "quiet",
                    "compute_config": {"k8s_namespaces": ["q"]}})),
    );
    assert_eq!(status, 201, "{quiet}");
    let listed = visitor.get(&format!("/o/{ws}/host/listeners")).body;
    let quiet_row = row(&listed, "quiet");
    assert!(
        quiet_row.contains("<span class=\"muted\">never</span>")
            && quiet_row.contains("<span class=\"badge bad\">offline</span>"),
        "{quiet_row}"
    );
    let two_minutes_ago = chrono::Utc::now().timestamp_micros() - 120_000_000;
    support::sql(
        db,
        &format!("UPDATE listeners SET last_seen_at = {two_minutes_ago} WHERE id = '{listener}'"),
    );
    let listed = visitor.get(&format!("/o/{ws}/host/listeners")).body;
    assert!(
        row(&listed, escaped).contains("<span class=\"badge bad\">offline</span>"),
        "{listed}"
    );
    agent.heartbeat(json!([]));
    let listed = visitor.get(&format!("/o/{ws}/host/listeners")).body;
    assert!(row(&listed, escaped).contains("<span class=\"badge ok\">online</span>"));

    // Nothing changes without the page's CSRF token, or from another site.
    let csrf = page.csrf();
    let redeploy = format!("{link}/revisions/{rev}/redeploy");
    let page = visitor.post(&redeploy, "csrf=0000");
    assert_eq!(page.status, 403);
    assert_eq!(
        page.alert(),
        "This form has expired; reload the page and try again."
    );
    let page = visitor.send(
        "POST",
        &redeploy,
        &format!("csrf={csrf}"),
        &[("Sec-Fetch-Site", "cross-site")],
    );
    assert_eq!(page.status, 403);
    assert_eq!(revisions(&server, &dep).len(), 1);
    let page = visitor.post(&redeploy, &format!("csrf={csrf}"));
    assert_eq!(
        (page.status, page.location()),
        (303, format!("{link}?done=redeployed").as_str())
    );
    assert_eq!(revisions(&server, &dep).len(), 2);

    // Another workspace's pages stay closed to this key.
    let (other_ws, other_key) = other_workspace(db);
    let page = visitor.get(&format!("/o/{other_ws}/host/deployments"));
    assert_eq!(page.status, 403);
    assert!(page.body.contains(&format!(
        "API key does not have access to LangSmith workspace ID '{other_ws}'."
    )));
    let mut stranger = Visitor {
        server: &server,
        session: None,
    };
    stranger.sign_in(&other_key, "/console/workspaces");
    assert_eq!(stranger.get(&link).status, 403);
    assert_eq!(stranger.post(&redeploy, "csrf=x").status, 403);

    // An organization key picks a workspace.
    let org = admin(db, &["workspace", "list"]);
    let org_id = org
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == ws.as_str())
        .unwrap()["org_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let org_key = admin(db, &["api-key", "create", "--org", &org_id]);
    let mut org_visitor = Visitor {
        server: &server,
        session: None,
    };
    let page = org_visitor.sign_in(org_key["key"].as_str().unwrap(), "");
    assert_eq!(page.location(), "/console/workspaces");
    let page = org_visitor.get("/console/workspaces");
    assert!(page
        .body
        .contains(&format!("href=\"/o/{ws}/host/deployments\"")));
    assert!(!page.body.contains(&other_ws));
    assert_eq!(org_visitor.get(&link).status, 200);
    assert_eq!(
        org_visitor
            .get(&format!("/o/{other_ws}/host/deployments"))
            .status,
        403
    );

    // A listener made here comes with a working key and the command that runs its agent.
    let listeners_path = format!("/o/{ws}/host/listeners");
    let page = visitor.post(
        &listeners_path,
        &format!("csrf={csrf}&compute_id=&namespaces=Bad_NS"),
    );
    assert_eq!(page.status, 422);
    assert!(page.body.contains(
        "compute_id: String should have at least 1 character; compute_config.k8s_namespaces: \
         Value error, 'Bad_NS' is not a valid Kubernetes namespace name"
    ));
    let page = visitor.post(
        &listeners_path,
        &format!("csrf={csrf}&compute_id=edge-1&namespaces=agents%2C+more"),
    );
    assert_eq!(page.status, 201, "{}", page.body);
    let (status, all) = server.call("GET", "/v2/listeners", None);
    assert_eq!(status, 200);
    let made = all["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["compute_id"] == "edge-1")
        .unwrap()
        .clone();
    assert_eq!(
        made["compute_config"],
        json!({"k8s_namespaces": ["agents", "more"]})
    );
    let made_id = made["id"].as_str().unwrap();
    let at = page.body.find("HOSTPLANE_LISTENER_KEY=").unwrap() + 23;
    let new_key: String = page.body[at..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    assert!(page.body.contains(&format!(
        "hostplane listener --control-plane-url {} \\\n  --listener-id {made_id} --mode native",
        server.url()
    )));
    let new_agent = Agent::new(server.port, made_id, &new_key, "b1");
    assert_eq!(new_agent.heartbeat(json!([])).0, 200);
    let page = visitor.post(
        &listeners_path,
        &format!("csrf={csrf}&compute_id=edge-1&namespaces="),
    );
    assert_eq!(page.status, 409);

    // Delete asks for the name, then the listener removes what it runs.
    let page = visitor.get(&format!("{link}/delete"));
    assert_eq!(page.status, 200);
    let page = visitor.post(
        &format!("{link}/delete"),
        &format!("csrf={csrf}&confirm=nope"),
    );
    assert_eq!(page.status, 422);
    assert_eq!(
        page.alert(),
        "The name does not match; nothing was deleted."
    );
    let page = visitor.post(
        &format!("{link}/delete"),
        &format!("csrf={csrf}&confirm=escaped"),
    );
    assert_eq!(
        (page.status, page.location()),
        (
            303,
            format!("/o/{ws}/host/deployments?done=deleted").as_str()
        )
    );
    let (status, body) = server.call("GET", &format!("/v2/deployments/{dep}"), None);
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("AWAITING_DELETE"))
    );
    assert_eq!(agent.deleted(&dep).0, 200);
    assert_eq!(visitor.get(&link).status, 404);

    // The assets: immutable under a versioned URL.
    let page = visitor.get(&format!("/o/{ws}/host/deployments"));
    let at = page.body.find("/console/assets/").unwrap();
    let css: String = page.body[at..].chars().take_while(|c| *c != '"').collect();
    let asset = visitor.get(&css);
    assert_eq!(asset.status, 200);
    assert_eq!(
        asset.header("content-type"),
        Some("text/css; charset=utf-8")
    );
    assert_eq!(
        asset.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(
        visitor
            .get("/console/assets/0000000000000000/console.css")
            .status,
        404
    );

    // Signing out ends the session on the server, not only in the browser.
    let old = visitor.session.clone();
    let page = visitor.post("/console/sign-out", &format!("csrf={csrf}"));
    assert_eq!((page.status, page.location()), (303, "/console/sign-in"));
    assert!(page.header("set-cookie").unwrap().contains("Max-Age=0"));
    visitor.session = old;
    assert_eq!(visitor.get(&link).status, 303);
    // A form sent after the session ended goes to sign in, then back to its page.
    let page = visitor.post(&redeploy, &format!("csrf={csrf}"));
    assert_eq!(
        (page.status, page.location()),
        (
            303,
            format!("/console/sign-in?next={}", enc(&link)).as_str()
        )
    );

    // A revoked key ends its sessions within the key cache's bound (1 s).
    let fresh = admin(db, &["api-key", "create", "--workspace", &ws]);
    let mut revoked = Visitor {
        server: &server,
        session: None,
    };
    revoked.sign_in(fresh["key"].as_str().unwrap(), "");
    let list = format!("/o/{ws}/host/deployments");
    assert_eq!(revoked.get(&list).status, 200);
    admin(db, &["api-key", "revoke", fresh["id"].as_str().unwrap()]);
    support::wait_until("the revoked key's session to end", 5, || {
        revoked.get(&list).status == 303
    });

    // The console applies the API's plan rule: a standard-plan workspace has no
    // listeners page (the API's 403 and text), and its deployments page works.
    let org = admin(
        db,
        &["org", "create", "--name", "small", "--plan", "standard"],
    );
    let ws = admin(
        db,
        &[
            "workspace",
            "create",
            "--org",
            org["id"].as_str().unwrap(),
            "--name",
            "small",
        ],
    );
    let ws = ws["id"].as_str().unwrap();
    let key = admin(db, &["api-key", "create", "--workspace", ws]);
    let mut small = Visitor {
        server: &server,
        session: None,
    };
    small.sign_in(key["key"].as_str().unwrap(), "");
    let page = small.get(&format!("/o/{ws}/host/listeners"));
    assert_eq!(page.status, 403, "{}", page.body);
    assert_eq!(
        page.alert(),
        format!(
            "Listeners cannot be created for LangSmith workspace ID '{ws}'. Creating listeners \
             is only allowed for LangSmith organizations with self-hosted enterprise plans."
        )
    );
    assert_eq!(small.get(&format!("/o/{ws}/host/deployments")).status, 200);

    // A session ends 12 hours after sign-in, on the server whatever the browser keeps:
    // twelve hours are made to pass by moving the session's expiry to now.
    let mut late = Visitor {
        server: &server,
        session: None,
    };
    late.sign_in(&server.key, "");
    assert_eq!(late.get(&list).status, 200);
    let now_micros = chrono::Utc::now().timestamp_micros();
    support::sql(
        db,
        &format!("UPDATE console_sessions SET expires_at = {now_micros}"),
    );
    let page = late.get(&list);
    assert_eq!(
        (page.status, page.location()),
        (
            303,
            format!("/console/sign-in?next={}", enc(&list)).as_str()
        )
    );
}

#[test]
fn console_over_http_sqlite() {
    console_over_http(&sqlite_db());
}

#[test]
fn console_over_http_postgres() {
    console_over_http(&postgres_db());
}

/// `--console false` serves the API alone: the console's paths are the API's 404.
#[test]
fn console_can_be_turned_off() {
    let db = sqlite_db();
    let server = Server::start_with(&db, &["--console", "false"], "hp_console_off");
    for path in ["/console", "/console/sign-in", "/o/x/host/deployments"] {
        let (status, body) = support::http(server.port, "GET", path, &[], "");
        assert_eq!((status, body.as_str()), (404, r#"{"detail":"Not Found"}"#));
    }
    let (status, _) = server.call("GET", "/v2/listeners", None);
    assert_eq!(status, 200);
}

/// A ChromeDriver on a port it picks (read from the line it prints), stopped on drop.
struct Driver {
    child: std::process::Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        use std::io::BufRead;
        let mut child = std::process::Command::new("chromedriver")
            .arg("--port=0")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver is not installed: run `scripts/test`, which installs it");
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut printed = Vec::new();
        let port = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| {
                let port = line
                    .strip_prefix("ChromeDriver was started successfully on port ")
                    .and_then(|p| p.trim_end_matches('.').parse().ok());
                printed.push(line);
                port
            })
            .unwrap_or_else(|| panic!("chromedriver did not say its port: {printed:?}"));
        // What it prints later is read and dropped, so that it never blocks on a pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Driver { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where screenshots go: `docs/console/` when `HOSTPLANE_UPDATE_SCREENSHOTS=1`, else a
/// scratch folder (they are taken on every run all the same).
fn screenshot_dir(scratch: &support::TempDir) -> std::path::PathBuf {
    if std::env::var("HOSTPLANE_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/console")
    } else {
        scratch.0.clone()
    }
}

mod browser {
    use fantoccini::{Client, ClientBuilder, Locator};
    use serde_json::{json, Value};
    use std::time::Duration;

    pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

    /// A headless Chromium with its own profile folder, driven through `driver_port`.
    pub async fn open(driver_port: u16, profile: &std::path::Path) -> Result<Client> {
        // Debian's browser itself (its /usr/bin/chromium is a wrapper script).
        let chromium = std::env::var("HOSTPLANE_TEST_CHROMIUM")
            .unwrap_or_else(|_| "/usr/lib/chromium/chromium".into());
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-extensions", "--disable-sync", "--no-first-run",
                    "--hide-scrollbars", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        // ChromeDriver listens on plain HTTP on this machine: no TLS needed.
        let http = hyper_util::client::legacy::connect::HttpConnector::new();
        Ok(ClientBuilder::new(http)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{driver_port}"))
            .await?)
    }

    /// Runs `script` in the page and returns its value.
    pub async fn eval(c: &Client, script: &str) -> Result<Value> {
        Ok(c.execute(script, vec![]).await?)
    }

    /// Waits (up to 20 s) until `script` returns `true` in the page.
    pub async fn until(c: &Client, what: &str, script: &str) -> Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if eval(c, script).await? == Value::Bool(true) {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                let text = eval(c, "return document.body.innerText").await?;
                return Err(format!("timed out waiting for {what}; the page says: {text}").into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn find(c: &Client, css: &str) -> Result<fantoccini::elements::Element> {
        Ok(c.wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await?)
    }

    /// Saves a PNG of the window as `dir/name.png`.
    pub async fn shoot(c: &Client, dir: &std::path::Path, name: &str) -> Result<()> {
        let png = c.screenshot().await?;
        assert!(png.starts_with(b"\x89PNG"), "{name} is not a PNG");
        std::fs::write(dir.join(format!("{name}.png")), png)?;
        Ok(())
    }
}

/// The walk through a browser: the CLI's link, sign-in, logs that arrive while following,
/// redeploy, a hostile name shown as text, a listener created, a narrow screen, delete,
/// sign-out.
#[test]
fn console_in_a_browser() {
    let db = sqlite_db();
    let server = Server::start(&db);
    let driver = Driver::start();
    let profile = support::TempDir::new("hostplane-chromium");
    let shots = screenshot_dir(&profile);
    std::fs::create_dir_all(&shots).unwrap();

    // A listener whose agent (played by the test) runs one deployment.
    let (listener, key) = support::agent::listener_with_key(&server, &db, "cluster-a");
    let agent = Agent::new(server.port, &listener, &key, "agent-1");
    agent.heartbeat(json!([]));
    // Deployed with the official CLI, whose "View status" link the walk starts from.
    let cli = support::cli::Cli::new(&server);
    let out = cli.deploy(IMAGE, "support-bot", false, &["--listener-id", &listener]);
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    let dep = out.deployment_id();
    let link = out
        .events()
        .iter()
        .find(|e| e["event"] == "status_url")
        .and_then(|e| e["url"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no status link printed:\n{}", out.stdout));
    let rev = revisions(&server, &dep)[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ws = link.split('/').nth(4).unwrap().to_owned();
    assert_eq!(
        link,
        format!("{}/o/{ws}/host/deployments/{dep}", server.url())
    );
    let run = |rev: &str| {
        assert_eq!(agent.claim(rev).0, 200);
        agent.logs(json!([
            {"deployment_id": dep, "revision_id": rev, "kind": "deploy",
             "timestamp": chrono::Utc::now().to_rfc3339(), "level": "INFO",
             "message": format!("pulling {IMAGE}")},
            {"deployment_id": dep, "revision_id": rev, "kind": "deploy",
             "timestamp": chrono::Utc::now().to_rfc3339(), "level": "INFO",
             "message": "Application startup complete."},
        ]));
        assert_eq!(agent.report(rev, "DEPLOYED", json!({})).0, 200);
    };
    run(&rev);
    // A second deployment whose name holds markup and script (the API refuses such
    // names, but a database may hold anything): it must show as text.
    let (_, odd, _) = deploy(&server, "renamed-later", &listener);
    let hostile = "<script>document.title='owned'</script><b>bold</b>";
    let path = db.url.strip_prefix("sqlite://").unwrap();
    rusqlite::Connection::open(path)
        .unwrap()
        .execute(
            "UPDATE deployments SET name = ?1 WHERE id = ?2",
            [hostile, odd.as_str()],
        )
        .unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use browser::{eval, find, shoot, until};
        let c = browser::open(driver.port, &profile.0.join("profile")).await?;

        // The CLI's link: sign in first (with the keyboard), then the deployment.
        c.goto(&link).await?;
        let field = find(&c, "#api-key").await?;
        shoot(&c, &shots, "sign-in").await?;
        field.send_keys(&format!("{}\n", server.key)).await?;
        until(&c, "the deployment page", "return document.querySelector('h1') !== null && document.querySelector('h1').innerText.startsWith('support-bot')").await?;
        assert_eq!(c.current_url().await?.as_str(), link);
        // The style sheet applies under the policy (no inline styles needed).
        let header = eval(&c, "return getComputedStyle(document.querySelector('header.top')).backgroundColor").await?;
        assert_eq!(header, json!("rgb(29, 35, 48)"));

        // Following logs: lines the agent sends appear without a reload, as text.
        find(&c, "#follow").await?.click().await?;
        agent.logs(json!([{"deployment_id": dep, "revision_id": rev, "kind": "deploy",
            "timestamp": chrono::Utc::now().to_rfc3339(), "level": "WARNING",
            "message": "<img src=x onerror=\"document.title='owned'\"> slow request"}]));
        until(&c, "the followed line", "return document.getElementById('log-lines').innerText.includes('slow request')").await?;
        assert_eq!(eval(&c, "return document.querySelectorAll('#log-lines img').length").await?, json!(0));
        assert_eq!(eval(&c, "return document.title").await?, json!("support-bot · hostplane"));
        shoot(&c, &shots, "deployment").await?;

        // Redeploy the live revision: a new one appears, and goes live once deployed.
        find(&c, "form[action$='/redeploy'] button").await?.click().await?;
        until(&c, "the redeploy notice", "return document.querySelector('.notice') !== null").await?;
        let rows = eval(&c, "return document.querySelectorAll('tbody tr').length").await?;
        assert_eq!(rows, json!(2));
        let newest = revisions(&server, &dep)[0]["id"].as_str().unwrap().to_owned();
        run(&newest);
        c.refresh().await?;
        until(&c, "the new revision to be live", "return document.querySelector('tbody tr').classList.contains('live')").await?;

        // The list: the hostile name is text, and the title is untouched.
        c.goto(&format!("{}/o/{ws}/host/deployments", server.url())).await?;
        until(&c, "the list", &format!("return Array.from(document.querySelectorAll('td a')).some(a => a.textContent === {})", json!(hostile))).await?;
        assert_eq!(eval(&c, "return document.querySelectorAll('main b, main script').length").await?, json!(0));
        assert_eq!(eval(&c, "return document.title").await?, json!("Deployments · hostplane"));
        shoot(&c, &shots, "deployments").await?;
        // Filtering by name.
        let name = find(&c, "#name").await?;
        name.send_keys("support\n").await?;
        until(&c, "the filtered list", "return document.querySelectorAll('tbody tr').length === 1 && location.search.includes('name=support')").await?;

        // A listener made in the console, with its key and command.
        c.goto(&format!("{}/o/{ws}/host/listeners", server.url())).await?;
        find(&c, "#compute_id").await?.send_keys("edge-vm").await?;
        find(&c, "#namespaces").await?.send_keys("agents").await?;
        find(&c, "form.stacked button").await?.click().await?;
        until(&c, "the listener key", "return document.querySelector('pre.command') !== null").await?;
        let command = eval(&c, "return document.querySelector('pre.command').innerText").await?;
        assert!(command.as_str().unwrap().contains("hostplane listener --control-plane-url"));
        shoot(&c, &shots, "listeners").await?;

        // Readable on a phone: nothing wider than the screen.
        c.set_window_size(390, 844).await?;
        c.goto(&link).await?;
        find(&c, "h1").await?;
        let wide = eval(&c, "return Array.from(document.querySelectorAll('body *')).filter(e => e.getBoundingClientRect().right > window.innerWidth + 1 && !e.closest('.scroll, .logs, pre')).map(e => e.tagName + '.' + e.className)").await?;
        assert_eq!(wide, json!([]), "wider than a phone's screen");
        let fits = eval(&c, "return document.documentElement.scrollWidth <= window.innerWidth").await?;
        assert_eq!(fits, json!(true), "the page scrolls sideways");
        shoot(&c, &shots, "narrow").await?;
        c.set_window_size(1280, 900).await?;

        // Delete, confirmed by name; the agent removes it.
        find(&c, "a.danger").await?.click().await?;
        find(&c, "#confirm").await?.send_keys("support-bot").await?;
        find(&c, "button.danger").await?.click().await?;
        until(&c, "the deletion notice", "return document.querySelector('.notice') !== null").await?;
        assert_eq!(agent.deleted(&dep).0, 200);
        c.refresh().await?;
        until(&c, "the deployment to be gone", "return !document.body.innerText.includes('support-bot')").await?;

        // Signing out: the link asks for a sign-in again.
        find(&c, "form.sign-out button").await?.click().await?;
        find(&c, "#api-key").await?;
        c.goto(&link).await?;
        find(&c, "#api-key").await?;
        c.close().await?;
        browser::Result::Ok(())
    })
    .unwrap();
}
