//! The parts of a deployment's `source_config` and a revision's
//! `source_revision_config` that hostplane acts on, as types. Both are stored as the
//! client sent them (the API echoes them back as they were, unknown fields and order
//! included), and validated at the edge against the reference's models; every reader
//! goes through these types instead of looking fields up by name.

use serde::Deserialize;
use serde_json::Value;

/// `source_config`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct SourceConfig {
    /// The listener an `external_docker` deployment runs on, as sent.
    pub listener_id: Option<String>,
    pub listener_config: Option<ListenerConfig>,
    /// Replicas, CPU, memory and the pod-level settings, as the user gave them.
    pub resource_spec: Option<Value>,
    pub deployment_type: Option<String>,
    /// JavaScript projects: how the CLI installs and builds them.
    pub install_command: Option<String>,
    pub build_command: Option<String>,
    /// `github` deployments: the integration that reads `repo_url`, and whether a push to
    /// the followed branch builds a new revision.
    pub integration_id: Option<String>,
    pub repo_url: Option<String>,
    pub build_on_push: Option<bool>,
}

/// `source_config.listener_config`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ListenerConfig {
    pub k8s_namespace: Option<String>,
}

/// `source_revision_config`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct RevisionConfig {
    /// The image an `external_docker` or pushed revision runs.
    pub image_uri: Option<String>,
    /// The uploaded tarball of an `internal_source` revision.
    pub source_tarball_path: Option<String>,
    pub langgraph_config_path: Option<String>,
    /// `github` revisions: the branch, tag or commit followed, and the commit it
    /// resolved to when the revision was made.
    pub repo_ref: Option<String>,
    pub repo_commit_sha: Option<String>,
}

impl SourceConfig {
    /// The typed view of a stored `source_config`; a field of the wrong shape (which
    /// validation lets nothing store) reads as absent.
    pub fn of(v: &Value) -> Self {
        Self::deserialize(v).unwrap_or_else(|_| lenient(v))
    }

    /// The namespace the deployment names, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.listener_config.as_ref()?.k8s_namespace.as_deref()
    }
}

impl RevisionConfig {
    /// The typed view of a stored `source_revision_config` (see [`SourceConfig::of`]).
    pub fn of(v: &Value) -> Self {
        Self::deserialize(v).unwrap_or_else(|_| lenient(v))
    }
}

/// Field by field, keeping every field that has its type.
fn lenient<T: for<'de> Deserialize<'de> + Default>(v: &Value) -> T {
    let Some(fields) = v.as_object() else {
        return T::default();
    };
    let mut kept = serde_json::Map::new();
    for (k, field) in fields {
        let mut one = serde_json::Map::new();
        one.insert(k.clone(), field.clone());
        if serde_json::from_value::<T>(Value::Object(one)).is_ok() {
            kept.insert(k.clone(), field.clone());
        }
    }
    serde_json::from_value(Value::Object(kept)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_what_hostplane_acts_on_and_ignores_the_rest() {
        let c = SourceConfig::of(&json!({
            "listener_config": {"k8s_namespace": "agents"}, "resource_spec": {"min_scale": 2},
            "build_command": "npm run build", "unknown": 1, "deployment_type": null,
        }));
        assert_eq!(c.namespace(), Some("agents"));
        assert_eq!(c.resource_spec, Some(json!({"min_scale": 2})));
        assert_eq!(c.build_command.as_deref(), Some("npm run build"));
        assert_eq!(c.deployment_type, None);
        // One field of the wrong shape does not hide the others.
        let r = RevisionConfig::of(&json!({"image_uri": 5, "source_tarball_path": "p"}));
        assert_eq!(
            (r.image_uri, r.source_tarball_path.as_deref()),
            (None, Some("p"))
        );
        assert_eq!(RevisionConfig::of(&json!(null)), RevisionConfig::default());
    }
}
