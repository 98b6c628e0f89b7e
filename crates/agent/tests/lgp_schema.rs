//! The `lgp` mode's objects: every `LGP` the render makes, for every deployment of the
//! shared table, is checked against a schema of the custom resource's fields, written
//! here by hand from the definition the official Helm chart publishes
//! (`charts/langgraph-dataplane/templates/operator/crds.yaml` in langchain-ai/helm,
//! `lgps.apps.langchain.ai`, version `v1alpha1`): field names, types, enums, int32
//! ranges and required fields. A field the schema does not know is an error, since the
//! API server would drop it without a word. The objects are also pinned as golden files
//! (`HOSTPLANE_UPDATE_GOLDEN=1` regenerates them).

#![allow(clippy::unwrap_used)]

mod common;

use common::{cases, id};
use hostplane_agent::kube::render::{render_lgp, RenderContext};
use hostplane_agent::kube::yaml::to_yaml;
use serde_json::Value;
use std::path::PathBuf;

/// A field type of the schema.
enum T {
    Str,
    Bool,
    /// An integer of `format: int32`.
    Int32,
    Int,
    Enum(&'static [&'static str]),
    /// A Kubernetes quantity: an integer or a string.
    Quantity,
    /// An object with these fields, of which these are required.
    Obj(Vec<(&'static str, T)>, &'static [&'static str]),
    /// A map of strings (labels, annotations, node selectors).
    StrMap,
    /// A map to values of a type.
    Map(Box<T>),
    Arr(Box<T>),
    /// An object of a Kubernetes core type the CRD embeds in full (volumes, containers,
    /// affinity...): the agent passes the user's own objects through unchanged.
    Embedded,
}

fn obj(fields: Vec<(&'static str, T)>) -> T {
    T::Obj(fields, &[])
}

fn arr(t: T) -> T {
    T::Arr(Box::new(t))
}

/// `ResourceRequirements`.
fn resources() -> T {
    obj(vec![
        ("claims", arr(T::Embedded)),
        ("limits", T::Map(Box::new(T::Quantity))),
        ("requests", T::Map(Box::new(T::Quantity))),
    ])
}

/// The LGP resource, from its published definition.
fn lgp() -> T {
    let env_var = T::Obj(
        vec![
            ("name", T::Str),
            ("value", T::Str),
            ("valueFrom", T::Embedded),
        ],
        &["name"],
    );
    let server_spec = obj(vec![
        ("annotations", T::StrMap),
        ("env", arr(env_var)),
        ("image", T::Str),
        ("imagePullSecrets", arr(T::Embedded)),
        ("initContainers", arr(T::Embedded)),
        ("labels", T::StrMap),
        ("numJobsPerWorker", T::Int),
        ("queueEnabled", T::Bool),
        ("queueResources", resources()),
        ("replicas", T::Int32),
        ("resources", resources()),
        ("serviceAccountName", T::Str),
        ("sidecars", arr(T::Embedded)),
        ("volumeMounts", arr(T::Embedded)),
        ("volumes", arr(T::Embedded)),
    ]);
    let spec = obj(vec![
        ("affinity", T::Embedded),
        ("annotations", T::StrMap),
        (
            "autoscaling",
            T::Obj(
                vec![
                    ("autoscalerType", T::Enum(&["HPA", "KEDA"])),
                    ("enabled", T::Bool),
                    ("maxReplicas", T::Int32),
                    ("minReplicas", T::Int32),
                    ("queueMaxReplicas", T::Int32),
                    ("queueMinReplicas", T::Int32),
                ],
                &["enabled"],
            ),
        ),
        (
            "database",
            obj(vec![
                ("enabled", T::Bool),
                ("legacyName", T::Bool),
                ("maxConnections", T::Int),
                ("resources", resources()),
                ("secretName", T::Str),
                ("storageSizeGi", T::Int),
            ]),
        ),
        ("ingress", T::Obj(vec![("enabled", T::Bool)], &["enabled"])),
        ("labels", T::StrMap),
        ("nodeSelector", T::StrMap),
        (
            "redis",
            obj(vec![("enabled", T::Bool), ("resources", resources())]),
        ),
        ("serverSpec", server_spec),
        ("tolerations", arr(T::Embedded)),
    ]);
    T::Obj(
        vec![
            ("apiVersion", T::Enum(&["apps.langchain.ai/v1alpha1"])),
            ("kind", T::Enum(&["LGP"])),
            ("metadata", T::Embedded),
            ("spec", spec),
        ],
        &["apiVersion", "kind", "metadata", "spec"],
    )
}

/// Every way `v` breaks the schema, as `path: problem`.
fn check(t: &T, v: &Value, path: &str, errors: &mut Vec<String>) {
    let mut bad = |what: &str| errors.push(format!("{path}: {what}, got {v}"));
    match t {
        T::Str => {
            if !v.is_string() {
                bad("expected a string")
            }
        }
        T::Bool => {
            if !v.is_boolean() {
                bad("expected a boolean")
            }
        }
        T::Int => {
            if !v.is_i64() {
                bad("expected an integer")
            }
        }
        T::Int32 => {
            if v.as_i64().and_then(|n| i32::try_from(n).ok()).is_none() {
                bad("expected an int32")
            }
        }
        T::Enum(values) => {
            if !v.as_str().is_some_and(|s| values.contains(&s)) {
                bad(&format!("expected one of {values:?}"))
            }
        }
        T::Quantity => {
            if !(v.is_string() || v.is_i64()) {
                bad("expected a quantity")
            }
        }
        T::Embedded => {
            if !v.is_object() {
                bad("expected an object")
            }
        }
        T::StrMap => match v.as_object() {
            Some(m) if m.values().all(Value::is_string) => {}
            _ => bad("expected a map of strings"),
        },
        T::Map(inner) => match v.as_object() {
            Some(m) => {
                for (k, item) in m {
                    check(inner, item, &format!("{path}.{k}"), errors);
                }
            }
            None => bad("expected a map"),
        },
        T::Arr(inner) => match v.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    check(inner, item, &format!("{path}[{i}]"), errors);
                }
            }
            None => bad("expected an array"),
        },
        T::Obj(fields, required) => {
            let Some(m) = v.as_object() else {
                return bad("expected an object");
            };
            for r in *required {
                if !m.contains_key(*r) {
                    errors.push(format!("{path}: {r} is required"));
                }
            }
            for (k, item) in m {
                match fields.iter().find(|(name, _)| name == k) {
                    Some((_, ft)) => check(ft, item, &format!("{path}.{k}"), errors),
                    None => errors.push(format!("{path}: unknown field {k}")),
                }
            }
        }
    }
}

fn context() -> RenderContext<'static> {
    RenderContext {
        listener_id: id(999),
        postgres_password: "unused-in-lgp-mode",
        postgres_image: "docker.io/library/postgres:16",
        redis_image: "docker.io/library/redis:7",
    }
}

#[test]
fn every_lgp_matches_the_crd_schema() {
    let ctx = context();
    let schema = lgp();
    for (case, d, rev) in cases() {
        let objects = render_lgp(&d, &rev, &ctx);
        let kinds: Vec<&str> = objects.iter().map(|o| o.kind).collect();
        assert_eq!(kinds, ["Secret", "LGP"], "{case}");
        let mut errors = Vec::new();
        check(&schema, &objects[1].doc, "LGP", &mut errors);
        assert!(errors.is_empty(), "{case}:\n{}", errors.join("\n"));
    }
}

/// The schema check itself catches what it should.
#[test]
fn the_schema_check_refuses_wrong_objects() {
    let ctx = context();
    let (_, d, rev) = cases().into_iter().next().unwrap();
    let good = render_lgp(&d, &rev, &ctx)[1].doc.clone();
    let schema = lgp();
    let broken = |edit: &dyn Fn(&mut Value)| {
        let mut doc = good.clone();
        edit(&mut doc);
        let mut errors = Vec::new();
        check(&schema, &doc, "LGP", &mut errors);
        errors
    };
    assert_eq!(
        broken(&|d| d["spec"]["serverSpec"]["replica"] = 1.into()),
        ["LGP.spec.serverSpec: unknown field replica"]
    );
    assert_eq!(
        broken(&|d| d["spec"]["autoscaling"] = serde_json::json!({"autoscalerType": "VPA"})),
        [
            "LGP.spec.autoscaling: enabled is required",
            "LGP.spec.autoscaling.autoscalerType: expected one of [\"HPA\", \"KEDA\"], got \"VPA\""
        ]
    );
    assert_eq!(
        broken(&|d| d["spec"]["serverSpec"]["replicas"] = (1_i64 << 40).into()),
        ["LGP.spec.serverSpec.replicas: expected an int32, got 1099511627776"]
    );
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
