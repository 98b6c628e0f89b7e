//! What a deployment's `resource_spec` must hold before any mode writes it anywhere.
//!
//! The API accepts what the reference accepts: integers of any size and volume mounts or
//! volumes without a name or path. Written as they are, such values make objects the
//! Kubernetes API server refuses (replica counts are 32-bit; a mount needs `name` and
//! `mountPath`, a volume and a container need `name`), or a `LGP` the operator cannot
//! reconcile. The runner refuses such a revision with `DEPLOY_FAILED` before it reaches a
//! mode, with a reason that names the field.

use crate::runner::Failure;
use protocol::DesiredDeployment;
use serde_json::Value;

/// The reason of a revision refused here.
pub const INVALID: &str = "InvalidResourceSpec";

/// Fields that become 32-bit replica counts (`replicas`, `minReplicas`, `maxReplicas`).
const REPLICA_FIELDS: [&str; 4] = [
    "min_scale",
    "max_scale",
    "queue_min_scale",
    "queue_max_scale",
];

fn invalid(message: String) -> Failure {
    Failure::new(INVALID, message)
}

/// A field of `d`'s `resource_spec`, unless absent or `null`.
pub(crate) fn field<'a>(d: &'a DesiredDeployment, name: &str) -> Option<&'a Value> {
    d.resource_spec
        .as_ref()
        .and_then(|s| s.get(name))
        .filter(|v| !v.is_null())
}

/// The items of a list, numbered (none when absent or not a list).
fn entries(list: Option<&Value>) -> impl Iterator<Item = (usize, &Value)> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
}

/// `path.key` when it is a non-empty string, else the failure naming it.
fn named(item: &Value, path: &str, key: &str) -> Result<(), Failure> {
    match item.get(key).and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(()),
        _ => Err(invalid(format!(
            "resource_spec.{path} has no {key}; Kubernetes requires one"
        ))),
    }
}

fn mounts(list: Option<&Value>, path: &str) -> Result<(), Failure> {
    for (i, m) in entries(list) {
        named(m, &format!("{path}[{i}]"), "name")?;
        named(m, &format!("{path}[{i}]"), "mountPath")?;
    }
    Ok(())
}

/// Fails on the first value of `d`'s `resource_spec` that no mode could write validly.
pub fn check(d: &DesiredDeployment) -> Result<(), Failure> {
    for name in REPLICA_FIELDS {
        if let Some(v) = field(d, name) {
            let fits = v.as_i64().is_some_and(|n| n <= i64::from(i32::MAX))
                || v.as_f64().is_some_and(|n| n < 0.0);
            if !fits {
                return Err(invalid(format!(
                    "resource_spec.{name} is {v}; replica counts are at most {}",
                    i32::MAX
                )));
            }
        }
    }
    mounts(field(d, "volume_mounts"), "volume_mounts")?;
    for (i, v) in entries(field(d, "volumes")) {
        named(v, &format!("volumes[{i}]"), "name")?;
    }
    for list in ["init_containers", "sidecars"] {
        for (i, c) in entries(field(d, list)) {
            let path = format!("{list}[{i}]");
            named(c, &path, "name")?;
            mounts(c.get("volumeMounts"), &format!("{path}.volumeMounts"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A deployment with this `resource_spec` (also for the modes' own checks).
    pub(crate) fn with(spec: Value) -> DesiredDeployment {
        DesiredDeployment {
            id: uuid::Uuid::nil(),
            name: "d".into(),
            namespace: None,
            deployment_type: None,
            status: "DEPLOYING".into(),
            deleting: false,
            active_revision_id: None,
            revision: None,
            resource_spec: Some(spec),
            secret_references: None,
            env: vec![],
        }
    }

    fn message(spec: Value) -> Option<String> {
        check(&with(spec)).err().map(|f| {
            assert_eq!(f.reason, INVALID);
            f.message
        })
    }

    #[test]
    fn writable_specs_pass() {
        for spec in [
            json!({}),
            json!({"min_scale": 2147483647, "max_scale": 2147483647, "queue_min_scale": 0}),
            json!({"min_scale": -3, "max_scale": null}),
            json!({"volumes": [{"name": "v", "emptyDir": {}}],
                   "volume_mounts": [{"name": "v", "mountPath": "/v"}],
                   "sidecars": [{"name": "s", "image": "i",
                                 "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]}),
        ] {
            assert_eq!(message(spec.clone()), None, "{spec}");
        }
    }

    #[test]
    fn unwritable_specs_name_their_field() {
        for (spec, expected) in [
            (
                json!({"min_scale": 2147483648_i64}),
                "resource_spec.min_scale is 2147483648; replica counts are at most 2147483647",
            ),
            (
                json!({"queue_max_scale": 1e300}),
                "resource_spec.queue_max_scale is 1e+300; replica counts are at most 2147483647",
            ),
            (
                json!({"max_scale": 18446744073709551615_u64}),
                "resource_spec.max_scale is 18446744073709551615; replica counts are at most \
                 2147483647",
            ),
            (
                json!({"volume_mounts": [{"name": "v", "mountPath": "/v"}, {"name": "w"}]}),
                "resource_spec.volume_mounts[1] has no mountPath; Kubernetes requires one",
            ),
            (
                json!({"volume_mounts": [{"name": null, "mountPath": "/v"}]}),
                "resource_spec.volume_mounts[0] has no name; Kubernetes requires one",
            ),
            (
                json!({"volumes": [{"emptyDir": {}}]}),
                "resource_spec.volumes[0] has no name; Kubernetes requires one",
            ),
            (
                json!({"init_containers": [{"name": "i", "image": "x",
                                            "volumeMounts": [{"name": "v"}]}]}),
                "resource_spec.init_containers[0].volumeMounts[0] has no mountPath; Kubernetes \
                 requires one",
            ),
        ] {
            assert_eq!(message(spec.clone()).as_deref(), Some(expected), "{spec}");
        }
    }
}
