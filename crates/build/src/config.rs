//! `langgraph.json` as the CLI reads and validates it, check for check in its order.

use crate::files::{self, Files};
use crate::{fail, ErrorKind, Result};
use serde_json::{Map, Value};

pub(crate) const DEFAULT_PYTHON_VERSION: &str = "3.11";
const MIN_PYTHON: (u32, u32) = (3, 11);
pub(crate) const DEFAULT_NODE_VERSION: &str = "20";
const MIN_NODE: u32 = 20;
pub(crate) const BUILD_TOOLS: [&str; 3] = ["pip", "setuptools", "wheel"];
const DISTROS: [&str; 3] = ["debian", "wolfi", "bookworm"];
const UV_HINT: &str = "  \"source\": {\"kind\": \"uv\", \"root\": \"..\"}";

/// A validated config: the keys the CLI keeps, with its defaults applied.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_version: Option<String>,
    pub python_version: Option<String>,
    pub pip_config_file: Option<String>,
    pub pip_installer: String,
    pub base_image: Option<String>,
    /// `None` when the config sets it to `null` (the CLI then tags `-None`).
    pub image_distro: Option<String>,
    pub dependencies: Vec<String>,
    pub dockerfile_lines: Vec<String>,
    /// Graph id → import string, or an object with a `path`.
    pub graphs: Map<String, Value>,
    pub keep_pkg_tools: Option<Value>,
    pub internal_docker_tag: Option<String>,
    pub api_version: Option<String>,
    /// The sections passed to the server as JSON (`store`, `auth`, ...), as written.
    pub sections: Map<String, Value>,
}

/// The sections that become `ENV LANGGRAPH_<NAME>` lines, in the CLI's order.
pub(crate) const SECTIONS: [(&str, &str); 9] = [
    ("store", "LANGGRAPH_STORE"),
    ("auth", "LANGGRAPH_AUTH"),
    ("encryption", "LANGGRAPH_ENCRYPTION"),
    ("priority", "LANGGRAPH_PRIORITY"),
    ("http", "LANGGRAPH_HTTP"),
    ("webhooks", "LANGGRAPH_WEBHOOKS"),
    ("checkpointer", "LANGGRAPH_CHECKPOINTER"),
    ("ui", "LANGGRAPH_UI"),
    ("ui_config", "LANGGRAPH_UI_CONFIG"),
];

impl Config {
    /// A JavaScript-only project (no Python version).
    pub fn node_only(&self) -> bool {
        truthy(&self.node_version) && !truthy(&self.python_version)
    }

    pub(crate) fn section(&self, name: &str) -> Option<&Value> {
        self.sections.get(name).filter(|v| !v.is_null())
    }
}

pub(crate) fn truthy(s: &Option<String>) -> bool {
    s.as_deref().is_some_and(|s| !s.is_empty())
}

/// Python's truth value of a JSON value.
pub(crate) fn is_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Python's name of a JSON value's type.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// An optional text value; another type is the `TypeError` Python would meet first.
fn text(raw: &Map<String, Value>, key: &str) -> Result<Option<String>> {
    match raw.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => fail(
            ErrorKind::Type,
            format!("{key} must be a string, not {}", type_name(other)),
        ),
    }
}

fn texts(raw: &Map<String, Value>, key: &str) -> Result<Vec<String>> {
    match raw.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => fail(
                    ErrorKind::Type,
                    format!("{key} must hold strings, not {}", type_name(other)),
                ),
            })
            .collect(),
        Some(other) => fail(
            ErrorKind::Type,
            format!("{key} must be a list, not {}", type_name(other)),
        ),
    }
}

/// Whether a graph's import path names a JavaScript file.
pub(crate) fn is_node_graph(spec: &Value) -> bool {
    let path = match spec {
        Value::Object(o) => o.get("path").and_then(Value::as_str).unwrap_or(""),
        Value::String(s) => s.as_str(),
        _ => "",
    };
    let file = path.split(':').next().unwrap_or("");
    let name = files::name(file);
    let ext = match name.rfind('.') {
        Some(i) if i > 0 => &name[i..],
        _ => "",
    };
    matches!(ext, ".ts" | ".mts" | ".cts" | ".js" | ".mjs" | ".cjs")
}

/// Reads and validates the config at `config_path` (absolute), as
/// `validate_config_file` does, including its check of `package.json` engines.
pub fn load(files: &dyn Files, config_path: &str) -> Result<Config> {
    let Some(text) = files.read(config_path) else {
        return fail(
            ErrorKind::FileNotFound,
            format!("[Errno 2] No such file or directory: '{config_path}'"),
        );
    };
    let raw: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => return fail(ErrorKind::JsonDecode, e.to_string()),
    };
    let Value::Object(raw) = raw else {
        return fail(
            ErrorKind::Type,
            format!("the config must be an object, not {}", type_name(&raw)),
        );
    };
    let config = validate(&raw, config_path)?;
    if truthy(&config.node_version) {
        check_package_engines(files, config_path)?;
    }
    Ok(config)
}

fn check_package_engines(files: &dyn Files, config_path: &str) -> Result<()> {
    let path = files::join(files::parent(config_path), "package.json");
    if files.kind(&path) != Some(files::Kind::File) {
        return Ok(());
    }
    let text = files.read(&path).unwrap_or_default();
    let Ok(package) = serde_json::from_str::<Value>(&text) else {
        return fail(
            ErrorKind::Usage,
            format!(
                "Invalid package.json found in langgraph config directory {path}: \
                 file is not valid JSON"
            ),
        );
    };
    let Some(engines) = package.get("engines").and_then(Value::as_object) else {
        return Ok(());
    };
    if engines.keys().any(|k| k != "node") {
        let names: Vec<String> = engines.keys().map(|k| format!("'{k}'")).collect();
        return fail(
            ErrorKind::Usage,
            format!(
                "Only 'node' engine is supported in package.json engines. Got engines: [{}]",
                names.join(", ")
            ),
        );
    }
    if let Some(version) = engines.get("node") {
        let version = version.as_str().unwrap_or_default();
        if node_major(version)? < MIN_NODE {
            return fail(
                ErrorKind::Usage,
                format!(
                    "Node.js version in package.json engines must be >= {MIN_NODE} (major \
                     version only), got '{version}'. Minor/patch versions (like '20.x.y') are \
                     not supported to prevent deployment issues when new Node.js versions are \
                     released."
                ),
            );
        }
    }
    Ok(())
}

fn node_major(version: &str) -> Result<u32> {
    match version.parse::<u32>() {
        Ok(major) if !version.contains('.') && !version.starts_with('+') => Ok(major),
        _ => fail(
            ErrorKind::Usage,
            format!(
                "Invalid Node.js version format: {version}. Use major version only \
                 (e.g., '20')."
            ),
        ),
    }
}

/// `major.minor` of a Python version (the part before any `-suffix`).
pub(crate) fn python_minor(version: &str) -> Result<(u32, u32)> {
    let core = version.split('-').next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    match parts.as_slice() {
        [major, minor] => match (major.trim().parse(), minor.trim().parse()) {
            (Ok(a), Ok(b)) => Ok((a, b)),
            _ => fail(
                ErrorKind::Usage,
                format!("Invalid version format: {version}"),
            ),
        },
        _ => fail(
            ErrorKind::Usage,
            format!("Invalid version format: {version}"),
        ),
    }
}

/// `validate_config`: the CLI's checks, in its order.
fn validate(raw: &Map<String, Value>, config_path: &str) -> Result<Config> {
    let graphs = match raw.get("graphs") {
        None => Map::new(),
        Some(Value::Object(g)) => g.clone(),
        Some(other) => {
            return fail(
                ErrorKind::Type,
                format!("graphs must be an object, not {}", type_name(other)),
            )
        }
    };
    let some_node = graphs.values().any(is_node_graph);
    let some_python = graphs.values().any(|g| !is_node_graph(g));
    let node_version = match raw.get("node_version") {
        None => some_node.then(|| DEFAULT_NODE_VERSION.to_owned()),
        Some(_) => text(raw, "node_version")?,
    };
    let python_version = match raw.get("python_version") {
        None => some_python.then(|| DEFAULT_PYTHON_VERSION.to_owned()),
        Some(_) => text(raw, "python_version")?,
    };
    let image_distro = match raw.get("image_distro") {
        None => Some("debian".to_owned()),
        Some(_) => text(raw, "image_distro")?,
    };
    let internal_docker_tag = text(raw, "_INTERNAL_docker_tag")?.filter(|s| !s.is_empty());
    let api_version = text(raw, "api_version")?.filter(|s| !s.is_empty());
    if internal_docker_tag.is_some() && api_version.is_some() {
        return fail(
            ErrorKind::Usage,
            "Cannot specify both _INTERNAL_docker_tag and api_version.",
        );
    }
    if let Some(v) = &api_version {
        if crate::tag::api_version_parts(v).is_none_or(|parts| parts > 3) {
            return fail(
                ErrorKind::Usage,
                format!(
                    "Invalid version format: {v}.\n\nPin to a minor version, e.g.:\n  \
                     \"api_version\": \"0.8\""
                ),
            );
        }
    }
    let pip_installer = match raw.get("pip_installer") {
        None => "auto".to_owned(),
        Some(_) => text(raw, "pip_installer")?.unwrap_or_default(),
    };
    let dependencies = texts(raw, "dependencies")?;
    let mut sections = Map::new();
    for (name, _) in SECTIONS {
        if let Some(v) = raw.get(name) {
            sections.insert(name.to_owned(), v.clone());
        }
    }
    let config = Config {
        node_version,
        python_version,
        pip_config_file: text(raw, "pip_config_file")?,
        pip_installer,
        base_image: text(raw, "base_image")?,
        image_distro,
        dependencies,
        dockerfile_lines: texts(raw, "dockerfile_lines")?,
        graphs,
        keep_pkg_tools: raw.get("keep_pkg_tools").cloned(),
        internal_docker_tag,
        api_version,
        sections,
    };

    if let Some(version) = config.node_version.as_deref().filter(|v| !v.is_empty()) {
        if node_major(version)? < MIN_NODE {
            return fail(
                ErrorKind::Usage,
                format!(
                    "Node.js version {version} is not supported. Minimum required version \
                     is {MIN_NODE}.\n\nSet node_version to {MIN_NODE} or higher:\n  \
                     \"node_version\": \"{MIN_NODE}\""
                ),
            );
        }
    }
    if !config.pip_installer.is_empty()
        && !["auto", "pip", "uv"].contains(&config.pip_installer.as_str())
    {
        return fail(
            ErrorKind::Usage,
            format!(
                "Invalid pip_installer: '{}'. Consider using uv-based source management \
                 instead:\n\n{UV_HINT}",
                config.pip_installer
            ),
        );
    }
    check_git_credentials(config.dependencies.iter().map(String::as_str), config_path)?;

    let source = raw.get("source").filter(|v| !v.is_null());
    if let Some(source) = source {
        if !source.is_object() {
            return fail(
                ErrorKind::Usage,
                format!("`source` must be an object, e.g.:\n{UV_HINT}"),
            );
        }
        if source.get("kind").and_then(Value::as_str) != Some("uv") {
            return fail(
                ErrorKind::Usage,
                format!("Invalid source.kind. The only supported value is 'uv':\n{UV_HINT}"),
            );
        }
    }
    let uv = source.is_some();

    if let Some(version) = config.python_version.as_deref().filter(|v| !v.is_empty()) {
        let core = version.split('-').next().unwrap_or("");
        let well_formed = version.matches('.').count() == 1
            && core
                .split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        if !well_formed {
            let parts: Vec<&str> = core.split('.').collect();
            let fix = match parts.as_slice() {
                [a, b, ..] => format!("{a}.{b}"),
                _ => DEFAULT_PYTHON_VERSION.to_owned(),
            };
            return fail(
                ErrorKind::Usage,
                format!(
                    "Invalid Python version format: {version}. Use 'major.minor' format — \
                     patch version cannot be specified.\n\n  \"python_version\": \"{fix}\""
                ),
            );
        }
        if python_minor(version)? < MIN_PYTHON {
            return fail(
                ErrorKind::Usage,
                format!(
                    "Python version {version} is not supported. Minimum required version is \
                     {}.{}.\n\n  \"python_version\": \"{}.{}\"",
                    MIN_PYTHON.0, MIN_PYTHON.1, MIN_PYTHON.0, MIN_PYTHON.1
                ),
            );
        }
        if version.contains("bullseye") {
            return fail(ErrorKind::Usage, BULLSEYE);
        }
        if !uv && config.dependencies.is_empty() {
            return fail(
                ErrorKind::Usage,
                format!(
                    "No dependencies found in config. Consider using uv-based source \
                     management:\n\n{UV_HINT}"
                ),
            );
        }
    }
    if config.graphs.is_empty() {
        return fail(
            ErrorKind::Usage,
            "No graphs found in config. Add at least one graph, e.g.:\n  \"graphs\": {\n    \
             \"agent\": \"./my_agent/graph.py:graph\"\n  }",
        );
    }
    if let Some(distro) = config.image_distro.as_deref().filter(|d| !d.is_empty()) {
        if distro == "bullseye" {
            return fail(ErrorKind::Usage, BULLSEYE);
        }
        if !DISTROS.contains(&distro) {
            let names: Vec<String> = DISTROS.iter().map(|d| format!("'{d}'")).collect();
            return fail(
                ErrorKind::Usage,
                format!(
                    "Invalid image_distro: '{}'. Must be one of: {}.\n\n  \"image_distro\": \
                     \"wolfi\"  (recommended)",
                    distro,
                    names.join(", ")
                ),
            );
        }
    }
    if uv {
        return fail(
            ErrorKind::Unsupported,
            "hostplane does not build `source.kind = \"uv\"` projects yet; list the \
             project's dependencies in `dependencies` instead",
        );
    }
    if raw.get("project_root").is_some_and(is_truthy) || raw.get("package").is_some_and(is_truthy) {
        return fail(
            ErrorKind::Usage,
            "Top-level `project_root` and `package` are no longer supported. Use \
             `source.root` and `source.package` instead.",
        );
    }
    for (section, key, label) in [
        ("auth", "path", "auth.path"),
        ("encryption", "path", "encryption.path"),
        ("priority", "path", "priority.path"),
        ("http", "app", "http.app"),
    ] {
        let Some(conf) = config.section(section).filter(|v| is_truthy(v)) else {
            continue;
        };
        let Some(path) = conf.get(key) else { continue };
        let path = path.as_str().unwrap_or_default();
        if !path.contains(':') {
            return fail(
                ErrorKind::Value,
                format!(
                    "Invalid {label} format: '{path}'. Must be in format \
                     './path/to/file.py:attribute_name'"
                ),
            );
        }
        if section == "priority" && is_node_graph(&Value::String(path.to_owned())) {
            return fail(
                ErrorKind::Value,
                format!(
                    "JavaScript priority callbacks are not supported: '{path}'. Use a Python \
                     file or module instead."
                ),
            );
        }
    }
    if let Some(keep) = config.keep_pkg_tools.as_ref().filter(|v| is_truthy(v)) {
        match keep {
            Value::Array(tools) => {
                for tool in tools {
                    if !tool.as_str().is_some_and(|t| BUILD_TOOLS.contains(&t)) {
                        return fail(
                            ErrorKind::Value,
                            format!(
                                "Invalid keep_pkg_tools: '{}'. Must be one of 'pip', \
                                 'setuptools', 'wheel'.",
                                python_str(tool)
                            ),
                        );
                    }
                }
            }
            Value::Bool(true) => {}
            other => {
                return fail(
                    ErrorKind::Value,
                    format!(
                        "Invalid keep_pkg_tools: '{}'. Must be bool or list[str] (with values \
                         'pip', 'setuptools', and/or 'wheel').",
                        python_str(other)
                    ),
                )
            }
        }
    }
    Ok(config)
}

const BULLSEYE: &str =
    "Bullseye images were deprecated in version 0.4.13. Please use 'bookworm' or 'debian' instead.";

/// Python's `str()` of a JSON value, for messages.
pub(crate) fn python_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        other => crate::pyjson::dumps(other),
    }
}

/// Refuses Git URLs that carry credentials (`git+https://user:token@host/...`), which
/// would stay in the image's layers; `source` names the file they were found in.
pub(crate) fn check_git_credentials<'a>(
    values: impl IntoIterator<Item = &'a str>,
    source: &str,
) -> Result<()> {
    if values.into_iter().any(has_url_userinfo) {
        return fail(
            ErrorKind::Usage,
            format!(
                "Git dependency URLs must not contain credentials or other URL userinfo \
                 because generated Dockerfiles and image layers can retain them. Use a \
                 credential-free Git URL and provide short-lived credentials through your \
                 build environment's secret-backed Git credential helper. Found in: {source}"
            ),
        );
    }
    Ok(())
}

/// Refuses credentials in those of the files `names` of folder `dir` that exist.
pub(crate) fn check_files_for_credentials(
    files: &dyn Files,
    dir: &str,
    names: &[&str],
) -> Result<()> {
    for name in names {
        let path = files::join(dir, name);
        if files.kind(&path) == Some(files::Kind::File) {
            let text = files.read(&path).unwrap_or_default();
            check_git_credentials([text.as_str()], &path)?;
        }
    }
    Ok(())
}

/// Whether `text` holds `git+http(s)://authority` or `git = "http(s)://authority"` with
/// an `@` in the authority (both case-insensitive).
fn has_url_userinfo(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    let authority_has_at = |rest: &str| {
        rest.chars()
            .take_while(|c| !matches!(c, '/' | '"' | '\'') && !c.is_whitespace())
            .any(|c| c == '@')
    };
    fn after_scheme(at: &str) -> Option<&str> {
        at.strip_prefix("https://")
            .or_else(|| at.strip_prefix("http://"))
    }
    for (i, _) in lower.match_indices("git+http") {
        if let Some(rest) = after_scheme(&text[i + 4..].to_ascii_lowercase()) {
            let start = text.len() - rest.len();
            if authority_has_at(&text[start..]) {
                return true;
            }
        }
    }
    for (i, _) in lower.match_indices("git") {
        // `\bgit\s*=\s*["']https?://`
        if i > 0 {
            let before = lower.as_bytes()[i - 1];
            if before.is_ascii_alphanumeric() || before == b'_' {
                continue;
            }
        }
        let rest = lower[i + 3..].trim_start();
        let Some(rest) = rest.strip_prefix('=') else {
            continue;
        };
        let rest = rest.trim_start();
        let Some(rest) = rest.strip_prefix(['"', '\'']) else {
            continue;
        };
        if let Some(rest) = after_scheme(rest) {
            let start = lower.len() - rest.len();
            if authority_has_at(&text[start..]) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_credentials_in_git_urls() {
        assert!(has_url_userinfo(
            "pkg @ git+https://user:tok@github.com/a/b"
        ));
        assert!(has_url_userinfo("x = { git = \"https://tok@host/repo\" }"));
        assert!(!has_url_userinfo("git+https://github.com/a/b@v1"));
        assert!(!has_url_userinfo("langgraph"));
        assert!(!has_url_userinfo("digit = \"https://a@b\""));
    }

    #[test]
    fn spots_javascript_graphs() {
        assert!(is_node_graph(&Value::String("./src/graph.ts:g".into())));
        assert!(!is_node_graph(&Value::String("./src/graph.py:g".into())));
        assert!(!is_node_graph(&Value::String("agent.graph:g".into())));
    }
}
