//! Local dependencies (`"."`, `"./lib"`, `"../shared"`) and where their files land in the
//! image (`_assemble_local_deps` and the path rewrites that follow it).
//!
//! A folder with a `pyproject.toml` or `setup.py` is a real package, copied to
//! `/deps/<name>`. Any other folder becomes a generated package: with an `__init__.py`
//! it is the package itself (`/deps/outer-<name>/<name>`), else its subfolders are
//! (`/deps/outer-<name>/src`). Folders outside the config's folder come in as named
//! build contexts.

use crate::files::{self, Files, Kind};
use crate::{fail, ErrorKind, Result};
use indexmap::{IndexMap, IndexSet};
use serde_json::Value;

/// Names a local package may not take: they would shadow the server's own.
const RESERVED: [&str; 13] = [
    "src",
    "langgraph-api",
    "langgraph_api",
    "langgraph",
    "langchain-core",
    "langchain_core",
    "pydantic",
    "orjson",
    "fastapi",
    "uvicorn",
    "psycopg",
    "httpx",
    "langsmith",
];

#[derive(Debug, Default)]
pub(crate) struct LocalDeps {
    /// `(requirements.txt on the host, its path in the image)`.
    pub pip_reqs: Vec<(String, String)>,
    /// Resolved folder → (dependency as written, folder name under `/deps`).
    pub real: IndexMap<String, (String, String)>,
    /// Resolved folder → (dependency as written, its package path in the image).
    pub faux: IndexMap<String, (String, String)>,
    /// Where `"."` lands, the image's working directory.
    pub working_dir: Option<String>,
    /// Resolved folders outside the config's folder.
    pub additional: Vec<String>,
}

pub(crate) fn assemble(
    files: &dyn Files,
    config_path: &str,
    dependencies: &[String],
) -> Result<LocalDeps> {
    let config_dir = files::parent(config_path);
    let mut reserved: IndexSet<String> = RESERVED.iter().map(|s| s.to_string()).collect();
    let mut check_reserved = |name: &str, dep: &str| {
        if !reserved.insert(name.to_owned()) {
            return fail(
                ErrorKind::Value,
                format!(
                    "Package name '{name}' used in local dep '{dep}' is reserved. Rename the \
                     directory."
                ),
            );
        }
        Ok(())
    };
    let mut counter: IndexMap<String, usize> = IndexMap::new();
    let mut deps = LocalDeps::default();
    for dep in dependencies.iter().filter(|d| d.starts_with('.')) {
        let resolved = files::resolve(&files::join(config_dir, dep));
        match files.kind(&resolved) {
            None => {
                return fail(
                    ErrorKind::FileNotFound,
                    format!("Could not find local dependency: {resolved}"),
                )
            }
            Some(Kind::File) => {
                return fail(
                    ErrorKind::NotADirectory,
                    format!("Local dependency must be a directory: {resolved}"),
                )
            }
            Some(Kind::Dir) => {}
        }
        if resolved != config_dir && files::relative_to(&resolved, config_dir).is_none() {
            deps.additional.push(resolved.clone());
        }
        let names = files.list(&resolved).unwrap_or_default();
        let name = files::name(&resolved).to_owned();
        if names
            .iter()
            .any(|n| n == "pyproject.toml" || n == "setup.py")
        {
            // As the CLI counts: by the name given, so a third `lib` is `lib_1` again.
            let container = match counter.get(&name).copied().unwrap_or(0) {
                0 => name.clone(),
                n => format!("{name}_{n}"),
            };
            *counter.entry(container.clone()).or_insert(0) += 1;
            if dep == "." {
                deps.working_dir = Some(format!("/deps/{container}"));
            }
            deps.real.insert(resolved, (dep.clone(), container));
            continue;
        }
        let container_path = if names.iter().any(|n| n == "__init__.py") {
            if name.contains('-') {
                return fail(
                    ErrorKind::Value,
                    format!(
                        "Package name '{name}' contains a hyphen. Rename the directory to use \
                         it as flat-layout package."
                    ),
                );
            }
            check_reserved(&name, dep)?;
            format!("/deps/outer-{name}/{name}")
        } else {
            for sub in &names {
                let path = files::join(&resolved, sub);
                if files.kind(&path) != Some(Kind::Dir)
                    || sub == "__pycache__"
                    || sub.starts_with('.')
                {
                    continue;
                }
                let inner = files.list(&path).unwrap_or_default();
                if inner.iter().any(|f| f.ends_with(".py")) {
                    check_reserved(sub, dep)?;
                }
            }
            format!("/deps/outer-{name}/src")
        };
        if dep == "." {
            deps.working_dir = Some(container_path.clone());
        }
        if names.iter().any(|n| n == "requirements.txt") {
            deps.pip_reqs.push((
                files::join(&resolved, "requirements.txt"),
                format!("{container_path}/requirements.txt"),
            ));
        }
        deps.faux.insert(resolved, (dep.clone(), container_path));
    }
    Ok(deps)
}

impl LocalDeps {
    /// Where a file of the project (resolved) is in the image: under the first real
    /// package that holds it, else under the first generated one.
    fn in_image(&self, resolved: &str) -> Option<String> {
        for path in self.real.keys() {
            if let Some(rel) = files::relative_to(resolved, path) {
                return Some(format!("/deps/{}/{rel}", files::name(path)));
            }
        }
        for (path, (_, dest)) in &self.faux {
            if let Some(rel) = files::relative_to(resolved, path) {
                return Some(format!("{dest}/{rel}"));
            }
        }
        None
    }

    /// The same for the CLI's other lookup order (generated packages first), which it
    /// uses for `auth`, `encryption`, `priority` and `checkpointer` paths.
    fn in_image_faux_first(&self, path: &str) -> Option<String> {
        for (faux, (_, dest)) in &self.faux {
            if let Some(rel) = files::relative_to(path, faux) {
                return Some(format!("{dest}/{rel}"));
            }
        }
        for real in self.real.keys() {
            if let Some(rel) = files::relative_to(path, real) {
                return Some(format!("/deps/{}/{rel}", files::name(real)));
            }
        }
        None
    }
}

/// Points a file import string (`./agent/graph.py:graph`) at its place in the image; a
/// module import (`agent.graph:graph`) stays. `what` names it in errors.
fn rewrite_import(
    files: &dyn Files,
    config_dir: &str,
    deps: &LocalDeps,
    import: &str,
    what: Import,
) -> Result<String> {
    let (module, attr) = import.split_once(':').unwrap_or((import, ""));
    if module.is_empty() || attr.is_empty() {
        return fail(
            ErrorKind::Value,
            format!("Import string \"{import}\" must be in format \"<module>:<attribute>\"."),
        );
    }
    if !module.contains('/') && !module.contains('\\') {
        return Ok(import.to_owned());
    }
    let resolved = files::resolve(&files::join(config_dir, module));
    let (missing, directory, uncovered) = match what {
        Import::Graph => (
            format!("Could not find local module: {resolved}"),
            format!("Local module must be a file: {resolved}"),
            format!(
                "Module '{import}' not found in 'dependencies' list. Add its containing \
                 package to 'dependencies' list."
            ),
        ),
        Import::HttpApp => (
            format!("Could not find HTTP app module: {resolved}"),
            format!("HTTP app module must be a file: {resolved}"),
            format!(
                "HTTP app module '{import}' not found in 'dependencies' list. Add its \
                 containing package to 'dependencies' list."
            ),
        ),
    };
    match files.kind(&resolved) {
        None => return fail(ErrorKind::FileNotFound, missing),
        Some(Kind::Dir) => return fail(ErrorKind::IsADirectory, directory),
        Some(Kind::File) => {}
    }
    match deps.in_image(&resolved) {
        Some(path) => Ok(format!("{path}:{attr}")),
        None => fail(ErrorKind::Value, uncovered),
    }
}

#[derive(Clone, Copy)]
enum Import {
    Graph,
    HttpApp,
}

/// Rewrites every graph's import path (`_update_graph_paths`).
pub(crate) fn rewrite_graphs(
    files: &dyn Files,
    config_dir: &str,
    deps: &LocalDeps,
    graphs: &mut serde_json::Map<String, Value>,
) -> Result<()> {
    for (id, data) in graphs.iter_mut() {
        let import = match data {
            Value::Object(o) => match o.get("path") {
                Some(Value::String(p)) => p.clone(),
                Some(other) => crate::config::python_str(other),
                None => {
                    return fail(
                        ErrorKind::Value,
                        format!("Graph '{id}' must contain a 'path' key if  it is a dictionary."),
                    )
                }
            },
            Value::String(s) => s.clone(),
            _ => {
                return fail(
                    ErrorKind::Value,
                    format!("Graph '{id}' must be a string or a dictionary with a 'path' key."),
                )
            }
        };
        let rewritten = rewrite_import(files, config_dir, deps, &import, Import::Graph)?;
        if rewritten == import {
            continue;
        }
        match data {
            Value::Object(o) => {
                o.insert("path".into(), Value::String(rewritten));
            }
            other => *other = Value::String(rewritten),
        }
    }
    Ok(())
}

/// Rewrites `http.app` (`_update_http_app_path`).
pub(crate) fn rewrite_http_app(
    files: &dyn Files,
    config_dir: &str,
    deps: &LocalDeps,
    http: &mut Value,
) -> Result<()> {
    let Some(app) = http
        .get("app")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
    else {
        return Ok(());
    };
    let rewritten = rewrite_import(files, config_dir, deps, app, Import::HttpApp)?;
    if let Some(o) = http.as_object_mut() {
        o.insert("app".into(), Value::String(rewritten));
    }
    Ok(())
}

/// Rewrites the `path` of `auth`, `encryption`, `priority` or `checkpointer`
/// (`label` is its name in messages: `Auth`, `Encryption`, ...): only a relative path
/// (`./...`) moves, joined to the config's folder without resolving `..`, as the CLI does.
pub(crate) fn rewrite_section_path(
    files: &dyn Files,
    config_dir: &str,
    deps: &LocalDeps,
    section: &mut Value,
    label: &str,
    dependencies: &[String],
) -> Result<()> {
    let Some(path_str) = section
        .get("path")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
    else {
        return Ok(());
    };
    let Some((module, attr)) = path_str.split_once(':') else {
        return Ok(());
    };
    if !module.starts_with('.') {
        return Ok(());
    }
    let joined = files::join(config_dir, module);
    match files.kind(&files::resolve(&joined)) {
        None => {
            return fail(
                ErrorKind::FileNotFound,
                format!("{label} file not found: {joined} (from {path_str})"),
            )
        }
        Some(Kind::Dir) => {
            return fail(
                ErrorKind::IsADirectory,
                format!("{label} path must be a file: {joined}"),
            )
        }
        Some(Kind::File) => {}
    }
    let Some(place) = deps.in_image_faux_first(&joined) else {
        let listed: Vec<String> = dependencies
            .iter()
            .map(|d| compat::format::py_repr(d))
            .collect();
        return fail(
            ErrorKind::Value,
            format!(
                "{label} file '{joined}' not covered by dependencies.\nAdd its parent directory \
                 to the 'dependencies' array in your config.\nCurrent dependencies: [{}]",
                listed.join(", ")
            ),
        );
    };
    if let Some(o) = section.as_object_mut() {
        o.insert("path".into(), Value::String(format!("{place}:{attr}")));
    }
    Ok(())
}
