//! The API contract under test: the served document is structurally identical to the
//! reference for every compatible operation, and every documented operation has a route
//! that enforces authentication.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Backend, TestApp};
use serde_json::Value;
use std::collections::BTreeSet;

/// Reference tags whose every operation hostplane implements.
const COMPLETE_TAGS: &[&str] = &[
    "Listeners (v2)",
    "Deployments (v2)",
    "Integrations (v1)",
    "Auth Service (v2)",
    "Agent Connections (v2)",
];
/// Prose, which is ours; everything else is structure.
const PROSE: &[&str] = &["description", "summary", "example", "examples"];

fn reference() -> Value {
    serde_json::from_str(include_str!("fixtures/reference-openapi.json")).unwrap()
}

fn served() -> Value {
    serde_json::from_str(hostplane_api::openapi::DOCUMENT).unwrap()
}

fn strip_prose(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| !PROSE.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), strip_prose(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_prose).collect()),
        other => other.clone(),
    }
}

/// Names of the schemas an operation reaches through `$ref`, transitively.
fn referenced_schemas(doc: &Value, start: &Value, out: &mut BTreeSet<String>) {
    match start {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get("$ref") {
                let name = r.trim_start_matches("#/components/schemas/").to_owned();
                if out.insert(name.clone()) {
                    referenced_schemas(doc, &doc["components"]["schemas"][&name], out);
                }
            }
            o.values().for_each(|v| referenced_schemas(doc, v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| referenced_schemas(doc, v, out)),
        _ => {}
    }
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops.push((path.clone(), method.clone(), op.clone()));
        }
    }
    ops
}

#[test]
fn compatible_operations_match_the_reference() {
    let (ours, theirs) = (served(), reference());
    assert_eq!(ours["openapi"], "3.1.0");
    let mut compared = 0;
    for (path, method, op) in operations(&ours) {
        if op["tags"][0] == "hostplane" {
            continue;
        }
        let reference_op = &theirs["paths"][&path][&method];
        assert!(
            reference_op.is_object(),
            "{method} {path} is not in the reference document"
        );
        assert_eq!(
            strip_prose(&op),
            strip_prose(reference_op),
            "{method} {path} drifted from the reference"
        );
        let (mut a, mut b) = (BTreeSet::new(), BTreeSet::new());
        referenced_schemas(&ours, &op, &mut a);
        referenced_schemas(&theirs, reference_op, &mut b);
        assert_eq!(a, b, "{method} {path} reaches different schemas");
        for name in &a {
            assert_eq!(
                strip_prose(&ours["components"]["schemas"][name]),
                strip_prose(&theirs["components"]["schemas"][name]),
                "schema {name} drifted from the reference"
            );
        }
        compared += 1;
    }
    // Every operation of a complete tag is served and documented.
    for (path, method, op) in operations(&theirs) {
        if COMPLETE_TAGS.contains(&op["tags"][0].as_str().unwrap()) {
            assert!(
                ours["paths"][&path][&method].is_object(),
                "{method} {path} is missing from our document"
            );
        }
    }
    assert!(compared >= 39);
}

#[test]
fn prose_is_our_own() {
    let (ours, theirs) = (served(), reference());
    for (path, method, op) in operations(&ours) {
        for key in ["summary", "description"] {
            if let Some(text) = op[key].as_str() {
                assert_ne!(
                    Some(text),
                    theirs["paths"][&path][&method][key].as_str(),
                    "{method} {path} {key} is copied"
                );
            }
        }
    }
}

/// Every documented operation has a route, and every secured one refuses a request
/// without credentials; `/openapi.json` serves exactly this document.
async fn every_operation_is_routed_and_guarded(backend: Backend) {
    let app = TestApp::new(backend).await;
    let doc = served();
    let param = regex::Regex::new(r"\{[^}]+\}").unwrap();
    for (path, method, op) in operations(&doc) {
        let uri = param
            .replace_all(&path, uuid::Uuid::new_v4().to_string().as_str())
            .into_owned();
        for prefix in ["", "/api-host"] {
            let res = app
                .send(&method.to_uppercase(), &format!("{prefix}{uri}"), &[], None)
                .await;
            let secured = op
                .get("security")
                .is_some_and(|s| !s.as_array().unwrap().is_empty());
            let status = res.status.as_u16();
            if secured {
                assert_eq!(status, 401, "{method} {prefix}{path}");
            } else {
                assert!(
                    ![401, 404, 405].contains(&status),
                    "{method} {prefix}{path}: {status}"
                );
            }
        }
    }
    let res = app.send("GET", "/openapi.json", &[], None).await;
    assert_eq!(res.json(), doc);
}

on_both_backends!(every_operation_is_routed_and_guarded);
