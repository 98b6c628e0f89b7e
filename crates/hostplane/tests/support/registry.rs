//! A real Docker Distribution registry (Debian's `docker-registry`) with hostplane as
//! its token service, both on 127.0.0.1.
//!
//! Needs the `docker-registry` binary: `HOSTPLANE_TEST_REGISTRY_BIN`, which
//! `scripts/test` sets (installing the package when it can), or one on the PATH.

use super::{exchange_with_headers, free_port, Db, Server};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The registry's `auth.token.service`, which hostplane is told too.
pub const SERVICE: &str = "hp-test-registry";

/// The running registry, stopped on drop.
pub struct Registry {
    child: Child,
    pub port: u16,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// hostplane (with `key` as its bootstrap key) and a registry that sends clients to it
/// for tokens. Each needs the other's address when it starts, so the registry's port is
/// picked before it binds; should another process take it in between, the registry
/// exits (or a stranger answers) and both start again on another port, three tries at
/// most, each failure said.
pub fn start(db: &Db, key: &str) -> (Server, Registry) {
    let bin =
        std::env::var("HOSTPLANE_TEST_REGISTRY_BIN").unwrap_or_else(|_| "docker-registry".into());
    (1..=3)
        .find_map(|attempt| {
            let port = free_port();
            let (server, child) = start_pair(&bin, db, port, key);
            match ready(&server, port, child) {
                Ok(registry) => Some((server, registry)),
                Err(why) => {
                    eprintln!("try {attempt}: the registry on port {port}: {why}");
                    None
                }
            }
        })
        .expect("the registry did not start in three tries")
}

fn start_pair(bin: &str, db: &Db, port: u16, key: &str) -> (Server, Child) {
    let server = Server::start_with(
        db,
        &[
            "--registry-url",
            &format!("127.0.0.1:{port}"),
            "--registry-service",
            SERVICE,
        ],
        key,
    );
    let cert = db.dir.0.join("storage/registry-signing-key.crt");
    let config = db.dir.0.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: \
             {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n\
             auth:\n  token:\n    realm: {}/registry/token\n    service: {SERVICE}\n\
             \x20   issuer: hostplane\n    rootcertbundle: {}\n",
            db.dir.0.join("registry-data").display(),
            server.url(),
            cert.display()
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {bin} ({e}): install docker-registry or run scripts/test")
        });
    (server, child)
}

/// Waits until the registry answers on `port` with a challenge naming this `server`
/// (so it is ours, not a stranger that took the port); an error when it exited.
fn ready(server: &Server, port: u16, mut child: Child) -> Result<Registry, String> {
    let realm = format!("realm=\"{}/registry/token\"", server.url());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited ({status}); the port was taken"));
        }
        if let Ok((status, headers, _)) = exchange_with_headers(port, "GET", "/v2/", &[], b"") {
            let challenge = headers
                .iter()
                .find(|(k, _)| k == "www-authenticate")
                .map_or("", |(_, v)| v.as_str());
            if status == 401 && challenge.contains(&realm) {
                return Ok(Registry { child, port });
            }
            let _ = child.kill();
            return Err(format!("something else answers there ({status})"));
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            return Err("it did not listen within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
