//! The official client against hostplane: installs `langgraph-cli==0.4.40` from PyPI into
//! a virtualenv (once, under the target folder), starts `hostplane serve` on a fresh
//! database and drives `langgraph deploy ...`, checking what it prints and what the
//! server stored.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use support::agent::{listener_with_key, Agent, BUILT_IMAGE};
use support::cli::{Cli, Run};
use support::{postgres_db, sqlite_db, Db, Server, TempDir};

/// The lines `langgraph deploy logs` printed, without their leading `[timestamp] `.
fn without_times(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(|l| match l.split_once("] ") {
            Some((time, rest)) if time.starts_with('[') => rest.to_owned(),
            _ => l.to_owned(),
        })
        .collect()
}

fn image(c: char) -> String {
    format!("docker.io/acme/agent@sha256:{}", c.to_string().repeat(64))
}

fn create_listener(server: &Server, compute_id: &str, namespaces: &[&str]) -> String {
    let body = json!({
        "compute_type": "k8s",
        "compute_id": compute_id,
        "compute_config": {"k8s_namespaces": namespaces},
    });
    let (status, l) = server.call("POST", "/v2/listeners", Some(body));
    assert_eq!(status, 201);
    l["id"].as_str().unwrap().to_owned()
}

fn official_cli(db: Db) {
    let server = Server::start(&db);
    let cli = Cli::new(&server);

    println!("listeners list on an empty workspace");
    let run = cli.run(&["deploy", "listeners", "list", "--json"]);
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(
        serde_json::from_str::<Value>(&run.stdout).unwrap(),
        json!([])
    );

    println!("deploy an image without listeners");
    let run = cli.deploy_image("a", 'a', &[]);
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    assert!(run
        .events()
        .iter()
        .any(|e| e["message"] == "Deployment created"));
    let a = run.deployment_id();
    let (_, dep) = server.call("GET", &format!("/v2/deployments/{a}"), None);
    assert_eq!(
        (dep["name"].as_str(), dep["source"].as_str()),
        (Some("a"), Some("external_docker"))
    );
    assert_eq!(dep["source_revision_config"]["image_uri"], image('a'));
    let first_revision = dep["latest_revision_id"].as_str().unwrap().to_owned();

    println!("deploy a new image to the same deployment");
    let run = cli.deploy_image("a", 'b', &[]);
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    assert!(run
        .events()
        .iter()
        .any(|e| e["message"] == "Deployment updated"));
    let (_, revs) = server.call("GET", &format!("/v2/deployments/{a}/revisions"), None);
    let revs = revs["resources"].as_array().unwrap().clone();
    assert_eq!(revs.len(), 2);
    assert_eq!(
        (revs[0]["status"].as_str(), revs[1]["status"].as_str()),
        (Some("AWAITING_DEPLOY"), Some("SKIPPED"))
    );
    assert_eq!(revs[0]["source_revision_config"]["image_uri"], image('b'));
    assert_eq!(revs[1]["id"], first_revision.as_str());

    println!("revisions list prints newest first");
    let run = cli.run(&["deploy", "revisions", "list", &a]);
    assert!(run.ok, "{}", run.stderr);
    let rows: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.contains("AWAITING_DEPLOY") || l.contains("SKIPPED"))
        .collect();
    assert_eq!(rows.len(), 2, "{}", run.stdout);
    assert!(
        rows[0].starts_with(revs[0]["id"].as_str().unwrap()) && rows[0].contains("AWAITING_DEPLOY")
    );
    assert!(rows[1].starts_with(first_revision.as_str()) && rows[1].contains("SKIPPED"));

    println!("one listener: the CLI must be told to use it");
    let l1 = create_listener(&server, "east", &["agents"]);
    let run = cli.deploy_image("b", 'c', &[]);
    assert!(!run.ok);
    assert!(
        run.stderr.contains("listener_id' is required") && run.stderr.contains(&l1),
        "{}",
        run.stderr
    );
    let run = cli.deploy_image("b", 'c', &["--listener-id", &l1]);
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    let (_, b) = server.call(
        "GET",
        &format!("/v2/deployments/{}", run.deployment_id()),
        None,
    );
    assert_eq!(b["source_config"]["listener_id"], l1.as_str());
    assert_eq!(
        b["source_config"]["listener_config"],
        json!({"k8s_namespace": "agents"})
    );
    let run = cli.run(&["deploy", "listeners", "list", "--json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&run.stdout).unwrap()[0]["id"],
        l1.as_str()
    );

    println!("two listeners: listener and namespace chosen explicitly");
    let l2 = create_listener(&server, "west", &["x", "y"]);
    let run = cli.deploy_image("c", 'd', &["--listener-id", &l2, "--k8s-namespace", "y"]);
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    let (_, c) = server.call(
        "GET",
        &format!("/v2/deployments/{}", run.deployment_id()),
        None,
    );
    assert_eq!(
        c["source_config"]["listener_config"],
        json!({"k8s_namespace": "y"})
    );
    let run = cli.deploy_image("d", 'e', &[]);
    assert!(!run.ok);
    assert!(
        run.stderr.contains(&l1) && run.stderr.contains(&l2),
        "{}",
        run.stderr
    );
    let run = cli.deploy_image("d", 'e', &["--listener-id", &l2]);
    assert!(!run.ok, "several namespaces need --k8s-namespace");
    let (_, none) = server.call("GET", "/v2/deployments?name=d", None);
    assert_eq!(none["resources"], json!([]));

    println!("deploy list pages through more than 100 deployments");
    for i in 0..120 {
        let body = json!({
            "name": format!("bulk-{i:03}"),
            "source": "external_docker",
            "source_config": {"listener_id": l1},
            "source_revision_config": {"image_uri": image('f')},
            "secrets": [],
        });
        assert_eq!(server.call("POST", "/v2/deployments", Some(body)).0, 201);
    }
    let run = cli.run(&["deploy", "list", "--json"]);
    assert!(run.ok, "{}", run.stderr);
    let listed: Vec<Value> = serde_json::from_str(&run.stdout).unwrap();
    let ids: std::collections::HashSet<_> = listed
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!((listed.len(), ids.len()), (123, 123));

    println!("remote build: upload-url, PUT of the tarball, PATCH");
    let run = cli.run(&[
        "deploy",
        "--remote",
        "--name",
        "r",
        "--no-input",
        "--no-wait",
        "--json",
    ]);
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    let r = run.deployment_id();
    let (_, revs) = server.call(
        "GET",
        &format!("/v2/deployments/{r}/revisions?limit=1"),
        None,
    );
    let latest = &revs["resources"][0];
    assert_eq!(latest["status"], "AWAITING_BUILD");
    assert_eq!(latest["source"], "internal_source");
    let path = latest["source_revision_config"]["source_tarball_path"]
        .as_str()
        .unwrap();
    assert!(path.starts_with("hostplane-uploads/"), "{path}");
    // The stored tarball is the CLI's: it unpacks to the project's own files.
    let unpacked = TempDir::new("hostplane-cli-unpacked");
    let tar = Command::new("tar")
        .arg("-xzf")
        .arg(db.dir.0.join("storage").join(path))
        .arg("-C")
        .arg(&unpacked.0)
        .output()
        .unwrap();
    assert!(
        tar.status.success(),
        "{}",
        String::from_utf8_lossy(&tar.stderr)
    );
    for file in ["langgraph.json", "agent.py"] {
        let sent = std::fs::read(cli.project.0.join(file)).unwrap();
        let found =
            walk_find(&unpacked.0, file).unwrap_or_else(|| panic!("{file} not in the upload"));
        assert_eq!(std::fs::read(found).unwrap(), sent, "{file}");
    }

    println!("delete --force removes the deployment");
    let run = cli.run(&["deploy", "delete", &a, "--force"]);
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(
        server.call("GET", &format!("/v2/deployments/{a}"), None).0,
        404
    );
}

/// The first file named `name` under `dir`.
fn walk_find(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = walk_find(&path, name) {
                return Some(found);
            }
        } else if entry.file_name() == name {
            return Some(path);
        }
    }
    None
}

/// `langgraph deploy` without `--no-wait`, with a scripted agent playing the cluster:
/// the CLI waits for the agent's reports and exits accordingly; `deploy logs` (and `-f`)
/// shows what the agent sent; a remote build goes through BUILDING and BUILT; a delete
/// completes once the agent confirms it.
fn official_cli_with_agent(db: Db) {
    let server = Server::start(&db);
    let (listener, key) = listener_with_key(&server, &db, "cluster");
    let stop = Arc::new(AtomicBool::new(false));
    // The one image the scripted cluster cannot pull.
    let failing = image('2');
    let scripted = Agent::new(server.port, &listener, &key, "scripted")
        .spawn_scripted(stop.clone(), vec![failing.clone()]);
    let cli = Cli::new(&server);
    let result = |run: &Run| {
        run.events()
            .into_iter()
            .find(|e| e["event"] == "result")
            .unwrap_or_else(|| panic!("no result event:\n{}\n{}", run.stdout, run.stderr))
    };

    println!("deploy an image and wait: the agent reports DEPLOYED");
    let deploy = |name: &str, image: &str| {
        cli.run(&[
            "deploy",
            "--image-uri",
            image,
            "--name",
            name,
            "--no-input",
            "--json",
            "--listener-id",
            &listener,
        ])
    };
    let run = deploy("live", &image('1'));
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(result(&run)["status"], "succeeded");
    let live = run.deployment_id();
    let (_, d) = server.call("GET", &format!("/v2/deployments/{live}"), None);
    assert_eq!(d["status"], "READY");
    assert_eq!(d["active_revision_id"], d["latest_revision_id"]);

    println!("an image the agent cannot run: DEPLOY_FAILED, the CLI fails");
    let run = deploy("broken", &failing);
    assert!(!run.ok, "{}", run.stdout);
    assert_eq!(result(&run)["status"], "failed");
    let broken = run.deployment_id();

    println!("deploy logs shows the agent's lines and why a revision failed");
    let run = cli.run(&["deploy", "logs", "--deployment-id", &live]);
    assert!(run.ok, "{}", run.stderr);
    let live_rev = d["latest_revision_id"].as_str().unwrap();
    assert_eq!(
        without_times(&run.stdout),
        [
            format!("[INFO] pulling {}", image('1')),
            "[INFO] Application startup complete.".to_owned(),
            format!("[INFO] Revision {live_rev} deployed"),
        ],
        "{}",
        run.stdout
    );
    let run = cli.run(&[
        "deploy",
        "logs",
        "--deployment-id",
        &broken,
        "--level",
        "error",
    ]);
    assert!(run.ok, "{}", run.stderr);
    let (_, b) = server.call("GET", &format!("/v2/deployments/{broken}"), None);
    let broken_rev = b["latest_revision_id"].as_str().unwrap();
    assert_eq!(
        without_times(&run.stdout),
        [
            "[ERROR] ERROR back-off pulling image".to_owned(),
            format!(
                "[ERROR] Revision {broken_rev} failed to deploy: ImagePullBackOff: cannot pull \
                 {failing}"
            ),
        ],
        "{}",
        run.stdout
    );

    println!("deploy logs -f follows new lines");
    let mut follow = cli
        .command(&["deploy", "logs", "--deployment-id", &live, "-f"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |text: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(text) => return,
                Ok(_) => {}
                Err(e) => panic!("{text:?} never followed: {e}"),
            }
        }
    };
    wait_for("Application startup complete.");
    let (_, d) = server.call("GET", &format!("/v2/deployments/{live}"), None);
    let sender = Agent::new(server.port, &listener, &key, "sender");
    let (status, _) = sender.logs(json!([{
        "deployment_id": live, "revision_id": d["active_revision_id"], "kind": "deploy",
        "timestamp": chrono::Utc::now().to_rfc3339(), "level": "INFO",
        "message": "a line sent while following",
    }]));
    assert_eq!(status, 200);
    wait_for("a line sent while following");
    let _ = follow.kill();
    let _ = follow.wait();

    println!("remote build and wait: BUILDING, BUILT, then deployed");
    let run = cli.run(&[
        "deploy",
        "--remote",
        "--name",
        "built",
        "--no-input",
        "--json",
    ]);
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(result(&run)["status"], "succeeded");
    let built = run.deployment_id();
    let (_, d) = server.call("GET", &format!("/v2/deployments/{built}"), None);
    assert_eq!(d["status"], "READY");
    let run = cli.run(&[
        "deploy",
        "logs",
        "--type",
        "build",
        "--deployment-id",
        &built,
    ]);
    assert!(run.ok, "{}", run.stderr);
    assert!(run.stdout.contains("Step 2/2 : pushed"), "{}", run.stdout);
    assert!(run.stdout.contains(BUILT_IMAGE), "{}", run.stdout);

    println!("delete a running deployment: done once the agent confirms");
    let run = cli.run(&["deploy", "delete", &live, "--force"]);
    assert!(run.ok, "{}", run.stderr);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server
        .call("GET", &format!("/v2/deployments/{live}"), None)
        .0
        != 404
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the delete never completed"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    scripted.join().unwrap();
}

#[test]
fn official_cli_with_agent_sqlite() {
    official_cli_with_agent(sqlite_db());
}

#[test]
fn official_cli_with_agent_postgres() {
    official_cli_with_agent(postgres_db());
}

#[test]
fn official_cli_sqlite() {
    official_cli(sqlite_db());
}

#[test]
fn official_cli_postgres() {
    official_cli(postgres_db());
}
