//! Helpers for tests that run the real `hostplane` binary.

#![allow(dead_code, clippy::unwrap_used)]

pub mod agent;
pub mod cli;
pub mod engine;
pub mod python;
pub mod registry;
pub mod source;

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hostplane"));
    for var in [
        "HOSTPLANE_DATABASE_URL",
        "HOSTPLANE_BOOTSTRAP_API_KEY",
        "HOSTPLANE_LISTEN",
        "HOSTPLANE_SECRET_KEY",
    ] {
        c.env_remove(var);
    }
    c
}

/// A folder removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh database of either backend, and a folder for everything else.
pub struct Db {
    pub url: String,
    pub dir: TempDir,
}

pub fn sqlite_db() -> Db {
    let dir = TempDir::new("hostplane-bin");
    Db {
        url: format!("sqlite://{}", dir.0.join("hp.db").display()),
        dir,
    }
}

pub fn postgres_db() -> Db {
    let admin = std::env::var("HOSTPLANE_TEST_POSTGRES_URL").expect(
        "HOSTPLANE_TEST_POSTGRES_URL is not set: run `scripts/test`, which starts PostgreSQL",
    );
    let name = format!("hp_bin_{}", uuid::Uuid::new_v4().simple());
    // The psql of the PostgreSQL under test (scripts/test sets its folder).
    let psql =
        std::env::var("HOSTPLANE_TEST_PG_BIN").map_or("psql".into(), |b| format!("{b}/psql"));
    let out = Command::new(psql)
        .args([&admin, "-qc", &format!("CREATE DATABASE {name}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (base, _) = admin.rsplit_once('/').unwrap();
    Db {
        url: format!("{base}/{name}"),
        dir: TempDir::new("hostplane-bin"),
    }
}

/// Runs one SQL statement on `db` directly (SQLite through rusqlite, PostgreSQL through
/// psql), for tests that stand in for time passing or for an operator's hand.
pub fn sql(db: &Db, statement: &str) {
    if let Some(path) = db.url.strip_prefix("sqlite://") {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch(statement).unwrap();
        return;
    }
    let psql =
        std::env::var("HOSTPLANE_TEST_PG_BIN").map_or("psql".into(), |b| format!("{b}/psql"));
    let out = Command::new(psql)
        .args([&db.url, "-v", "ON_ERROR_STOP=1", "-qc", statement])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{statement}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `hostplane admin --json` on `db`, with the secret key test servers use.
pub fn admin_command(db: &Db) -> Command {
    let mut cmd = bin();
    cmd.args(["admin", "--database-url", &db.url, "--json"])
        .env("HOSTPLANE_SECRET_KEY", SECRET_KEY);
    cmd
}

/// `hostplane admin ... --json` on `db`: its JSON output (the command must succeed).
pub fn admin(db: &Db, args: &[&str]) -> Value {
    let out = admin_command(db).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A second organization with one workspace, made with `hostplane admin`: the
/// workspace id and a key for it.
pub fn other_workspace(db: &Db) -> (String, String) {
    let org = admin(db, &["org", "create", "--name", "other"]);
    let org_id = org["id"].as_str().unwrap();
    let ws = admin(
        db,
        &["workspace", "create", "--org", org_id, "--name", "other"],
    );
    let ws_id = ws["id"].as_str().unwrap().to_owned();
    let key = admin(db, &["api-key", "create", "--workspace", &ws_id]);
    (ws_id, key["key"].as_str().unwrap().to_owned())
}

/// `hostplane serve` on `db`, its storage in the test's folder, on a port the system
/// picks (read it back from the log with [`listening_port`]).
pub fn serve_command(db: &Db) -> Command {
    let mut cmd = bin();
    cmd.args([
        "serve",
        "--database-url",
        &db.url,
        "--listen",
        "127.0.0.1:0",
    ])
    .arg("--storage-dir")
    .arg(db.dir.0.join("storage"));
    cmd
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The secret key test servers seal secrets with (`HOSTPLANE_SECRET_KEY`).
pub const SECRET_KEY: &str = "test-secret-key-for-hostplane-tests";

/// A running `hostplane serve`, stopped with SIGTERM on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    /// Where its `/metrics` is served, when it was started with it.
    pub metrics: Option<u16>,
    pub key: String,
    /// Where the server's stderr (its log) goes.
    pub log: std::path::PathBuf,
}

impl Server {
    /// Starts a server on a free port with a known bootstrap key.
    pub fn start(db: &Db) -> Server {
        Self::start_with(
            db,
            &[],
            &format!("hp_test_{}", uuid::Uuid::new_v4().simple()),
        )
    }

    /// Starts a server with extra `serve` arguments and the given bootstrap key (which
    /// only matters on an empty database), with its metrics on a port of their own
    /// (`metrics`).
    pub fn start_with(db: &Db, extra: &[&str], key: &str) -> Server {
        Self::spawn(db, extra, key, true)
    }

    /// As [`Server::start_with`], without a metrics listener.
    pub fn start_without_metrics(db: &Db, extra: &[&str], key: &str) -> Server {
        Self::spawn(db, extra, key, false)
    }

    fn spawn(db: &Db, extra: &[&str], key: &str, metrics: bool) -> Server {
        let key = key.to_owned();
        let log = db
            .dir
            .0
            .join(format!("server-{}.log", uuid::Uuid::new_v4().simple()));
        let mut cmd = serve_command(db);
        cmd.args(extra)
            .env("HOSTPLANE_BOOTSTRAP_API_KEY", &key)
            .env("HOSTPLANE_SECRET_KEY", SECRET_KEY)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if metrics {
            cmd.args(["--metrics-listen", "127.0.0.1:0"]);
        }
        let child = cmd.spawn().unwrap();
        let mut server = Server {
            child,
            port: 0,
            metrics: None,
            key,
            log,
        };
        server.port = listening_port(&mut server.child, &server.log, "hostplane listening");
        if metrics {
            server.metrics = Some(server.logged_port("metrics listening"));
        }
        server
    }

    /// The value of a series on the server's `/metrics` (e.g. `db_up` or
    /// `dataplane_polls_waiting`); `None` while it does not exist.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let port = self
            .metrics
            .expect("this server was started without metrics");
        let (status, text) = try_http(port, "GET", "/metrics", &[], "").ok()?;
        assert_eq!(status, 200, "{text}");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    }

    /// Waits until a long-poll is waiting on the server (so a change made now is one it
    /// must be woken for, not one it reads when it starts).
    pub fn wait_for_polls(&self, n: u32) {
        wait_until(&format!("{n} long-poll(s) to wait"), 20, || {
            self.metric("dataplane_polls_waiting")
                .is_some_and(|w| w >= f64::from(n))
        });
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates an `internal_source` deployment `name` (as `langgraph deploy --remote`
    /// does before it uploads): the answer.
    pub fn source_deployment(&self, name: &str) -> Value {
        let (status, created) = self.call(
            "POST",
            "/v2/deployments",
            Some(
                serde_json::json!({"name": name, "source": "internal_source",
                                    "source_config": {}, "source_revision_config": {},
                                    "secrets": []}),
            ),
        );
        assert_eq!(status, 201, "{created}");
        created
    }

    /// Uploads `tarball` as the source of `internal_source` deployment `dep` and makes it
    /// a revision (with `config_path`), as `langgraph deploy --remote` does: the revision.
    pub fn upload_source(&self, dep: &str, tarball: &[u8], config_path: &str) -> String {
        let (status, url) = self.call(
            "POST",
            &format!("/v2/deployments/{dep}/upload-url"),
            Some(serde_json::json!({"supports_upload_headers": true})),
        );
        assert_eq!(status, 200, "{url}");
        let path = url["upload_url"]
            .as_str()
            .unwrap()
            .strip_prefix(&self.url())
            .unwrap()
            .to_owned();
        let (status, text) = try_http_bytes(
            self.port,
            "PUT",
            &path,
            &[("Content-Type", "application/gzip")],
            tarball,
        )
        .unwrap();
        assert_eq!(status, 200, "{text}");
        let (status, patched) = self.call(
            "PATCH",
            &format!("/v2/deployments/{dep}"),
            Some(serde_json::json!({
                "revision_source": "internal_source",
                "source_revision_config": {
                    "source_tarball_path": url["object_path"],
                    "langgraph_config_path": config_path,
                },
            })),
        );
        assert_eq!(status, 200, "{patched}");
        patched["latest_revision_id"].as_str().unwrap().to_owned()
    }

    /// The messages of a revision's `build_logs` or `deploy_logs`, oldest first (at
    /// most 1,000).
    pub fn revision_logs(&self, dep: &str, rev: &str, kind: &str) -> Vec<String> {
        let (status, logs) = self.call(
            "POST",
            &format!("/v1/projects/{dep}/revisions/{rev}/{kind}"),
            Some(serde_json::json!({"order": "asc", "limit": 1000})),
        );
        assert_eq!(status, 200, "{logs}");
        logs["logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["message"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The status of a revision, as the public API shows it.
    pub fn revision_status(&self, dep: &str, rev: &str) -> Value {
        self.call(
            "GET",
            &format!("/v2/deployments/{dep}/revisions/{rev}"),
            None,
        )
        .1["status"]
            .clone()
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let (status, text) = http(
            self.port,
            method,
            path,
            &[
                ("X-Api-Key", &self.key),
                ("Content-Type", "application/json"),
            ],
            &body,
        );
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The port of an address the server logged before it listened (the metrics
    /// listener, bound to port 0).
    pub fn logged_port(&self, message: &str) -> u16 {
        port_in_log(&self.log_text(), message)
            .unwrap_or_else(|| panic!("no '{message}' in the log:\n{}", self.log_text()))
    }

    /// Everything the server has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: no chance to flush or clean up.
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The highest resident memory the server process has had, in KiB (`VmHWM`: the
    /// peak, not a sample after the fact). Fails when `/proc` cannot be read.
    pub fn peak_kib(&self) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmHWM in {path}"))
    }

    pub fn stop(&mut self) -> Option<i32> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap().code()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// The port a starting `hostplane` process bound (it was given port 0), read from the
/// log line `message ... address=IP:PORT`; fails with the log if the process exits or
/// does not get there within 20 s.
pub fn listening_port(child: &mut Child, log: &std::path::Path, message: &str) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(port) = port_in_log(&text, message) {
            return port;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("hostplane exited ({status}) before listening:\n{text}");
        }
        assert!(
            Instant::now() < deadline,
            "no '{message}' line within 20 s:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The port of the first log line with `message` and an `address` field: `address=IP:PORT`
/// in the text format, `"address":"IP:PORT"` in JSON.
pub fn port_in_log(text: &str, message: &str) -> Option<u16> {
    text.lines().filter(|l| l.contains(message)).find_map(|l| {
        let rest = l
            .split_once("address=")
            .or_else(|| l.split_once("\"address\":\""))?
            .1;
        let address = rest.split(|c: char| c.is_whitespace() || c == '"').next()?;
        address.rsplit(':').next()?.parse().ok()
    })
}

/// Polls `done` every 100 ms until it holds; fails the test after `seconds`.
pub fn wait_until(what: &str, seconds: u64, done: impl FnMut() -> bool) {
    wait_until_or(what, seconds, done, String::new);
}

/// [`wait_until`], with `explain` adding what the failure message should show.
pub fn wait_until_or(
    what: &str,
    seconds: u64,
    mut done: impl FnMut() -> bool,
    explain: impl FnOnce() -> String,
) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !done() {
        if Instant::now() >= deadline {
            panic!("timed out waiting for {what}\n{}", explain());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A minimal HTTP/1.1 exchange, enough to talk to the server under test.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    try_http(port, method, path, headers, body).unwrap()
}

/// Like [`http`], but a refused or broken connection is an error instead of a panic.
pub fn try_http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    try_http_bytes(port, method, path, headers, body.as_bytes())
}

/// [`try_http`] with a body of any bytes.
pub fn try_http_bytes(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let (status, body) = exchange(port, method, path, headers, body)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// One HTTP/1.1 exchange: the status and the raw body.
pub fn exchange(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let (status, _, body) = exchange_with_headers(port, method, path, headers, body)?;
    Ok((status, body))
}

/// Response headers: names in lower case, with their values.
pub type Headers = Vec<(String, String)>;

/// One HTTP/1.1 exchange: the status, the response headers (names in lower case) and
/// the raw body.
pub fn exchange_with_headers(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Headers, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut req = req.into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let status = resp
        .get(9..12)
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no complete response")
        })?;
    let end = resp.windows(4).position(|w| w == b"\r\n\r\n");
    let head = String::from_utf8_lossy(&resp[..end.unwrap_or(resp.len())]).into_owned();
    let names = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = end.map(|at| resp[at + 4..].to_vec()).unwrap_or_default();
    Ok((status, names, body))
}

/// The lines a child prints on its (piped) stdout, collected as they come by a thread.
pub fn stdout_lines(child: &mut Child) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    let lines: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let out = child.stdout.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// Reads lines from a child's stdout until one contains `marker`.
pub fn read_until(out: &mut impl BufRead, marker: &str) -> String {
    let mut seen = String::new();
    for line in out.lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(marker) {
            return seen;
        }
    }
    panic!("{marker:?} never printed; got:\n{seen}")
}

pub fn reader(r: impl Read) -> BufReader<impl Read> {
    BufReader::new(r)
}
