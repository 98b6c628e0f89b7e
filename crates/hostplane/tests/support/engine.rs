//! Real container engines for the container-mode tests: the machine's Docker daemon and
//! Podman's Docker-compatible service (on a socket of its own), images built `FROM
//! scratch` out of Debian's `busybox-static` (nothing can be pulled here), and a running
//! `hostplane listener --mode containers` against either.

use super::{bin, Db, Server, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Whether container tests are skipped on this machine (`HOSTPLANE_SKIP_CONTAINER_TESTS=1`;
/// `.ci/run` never sets it); says so when they are.
pub fn skipped(test: &str) -> bool {
    let skip = std::env::var("HOSTPLANE_SKIP_CONTAINER_TESTS").is_ok_and(|v| v == "1");
    if skip {
        // Printed even though the harness captures it when the test passes: run with
        // --nocapture to see it; scripts/test prints its own line first and last.
        println!("{test} SKIPPED: HOSTPLANE_SKIP_CONTAINER_TESTS=1");
    }
    skip
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Docker,
    Podman,
}

/// An engine's API socket and command-line tool.
pub struct Engine {
    pub kind: Kind,
    service: Option<Child>,
    socket: PathBuf,
    _dir: Option<TempDir>,
}

impl Engine {
    /// The Docker daemon of the machine (`/var/run/docker.sock`; `scripts/test` starts it
    /// when it does not run).
    pub fn docker() -> Engine {
        let engine = Engine {
            kind: Kind::Docker,
            service: None,
            socket: PathBuf::from("/var/run/docker.sock"),
            _dir: None,
        };
        let out = engine.try_cli(&["info", "--format", "{{.ServerVersion}}"]);
        assert!(
            out.status.success(),
            "the Docker daemon does not answer (scripts/test starts dockerd):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        engine
    }

    /// Podman's Docker-compatible API on a socket of its own, stopped on drop.
    pub fn podman() -> Engine {
        Self::podman_with(&[])
    }

    /// [`Engine::podman`] with these registries reached over plain HTTP (as Podman must
    /// be told; Docker allows it on 127.0.0.1 by itself).
    pub fn podman_with(insecure_registries: &[&str]) -> Engine {
        let dir = TempDir::new("hostplane-podman");
        let socket = dir.0.join("podman.sock");
        let registries = dir.0.join("registries.conf");
        let entries: String = insecure_registries
            .iter()
            .map(|r| format!("[[registry]]\nlocation = \"{r}\"\ninsecure = true\n"))
            .collect();
        std::fs::write(&registries, entries).unwrap();
        let mut service = Command::new("podman");
        if !insecure_registries.is_empty() {
            service.env("CONTAINERS_REGISTRIES_CONF", &registries);
        }
        let service = service
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("podman system service (scripts/test installs podman when run as root)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "podman's API socket never appeared"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Engine {
            kind: Kind::Podman,
            service: Some(service),
            socket,
            _dir: Some(dir),
        }
    }

    pub fn program(&self) -> &'static str {
        match self.kind {
            Kind::Docker => "docker",
            Kind::Podman => "podman",
        }
    }

    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn try_cli(&self, args: &[&str]) -> Output {
        Command::new(self.program())
            .args(args)
            .env("DOCKER_HOST", self.docker_host())
            .output()
            .unwrap_or_else(|e| panic!("{} cannot run: {e}", self.program()))
    }

    /// `docker ARGS` or `podman ARGS`: its stdout, or a panic with its stderr.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.try_cli(args);
        assert!(
            out.status.success(),
            "{} {args:?} failed:\n{}",
            self.program(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Builds the folder `context` (with its `Containerfile`) as `tag`; the reference
    /// pinned by a digest to deploy it by (the official CLI takes no other): Podman's
    /// digest, or on Docker, which gives an image it built and never pushed none, the
    /// image's id (which container mode resolves).
    pub fn build(&self, context: &Path, tag: &str) -> String {
        let file = context.join("Containerfile").display().to_string();
        let folder = context.display().to_string();
        self.cli(&["build", "-q", "-f", &file, "-t", tag, &folder]);
        let field = match self.kind {
            Kind::Docker => "{{.Id}}",
            Kind::Podman => "{{.Digest}}",
        };
        let digest = self.cli(&["image", "inspect", "--format", field, tag]);
        let name = tag.rsplit_once(':').map_or(tag, |(n, _)| n);
        format!("{name}@{digest}")
    }

    /// The containers whose labels include `label` (`key=value`), as (role, revision).
    pub fn containers(&self, label: &str) -> Vec<(String, String)> {
        let format = match self.kind {
            Kind::Docker => r#"{{.Label "hostplane.role"}} {{.Label "hostplane.revision-id"}}"#,
            Kind::Podman => {
                r#"{{index .Labels "hostplane.role"}} {{index .Labels "hostplane.revision-id"}}"#
            }
        };
        let filter = format!("label={label}");
        self.cli(&["ps", "-a", "--filter", &filter, "--format", format])
            .lines()
            .map(|l| {
                let (role, rev) = l.split_once(' ').unwrap_or((l, ""));
                (role.to_owned(), rev.trim().to_owned())
            })
            .collect()
    }

    /// The names of the volumes with `label`, one a line.
    pub fn volumes(&self, label: &str) -> String {
        self.cli(&["volume", "ls", "--filter", &format!("label={label}"), "-q"])
    }

    /// The tags (`repository:tag`) of the images whose tag starts with `prefix`, sorted.
    pub fn images_named(&self, prefix: &str) -> Vec<String> {
        // Podman's listing fails when an image goes while it lists; it is asked again.
        let args = ["images", "--format", "{{.Repository}}:{{.Tag}}"];
        let mut tries = 0;
        let out = loop {
            let out = self.try_cli(&args);
            if out.status.success() {
                break String::from_utf8_lossy(&out.stdout).into_owned();
            }
            if tries == 10 {
                break self.cli(&args);
            }
            tries += 1;
            std::thread::sleep(std::time::Duration::from_millis(200));
        };
        let mut tags: Vec<String> = out
            .lines()
            .filter(|t| t.starts_with(prefix))
            .map(str::to_owned)
            .collect();
        tags.sort();
        tags
    }

    /// Removes every container, volume and image the listener left behind.
    pub fn clean(&self, listener: &str) {
        let label = format!("hostplane.listener-id={listener}");
        let filter = format!("label={label}");
        for id in self.cli(&["ps", "-aq", "--filter", &filter]).lines() {
            let _ = match self.kind {
                Kind::Docker => self.try_cli(&["rm", "-f", id]),
                Kind::Podman => self.try_cli(&["rm", "-f", "-t", "0", id]),
            };
        }
        for v in self.volumes(&label).lines() {
            let _ = self.try_cli(&["volume", "rm", "-f", v]);
        }
        for image in self.images_named(&format!("localhost/hostplane-build/{listener}/")) {
            let _ = self.try_cli(&["rmi", "-f", &image]);
        }
    }

    /// The images built for this engine (once per engine and test binary).
    pub fn images(&self) -> &'static Images {
        static DOCKER: OnceLock<Images> = OnceLock::new();
        static PODMAN: OnceLock<Images> = OnceLock::new();
        match self.kind {
            Kind::Docker => &DOCKER,
            Kind::Podman => &PODMAN,
        }
        .get_or_init(|| Images::build(self))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(mut service) = self.service.take() {
            let _ = service.kill();
            let _ = service.wait();
        }
    }
}

/// Test images: a server answering `/ok` with its text after a delay (printing a line
/// first), one that exits at once with code 3, one that idles (the stand-in for
/// PostgreSQL and Redis, which cannot be pulled here), and `base`: a stand-in for the
/// official `langchain/langgraph-api` base image (busybox's shell and tools, stubs for
/// `uv` and `pip`, `/api/constraints.txt`, and a server that writes its environment to
/// `/env`, serves `/deps` (what the Dockerfile installed) and answers `/ok`), tagged `localhost/hostplane-e2e-base:3.11` so that a
/// project with `"base_image": "localhost/hostplane-e2e-base"` builds on it.
pub struct Images {
    pub v1: String,
    pub v2: String,
    pub slow: String,
    pub failing: String,
    pub idle: String,
    pub base: String,
}

pub const BASE_IMAGE: &str = "localhost/hostplane-e2e-base";

fn busybox() -> PathBuf {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("busybox is needed (Debian's busybox-static): run scripts/test as root")
}

impl Images {
    fn build(engine: &Engine) -> Images {
        let dir = TempDir::new("hostplane-images");
        let simple = |name: &str, entrypoint: &str, ok_text: Option<&str>| {
            let context = dir.0.join(name);
            std::fs::create_dir_all(context.join("www")).unwrap();
            std::fs::copy(busybox(), context.join("busybox")).unwrap();
            std::fs::write(context.join("www/ok"), ok_text.unwrap_or("")).unwrap();
            std::fs::write(
                context.join("Containerfile"),
                format!(
                    "FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\n\
                     ENTRYPOINT [\"/bin/busybox\", \"sh\", \"-c\", {}]\n",
                    serde_json::to_string(entrypoint).unwrap()
                ),
            )
            .unwrap();
            engine.build(&context, &format!("localhost/hostplane-e2e-{name}:1"))
        };
        let serve = |text: &str, delay: u32| {
            format!(
                "sleep {delay}; echo \"serving {text}\"; \
                 exec /bin/busybox httpd -f -p 8000 -h /www"
            )
        };
        let idle = simple("idle", "exec /bin/busybox sleep 100000", None);
        // Can this machine run a container at all? If not, say why here.
        let tag = "localhost/hostplane-e2e-idle:1";
        let out = engine.try_cli(&["run", "--rm", "--entrypoint", "/bin/busybox", tag, "true"]);
        assert!(
            out.status.success(),
            "{} cannot run a container here (for Podman: is CONTAINERS_CONF={} in effect? \
             scripts/test sets it):\n{}",
            engine.program(),
            std::env::var("CONTAINERS_CONF").unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr)
        );
        let base = dir.0.join("base");
        std::fs::create_dir_all(&base).unwrap();
        std::fs::copy(busybox(), base.join("busybox")).unwrap();
        std::fs::write(base.join("tool"), "#!/bin/sh\necho \"stub: $0 $*\"\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(base.join("tool"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::write(
            base.join("Containerfile"),
            "FROM scratch\n\
             COPY busybox /bin/busybox\n\
             COPY busybox /bin/sh\n\
             RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
             RUN mkdir -p /usr/bin /usr/local/bin /api /www /tmp && touch /api/constraints.txt \
             && echo ok > /www/ok\n\
             COPY tool /usr/bin/uv\n\
             COPY tool /usr/bin/uvx\n\
             COPY tool /usr/local/bin/pip\n\
             ENV PATH=/usr/local/bin:/usr/bin:/bin\n\
             CMD [\"/bin/sh\", \"-c\", \"env > /www/env; ln -s /deps /www/deps; \
             exec httpd -f -p 8000 -h /www\"]\n",
        )
        .unwrap();
        Images {
            v1: simple("v1", &serve("v1", 0), Some("v1")),
            v2: simple("v2", &serve("v2", 0), Some("v2")),
            slow: simple("slow", &serve("v3", 3), Some("v3")),
            failing: simple(
                "failing",
                "echo 'fatal: OPENAI_API_KEY is not set' >&2; exit 3",
                None,
            ),
            idle,
            base: engine.build(&base, &format!("{BASE_IMAGE}:3.11")),
        }
    }
}

/// A running `hostplane listener --mode containers`, its stdout lines collected.
pub struct ListenerAgent {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    log: PathBuf,
}

impl ListenerAgent {
    /// The agent, with `extra` arguments.
    pub fn start(
        server: &Server,
        db: &Db,
        engine: &Engine,
        listener: &str,
        key: &str,
        ports: &str,
        extra: &[&str],
    ) -> Self {
        let log = db
            .dir
            .0
            .join(format!("agent-{}.log", uuid::Uuid::new_v4().simple()));
        let images = engine.images();
        let mut child = bin()
            .args([
                "listener",
                "--mode",
                "containers",
                "--control-plane-url",
                &server.url(),
                "--listener-id",
                listener,
                "--agent-id",
                "e2e-agent",
                "--ports",
                ports,
                "--postgres-image",
                &images.idle,
                "--redis-image",
                &images.idle,
                "--health-timeout-secs",
                "20",
                "--drain-secs",
                "1",
                "--stop-timeout-secs",
                "1",
            ])
            .args(extra)
            .env("HOSTPLANE_LISTENER_KEY", key)
            .env("DOCKER_HOST", engine.docker_host())
            .env("HOSTPLANE_BUILD_DIR", db.dir.0.join("builds"))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let lines = super::stdout_lines(&mut child);
        ListenerAgent { child, lines, log }
    }

    /// The address the agent printed for the deployment.
    pub fn address(&self, deployment: &str) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self.lines.lock().unwrap().iter().find_map(|l| {
                let rest = l
                    .split(&format!("({deployment}) answers at http://127.0.0.1:"))
                    .nth(1)?;
                rest.trim().parse().ok()
            });
            if let Some(port) = found {
                return port;
            }
            assert!(
                Instant::now() < deadline,
                "the agent never printed the address"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last `n` lines the agent logged (for a failure's message).
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ListenerAgent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Removes whatever the test's listener left behind, also when the test fails.
pub struct Cleanup<'a>(pub &'a Engine, pub String);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        self.0.clean(&self.1);
    }
}
