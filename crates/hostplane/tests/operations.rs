//! What the README promises operators, against the real binary: revocation on running
//! servers, request logs, settings, and replicas behaving as one service.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use support::{admin, http, postgres_db, sqlite_db, Db, Server};

fn get(server: &Server, key: &str, path: &str) -> (u16, Value) {
    let (status, body) = http(server.port, "GET", path, &[("X-Api-Key", key)], "");
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// `hostplane admin api-key revoke` stops a key on every running server within the key
/// cache's lifetime (`HOSTPLANE_KEY_CACHE_MS`, 1 s by default), and at once with the
/// cache off.
fn revocation(db: Db, replicas: usize, cache_ms: Option<&str>) {
    let extra: Vec<&str> = cache_ms
        .map(|ms| vec!["--key-cache-ms", ms])
        .unwrap_or_default();
    let servers: Vec<Server> = (0..replicas)
        .map(|_| Server::start_with(&db, &extra, "revocation-key"))
        .collect();
    let ws = admin(&db, &["workspace", "list"])[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = admin(&db, &["api-key", "create", "--workspace", &ws]);
    let value = key["key"].as_str().unwrap();
    for s in &servers {
        assert_eq!(get(s, value, "/v2/listeners").0, 200);
    }
    let revoked = std::time::Instant::now();
    admin(&db, &["api-key", "revoke", key["id"].as_str().unwrap()]);
    let bound = match cache_ms {
        Some("0") => std::time::Duration::ZERO,
        _ => std::time::Duration::from_millis(1000),
    };
    for s in &servers {
        // Refused by the time the bound has passed (and from then on)...
        loop {
            let answer = get(s, value, "/v2/listeners");
            if answer.0 == 401 {
                assert_eq!(answer, (401, json!({"detail": "Invalid API key"})));
                break;
            }
            assert_eq!(answer.0, 200);
            assert!(
                revoked.elapsed() <= bound,
                "the revoked key still worked after {:?}",
                revoked.elapsed()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    std::thread::sleep(bound);
    for s in &servers {
        assert_eq!(
            get(s, value, "/v2/listeners"),
            (401, json!({"detail": "Invalid API key"}))
        );
        // The bootstrap key still works.
        assert_eq!(get(s, "revocation-key", "/v2/listeners").0, 200);
    }
}

#[test]
fn revocation_sqlite() {
    revocation(sqlite_db(), 1, None);
}

#[test]
fn revocation_two_replicas_postgres() {
    revocation(postgres_db(), 2, None);
}

#[test]
fn revocation_without_key_cache_is_immediate() {
    revocation(sqlite_db(), 1, Some("0"));
}

/// Each request is logged once with its id, method, route template and status, in text
/// and in JSON; keys, secret values and bodies never appear.
#[test]
fn request_logs() {
    for format in ["text", "json"] {
        let db = sqlite_db();
        let key = "log-test-key-4f1c9e";
        let server = Server::start_with(&db, &["--log-format", format], key);
        let secret = "sk-very-secret-value-93b1";
        let body = json!({"name": "logged", "source": "external_docker", "source_config": {},
                          "source_revision_config": {"image_uri": "docker.io/acme/body-marker:1"},
                          "secrets": [{"name": "OPENAI_API_KEY", "value": secret}]});
        let headers = [
            ("X-Api-Key", key),
            ("Content-Type", "application/json"),
            ("X-Request-Id", "req-abc.123"),
        ];
        let (status, text) = http(
            server.port,
            "POST",
            "/v2/deployments",
            &headers,
            &body.to_string(),
        );
        assert_eq!(status, 201, "{text}");
        let id = serde_json::from_str::<Value>(&text).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, _) = http(
            server.port,
            "GET",
            &format!("/v2/deployments/{id}"),
            &[("X-Api-Key", key)],
            "",
        );
        assert_eq!(status, 200);
        let (status, _) = http(
            server.port,
            "GET",
            "/v2/listeners",
            &[("X-Api-Key", "wrong-key-77aa")],
            "",
        );
        assert_eq!(status, 401);
        let log_file = server.log.clone();
        drop(server);
        let log = std::fs::read_to_string(log_file).unwrap();
        let requests: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("hostplane::request"))
            .collect();
        assert_eq!(requests.len(), 3, "{format}: {log}");
        if format == "json" {
            let first: Value = serde_json::from_str(requests[0]).unwrap();
            assert_eq!(first["target"], "hostplane::request");
            let fields = &first["fields"];
            assert_eq!(
                (
                    &fields["request_id"],
                    &fields["method"],
                    &fields["route"],
                    &fields["status"]
                ),
                (
                    &json!("req-abc.123"),
                    &json!("POST"),
                    &json!("/v2/deployments"),
                    &json!(201)
                )
            );
            let second: Value = serde_json::from_str(requests[1]).unwrap();
            assert_eq!(second["fields"]["route"], "/v2/deployments/{deployment_id}");
            assert!(
                uuid::Uuid::parse_str(second["fields"]["request_id"].as_str().unwrap()).is_ok()
            );
        } else {
            // `... hostplane::request: request request_id=... method=... route=...
            // status=... duration_ms=...`: every field, exactly (but the duration).
            let fields = |line: &str| -> Vec<(String, String)> {
                line.split_once("hostplane::request: request ")
                    .unwrap_or_else(|| panic!("not a request line: {line}"))
                    .1
                    .split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .filter(|(k, _)| *k != "duration_ms")
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            };
            let pairs = |items: &[(&str, &str)]| -> Vec<(String, String)> {
                items
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect()
            };
            assert_eq!(
                fields(requests[0]),
                pairs(&[
                    ("request_id", "req-abc.123"),
                    ("method", "POST"),
                    ("route", "/v2/deployments"),
                    ("status", "201"),
                ])
            );
            let second = fields(requests[1]);
            let generated = &second[0].1;
            assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
            assert_eq!(
                second,
                pairs(&[
                    ("request_id", generated),
                    ("method", "GET"),
                    ("route", "/v2/deployments/{deployment_id}"),
                    ("status", "200"),
                ])
            );
            assert_eq!(
                fields(requests[2])[1..],
                pairs(&[
                    ("method", "GET"),
                    ("route", "/v2/listeners"),
                    ("status", "401")
                ])
            );
        }
        for never in [
            key,
            secret,
            "wrong-key-77aa",
            "body-marker",
            "OPENAI_API_KEY",
        ] {
            assert!(!log.contains(never), "{format} log shows {never}:\n{log}");
        }
    }
}

/// `--public-url` is where upload URLs point; `--max-upload-bytes` bounds a tarball.
#[test]
fn upload_settings() {
    let db = sqlite_db();
    let key = "settings-key";
    let server = Server::start_with(
        &db,
        &[
            "--public-url",
            "https://hp.example.com/api-host/",
            "--max-upload-bytes",
            "64",
        ],
        key,
    );
    let headers = [("X-Api-Key", key), ("Content-Type", "application/json")];
    let body = json!({"name": "src", "source": "internal_source", "source_config": {},
                      "source_revision_config": {}, "secrets": []});
    let (_, text) = http(
        server.port,
        "POST",
        "/v2/deployments",
        &headers,
        &body.to_string(),
    );
    let id = serde_json::from_str::<Value>(&text).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, text) = http(
        server.port,
        "POST",
        &format!("/v2/deployments/{id}/upload-url"),
        &headers,
        "{}",
    );
    assert_eq!(status, 200);
    let url = serde_json::from_str::<Value>(&text).unwrap()["upload_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = url
        .strip_prefix("https://hp.example.com/api-host/uploads/")
        .unwrap_or_else(|| panic!("{url}"));
    let mut big = vec![0x1f, 0x8b];
    big.resize(65, 0);
    let (status, text) =
        support::try_http_bytes(server.port, "PUT", &format!("/uploads/{token}"), &[], &big)
            .unwrap();
    assert_eq!(
        (status, text.as_str()),
        (413, r#"{"detail":"Uploads are limited to 64 bytes."}"#)
    );
    big.truncate(64);
    let (status, _) =
        support::try_http_bytes(server.port, "PUT", &format!("/uploads/{token}"), &[], &big)
            .unwrap();
    assert_eq!(status, 200);
}

/// Two replicas on one PostgreSQL: each reads what the other wrote, and concurrent
/// PATCHes of one deployment through both lose no update.
#[test]
fn replicas_act_as_one_postgres() {
    let db = postgres_db();
    let key = "replica-key";
    let a = Server::start_with(&db, &[], key);
    let b = Server::start_with(&db, &[], key);
    let body = json!({
        "name": "shared",
        "source": "external_docker",
        "source_config": {},
        "source_revision_config": {"image_uri": "docker.io/acme/agent:0"},
        "secrets": [],
    });
    let (status, created) = a.call("POST", "/v2/deployments", Some(body));
    assert_eq!(status, 201);
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        b.call("GET", &format!("/v2/deployments/{id}"), None),
        (200, created.clone())
    );

    let patches: Vec<_> = (0..16)
        .map(|i| {
            let port = if i % 2 == 0 { a.port } else { b.port };
            let id = id.clone();
            std::thread::spawn(move || {
                let image = format!("docker.io/acme/agent:{i}");
                let body = json!({"source_revision_config": {"image_uri": image}}).to_string();
                let headers = [
                    ("X-Api-Key", "replica-key"),
                    ("Content-Type", "application/json"),
                ];
                // A client retries the 409 that says the deployment was busy.
                let busy = json!({
                    "detail": "The deployment is being changed by other requests; retry."
                })
                .to_string();
                let path = format!("/v2/deployments/{id}");
                let text = loop {
                    let (status, text) = http(port, "PATCH", &path, &headers, &body);
                    match status {
                        200 => break text,
                        409 => assert_eq!(text, busy),
                        _ => panic!("{status}: {text}"),
                    }
                };
                let d: Value = serde_json::from_str(&text).unwrap();
                (i, d["latest_revision_id"].as_str().unwrap().to_owned())
            })
        })
        .collect();
    let done: Vec<(i32, String)> = patches.into_iter().map(|p| p.join().unwrap()).collect();
    // Each PATCH added its own revision, with its own image; none was overwritten.
    let (_, revs) = b.call(
        "GET",
        &format!("/v2/deployments/{id}/revisions?limit=100"),
        None,
    );
    let revs = revs["resources"].as_array().unwrap().clone();
    assert_eq!(revs.len(), 17);
    for (i, rev) in &done {
        let (status, r) = a.call(
            "GET",
            &format!("/v2/deployments/{id}/revisions/{rev}"),
            None,
        );
        assert_eq!(status, 200);
        assert_eq!(
            r["source_revision_config"]["image_uri"],
            json!(format!("docker.io/acme/agent:{i}"))
        );
    }
    // The deployment shows the newest revision's image, on both replicas.
    let newest = &revs[0];
    let (_, d) = a.call("GET", &format!("/v2/deployments/{id}"), None);
    assert_eq!(d["latest_revision_id"], newest["id"]);
    assert_eq!(
        d["source_revision_config"]["image_uri"],
        newest["source_revision_config"]["image_uri"]
    );
    assert_eq!(b.call("GET", &format!("/v2/deployments/{id}"), None).1, d);
}

/// Every read sees every write acknowledged before it: writers on several threads each
/// create a listener, PATCH it, and read it back at once (on PostgreSQL through the other
/// replica), under a concurrent load of list reads; nothing read is ever older than what
/// was acknowledged.
fn reads_see_acknowledged_writes(db: Db, replicas: usize) {
    let key = "ryw-key";
    let servers: Vec<Server> = (0..replicas)
        .map(|_| Server::start_with(&db, &[], key))
        .collect();
    let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = ports
        .iter()
        .map(|&port| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (status, _) = http(
                        port,
                        "GET",
                        "/v2/listeners?limit=100",
                        &[("X-Api-Key", key)],
                        "",
                    );
                    assert_eq!(status, 200);
                }
            })
        })
        .collect();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let ports = ports.clone();
            std::thread::spawn(move || {
                let headers = [("X-Api-Key", key), ("Content-Type", "application/json")];
                for i in 0..25 {
                    let (write, read) = (ports[i % ports.len()], ports[(i + 1) % ports.len()]);
                    let body = json!({"compute_type": "k8s", "compute_id": format!("ryw-{w}-{i}"),
                                      "compute_config": {"k8s_namespaces": ["a"]}});
                    let (status, text) =
                        http(write, "POST", "/v2/listeners", &headers, &body.to_string());
                    assert_eq!(status, 201, "{text}");
                    let created: Value = serde_json::from_str(&text).unwrap();
                    let path = format!("/v2/listeners/{}", created["id"].as_str().unwrap());
                    let (status, text) = http(read, "GET", &path, &headers, "");
                    assert_eq!(
                        (status, serde_json::from_str::<Value>(&text).unwrap()),
                        (200, created)
                    );
                    let patch = json!({"compute_config": {"k8s_namespaces": [format!("b{i}")]}});
                    let (status, text) = http(write, "PATCH", &path, &headers, &patch.to_string());
                    assert_eq!(status, 200, "{text}");
                    let patched: Value = serde_json::from_str(&text).unwrap();
                    let (status, text) = http(read, "GET", &path, &headers, "");
                    assert_eq!(
                        (status, serde_json::from_str::<Value>(&text).unwrap()),
                        (200, patched)
                    );
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
}

#[test]
fn reads_see_acknowledged_writes_sqlite() {
    reads_see_acknowledged_writes(sqlite_db(), 1);
}

#[test]
fn reads_see_acknowledged_writes_two_replicas_postgres() {
    reads_see_acknowledged_writes(postgres_db(), 2);
}
