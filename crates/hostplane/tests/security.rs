//! Security settings of the real binary: the secret key, file modes, where metrics
//! are served.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{http, listening_port, sqlite_db, Db, Server};

/// `hostplane serve` on `db` with extra arguments, expected to refuse to start: its exit
/// code and what it printed.
fn refused(db: &Db, extra: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = support::serve_command(db);
    cmd.args(extra)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started with {extra:?} {env:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn empty_or_short_secret_keys_are_refused() {
    let db = sqlite_db();
    for key in ["", "   ", "too-short-a-key"] {
        let (code, err) = refused(&db, &[], &[("HOSTPLANE_SECRET_KEY", key)]);
        assert_eq!(code, Some(1), "{key:?}: {err}");
        assert!(err.contains("at least 32 characters"), "{key:?}: {err}");
    }
    let (code, err) = refused(&db, &["--secret-key", ""], &[]);
    assert_eq!(code, Some(1), "{err}");
    // An empty key file is no better.
    let file = db.dir.0.join("empty.key");
    std::fs::write(&file, "\n").unwrap();
    let (code, err) = refused(&db, &["--secret-key-file", file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("at least 32 characters"), "{err}");
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The database, its WAL files, the storage folder, uploaded tarballs and a generated
/// secret key are readable by their owner only, whatever the umask.
#[test]
fn files_are_owner_only() {
    let db = sqlite_db();
    let storage = db.dir.0.join("storage");
    let log = db.dir.0.join("server.log");
    let mut child = support::serve_command(&db)
        .args(["--registry-url", "127.0.0.1:5000"])
        .env("HOSTPLANE_BOOTSTRAP_API_KEY", "files-key")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let port = listening_port(&mut child, &log, "hostplane listening");
    let headers = [
        ("X-Api-Key", "files-key"),
        ("Content-Type", "application/json"),
    ];
    let body = json!({
        "name": "src",
        "source": "internal_source",
        "source_config": {},
        "source_revision_config": {"langgraph_config_path": "langgraph.json"},
        "secrets": [],
    });
    let (status, text) = http(port, "POST", "/v2/deployments", &headers, &body.to_string());
    assert_eq!(status, 201, "{text}");
    let id = serde_json::from_str::<serde_json::Value>(&text).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, text) = http(
        port,
        "POST",
        &format!("/v2/deployments/{id}/upload-url"),
        &headers,
        "",
    );
    assert_eq!(status, 200, "{text}");
    let upload: serde_json::Value = serde_json::from_str(&text).unwrap();
    let url = upload["upload_url"].as_str().unwrap();
    let path = &url[url.find("/uploads/").unwrap()..];
    let (status, text) = support::try_http_bytes(
        port,
        "PUT",
        path,
        &[("Content-Type", "application/gzip")],
        b"\x1f\x8brest",
    )
    .unwrap();
    assert_eq!(status, 200, "{text}");
    let db_file = db.dir.0.join("hp.db");
    let tarball = storage.join(upload["object_path"].as_str().unwrap());
    let mut checked = vec![
        db_file.clone(),
        db_file.with_extension("db-wal"),
        db_file.with_extension("db-shm"),
        storage.clone(),
        storage.join("secret.key"),
        tarball.clone(),
    ];
    checked.extend(
        tarball
            .ancestors()
            .skip(1)
            .take_while(|d| d.starts_with(&storage))
            .map(|d| d.to_owned()),
    );
    for path in &checked {
        assert_eq!(
            mode(path) & 0o077,
            0,
            "{} has mode {:o}",
            path.display(),
            mode(path)
        );
    }
    // The registry's signing key is the owner's alone; its certificate is public.
    assert_eq!(mode(&storage.join("registry-signing-key.pem")), 0o600);
    assert_eq!(mode(&storage.join("registry-signing-key.crt")), 0o644);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
}

/// `/metrics` is served only on the address given for it, not on the API's.
#[test]
fn metrics_live_on_their_own_address() {
    let db = sqlite_db();
    let server = Server::start_with(&db, &[], "metrics-key");
    let metrics_port = server.metrics.unwrap();
    let (status, body) = http(server.port, "GET", "/metrics", &[], "");
    assert_eq!((status, body.as_str()), (404, r#"{"detail":"Not Found"}"#));
    let (status, body) = http(metrics_port, "GET", "/metrics", &[], "");
    assert_eq!(status, 200);
    assert!(
        body.contains(r#"http_requests_total{method="GET",route="unmatched",status="404"} 1"#),
        "{body}"
    );
    // Without the setting, nothing listens for metrics.
    drop(server);
    let server = Server::start_without_metrics(&db, &[], "metrics-key");
    assert_eq!(http(server.port, "GET", "/metrics", &[], "").0, 404);
    assert!(std::net::TcpStream::connect(("127.0.0.1", metrics_port)).is_err());
}

/// A database file and a storage folder that were already there and open to other users
/// are used, each with a warning in the log; fresh ones are owner-only and warn nothing.
#[test]
fn files_open_to_others_are_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let db = sqlite_db();
    let storage = db.dir.0.join("storage");
    std::fs::create_dir(&storage).unwrap();
    std::fs::set_permissions(&storage, std::fs::Permissions::from_mode(0o777)).unwrap();
    let file = db.dir.0.join("hp.db");
    std::fs::write(&file, b"").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = Server::start(&db);
    let log = server.log_text();
    for warning in [
        "the database file is readable by other users; consider chmod 600",
        "the storage folder is open to other users (uploaded sources, keys); consider chmod 700",
    ] {
        assert_eq!(log.matches(warning).count(), 1, "{warning}:\n{log}");
    }
    drop(server);
    let fresh = sqlite_db();
    let server = Server::start(&fresh);
    let log = server.log_text();
    assert!(!log.contains("consider chmod"), "{log}");
}

/// The settings that handed one registry password to every workspace stop the server
/// with a message that says why.
#[test]
fn old_registry_settings_are_refused() {
    let db = sqlite_db();
    for gone in [
        "HOSTPLANE_REGISTRY_PASSWORD",
        "HOSTPLANE_REGISTRY_TOKEN_FILE",
        "HOSTPLANE_REGISTRY_USERNAME",
    ] {
        let (code, err) = refused(&db, &["--registry-url", "127.0.0.1:5000"], &[(gone, "x")]);
        assert_eq!(code, Some(1), "{gone}: {err}");
        assert_eq!(
            err.trim_end().lines().last().unwrap_or_default(),
            format!(
                "hostplane: {gone} is no longer supported: one registry password handed to \
                 every workspace is unsafe; hostplane now issues per-workspace registry tokens \
                 (see docs/security.md)"
            ),
            "{err}"
        );
    }
}

/// Rotating the secret key through the binary: with the new key and the old one as
/// `--previous-secret-key`, secrets sealed before still reach the agent; a PATCH seals
/// them anew, after which the old key can go.
#[test]
fn secret_key_rotation() {
    let db = sqlite_db();
    let (old, new) = (
        "old-secret-key-of-at-least-32-characters",
        "new-secret-key-of-at-least-32-characters",
    );
    let env_of = |server: &Server, listener: &str, key: &str| {
        let agent = support::agent::Agent::new(server.port, listener, key, "rotation");
        agent.desired(-1, 0)["deployments"][0]["env"].clone()
    };
    let server = Server::start_with(&db, &["--secret-key", old], "rotation-key");
    let (listener, lkey) = support::agent::listener_with_key(&server, &db, "rotation");
    let (status, dep) = server.call(
        "POST",
        "/v2/deployments",
        Some(json!({"name": "sealed", "source": "external_docker",
                    "source_config": {"listener_id": listener},
                    "source_revision_config": {"image_uri": "img:1"},
                    "secrets": [{"name": "TOKEN", "value": "before-rotation"}]})),
    );
    assert_eq!(status, 201, "{dep}");
    let dep = dep["id"].as_str().unwrap().to_owned();
    assert_eq!(
        env_of(&server, &listener, &lkey),
        json!([{"name": "TOKEN", "value": "before-rotation"}])
    );
    drop(server);

    let server = Server::start_with(
        &db,
        &["--secret-key", new, "--previous-secret-key", old],
        "rotation-key",
    );
    assert_eq!(
        env_of(&server, &listener, &lkey),
        json!([{"name": "TOKEN", "value": "before-rotation"}])
    );
    let (status, body) = server.call(
        "PATCH",
        &format!("/v2/deployments/{dep}"),
        Some(json!({"secrets": [{"name": "TOKEN", "value": "after-rotation"}]})),
    );
    assert_eq!(status, 200, "{body}");
    drop(server);

    // Sealed with the new key: the old one is no longer needed.
    let server = Server::start_with(&db, &["--secret-key", new], "rotation-key");
    assert_eq!(
        env_of(&server, &listener, &lkey),
        json!([{"name": "TOKEN", "value": "after-rotation"}])
    );
}
