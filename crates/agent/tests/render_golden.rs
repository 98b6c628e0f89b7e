//! The render against golden files: a table of deployments that covers every
//! `resource_spec` field the render maps, secrets and secret references, both source
//! kinds (an image, and an image a build produced), deployments that bring their own
//! stores, a queue worker and a name too long for Kubernetes. The files were reviewed by
//! eye once; regenerate them with `HOSTPLANE_UPDATE_GOLDEN=1 cargo test -p
//! hostplane-agent --test render_golden` after an intended change and review the diff.

#![allow(clippy::unwrap_used)]

mod common;

use common::{cases, id};
use hostplane_agent::kube::files::{FileSink, RenderSettings};
use hostplane_agent::kube::RenderInputs;
use std::path::PathBuf;
use uuid::Uuid;

fn sink() -> FileSink {
    let dir = std::env::temp_dir().join(format!("hostplane-render-{}", Uuid::new_v4()));
    let sink = FileSink::new(RenderSettings {
        inputs: RenderInputs {
            listener_id: id(999),
            listener_key: "hp_golden_listener_key".into(),
            postgres_image: "docker.io/library/postgres:16".into(),
            redis_image: "docker.io/library/redis:7".into(),
        },
        dir: dir.clone(),
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
