//! The table of deployments the render tests share: every `resource_spec` field the
//! render maps, secrets and secret references, both source kinds, deployments that bring
//! their own stores, a queue worker and a name too long for Kubernetes.

#![allow(dead_code, clippy::unwrap_used)]

use protocol::{BuildSpec, DesiredDeployment, DesiredRevision, EnvVar, RevisionStatus};
use serde_json::json;
use uuid::Uuid;

pub fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x1111_0000_0000_4000_8000_0000_0000_0000 + n)
}

pub fn deployment(name: &str, n: u128) -> DesiredDeployment {
    DesiredDeployment {
        id: id(n),
        name: name.to_owned(),
        namespace: Some("agents".into()),
        deployment_type: Some("dev".into()),
        status: "AWAITING_DATABASE".into(),
        deleting: false,
        active_revision_id: None,
        revision: None,
        resource_spec: None,
        secret_references: None,
        env: vec![],
    }
}

pub fn revision(n: u128, image: &str) -> DesiredRevision {
    DesiredRevision {
        id: id(100 + n),
        status: RevisionStatus::Deploying,
        image: Some(image.to_owned()),
        build: None,
        lease_holder: Some("agent-1".into()),
        created_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
    }
}

pub fn env(pairs: &[(&str, &str)]) -> Vec<EnvVar> {
    pairs
        .iter()
        .map(|(n, v)| EnvVar {
            name: (*n).into(),
            value: (*v).into(),
        })
        .collect()
}

/// The table: (case name, deployment, revision).
pub fn cases() -> Vec<(&'static str, DesiredDeployment, DesiredRevision)> {
    let image = "registry.example/acme/agent@sha256:\
                 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let minimal = deployment("minimal", 1);

    let mut full = deployment("full", 2);
    full.deployment_type = Some("prod".into());
    full.env = env(&[("OPENAI_API_KEY", "sk-test"), ("A_FLAG", "yes: no")]);
    full.secret_references = Some(json!([
        {"name": "ANTHROPIC_API_KEY", "secret_name": "team-keys", "secret_key": "anthropic"}
    ]));
    full.resource_spec = Some(json!({
        "min_scale": 2, "max_scale": 6, "cpu": 0.5, "cpu_limit": 1.5, "memory_mb": 512,
        "memory_limit_mb": null,
        "queue_min_scale": 1, "queue_max_scale": 1, "queue_cpu": 2, "queue_cpu_limit": null,
        "queue_memory_mb": 2048, "queue_memory_limit_mb": 3072,
        "redis_cpu": 0.25, "redis_cpu_limit": 0.5, "redis_memory_mb": 256,
        "redis_memory_limit_mb": null,
        "db_cpu": 1, "db_cpu_limit": 2, "db_memory_mb": 2048, "db_memory_limit_mb": 4096,
        "db_storage_gi": 50, "db_max_connections": 200,
        "labels": {"team": "search", "app.kubernetes.io/managed-by": "someone-else"},
        "annotations": {"prometheus.io/scrape": "true"},
        "service_account_name": "agent-runner",
        "image_pull_secrets": [{"name": "regcred"}],
        "volumes": [{"name": "cache", "emptyDir": {}, "configMap": null}],
        "volume_mounts": [{"name": "cache", "mountPath": "/cache", "readOnly": null}],
        "init_containers": [{"name": "migrate", "image": "busybox:1", "command": ["true"]}],
        "sidecars": [{"name": "proxy", "image": "envoy:1", "args": ["-c", "/etc/envoy.yaml"]}],
        "orchestrator_cpu": null, "executor_cpu": null,
    }));

    let mut stores = deployment("own-stores", 3);
    stores.env = env(&[
        (
            "POSTGRES_URI_CUSTOM",
            "postgres://u:p@db.example:5432/agent",
        ),
        ("REDIS_URI_CUSTOM", "redis://cache.example:6379"),
    ]);

    let mut built = deployment("from-source", 4);
    built.deployment_type = None;
    let mut built_rev = revision(4, "registry.example/hostplane/ws/from-source:rev");
    built_rev.build = Some(BuildSpec {
        langgraph_config_path: Some("langgraph.json".into()),
        install_command: None,
        build_command: None,
    });

    let long = deployment(
        "a-deployment-name-that-is-far-too-long-for-kubernetes-objects",
        5,
    );

    vec![
        ("minimal", minimal, revision(1, image)),
        ("full", full, revision(2, image)),
        ("own-stores", stores, revision(3, image)),
        ("from-source", built, built_rev),
        ("long-name", long, revision(5, image)),
    ]
}
