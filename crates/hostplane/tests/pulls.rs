//! Plain `langgraph deploy`: the official CLI builds with the machine's Docker daemon,
//! logs in with `push-token` and pushes to a real registry (Debian's `docker-registry`)
//! whose token service is hostplane, then points the deployment at the pushed digest.
//! The container-mode agent pulls it with its listener's pull-only login and runs it;
//! once with Docker as the agent's engine (the CLI's copy removed first, so the agent
//! must pull), once with Podman (a store of its own). A listener of another workspace
//! is refused the image.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use support::cli::Cli;
use support::engine::{skipped, Cleanup, Engine, ListenerAgent, BASE_IMAGE};
use support::{admin, sqlite_db, try_http, wait_until, Server};

#[test]
fn push_then_pull_on_docker() {
    if !skipped("push_then_pull_on_docker") {
        push_then_pull(Agents::Docker, 31000);
    }
}

#[test]
fn push_then_pull_on_podman() {
    if !skipped("push_then_pull_on_podman") {
        push_then_pull(Agents::Podman, 33000);
    }
}

enum Agents {
    Docker,
    Podman,
}

/// A listener in the workspace of `key` (its listener key too).
fn listener_of(server: &Server, db: &support::Db, key: &str, name: &str) -> (String, String) {
    let (status, body) = support::http(
        server.port,
        "POST",
        "/v2/listeners",
        &[("X-Api-Key", key), ("Content-Type", "application/json")],
        &json!({"compute_type": "k8s", "compute_id": name,
                "compute_config": {"k8s_namespaces": ["ns"]}})
        .to_string(),
    );
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = admin(db, &["api-key", "create", "--listener", &id]);
    (id, created["key"].as_str().unwrap().to_owned())
}

fn push_then_pull(agents: Agents, first_port: u16) {
    // The CLI builds and pushes with Docker whichever engine the agent uses.
    let docker = Engine::docker();
    docker.images();
    let db = sqlite_db();
    let (server, registry) = support::registry::start(&db, "pull-test-key");
    let registry_host = format!("127.0.0.1:{}", registry.port);
    let engine = match agents {
        Agents::Docker => Engine::docker(),
        Agents::Podman => Engine::podman_with(&[&registry_host]),
    };
    engine.images();
    let (listener, key) = support::agent::listener_with_key(&server, &db, "puller");
    let _cleanup = Cleanup(&engine, listener.clone());
    let base = first_port + (std::process::id() % 500) as u16 * 8;

    println!("langgraph deploy: the CLI builds, logs in with push-token, pushes, PATCHes");
    let cli = Cli::new(&server);
    std::fs::write(
        cli.project.0.join("langgraph.json"),
        json!({"dependencies": ["."], "graphs": {"agent": "./agent.py:graph"},
               "base_image": BASE_IMAGE, "dockerfile_lines": ["ENV PUSHED=yes"]})
        .to_string(),
    )
    .unwrap();
    let name = format!("pushed-{}", std::process::id());
    // --no-pull: the stand-in base image exists only here.
    let run = cli.run(&[
        "deploy",
        "--name",
        &name,
        "--no-pull",
        "--no-input",
        "--no-wait",
    ]);
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    let (_, list) = server.call(
        "GET",
        &format!("/v2/deployments?name_contains={name}"),
        None,
    );
    let dep = list["resources"][0]["id"].as_str().unwrap().to_owned();
    let (_, d) = server.call("GET", &format!("/v2/deployments/{dep}"), None);
    let rev = d["latest_revision_id"].as_str().unwrap().to_owned();
    let (_, r) = server.call(
        "GET",
        &format!("/v2/deployments/{dep}/revisions/{rev}"),
        None,
    );
    let image = r["source_revision_config"]["image_uri"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        image.starts_with(&format!("{registry_host}/")) && image.contains("@sha256:"),
        "{image}"
    );
    // Nothing of it stays on Docker: whichever engine runs it must pull it.
    let id = docker.cli(&["image", "inspect", "--format", "{{.Id}}", &image]);
    docker.cli(&["image", "rm", "-f", &id]);

    println!("another workspace's listener is refused the image");
    let (_, other_key) = support::other_workspace(&db);
    let (other, other_listener_key) = listener_of(&server, &db, &other_key, "stranger");
    let _other_cleanup = Cleanup(&engine, other.clone());
    let stranger = ListenerAgent::start(
        &server,
        &db,
        &engine,
        &other,
        &other_listener_key,
        &format!("{}-{}", base + 4, base + 7),
        &[],
    );
    let (status, theirs) = support::http(
        server.port,
        "POST",
        "/v2/deployments",
        &[
            ("X-Api-Key", &other_key),
            ("Content-Type", "application/json"),
        ],
        &json!({"name": "borrowed", "source": "external_docker",
                "source_config": {"listener_id": other,
                                  "listener_config": {"k8s_namespace": "ns"}},
                "source_revision_config": {"image_uri": image}, "secrets": []})
        .to_string(),
    );
    assert_eq!(status, 201, "{theirs}");
    let theirs: serde_json::Value = serde_json::from_str(&theirs).unwrap();
    let (their_dep, their_rev) = (
        theirs["id"].as_str().unwrap().to_owned(),
        theirs["latest_revision_id"].as_str().unwrap().to_owned(),
    );
    let revision_status = |key: &str| {
        let (_, body) = support::http(
            server.port,
            "GET",
            &format!("/v2/deployments/{their_dep}/revisions/{their_rev}"),
            &[("X-Api-Key", key)],
            "",
        );
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["status"].clone()
    };
    wait_until("the stranger's pull to fail", 90, || {
        revision_status(&other_key) == "DEPLOY_FAILED"
    });
    let (_, logs) = support::http(
        server.port,
        "POST",
        &format!("/v1/projects/{their_dep}/revisions/{their_rev}/deploy_logs"),
        &[
            ("X-Api-Key", &other_key),
            ("Content-Type", "application/json"),
        ],
        r#"{"level": "ERROR"}"#,
    );
    let failure = format!("Revision {their_rev} failed to deploy: ImagePullFailed: ");
    assert!(logs.contains(&failure), "{logs}");
    drop(stranger);

    println!("its own listener pulls it with its login: DEPLOYED, answering");
    let agent = ListenerAgent::start(
        &server,
        &db,
        &engine,
        &listener,
        &key,
        &format!("{base}-{}", base + 3),
        &[],
    );
    wait_until("the pushed revision to be deployed", 120, || {
        server.revision_status(&dep, &rev) == "DEPLOYED"
    });
    let port = agent.address(&dep);
    let env = match try_http(port, "GET", "/env", &[], "") {
        Ok((200, body)) => body,
        other => panic!("{other:?}"),
    };
    assert!(env.lines().any(|l| l == "PUSHED=yes"), "{env}");
    if matches!(agents, Agents::Docker) {
        // The image came back from the registry, by its digest.
        docker.cli(&["image", "inspect", &image]);
    }
}
