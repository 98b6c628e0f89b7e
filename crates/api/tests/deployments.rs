//! Deployments (v2) and revisions through the real router, on both backends.

#![allow(clippy::unwrap_used)]

mod common;

use common::{create, image_body, Backend, TestApp};
use serde_json::{json, Value};
use store::Plan;

async fn other_workspaces_see_nothing(backend: Backend) {
    let app = TestApp::new(backend).await;
    let d = create(&app, &app.key, image_body("mine")).await;
    let id = d["id"].as_str().unwrap();
    let rev = d["latest_revision_id"].as_str().unwrap();
    let (_, other) = app.other_workspace(Plan::Enterprise).await;
    let nf = json!({"detail": format!("Deployment ID {id} not found.")});
    for (method, uri, body) in [
        ("GET", format!("/v2/deployments/{id}"), None),
        (
            "PATCH",
            format!("/v2/deployments/{id}"),
            Some(json!({"secrets": []})),
        ),
        ("DELETE", format!("/v2/deployments/{id}"), None),
        ("GET", format!("/v2/deployments/{id}/revisions"), None),
        ("GET", format!("/v2/deployments/{id}/revisions/{rev}"), None),
        (
            "POST",
            format!("/v2/deployments/{id}/revisions/{rev}/redeploy"),
            None,
        ),
        ("POST", format!("/v2/deployments/{id}/push-token"), None),
        ("POST", format!("/v2/deployments/{id}/upload-url"), None),
        (
            "DELETE",
            format!("/v2/deployments?deployment_ids={id}"),
            None,
        ),
    ] {
        let res = app.call_as(&other, method, &uri, body).await;
        assert_eq!(
            (res.status.as_u16(), res.json()),
            (404, nf.clone()),
            "{method} {uri}"
        );
    }
    let list = app
        .call_as(&other, "GET", "/v2/deployments", None)
        .await
        .json();
    assert_eq!(list, json!({"resources": [], "offset": 0}));
    // Names are unique per workspace only.
    create(&app, &other, image_body("mine")).await;
    assert_eq!(
        app.call("GET", &format!("/v2/deployments/{id}"), None)
            .await
            .json(),
        d
    );
}

async fn secrets_are_sealed_at_rest(backend: Backend) {
    let app = TestApp::new(backend).await;
    let d = create(&app, &app.key, image_body("sealed")).await;
    assert_eq!(
        d["secrets"],
        json!([{"name": "TOKEN", "value": "s3cret-value"}])
    );
    let id = uuid::Uuid::parse_str(d["id"].as_str().unwrap()).unwrap();
    let stored = app
        .store
        .get_deployment(app.workspace, id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !stored.secrets.contains("s3cret-value") && !stored.secrets.contains("TOKEN"),
        "{}",
        stored.secrets
    );
    let got = app
        .call("GET", &format!("/v2/deployments/{id}"), None)
        .await
        .json();
    assert_eq!(got["secrets"], d["secrets"]);
}

async fn revisions_follow_patches(backend: Backend) {
    let app = TestApp::new(backend).await;
    let d = create(&app, &app.key, image_body("rev")).await;
    let id = d["id"].as_str().unwrap().to_owned();
    let r1 = d["latest_revision_id"].as_str().unwrap().to_owned();
    let uri = format!("/v2/deployments/{id}");

    // Nothing that runs changes: no revision.
    let p = app
        .call(
            "PATCH",
            &uri,
            Some(json!({"source_config": {"build_on_push": true}})),
        )
        .await
        .json();
    assert_eq!(p["latest_revision_id"], r1.as_str());
    assert_eq!(p["source_config"]["build_on_push"], true);
    // A resource_spec change does create one, and the older waiting revision is skipped.
    let p = app
        .call(
            "PATCH",
            &uri,
            Some(json!({"source_config": {"resource_spec": {"cpu": 1}}})),
        )
        .await
        .json();
    let r2 = p["latest_revision_id"].as_str().unwrap().to_owned();
    assert_ne!(r2, r1);
    assert_eq!(p["source_config"]["resource_spec"]["cpu"], 1.0);
    let revs = app
        .call("GET", &format!("{uri}/revisions"), None)
        .await
        .json();
    let statuses: Vec<_> = revs["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].clone(), r["status"].clone()))
        .collect();
    assert_eq!(
        statuses,
        vec![
            (json!(r2), json!("AWAITING_DEPLOY")),
            (json!(r1), json!("SKIPPED"))
        ]
    );
    // Filters: a comma list of statuses.
    let skipped = app
        .call(
            "GET",
            &format!("{uri}/revisions?status=SKIPPED,BUILDING"),
            None,
        )
        .await
        .json();
    assert_eq!(skipped["resources"].as_array().unwrap().len(), 1);

    // Immutable fields: 400, nothing changed.
    let res = app
        .call(
            "PATCH",
            &uri,
            Some(json!({"source_config": {"deployment_type": "prod"}, "secrets": []})),
        )
        .await;
    assert_eq!(res.status, 400);
    assert_eq!(
        res.json(),
        json!({"detail": "Source configuration error: 'source_config.deployment_type' cannot be \
                          changed once the deployment is created."})
    );
    assert_eq!(
        app.call("GET", &uri, None).await.json()["latest_revision_id"],
        r2.as_str()
    );

    // Redeploy of the first revision: a new revision with its configuration.
    let res = app
        .call("POST", &format!("{uri}/revisions/{r1}/redeploy"), None)
        .await;
    assert_eq!(res.status, 200);
    let r3 = res.json()["latest_revision_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rev = app
        .call("GET", &format!("{uri}/revisions/{r3}"), None)
        .await
        .json();
    assert_eq!(
        rev["source_revision_config"]["image_uri"],
        "docker.io/acme/agent:1"
    );
    assert_eq!(rev["status"], "AWAITING_DEPLOY");
    let missing = uuid::Uuid::new_v4();
    let res = app
        .call("GET", &format!("{uri}/revisions/{missing}"), None)
        .await;
    assert_eq!(
        (res.status.as_u16(), res.json()),
        (
            404,
            json!({"detail": format!("Revision ID {missing} not found.")})
        )
    );
}

async fn listeners_in_use_cannot_be_deleted(backend: Backend) {
    let app = TestApp::new(backend).await;
    let l = app
        .call(
            "POST",
            "/v2/listeners",
            Some(json!({
                "compute_type": "k8s",
                "compute_id": "c",
                "compute_config": {"k8s_namespaces": ["a"]},
            })),
        )
        .await
        .json();
    let lid = l["id"].as_str().unwrap();
    let mut body = image_body("on-listener");
    body["source_config"] = json!({"listener_id": lid});
    let d = create(&app, &app.key, body).await;
    assert_eq!(
        d["source_config"]["listener_config"],
        json!({"k8s_namespace": "a"})
    );
    let res = app
        .call("DELETE", &format!("/v2/listeners/{lid}"), None)
        .await;
    assert_eq!(res.status, 409);
    assert_eq!(
        res.json(),
        json!({"detail": format!("Listener ID {lid} is used by deployments and cannot be \
                                  deleted.")})
    );
    let did = d["id"].as_str().unwrap();
    assert_eq!(
        app.call("DELETE", &format!("/v2/deployments/{did}"), None)
            .await
            .status,
        204
    );
    assert_eq!(
        app.call("DELETE", &format!("/v2/listeners/{lid}"), None)
            .await
            .status,
        204
    );
}

async fn bulk_delete_reports_each(backend: Backend) {
    let app = TestApp::new(backend).await;
    let a = create(&app, &app.key, image_body("a")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = create(&app, &app.key, image_body("b")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ghost = uuid::Uuid::new_v4();
    let res = app
        .call(
            "DELETE",
            &format!("/v2/deployments?deployment_ids={a}&deployment_ids={ghost}"),
            None,
        )
        .await;
    assert_eq!(res.status, 207);
    assert_eq!(
        res.json(),
        json!({
            "deleted": [a],
            "failed": [{"id": ghost, "detail": format!("Deployment ID {ghost} not found.")}],
        })
    );
    let res = app
        .call(
            "DELETE",
            &format!("/v2/deployments?deployment_ids={b}"),
            None,
        )
        .await;
    assert_eq!(
        (res.status.as_u16(), res.json()),
        (200, json!({"deleted": [b], "failed": []}))
    );
    let res = app
        .call(
            "DELETE",
            &format!("/v2/deployments?deployment_ids={ghost}"),
            None,
        )
        .await;
    assert_eq!(
        (res.status.as_u16(), res.json()),
        (
            404,
            json!({"detail": format!("Deployment ID {ghost} not found.")})
        )
    );
    // Both are gone; nothing else was touched.
    for id in [&a, &b] {
        let res = app
            .call("GET", &format!("/v2/deployments/{id}"), None)
            .await;
        assert_eq!(res.status, 404);
    }
    let list = app.call("GET", "/v2/deployments", None).await.json();
    assert_eq!(list, json!({"resources": [], "offset": 0}));
}

async fn concurrent_creates_one_name(backend: Backend) {
    let app = std::sync::Arc::new(TestApp::new(backend).await);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                let res = app
                    .call("POST", "/v2/deployments", Some(image_body("race")))
                    .await;
                (res.status.as_u16(), res.json())
            })
        })
        .collect();
    let taken = json!({"detail": format!(
        "Deployment name 'race' already exists in LangSmith workspace ID '{}'.",
        app.workspace
    )});
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (201, d) => winners.push(d),
            (409, body) => assert_eq!(body, taken),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(winners.len(), 1);
    // The winner is the only deployment, with its one revision.
    let list = app.call("GET", "/v2/deployments", None).await.json();
    assert_eq!(list["resources"], json!([winners[0].clone()]));
    let id = winners[0]["id"].as_str().unwrap();
    let revs = app
        .call("GET", &format!("/v2/deployments/{id}/revisions"), None)
        .await
        .json();
    assert_eq!(revs["resources"].as_array().unwrap().len(), 1);
}

/// Deployments that cannot name a listener (remote builds, pushed images) run on the
/// workspace's oldest listener, in its first namespace; another workspace's listener,
/// older still, is never used.
async fn placement_on_the_oldest_listener(backend: Backend) {
    let app = TestApp::new(backend).await;
    let (_, other_key) = app.other_workspace(Plan::Enterprise).await;
    let mut listeners = Vec::new();
    for (key, id) in [
        (&other_key, "foreign"),
        (&app.key, "oldest"),
        (&app.key, "younger"),
    ] {
        let body = json!({"compute_type": "k8s", "compute_id": id,
                          "compute_config": {"k8s_namespaces": [format!("{id}-ns"), "second"]}});
        let res = app.call_as(key, "POST", "/v2/listeners", Some(body)).await;
        assert_eq!(res.status, 201);
        listeners.push(
            res.json()["id"]
                .as_str()
                .unwrap()
                .parse::<uuid::Uuid>()
                .unwrap(),
        );
    }
    let mine = &listeners[1..];
    for source in ["internal_source", "internal_docker"] {
        let dep = create(
            &app,
            &app.key,
            json!({"name": source.replace('_', "-"), "source": source, "source_config": {},
                   "source_revision_config": {}, "secrets": []}),
        )
        .await;
        let mut found = Vec::new();
        for (l, name) in mine.iter().zip(["oldest", "younger"]) {
            let key = app.listener_key(*l).await;
            let path = format!("/dataplane/v1/listeners/{l}/desired?protocol_version=1");
            let res = app.call_as(&key, "GET", &path, None).await;
            assert_eq!(res.status, 200);
            for d in res.json()["deployments"].as_array().unwrap() {
                if d["id"] == dep["id"] {
                    found.push((name, d["namespace"].clone()));
                }
            }
        }
        assert_eq!(found, [("oldest", json!("oldest-ns"))], "{source}");
    }
}

/// `push-token` hands out a login for the deployment's workspace only; the token
/// endpoint grants pull and push under that workspace's prefix and nothing else.
/// Text with a NUL character is a client's mistake, never a 500: PostgreSQL cannot hold
/// or compare it (400 with a detail); SQLite stores it like any other character.
async fn nul_text_is_a_client_error(backend: Backend) {
    let app = TestApp::new(backend).await;
    let nul = json!({"detail": "Text values cannot contain the NUL character (\\u0000)."});
    let res = app
        .call(
            "GET",
            "/v2/deployments?image_version=a%00b&name_contains=%00",
            None,
        )
        .await;
    let listed = (res.status.as_u16(), res.json());
    let body = json!({"compute_type": "k8s", "compute_id": "a\u{0}b", "compute_config": {}});
    let res = app.call("POST", "/v2/listeners", Some(body)).await;
    let created = (res.status.as_u16(), res.json());
    match backend {
        Backend::Postgres => {
            assert_eq!(listed, (400, nul.clone()));
            assert_eq!(created, (400, nul));
            let all = app.call("GET", "/v2/listeners", None).await.json();
            assert_eq!(all["resources"], json!([]));
        }
        Backend::Sqlite => {
            assert_eq!(listed, (200, json!({"resources": [], "offset": 0})));
            assert_eq!(
                (created.0, &created.1["compute_id"]),
                (201, &json!("a\u{0}b"))
            );
        }
    }
}

async fn list_filters(backend: Backend) {
    let app = TestApp::new(backend).await;
    create(&app, &app.key, image_body("alpha")).await;
    let mut dev = image_body("beta");
    dev["source_config"] = json!({"deployment_type": "dev"});
    let beta = create(&app, &app.key, dev).await;
    let names = |v: Value| {
        v["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            app.call("GET", "/v2/deployments?name=beta", None)
                .await
                .json()
        ),
        ["beta"]
    );
    assert_eq!(
        names(
            app.call("GET", "/v2/deployments?name_contains=ph", None)
                .await
                .json()
        ),
        ["alpha"]
    );
    assert_eq!(
        names(
            app.call("GET", "/v2/deployments?deployment_type=dev", None)
                .await
                .json()
        ),
        ["beta"]
    );
    let by_id = format!(
        "/v2/deployments?deployment_ids={},not-a-uuid",
        beta["id"].as_str().unwrap()
    );
    assert_eq!(names(app.call("GET", &by_id, None).await.json()), ["beta"]);
    assert_eq!(
        names(
            app.call("GET", "/v2/deployments?status=READY", None)
                .await
                .json()
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        names(
            app.call("GET", "/v2/deployments?limit=1&offset=1", None)
                .await
                .json()
        ),
        ["beta"]
    );
}

/// A body nested as deep as the parser accepts (256 levels) is stored and read back
/// whole, not turned into `null` by a shallower reader.
/// The bytes of a deployment, its revision list and its revision, field for field in the
/// reference's order, from create through get.
async fn deployment_and_revision_bodies_are_exact(backend: Backend) {
    let app = TestApp::new(backend).await;
    let res = app
        .call("POST", "/v2/deployments", Some(image_body("exact")))
        .await;
    assert_eq!(res.status, 201);
    let created = String::from_utf8(res.body.clone()).unwrap();
    let d = res.json();
    let text = |k: &str| d[k].as_str().unwrap().to_owned();
    let (id, rev, at) = (text("id"), text("latest_revision_id"), text("created_at"));
    let ts = regex::Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$").unwrap();
    assert!(ts.is_match(&at), "{at}");
    let ws = app.workspace;
    let source_revision_config = r#"{"repo_ref":null,"langgraph_config_path":null,"image_uri":"docker.io/acme/agent:1","source_tarball_path":null,"repo_commit_sha":null}"#;
    let expected = format!(
        r#"{{"name":"exact","source":"external_docker","source_config":{{"integration_id":null,"repo_url":null,"deployment_type":null,"build_on_push":null,"custom_url":null,"resource_spec":null,"listener_id":null,"listener_config":null,"install_command":null,"build_command":null}},"source_revision_config":{source_revision_config},"secrets":[{{"name":"TOKEN","value":"s3cret-value"}}],"secret_references":null,"id":"{id}","tenant_id":"{ws}","created_at":"{at}","updated_at":"{at}","status":"AWAITING_DATABASE","latest_revision_id":"{rev}","active_revision_id":null,"image_version":null}}"#
    );
    assert_eq!(created, expected);
    let got = app
        .call("GET", &format!("/v2/deployments/{id}"), None)
        .await;
    assert_eq!(
        (got.status.as_u16(), String::from_utf8(got.body).unwrap()),
        (200, expected)
    );
    let revision = format!(
        r#"{{"id":"{rev}","created_at":"{at}","updated_at":"{at}","status":"AWAITING_DEPLOY","source":"external_docker","source_revision_config":{source_revision_config}}}"#
    );
    let list = app
        .call("GET", &format!("/v2/deployments/{id}/revisions"), None)
        .await;
    assert_eq!(
        String::from_utf8(list.body).unwrap(),
        format!(r#"{{"resources":[{revision}],"offset":1}}"#)
    );
    let one = app
        .call(
            "GET",
            &format!("/v2/deployments/{id}/revisions/{rev}"),
            None,
        )
        .await;
    assert_eq!(String::from_utf8(one.body).unwrap(), revision);
}

async fn deep_json_is_kept(backend: Backend) {
    let app = TestApp::new(backend).await;
    // The body, source_config, resource_spec, init_containers, the container and its
    // securityContext take 5 levels, the nesting inside securityContext 251: 256 in all.
    let mut inner = json!({"leaf": true});
    for _ in 0..250 {
        inner = json!({ "a": inner });
    }
    let mut body = image_body("deep");
    let container = json!({"name": "i", "image": "busybox", "securityContext": inner});
    body["source_config"] = json!({"resource_spec": {"init_containers": [container]}});
    let created = create(&app, &app.key, body.clone()).await;
    let id = created["id"].as_str().unwrap();
    let res = app
        .call("GET", &format!("/v2/deployments/{id}"), None)
        .await;
    assert_eq!(res.status, 200);
    let got = res.json();
    assert_eq!(
        got["source_config"]["resource_spec"]["init_containers"][0]["securityContext"],
        inner
    );
    assert_eq!(got, created);
    // One level more is refused at the door.
    let mut deeper = image_body("deeper");
    let container = json!({"name": "i", "image": "busybox", "securityContext": {"x": inner}});
    deeper["source_config"] = json!({"resource_spec": {"init_containers": [container]}});
    let res = app.call("POST", "/v2/deployments", Some(deeper)).await;
    assert_eq!(
        (res.status.as_u16(), res.json()),
        (
            400,
            json!({"detail": "There was an error parsing the body"})
        )
    );
}

on_both_backends!(
    deep_json_is_kept,
    other_workspaces_see_nothing,
    secrets_are_sealed_at_rest,
    revisions_follow_patches,
    listeners_in_use_cannot_be_deleted,
    bulk_delete_reports_each,
    concurrent_creates_one_name,
    deployment_and_revision_bodies_are_exact,
    placement_on_the_oldest_listener,
    nul_text_is_a_client_error,
    list_filters,
);
