//! The data-plane protocol against the real binary, on both backends: listener keys and
//! who may call what, the desired state and its long-poll, claims and leases, status
//! reports and the state machine, deletions, log lines and the CLI's log routes, and
//! what the public API shows of all of it.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::agent::{listener_with_key, Agent};
use support::{admin, http, other_workspace, postgres_db, sqlite_db, Db, Server};

const IMAGE: &str = "docker.io/acme/agent@sha256:\
    aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// Creates an image deployment on `listener`: `(deployment id, revision id)`.
fn deploy(server: &Server, name: &str, listener: &str, image: &str) -> (String, String) {
    let (status, d) = server.call(
        "POST",
        "/v2/deployments",
        Some(json!({
            "name": name, "source": "external_docker",
            "source_config": {"listener_id": listener, "resource_spec": {"min_scale": 1}},
            "source_revision_config": {"image_uri": image},
            "secrets": [{"name": "OPENAI_API_KEY", "value": "sk-test"}],
        })),
    );
    assert_eq!(status, 201, "{d}");
    (
        d["id"].as_str().unwrap().to_owned(),
        d["latest_revision_id"].as_str().unwrap().to_owned(),
    )
}

fn get(server: &Server, path: &str) -> Value {
    let (status, body) = server.call("GET", path, None);
    assert_eq!(status, 200, "{path}: {body}");
    body
}

fn detail(text: &str) -> Value {
    json!({ "detail": text })
}

/// Who may call what: only a listener's own key reaches its data-plane routes, and a
/// listener key reaches nothing else.
fn credentials(db: &Db) {
    let server = Server::start(db);
    let (l1, k1) = listener_with_key(&server, db, "one");
    let (l2, _) = listener_with_key(&server, db, "two");
    let desired = |l: &str| format!("/dataplane/v1/listeners/{l}/desired?protocol_version=1");
    let with = |key: &str, method: &str, path: &str, body: &str| {
        let (status, text) = http(
            server.port,
            method,
            path,
            &[("X-Api-Key", key), ("Content-Type", "application/json")],
            body,
        );
        (
            status,
            serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
        )
    };
    let needs = detail(
        "Data-plane routes need a listener key: create one with `hostplane admin api-key create \
         --listener <listener id>`.",
    );
    // A workspace key and an organization key cannot act as a cluster.
    assert_eq!(
        with(&server.key, "GET", &desired(&l1), ""),
        (403, needs.clone())
    );
    let org = admin(db, &["org", "list"])[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let org_key = admin(db, &["api-key", "create", "--org", &org]);
    let org_key = org_key["key"].as_str().unwrap();
    assert_eq!(with(org_key, "GET", &desired(&l1), ""), (403, needs));
    // A listener key reaches its own listener only...
    assert_eq!(with(&k1, "GET", &desired(&l1), "").0, 200);
    let other = detail(&format!(
        "This listener key does not have access to listener ID '{l2}'."
    ));
    assert_eq!(with(&k1, "GET", &desired(&l2), ""), (403, other));
    // ...and no public route.
    let only = detail(
        "This API key belongs to a listener: it can only call that listener's data-plane routes.",
    );
    for (method, path) in [
        ("GET", "/v2/listeners".to_owned()),
        ("GET", format!("/v2/listeners/{l1}")),
        ("DELETE", format!("/v2/listeners/{l1}")),
        ("GET", "/v2/deployments".to_owned()),
        ("POST", "/v2/deployments".to_owned()),
        ("GET", "/api-host/v2/deployments".to_owned()),
    ] {
        let body = if method == "POST" { "{}" } else { "" };
        assert_eq!(
            with(&k1, method, &path, body),
            (403, only.clone()),
            "{method} {path}"
        );
    }
    // No key, a wrong key.
    assert_eq!(
        with("", "GET", &desired(&l1), ""),
        (401, detail("Not authenticated"))
    );
    assert_eq!(
        with("hp_nope", "GET", &desired(&l1), ""),
        (401, detail("Invalid API key"))
    );
    // Deleting the listener revokes its keys.
    let (status, _) = server.call("DELETE", &format!("/v2/listeners/{l1}"), None);
    assert_eq!(status, 204);
    assert_eq!(
        with(&k1, "GET", &desired(&l1), ""),
        (401, detail("Invalid API key"))
    );
    let keys = admin(db, &["api-key", "list"]);
    let k1_row = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["listener_id"] == l1.as_str());
    assert!(k1_row.is_some_and(|k| !k["revoked_at"].is_null()), "{keys}");
}

/// The protocol version is checked on every call, naming both versions.
fn versions(agent: &Agent) {
    let newer = detail(
        "The agent speaks data-plane protocol version 2, but this server speaks version 1: \
         upgrade the server, or run an agent that speaks version 1.",
    );
    let beat = json!({"protocol_version": 2, "agent_id": "a", "agent_version": "9", "mode": "x"});
    assert_eq!(
        agent.call("POST", "/heartbeat", Some(beat)),
        (400, newer.clone())
    );
    assert_eq!(
        agent.call("GET", "/desired?protocol_version=2", None),
        (400, newer)
    );
    assert_eq!(
        agent.call("GET", "/desired", None),
        (
            422,
            detail("The query needs an integer protocol_version (this server speaks version 1).")
        )
    );
    assert_eq!(
        agent.call("POST", "/heartbeat", Some(json!({"agent_id": "a"}))),
        (
            422,
            detail("The body needs an integer protocol_version (this server speaks version 1).")
        )
    );
}

/// A deployment from create to delete, as an agent and as the public API see it.
fn lifecycle(db: &Db) {
    let server = Server::start_with(
        db,
        &["--dataplane-lease-secs", "30"],
        &format!("hp_test_{}", uuid::Uuid::new_v4().simple()),
    );
    let (l, key) = listener_with_key(&server, db, "main");
    let a = Agent::new(server.port, &l, &key, "agent-a");
    let b = Agent::new(server.port, &l, &key, "agent-b");
    versions(&a);

    // Empty at first; the heartbeat sets the listener's public version.
    let state = a.desired(-1, 0);
    assert_eq!(
        state,
        json!({"protocol_version": 1, "listener_id": l, "generation": 0,
               "namespaces": ["ns"], "deployments": []})
    );
    let (status, beat) = a.heartbeat(json!([]));
    assert_eq!(status, 200);
    assert_eq!(
        beat,
        json!({"protocol_version": 1, "generation": 0, "heartbeat_interval_seconds": 10,
               "lease_seconds": 30})
    );
    assert_eq!(
        get(&server, &format!("/v2/listeners/{l}"))["version"],
        "test-agent/1.0"
    );

    // A long-poll with nothing new waits, then answers with the same generation.
    let started = Instant::now();
    let same = a.desired(0, 1);
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(same["generation"], 0);

    // A create wakes a waiting poll at once.
    let poll = {
        let a = a.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            (a.desired(0, 30), t.elapsed())
        })
    };
    server.wait_for_polls(1);
    let (dep, rev) = deploy(&server, "svc", &l, IMAGE);
    let (state, waited) = poll.join().unwrap();
    assert!(
        waited < Duration::from_secs(10),
        "the poll answered after {waited:?}: the create did not wake it (it waits 30 s)"
    );
    assert_eq!(state["generation"], 1);
    let created_at = get(&server, &format!("/v2/deployments/{dep}/revisions/{rev}"))["created_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let created_at = chrono::DateTime::parse_from_rfc3339(&created_at).unwrap();
    let mut wanted = json!({
        "id": dep, "name": "svc", "namespace": "ns", "deployment_type": null,
        "status": "AWAITING_DATABASE", "deleting": false, "active_revision_id": null,
        "revision": {"id": rev, "status": "AWAITING_DEPLOY", "image": IMAGE, "build": null,
                     "lease_holder": null,
                     "created_at": created_at.with_timezone(&chrono::Utc)},
        "resource_spec": {"min_scale": 1}, "secret_references": null,
        "env": [{"name": "OPENAI_API_KEY", "value": "sk-test"}],
    });
    let got = &state["deployments"][0];
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(got["revision"]["created_at"].as_str().unwrap())
            .unwrap(),
        created_at
    );
    wanted["revision"]["created_at"] = got["revision"]["created_at"].clone();
    // The resource spec as the API normalized it (every field, unset ones null).
    let spec = &get(&server, &format!("/v2/deployments/{dep}"))["source_config"]["resource_spec"];
    assert_eq!(spec["min_scale"], 1);
    wanted["resource_spec"] = spec.clone();
    assert_eq!(got, &wanted);

    // One claim wins; the holder may claim again (renew); the other gets 409.
    let (status, claimed) = a.claim(&rev);
    assert_eq!(
        (status, claimed["status"].as_str()),
        (200, Some("DEPLOYING"))
    );
    assert_eq!(a.claim(&rev).0, 200);
    let (status, held) = b.claim(&rev);
    assert_eq!(status, 409);
    let held = held["detail"].as_str().unwrap().to_owned();
    assert!(
        held.starts_with(&format!(
            "Revision {rev} is DEPLOYING under a claim another agent holds until "
        )),
        "{held}"
    );
    let public = get(&server, &format!("/v2/deployments/{dep}/revisions/{rev}"));
    assert_eq!(public["status"], "DEPLOYING");

    // Reports: only the holder, only allowed moves, the same report twice is fine.
    assert_eq!(
        b.report(&rev, "DEPLOYED", json!({})),
        (
            409,
            detail(&format!(
                "Revision {rev} is DEPLOYING, and this agent does not hold its claim."
            ))
        )
    );
    assert_eq!(
        a.report(&rev, "BUILT", json!({"image": "x"})),
        (
            409,
            detail(&format!(
                "Revision {rev} cannot go from DEPLOYING to BUILT."
            ))
        )
    );
    assert_eq!(
        a.report(&rev, "BUILT", json!({})),
        (422, detail("A BUILT report needs the image it built."))
    );
    let done = json!({"protocol_version": 1, "revision_id": rev, "status": "DEPLOYED"});
    assert_eq!(a.report(&rev, "DEPLOYED", json!({})), (200, done.clone()));
    assert_eq!(a.report(&rev, "DEPLOYED", json!({})), (200, done));
    assert_eq!(
        a.report(&rev, "DEPLOY_FAILED", json!({})),
        (
            409,
            detail(&format!(
                "Revision {rev} cannot go from DEPLOYED to DEPLOY_FAILED."
            ))
        )
    );
    assert_eq!(
        a.claim(&rev),
        (
            409,
            detail(&format!(
                "Revision {rev} is DEPLOYED; only a revision in AWAITING_DEPLOY or \
                 AWAITING_BUILD can be claimed."
            ))
        )
    );
    let d = get(&server, &format!("/v2/deployments/{dep}"));
    assert_eq!(
        (d["status"].as_str(), d["active_revision_id"].as_str()),
        (Some("READY"), Some(rev.as_str()))
    );

    // A new revision that fails: the desired state falls back to the active one.
    let (status, patched) = server.call(
        "PATCH",
        &format!("/v2/deployments/{dep}"),
        Some(json!({"source_revision_config": {"image_uri": "docker.io/acme/fail:1"}})),
    );
    assert_eq!(status, 200, "{patched}");
    let rev2 = patched["latest_revision_id"].as_str().unwrap().to_owned();
    let state = a.desired(-1, 0);
    assert_eq!(state["deployments"][0]["revision"]["id"], rev2.as_str());
    assert_eq!(a.claim(&rev2).0, 200);
    let failed = a.report(
        &rev2,
        "DEPLOY_FAILED",
        json!({"reason": "ImagePullBackOff", "message": "manifest unknown"}),
    );
    assert_eq!(failed.0, 200);
    let state = a.desired(-1, 0);
    assert_eq!(state["deployments"][0]["revision"]["id"], rev.as_str());
    assert_eq!(state["deployments"][0]["active_revision_id"], rev.as_str());
    let revs = get(&server, &format!("/v2/deployments/{dep}/revisions"));
    let statuses: Vec<&str> = revs["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["DEPLOY_FAILED", "DEPLOYED"]);
    assert_eq!(
        get(&server, &format!("/v2/deployments/{dep}"))["status"],
        "READY"
    );

    logs(&server, &a, &dep, &rev, &rev2);

    // Delete: it waits for the agent, which sees `deleting` and confirms.
    let (status, _) = server.call("DELETE", &format!("/v2/deployments/{dep}"), None);
    assert_eq!(status, 204);
    assert_eq!(
        get(&server, &format!("/v2/deployments/{dep}"))["status"],
        "AWAITING_DELETE"
    );
    let state = a.desired(-1, 0);
    assert_eq!(state["deployments"][0]["deleting"], true);
    assert_eq!(
        a.claim(&rev2).0,
        409,
        "a revision of a deployment being deleted cannot be claimed"
    );
    assert_eq!(
        a.deleted(&dep),
        (
            200,
            json!({"protocol_version": 1, "deployment_id": dep, "deleted": true})
        )
    );
    let (status, _) = server.call("GET", &format!("/v2/deployments/{dep}"), None);
    assert_eq!(status, 404);
    assert_eq!(
        a.deleted(&dep),
        (404, detail(&format!("Deployment ID {dep} not found.")))
    );
    assert_eq!(a.desired(-1, 0)["deployments"], json!([]));

    // A deployment that is not being deleted cannot be confirmed gone.
    let (dep3, _) = deploy(&server, "other", &l, IMAGE);
    assert_eq!(
        a.deleted(&dep3),
        (
            409,
            detail(&format!(
                "Deployment {dep3} is AWAITING_DATABASE, not AWAITING_DELETE: only a deployment \
                 being deleted can be confirmed gone."
            ))
        )
    );
}

/// Log lines an agent sends, read through the CLI's routes with every filter.
fn logs(server: &Server, a: &Agent, dep: &str, rev: &str, rev2: &str) {
    let line = |rev: &str, kind: &str, ts: &str, level: &str, message: &str| {
        json!({"deployment_id": dep, "revision_id": rev, "kind": kind, "timestamp": ts,
               "level": level, "message": message})
    };
    let batch = json!([
        line(
            rev,
            "deploy",
            "2026-01-01T00:00:01Z",
            "info",
            "server starting"
        ),
        line(
            rev,
            "deploy",
            "2026-01-01T00:00:02Z",
            "WARNING",
            "slow start"
        ),
        line(
            rev2,
            "deploy",
            "2026-01-01T00:00:03Z",
            "ERROR",
            "crash loop"
        ),
        line(rev2, "build", "2026-01-01T00:00:04Z", "INFO", "Step 1/3"),
    ]);
    assert_eq!(
        a.logs(batch),
        (200, json!({"protocol_version": 1, "accepted": 4}))
    );
    let read = |path: &str, body: Value| {
        let (status, page) = server.call("POST", path, Some(body));
        assert_eq!(status, 200, "{page}");
        page
    };
    let messages = |page: &Value| -> Vec<String> {
        page["logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["message"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = format!("/v1/projects/{dep}/deploy_logs");
    // The agent's lines and one per report, newest first by default.
    let page = read(&all, json!({"limit": 100, "order": "asc"}));
    let got = messages(&page);
    assert_eq!(
        got[..3],
        ["server starting", "slow start", "crash loop"],
        "{page}"
    );
    assert_eq!(
        got[3..],
        [
            format!("Revision {rev} deployed"),
            format!("Revision {rev2} failed to deploy: ImagePullBackOff: manifest unknown"),
        ]
    );
    let first = &page["logs"][0];
    assert_eq!(first["timestamp"], 1_767_225_601_000_i64);
    assert_eq!(first["level"], "INFO");
    assert!(first["id"].is_string());
    // Paging with the cursor: no line twice, none missed.
    let p1 = read(&all, json!({"limit": 2, "order": "asc"}));
    let p2 = read(
        &all,
        json!({"limit": 2, "order": "asc", "offset": p1["next_offset"]}),
    );
    let p3 = read(
        &all,
        json!({"limit": 2, "order": "asc", "offset": p2["next_offset"]}),
    );
    let p4 = read(
        &all,
        json!({"limit": 2, "order": "asc", "offset": p3["next_offset"]}),
    );
    let paged: Vec<String> = [&p1, &p2, &p3].iter().flat_map(|p| messages(p)).collect();
    assert_eq!(paged, got);
    assert_eq!(p4["logs"], json!([]));
    assert_eq!(p4["next_offset"], p3["next_offset"]);
    let newest = read(&all, json!({"limit": 1}));
    assert_eq!(messages(&newest), [got[4].clone()]);
    // Filters.
    assert_eq!(
        messages(&read(&all, json!({"level": "warning"}))),
        ["slow start"]
    );
    assert_eq!(
        messages(&read(&all, json!({"query": "crash"}))),
        ["crash loop"]
    );
    let window = json!({"start_time": "2026-01-01T00:00:02Z", "end_time": "2026-01-01T00:00:03Z",
                        "order": "asc"});
    assert_eq!(messages(&read(&all, window)), ["slow start", "crash loop"]);
    let by_rev = format!("/v1/projects/{dep}/revisions/{rev2}/deploy_logs");
    assert_eq!(
        messages(&read(&by_rev, json!({"order": "asc"})))[0],
        "crash loop"
    );
    let build = format!("/v1/projects/{dep}/revisions/{rev2}/build_logs");
    assert_eq!(messages(&read(&build, json!({}))), ["Step 1/3"]);
    // Validation and missing things.
    let (status, body) = server.call("POST", &all, Some(json!({"limit": 0, "order": "up"})));
    assert_eq!(status, 422);
    assert_eq!(
        body,
        json!({"detail": [
            {"type": "greater_than_equal", "loc": ["body", "limit"],
             "msg": "Input should be greater than or equal to 1", "input": 0, "ctx": {"ge": 1}},
            {"type": "literal_error", "loc": ["body", "order"],
             "msg": "Input should be 'asc' or 'desc'", "input": "up",
             "ctx": {"expected": "'asc' or 'desc'"}},
        ]})
    );
    let missing = uuid::Uuid::new_v4();
    assert_eq!(
        server.call(
            "POST",
            &format!("/v1/projects/{missing}/deploy_logs"),
            Some(json!({}))
        ),
        (404, detail(&format!("Deployment ID {missing} not found.")))
    );
    assert_eq!(
        server.call(
            "POST",
            &format!("/v1/projects/{dep}/revisions/{missing}/build_logs"),
            Some(json!({}))
        ),
        (404, detail(&format!("Revision ID {missing} not found.")))
    );
    // A line for a deployment the listener does not run is refused, and nothing of the
    // batch is stored.
    let stray = json!([
        line(rev, "deploy", "2026-01-01T00:00:05Z", "INFO", "kept?"),
        {"deployment_id": missing, "revision_id": rev, "kind": "deploy",
         "timestamp": "2026-01-01T00:00:05Z", "level": "INFO", "message": "x"},
    ]);
    assert_eq!(
        a.logs(stray),
        (
            404,
            detail("A line names a deployment or revision this listener does not run.")
        )
    );
    assert_eq!(
        messages(&read(&all, json!({"query": "kept?"}))),
        Vec::<String>::new()
    );
    let too_many: Vec<Value> = (0..1001)
        .map(|i| {
            line(
                rev,
                "deploy",
                "2026-01-01T00:00:05Z",
                "INFO",
                &format!("{i}"),
            )
        })
        .collect();
    assert_eq!(
        a.logs(json!(too_many)),
        (
            422,
            detail("A batch holds at most 1000 lines; this one has 1001.")
        )
    );
}

/// A listener key of workspace A sees nothing of workspace B on any data-plane route.
fn tenancy(db: &Db) {
    let server = Server::start(db);
    let (la, ka) = listener_with_key(&server, db, "a");
    let (lb, _) = listener_with_key(&server, db, "b");
    let (_, key_b) = other_workspace(db);
    // A listener and a deployment of workspace B (and one of A's other listener).
    let (status, lb2) = http(
        server.port,
        "POST",
        "/v2/listeners",
        &[("X-Api-Key", &key_b), ("Content-Type", "application/json")],
        &json!({"compute_type": "k8s", "compute_id": "b",
                "compute_config": {"k8s_namespaces": ["ns"]}})
        .to_string(),
    );
    assert_eq!(status, 201, "{lb2}");
    let lb2: Value = serde_json::from_str(&lb2).unwrap();
    let lb2 = lb2["id"].as_str().unwrap();
    let (status, d) = http(
        server.port,
        "POST",
        "/v2/deployments",
        &[("X-Api-Key", &key_b), ("Content-Type", "application/json")],
        &json!({"name": "secret-b", "source": "external_docker",
                "source_config": {"listener_id": lb2},
                "source_revision_config": {"image_uri": IMAGE},
                "secrets": [{"name": "B_SECRET", "value": "b-only"}]})
        .to_string(),
    );
    assert_eq!(status, 201, "{d}");
    let d: Value = serde_json::from_str(&d).unwrap();
    let (dep_b, rev_b) = (
        d["id"].as_str().unwrap().to_owned(),
        d["latest_revision_id"].as_str().unwrap().to_owned(),
    );
    let (dep_b2, rev_b2) = deploy(&server, "on-b", &lb, IMAGE);
    let a = Agent::new(server.port, &la, &ka, "a");
    // Another listener's routes: 403, whichever workspace it is in.
    for other in [lb.as_str(), lb2] {
        let as_other = Agent::new(server.port, other, &ka, "a");
        assert_eq!(as_other.heartbeat(json!([])).0, 403);
        assert_eq!(
            as_other.call("GET", "/desired?protocol_version=1", None).0,
            403
        );
        assert_eq!(as_other.claim(&rev_b).0, 403);
        assert_eq!(as_other.report(&rev_b, "DEPLOYED", json!({})).0, 403);
        assert_eq!(as_other.deleted(&dep_b).0, 403);
        assert_eq!(as_other.logs(json!([])).0, 403);
        assert_eq!(as_other.source(&rev_b).0, 403);
    }
    // Its own routes with their ids: not found, and nothing changes.
    let state = a.desired(-1, 0);
    assert_eq!(state["deployments"], json!([]));
    assert!(!state.to_string().contains("b-only"));
    for (dep, rev) in [(&dep_b, &rev_b), (&dep_b2, &rev_b2)] {
        let gone = detail(&format!("Revision ID {rev} not found."));
        assert_eq!(a.claim(rev), (404, gone.clone()));
        assert_eq!(a.report(rev, "DEPLOYED", json!({})), (404, gone.clone()));
        let (status, body) = a.source(rev);
        assert_eq!(
            (status, serde_json::from_slice::<Value>(&body).unwrap()),
            (404, gone)
        );
        assert_eq!(
            a.deleted(dep),
            (404, detail(&format!("Deployment ID {dep} not found.")))
        );
        let line = json!([{"deployment_id": dep, "revision_id": rev, "kind": "deploy",
                           "timestamp": "2026-01-01T00:00:00Z", "level": "INFO", "message": "x"}]);
        assert_eq!(a.logs(line).0, 404);
    }
    let (_, revs) = http(
        server.port,
        "GET",
        &format!("/v2/deployments/{dep_b}/revisions/{rev_b}"),
        &[("X-Api-Key", &key_b)],
        "",
    );
    assert!(revs.contains("\"AWAITING_DEPLOY\""), "{revs}");
}

/// Two agent replicas race for one revision: exactly one wins (`servers` may be
/// replicas sharing one database).
fn claim_race(servers: &[&Server], listener: &str, key: &str, revisions: &[String]) {
    for rev in revisions {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let agent = Agent::new(
                    servers[i % servers.len()].port,
                    listener,
                    key,
                    &format!("r{i}"),
                );
                let (rev, barrier) = (rev.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    agent.claim(&rev).0
                })
            })
            .collect();
        let codes: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(codes.iter().filter(|&&c| c == 200).count(), 1, "{codes:?}");
        assert_eq!(codes.iter().filter(|&&c| c == 409).count(), 3, "{codes:?}");
    }
}

/// Claims race on one server; an expired lease goes back and another replica takes it.
fn claims_and_leases(db: &Db) {
    let server = Server::start_with(
        db,
        &["--dataplane-lease-secs", "2"],
        &format!("hp_test_{}", uuid::Uuid::new_v4().simple()),
    );
    let (l, key) = listener_with_key(&server, db, "race");
    let revs: Vec<String> = (0..5)
        .map(|i| deploy(&server, &format!("race-{i}"), &l, IMAGE).1)
        .collect();
    claim_race(&[&server], &l, &key, &revs);

    let (dep, rev) = deploy(&server, "lease", &l, IMAGE);
    let a = Agent::new(server.port, &l, &key, "a");
    let b = Agent::new(server.port, &l, &key, "b");
    assert_eq!(a.claim(&rev).0, 200);
    // Heartbeats keep the lease past its length...
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(800));
        assert_eq!(a.heartbeat(json!([])).0, 200);
    }
    assert_eq!(b.claim(&rev).0, 409);
    // ...without them it runs out, the revision goes back, and b takes it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&server, &format!("/v2/deployments/{dep}/revisions/{rev}"));
        if r["status"] == "AWAITING_DEPLOY" {
            break;
        }
        assert!(Instant::now() < deadline, "the lease never expired: {r}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(b.claim(&rev).0, 200);
    assert_eq!(a.report(&rev, "DEPLOYED", json!({})).0, 409);
    assert_eq!(b.report(&rev, "DEPLOYED", json!({})).0, 200);
}

/// `kill -9` while reports are in flight: every report that was answered 200 is there
/// after a restart.
fn crash_between_report_and_answer(db: &Db) {
    let key = format!("hp_test_{}", uuid::Uuid::new_v4().simple());
    let mut server = Server::start_with(db, &[], &key);
    let (l, lkey) = listener_with_key(&server, db, "crash");
    let a = Agent::new(server.port, &l, &lkey, "a");
    let revs: Vec<String> = (0..200)
        .map(|i| {
            let rev = deploy(&server, &format!("c-{i}"), &l, IMAGE).1;
            assert_eq!(a.claim(&rev).0, 200);
            rev
        })
        .collect();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reporter = {
        let (a, revs, answered) = (a.clone(), revs.clone(), answered.clone());
        std::thread::spawn(move || {
            let mut acknowledged = Vec::new();
            for rev in revs {
                let body = json!({"protocol_version": 1, "agent_id": "a", "status": "DEPLOYED"});
                let answer = support::try_http(
                    a.port,
                    "POST",
                    &format!(
                        "/dataplane/v1/listeners/{}/revisions/{rev}/status",
                        a.listener
                    ),
                    &[("X-Api-Key", &a.key), ("Content-Type", "application/json")],
                    &body.to_string(),
                );
                if let Ok((200, _)) = answer {
                    acknowledged.push(rev);
                    answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
            acknowledged
        })
    };
    while answered.load(std::sync::atomic::Ordering::SeqCst) < 10 {
        std::thread::sleep(Duration::from_millis(1));
    }
    server.crash();
    let acknowledged = reporter.join().unwrap();
    assert!(
        !acknowledged.is_empty(),
        "no report was answered before the crash"
    );
    assert!(
        acknowledged.len() < revs.len(),
        "the crash came after every report"
    );
    let server = Server::start_with(db, &[], &key);
    let mut all = Vec::new();
    for offset in [0, 100] {
        let (_, page) = server.call(
            "GET",
            &format!("/v2/deployments?limit=100&offset={offset}"),
            None,
        );
        all.extend(page["resources"].as_array().unwrap().clone());
    }
    for rev in &acknowledged {
        let dep = all
            .iter()
            .find(|d| d["latest_revision_id"] == rev.as_str())
            .unwrap()
            .clone();
        let r = get(
            &server,
            &format!(
                "/v2/deployments/{}/revisions/{rev}",
                dep["id"].as_str().unwrap()
            ),
        );
        assert_eq!(r["status"], "DEPLOYED", "an acknowledged report was lost");
        assert_eq!(dep["status"], "READY");
    }
}

#[test]
fn credentials_sqlite() {
    credentials(&sqlite_db());
}

#[test]
fn credentials_postgres() {
    credentials(&postgres_db());
}

#[test]
fn lifecycle_sqlite() {
    lifecycle(&sqlite_db());
}

#[test]
fn lifecycle_postgres() {
    lifecycle(&postgres_db());
}

#[test]
fn tenancy_sqlite() {
    tenancy(&sqlite_db());
}

#[test]
fn tenancy_postgres() {
    tenancy(&postgres_db());
}

#[test]
fn claims_and_leases_sqlite() {
    claims_and_leases(&sqlite_db());
}

#[test]
fn claims_and_leases_postgres() {
    claims_and_leases(&postgres_db());
}

/// Two server replicas on one PostgreSQL: claims race across them, and a change made
/// on one wakes a long-poll held by the other.
#[test]
fn replicas_postgres() {
    let db = postgres_db();
    let key = format!("hp_test_{}", uuid::Uuid::new_v4().simple());
    let one = Server::start_with(&db, &[], &key);
    let two = Server::start_with(&db, &[], &key);
    let (l, lkey) = listener_with_key(&one, &db, "replicas");
    let revs: Vec<String> = (0..5)
        .map(|i| deploy(&one, &format!("rep-{i}"), &l, IMAGE).1)
        .collect();
    claim_race(&[&one, &two], &l, &lkey, &revs);
    let on_two = Agent::new(two.port, &l, &lkey, "poller");
    let generation = on_two.desired(-1, 0)["generation"].as_i64().unwrap();
    let poll = std::thread::spawn(move || {
        let t = Instant::now();
        (on_two.desired(generation, 30), t.elapsed())
    });
    two.wait_for_polls(1);
    deploy(&one, "wake-up", &l, IMAGE);
    let (state, waited) = poll.join().unwrap();
    assert!(
        waited < Duration::from_secs(10),
        "the poll answered after {waited:?}: the change on the other replica did not wake it \
         (it waits 30 s)"
    );
    assert_eq!(state["generation"], generation + 1);
}

#[test]
fn crash_sqlite() {
    crash_between_report_and_answer(&sqlite_db());
}

#[test]
fn crash_postgres() {
    crash_between_report_and_answer(&postgres_db());
}

/// Log retention keeps the newest lines per deployment and kind; SIGTERM answers held
/// long-polls at once instead of waiting for them.
fn retention_and_shutdown(db: &Db) {
    let mut server = Server::start_with(
        db,
        &["--log-retention-lines", "5"],
        &format!("hp_test_{}", uuid::Uuid::new_v4().simple()),
    );
    let (l, key) = listener_with_key(&server, db, "keep");
    let (dep, rev) = deploy(&server, "keep", &l, IMAGE);
    let a = Agent::new(server.port, &l, &key, "a");
    for batch in 0..2 {
        let lines: Vec<Value> = (0..4)
            .map(|i| {
                json!({"deployment_id": dep, "revision_id": rev, "kind": "deploy",
                       "timestamp": format!("2026-01-01T00:00:0{}Z", batch * 4 + i),
                       "level": "INFO", "message": format!("line {}", batch * 4 + i)})
            })
            .collect();
        assert_eq!(a.logs(json!(lines)).0, 200);
    }
    let build = json!([{"deployment_id": dep, "revision_id": rev, "kind": "build",
                        "timestamp": "2026-01-01T00:00:00Z", "level": "INFO", "message": "b"}]);
    assert_eq!(a.logs(build).0, 200);
    let (status, page) = server.call(
        "POST",
        &format!("/v1/projects/{dep}/deploy_logs"),
        Some(json!({"order": "asc"})),
    );
    assert_eq!(status, 200);
    let kept: Vec<&str> = page["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert_eq!(kept, ["line 3", "line 4", "line 5", "line 6", "line 7"]);
    let (_, page) = server.call(
        "POST",
        &format!("/v1/projects/{dep}/revisions/{rev}/build_logs"),
        Some(json!({})),
    );
    assert_eq!(
        page["logs"][0]["message"], "b",
        "each kind keeps its own lines"
    );

    let generation = a.desired(-1, 0)["generation"].as_i64().unwrap();
    let poll = std::thread::spawn(move || {
        let t = Instant::now();
        (a.desired(generation, 60), t.elapsed())
    });
    server.wait_for_polls(1);
    let stopped = Instant::now();
    assert_eq!(server.stop(), Some(0));
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopped.elapsed()
    );
    let (state, waited) = poll.join().unwrap();
    assert_eq!(state["generation"], generation);
    assert!(waited < Duration::from_secs(10), "{waited:?}");
}

#[test]
fn retention_and_shutdown_sqlite() {
    retention_and_shutdown(&sqlite_db());
}

#[test]
fn retention_and_shutdown_postgres() {
    retention_and_shutdown(&postgres_db());
}
