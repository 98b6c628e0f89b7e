//! The `lgp` mode's objects: every `LGP` the render makes, for every deployment of the
//! shared table, is validated against the custom resource's published schema, kept in
//! `tests/schemas/lgp-v1alpha1.json`: the `openAPIV3Schema` of `lgps.apps.langchain.ai`
//! version `v1alpha1` from the official Helm chart (langchain-ai/helm,
//! `charts/langgraph-dataplane/templates/operator/crds.yaml`, the commit named in the
//! file), with its description texts left out. Two rules of the Kubernetes API server
//! that JSON Schema does not express are added when the schema is loaded: a field the
//! schema does not list is an error (the API server would prune it without a word), and
//! `format: int32`/`int64` bound the integer. The objects are also pinned as golden
//! files (`HOSTPLANE_UPDATE_GOLDEN=1` regenerates them).
//!
//! To take a newer chart: extract the version's `openAPIV3Schema` from the chart's CRD
//! (the file's `{{ }}` lines removed), drop every `description` key, and store it with
//! its source under the same name.

#![allow(clippy::unwrap_used)]

mod common;

use common::{cases, id};
use hostplane_agent::kube::render::{render_lgp, RenderContext};
use hostplane_agent::kube::yaml::to_yaml;
use serde_json::{json, Value};
use std::path::PathBuf;

/// The stored schema, with the API server's rules added.
fn crd_schema() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/schemas/lgp-v1alpha1.json");
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut schema = stored["openAPIV3Schema"].clone();
    strict(&mut schema);
    schema
}

/// Adds, everywhere in `schema`, what the API server enforces beyond JSON Schema.
fn strict(schema: &mut Value) {
    let Some(map) = schema.as_object_mut() else {
        return;
    };
    let preserves = map.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    if map.contains_key("properties") && !map.contains_key("additionalProperties") && !preserves {
        map.insert("additionalProperties".into(), json!(false));
    }
    let bounds = match map.get("format").and_then(Value::as_str) {
        Some("int32") => Some((i64::from(i32::MIN), i64::from(i32::MAX))),
        Some("int64") => Some((i64::MIN, i64::MAX)),
        _ => None,
    };
    if let Some((min, max)) = bounds {
        map.entry("minimum").or_insert(json!(min));
        map.entry("maximum").or_insert(json!(max));
    }
    for value in map.values_mut() {
        match value {
            Value::Array(items) => items.iter_mut().for_each(strict),
            other => strict(other),
        }
    }
}

/// The validation errors of `doc`, as `path: message`, in a stable order.
fn errors(validator: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    let mut out: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    out.sort();
    out
}

fn context() -> RenderContext<'static> {
    RenderContext {
        listener_id: id(999),
        postgres_password: "unused-in-lgp-mode",
        postgres_image: "docker.io/library/postgres:16",
        redis_image: "docker.io/library/redis:7",
        pull_secret: None,
    }
}

#[test]
fn every_lgp_matches_the_crd_schema() {
    let ctx = context();
    let validator = jsonschema::validator_for(&crd_schema()).unwrap();
    for (case, d, rev) in cases() {
        let objects = render_lgp(&d, &rev, &ctx);
        let kinds: Vec<&str> = objects.iter().map(|o| o.kind).collect();
        assert_eq!(kinds, ["Secret", "LGP"], "{case}");
        let found = errors(&validator, &objects[1].doc);
        assert!(found.is_empty(), "{case}:\n{}", found.join("\n"));
    }
}

/// The schema check itself catches what it should: an unknown field, a missing
/// required one, a value outside an enum, an int32 past its range.
#[test]
fn the_schema_check_refuses_wrong_objects() {
    let ctx = context();
    let (_, d, rev) = cases().into_iter().next().unwrap();
    let good = render_lgp(&d, &rev, &ctx)[1].doc.clone();
    let validator = jsonschema::validator_for(&crd_schema()).unwrap();
    assert_eq!(errors(&validator, &good), Vec::<String>::new());
    let broken = |edit: &dyn Fn(&mut Value)| {
        let mut doc = good.clone();
        edit(&mut doc);
        errors(&validator, &doc)
    };
    for (what, edit) in [
        (
            "an unknown field",
            &(|d: &mut Value| d["spec"]["serverSpec"]["replica"] = 1.into()) as &dyn Fn(&mut Value),
        ),
        ("no enabled", &|d: &mut Value| {
            d["spec"]["autoscaling"] = json!({"autoscalerType": "HPA"})
        }),
        ("a value outside the enum", &|d: &mut Value| {
            d["spec"]["autoscaling"] = json!({"enabled": true, "autoscalerType": "VPA"})
        }),
        ("an int32 past its range", &|d: &mut Value| {
            d["spec"]["serverSpec"]["replicas"] = (1_i64 << 40).into()
        }),
    ] {
        let found = broken(edit);
        assert!(!found.is_empty(), "{what} passed");
    }
}

#[test]
fn lgp_objects_match_golden_files() {
    let ctx = context();
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/lgp");
    let update = std::env::var("HOSTPLANE_UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let mut mismatches = Vec::new();
    for (case, d, rev) in cases() {
        let text: String = render_lgp(&d, &rev, &ctx)
            .iter()
            .map(|o| format!("---\n{}", to_yaml(&o.doc)))
            .collect();
        let file = golden.join(format!("{case}.yaml"));
        if update {
            std::fs::create_dir_all(&golden).unwrap();
            std::fs::write(&file, &text).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&file).unwrap_or_default();
        if text != want {
            mismatches.push(format!("{case}:\n--- got\n{text}\n--- golden\n{want}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
