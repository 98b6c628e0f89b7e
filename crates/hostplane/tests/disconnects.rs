//! Cancel safety: clients that reset their connection at random moments while writing
//! must neither wedge the database for everyone else nor lose a write they saw
//! acknowledged. Runs the real binary on both backends.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use socket2::SockRef;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::{postgres_db, sqlite_db, Db, Server};

const WRITERS: usize = 16;
const STORM: Duration = Duration::from_millis(1500);

fn random_below(n: u64) -> u64 {
    (uuid::Uuid::new_v4().as_u128() % u128::from(n)) as u64
}

/// How a request ended.
enum Outcome {
    /// The server answered: status and JSON body.
    Answered(u16, Value),
    /// No answer within the patience: the client reset the connection (RST, not FIN).
    Reset,
}

/// Sends one request and waits at most `patience` for the answer; when it has not come
/// by then, resets the connection. A server that closes the connection without a whole
/// answer fails the test: only the client cuts requests off here.
fn send_or_reset(
    port: u16,
    key: &str,
    method: &str,
    path: &str,
    body: &str,
    patience: Duration,
) -> Outcome {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Api-Key: {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let deadline = Instant::now() + patience;
    let mut resp = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => {
                let text = String::from_utf8_lossy(&resp).into_owned();
                let answered = text.get(9..12).and_then(|c| c.parse().ok()).zip(
                    text.split_once("\r\n\r\n")
                        .and_then(|(_, b)| serde_json::from_str(b).ok()),
                );
                let (status, body) = answered.unwrap_or_else(|| {
                    panic!("{method} {path}: the server closed without an answer: {text:?}")
                });
                return Outcome::Answered(status, body);
            }
            Ok(n) => resp.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => panic!("{method} {path}: the server broke the connection: {e}"),
        }
    }
    SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
    Outcome::Reset
}

/// What one writer saw of its listener's version PATCHes: the last acknowledged one,
/// and every one it reset (which may still have been applied).
#[derive(Default)]
struct Versions {
    acked: Option<String>,
    reset: Vec<String>,
}

impl Versions {
    /// The versions the listener may show once this writer is done: its last
    /// acknowledged PATCH, or one it reset and the server applied after all. An earlier
    /// acknowledged PATCH, or the initial state after an acknowledged PATCH, is a lost
    /// write.
    fn allowed(&self) -> Vec<Value> {
        let mut allowed: Vec<Value> = self.reset.iter().map(|v| json!(v)).collect();
        allowed.push(self.acked.as_ref().map_or(Value::Null, |v| json!(v)));
        allowed
    }
}

/// Pooled database connections in use, from the server's metrics (at rest: 0 on
/// SQLite, 1 on PostgreSQL, whose change notifications hold one).
fn busy_connections(metrics: u16) -> u64 {
    let (_, text) = support::try_http(metrics, "GET", "/metrics", &[], "").unwrap();
    let gauge = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
            .parse()
            .unwrap()
    };
    gauge("db_pool_connections") - gauge("db_pool_idle_connections")
}

/// Waits until the server has no database work in progress (no more pooled connections
/// in use than at rest, three scrapes in a row): writes cut off by a reset finish or
/// roll back on their own after the client is gone.
fn wait_quiet(metrics: u16, at_rest: u64) {
    let mut quiet_in_a_row = 0;
    support::wait_until(
        "the writes of reset requests to finish (pooled connections back to rest)",
        20,
        || {
            let quiet = busy_connections(metrics) <= at_rest;
            quiet_in_a_row = if quiet { quiet_in_a_row + 1 } else { 0 };
            quiet_in_a_row >= 3
        },
    );
}

fn storm(db: Db) {
    let server = Server::start_with(&db, &[], "storm-key");
    let metrics = server.metrics.unwrap();
    let (status, l) = server.call(
        "POST",
        "/v2/listeners",
        Some(json!({
            "compute_type": "k8s",
            "compute_id": "storm",
            "compute_config": {"k8s_namespaces": ["a"]},
        })),
    );
    assert_eq!(status, 201, "{l}");
    // Each writer owns one listener and one deployment and writes increasing numbers to
    // them, so the last number it saw acknowledged is a floor for what must be stored.
    let mut owned = Vec::new();
    for t in 0..WRITERS {
        let (s1, lis) = server.call(
            "POST",
            "/v2/listeners",
            Some(json!({
                "compute_type": "k8s",
                "compute_id": format!("w{t}"),
                "compute_config": {"k8s_namespaces": ["a"]},
            })),
        );
        assert_eq!(s1, 201, "{lis}");
        let (s2, dep) = server.call(
            "POST",
            "/v2/deployments",
            Some(json!({
                "name": format!("d{t}"),
                "source": "external_docker",
                "source_config": {"listener_id": l["id"]},
                "source_revision_config": {"image_uri": "docker.io/acme/agent:0"},
                "secrets": [],
            })),
        );
        assert_eq!(s2, 201, "{dep}");
        owned.push((
            lis["id"].as_str().unwrap().to_owned(),
            dep["id"].as_str().unwrap().to_owned(),
        ));
    }

    let at_rest = busy_connections(metrics);
    // The storm: every writer alternates listener PATCHes, deployment PATCHes (a
    // transaction adding a revision) and listener creates, and gives each request a
    // random 0-20 ms before resetting it. Every write it saw acknowledged is recorded:
    // created listeners and the revisions acknowledged PATCHes added.
    let started = Instant::now();
    let writers: Vec<_> = owned
        .iter()
        .cloned()
        .map(|(lis, dep)| {
            let (port, key) = (server.port, server.key.clone());
            std::thread::spawn(move || {
                let (mut resets, mut acked) = (0u64, Vec::new());
                let mut versions = Versions::default();
                let mut n = 0;
                while started.elapsed() < STORM {
                    n += 1;
                    // Most requests are cut off; some wait for their answer.
                    let patience = match random_below(4) {
                        0 => Duration::from_secs(5),
                        _ => Duration::from_millis(random_below(21)),
                    };
                    let image = format!("docker.io/acme/agent:{n}");
                    let version = format!("v{n}");
                    let (method, path, body) = match n % 3 {
                        0 => (
                            "PATCH",
                            format!("/v2/listeners/{lis}"),
                            json!({"version": version}),
                        ),
                        1 => (
                            "PATCH",
                            format!("/v2/deployments/{dep}"),
                            json!({"source_revision_config": {"image_uri": image}}),
                        ),
                        _ => (
                            "POST",
                            "/v2/listeners".to_owned(),
                            json!({
                                "compute_type": "k8s",
                                "compute_id": format!("c-{lis}-{n}"),
                                "compute_config": {"k8s_namespaces": ["a"]},
                            }),
                        ),
                    };
                    match send_or_reset(port, &key, method, &path, &body.to_string(), patience) {
                        Outcome::Reset => {
                            resets += 1;
                            if n % 3 == 0 {
                                versions.reset.push(version);
                            }
                        }
                        Outcome::Answered(200, l) if n % 3 == 0 => {
                            assert_eq!(l["version"], json!(version));
                            versions.acked = Some(version);
                        }
                        Outcome::Answered(200, d) => {
                            let rev = d["latest_revision_id"].as_str().unwrap();
                            let path = format!("/v2/deployments/{dep}/revisions/{rev}");
                            acked.push((path, body["source_revision_config"].clone()))
                        }
                        Outcome::Answered(201, l) => {
                            let path = format!("/v2/listeners/{}", l["id"].as_str().unwrap());
                            acked.push((path, l))
                        }
                        Outcome::Answered(status, v) => {
                            panic!("{method} {path} answered {status}: {v}")
                        }
                    }
                }
                (resets, acked, (lis, versions))
            })
        })
        .collect();
    let (mut resets, mut acked, mut versions) = (0, Vec::new(), Vec::new());
    for w in writers {
        let (r, a, v) = w.join().unwrap();
        resets += r;
        acked.extend(a);
        versions.push(v);
    }
    let acked_versions = versions.iter().filter(|(_, v)| v.acked.is_some()).count();
    println!(
        "storm: {resets} requests reset by the client, {} creates and deployment PATCHes \
         and {acked_versions} listener PATCHes acknowledged",
        acked.len()
    );
    assert!(resets > 100, "the storm reset only {resets} requests");
    assert!(
        !acked.is_empty() && acked_versions > 0,
        "too few writes were acknowledged during the storm"
    );
    wait_quiet(metrics, at_rest);
    // Each listener shows its last acknowledged PATCH (or a later one the client reset).
    for (lis, v) in &versions {
        let (_, got) = server.call("GET", &format!("/v2/listeners/{lis}"), None);
        assert!(
            v.allowed().contains(&got["version"]),
            "{lis}: version {} after an acknowledged {:?} (reset: {:?})",
            got["version"],
            v.acked,
            v.reset
        );
    }

    // Writes work at once, in every workspace; each writer's listener takes a last
    // version that must stick.
    let begun = Instant::now();
    let (_, other_ws_key) = support::other_workspace(&db);
    for (t, (lis, dep)) in owned.iter().enumerate() {
        let (status, body) = server.call(
            "PATCH",
            &format!("/v2/listeners/{lis}"),
            Some(json!({"version": format!("final-{t}")})),
        );
        assert_eq!(status, 200, "{body}");
        let (status, body) = server.call(
            "PATCH",
            &format!("/v2/deployments/{dep}"),
            Some(json!({"source_revision_config": {"image_uri": "docker.io/acme/agent:final"}})),
        );
        assert_eq!(status, 200, "{body}");
        let (status, body) = support::http(
            server.port,
            "POST",
            "/v2/listeners",
            &[
                ("X-Api-Key", &other_ws_key),
                ("Content-Type", "application/json"),
            ],
            &json!({
                "compute_type": "k8s",
                "compute_id": format!("other-{t}"),
                "compute_config": {"k8s_namespaces": ["a"]},
            })
            .to_string(),
        );
        assert_eq!(status, 201, "{body}");
    }
    // A wedged database would answer 503 above (after the 3 s acquire timeout); this
    // bound only catches writes that each crawl up to it (48 writes).
    let took = begun.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "48 writes after the storm took {took:?}: each waited on something the storm left"
    );

    // Every acknowledged write is stored, before and after a restart (nothing lived
    // only inside a transaction left open on one pooled connection).
    let key = server.key.clone();
    let check = |server: &Server| {
        for (path, expected) in &acked {
            let (status, got) = server.call("GET", path, None);
            assert_eq!(status, 200, "{path}: {got}");
            if path.contains("/revisions/") {
                assert_eq!(
                    got["source_revision_config"]["image_uri"], expected["image_uri"],
                    "{path}"
                );
            } else {
                assert_eq!(&got, expected, "{path}");
            }
        }
        for (t, (lis, _)) in owned.iter().enumerate() {
            let (_, got) = server.call("GET", &format!("/v2/listeners/{lis}"), None);
            assert_eq!(got["version"], json!(format!("final-{t}")), "{lis}");
        }
    };
    check(&server);
    drop(server);
    check(&Server::start_with(&db, &[], &key));
}

#[test]
fn disconnect_storm_sqlite() {
    storm(sqlite_db());
}

#[test]
fn disconnect_storm_postgres() {
    storm(postgres_db());
}
