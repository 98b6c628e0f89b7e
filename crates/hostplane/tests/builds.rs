//! Builds from uploaded source in container mode, on the machine's Docker daemon and on
//! Podman: the official CLI's `langgraph deploy --remote --verbose` against the real
//! server and agent, on a stand-in for the official base image (nothing can be pulled
//! here; see `support::engine`). A build that works (its lines shown while `BUILDING`,
//! the container carrying what the Dockerfile set), one that fails, an invalid config,
//! hostile tarballs, and a build that a newer revision cancels.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use support::agent::listener_with_key;
use support::cli::Cli;
use support::engine::{skipped, Cleanup, Engine, ListenerAgent, BASE_IMAGE};
use support::source::{tarball, Member};
use support::{sqlite_db, try_http, wait_until, Server};

#[test]
fn builds_on_docker() {
    if !skipped("builds_on_docker") {
        builds(&Engine::docker(), 27000);
    }
}

#[test]
fn builds_on_podman() {
    if !skipped("builds_on_podman") {
        builds(&Engine::podman(), 29000);
    }
}

fn get(port: u16, path: &str) -> Option<String> {
    match try_http(port, "GET", path, &[], "") {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

/// The project's `langgraph.json` with these `dockerfile_lines`.
fn config(lines: &[&str]) -> String {
    json!({
        "dependencies": ["."],
        "graphs": {"agent": "./agent.py:graph"},
        "base_image": BASE_IMAGE,
        "dockerfile_lines": lines,
    })
    .to_string()
}

fn build_log(server: &Server, dep: &str, rev: &str) -> Vec<String> {
    server.revision_logs(dep, rev, "build_logs")
}

fn builds(engine: &Engine, first_port: u16) {
    engine.images();
    let db = sqlite_db();
    let server = Server::start(&db);
    let (listener, key) = listener_with_key(&server, &db, "builder");
    let _cleanup = Cleanup(engine, listener.clone());
    let base = first_port + (std::process::id() % 500) as u16 * 4;
    let ports = format!("{base}-{}", base + 3);
    // Small limits, so that the hostile tarballs below stay small.
    let agent = ListenerAgent::start(
        &server,
        &db,
        engine,
        &listener,
        &key,
        &ports,
        &[
            "--source-max-entries",
            "200",
            "--source-max-bytes",
            "4194304",
        ],
    );
    let cli = Cli::new(&server);
    let project = &cli.project.0;
    std::fs::write(project.join("requirements.txt"), "langgraph\n").unwrap();
    std::fs::write(project.join(".settings"), "kept\n").unwrap();
    std::fs::write(
        project.join("langgraph.json"),
        // The CLI shows build lines only when one of its polls (every 3 s) finds the
        // revision still building, so this build lasts well past two polls after its
        // marker line: without the sleep, a fast build can finish between two polls.
        config(&[
            "ENV GREETING=hello-from-the-dockerfile",
            "RUN echo marker-from-the-build",
            "RUN sleep 8",
        ]),
    )
    .unwrap();
    let name = format!("built-{}", std::process::id());
    let deploy = || {
        cli.run(&[
            "deploy",
            "--remote",
            "--verbose",
            "--name",
            &name,
            "--no-input",
        ])
    };

    println!("deploy --remote --verbose: build lines while BUILDING, then DEPLOYED");
    let run = deploy();
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.ends_with("BUILDING (build logs):"))
        .unwrap_or_else(|| panic!("no build logs shown:\n{}", run.stdout));
    let marker = lines
        .iter()
        .position(|l| l.trim_start().trim_start_matches('|').trim() == "marker-from-the-build")
        .unwrap_or_else(|| panic!("the build's own output is not shown:\n{}", run.stdout));
    let done = lines
        .iter()
        .position(|l| l.contains("Deployment successful!"))
        .unwrap();
    assert!(header < marker && marker < done, "{}", run.stdout);
    let (_, list) = server.call(
        "GET",
        &format!("/v2/deployments?name_contains={name}"),
        None,
    );
    let dep = list["resources"][0]["id"].as_str().unwrap().to_owned();
    let port = agent.address(&dep);
    assert_eq!(get(port, "/ok").as_deref(), Some("ok\n"));
    let env = get(port, "/env").unwrap();
    let graphs =
        format!(r#"LANGSERVE_GRAPHS={{"agent": "/deps/outer-{name}/src/agent.py:graph"}}"#);
    for want in ["GREETING=hello-from-the-dockerfile", graphs.as_str()] {
        assert!(env.lines().any(|l| l == want), "{want} not in\n{env}");
    }
    let (_, d) = server.call("GET", &format!("/v2/deployments/{dep}"), None);
    let built = d["latest_revision_id"].as_str().unwrap().to_owned();
    // The project's files are in the image; the Dockerfile the agent sent with them and
    // the .dockerignore it wrote for it are not (the CLI's image holds neither).
    let src = format!("/deps/outer-{name}/src");
    assert!(get(port, &format!("{src}/agent.py")).is_some());
    assert_eq!(
        get(port, &format!("{src}/.settings")).as_deref(),
        Some("kept\n")
    );
    let dockerfile = format!("{src}/Dockerfile.hostplane-{}", built.replace('-', ""));
    assert_eq!(get(port, &dockerfile), None);
    assert_eq!(get(port, &format!("{src}/.dockerignore")), None);
    let builds = format!("localhost/hostplane-build/{listener}/{dep}:");
    let tag = format!("{builds}{built}");
    let labelled = format!("hostplane.deployment-id={dep}");
    assert_eq!(engine.images_named(&builds), [tag]);

    println!("a failing build: BUILD_FAILED, the CLI shows the failing line, v1 still answers");
    std::fs::write(project.join("langgraph.json"), config(&["RUN exit 3"])).unwrap();
    // Without --verbose, the CLI prints the build's last lines when it failed.
    let run = cli.run(&["deploy", "--remote", "--name", &name, "--no-input"]);
    assert!(!run.ok, "{}", run.stdout);
    let shown = format!("{}{}", run.stdout, run.stderr);
    let last_lines = shown
        .find("Last build log lines:")
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(shown[last_lines..].contains("RUN exit 3"), "{shown}");
    let (_, d) = server.call("GET", &format!("/v2/deployments/{dep}"), None);
    let failed = d["latest_revision_id"].as_str().unwrap().to_owned();
    assert_eq!(server.revision_status(&dep, &failed), "BUILD_FAILED");
    let last = build_log(&server, &dep, &failed).pop().unwrap();
    assert!(
        last.starts_with(&format!("Build of revision {failed} failed: BuildFailed: ")),
        "{last}"
    );
    assert!(env_of(port).contains("GREETING=hello-from-the-dockerfile"));

    println!("an invalid config: BUILD_FAILED with the official CLI's error");
    let invalid = r#"{"dependencies": ["."], "graphs": {"agent": "./agent.py"}}"#;
    let bad = build::load(
        &build::Memory::new([("/p/langgraph.json", invalid)]),
        "/p/langgraph.json",
    )
    .and_then(|c| {
        build::generate(
            &build::Memory::new([("/p/langgraph.json", invalid)]),
            "/p/langgraph.json",
            &c,
            &build::Options::default(),
        )
    })
    .unwrap_err();
    let source = support::source::project(&[("langgraph.json", invalid), ("agent.py", "")]);
    let rev = server.upload_source(&dep, &source, "langgraph.json");
    wait_until("the invalid config to fail", 60, || {
        server.revision_status(&dep, &rev) == "BUILD_FAILED"
    });
    assert_eq!(
        build_log(&server, &dep, &rev).pop().unwrap(),
        format!(
            "Build of revision {rev} failed: InvalidConfig: {}",
            bad.message
        )
    );

    println!("hostile tarballs: each refused by name, nothing written outside the build");
    let ok_config = config(&[]);
    let good = Member::File("langgraph.json", ok_config.as_bytes());
    let many: Vec<String> = (0..201).map(|i| format!("f{i}.txt")).collect();
    let mut crowd = vec![Member::File("langgraph.json", ok_config.as_bytes())];
    crowd.extend(many.iter().map(|n| Member::File(n, b"")));
    let zeros = vec![0u8; 5 << 20];
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "../ member",
            tarball(&[Member::File("../../escaped", b"x"), Member::File("langgraph.json", ok_config.as_bytes())]),
            r#"the source archive's member "../../escaped" climbs out of the project folder"#.into(),
        ),
        (
            "absolute path",
            tarball(&[Member::File("/tmp/hostplane-escaped", b"x")]),
            r#"the source archive's member "/tmp/hostplane-escaped" has an absolute path"#.into(),
        ),
        (
            "symlink",
            tarball(&[Member::Symlink("agent.py", "/etc/passwd")]),
            r#"the source archive's member "agent.py" is a link (to "/etc/passwd"); source archives may not hold links"#.into(),
        ),
        (
            "hard link",
            tarball(&[Member::Hardlink("agent.py", "../../outside")]),
            r#"the source archive's member "agent.py" is a link (to "../../outside"); source archives may not hold links"#.into(),
        ),
        (
            "device",
            tarball(&[Member::CharDevice("dev-null")]),
            r#"the source archive's member "dev-null" is a device or another special file"#.into(),
        ),
        (
            "too many entries",
            tarball(&crowd),
            "the source archive holds more than 200 entries".into(),
        ),
        (
            "gzip bomb",
            tarball(&[good, Member::File("zeros", &zeros)]),
            "the source archive holds more than 4194304 bytes once decompressed".into(),
        ),
    ];
    for (what, source, message) in cases {
        let rev = server.upload_source(&dep, &source, "langgraph.json");
        wait_until(&format!("the {what} to be refused"), 60, || {
            server.revision_status(&dep, &rev) == "BUILD_FAILED"
        });
        assert_eq!(
            build_log(&server, &dep, &rev).pop().unwrap(),
            format!("Build of revision {rev} failed: SourceRefused: {message}"),
            "{what}"
        );
    }
    assert!(!std::path::Path::new("/tmp/hostplane-escaped").exists());
    let mut left = Vec::new();
    walk(&db.dir.0, &mut left);
    assert!(
        !left
            .iter()
            .any(|p| p.ends_with("escaped") || p.ends_with("outside")),
        "{left:?}"
    );
    assert!(env_of(port).contains("GREETING=hello-from-the-dockerfile"));

    println!("a newer revision cancels a running build");
    std::fs::write(project.join("langgraph.json"), config(&["RUN sleep 300"])).unwrap();
    let run = cli.run(&[
        "deploy",
        "--remote",
        "--name",
        &name,
        "--no-input",
        "--no-wait",
    ]);
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    let (_, d) = server.call("GET", &format!("/v2/deployments/{dep}"), None);
    let slow = d["latest_revision_id"].as_str().unwrap().to_owned();
    wait_until("the slow build to run", 60, || {
        build_log(&server, &dep, &slow)
            .iter()
            .any(|l| l.contains("RUN sleep 300"))
    });
    std::fs::write(project.join("langgraph.json"), config(&["ENV GREETING=v2"])).unwrap();
    let run = deploy();
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(server.revision_status(&dep, &slow), "BUILD_FAILED");
    assert_eq!(
        build_log(&server, &dep, &slow).pop().unwrap(),
        format!(
            "Build of revision {slow} failed: BuildCancelled: a newer revision superseded this build"
        )
    );
    wait_until("v2 on the address", 30, || {
        env_of(port).contains("GREETING=v2")
    });
    // The first build's image went with the container it served.
    let (_, d) = server.call("GET", &format!("/v2/deployments/{dep}"), None);
    let v2 = d["latest_revision_id"].as_str().unwrap().to_owned();
    let serving = [format!("{builds}{v2}")];
    support::wait_until_or(
        "only the serving revision's image",
        30,
        || engine.images_named(&builds) == serving,
        || {
            format!(
                "{:?}\n--- the agent's log ---\n{}",
                engine.images_named(&builds),
                agent.log_tail(40)
            )
        },
    );

    println!("a dependency outside the config's folder: one context, said in the build log");
    std::fs::create_dir_all(project.join("app")).unwrap();
    std::fs::create_dir_all(project.join("lib/shared")).unwrap();
    std::fs::write(
        project.join("app/langgraph.json"),
        json!({"dependencies": [".", "../lib"], "graphs": {"agent": "./agent.py:graph"},
               "base_image": BASE_IMAGE})
        .to_string(),
    )
    .unwrap();
    std::fs::write(project.join("app/agent.py"), "graph = None\n").unwrap();
    std::fs::write(
        project.join("lib/pyproject.toml"),
        "[project]\nname = \"shared\"\nversion = \"0.1\"\n",
    )
    .unwrap();
    std::fs::write(
        project.join("lib/shared/__init__.py"),
        "MARKER = 'from-the-lib'\n",
    )
    .unwrap();
    let run = cli.run(&[
        "deploy",
        "--remote",
        "--name",
        &name,
        "-c",
        "app/langgraph.json",
        "--no-input",
    ]);
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    let (_, d) = server.call("GET", &format!("/v2/deployments/{dep}"), None);
    let mono = d["latest_revision_id"].as_str().unwrap().to_owned();
    assert!(
        build_log(&server, &dep, &mono).contains(
            &"The project has dependencies outside its folder (lib): building from the \
              source's root as one context, without the named build contexts and the \
              `# syntax=` line of `langgraph dockerfile`"
                .to_owned()
        ),
        "{:?}",
        build_log(&server, &dep, &mono)
    );
    wait_until("the lib in the running container", 30, || {
        get(port, "/deps/lib/shared/__init__.py").as_deref() == Some("MARKER = 'from-the-lib'\n")
    });
    assert!(get(port, "/deps/outer-app/src/agent.py").is_some());

    println!("delete: containers and images go");
    let run = cli.run(&["deploy", "delete", &dep, "--force"]);
    assert!(run.ok, "{}", run.stderr);
    wait_until("the deployment to disappear", 60, || {
        server
            .call("GET", &format!("/v2/deployments/{dep}"), None)
            .0
            == 404
    });
    assert_eq!(engine.containers(&labelled), Vec::<(String, String)>::new());
    assert_eq!(engine.images_named(&builds), Vec::<String>::new());
}

fn env_of(port: u16) -> String {
    get(port, "/env").unwrap_or_default()
}

fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        }
        out.push(path);
    }
}
