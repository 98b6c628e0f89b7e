//! Container mode for real, on the machine's Docker daemon and on Podman's
//! Docker-compatible service: images built `FROM scratch` from Debian's `busybox-static`,
//! the real `hostplane serve`, the real `hostplane listener --mode containers` and the
//! official CLI. From `langgraph deploy` to a container answering HTTP: update without a
//! failed request, a failing image, logs, `kill -9` of the agent mid-rollout, delete.
//!
//! Needs Docker, `podman`, `runc` and `busybox-static` (`scripts/test` installs them when
//! run as root, and starts `dockerd` when it does not run). Set
//! `HOSTPLANE_SKIP_CONTAINER_TESTS=1` to skip these tests on a machine that cannot run
//! containers; otherwise a missing runtime fails them with the reason.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::agent::listener_with_key;
use support::cli::Cli;
use support::engine::{skipped, Cleanup, Engine, ListenerAgent};
use support::{sqlite_db, try_http, wait_until, Server};

fn get_ok(port: u16) -> Option<String> {
    match try_http(port, "GET", "/ok", &[], "") {
        Ok((200, body)) => Some(body.trim().to_owned()),
        _ => None,
    }
}

#[test]
fn containers_on_docker() {
    if !skipped("containers_on_docker") {
        end_to_end(&Engine::docker(), 23000);
    }
}

#[test]
fn containers_on_podman() {
    if !skipped("containers_on_podman") {
        end_to_end(&Engine::podman(), 25000);
    }
}

/// Everything on one engine; the deployment's ports come from `first_port` on.
fn end_to_end(engine: &Engine, first_port: u16) {
    let images = engine.images();
    let db = sqlite_db();
    let server = Server::start(&db);
    let (listener, key) = listener_with_key(&server, &db, "one-machine");
    let _cleanup = Cleanup(engine, listener.clone());
    let containers = |dep: &str| engine.containers(&format!("hostplane.deployment-id={dep}"));
    let volumes = |dep: &str| engine.volumes(&format!("hostplane.deployment-id={dep}"));
    let name = format!("e2e-{}", std::process::id());
    let base = first_port + (std::process::id() % 500) as u16 * 4;
    let ports = format!("{base}-{}", base + 3);
    let mut agent = ListenerAgent::start(&server, &db, engine, &listener, &key, &ports, &[]);
    let cli = Cli::new(&server);
    // The listener is named on create only: it is fixed from then on.
    let created = AtomicBool::new(false);
    let deploy = |image: &str, wait: bool| {
        let first = !created.swap(true, Ordering::Relaxed);
        let extra = ["--listener-id", listener.as_str()];
        cli.deploy(image, &name, wait, if first { &extra } else { &[] })
    };

    println!("deploy: the CLI waits, the container answers on its address");
    let run = deploy(&images.v1, true);
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    let dep = run.deployment_id();
    let port = agent.address(&dep);
    assert_eq!(get_ok(port).as_deref(), Some("v1"));
    let mut roles: Vec<String> = containers(&dep).into_iter().map(|(r, _)| r).collect();
    roles.sort();
    assert_eq!(roles, ["api", "postgres", "redis"]);
    let kept = volumes(&dep);
    assert_eq!(kept.lines().count(), 1, "{kept}");

    println!("update: a client polling the address the whole time never fails");
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                seen.push(get_ok(port));
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        })
    };
    let run = deploy(&images.v2, true);
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let seen = poller.join().unwrap();
    assert!(
        seen.iter().all(Option::is_some),
        "a request failed during the switch"
    );
    assert!(seen.contains(&Some("v1".into())) && seen.last() == Some(&Some("v2".into())));
    wait_until("the old container to go", 20, || {
        containers(&dep).iter().filter(|(r, _)| r == "api").count() == 1
    });

    println!("a failing image: DEPLOY_FAILED with its exit, the previous one still answers");
    let run = deploy(&images.failing, true);
    assert!(!run.ok, "{}", run.stdout);
    assert_eq!(
        run.events()
            .into_iter()
            .find(|e| e["event"] == "result")
            .map(|e| e["status"].clone()),
        Some(json!("failed")),
        "{}",
        run.stdout
    );
    assert_eq!(get_ok(port).as_deref(), Some("v2"));
    // The revision's error lines, through the API: exactly why it failed.
    let failure_of = |rev: &str| -> Vec<String> {
        let (status, logs) = server.call(
            "POST",
            &format!("/v1/projects/{dep}/revisions/{rev}/deploy_logs"),
            Some(json!({"level": "ERROR", "order": "asc"})),
        );
        assert_eq!(status, 200, "{logs}");
        logs["logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["message"].as_str().unwrap().to_owned())
            .collect()
    };
    let latest = || {
        let (_, d) = server.call("GET", &format!("/v2/deployments/{dep}"), None);
        d["latest_revision_id"].as_str().unwrap().to_owned()
    };
    let failed = latest();
    let last = failure_of(&failed).pop().unwrap_or_default();
    // The container restarts (unless-stopped) before the agent sees it exit: its last
    // lines are the one line it prints, once per start.
    let (head, tail) = last.split_once("; last lines:\n").unwrap_or((&last, ""));
    assert_eq!(
        head,
        format!(
            "Revision {failed} failed to deploy: ContainerExited: the server exited with code 3"
        ),
        "{last}"
    );
    assert!(
        !tail.is_empty()
            && tail
                .lines()
                .all(|l| l == "fatal: OPENAI_API_KEY is not set"),
        "{last}"
    );
    // Container output reaches the deploy logs too (the previous revision's, here).
    let logs = cli.run(&["deploy", "logs", "--deployment-id", &dep, "--limit", "50"]);
    assert!(logs.ok, "{}", logs.stderr);
    assert!(
        logs.stdout
            .lines()
            .any(|l| l.ends_with("] [INFO] serving v2")),
        "the container's output: {}",
        logs.stdout
    );

    println!("an image that cannot be pulled: DEPLOY_FAILED with ImagePullFailed");
    let missing = format!("localhost/hostplane-e2e-missing@sha256:{}", "0".repeat(64));
    let run = deploy(&missing, true);
    assert!(!run.ok, "{}", run.stdout);
    assert_eq!(get_ok(port).as_deref(), Some("v2"));
    let unpulled = latest();
    let lines = failure_of(&unpulled);
    // The engine's own words follow; Docker and Podman word them differently.
    let reason = format!("Revision {unpulled} failed to deploy: ImagePullFailed: ");
    assert!(
        lines
            .last()
            .is_some_and(|l| l.starts_with(&reason) && l.contains(&missing)),
        "{lines:?}"
    );

    println!("a server that never answers /ok: HealthCheckTimeout, the previous one serves");
    let run = deploy(&images.idle, true);
    assert!(!run.ok, "{}", run.stdout);
    assert_eq!(get_ok(port).as_deref(), Some("v2"));
    let mute = latest();
    assert_eq!(
        failure_of(&mute).last().map(String::as_str),
        Some(
            format!(
                "Revision {mute} failed to deploy: HealthCheckTimeout: GET /ok did not answer \
                 200 within 20s; last lines:\n"
            )
            .as_str()
        )
    );

    println!("kill -9 of the agent mid-rollout: it converges without duplicates");
    let run = deploy(&images.slow, false);
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    let (_, d) = server.call("GET", &format!("/v2/deployments/{dep}"), None);
    let slow_rev = d["latest_revision_id"].as_str().unwrap().to_owned();
    wait_until("the new container", 30, || {
        containers(&dep).iter().any(|(_, r)| *r == slow_rev)
    });
    agent.kill();
    let agent = ListenerAgent::start(&server, &db, engine, &listener, &key, &ports, &[]);
    wait_until("the slow revision to be deployed", 60, || {
        server.revision_status(&dep, &slow_rev) == "DEPLOYED"
    });
    assert_eq!(
        agent.address(&dep),
        port,
        "the address survives an agent restart"
    );
    wait_until("v3 on the address", 20, || {
        get_ok(port).as_deref() == Some("v3")
    });
    wait_until("one API container", 20, || {
        let api: Vec<_> = containers(&dep)
            .into_iter()
            .filter(|(r, _)| r == "api")
            .collect();
        api.len() == 1 && api[0].1 == slow_rev
    });
    let support: Vec<_> = containers(&dep)
        .into_iter()
        .filter(|(r, _)| r != "api")
        .collect();
    assert_eq!(support.len(), 2, "{support:?}");

    println!("bringing its own stores: the deployment's PostgreSQL and Redis containers go");
    let (status, body) = server.call(
        "PATCH",
        &format!("/v2/deployments/{dep}"),
        Some(json!({
            "source_revision_config": {"image_uri": images.v2},
            "secrets": [{"name": "OPENAI_API_KEY", "value": "sk-test"},
                        {"name": "POSTGRES_URI_CUSTOM", "value": "postgres://db.example/agent"},
                        {"name": "REDIS_URI_CUSTOM", "value": "redis://cache.example"}],
        })),
    );
    assert_eq!(status, 200, "{body}");
    let own = body["latest_revision_id"].as_str().unwrap().to_owned();
    wait_until("the revision with its own stores", 60, || {
        server.revision_status(&dep, &own) == "DEPLOYED"
    });
    wait_until("only the API container", 30, || {
        containers(&dep) == [("api".to_owned(), own.clone())]
    });
    assert_eq!(get_ok(port).as_deref(), Some("v2"));

    println!("delete: containers and volume go, then the deployment");
    let run = cli.run(&["deploy", "delete", &dep, "--force"]);
    assert!(run.ok, "{}", run.stderr);
    wait_until("the deployment to disappear", 60, || {
        server
            .call("GET", &format!("/v2/deployments/{dep}"), None)
            .0
            == 404
    });
    assert_eq!(containers(&dep), Vec::<(String, String)>::new());
    assert_eq!(volumes(&dep), "");
    assert_eq!(get_ok(port), None, "the address is closed");
}
