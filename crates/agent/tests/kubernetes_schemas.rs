//! Every object the render makes, for every deployment of the shared table, is checked
//! against the Kubernetes API's own types: the `k8s-openapi` crate, generated from the
//! OpenAPI document the Kubernetes project publishes (`api/openapi-spec` in
//! kubernetes/kubernetes; the `latest` version the crate's feature names). An object
//! must read into its kind's type (so a required field is present and every value has
//! the field's type: a replica count fits an `int32`, a mount has its `mountPath`), and
//! that type must write back to the very same object (so no field is unknown to the
//! API, which would drop it without a word).

#![allow(clippy::unwrap_used)]

mod common;

use common::{cases, id};
use hostplane_agent::kube::RenderInputs;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Secret, Service};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

fn inputs() -> RenderInputs {
    RenderInputs {
        listener_id: id(999),
        listener_key: "hp_schema_listener_key".into(),
        postgres_image: "docker.io/library/postgres:16".into(),
        redis_image: "docker.io/library/redis:7".into(),
    }
}

/// The first place where `a` has something `b` does not hold the same way; keys in
/// `skip` may be absent from `b`.
fn missing(a: &Value, b: &Value, path: &str, skip: &[&str]) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x.iter().find_map(|(k, v)| {
            let at = format!("{path}.{k}");
            match y.get(k) {
                Some(w) => missing(v, w, &at, skip),
                None if skip.contains(&k.as_str()) => None,
                None => Some(at),
            }
        }),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (v, w))| missing(v, w, &format!("{path}[{i}]"), skip)),
        _ => (a != b).then(|| path.to_owned()),
    }
}

/// Reads `doc` as a `T` and writes it back: the problem, if the type refuses it, drops
/// or changes a field (unknown to the API, or of the wrong type), or fills one in (a
/// required field that was missing; only the `apiVersion` and `kind` of an embedded
/// object may be added, the API defaults them).
fn round_trip<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<(), String> {
    let typed: T = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).unwrap();
    if let Some(at) = missing(doc, &back, "", &[]) {
        return Err(format!(
            "{at} is not a field the API keeps as written:\n  {doc}"
        ));
    }
    if let Some(at) = missing(&back, doc, "", &["apiVersion", "kind"]) {
        return Err(format!("{at} is required and missing:\n  {doc}"));
    }
    Ok(())
}

/// Checks one rendered object against the type of its kind.
fn check(kind: &str, doc: &Value) -> Result<(), String> {
    match kind {
        "Deployment" => round_trip::<Deployment>(doc),
        "StatefulSet" => round_trip::<StatefulSet>(doc),
        "Service" => round_trip::<Service>(doc),
        "Secret" => round_trip::<Secret>(doc),
        "HorizontalPodAutoscaler" => round_trip::<HorizontalPodAutoscaler>(doc),
        "Job" => round_trip::<k8s_openapi::api::batch::v1::Job>(doc),
        other => Err(format!("no schema for kind {other}")),
    }
}

#[test]
fn every_rendered_object_is_valid_for_the_kubernetes_api() {
    let inputs = inputs();
    let mut kinds = std::collections::BTreeSet::new();
    let login = protocol::RegistryCredential {
        protocol_version: 1,
        registry: "registry.example:5000".into(),
        repository_prefix: "ws/".into(),
        username: "hostplane".into(),
        password: "secret".into(),
        expires_at: chrono::Utc::now(),
    };
    let build = protocol::BuildCredential {
        protocol_version: 1,
        source_url: "https://hp.example/source?token=t".into(),
        registry: login.registry.clone(),
        repository_prefix: login.repository_prefix.clone(),
        username: login.username.clone(),
        password: login.password.clone(),
        expires_at: login.expires_at,
    };
    for (case, d, rev) in cases() {
        // With and without the registry login's Secret among the pull secrets; and the
        // objects of a build.
        let job = hostplane_agent::kube::job::build_objects(
            uuid::Uuid::nil(),
            &d,
            &rev,
            &build,
            "FROM scratch\n",
            ".",
            "buildkit:1",
        )
        .1;
        let objects = inputs
            .objects(&d, &rev, false, None)
            .into_iter()
            .chain(inputs.objects(&d, &rev, false, Some("agent-registry")))
            .chain([hostplane_agent::kube::job::pull_secret(
                uuid::Uuid::nil(),
                &d,
                &login,
            )])
            .chain(job);
        for object in objects {
            if let Err(problem) = check(object.kind, &object.doc) {
                panic!("{case}: {} {}: {problem}", object.kind, object.name);
            }
            kinds.insert(object.kind);
        }
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        [
            "Deployment",
            "HorizontalPodAutoscaler",
            "Job",
            "Secret",
            "Service",
            "StatefulSet"
        ]
    );
}

/// The check itself fails on what the agent must never write: an `int32` field past its
/// range, a mount without `mountPath`, a field the API does not know.
#[test]
fn the_check_refuses_invalid_objects() {
    let inputs = inputs();
    let (_, d, rev) = cases().into_iter().next().unwrap();
    let objects = inputs.objects(&d, &rev, false, None);
    let deployment = objects.iter().find(|o| o.kind == "Deployment").unwrap();
    let mut too_many = deployment.doc.clone();
    too_many["spec"]["replicas"] = 3_000_000_000_i64.into();
    let mut no_path = deployment.doc.clone();
    no_path["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] =
        serde_json::json!([{"name": "data"}]);
    let mut unknown = deployment.doc.clone();
    unknown["spec"]["replica"] = 2.into();
    for (what, doc) in [
        ("replicas past int32", too_many),
        ("a mount without mountPath", no_path),
        ("an unknown field", unknown),
    ] {
        assert!(check("Deployment", &doc).is_err(), "{what} passed");
    }
}

/// The agent's own check of a `resource_spec` (`spec::check`, run before any mode
/// writes) refuses what the Kubernetes types refuse once rendered, and passes every
/// deployment of the table.
#[test]
fn the_agents_spec_check_agrees_with_the_api() {
    let inputs = inputs();
    for (case, d, _) in cases() {
        assert!(hostplane_agent::spec::check(&d).is_ok(), "{case}");
    }
    let (_, base, rev) = cases().into_iter().next().unwrap();
    for spec in [
        serde_json::json!({"min_scale": 3_000_000_000_i64}),
        serde_json::json!({"volume_mounts": [{"name": "v"}]}),
        serde_json::json!({"volume_mounts": [{"mountPath": "/v"}]}),
        serde_json::json!({"volumes": [{"emptyDir": {}}]}),
        serde_json::json!({"sidecars": [{"image": "i"}]}),
    ] {
        let mut d = base.clone();
        d.resource_spec = Some(spec.clone());
        assert!(
            hostplane_agent::spec::check(&d).is_err(),
            "{spec} passed the agent"
        );
        let refused = inputs
            .objects(&d, &rev, false, None)
            .iter()
            .any(|o| check(o.kind, &o.doc).is_err());
        assert!(refused, "{spec} passed the Kubernetes types");
    }
}
