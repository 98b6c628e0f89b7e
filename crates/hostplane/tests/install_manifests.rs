//! The install manifests under `deploy/kubernetes`: every file is valid YAML, every
//! kustomization names files that exist, and what the manifests ask of the binary (the
//! arguments, the environment variables) is what the real binary accepts. The Roles are
//! checked against the agent's real requests in `tests/kubernetes.rs`.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use support::bin;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every YAML file of the manifests: (path, document).
fn documents() -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(root()).unwrap() {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let doc = yaml(&path);
                out.push((path, doc));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// `hostplane ARGS --help` succeeds (the arguments parse) and prints this text.
fn help(args: &[String]) -> String {
    let mut full = args.to_vec();
    full.push("--help".into());
    let out = bin().args(&full).output().unwrap();
    assert!(
        out.status.success(),
        "hostplane {full:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn kustomizations_name_existing_files() {
    let docs = documents();
    assert!(docs.len() >= 10, "{docs:?}");
    for (path, doc) in &docs {
        if doc["kind"] != "Kustomization" {
            continue;
        }
        let dir = path.parent().unwrap();
        let resources = doc["resources"].as_array().unwrap();
        let patches = doc["patches"].as_array().cloned().unwrap_or_default();
        for r in resources.iter().chain(patches.iter().map(|p| &p["path"])) {
            let target = dir.join(r.as_str().unwrap());
            assert!(
                target.exists(),
                "{}: {} is missing",
                path.display(),
                target.display()
            );
        }
    }
}

#[test]
fn containers_ask_the_binary_for_what_it_has() {
    let mut checked = 0;
    for (path, doc) in documents() {
        let containers = doc["spec"]["template"]["spec"]["containers"]
            .as_array()
            .cloned();
        for c in containers.into_iter().flatten() {
            let Some(args) = c["args"].as_array() else {
                continue;
            };
            let args: Vec<String> = args
                .iter()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect();
            // A patch repeats only what it changes; the base names the image.
            if doc["metadata"]["name"] == "hostplane-listener"
                || doc["metadata"]["name"] == "hostplane"
            {
                let text = help(&args);
                for e in c["env"].as_array().into_iter().flatten() {
                    let name = e["name"].as_str().unwrap();
                    assert!(
                        text.contains(&format!("env: {name}=")),
                        "{}: {name} is not a setting of {args:?}",
                        path.display()
                    );
                }
                checked += 1;
            }
        }
    }
    // The server, the listener and the lgp overlay's listener.
    assert_eq!(checked, 3);
}
