//! The data plane's own document against the code: it is served at
//! `/dataplane/openapi.json` (and kept out of the compatible `/openapi.json`), its paths
//! and methods are exactly the router's data-plane routes, and real requests and answers
//! of every operation (a whole build-and-deploy round) match its schemas field for field.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Backend, TestApp};
use serde_json::{json, Value};
use std::collections::BTreeSet;

fn document() -> Value {
    serde_json::from_str(hostplane_api::dataplane::openapi::DOCUMENT).unwrap()
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// Checks `value` against `schema` (the subset of JSON Schema the document uses); the
/// mismatches, located by `at`.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str, out: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if let Some(options) = schema.get("anyOf").and_then(Value::as_array) {
        let fits = options.iter().any(|o| {
            let mut errs = Vec::new();
            check(doc, o, value, at, &mut errs);
            errs.is_empty()
        });
        if !fits {
            out.push(format!("{at}: {value} fits none of {options:?}"));
        }
        return;
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        if !types.contains(&actual) {
            out.push(format!("{at}: {value} is {actual}, not {types:?}"));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            out.push(format!("{at}: {value} not in {allowed:?}"));
        }
    }
    if let Some(c) = schema.get("const") {
        if c != value {
            out.push(format!("{at}: {value} is not {c}"));
        }
    }
    if let (Some("uuid"), Some(s)) = (schema.get("format").and_then(Value::as_str), value.as_str())
    {
        if uuid::Uuid::parse_str(s).is_err() {
            out.push(format!("{at}: {s} is not a UUID"));
        }
    }
    if let (Some("date-time"), Some(s)) =
        (schema.get("format").and_then(Value::as_str), value.as_str())
    {
        if chrono::DateTime::parse_from_rfc3339(s).is_err() {
            out.push(format!("{at}: {s} is not a date-time"));
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
        for (i, v) in list.iter().enumerate() {
            check(doc, items, v, &format!("{at}[{i}]"), out);
        }
    }
    if let (Some(props), Some(obj)) = (
        schema.get("properties").and_then(Value::as_object),
        value.as_object(),
    ) {
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap();
            if !obj.contains_key(name) {
                out.push(format!("{at}: {name} is required"));
            }
        }
        for (k, v) in obj {
            match props.get(k) {
                Some(s) => check(doc, s, v, &format!("{at}.{k}"), out),
                None if schema["additionalProperties"] == false => {
                    out.push(format!("{at}: {k} is not in the schema"))
                }
                None => {}
            }
        }
    }
}

/// The operation of `method` on `template`.
fn operation<'a>(doc: &'a Value, template: &str, method: &str) -> &'a Value {
    let op = &doc["paths"][template][method];
    assert!(op.is_object(), "{method} {template} is not documented");
    op
}

/// Checks a request body and the answer of one call against the document.
fn conforms(
    doc: &Value,
    template: &str,
    method: &str,
    request: Option<&Value>,
    status: u16,
    answer: &Value,
) {
    let op = operation(doc, template, method);
    let mut errs = Vec::new();
    if let Some(body) = request {
        let schema = &op["requestBody"]["content"]["application/json"]["schema"];
        check(doc, schema, body, "request", &mut errs);
    }
    let declared = &op["responses"][status.to_string()];
    assert!(
        declared.is_object(),
        "{method} {template} does not document {status}"
    );
    let schema = &declared["content"]["application/json"]["schema"];
    check(doc, schema, answer, "answer", &mut errs);
    assert!(errs.is_empty(), "{method} {template}: {errs:#?}");
}

async fn served_and_complete(backend: Backend) {
    let app = TestApp::new(backend).await;
    let res = app.send("GET", "/dataplane/openapi.json", &[], None).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json(), document());
    let doc = document();
    // Every documented operation is routed, and every data-plane route is documented.
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (p.clone(), m.to_uppercase()))
        })
        .collect();
    let templates: BTreeSet<String> = hostplane_api::dataplane_templates().into_iter().collect();
    let doc_paths: BTreeSet<String> = documented.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(doc_paths, templates);
    let listener = uuid::Uuid::new_v4();
    for (path, method) in &documented {
        let uri = path
            .replace("{listener_id}", &listener.to_string())
            .replace("{revision_id}", &uuid::Uuid::new_v4().to_string())
            .replace("{deployment_id}", &uuid::Uuid::new_v4().to_string());
        let res = app.send(method, &uri, &[], None).await;
        assert_eq!(
            res.status, 401,
            "{method} {uri}: the route must exist and need a key"
        );
        let wrong = if method == "GET" { "POST" } else { "GET" };
        let res = app.send(wrong, &uri, &[], None).await;
        assert_eq!(res.status, 405, "{wrong} {uri}");
    }
    // The compatible document does not mention the data plane.
    let compatible = app.send("GET", "/openapi.json", &[], None).await;
    assert!(!String::from_utf8_lossy(&compatible.body).contains("dataplane"));
}

/// A build and deploy round through every operation, each request and answer checked.
async fn round_conforms(backend: Backend) {
    let app = TestApp::new(backend).await;
    let doc = document();
    let created = app
        .call(
            "POST",
            "/v2/listeners",
            Some(json!({"compute_type": "k8s", "compute_id": "c",
                        "compute_config": {"k8s_namespaces": ["ns"]}})),
        )
        .await;
    assert_eq!(created.status, 201);
    let listener: uuid::Uuid = created.json()["id"].as_str().unwrap().parse().unwrap();
    let key = app.listener_key(listener).await;
    let base = format!("/dataplane/v1/listeners/{listener}");
    let p = |rest: &str| format!("/dataplane/v1/listeners/{{listener_id}}{rest}");
    let call = |method: &'static str, uri: String, body: Option<Value>| {
        let (app, key) = (&app, key.clone());
        async move {
            let res = app.call_as(&key, method, &uri, body).await;
            (res.status.as_u16(), res.json())
        }
    };
    // A source deployment (remote build) runs on the workspace's only listener.
    let dep = app
        .call(
            "POST",
            "/v2/deployments",
            Some(json!({"name": "src", "source": "internal_source",
                        "source_config": {"install_command": "pip install ."},
                        "source_revision_config": {"langgraph_config_path": "langgraph.json"},
                        "secrets": [{"name": "K", "value": "v"}]})),
        )
        .await;
    assert_eq!(dep.status, 201, "{:?}", dep.json());
    let dep = dep.json();
    let (dep_id, rev) = (
        dep["id"].as_str().unwrap().to_owned(),
        dep["latest_revision_id"].as_str().unwrap().to_owned(),
    );

    let beat = json!({"protocol_version": 1, "agent_id": "a", "agent_version": "1.0",
                      "mode": "native", "cluster": {"nodes": 3},
                      "deployments": [{"deployment_id": dep_id, "revision_id": null,
                                       "phase": "pending", "ready_replicas": 0,
                                       "total_replicas": 1, "endpoint": null,
                                       "last_error": null}]});
    let (status, answer) = call("POST", format!("{base}/heartbeat"), Some(beat.clone())).await;
    conforms(&doc, &p("/heartbeat"), "post", Some(&beat), status, &answer);

    let (status, answer) = call("GET", format!("{base}/desired?protocol_version=1"), None).await;
    conforms(&doc, &p("/desired"), "get", None, status, &answer);
    let revision = &answer["deployments"][0]["revision"];
    assert_eq!(revision["status"], "AWAITING_BUILD");
    // Nothing is uploaded yet, so there is nothing to build: `build` stays null until the
    // upload (the agent tests in crates/hostplane/tests/builds.rs build only after it).
    assert_eq!(revision["build"], Value::Null);
    assert_eq!(answer["deployments"][0]["namespace"], "ns");

    let claim = json!({"protocol_version": 1, "agent_id": "a"});
    let (status, answer) = call(
        "POST",
        format!("{base}/revisions/{rev}/claim"),
        Some(claim.clone()),
    )
    .await;
    conforms(
        &doc,
        &p("/revisions/{revision_id}/claim"),
        "post",
        Some(&claim),
        status,
        &answer,
    );
    assert_eq!(answer["status"], "BUILDING");
    // No tarball was uploaded for this revision: a documented 404.
    let res = app
        .send(
            "GET",
            &format!("{base}/revisions/{rev}/source?protocol_version=1&agent_id=a"),
            &[("x-api-key", &key)],
            None,
        )
        .await;
    conforms(
        &doc,
        &p("/revisions/{revision_id}/source"),
        "get",
        None,
        res.status.as_u16(),
        &res.json(),
    );

    // Without a registry there is no build credential; without a credential, no source.
    let (status, answer) = call(
        "POST",
        format!("{base}/revisions/{rev}/build-credential"),
        Some(claim.clone()),
    )
    .await;
    conforms(
        &doc,
        &p("/revisions/{revision_id}/build-credential"),
        "post",
        Some(&claim),
        status,
        &answer,
    );
    assert_eq!(status, 404);
    let res = app
        .send(
            "GET",
            &format!("{base}/revisions/{rev}/build-source?token=forged"),
            &[],
            None,
        )
        .await;
    conforms(
        &doc,
        &p("/revisions/{revision_id}/build-source"),
        "get",
        None,
        res.status.as_u16(),
        &res.json(),
    );
    assert_eq!(res.status.as_u16(), 401);

    let line = json!({"protocol_version": 1, "lines": [{
        "deployment_id": dep_id, "revision_id": rev, "kind": "build",
        "timestamp": "2026-01-01T00:00:00Z", "level": "INFO", "message": "building"}]});
    let (status, answer) = call("POST", format!("{base}/logs"), Some(line.clone())).await;
    conforms(&doc, &p("/logs"), "post", Some(&line), status, &answer);

    let status_path = p("/revisions/{revision_id}/status");
    for report in [
        json!({"protocol_version": 1, "agent_id": "a", "status": "BUILT",
               "image": "registry.test/src:1", "reason": null, "message": null}),
        json!({"protocol_version": 1, "agent_id": "a", "status": "DEPLOYED"}),
    ] {
        if report["status"] == "DEPLOYED" {
            let (status, answer) = call(
                "POST",
                format!("{base}/revisions/{rev}/claim"),
                Some(claim.clone()),
            )
            .await;
            assert_eq!((status, &answer["status"]), (200, &json!("DEPLOYING")));
        }
        let (status, answer) = call(
            "POST",
            format!("{base}/revisions/{rev}/status"),
            Some(report.clone()),
        )
        .await;
        conforms(&doc, &status_path, "post", Some(&report), status, &answer);
        assert_eq!(status, 200);
    }
    // A refused report is a documented 409.
    let late = json!({"protocol_version": 1, "agent_id": "a", "status": "DEPLOY_FAILED",
                      "reason": "X", "message": "y"});
    let (status, answer) = call(
        "POST",
        format!("{base}/revisions/{rev}/status"),
        Some(late.clone()),
    )
    .await;
    assert_eq!(status, 409);
    conforms(&doc, &status_path, "post", Some(&late), status, &answer);
    let (_, desired) = call("GET", format!("{base}/desired?protocol_version=1"), None).await;
    assert_eq!(
        desired["deployments"][0]["revision"]["image"],
        "registry.test/src:1"
    );

    let res = app
        .call("DELETE", &format!("/v2/deployments/{dep_id}"), None)
        .await;
    assert_eq!(res.status, 204);
    let deleted = json!({"protocol_version": 1, "agent_id": "a"});
    let (status, answer) = call(
        "POST",
        format!("{base}/deployments/{dep_id}/deleted"),
        Some(deleted.clone()),
    )
    .await;
    conforms(
        &doc,
        &p("/deployments/{deployment_id}/deleted"),
        "post",
        Some(&deleted),
        status,
        &answer,
    );
    assert_eq!(status, 200);
}

on_both_backends!(served_and_complete, round_conforms);

/// The checker itself finds drift: an unknown field, a missing one, a wrong type.
#[test]
fn checker_finds_drift() {
    let doc = document();
    let schema = json!({"$ref": "#/components/schemas/ClaimAnswer"});
    let good = json!({"protocol_version": 1, "revision_id": uuid::Uuid::new_v4(),
                      "status": "DEPLOYING", "lease_expires_at": "2026-01-01T00:00:00Z"});
    let mut errs = Vec::new();
    check(&doc, &schema, &good, "x", &mut errs);
    assert!(errs.is_empty(), "{errs:?}");
    for bad in [
        json!({"extra": 1}),
        json!({"status": "DEPLOYED"}),
        json!({"protocol_version": "1"}),
        json!({"lease_expires_at": "yesterday"}),
    ] {
        let mut v = good.clone();
        v.as_object_mut()
            .unwrap()
            .extend(bad.as_object().unwrap().clone());
        let mut errs = Vec::new();
        check(&doc, &schema, &v, "x", &mut errs);
        assert_eq!(errs.len(), 1, "{bad}: {errs:?}");
    }
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("revision_id");
    let mut errs = Vec::new();
    check(&doc, &schema, &missing, "x", &mut errs);
    assert_eq!(errs.len(), 1);
}
