//! The official CLI (`langgraph-cli` 0.4.40 from PyPI, in a virtualenv made once under
//! the target folder), run in a project folder against a test server.

use super::{Server, TempDir};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

const CLI_VERSION: &str = "0.4.40";

/// The `langgraph` executable of a virtualenv made for these tests.
pub fn langgraph() -> PathBuf {
    let cli = format!("langgraph-cli=={CLI_VERSION}");
    super::python::venv(&format!("langgraph-cli-{CLI_VERSION}"), &[&cli]).join("bin/langgraph")
}

pub struct Cli<'a> {
    server: &'a Server,
    pub project: TempDir,
}

pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The JSON lines `--json` prints.
    pub fn events(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn deployment_id(&self) -> String {
        self.events()
            .iter()
            .find_map(|e| e["deployment_id"].as_str().map(str::to_owned))
            .unwrap_or_else(|| {
                panic!(
                    "no deployment id printed:\n{}\n{}",
                    self.stdout, self.stderr
                )
            })
    }
}

impl<'a> Cli<'a> {
    pub fn new(server: &'a Server) -> Self {
        let project = TempDir::new("hostplane-cli-project");
        std::fs::write(
            project.0.join("langgraph.json"),
            r#"{"dependencies":["."],"graphs":{"agent":"./agent.py:graph"}}"#,
        )
        .unwrap();
        std::fs::write(project.0.join("agent.py"), "graph = None\n").unwrap();
        Cli { server, project }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().unwrap();
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `langgraph ARGS` in the project folder, against the server, at most 180 s.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.arg("180")
            .arg(langgraph())
            .args(args)
            .current_dir(&self.project.0);
        for var in [
            "LANGSMITH_API_KEY",
            "LANGCHAIN_API_KEY",
            "LANGSMITH_ENDPOINT",
            "LANGGRAPH_HOST_TENANT_ID",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("LANGGRAPH_CLI_NO_ANALYTICS", "1")
            .env("LANGGRAPH_HOST_URL", self.server.url())
            .env("LANGGRAPH_HOST_API_KEY", &self.server.key);
        cmd
    }

    /// `langgraph deploy` of an image, waiting for the agent unless `wait` is false.
    pub fn deploy(&self, image: &str, name: &str, wait: bool, extra: &[&str]) -> Run {
        let mut args = vec![
            "deploy",
            "--image-uri",
            image,
            "--name",
            name,
            "--no-input",
            "--json",
        ];
        if !wait {
            args.push("--no-wait");
        }
        args.extend_from_slice(extra);
        self.run(&args)
    }

    pub fn deploy_image(&self, name: &str, digest_char: char, extra: &[&str]) -> Run {
        let image = format!(
            "docker.io/acme/agent@sha256:{}",
            digest_char.to_string().repeat(64)
        );
        self.deploy(&image, name, false, extra)
    }
}
