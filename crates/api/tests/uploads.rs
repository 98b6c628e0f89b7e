//! Source tarball uploads (`upload-url`, the `PUT`, quotas, garbage collection, the paths
//! a revision may name) and registry push tokens, through the real router, on both
//! backends.

#![allow(clippy::unwrap_used)]

mod common;

use common::{create, image_body, Backend, TestApp};
use serde_json::{json, Value};

async fn uploads_are_checked(backend: Backend) {
    let app = TestApp::new(backend).await;
    let d = create(
        &app,
        &app.key,
        json!({"name": "src", "source": "internal_source", "source_config": {},
                                          "source_revision_config": {}, "secrets": []}),
    )
    .await;
    let id = d["id"].as_str().unwrap().to_owned();
    let img = create(&app, &app.key, image_body("img")).await;
    let res = app
        .call(
            "POST",
            &format!("/v2/deployments/{}/upload-url", img["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(res.status, 400);

    let res = app
        .call(
            "POST",
            &format!("/v2/deployments/{id}/upload-url"),
            Some(json!({"supports_upload_headers": true})),
        )
        .await;
    assert_eq!(res.status, 200);
    let u = res.json();
    let path = u["object_path"].as_str().unwrap().to_owned();
    assert_eq!(
        u["upload_headers"],
        json!({"Content-Type": "application/gzip"})
    );
    let upload_path = u["upload_url"]
        .as_str()
        .unwrap()
        .split_once("/uploads/")
        .map(|(_, t)| format!("/uploads/{t}"))
        .unwrap();

    // The path cannot be used before the upload is complete.
    let patch = json!({
        "revision_source": "internal_source",
        "source_revision_config": {
            "source_tarball_path": path,
            "langgraph_config_path": "langgraph.json",
        },
    });
    let res = app
        .call(
            "PATCH",
            &format!("/v2/deployments/{id}"),
            Some(patch.clone()),
        )
        .await;
    assert_eq!(res.status, 400);

    // Not gzip: refused, and the URL can still be used.
    let res = app
        .send(
            "PUT",
            &upload_path,
            &[("content-type", "application/gzip")],
            Some(b"plain text".to_vec()),
        )
        .await;
    assert_eq!(res.status, 400);
    let gz = vec![
        0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let res = app
        .send(
            "PUT",
            &upload_path,
            &[("content-type", "application/gzip")],
            Some(gz.clone()),
        )
        .await;
    assert_eq!(res.status, 200);
    // Single use.
    let res = app.send("PUT", &upload_path, &[], Some(gz)).await;
    assert_eq!(res.status, 403);

    let res = app
        .call("PATCH", &format!("/v2/deployments/{id}"), Some(patch))
        .await;
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    let revs = app
        .call(
            "GET",
            &format!("/v2/deployments/{id}/revisions?limit=1"),
            None,
        )
        .await
        .json();
    assert_eq!(revs["resources"][0]["status"], "AWAITING_BUILD");
    assert_eq!(
        revs["resources"][0]["source_revision_config"]["source_tarball_path"],
        path.as_str()
    );
}

/// An uploaded tarball belongs to its deployment: another workspace (or another
/// deployment) cannot point at it, on create or on PATCH, nor through a disguised path.
async fn tarball_paths_are_owned(backend: Backend) {
    let app = TestApp::new(backend).await;
    let src = |name: &str| {
        json!({"name": name, "source": "internal_source", "source_config": {},
               "source_revision_config": {}, "secrets": []})
    };
    let a = create(&app, &app.key, src("a")).await;
    let a_id = a["id"].as_str().unwrap();
    let u = app
        .call("POST", &format!("/v2/deployments/{a_id}/upload-url"), None)
        .await
        .json();
    let path = u["object_path"].as_str().unwrap().to_owned();
    let token = u["upload_url"]
        .as_str()
        .unwrap()
        .split_once("/uploads/")
        .unwrap()
        .1
        .to_owned();
    let gz = vec![
        0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let res = app
        .send(
            "PUT",
            &format!("/uploads/{token}"),
            &[("content-type", "application/gzip")],
            Some(gz),
        )
        .await;
    assert_eq!(res.status, 200);

    let (_, other) = app.other_workspace(store::Plan::Enterprise).await;
    let b = create(&app, &other, src("b")).await;
    let b_id = b["id"].as_str().unwrap();
    let field = "'source_revision_config.source_tarball_path'";
    let not_ours = |p: &str| {
        json!({"detail": format!("Source configuration error: {field} '{p}' \
                                                       was not uploaded for this deployment.")})
    };
    let not_plain = |p: &str| {
        json!({"detail": format!("Source configuration error: {field} '{p}' \
                                                        is not a plain relative object path.")})
    };
    let disguised = [
        format!("./{path}"),
        format!("x/../{path}"),
        format!("/{path}"),
        path.replace('/', "//"),
        format!("{path}/."),
        path.replace('/', "\\"),
    ];
    let mut cases = vec![(path.clone(), not_ours(&path))];
    cases.extend(disguised.iter().map(|p| (p.clone(), not_plain(p))));
    for (p, detail) in &cases {
        let revision = json!({"source_tarball_path": p, "langgraph_config_path": "langgraph.json"});
        // On create, in another workspace.
        let mut body = src("c");
        body["source_revision_config"] = revision.clone();
        let res = app
            .call_as(&other, "POST", "/v2/deployments", Some(body))
            .await;
        assert_eq!(
            (res.status.as_u16(), res.json()),
            (400, detail.clone()),
            "create {p}"
        );
        // On PATCH, of another workspace's deployment.
        let patch =
            json!({"revision_source": "internal_source", "source_revision_config": revision});
        let res = app
            .call_as(
                &other,
                "PATCH",
                &format!("/v2/deployments/{b_id}"),
                Some(patch),
            )
            .await;
        assert_eq!(
            (res.status.as_u16(), res.json()),
            (400, detail.clone()),
            "patch {p}"
        );
    }
    // Nothing was created or changed.
    let list = app
        .call_as(&other, "GET", "/v2/deployments", None)
        .await
        .json();
    assert_eq!(list["resources"].as_array().unwrap().len(), 1);
    let revs = app
        .call_as(
            &other,
            "GET",
            &format!("/v2/deployments/{b_id}/revisions"),
            None,
        )
        .await
        .json();
    assert_eq!(revs["resources"].as_array().unwrap().len(), 1);
    // Its own deployment may use it; a path outside hostplane's namespace is left alone.
    for p in [path.as_str(), "uploads/a.tgz"] {
        let patch = json!({
            "revision_source": "internal_source",
            "source_revision_config": {
                "source_tarball_path": p,
                "langgraph_config_path": "langgraph.json",
            },
        });
        let res = app
            .call("PATCH", &format!("/v2/deployments/{a_id}"), Some(patch))
            .await;
        assert_eq!(
            res.status,
            200,
            "{p}: {}",
            String::from_utf8_lossy(&res.body)
        );
    }
}

/// A fresh internal_source deployment and a gzip upload of `size` bytes to it: the
/// deployment id, the object path and the PUT's answer.
async fn upload(
    app: &TestApp,
    key: &str,
    name: &str,
    size: usize,
) -> (String, String, common::Response) {
    let body = json!({"name": name, "source": "internal_source", "source_config": {},
                      "source_revision_config": {}, "secrets": []});
    let d = create(app, key, body).await;
    let id = d["id"].as_str().unwrap().to_owned();
    let u = app
        .call_as(
            key,
            "POST",
            &format!("/v2/deployments/{id}/upload-url"),
            None,
        )
        .await
        .json();
    let token = u["upload_url"]
        .as_str()
        .unwrap()
        .split_once("/uploads/")
        .unwrap()
        .1
        .to_owned();
    let mut gz = vec![0x1f, 0x8b];
    gz.resize(size, 0);
    let res = app
        .send(
            "PUT",
            &format!("/uploads/{token}"),
            &[("content-type", "application/gzip")],
            Some(gz),
        )
        .await;
    (id, u["object_path"].as_str().unwrap().to_owned(), res)
}

/// Every file under the storage folder, relative to it.
fn stored_files(app: &TestApp) -> Vec<String> {
    fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                walk(&e.path(), root, out);
            } else {
                out.push(e.path().strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(&app.storage_dir(), &app.storage_dir(), &mut out);
    out.retain(|f| f.starts_with("hostplane-uploads/"));
    out.sort();
    out
}

/// An upload URL's token, for a fresh internal_source deployment.
async fn upload_token(app: &TestApp, name: &str) -> (String, String) {
    let body = json!({"name": name, "source": "internal_source", "source_config": {},
                      "source_revision_config": {}, "secrets": []});
    let id = create(app, &app.key, body).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let u = app
        .call("POST", &format!("/v2/deployments/{id}/upload-url"), None)
        .await;
    assert_eq!(u.status, 200);
    let token = u.json()["upload_url"]
        .as_str()
        .unwrap()
        .split_once("/uploads/")
        .unwrap()
        .1
        .to_owned();
    (id, token)
}

/// The audit's case: six uploads of 550 kB started together against a 1 MB quota all
/// passed the check (it counted completed uploads only) and stored 3.3 MB. Room is now
/// held when an upload starts: one completes and five get 413, whatever the order, with
/// or without an announced length, and what is stored stays within the quota.
async fn parallel_uploads_share_the_quota(backend: Backend) {
    for announced in [true, false] {
        let config = hostplane_api::ApiConfig {
            max_upload_bytes: 600_000,
            upload_quota_bytes: 1_000_000,
            ..Default::default()
        };
        let app = TestApp::with_config(backend, config).await;
        let mut senders = Vec::new();
        let mut calls = Vec::new();
        for i in 0..6 {
            let (_, token) = upload_token(&app, &format!("p{i}")).await;
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|c| (c, rx))
            });
            let mut req = axum::http::Request::put(format!("/uploads/{token}"));
            if announced {
                req = req.header("content-length", "550000");
            }
            let req = req.body(axum::body::Body::from_stream(stream)).unwrap();
            calls.push(tokio::spawn(tower::ServiceExt::oneshot(
                app.router.clone(),
                req,
            )));
            senders.push(tx);
        }
        let mut chunk = vec![0u8; 550_000];
        chunk[..2].copy_from_slice(&[0x1f, 0x8b]);
        for tx in senders {
            // A refused upload has dropped its body: nothing to send.
            let _ = tx.send(Ok(chunk.clone())).await;
        }
        // Refused while the winner holds its room (550000 announced, else the size
        // limit, 600000, and a loser may hold the 400000 left until its body overflows
        // it) or after it completed (550000).
        let refusal = |used: u32| {
            format!(
                "{{\"detail\":\"This workspace's uploads are limited to 1000000 bytes in all; \
                 {used} are in use.\"}}"
            )
        };
        let mut refusals = vec![refusal(550_000)];
        if !announced {
            refusals.extend([refusal(600_000), refusal(1_000_000)]);
        }
        let mut statuses = Vec::new();
        for call in calls {
            let res = call.await.unwrap().unwrap();
            let status = res.status().as_u16();
            let body = axum::body::to_bytes(res.into_body(), usize::MAX)
                .await
                .unwrap();
            let body = String::from_utf8(body.to_vec()).unwrap();
            if status != 200 {
                assert!(
                    refusals.contains(&body),
                    "{status} {body} (announced: {announced})"
                );
            }
            statuses.push(status);
        }
        statuses.sort();
        assert_eq!(
            statuses,
            [200, 413, 413, 413, 413, 413],
            "announced: {announced}"
        );
        let stored: u64 = stored_files(&app)
            .iter()
            .map(|f| std::fs::metadata(app.storage_dir().join(f)).unwrap().len())
            .sum();
        assert_eq!(stored, 550_000, "announced: {announced}");
    }
}

/// A deployment has at most ten upload URLs outstanding (issued, unused, unexpired).
async fn outstanding_upload_urls_are_bounded(backend: Backend) {
    let app = TestApp::new(backend).await;
    let (id, token) = upload_token(&app, "u").await;
    let url = format!("/v2/deployments/{id}/upload-url");
    for _ in 1..10 {
        assert_eq!(app.call("POST", &url, None).await.status, 200);
    }
    let res = app.call("POST", &url, None).await;
    assert_eq!(
        (res.status.as_u16(), res.json()),
        (
            429,
            json!({"detail": "This deployment already has 10 upload URLs that are neither used \
                              nor expired; use one, or wait until they expire (30 minutes after \
                              issue)."})
        )
    );
    // Using one frees its place.
    let res = app
        .send(
            "PUT",
            &format!("/uploads/{token}"),
            &[("content-type", "application/gzip")],
            Some(vec![0x1f, 0x8b, 0, 0]),
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(app.call("POST", &url, None).await.status, 200);
    assert_eq!(app.call("POST", &url, None).await.status, 429);
}

/// Uploads count against a per-workspace quota; a refused or abandoned upload leaves no
/// partial file; unused and orphaned files are collected.
async fn upload_quota_and_cleanup(backend: Backend) {
    let config = hostplane_api::ApiConfig {
        max_upload_bytes: 1000,
        upload_quota_bytes: 1500,
        ..Default::default()
    };
    let app = TestApp::with_config(backend, config).await;
    let (_, _, res) = upload(&app, &app.key, "b", 1001).await;
    assert_eq!(
        (res.status.as_u16(), res.json()),
        (413, json!({"detail": "Uploads are limited to 1000 bytes."}))
    );
    let (a, a_path, res) = upload(&app, &app.key, "a", 1000).await;
    assert_eq!(res.status, 200);
    let (_, _, res) = upload(&app, &app.key, "c", 600).await;
    assert_eq!(
        (res.status.as_u16(), res.json()),
        (
            413,
            json!({"detail": "This workspace's uploads are limited to 1500 bytes in all; 1000 are \
                              in use."})
        )
    );
    // Another workspace has a quota of its own.
    let (_, other) = app.other_workspace(store::Plan::Enterprise).await;
    let (_, _, res) = upload(&app, &other, "d", 1000).await;
    assert_eq!(res.status, 200);
    assert_eq!(stored_files(&app).len(), 2, "{:?}", stored_files(&app));

    // A client that goes away mid-upload leaves nothing behind.
    let d = create(
        &app,
        &app.key,
        json!({"name": "e", "source": "internal_source", "source_config": {},
                                           "source_revision_config": {}, "secrets": []}),
    )
    .await;
    let u = app
        .call(
            "POST",
            &format!("/v2/deployments/{}/upload-url", d["id"].as_str().unwrap()),
            None,
        )
        .await
        .json();
    let token = u["upload_url"]
        .as_str()
        .unwrap()
        .split_once("/uploads/")
        .unwrap()
        .1
        .to_owned();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    tx.send(Ok(vec![0x1f, 0x8b, 0, 0])).await.unwrap();
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let req = axum::http::Request::put(format!("/uploads/{token}"))
        .body(axum::body::Body::from_stream(stream))
        .unwrap();
    let call = tokio::spawn(tower::ServiceExt::oneshot(app.router.clone(), req));
    let partial = || {
        stored_files(&app)
            .into_iter()
            .filter(|f| f.ends_with(".partial"))
            .count()
    };
    for _ in 0..100 {
        if partial() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(partial(), 1, "the upload never started");
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    drop(tx);
    assert_eq!(stored_files(&app).len(), 2, "{:?}", stored_files(&app));

    // Garbage: a stale partial file, a file no upload knows of, an upload no revision
    // uses. The upload a revision names stays.
    let dir = app.storage_dir().join(&a_path);
    let dir = dir.parent().unwrap();
    std::fs::write(dir.join(".x.partial"), b"x").unwrap();
    std::fs::write(dir.join("stray.tar.gz"), b"x").unwrap();
    let stray_dir = app.storage_dir().join("hostplane-uploads/not-a-deployment");
    std::fs::create_dir_all(&stray_dir).unwrap();
    std::fs::write(stray_dir.join("y.tar.gz"), b"y").unwrap();
    let patch = json!({
        "revision_source": "internal_source",
        "source_revision_config": {
            "source_tarball_path": a_path,
            "langgraph_config_path": "langgraph.json",
        },
    });
    assert_eq!(
        app.call("PATCH", &format!("/v2/deployments/{a}"), Some(patch))
            .await
            .status,
        200
    );
    let zero = std::time::Duration::ZERO;
    let removed = hostplane_api::operations::uploads::collect_garbage(
        &*app.store,
        &app.storage_dir(),
        zero,
        zero,
    )
    .await
    .unwrap();
    assert_eq!(removed, 4);
    assert_eq!(stored_files(&app), vec![a_path.clone()]);
    assert!(!stray_dir.exists());
    // The other workspace's unused upload was collected: its quota is free again.
    let (_, _, res) = upload(&app, &other, "f", 1000).await;
    assert_eq!(res.status, 200);
    // A young unused upload survives a collection with a grace period.
    let hour = std::time::Duration::from_secs(3600);
    let removed = hostplane_api::operations::uploads::collect_garbage(
        &*app.store,
        &app.storage_dir(),
        hour,
        hour,
    )
    .await
    .unwrap();
    assert_eq!(removed, 0);
    assert_eq!(stored_files(&app).len(), 2);
}

/// The claims of a JWT, unverified (the registry verifies them in tests/registry.rs).
fn jwt_claims(token: &str) -> Value {
    use base64::Engine;
    let part = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn push_tokens(backend: Backend) {
    let keys = std::env::temp_dir().join(format!("hostplane-reg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&keys).unwrap();
    let registry = hostplane_api::registry::Registry::load_or_create(
        "registry.example.internal:5000/agents".into(),
        "test-registry".into(),
        &keys.join("signing.pem"),
    )
    .unwrap();
    let config = hostplane_api::ApiConfig {
        registry: Some(registry),
        ..Default::default()
    };
    let app = TestApp::with_config(backend, config).await;
    let docker = json!({"name": "dock", "source": "internal_docker", "source_config": {},
                        "source_revision_config": {}, "secrets": []});
    let d = create(&app, &app.key, docker.clone()).await;
    let res = app
        .call(
            "POST",
            &format!("/v2/deployments/{}/push-token", d["id"].as_str().unwrap()),
            Some(json!({"supports_registry_username": true})),
        )
        .await;
    assert_eq!(res.status, 200);
    let pushed = res.json();
    let ws = app.workspace;
    assert_eq!(
        (&pushed["registry_url"], &pushed["username"]),
        (
            &json!(format!("registry.example.internal:5000/agents/{ws}")),
            &json!("hostplane")
        )
    );
    let login = pushed["token"].as_str().unwrap().to_owned();

    // Another workspace gets its own prefix.
    let (other_ws, other) = app.other_workspace(store::Plan::Enterprise).await;
    let od = create(&app, &other, docker).await;
    let other_login = app
        .call_as(
            &other,
            "POST",
            &format!("/v2/deployments/{}/push-token", od["id"].as_str().unwrap()),
            None,
        )
        .await
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let ask = |login: String, query: String| {
        let app = &app;
        async move {
            use base64::Engine;
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("anyone:{login}"));
            app.send(
                "GET",
                &format!("/registry/token?{query}"),
                &[("authorization", &format!("Basic {basic}"))],
                None,
            )
            .await
        }
    };
    let mine = format!("agents/{ws}/app");
    let theirs = format!("agents/{other_ws}/app");
    let query = format!(
        "service=test-registry&scope=repository:{mine}:pull,push\
         &scope=repository:{theirs}:pull,push&scope=repository:agents/app:push"
    );
    let res = ask(login.clone(), query.clone()).await;
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    let body = res.json();
    assert_eq!(body["token"], body["access_token"]);
    assert_eq!(body["expires_in"], 300);
    let claims = jwt_claims(body["token"].as_str().unwrap());
    assert_eq!(
        claims["access"],
        json!([{"type": "repository", "name": mine, "actions": ["pull", "push"]}])
    );
    assert_eq!(
        (&claims["iss"], &claims["aud"]),
        (&json!("hostplane"), &json!("test-registry"))
    );
    let res = ask(other_login, query).await;
    let claims = jwt_claims(res.json()["token"].as_str().unwrap());
    assert_eq!(
        claims["access"],
        json!([{"type": "repository", "name": theirs, "actions": ["pull", "push"]}])
    );
    // Only pull when only pull is asked; unknown actions are not granted.
    let res = ask(
        login.clone(),
        format!("scope=repository:{mine}:pull,delete"),
    )
    .await;
    let claims = jwt_claims(res.json()["token"].as_str().unwrap());
    assert_eq!(
        claims["access"],
        json!([{"type": "repository", "name": mine, "actions": ["pull"]}])
    );

    // A forged, altered or missing login is refused; so is another service.
    let unauthorized =
        json!({"detail": "The registry login is invalid or expired: ask for a new push token."});
    let mut altered = login.clone();
    altered.insert(altered.len() - 5, 'x');
    let forged_claims = login.split('.').take(2).collect::<Vec<_>>().join(".") + ".c2lnbmF0dXJl";
    for bad in [
        altered,
        forged_claims,
        "not-a-token".into(),
        pushed["token"].as_str().unwrap().replace('.', ""),
    ] {
        let res = ask(bad, format!("scope=repository:{mine}:push")).await;
        assert_eq!(
            (res.status.as_u16(), res.json()),
            (401, unauthorized.clone())
        );
    }
    let res = app.send("GET", "/registry/token", &[], None).await;
    assert_eq!(
        (res.status.as_u16(), res.json()),
        (401, unauthorized.clone())
    );
    let res = ask(login.clone(), "service=elsewhere".into()).await;
    assert_eq!(
        (res.status.as_u16(), res.json()),
        (
            400,
            json!({"detail": "This token service serves 'test-registry', not 'elsewhere'."})
        )
    );

    // A login lasts only as long as the key that asked for it.
    let doomed = app
        .key_for(store::KeyScope::Workspace {
            org_id: app.org,
            workspace_id: ws,
        })
        .await;
    let res = app
        .call_as(
            &doomed,
            "POST",
            &format!("/v2/deployments/{}/push-token", d["id"].as_str().unwrap()),
            None,
        )
        .await;
    let doomed_login = res.json()["token"].as_str().unwrap().to_owned();
    let scope = format!("scope=repository:{mine}:push");
    assert_eq!(ask(doomed_login.clone(), scope.clone()).await.status, 200);
    let doomed_id = app
        .store
        .list_api_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.key_hash == store::hash_key(&doomed))
        .unwrap()
        .id;
    app.store.revoke_api_key(doomed_id).await.unwrap();
    let res = ask(doomed_login, scope.clone()).await;
    assert_eq!(
        (res.status.as_u16(), res.json()),
        (401, unauthorized.clone())
    );
    // The bootstrap key's login is not affected.
    assert_eq!(ask(login.clone(), scope).await.status, 200);

    let img = create(&app, &app.key, image_body("img")).await;
    let res = app
        .call(
            "POST",
            &format!("/v2/deployments/{}/push-token", img["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(
        (res.status.as_u16(), res.json()),
        (
            400,
            json!({"detail": "push token is only available for 'internal_docker' source \
                              deployments"})
        )
    );

    // Without a registry: push-token says so, and there is no token endpoint.
    let bare = TestApp::new(backend).await;
    let d = create(
        &bare,
        &bare.key,
        json!({"name": "dock", "source": "internal_docker", "source_config": {},
               "source_revision_config": {}, "secrets": []}),
    )
    .await;
    let res = bare
        .call(
            "POST",
            &format!("/v2/deployments/{}/push-token", d["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(
        (res.status.as_u16(), res.json()),
        (
            400,
            json!({"detail": "push token is unavailable: this control plane has no container \
                              registry configured (HOSTPLANE_REGISTRY_URL)"})
        )
    );
    assert_eq!(
        bare.send("GET", "/registry/token", &[], None).await.status,
        404
    );
    let _ = std::fs::remove_dir_all(keys);
}

on_both_backends!(
    uploads_are_checked,
    tarball_paths_are_owned,
    upload_quota_and_cleanup,
    parallel_uploads_share_the_quota,
    outstanding_upload_urls_are_bounded,
    push_tokens,
);
