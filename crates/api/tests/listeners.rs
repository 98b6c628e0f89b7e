//! Listeners (v2) through the real router, on both backends: exact bodies, tenancy,
//! races and paging.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Backend, TestApp};
use serde_json::{json, Value};
use std::collections::HashSet;
use store::{KeyScope, Plan};

fn is_datetime(v: &Value) -> bool {
    let re = regex::Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?Z$").unwrap();
    v.as_str().is_some_and(|s| re.is_match(s))
}

async fn create(app: &TestApp, key: &str, compute_id: &str) -> Value {
    let body = json!({
        "compute_type": "k8s",
        "compute_id": compute_id,
        "compute_config": {"k8s_namespaces": ["agents"]},
    });
    let res = app.call_as(key, "POST", "/v2/listeners", Some(body)).await;
    assert_eq!(res.status, 201, "{}", String::from_utf8_lossy(&res.body));
    res.json()
}

async fn crud_exact_bodies(backend: Backend) {
    let app = TestApp::new(backend).await;
    let res = app
        .call(
            "POST",
            "/v2/listeners",
            Some(json!({
                "compute_type": "k8s",
                "compute_id": "prod-eu",
                "version": "0.4.1",
                "compute_config": {"k8s_namespaces": ["agents", "tools"]},
            })),
        )
        .await;
    assert_eq!(res.status, 201);
    let created = res.json();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok() && id == id.to_lowercase());
    assert!(is_datetime(&created["created_at"]));
    assert_eq!(created["created_at"], created["updated_at"]);
    assert_eq!(
        created,
        json!({"version": "0.4.1", "compute_type": "k8s", "compute_id": "prod-eu",
               "compute_config": {"k8s_namespaces": ["agents", "tools"]},
               "id": id, "created_at": created["created_at"], "updated_at": created["updated_at"]})
    );
    // Field order is the reference's.
    let text = String::from_utf8(res.body.clone()).unwrap();
    assert!(
        text.starts_with(
            r#"{"version":"0.4.1","compute_type":"k8s","compute_id":"prod-eu","compute_config":"#
        ),
        "{text}"
    );

    let got = app.call("GET", &format!("/v2/listeners/{id}"), None).await;
    assert_eq!((got.status.as_u16(), got.json()), (200, created.clone()));
    let via_prefix = app
        .call("GET", &format!("/api-host/v2/listeners/{id}"), None)
        .await;
    assert_eq!(
        (via_prefix.status.as_u16(), via_prefix.json()),
        (200, created.clone())
    );

    let listed = app.call("GET", "/v2/listeners", None).await;
    assert_eq!(
        listed.json(),
        json!({"resources": [created.clone()], "offset": 1})
    );

    // Patch: version only; namespaces untouched; updated_at moves, created_at does not.
    let patched = app
        .call(
            "PATCH",
            &format!("/v2/listeners/{id}"),
            Some(json!({"version": "0.5.0"})),
        )
        .await;
    assert_eq!(patched.status, 200);
    let p = patched.json();
    assert_eq!(p["version"], "0.5.0");
    assert_eq!(
        p["compute_config"],
        json!({"k8s_namespaces": ["agents", "tools"]})
    );
    assert_eq!(p["created_at"], created["created_at"]);
    let time =
        |v: &serde_json::Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert!(time(&p["updated_at"]) > time(&created["updated_at"]));

    // compute_config replaces the stored one whole; `{}` clears the namespaces.
    let p = app
        .call(
            "PATCH",
            &format!("/v2/listeners/{id}"),
            Some(json!({"compute_config": {"k8s_namespaces": ["b"]}})),
        )
        .await
        .json();
    assert_eq!(p["compute_config"], json!({"k8s_namespaces": ["b"]}));
    assert_eq!(p["version"], "0.5.0");
    let p = app
        .call(
            "PATCH",
            &format!("/v2/listeners/{id}"),
            Some(json!({"compute_config": {}})),
        )
        .await
        .json();
    assert_eq!(p["compute_config"], json!({"k8s_namespaces": null}));

    // A patch that fails validation changes nothing.
    let bad = app
        .call(
            "PATCH",
            &format!("/v2/listeners/{id}"),
            Some(json!({"version": "9", "compute_config": {"k8s_namespaces": ["ok", "ok"]}})),
        )
        .await;
    assert_eq!(bad.status, 422);
    assert_eq!(
        bad.json(),
        json!({"detail": [{
            "type": "value_error",
            "loc": ["body", "compute_config", "k8s_namespaces"],
            "msg": "Value error, duplicate namespace 'ok'",
            "input": ["ok", "ok"],
            "ctx": {"error": {}},
        }]})
    );
    assert_eq!(
        app.call("GET", &format!("/v2/listeners/{id}"), None)
            .await
            .json()["version"],
        "0.5.0"
    );

    let del = app
        .call("DELETE", &format!("/v2/listeners/{id}"), None)
        .await;
    assert_eq!(del.status, 204);
    assert!(del.body.is_empty());
    let gone = app.call("GET", &format!("/v2/listeners/{id}"), None).await;
    assert_eq!(
        (gone.status.as_u16(), gone.json()),
        (
            404,
            json!({"detail": format!("Listener ID {id} not found.")})
        )
    );
    let again = app
        .call("DELETE", &format!("/v2/listeners/{id}"), None)
        .await;
    assert_eq!(again.status, 404);
    // The compute_id can be used again once its listener is gone.
    create(&app, app.key.as_str(), "prod-eu").await;
}

async fn tenancy_matrix(backend: Backend) {
    let app = TestApp::new(backend).await;
    let mine = create(&app, &app.key, "cluster-a").await;
    let id = mine["id"].as_str().unwrap();
    let not_found = json!({"detail": format!("Listener ID {id} not found.")});
    let item = format!("/v2/listeners/{id}");
    let patch = Some(json!({"version": "x"}));

    // A key of another organization's workspace: the listener does not exist for it.
    let (other_ws, other_key) = app.other_workspace(Plan::Enterprise).await;
    for (method, body) in [("GET", None), ("PATCH", patch.clone()), ("DELETE", None)] {
        let res = app.call_as(&other_key, method, &item, body).await;
        assert_eq!(
            (res.status.as_u16(), res.json()),
            (404, not_found.clone()),
            "{method}"
        );
    }
    let list = app.call_as(&other_key, "GET", "/v2/listeners", None).await;
    assert_eq!(list.json(), json!({"resources": [], "offset": 0}));
    // compute_id is unique per workspace only.
    create(&app, &other_key, "cluster-a").await;
    // And the other workspace's writes did not touch ours.
    assert_eq!(app.call("GET", &item, None).await.json(), mine);

    // A sibling workspace of the same organization is just as separate.
    let (_, sibling_key) = app.sibling_workspace().await;
    assert_eq!(
        app.call_as(&sibling_key, "GET", &item, None).await.status,
        404
    );

    // Workspace keys cannot name another workspace.
    let res = app
        .send(
            "GET",
            "/v2/listeners",
            &[
                ("x-api-key", &app.key),
                ("x-tenant-id", &other_ws.to_string()),
            ],
            None,
        )
        .await;
    assert_eq!(res.status, 403);
    assert_eq!(
        res.json(),
        json!({"detail": format!("API key does not have access to LangSmith workspace ID \
                                  '{other_ws}'.")})
    );
    // Naming its own workspace, in any header case, is fine.
    let own = app.workspace.to_string();
    let res = app
        .send(
            "GET",
            "/v2/listeners",
            &[("x-api-key", &app.key), ("X-TENANT-ID", &own)],
            None,
        )
        .await;
    assert_eq!(res.status, 200);

    // Organization keys must name a workspace of their organization.
    let org_key = app.key_for(KeyScope::Org { org_id: app.org }).await;
    let requires = json!({"detail": "requires workspace specification"});
    for (method, uri, body) in [
        ("GET", "/v2/listeners".to_owned(), None),
        (
            "POST",
            "/v2/listeners".to_owned(),
            Some(json!({"compute_type": "k8s", "compute_id": "z", "compute_config": {}})),
        ),
        ("GET", item.clone(), None),
        ("PATCH", item.clone(), patch.clone()),
        ("DELETE", item.clone(), None),
    ] {
        let res = app.call_as(&org_key, method, &uri, body).await;
        assert_eq!(
            (res.status.as_u16(), res.json()),
            (403, requires.clone()),
            "{method} {uri}"
        );
    }
    let res = app
        .send(
            "GET",
            &item,
            &[("x-api-key", &org_key), ("X-Tenant-ID", &own)],
            None,
        )
        .await;
    assert_eq!((res.status.as_u16(), res.json()), (200, mine.clone()));
    let res = app
        .send(
            "GET",
            &item,
            &[
                ("x-api-key", &org_key),
                ("x-tenant-id", &other_ws.to_string()),
            ],
            None,
        )
        .await;
    assert_eq!(res.status, 403);
    let res = app
        .send(
            "GET",
            &item,
            &[("x-api-key", &org_key), ("x-tenant-id", "not-a-uuid")],
            None,
        )
        .await;
    assert_eq!(res.status, 403);

    // Bearer works like X-Api-Key; other schemes are no credentials.
    let res = app
        .send(
            "GET",
            &item,
            &[("authorization", &format!("Bearer {}", app.key))],
            None,
        )
        .await;
    assert_eq!(res.status, 200);
    let res = app
        .send(
            "GET",
            &item,
            &[("authorization", &format!("Basic {}", app.key))],
            None,
        )
        .await;
    assert_eq!(
        (res.status.as_u16(), res.json()),
        (401, json!({"detail": "Not authenticated"}))
    );

    // Revoked keys stop working at once; no key at all is 401 too.
    let doomed = app
        .key_for(KeyScope::Workspace {
            org_id: app.org,
            workspace_id: app.workspace,
        })
        .await;
    assert_eq!(app.call_as(&doomed, "GET", &item, None).await.status, 200);
    let keys = app.store.list_api_keys().await.unwrap();
    let doomed_id = keys
        .iter()
        .find(|k| k.key_hash == store::hash_key(&doomed))
        .unwrap()
        .id;
    app.store.revoke_api_key(doomed_id).await.unwrap();
    for (method, uri, body) in [
        ("GET", "/v2/listeners", None),
        ("POST", "/v2/listeners", Some(json!({}))),
        ("GET", item.as_str(), None),
        ("PATCH", item.as_str(), patch.clone()),
        ("DELETE", item.as_str(), None),
    ] {
        let res = app.call_as(&doomed, method, uri, body.clone()).await;
        assert_eq!(
            (res.status.as_u16(), res.json()),
            (401, json!({"detail": "Invalid API key"})),
            "{method} {uri}"
        );
        let res = app
            .send(method, uri, &[], body.map(|b| b.to_string().into_bytes()))
            .await;
        assert_eq!(
            (res.status.as_u16(), res.json()),
            (401, json!({"detail": "Not authenticated"})),
            "{method} {uri}"
        );
    }
    // Nothing above changed the listener.
    assert_eq!(app.call("GET", &item, None).await.json(), mine);
}

async fn standard_plan_is_refused(backend: Backend) {
    let app = TestApp::new(backend).await;
    let (ws, key) = app.other_workspace(Plan::Standard).await;
    let text = json!({"detail": format!(
        "Listeners cannot be created for LangSmith workspace ID '{ws}'. Creating listeners is \
         only allowed for LangSmith organizations with self-hosted enterprise plans."
    )});
    let item = format!("/v2/listeners/{}", uuid::Uuid::new_v4());
    for (method, uri, body) in [
        ("GET", "/v2/listeners", None),
        (
            "POST",
            "/v2/listeners",
            Some(json!({"compute_type": "k8s", "compute_id": "a", "compute_config": {}})),
        ),
        ("GET", item.as_str(), None),
        ("PATCH", item.as_str(), Some(json!({}))),
        ("DELETE", item.as_str(), None),
    ] {
        let res = app.call_as(&key, method, uri, body).await;
        assert_eq!(
            (res.status.as_u16(), res.json()),
            (403, text.clone()),
            "{method} {uri}"
        );
    }
}

async fn concurrent_creates_one_wins(backend: Backend) {
    let app = std::sync::Arc::new(TestApp::new(backend).await);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                let body =
                    json!({"compute_type": "k8s", "compute_id": "race", "compute_config": {}});
                let res = app.call("POST", "/v2/listeners", Some(body)).await;
                (res.status.as_u16(), res.json())
            })
        })
        .collect();
    let mut created = 0;
    let conflict = json!({"detail": format!("Listener for LangSmith workspace ID '{}' and compute \
                                             ID 'race' already exists.", app.workspace)});
    for t in tasks {
        match t.await.unwrap() {
            (201, _) => created += 1,
            (409, body) => assert_eq!(body, conflict),
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(created, 1);
    assert_eq!(
        app.call("GET", "/v2/listeners", None).await.json()["resources"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// Group commit puts concurrent creates in one transaction: a conflict fails only its
/// own request. Half the racing creates reuse taken compute ids, half are fresh.
async fn conflicts_fail_alone_in_a_batch(backend: Backend) {
    let app = std::sync::Arc::new(TestApp::new(backend).await);
    let body = |id: String| json!({"compute_type": "k8s", "compute_id": id, "compute_config": {}});
    for i in 0..25 {
        let res = app
            .call("POST", "/v2/listeners", Some(body(format!("taken-{i}"))))
            .await;
        assert_eq!(res.status, 201);
    }
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let app = app.clone();
            let id = if i % 2 == 0 {
                format!("taken-{}", i / 4)
            } else {
                format!("fresh-{i}")
            };
            tokio::spawn(async move {
                let res = app
                    .call("POST", "/v2/listeners", Some(body(id.clone())))
                    .await;
                (id, res.status.as_u16(), res.json())
            })
        })
        .collect();
    let mut fresh = HashSet::new();
    for t in tasks {
        let (id, status, answer) = t.await.unwrap();
        if id.starts_with("taken") {
            let conflict = format!(
                "Listener for LangSmith workspace ID '{}' and compute ID '{id}' already exists.",
                app.workspace
            );
            assert_eq!((status, answer), (409, json!({ "detail": conflict })));
        } else {
            assert_eq!((status, &answer["compute_id"]), (201, &json!(id)));
            fresh.insert(id);
        }
    }
    assert_eq!(fresh.len(), 50);
    let mut stored = HashSet::new();
    for offset in [0, 100] {
        let page = app
            .call(
                "GET",
                &format!("/v2/listeners?limit=100&offset={offset}"),
                None,
            )
            .await
            .json();
        for l in page["resources"].as_array().unwrap() {
            assert!(stored.insert(l["compute_id"].as_str().unwrap().to_owned()));
        }
    }
    let expected: HashSet<String> = (0..25).map(|i| format!("taken-{i}")).chain(fresh).collect();
    assert_eq!(stored, expected);
}

async fn paging_returns_each_once(backend: Backend) {
    let app = std::sync::Arc::new(TestApp::new(backend).await);
    let mut order = Vec::new();
    for i in 0..250 {
        let body =
            json!({"compute_type": "k8s", "compute_id": format!("c-{i:03}"), "compute_config": {}});
        order.push(
            app.call("POST", "/v2/listeners", Some(body)).await.json()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let ids: HashSet<String> = order.iter().cloned().collect();
    // Others keep creating while we page.
    let writer = {
        let app = app.clone();
        tokio::spawn(async move {
            for i in 0..60 {
                let body = json!({
                    "compute_type": "k8s",
                    "compute_id": format!("late-{i}"),
                    "compute_config": {},
                });
                assert_eq!(
                    app.call("POST", "/v2/listeners", Some(body)).await.status,
                    201
                );
            }
        })
    };
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let page = app
            .call(
                "GET",
                &format!("/v2/listeners?limit=100&offset={offset}"),
                None,
            )
            .await
            .json();
        let items = page["resources"].as_array().unwrap().clone();
        assert_eq!(page["offset"], json!(offset + items.len()));
        seen.extend(items.iter().map(|l| l["id"].as_str().unwrap().to_owned()));
        offset += items.len();
        if items.len() < 100 {
            break;
        }
    }
    writer.await.unwrap();
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a listener was returned twice");
    assert!(
        ids.is_subset(&unique),
        "a listener created before paging was missed"
    );
    // Oldest first: the first 250 are the ones created first, in creation order, and
    // the late ones follow.
    assert_eq!(seen[..250], order[..]);
    let mut all = Vec::new();
    for offset in [0, 100, 200, 300] {
        let page = app
            .call(
                "GET",
                &format!("/v2/listeners?limit=100&offset={offset}"),
                None,
            )
            .await
            .json();
        all.extend(
            page["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["compute_id"].as_str().unwrap().to_owned()),
        );
    }
    let expected: Vec<String> = (0..250)
        .map(|i| format!("c-{i:03}"))
        .chain((0..60).map(|i| format!("late-{i}")))
        .collect();
    assert_eq!(all, expected);
}

async fn http_edges(backend: Backend) {
    let config = hostplane_api::ApiConfig {
        max_body_bytes: 64 * 1024,
        ..Default::default()
    };
    let app = TestApp::with_config(backend, config).await;
    let ok = app.send("GET", "/ok", &[], None).await;
    assert_eq!((ok.status.as_u16(), ok.json()), (200, json!({"ok": true})));

    let res = app
        .send("PUT", "/v2/listeners", &[("x-api-key", &app.key)], None)
        .await;
    assert_eq!(
        (res.status.as_u16(), res.json()),
        (405, json!({"detail": "Method Not Allowed"}))
    );
    let allow = res
        .headers
        .get("allow")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");

    let res = app.send("GET", "/v2/listeners/?limit=5", &[], None).await;
    assert_eq!(res.status, 307);
    assert_eq!(
        res.headers.get("location").unwrap(),
        "/v2/listeners?limit=5"
    );
    let res = app.send("GET", "/api-host/v2/listeners/", &[], None).await;
    assert_eq!(
        res.headers.get("location").unwrap(),
        "/api-host/v2/listeners"
    );

    let res = app
        .send("GET", "/v3/nothing", &[("x-api-key", &app.key)], None)
        .await;
    assert_eq!(
        (res.status.as_u16(), res.json()),
        (404, json!({"detail": "Not Found"}))
    );

    // Oversized bodies: 413 with a detail, and nothing stored.
    let big = format!(
        r#"{{"compute_type":"k8s","compute_id":"big","compute_config":{{}},"pad":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let res = app
        .send(
            "POST",
            "/v2/listeners",
            &[
                ("x-api-key", &app.key),
                ("content-type", "application/json"),
            ],
            Some(big.into_bytes()),
        )
        .await;
    assert_eq!(res.status, 413);
    assert_eq!(
        res.json(),
        json!({"detail": "Request body is larger than the limit of 65536 bytes."})
    );
    assert_eq!(
        app.call("GET", "/v2/listeners", None).await.json()["resources"],
        json!([])
    );

    // Offsets beyond 64 bits are valid (Python ints) and echoed exactly.
    let res = app
        .call("GET", "/v2/listeners?offset=29323520019897581568", None)
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.body,
        br#"{"resources":[],"offset":29323520019897581568}"#
    );

    // Every response carries a request id.
    assert!(res.headers.get("x-request-id").is_some());
}

/// A delete by another workspace answers 404 and touches nothing of the listener's: its
/// keys keep working and its long-polls keep waking on changes (both were hit once).
async fn foreign_delete_changes_nothing(backend: Backend) {
    let app = TestApp::new(backend).await;
    let mine = create(&app, &app.key, "cluster-a").await;
    let id: uuid::Uuid = mine["id"].as_str().unwrap().parse().unwrap();
    let listener_key = app.listener_key(id).await;
    let desired = format!("/dataplane/v1/listeners/{id}/desired?protocol_version=1");
    let now = app.call_as(&listener_key, "GET", &desired, None).await;
    assert_eq!(now.status, 200);
    let generation = now.json()["generation"].as_i64().unwrap();

    // A poller waits for the next change while the other workspace deletes.
    let poll = {
        let (router, key) = (app.router.clone(), listener_key.clone());
        let uri = format!("{desired}&after={generation}&wait=30");
        tokio::spawn(async move {
            let req = axum::http::Request::get(uri)
                .header("x-api-key", key)
                .body(axum::body::Body::empty())
                .unwrap();
            let res = tower::ServiceExt::oneshot(router, req).await.unwrap();
            let body = axum::body::to_bytes(res.into_body(), usize::MAX)
                .await
                .unwrap();
            serde_json::from_slice::<Value>(&body).unwrap()
        })
    };
    for (_, other_key) in [
        app.other_workspace(Plan::Enterprise).await,
        app.sibling_workspace().await,
    ] {
        let res = app
            .call_as(&other_key, "DELETE", &format!("/v2/listeners/{id}"), None)
            .await;
        assert_eq!(
            (res.status.as_u16(), res.json()),
            (
                404,
                json!({"detail": format!("Listener ID {id} not found.")})
            )
        );
    }
    // The listener's key still works, on every route.
    let keys = app.store.list_api_keys().await.unwrap();
    let row = keys
        .iter()
        .find(|k| k.key_hash == store::hash_key(&listener_key))
        .unwrap();
    assert_eq!(
        row.revoked_at, None,
        "a foreign delete revoked the listener's key"
    );
    let res = app.call_as(&listener_key, "GET", &desired, None).await;
    assert_eq!(
        (res.status.as_u16(), &res.json()["generation"]),
        (200, &json!(generation))
    );

    // A change still wakes the poller (a foreign delete once parked its channel at the
    // largest generation, so it slept until its 30 s were up).
    let dep = app
        .call(
            "POST",
            "/v2/deployments",
            Some(json!({"name": "d", "source": "external_docker",
                        "source_config": {"listener_id": id.to_string()},
                        "source_revision_config": {"image_uri": "img:1"},
                        "secrets": []})),
        )
        .await;
    assert_eq!(dep.status, 201, "{:?}", dep.json());
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), poll)
        .await
        .expect("the long-poll did not wake within 10 s of a change to its listener")
        .unwrap();
    assert!(
        answer["generation"].as_i64().unwrap() > generation,
        "{answer}"
    );
    assert_eq!(
        app.call("GET", &format!("/v2/listeners/{id}"), None)
            .await
            .json(),
        mine
    );
}

on_both_backends!(
    crud_exact_bodies,
    tenancy_matrix,
    foreign_delete_changes_nothing,
    standard_plan_is_refused,
    concurrent_creates_one_wins,
    conflicts_fail_alone_in_a_batch,
    paging_returns_each_once,
    http_edges
);
