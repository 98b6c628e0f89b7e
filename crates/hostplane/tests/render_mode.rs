//! `render` mode end to end with the two real binaries: `hostplane serve` and
//! `hostplane listener --mode render`. Files appear for a new deployment (and the
//! revision counts as deployed once written), stay byte for byte the same across an agent
//! restart, follow an update, are removed with the deployment; a deployment in a
//! namespace the listener no longer serves fails instead of being written, and a source
//! revision's build fails at once (render mode does not build).

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use support::agent::listener_with_key;
use support::{bin, sqlite_db, wait_until, Db, Server};

struct Agent(Child);

impl Agent {
    fn start(server: &Server, db: &Db, listener: &str, key: &str, dir: &Path) -> Agent {
        let child = bin()
            .args([
                "listener",
                "--mode",
                "render",
                "--control-plane-url",
                &server.url(),
            ])
            .args(["--listener-id", listener, "--agent-id", "render-agent"])
            .arg("--render-dir")
            .arg(dir)
            .env("HOSTPLANE_LISTENER_KEY", key)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(db.dir.0.join("render-agent.log")).unwrap())
            .spawn()
            .unwrap();
        Agent(child)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every file of a folder: name → bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn render_mode_end_to_end() {
    let db = sqlite_db();
    let server = Server::start(&db);
    let (listener, key) = listener_with_key(&server, &db, "gitops");
    let out = db.dir.0.join("manifests");
    let agent = Agent::start(&server, &db, &listener, &key, &out);
    let (status, d) = server.call(
        "POST",
        "/v2/deployments",
        Some(json!({
            "name": "docs-bot", "source": "external_docker",
            "source_config": {"listener_id": listener,
                              "resource_spec": {"min_scale": 1, "max_scale": 3}},
            "source_revision_config": {"image_uri": "registry.example/docs-bot:1"},
            "secrets": [{"name": "OPENAI_API_KEY", "value": "sk-render"}],
        })),
    );
    assert_eq!(status, 201, "{d}");
    let dep = d["id"].as_str().unwrap().to_owned();
    let rev = d["latest_revision_id"].as_str().unwrap().to_owned();
    wait_until("the first revision to be written", 30, || {
        server.revision_status(&dep, &rev) == "DEPLOYED"
    });
    let folder: PathBuf = out.join("ns").join("docs-bot");
    let first = snapshot(&folder);
    let names: Vec<&str> = first.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "deployment-docs-bot-redis.yaml",
            "deployment-docs-bot.yaml",
            "horizontalpodautoscaler-docs-bot.yaml",
            "kustomization.yaml",
            "secret-docs-bot-env.yaml",
            "secret-docs-bot-postgres.yaml",
            "service-docs-bot-postgres.yaml",
            "service-docs-bot-redis.yaml",
            "service-docs-bot.yaml",
            "statefulset-docs-bot-postgres.yaml",
        ]
    );
    let kustomization = String::from_utf8(first[3].1.clone()).unwrap();
    assert!(kustomization.starts_with(&format!(
        "# Written by hostplane listener for deployment {dep}; do not edit.\n"
    )));
    for (name, _) in first.iter().filter(|(n, _)| n != "kustomization.yaml") {
        assert!(
            kustomization.contains(&format!("- \"{name}\"")),
            "{name} not listed"
        );
    }
    let server_yaml = String::from_utf8(first[1].1.clone()).unwrap();
    assert!(server_yaml.contains("image: \"registry.example/docs-bot:1\""));
    assert!(
        !server_yaml.contains("sk-render"),
        "secrets only through the Secret"
    );

    println!("a restarted agent writes the same bytes");
    drop(agent);
    // While it is down, the folder drifts: one file goes, one is edited. The restarted
    // agent must write them again, from scratch, to the very bytes of the first run.
    std::fs::remove_file(folder.join("service-docs-bot.yaml")).unwrap();
    std::fs::write(folder.join("deployment-docs-bot.yaml"), "edited by hand\n").unwrap();
    assert_ne!(snapshot(&folder), first);
    let agent = Agent::start(&server, &db, &listener, &key, &out);
    wait_until(
        "the restarted agent to write the folder back to the first run's bytes",
        30,
        || snapshot(&folder) == first,
    );

    println!("an update rewrites the files");
    let (status, patched) = server.call(
        "PATCH",
        &format!("/v2/deployments/{dep}"),
        Some(json!({"source_revision_config": {"image_uri": "registry.example/docs-bot:2"}})),
    );
    assert_eq!(status, 200, "{patched}");
    let rev2 = patched["latest_revision_id"].as_str().unwrap().to_owned();
    wait_until("the update to be written", 30, || {
        server.revision_status(&dep, &rev2) == "DEPLOYED"
    });
    let server_yaml = std::fs::read_to_string(folder.join("deployment-docs-bot.yaml")).unwrap();
    assert!(server_yaml.contains("image: \"registry.example/docs-bot:2\""));
    assert!(server_yaml.contains(&rev2));

    println!("a namespace the listener no longer serves: DEPLOY_FAILED, nothing written");
    let (status, _) = server.call(
        "PATCH",
        &format!("/v2/listeners/{listener}"),
        Some(json!({"compute_config": {"k8s_namespaces": ["other"]}})),
    );
    assert_eq!(status, 200);
    let (_, patched) = server.call(
        "PATCH",
        &format!("/v2/deployments/{dep}"),
        Some(json!({"source_revision_config": {"image_uri": "registry.example/docs-bot:3"}})),
    );
    let rev3 = patched["latest_revision_id"].as_str().unwrap().to_owned();
    wait_until("the refusal", 30, || {
        server.revision_status(&dep, &rev3) == "DEPLOY_FAILED"
    });
    let (_, logs) = server.call(
        "POST",
        &format!("/v1/projects/{dep}/deploy_logs"),
        Some(json!({"limit": 1})),
    );
    assert!(
        logs["logs"][0]["message"]
            .as_str()
            .unwrap()
            .contains("NamespaceNotServed"),
        "{logs}"
    );
    assert!(
        std::fs::read_to_string(folder.join("deployment-docs-bot.yaml"))
            .unwrap()
            .contains("docs-bot:2")
    );
    let (status, _) = server.call(
        "PATCH",
        &format!("/v2/listeners/{listener}"),
        Some(json!({"compute_config": {"k8s_namespaces": ["ns"]}})),
    );
    assert_eq!(status, 200);

    println!("a source revision: render mode does not build, so its build fails at once");
    let s = server.source_deployment("from-source");
    let sdep = s["id"].as_str().unwrap().to_owned();
    // Its first revision has no source yet: nothing to build, and nothing is refused.
    let first = s["latest_revision_id"].as_str().unwrap().to_owned();
    let project = support::source::minimal_project();
    let srev = server.upload_source(&sdep, &project, "langgraph.json");
    wait_until("the build to be refused", 30, || {
        server.revision_status(&sdep, &srev) == "BUILD_FAILED"
    });
    let (_, logs) = server.call(
        "POST",
        &format!("/v1/projects/{sdep}/revisions/{srev}/build_logs"),
        Some(json!({"limit": 1})),
    );
    assert_eq!(
        logs["logs"][0]["message"],
        format!(
            "Build of revision {srev} failed: BuildNotSupported: render mode does not build \
             images: build the image in CI and deploy it with `langgraph deploy --image-uri \
             IMAGE`"
        ),
        "{logs}"
    );
    assert!(!out.join("ns").join("from-source").exists());
    assert_eq!(server.revision_status(&sdep, &first), "SKIPPED");

    println!("delete: the folder goes, then the deployment");
    let (status, _) = server.call("DELETE", &format!("/v2/deployments/{dep}"), None);
    assert_eq!(status, 204);
    wait_until("the deployment to disappear", 30, || {
        server
            .call("GET", &format!("/v2/deployments/{dep}"), None)
            .0
            == 404
    });
    assert!(!folder.exists());
    drop(agent);
}
