//! `native` mode end to end: the real `hostplane serve`, the real `hostplane listener`
//! against the in-repository fake Kubernetes API server (which plays the kubelet), and
//! the official `langgraph deploy` without `--no-wait`. Deploy, update, an image that
//! cannot be pulled, a crash loop, an unschedulable pod, a stale HPA removed, redeploy,
//! `kill -9`
//! of the agent mid-rollout, delete; the exact apply sequence; and the RBAC Role of the
//! install manifests checked against every request the agent made.

#![allow(clippy::unwrap_used)]

mod support;

use fakekube::{Attributes, FakeKube, Fault, Logged};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::agent::listener_with_key;
use support::cli::Cli;
use support::{bin, http, sqlite_db, wait_until, Db, Server};

/// A running `hostplane listener` (native), its stdout lines collected.
struct KubeAgent {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// Where its stderr (its log) goes.
    log: std::path::PathBuf,
}

impl KubeAgent {
    /// With `--mode MODE`, or the default mode (native) when `None`.
    fn start(setup: &Setup, mode: Option<&str>) -> Self {
        Self::start_with_timeout(setup, mode, 15)
    }

    /// As [`KubeAgent::start`], with `--health-timeout-secs SECS`.
    fn start_with_timeout(setup: &Setup, mode: Option<&str>, secs: u64) -> Self {
        let Setup {
            server,
            db,
            kubeconfig,
            listener,
            key,
            ..
        } = setup;
        let log = db
            .dir
            .0
            .join(format!("kube-agent-{}.log", uuid::Uuid::new_v4().simple()));
        let mut child = bin()
            .args(["listener", "--control-plane-url", &server.url()])
            .args(mode.map(|m| ["--mode", m]).into_iter().flatten())
            .args(["--listener-id", listener, "--agent-id", "kube-agent"])
            .args(["--health-timeout-secs", &secs.to_string()])
            .env("HOSTPLANE_LISTENER_KEY", key)
            .env("KUBECONFIG", kubeconfig)
            .env_remove("HOSTPLANE_LISTENER_MODE")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let lines = support::stdout_lines(&mut child);
        KubeAgent { child, lines, log }
    }

    /// The end of its log, for a failure message.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for KubeAgent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An image by digest, as the CLI wants them: the digest is `c` repeated.
fn digest(c: char) -> String {
    format!("registry.example/agent@sha256:{}", c.to_string().repeat(64))
}

/// The cluster's objects other than pods, as `Kind/namespace/name`.
fn inventory(fake: &FakeKube) -> Vec<String> {
    fake.inventory()
        .into_iter()
        .filter(|o| !o.starts_with("Pod/"))
        .collect()
}

fn pods(fake: &FakeKube, component: &str) -> Vec<Value> {
    fake.objects("Pod", "ns")
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["app.kubernetes.io/component"] == component)
        .collect()
}

fn api_image(fake: &FakeKube, name: &str) -> String {
    fake.objects("Deployment", "ns")
        .iter()
        .find(|d| d["metadata"]["name"] == name)
        .map(|d| {
            d["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .unwrap_or_default()
}

/// A fake cluster with the namespace `ns`, a control plane on SQLite, and a listener
/// serving `ns` with its key.
struct Setup {
    fake: FakeKube,
    server: Server,
    db: Db,
    kubeconfig: PathBuf,
    listener: String,
    key: String,
    /// Runs the fake; dropped last.
    _rt: tokio::runtime::Runtime,
}

impl Setup {
    /// With a control plane that names a registry the fake cluster "pushes" to and
    /// "pulls" from (nothing listens there).
    fn new(compute_id: &str) -> Setup {
        Self::with_server_args(
            compute_id,
            &["--registry-url", REGISTRY, "--registry-service", "hp-test"],
        )
    }

    fn with_server_args(compute_id: &str, args: &[&str]) -> Setup {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let fake = rt.block_on(FakeKube::start(&["ns"])).unwrap();
        let db = sqlite_db();
        let kubeconfig = fake.kubeconfig(&db.dir.0).unwrap();
        let server = Server::start_with(&db, args, "kube-test-key");
        let (listener, key) = listener_with_key(&server, &db, compute_id);
        Setup {
            fake,
            server,
            db,
            kubeconfig,
            listener,
            key,
            _rt: rt,
        }
    }

    /// Deletes a deployment with the official CLI; it disappears once the agent
    /// confirmed, and nothing is left in the cluster.
    fn delete(&self, cli: &Cli, dep: &str) {
        let run = cli.run(&["deploy", "delete", dep, "--force"]);
        assert!(run.ok, "{}", run.stderr);
        wait_until("the deployment to disappear", 60, || {
            self.server
                .call("GET", &format!("/v2/deployments/{dep}"), None)
                .0
                == 404
        });
        assert_eq!(self.fake.inventory(), Vec::<String>::new());
    }
}

/// The registry the control plane names; the fake cluster never reaches it.
const REGISTRY: &str = "127.0.0.1:1";

/// A source deployment (placed on the workspace's only listener) built by a Job: the Job and its Secret as specified (no
/// credential in the Job's spec), the build pod's output as build logs, `BUILT` with the
/// digest the build container left, then the pushed image running with the listener's
/// registry login; a failing Job is `BUILD_FAILED` with its last lines; the Job and its
/// Secret go either way. The deployment is deleted at the end.
fn source_build(setup: &Setup, lgp: bool) {
    let Setup { fake, server, .. } = setup;
    let buildkit = agent::kube::job::DEFAULT_BUILDKIT_IMAGE;
    let digest = format!("sha256:{}", "b".repeat(64));
    fake.set_image_logs(
        buildkit,
        &[
            "#1 [internal] load build definition from Dockerfile",
            "#9 pushing layers done",
            &digest,
        ],
    );
    fake.set_ready_after(Duration::from_millis(1500));
    let created = server.source_deployment("from-source");
    let dep = created["id"].as_str().unwrap().to_owned();
    let config = r#"{"dependencies": ["."], "graphs": {"agent": "./agent.py:graph"}}"#;
    let project =
        support::source::project(&[("langgraph.json", config), ("agent.py", "graph = 1\n")]);
    let rev = server.upload_source(&dep, &project, "langgraph.json");
    let job_name = format!("hp-build-{}", rev.replace('-', ""));
    let build_log = |rev: &str| server.revision_logs(&dep, rev, "build_logs");
    support::wait_until_or(
        "the build Job",
        30,
        || {
            fake.objects("Job", "ns")
                .iter()
                .any(|j| j["metadata"]["name"] == job_name.as_str())
        },
        || {
            format!(
                "{}: {:?}",
                server.revision_status(&dep, &rev),
                build_log(&rev)
            )
        },
    );
    let job = fake
        .objects("Job", "ns")
        .into_iter()
        .find(|j| j["metadata"]["name"] == job_name.as_str())
        .unwrap();
    let secret = fake
        .objects("Secret", "ns")
        .into_iter()
        .find(|j| j["metadata"]["name"] == job_name.as_str())
        .unwrap();
    let data = |key: &str| {
        use base64::Engine;
        let text = secret["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} in {secret}"));
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap(),
        )
        .unwrap()
    };
    let source_url = data("source-url");
    let login: Value = serde_json::from_str(&data("config.json")).unwrap();
    let auth = login["auths"][REGISTRY]["auth"]
        .as_str()
        .unwrap()
        .to_owned();
    // The Job names the Secret; neither credential is in its spec.
    let spec = job.to_string();
    assert!(!spec.contains(&auth) && !spec.contains("token="), "{spec}");
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], buildkit);
    assert_eq!(job["spec"]["backoffLimit"], 0);
    assert_eq!(
        job["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"],
        job_name.as_str()
    );
    // The Dockerfile is the official CLI's for that project (hostplane dockerfile's).
    let files = build::Memory::new([
        ("/p/from-source/langgraph.json", config),
        ("/p/from-source/agent.py", ""),
    ]);
    let path = "/p/from-source/langgraph.json";
    let want = build::generate(
        &files,
        path,
        &build::load(&files, path).unwrap(),
        &build::Options::default(),
    )
    .unwrap();
    assert_eq!(data("Dockerfile"), want.text);
    // The source URL fetches that revision's tarball with no key, while it builds.
    let at = source_url.strip_prefix(&server.url()).unwrap();
    let (status, body) = support::try_http_bytes(server.port, "GET", at, &[], b"").unwrap();
    assert_eq!(
        (status, body.len()),
        (200, String::from_utf8_lossy(&project).len())
    );
    let forged = at.replace("token=", "token=x");
    assert_eq!(
        support::try_http_bytes(server.port, "GET", &forged, &[], b"")
            .unwrap()
            .0,
        401
    );

    wait_until("the built revision to be deployed", 60, || {
        server.revision_status(&dep, &rev) == "DEPLOYED"
    });
    let image_prefix = format!("{REGISTRY}/");
    let (server_spec, image) = if lgp {
        let lgp = fake
            .objects("LGP", "ns")
            .into_iter()
            .find(|o| o["metadata"]["name"] == "from-source")
            .unwrap();
        let spec = lgp["spec"]["serverSpec"].clone();
        let image = spec["image"].as_str().unwrap().to_owned();
        (spec, image)
    } else {
        let d = fake
            .objects("Deployment", "ns")
            .into_iter()
            .find(|o| o["metadata"]["name"] == "from-source")
            .unwrap();
        let spec = d["spec"]["template"]["spec"].clone();
        let image = spec["containers"][0]["image"].as_str().unwrap().to_owned();
        (spec, image)
    };
    assert!(
        image.starts_with(&image_prefix) && image.ends_with(&format!("/{dep}@{digest}")),
        "{image}"
    );
    assert_eq!(
        server_spec["imagePullSecrets"],
        json!([{"name": "from-source-registry"}])
    );
    let pull = fake
        .objects("Secret", "ns")
        .into_iter()
        .find(|o| o["metadata"]["name"] == "from-source-registry")
        .unwrap();
    assert_eq!(pull["type"], "kubernetes.io/dockerconfigjson");
    let messages = build_log(&rev);
    assert!(
        messages.contains(&"#9 pushing layers done".to_owned()),
        "{messages:?}"
    );
    wait_until("the Job and its Secret to go", 30, || {
        fake.inventory().iter().all(|o| !o.ends_with(&job_name))
    });

    // A failing build.
    let error = "error: failed to solve: process \"/bin/sh -c exit 3\" did not complete successfully: exit code: 3";
    fake.set_fault(
        buildkit,
        Some(Fault::CrashLoop {
            exit_code: 1,
            logs: vec!["#5 [2/9] RUN exit 3".into(), error.into()],
        }),
    );
    let failing = server.upload_source(&dep, &project, "langgraph.json");
    wait_until("the failing build", 60, || {
        server.revision_status(&dep, &failing) == "BUILD_FAILED"
    });
    assert_eq!(
        build_log(&failing).last().unwrap(),
        &format!(
            "Build of revision {failing} failed: BuildFailed: the build Job failed; last \
             lines:\n#5 [2/9] RUN exit 3\n{error}"
        )
    );
    fake.set_fault(buildkit, None);
    fake.set_ready_after(Duration::from_millis(300));
    let failed_job = format!("hp-build-{}", failing.replace('-', ""));
    wait_until("the failed Job and its Secret to go", 30, || {
        fake.inventory().iter().all(|o| !o.ends_with(&failed_job))
    });
    let (status, _) = server.call("DELETE", &format!("/v2/deployments/{dep}"), None);
    assert_eq!(status, 204);
    wait_until("the source deployment to go", 60, || {
        server
            .call("GET", &format!("/v2/deployments/{dep}"), None)
            .0
            == 404
    });
}

/// Without a registry a Kubernetes build has nowhere to push: the revision fails at
/// once with a reason that says what to set, and no Job is made.
#[test]
fn a_build_without_a_registry_says_what_to_set() {
    let setup = Setup::with_server_args("no-registry", &[]);
    let Setup { fake, server, .. } = &setup;
    let _agent = KubeAgent::start(&setup, None);
    let created = server.source_deployment("unpushable");
    let dep = created["id"].as_str().unwrap().to_owned();
    let project = support::source::minimal_project();
    let rev = server.upload_source(&dep, &project, "langgraph.json");
    wait_until("the build to fail", 30, || {
        server.revision_status(&dep, &rev) == "BUILD_FAILED"
    });
    assert_eq!(
        server
            .revision_logs(&dep, &rev, "build_logs")
            .last()
            .unwrap(),
        &format!(
            "Build of revision {rev} failed: NoRegistry: builds in Kubernetes push to \
             hostplane's registry, and the control plane has none: set HOSTPLANE_REGISTRY_URL \
             on the server (docs/security.md, container registry)"
        )
    );
    assert!(fake.objects("Job", "ns").is_empty());
}

/// One rule of a Role: API groups, resources, verbs.
struct Rule {
    groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
}

/// The rules of a Role in the install manifests (`deploy/kubernetes/FILE`).
fn role_rules(file: &str) -> Vec<Rule> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/kubernetes")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let role: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(role["kind"], "Role");
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| Rule {
            groups: strings(&r["apiGroups"]),
            resources: strings(&r["resources"]),
            verbs: strings(&r["verbs"]),
        })
        .collect()
}

#[test]
fn native_mode_end_to_end() {
    let setup = Setup::new("cluster-a");
    let Setup {
        fake,
        server,
        listener,
        ..
    } = &setup;
    let mut agent = KubeAgent::start(&setup, None);
    let cli = Cli::new(server);
    let name = "kube-e2e";
    // The CLI wants digests: `vN` becomes the digest of N repeated.
    let image = |tag: &str| format!("registry.example/agent@sha256:{}", tag[1..].repeat(64));
    for tag in ["v1", "v2", "v5"] {
        fake.set_image_logs(&image(tag), &[&format!("INFO: serving {tag}")]);
    }
    let created = AtomicBool::new(false);
    let deploy = |tag: &str, wait: bool| {
        let first = !created.swap(true, Ordering::Relaxed);
        let extra = ["--listener-id", listener.as_str()];
        cli.deploy(&image(tag), name, wait, if first { &extra } else { &[] })
    };
    let logs_of = |dep: &str| {
        let run = cli.run(&["deploy", "logs", "--deployment-id", dep, "--limit", "100"]);
        assert!(run.ok, "{}", run.stderr);
        run.stdout
    };

    println!("deploy: applied, rolled out, /ok through the Service, then DEPLOYED");
    let run = deploy("v1", true);
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    let dep = run.deployment_id();
    let (_, d) = server.call("GET", &format!("/v2/deployments/{dep}"), None);
    let first_rev = d["latest_revision_id"].as_str().unwrap().to_owned();
    let expected = [
        "Deployment/ns/kube-e2e",
        "Deployment/ns/kube-e2e-redis",
        "PersistentVolumeClaim/ns/data-kube-e2e-postgres-0",
        "Secret/ns/kube-e2e-env",
        "Secret/ns/kube-e2e-postgres",
        "Service/ns/kube-e2e",
        "Service/ns/kube-e2e-postgres",
        "Service/ns/kube-e2e-redis",
        "StatefulSet/ns/kube-e2e-postgres",
    ];
    assert_eq!(inventory(fake), expected);
    // The first round's applies, in the render's order (later rounds apply the same
    // objects again, which changes nothing).
    let applies: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .take(8)
        .map(|r| r.line())
        .collect();
    let q = "force=true&fieldManager=hostplane-listener";
    assert_eq!(
        applies,
        [
            format!("PATCH /api/v1/namespaces/ns/secrets/kube-e2e-env?&{q}"),
            format!("PATCH /apis/apps/v1/namespaces/ns/deployments/kube-e2e?&{q}"),
            format!("PATCH /api/v1/namespaces/ns/services/kube-e2e?&{q}"),
            format!("PATCH /api/v1/namespaces/ns/secrets/kube-e2e-postgres?&{q}"),
            format!("PATCH /apis/apps/v1/namespaces/ns/statefulsets/kube-e2e-postgres?&{q}"),
            format!("PATCH /api/v1/namespaces/ns/services/kube-e2e-postgres?&{q}"),
            format!("PATCH /apis/apps/v1/namespaces/ns/deployments/kube-e2e-redis?&{q}"),
            format!("PATCH /api/v1/namespaces/ns/services/kube-e2e-redis?&{q}"),
        ]
    );
    let proxied = fake
        .requests()
        .iter()
        .rfind(|r| r.path == "/api/v1/namespaces/ns/services/kube-e2e:8000/proxy/ok")
        .map(|r| r.status);
    assert_eq!(proxied, Some(200), "the /ok check went through the Service");
    wait_until("the address to be printed", 10, || {
        agent.lines.lock().unwrap().iter().any(|l| {
            l == &format!("hostplane listener: deployment kube-e2e ({dep}) answers at http://kube-e2e.ns.svc:8000")
        })
    });
    wait_until("the pod's logs as deploy logs", 20, || {
        logs_of(&dep).contains("serving v1")
    });
    // The logs are followed: a line the pod prints later arrives too.
    fake.print(&image("v1"), "INFO: a line printed after the rollout");
    wait_until("a later line of the pod", 20, || {
        logs_of(&dep).contains("a line printed after the rollout")
    });
    let postgres_pod = pods(fake, "postgres")[0]["metadata"]["uid"].clone();

    println!("update: the new pod replaces the old one; the stores are not restarted");
    let run = deploy("v2", true);
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(api_image(fake, name), image("v2"));
    wait_until("the old API pod to go", 10, || pods(fake, "api").len() == 1);
    assert_eq!(pods(fake, "postgres")[0]["metadata"]["uid"], postgres_pod);
    assert_eq!(inventory(fake), expected);

    println!("an image that cannot be pulled: DEPLOY_FAILED (ImagePullFailed), v2 keeps running");
    fake.set_fault(&image("v3"), Some(Fault::ImagePull));
    let run = deploy("v3", true);
    assert!(!run.ok, "{}", run.stdout);
    let logs = logs_of(&dep);
    assert!(logs.contains("ImagePullFailed"), "{logs}");
    assert!(logs.contains("Back-off pulling image"), "{logs}");
    wait_until("the cluster to run v2 again", 20, || {
        api_image(fake, name) == image("v2")
    });
    wait_until("only v2's pod", 20, || {
        let api = pods(fake, "api");
        api.len() == 1 && api[0]["spec"]["containers"][0]["image"] == image("v2")
    });

    println!("a crash loop: DEPLOY_FAILED (CrashLoopBackOff) with the exit code and last lines");
    fake.set_fault(
        &image("v4"),
        Some(Fault::CrashLoop {
            exit_code: 3,
            logs: vec!["fatal: OPENAI_API_KEY is not set".into()],
        }),
    );
    let run = deploy("v4", true);
    assert!(!run.ok, "{}", run.stdout);
    let logs = logs_of(&dep);
    assert!(logs.contains("CrashLoopBackOff"), "{logs}");
    assert!(logs.contains("exit code 3"), "{logs}");
    assert!(logs.contains("fatal: OPENAI_API_KEY is not set"), "{logs}");
    wait_until("the cluster to run v2 again", 20, || {
        api_image(fake, name) == image("v2")
    });

    println!("an autoscaled update adds an HPA; scaling back removes it");
    let patch = |spec: Value| {
        let (status, body) = server.call(
            "PATCH",
            &format!("/v2/deployments/{dep}"),
            Some(json!({"source_config": {"resource_spec": spec},
                        "source_revision_config": {"image_uri": image("v2")}})),
        );
        assert_eq!(status, 200, "{body}");
        body["latest_revision_id"].as_str().unwrap().to_owned()
    };
    let deployed = |rev: &str| server.revision_status(&dep, rev) == "DEPLOYED";
    // Waits for a revision to be DEPLOYED; on a timeout, says where it stopped and what
    // the agent logged.
    let wait_deployed = |what: &str, rev: &str, agent: &KubeAgent| {
        support::wait_until_or(
            what,
            30,
            || deployed(rev),
            || {
                let (_, r) = server.call(
                    "GET",
                    &format!("/v2/deployments/{dep}/revisions/{rev}"),
                    None,
                );
                format!("revision: {r}\nagent log:\n{}", agent.log_tail())
            },
        )
    };
    let rev = patch(json!({"min_scale": 1, "max_scale": 3}));
    wait_deployed("the autoscaled revision", &rev, &agent);
    assert!(inventory(fake).contains(&"HorizontalPodAutoscaler/ns/kube-e2e".to_owned()));
    let rev = patch(json!({"min_scale": 1, "max_scale": 1}));
    wait_deployed("the fixed-size revision", &rev, &agent);
    assert_eq!(inventory(fake), expected);

    println!("redeploy of the first revision: a new revision runs v1 again");
    let (status, body) = server.call(
        "POST",
        &format!("/v2/deployments/{dep}/revisions/{first_rev}/redeploy"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let again = body["latest_revision_id"].as_str().unwrap().to_owned();
    wait_deployed("the redeployed revision", &again, &agent);
    assert_eq!(api_image(fake, name), image("v1"));
    assert_eq!(inventory(fake), expected);

    println!("kill -9 of the agent mid-rollout: it converges without duplicates");
    fake.set_ready_after(Duration::from_secs(3));
    let run = deploy("v5", false);
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    wait_until("v5 to be applied", 20, || {
        api_image(fake, name) == image("v5")
    });
    agent.kill();
    let agent = KubeAgent::start(&setup, None);
    let (_, d) = server.call("GET", &format!("/v2/deployments/{dep}"), None);
    let v5 = d["latest_revision_id"].as_str().unwrap().to_owned();
    wait_until("v5 to be deployed", 40, || deployed(&v5));
    fake.set_ready_after(Duration::from_millis(300));
    assert_eq!(inventory(fake), expected);
    wait_until("one API pod", 20, || pods(fake, "api").len() == 1);

    println!("unschedulable: DEPLOY_FAILED at the deadline with the scheduler's reason");
    fake.set_fault(&image("v6"), Some(Fault::Unschedulable));
    let run = deploy("v6", true);
    assert!(!run.ok, "{}", run.stdout);
    let logs = logs_of(&dep);
    assert!(logs.contains("Unschedulable"), "{logs}");
    assert!(logs.contains("Insufficient cpu"), "{logs}");

    println!(
        "bringing its own stores: the deployment's PostgreSQL and Redis go (the volume stays)"
    );
    let (status, body) = server.call(
        "PATCH",
        &format!("/v2/deployments/{dep}"),
        Some(json!({
            "source_revision_config": {"image_uri": image("v2")},
            "secrets": [{"name": "POSTGRES_URI_CUSTOM", "value": "postgres://db.example/agent"},
                        {"name": "REDIS_URI_CUSTOM", "value": "redis://cache.example"}],
        })),
    );
    assert_eq!(status, 200, "{body}");
    let own = body["latest_revision_id"].as_str().unwrap().to_owned();
    wait_until("the revision without stores", 30, || deployed(&own));
    assert_eq!(
        inventory(fake),
        [
            "Deployment/ns/kube-e2e",
            "PersistentVolumeClaim/ns/data-kube-e2e-postgres-0",
            "Secret/ns/kube-e2e-env",
            "Service/ns/kube-e2e",
        ]
    );

    println!("a source build: a Job, BUILT, the pushed image with the registry login");
    source_build(&setup, false);

    println!("delete: every object goes (the volume too), then the deployment");
    setup.delete(&cli, &dep);
    drop(agent);

    check_rbac(fake, "listener/role.yaml");
}

/// The Role allows every request the agent made (all the fake saw, but for the
/// test's own applies as the GitOps tool, field manager `gitops`), and grants nothing
/// the agent did not use.
fn check_rbac(fake: &FakeKube, role: &str) {
    let requests: Vec<Logged> = fake
        .requests()
        .into_iter()
        .filter(|r| !r.query.contains("fieldManager=gitops"))
        .collect();
    println!("RBAC: {role} allows every request the agent made, and nothing it did not use");
    let used: BTreeSet<Attributes> = requests.iter().flat_map(|r| r.attributes.clone()).collect();
    let rules = role_rules(role);
    for a in &used {
        let allowed = rules.iter().any(|r| {
            r.groups.contains(&a.group)
                && r.resources.contains(&a.resource)
                && r.verbs.contains(&a.verb)
        });
        assert!(allowed, "the Role does not allow {a:?}");
    }
    for r in &rules {
        for group in &r.groups {
            for resource in &r.resources {
                for verb in &r.verbs {
                    let needed = used
                        .iter()
                        .any(|a| &a.group == group && &a.resource == resource && &a.verb == verb);
                    assert!(
                        needed,
                        "the Role grants {verb} on {group}/{resource}, which the agent never uses"
                    );
                }
            }
        }
    }
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.status != 403 && r.status != 401),
        "no request was refused"
    );
}

#[test]
fn lgp_mode_end_to_end() {
    let setup = Setup::new("cluster-lgp");
    let Setup {
        fake,
        server,
        listener,
        ..
    } = &setup;
    let agent = KubeAgent::start(&setup, Some("lgp"));
    let cli = Cli::new(server);
    let image = |n: char| {
        format!(
            "registry.example/lgp-agent@sha256:{}",
            n.to_string().repeat(64)
        )
    };
    let lgp = || {
        fake.objects("LGP", "ns")
            .first()
            .cloned()
            .unwrap_or_default()
    };

    println!("deploy: one LGP and its Secret; DEPLOYED once the operator reports the rollout");
    let v1 = image('1');
    let run = cli.deploy(&v1, "lgp-e2e", true, &["--listener-id", listener]);
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    let dep = run.deployment_id();
    assert_eq!(
        inventory(fake),
        [
            "Deployment/ns/lgp-e2e",
            "LGP/ns/lgp-e2e",
            "Secret/ns/lgp-e2e-env",
            "Service/ns/lgp-e2e"
        ]
    );
    let (_, d) = server.call("GET", &format!("/v2/deployments/{dep}"), None);
    let spec = &lgp()["spec"];
    assert_eq!(spec["serverSpec"]["image"], v1.as_str());
    assert_eq!(
        spec["serverSpec"]["labels"]["hostplane.dev/revision-id"],
        d["latest_revision_id"]
    );
    assert_eq!(spec["database"]["enabled"], true);
    assert_eq!(spec["redis"]["enabled"], true);
    assert_eq!(spec["serverSpec"]["replicas"], 1);
    assert!(fake.requests().iter().any(|r| {
        r.path == "/api/v1/namespaces/ns/services/lgp-e2e:8000/proxy/ok" && r.status == 200
    }));

    println!("an image that cannot be pulled: DEPLOY_FAILED, and the LGP goes back to v1");
    let v2 = image('2');
    fake.set_fault(&v2, Some(Fault::ImagePull));
    let run = cli.deploy(&v2, "lgp-e2e", true, &[]);
    assert!(!run.ok, "{}", run.stdout);
    let logs = cli.run(&["deploy", "logs", "--deployment-id", &dep, "--limit", "20"]);
    assert!(logs.stdout.contains("ImagePullFailed"), "{}", logs.stdout);
    wait_until("the LGP to run v1 again", 20, || {
        lgp()["spec"]["serverSpec"]["image"] == v1.as_str()
    });

    println!("a source build: a Job, BUILT, an LGP of the pushed image with the registry login");
    source_build(&setup, true);

    println!("delete: the LGP and the Secret go (the operator's objects with them)");
    setup.delete(&cli, &dep);
    drop(agent);
    check_rbac(fake, "listener-lgp/role.yaml");
}

/// Plays the GitOps tool: applies every file of a rendered folder to the fake cluster.
fn gitops_apply(fake: &FakeKube, folder: &Path) {
    let port: u16 = fake.url.rsplit(':').next().unwrap().parse().unwrap();
    let auth = format!("Bearer {}", fakekube::TOKEN);
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "kustomization.yaml" {
            continue;
        }
        let doc: Value = serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let (prefix, plural) = match doc["kind"].as_str().unwrap() {
            "Secret" => ("/api/v1", "secrets"),
            "Service" => ("/api/v1", "services"),
            "Deployment" => ("/apis/apps/v1", "deployments"),
            "StatefulSet" => ("/apis/apps/v1", "statefulsets"),
            "HorizontalPodAutoscaler" => ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
            other => panic!("unexpected kind {other}"),
        };
        let target = format!(
            "{prefix}/namespaces/{}/{plural}/{}?fieldManager=gitops&force=true",
            doc["metadata"]["namespace"].as_str().unwrap(),
            doc["metadata"]["name"].as_str().unwrap()
        );
        let headers = [
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/apply-patch+yaml"),
        ];
        let (status, body) = http(port, "PATCH", &target, &headers, &doc.to_string());
        assert!(status == 200 || status == 201, "{target}: {status} {body}");
    }
}

#[test]
fn render_mode_observes_the_cluster() {
    let setup = Setup::new("gitops-observed");
    let Setup {
        fake,
        server,
        db,
        kubeconfig,
        listener,
        key,
        ..
    } = &setup;
    let out = db.dir.0.join("manifests");
    let log = db.dir.0.join("render-agent.log");
    // Killed on drop, also when an assertion fails.
    let mut agent = KubeAgent {
        child: bin()
            .args([
                "listener",
                "--mode",
                "render",
                "--render-observe",
                "--control-plane-url",
                &server.url(),
            ])
            .args(["--listener-id", listener, "--agent-id", "render-observer"])
            .arg("--render-dir")
            .arg(&out)
            .env("HOSTPLANE_LISTENER_KEY", key)
            .env("KUBECONFIG", kubeconfig)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
        lines: Arc::default(),
        log: log.clone(),
    };
    let image = format!("registry.example/observed@sha256:{}", "7".repeat(64));
    fake.set_image_logs(&image, &["INFO: observed and serving"]);
    let (status, d) = server.call(
        "POST",
        "/v2/deployments",
        Some(json!({
            "name": "observed", "source": "external_docker",
            "source_config": {"listener_id": listener},
            "source_revision_config": {"image_uri": image},
            "secrets": [],
        })),
    );
    assert_eq!(status, 201, "{d}");
    let dep = d["id"].as_str().unwrap().to_owned();
    let rev = d["latest_revision_id"].as_str().unwrap().to_owned();
    let status_of = || server.revision_status(&dep, &rev);
    let folder = out.join("ns").join("observed");
    wait_until("the files", 20, || {
        folder.join("kustomization.yaml").exists()
    });

    println!("written but not applied: the agent watches the cluster and the revision waits");
    // The agent looks for its server Deployment in the cluster again and again (absent:
    // nothing applied it yet), writes nothing there itself, and reports nothing.
    let server_object = "/apis/apps/v1/namespaces/ns/deployments/observed";
    wait_until("the agent to look for the rollout three times", 30, || {
        fake.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path == server_object)
            .count()
            >= 3
    });
    assert_eq!(status_of(), "DEPLOYING");
    let writes: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        writes,
        Vec::<String>::new(),
        "render mode wrote to the cluster"
    );

    println!("applied by the GitOps tool and rolled out: DEPLOYED, the pod's logs shipped");
    gitops_apply(fake, &folder);
    wait_until("DEPLOYED", 30, || status_of() == "DEPLOYED");
    wait_until("the pod's logs", 20, || {
        let (_, logs) = server.call(
            "POST",
            &format!("/v1/projects/{dep}/revisions/{rev}/deploy_logs"),
            Some(json!({})),
        );
        logs.to_string().contains("observed and serving")
    });
    wait_until("a heartbeat to report what runs", 30, || {
        fake.requests()
            .iter()
            .any(|r| r.method == "GET" && r.path == "/apis/apps/v1/namespaces/ns/deployments")
    });
    agent.kill();
    check_rbac(fake, "render-observer/role.yaml");
}

#[test]
fn a_refused_apply_fails_the_revision_with_the_api_servers_words() {
    let setup = Setup::new("cluster-forbidden");
    let Setup {
        fake,
        server,
        listener,
        ..
    } = &setup;
    fake.forbid(Attributes {
        verb: "create".into(),
        group: "apps".into(),
        resource: "deployments".into(),
        namespace: "ns".into(),
    });
    let _agent = KubeAgent::start(&setup, None);
    let (status, d) = server.call(
        "POST",
        "/v2/deployments",
        Some(json!({
            "name": "refused", "source": "external_docker",
            "source_config": {"listener_id": listener},
            "source_revision_config": {"image_uri": format!("registry.example/r@sha256:{}", "8".repeat(64))},
            "secrets": [],
        })),
    );
    assert_eq!(status, 201, "{d}");
    let dep = d["id"].as_str().unwrap().to_owned();
    let rev = d["latest_revision_id"].as_str().unwrap().to_owned();
    wait_until("DEPLOY_FAILED", 30, || {
        server.revision_status(&dep, &rev) == "DEPLOY_FAILED"
    });
    let (_, logs) = server.call(
        "POST",
        &format!("/v1/projects/{dep}/revisions/{rev}/deploy_logs"),
        Some(json!({})),
    );
    let text = logs.to_string();
    assert!(text.contains("ApplyFailed"), "{text}");
    assert!(
        text.contains("cannot create resource \\\"deployments\\\" in API group \\\"apps\\\""),
        "{text}"
    );
}

/// A deployment deleted for good while its agent was away (`--force` once it waited for
/// deletion) leaves no row to act on: the agent, back, finds objects labelled with a
/// deployment that no longer exists and removes them, and only them.
#[test]
fn objects_of_deployments_deleted_while_away_are_pruned() {
    let setup = Setup::new("cluster-prune");
    let Setup {
        fake,
        server,
        listener,
        ..
    } = &setup;
    let cli = Cli::new(server);
    let mut agent = KubeAgent::start(&setup, None);
    let extra = ["--listener-id", listener.as_str()];
    let kept = cli.deploy(&digest('1'), "kept", true, &extra);
    assert!(kept.ok, "{}\n{}", kept.stderr, agent.log_tail());
    let gone = cli.deploy(&digest('2'), "gone", true, &extra);
    assert!(gone.ok, "{}\n{}", gone.stderr, agent.log_tail());
    let gone = gone.deployment_id();
    let of = |name: &str| -> Vec<String> {
        inventory(fake)
            .into_iter()
            .filter(|o| o.split('/').nth(2).is_some_and(|n| n.contains(name)))
            .collect()
    };
    assert_eq!(of("gone").len(), 9, "{:?}", inventory(fake));
    let kept_objects = of("kept");
    assert_eq!(kept_objects.len(), 9, "{:?}", inventory(fake));

    agent.kill();
    // Away: the first delete waits for the agent, the forced second removes the row.
    for _ in 0..2 {
        let (status, body) = server.call(
            "DELETE",
            &format!("/v2/deployments/{gone}?force=true"),
            None,
        );
        assert!(status == 204 || status == 202, "{status} {body}");
    }
    assert_eq!(
        server
            .call("GET", &format!("/v2/deployments/{gone}"), None)
            .0,
        404
    );
    assert_eq!(
        of("gone").len(),
        9,
        "nothing may change while the agent is away"
    );

    let agent = KubeAgent::start(&setup, None);
    wait_until(
        "the agent to prune what the gone deployment left",
        60,
        || of("gone").is_empty(),
    );
    assert_eq!(of("kept"), kept_objects, "{}", agent.log_tail());
}

/// Past `--health-timeout-secs`, a rollout that never becomes ready fails with
/// `RolloutTimeout`, and ready pods whose `/ok` does not answer with
/// `HealthCheckTimeout`, each saying what it waited for.
#[test]
fn rollouts_and_health_checks_time_out() {
    let setup = Setup::new("cluster-timeouts");
    let Setup {
        fake,
        server,
        listener,
        ..
    } = &setup;
    let cli = Cli::new(server);
    let agent = KubeAgent::start_with_timeout(&setup, None, 3);
    let failed_line = |run: &support::cli::Run| {
        let dep = run.deployment_id();
        let (_, d) = server.call("GET", &format!("/v2/deployments/{dep}"), None);
        let rev = d["latest_revision_id"].as_str().unwrap().to_owned();
        assert_eq!(server.revision_status(&dep, &rev), "DEPLOY_FAILED");
        let (_, logs) = server.call(
            "POST",
            &format!("/v1/projects/{dep}/revisions/{rev}/deploy_logs"),
            Some(json!({"level": "ERROR"})),
        );
        let prefix = format!("Revision {rev} failed to deploy: ");
        logs["logs"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|l| {
                l["message"]
                    .as_str()?
                    .strip_prefix(&prefix)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("no failure line: {logs}"))
    };

    println!("pods that never become ready: RolloutTimeout");
    fake.set_ready_after(Duration::from_secs(3600));
    let run = cli.deploy(&digest('1'), "slow", true, &["--listener-id", listener]);
    assert!(!run.ok, "{}\n{}", run.stdout, agent.log_tail());
    let line = failed_line(&run);
    assert!(
        line.starts_with("RolloutTimeout: not rolled out after 3 s: "),
        "{line}"
    );

    println!("ready pods whose /ok fails: HealthCheckTimeout");
    fake.set_ready_after(Duration::from_millis(300));
    fake.set_fault(&digest('2'), Some(Fault::Unhealthy));
    let run = cli.deploy(&digest('2'), "sick", true, &["--listener-id", listener]);
    assert!(!run.ok, "{}\n{}", run.stdout, agent.log_tail());
    let line = failed_line(&run);
    assert!(
        line.starts_with(
            "HealthCheckTimeout: GET /ok through Service sick did not answer within 3 s: "
        ),
        "{line}"
    );
}
