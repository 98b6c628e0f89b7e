//! The render against golden files: a table of deployments that covers every
//! `resource_spec` field the render maps, secrets and secret references, both source
//! kinds (an image, and an image a build produced), deployments that bring their own
//! stores, a queue worker and a name too long for Kubernetes. The files were reviewed by
//! eye once; regenerate them with `HOSTPLANE_UPDATE_GOLDEN=1 cargo test -p
//! hostplane-agent --test render_golden` after an intended change and review the diff.

#![allow(clippy::unwrap_used)]

use hostplane_agent::kube::files::{FileSink, RenderSettings};
use protocol::{BuildSpec, DesiredDeployment, DesiredRevision, EnvVar};
use serde_json::json;
use std::path::PathBuf;
use uuid::Uuid;

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x1111_0000_0000_4000_8000_0000_0000_0000 + n)
}

fn deployment(name: &str, n: u128) -> DesiredDeployment {
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

fn revision(n: u128, image: &str) -> DesiredRevision {
    DesiredRevision {
        id: id(100 + n),
        status: "DEPLOYING".into(),
        image: Some(image.to_owned()),
        build: None,
        lease_holder: Some("agent-1".into()),
        created_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<EnvVar> {
    pairs
        .iter()
        .map(|(n, v)| EnvVar {
            name: (*n).into(),
            value: (*v).into(),
        })
        .collect()
}

/// The table: (case name, deployment, revision).
fn cases() -> Vec<(&'static str, DesiredDeployment, DesiredRevision)> {
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

fn sink() -> FileSink {
    let dir = std::env::temp_dir().join(format!("hostplane-render-{}", Uuid::new_v4()));
    let sink = FileSink::new(RenderSettings {
        listener_id: id(999),
        listener_key: "hp_golden_listener_key".into(),
        dir: dir.clone(),
        postgres_image: "docker.io/library/postgres:16".into(),
        redis_image: "docker.io/library/redis:7".into(),
    })
    .unwrap();
    let _ = std::fs::remove_dir_all(dir);
    sink
}

#[test]
fn render_matches_golden_files() {
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/render");
    let update = std::env::var("HOSTPLANE_UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let sink = sink();
    let mut mismatches = Vec::new();
    for (case, d, rev) in cases() {
        let files = sink.files(&d, &rev);
        // The same input gives the same bytes.
        assert_eq!(files, sink.files(&d, &rev), "{case}: not deterministic");
        let folder = golden.join(case);
        if update {
            let _ = std::fs::remove_dir_all(&folder);
            std::fs::create_dir_all(&folder).unwrap();
            for (name, content) in &files {
                std::fs::write(folder.join(name), content).unwrap();
            }
            continue;
        }
        let mut expected: Vec<String> = std::fs::read_dir(&folder)
            .unwrap_or_else(|e| panic!("{}: {e}", folder.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        expected.sort();
        let mut names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
        names.sort();
        assert_eq!(names, expected, "{case}: the set of files");
        for (name, content) in &files {
            let want = std::fs::read_to_string(folder.join(name)).unwrap();
            if *content != want {
                mismatches.push(format!(
                    "{case}/{name}:\n--- got\n{content}\n--- golden\n{want}"
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// What the golden files show, checked by rule as well, so a regenerated file cannot
/// quietly lose a promise.
#[test]
fn render_rules() {
    let sink = sink();
    let all = cases();
    let text = |case: &str| -> String {
        let (_, d, rev) = all.iter().find(|(c, _, _)| *c == case).unwrap();
        sink.files(d, rev)
            .iter()
            .map(|(n, c)| format!("### {n}\n{c}"))
            .collect()
    };
    let full = text("full");
    // Secrets only through secretKeyRef: the value never appears in a workload.
    assert!(!full.contains("sk-test"));
    for needle in [
        "kind: \"HorizontalPodAutoscaler\"",
        "minReplicas: 2",
        "maxReplicas: 6",
        "cpu: \"500m\"",
        "cpu: \"1500m\"",
        "memory: \"512Mi\"",
        "memory: \"1024Mi\"",
        "memory: \"3072Mi\"",
        "\"/storage/queue_entrypoint.sh\"",
        "serviceAccountName: \"agent-runner\"",
        "name: \"regcred\"",
        "mountPath: \"/cache\"",
        "name: \"migrate\"",
        "name: \"proxy\"",
        "storage: \"50Gi\"",
        "max_connections=200",
        "prometheus.io/scrape: \"true\"",
        "team: \"search\"",
        "app.kubernetes.io/managed-by: \"hostplane\"",
        "name: \"team-keys\"",
        "key: \"anthropic\"",
        "hostplane.dev/deployment-id:",
        "hostplane.dev/revision-id:",
    ] {
        assert!(full.contains(needle), "full lacks {needle}");
    }
    assert!(
        !full.contains("someone-else"),
        "our labels win over the user's"
    );
    let stores = text("own-stores");
    assert!(!stores.contains("postgres:16") && !stores.contains("redis:7"));
    assert!(stores.contains("key: \"POSTGRES_URI_CUSTOM\""));
    let minimal = text("minimal");
    assert!(minimal.contains("replicas: 1") && !minimal.contains("HorizontalPodAutoscaler"));
    assert!(
        !minimal.contains("queue"),
        "only prod deployments run a queue worker"
    );
    let long = text("long-name");
    for line in long.lines().filter(|l| l.trim_start().starts_with("name:")) {
        let value = line.split('"').nth(1).unwrap_or_default();
        assert!(value.len() <= 63, "{value}");
    }
}
