//! A JavaScript project's Dockerfile (`node_config_to_docker`) and how the CLI picks its
//! package manager's install command.

use crate::config::{check_files_for_credentials, Config};
use crate::files::{self, Files, Kind};
use crate::{python, tag, Dockerfile, Options, Result};
use serde_json::Value;

const PREBUILD: &str = "RUN (test ! -f /api/langgraph_api/js/build.mts && echo \"Prebuild script \
                        not found, skipping\") || tsx /api/langgraph_api/js/build.mts";

pub(crate) fn dockerfile(
    files: &dyn Files,
    config_path: &str,
    config: &Config,
    base_image: &str,
    api_version: Option<&str>,
    options: &Options,
) -> Result<Dockerfile> {
    let root = files::parent(config_path);
    check_files_for_credentials(
        files,
        root,
        &[
            "package.json",
            "package-lock.json",
            "yarn.lock",
            "pnpm-lock.yaml",
        ],
    )?;
    let install = match options.install_command.as_deref().filter(|c| !c.is_empty()) {
        Some(command) => command.to_owned(),
        None => install_command(files, root),
    };
    let build = match options.build_command.as_deref().filter(|c| !c.is_empty()) {
        Some(command) => format!("RUN {command}"),
        None => PREBUILD.to_owned(),
    };
    let dir = format!("/deps/{}", files::name(root));
    let image = tag::docker_tag(config, base_image, api_version)?;
    let lines = [
        format!("FROM {image}"),
        String::new(),
        config.dockerfile_lines.join("\n"),
        String::new(),
        format!("ADD . {dir}"),
        String::new(),
        format!("WORKDIR {dir}"),
        String::new(),
        format!("RUN {install}"),
        String::new(),
        python::env_lines(config).join("\n"),
        String::new(),
        format!("WORKDIR {dir}"),
        String::new(),
        build,
    ];
    Ok(Dockerfile {
        text: lines.join("\n"),
        contexts: Default::default(),
    })
}

/// The install command for the project in `dir`: from its lock file, else from the
/// package manager `package.json` names, else `npm i`.
pub(crate) fn install_command(files: &dyn Files, dir: &str) -> String {
    let has = |name: &str| files.kind(&files::join(dir, name)) == Some(Kind::File);
    if has("yarn.lock") {
        return "yarn install --frozen-lockfile".into();
    }
    if has("pnpm-lock.yaml") {
        return "pnpm i --frozen-lockfile".into();
    }
    if has("package-lock.json") {
        return "npm ci".into();
    }
    if has("bun.lockb") {
        return "bun i".into();
    }
    match package_manager(files, dir).as_deref() {
        Some("yarn") => "yarn install",
        Some("pnpm") => "pnpm i",
        Some("bun") => "bun i",
        _ => "npm i",
    }
    .into()
}

/// `packageManager` (`pnpm@9.1.0` → `pnpm`) or `devEngines.packageManager.name`.
fn package_manager(files: &dyn Files, dir: &str) -> Option<String> {
    let text = files.read(&files::join(dir, "package.json"))?;
    let package: Value = serde_json::from_str(&text).ok()?;
    let package = package.as_object()?;
    if let Some(Value::String(name)) = package.get("packageManager") {
        if !name.is_empty() {
            let name = name.trim_start_matches('^');
            return Some(name.split('@').next().unwrap_or(name).to_owned());
        }
    }
    let dev = match package.get("devEngines") {
        None | Some(Value::Null) => return None,
        Some(Value::Object(d)) => d,
        // The CLI's lookup fails on anything else and falls back.
        Some(_) => return None,
    };
    match dev.get("packageManager")?.as_object()?.get("name")? {
        Value::String(name) if !name.is_empty() => Some(name.clone()),
        _ => None,
    }
}
