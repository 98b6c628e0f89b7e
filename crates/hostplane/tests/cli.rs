//! The `hostplane` binary end to end: admin commands, first start, serving, shutdown.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use support::{bin, http, listening_port, postgres_db, sqlite_db, Db};

fn admin(db: &Db, args: &[&str]) -> (i32, String, String) {
    let out = bin()
        .arg("admin")
        .arg("--database-url")
        .arg(&db.url)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn admin_json(db: &Db, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, out, err) = admin(db, &all);
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap()
}

fn admin_commands(db: Db) {
    let orgs = admin_json(&db, &["org", "list"]);
    assert_eq!(orgs, Value::Array(vec![]));
    // The database options may also follow the subcommand, as people type them.
    let out = bin()
        .args(["admin", "org", "list", "--json", "--database-url", &db.url])
        .args(["--db-acquire-timeout-ms", "2000"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    let org = admin_json(
        &db,
        &["org", "create", "--name", "acme", "--plan", "standard"],
    );
    assert_eq!(
        (org["name"].as_str(), org["plan"].as_str()),
        (Some("acme"), Some("standard"))
    );
    let org_id = org["id"].as_str().unwrap().to_owned();
    let default_plan = admin_json(&db, &["org", "create", "--name", "big"]);
    assert_eq!(default_plan["plan"], "enterprise");
    assert_eq!(
        admin_json(&db, &["org", "list"]).as_array().unwrap().len(),
        2
    );

    let ws = admin_json(
        &db,
        &["workspace", "create", "--org", &org_id, "--name", "team"],
    );
    assert_eq!(ws["org_id"], org["id"]);
    let ws_id = ws["id"].as_str().unwrap().to_owned();
    assert_eq!(
        admin_json(&db, &["workspace", "list", "--org", &org_id])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let key = admin_json(&db, &["api-key", "create", "--workspace", &ws_id]);
    assert!(key["key"].as_str().unwrap().len() >= 40);
    let org_key = admin_json(&db, &["api-key", "create", "--org", &org_id]);
    assert!(org_key["workspace_id"].is_null());
    let listed = admin_json(&db, &["api-key", "list"]);
    let text = listed.to_string();
    assert!(
        !text.contains(key["key"].as_str().unwrap()),
        "key values must never be listed"
    );
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["id"].is_string()));
    let revoked = admin_json(&db, &["api-key", "revoke", key["id"].as_str().unwrap()]);
    assert_eq!(revoked["revoked"], true);
    let listed = admin_json(&db, &["api-key", "list"]);
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["id"] == key["id"] && !k["revoked_at"].is_null()));

    // Bad arguments: a clear message and exit code 2.
    for args in [
        vec!["workspace", "create", "--org", "not-a-uuid", "--name", "x"],
        vec![
            "workspace",
            "create",
            "--org",
            "00000000-0000-4000-8000-000000000000",
            "--name",
            "x",
        ],
        vec!["api-key", "create"],
        vec![
            "api-key",
            "create",
            "--workspace",
            "00000000-0000-4000-8000-000000000000",
        ],
        vec!["api-key", "revoke", "00000000-0000-4000-8000-000000000000"],
        vec!["org", "create", "--name", "x", "--plan", "gold"],
    ] {
        let (code, _, err) = admin(&db, &args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(!err.trim().is_empty());
    }
}

#[test]
fn admin_commands_sqlite() {
    admin_commands(sqlite_db());
}

#[test]
fn admin_commands_postgres() {
    admin_commands(postgres_db());
}

fn serve_bootstrap_and_shutdown(db: Db) {
    let log = db.dir.0.join("serve.log");
    let start = || {
        let mut child = support::serve_command(&db)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let port = listening_port(&mut child, &log, "hostplane listening");
        (child, port)
    };
    let (mut child, port) = start();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    let key = loop {
        let line = lines.next().expect("server printed the key").unwrap();
        printed.push_str(&line);
        if let Some(rest) = line.split("store it now): ").nth(1) {
            break rest.trim().to_owned();
        }
    };
    assert!(printed.contains("workspace 'default'"));
    assert_eq!(
        http(port, "GET", "/ok", &[], ""),
        (200, r#"{"ok":true}"#.to_owned())
    );
    let (status, body) = http(
        port,
        "POST",
        "/api-host/v2/listeners",
        &[("X-Api-Key", &key), ("Content-Type", "application/json")],
        r#"{"compute_type":"k8s","compute_id":"first","compute_config":{}}"#,
    );
    assert_eq!(status, 201, "{body}");

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));

    // A second start creates nothing and prints no key; the data and the key survive.
    let (mut child, port) = start();
    let (status, body) = http(port, "GET", "/v2/listeners", &[("X-Api-Key", &key)], "");
    assert_eq!(status, 200);
    assert!(body.contains(r#""compute_id":"first""#));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let mut rest = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut rest)
        .unwrap();
    assert!(!rest.contains("API key"), "second start printed: {rest}");
    assert_eq!(
        admin_json(&db, &["org", "list"]).as_array().unwrap().len(),
        1
    );
}

#[test]
fn serve_bootstrap_and_shutdown_sqlite() {
    serve_bootstrap_and_shutdown(sqlite_db());
}

#[test]
fn serve_bootstrap_and_shutdown_postgres() {
    serve_bootstrap_and_shutdown(postgres_db());
}
