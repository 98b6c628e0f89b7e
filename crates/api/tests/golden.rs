//! Replays the recorded FastAPI + pydantic cases (`fixtures/golden-422.jsonl`, copied from
//! the reference) through the real router on both backends: same status, same body.
//! Each case runs in a workspace of its own, so cases cannot see each other's data.

#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine;
use common::{Backend, TestApp};
use regex::Regex;
use serde_json::Value;
use std::collections::HashMap;
use store::{KeyScope, Plan};

fn placeholder() -> Regex {
    Regex::new(r"\{\{([A-Z][A-Z0-9_]*)(?::([a-z]+))?\}\}").unwrap()
}

fn fmt_uuid(value: &str, fmt: Option<&str>) -> String {
    let u = uuid::Uuid::parse_str(value).unwrap();
    match fmt {
        None => value.to_owned(),
        Some("upper") => u.to_string().to_uppercase(),
        Some("simple") => u.simple().to_string(),
        Some("braced") => u.braced().to_string(),
        Some("urn") => u.urn().to_string(),
        Some(other) => panic!("unknown placeholder format {other}"),
    }
}

fn subst(text: &str, env: &HashMap<String, String>) -> String {
    placeholder()
        .replace_all(text, |c: &regex::Captures| match env.get(&c[1]) {
            Some(v) => fmt_uuid(v, c.get(2).map(|m| m.as_str())),
            None => c[0].to_owned(),
        })
        .into_owned()
}

fn subst_json(v: &Value, env: &HashMap<String, String>) -> Value {
    match v {
        Value::String(s) => Value::String(subst(s, env)),
        Value::Array(a) => Value::Array(a.iter().map(|x| subst_json(x, env)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (subst(k, env), subst_json(x, env)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn subst_bytes(data: &[u8], env: &HashMap<String, String>) -> Vec<u8> {
    if !data.windows(2).any(|w| w == b"{{") {
        return data.to_vec();
    }
    let re = regex::bytes::Regex::new(r"\{\{([A-Z][A-Z0-9_]*)(?::([a-z]+))?\}\}").unwrap();
    re.replace_all(data, |c: &regex::bytes::Captures| {
        let name = String::from_utf8_lossy(&c[1]).into_owned();
        match env.get(&name) {
            Some(v) => fmt_uuid(
                v,
                c.get(2).map(|m| std::str::from_utf8(m.as_bytes()).unwrap()),
            )
            .into_bytes(),
            None => c[0].to_vec(),
        }
    })
    .into_owned()
}

/// The first difference between the recorded and the actual body, as the reference
/// replayer defines it (volatile ids and datetimes are checked by format only).
fn diff(
    expected: &Value,
    actual: &Value,
    env: &HashMap<String, String>,
    volatile: &[String],
    path: &str,
    key: Option<&str>,
) -> Option<String> {
    let uuid_any = Regex::new(
        r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
    )
    .unwrap();
    let uuid_lower =
        Regex::new(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$").unwrap();
    let datetime = Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?Z$").unwrap();
    if let (Some(k), Value::String(e)) = (key, expected) {
        if volatile.iter().any(|v| v == k) && !e.contains("{{") {
            let a = actual.as_str().unwrap_or("");
            if uuid_any.is_match(e) {
                return (!uuid_lower.is_match(a))
                    .then(|| format!("{path}: expected a UUID, got {actual}"));
            }
            if datetime.is_match(e) {
                return (!datetime.is_match(a))
                    .then(|| format!("{path}: expected a datetime, got {actual}"));
            }
        }
    }
    match (expected, actual) {
        (Value::String(e), Value::String(a)) => {
            let e = subst(e, env);
            (e != *a).then(|| format!("{path}: expected {e:?}, got {a:?}"))
        }
        (Value::Object(e), Value::Object(a)) => {
            let ek: Vec<_> = e.keys().collect();
            let ak: Vec<_> = a.keys().collect();
            if ek.iter().any(|k| !a.contains_key(*k)) || ak.iter().any(|k| !e.contains_key(*k)) {
                return Some(format!("{path}: keys differ: expected {ek:?}, got {ak:?}"));
            }
            e.iter()
                .find_map(|(k, ev)| diff(ev, &a[k], env, volatile, &format!("{path}.{k}"), Some(k)))
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Some(format!(
                    "{path}: expected {} items, got {}: {actual}",
                    e.len(),
                    a.len()
                ));
            }
            e.iter()
                .zip(a)
                .enumerate()
                .find_map(|(i, (ev, av))| diff(ev, av, env, volatile, &format!("{path}[{i}]"), key))
        }
        (Value::Number(e), Value::Number(a)) => {
            let same_kind = e.is_f64() == a.is_f64();
            (!same_kind || e.as_f64() != a.as_f64())
                .then(|| format!("{path}: expected {e}, got {a}"))
        }
        (e, a) => (e != a).then(|| format!("{path}: expected {e}, got {a}")),
    }
}

async fn run_case(app: &TestApp, case: &Value) -> Option<String> {
    // A workspace of its own for every case.
    let org = app
        .store
        .create_org("golden", Plan::Enterprise)
        .await
        .unwrap();
    let ws = app.store.create_workspace(org.id, "golden").await.unwrap();
    let key = app
        .key_for(KeyScope::Workspace {
            org_id: org.id,
            workspace_id: ws.id,
        })
        .await;
    let mut env = HashMap::from([("TENANT".to_owned(), ws.id.to_string())]);

    for (i, step) in case["setup"].as_array().into_iter().flatten().enumerate() {
        let body = step.get("json").map(|j| subst_json(j, &env));
        let uri = subst(step["path"].as_str().unwrap(), &env);
        let res = app
            .call_as(&key, step["method"].as_str().unwrap(), &uri, body)
            .await;
        if let Some(expect) = step.get("expect").and_then(Value::as_u64) {
            if u64::from(res.status.as_u16()) != expect {
                return Some(format!(
                    "setup step {i} answered {}: {}",
                    res.status,
                    String::from_utf8_lossy(&res.body)
                ));
            }
        }
        for (var, field) in step["bind"].as_object().into_iter().flatten() {
            let v = res.json()[field.as_str().unwrap()]
                .as_str()
                .unwrap()
                .to_owned();
            env.insert(var.clone(), v);
        }
    }

    let mut headers: Vec<(String, String)> = Vec::new();
    for (k, v) in case["headers"].as_object().unwrap() {
        let mut v = v.as_str().unwrap().to_owned();
        if k.eq_ignore_ascii_case("x-api-key") || k.eq_ignore_ascii_case("authorization") {
            v = v.replace("test-key", &key);
        }
        headers.push((k.clone(), subst(&v, &env)));
    }
    let body = case["body_b64"].as_str().map(|b| {
        subst_bytes(
            &base64::engine::general_purpose::STANDARD.decode(b).unwrap(),
            &env,
        )
    });
    let mut uri = subst(case["path"].as_str().unwrap(), &env);
    let query = subst(case["query"].as_str().unwrap_or(""), &env);
    if !query.is_empty() {
        uri = format!("{uri}?{query}");
    }
    let header_refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let res = app
        .send(case["method"].as_str().unwrap(), &uri, &header_refs, body)
        .await;

    let want_status = case["status"].as_u64().unwrap();
    if u64::from(res.status.as_u16()) != want_status {
        return Some(format!(
            "status {} (want {want_status}): {}",
            res.status,
            String::from_utf8_lossy(&res.body)
        ));
    }
    let volatile: Vec<String> = case["volatile"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    match &case["response"] {
        Value::Null if res.body.is_empty() => None,
        Value::Null => Some(format!(
            "expected no body, got {:?}",
            String::from_utf8_lossy(&res.body)
        )),
        expected => match serde_json::from_slice::<Value>(&res.body) {
            Ok(actual) => diff(expected, &actual, &env, &volatile, "$", None),
            Err(_) => Some(format!(
                "expected JSON, got {:?}",
                String::from_utf8_lossy(&res.body)
            )),
        },
    }
}

async fn golden_cases(backend: Backend) {
    let app = TestApp::new(backend).await;
    // The recorded cases, then cases of our own for rules found since (each with the
    // rule in its notes).
    let recorded = include_str!("fixtures/golden-422.jsonl");
    let own = include_str!("fixtures/golden-own.jsonl");
    let cases: Vec<Value> = recorded
        .lines()
        .chain(own.lines())
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut ran = 0;
    let mut failures = Vec::new();
    for case in &cases {
        let id = case["id"].as_str().unwrap();
        ran += 1;
        if let Some(problem) = run_case(&app, case).await {
            failures.push(format!(
                "{id} {} {} -- {}\n    {problem}",
                case["method"], case["path"], case["notes"]
            ));
        }
    }
    println!("golden: {}/{ran} cases match", ran - failures.len());
    assert!(ran >= 280, "only {ran} cases replayed");
    assert!(
        failures.is_empty(),
        "{} of {ran} golden cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

on_both_backends!(golden_cases);
