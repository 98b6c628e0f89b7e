//! `hostplane dockerfile` against the official `langgraph dockerfile` (langgraph-cli
//! 0.4.40) on every project of `data/dockerfile-corpus.json`: the same Dockerfile byte
//! for byte, the same messages on stdout, the same exit status, and for an invalid config
//! the same error (click's `Error: ...` text, or the last line of the CLI's traceback).
//! The expectations come from running the official CLI here, never from a file.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use support::TempDir;

struct Outcome {
    code: Option<i32>,
    stdout: String,
    error: String,
    dockerfile: Option<String>,
}

/// What the user is told on failure: click's usage error from `Error:` on, else the
/// traceback's last line.
fn error_text(stderr: &str) -> String {
    match stderr.find("\nError: ") {
        Some(i) => stderr[i + 1..].trim_end().to_owned(),
        None => stderr.trim_end().lines().last().unwrap_or("").to_owned(),
    }
}

fn outcome(out: Output, saved: &Path) -> Outcome {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let dockerfile = std::fs::read_to_string(saved).ok();
    let _ = std::fs::remove_file(saved);
    Outcome {
        code: out.status.code(),
        stdout,
        error: error_text(&stderr),
        dockerfile,
    }
}

fn run(program: &Path, args: &[String], dir: &Path) -> Outcome {
    let saved = dir.join("Generated.Dockerfile");
    let out = Command::new(program)
        .arg("dockerfile")
        .args(args)
        .arg(&saved)
        .current_dir(dir)
        .env("LANGGRAPH_CLI_NO_ANALYTICS", "1")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    outcome(out, &saved)
}

#[test]
fn dockerfiles_match_the_official_cli() {
    let corpus: Vec<Value> =
        serde_json::from_str(include_str!("data/dockerfile-corpus.json")).unwrap();
    assert!(
        corpus.len() >= 30,
        "the corpus holds {} projects",
        corpus.len()
    );
    let official = support::cli::langgraph();
    let ours = Path::new(env!("CARGO_BIN_EXE_hostplane"));
    let mut failures = Vec::new();
    let (mut valid, mut invalid) = (0, 0);
    for case in &corpus {
        let name = case["name"].as_str().unwrap();
        let root = TempDir::new(&format!("corpus-{name}"));
        for (path, text) in case["files"].as_object().unwrap() {
            let path = root.0.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text.as_str().unwrap()).unwrap();
        }
        let mut args = vec![
            "-c".to_owned(),
            case["config"]
                .as_str()
                .unwrap_or("langgraph.json")
                .to_owned(),
        ];
        if let Some(extra) = case["args"].as_array() {
            args.extend(extra.iter().map(|a| a.as_str().unwrap().to_owned()));
        }
        let want = run(&official, &args, &root.0);
        let got = run(ours, &args, &root.0);
        if want.code == Some(0) {
            valid += 1;
        } else {
            invalid += 1;
        }
        let mut problems = Vec::new();
        if got.code != want.code {
            problems.push(format!("exit {:?}, the CLI's {:?}", got.code, want.code));
        }
        if got.dockerfile != want.dockerfile {
            problems.push(format!(
                "Dockerfile differs:\n--- ours\n{}\n--- the CLI's\n{}",
                got.dockerfile.as_deref().unwrap_or("(none)"),
                want.dockerfile.as_deref().unwrap_or("(none)")
            ));
        }
        if got.stdout != want.stdout {
            problems.push(format!(
                "stdout differs:\n--- ours\n{}--- the CLI's\n{}",
                got.stdout, want.stdout
            ));
        }
        if want.code != Some(0) && got.error != want.error {
            problems.push(format!(
                "error differs:\n--- ours\n{}\n--- the CLI's\n{}",
                got.error, want.error
            ));
        }
        if !problems.is_empty() {
            failures.push(format!("## {name}\n{}", problems.join("\n")));
        }
    }
    assert!(
        valid >= 30 && invalid >= 20,
        "{valid} valid, {invalid} invalid projects"
    );
    assert!(
        failures.is_empty(),
        "{} of {} projects differ:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n\n")
    );
}
