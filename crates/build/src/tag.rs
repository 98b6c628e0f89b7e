//! The base image and its tag (`default_base_image`, `docker_tag`).

use crate::config::Config;
use crate::{fail, ErrorKind, Result};
use regex::Regex;
use std::sync::LazyLock;

static API_VERSION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:(?:\.|)(?:[A-Za-z][0-9A-Za-z]*))?$")
        .expect("pattern")
});
static API_VERSION_RANGE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(~=|>~=)\s*(.+)$").expect("pattern"));
static API_VERSION_FLOOR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:(?:\.|)(dev|rc)(\d+))?$").expect("pattern")
});

/// How many numeric parts an `api_version` (or a range's floor) has; `None` when it is
/// not a version at all.
pub(crate) fn api_version_parts(version: &str) -> Option<usize> {
    let version = match API_VERSION_RANGE.captures(version) {
        Some(range) => range.get(2).map_or("", |m| m.as_str().trim()),
        None => version,
    };
    let core = version.split('-').next().unwrap_or("");
    let parts = API_VERSION.captures(core)?;
    Some((1..=3).filter(|i| parts.get(*i).is_some()).count())
}

/// The image a config builds on when `--base-image` is not given.
pub(crate) fn default_base_image(config: &Config, distributed: bool) -> String {
    if let Some(image) = config.base_image.as_ref().filter(|b| !b.is_empty()) {
        return image.clone();
    }
    if config.node_only() {
        return "langchain/langgraphjs-api".into();
    }
    if distributed {
        return "langchain/langgraph-executor".into();
    }
    "langchain/langgraph-api".into()
}

/// `FROM`'s image: the base image with the language, version and distribution tag
/// (after the API version when one is pinned).
pub(crate) fn docker_tag(
    config: &Config,
    base_image: &str,
    api_version: Option<&str>,
) -> Result<String> {
    let api_version = api_version
        .filter(|v| !v.is_empty())
        .or(config.api_version.as_deref());
    let distro_tag = match config.image_distro.as_deref() {
        Some("debian") => String::new(),
        Some(d) => format!("-{d}"),
        None => "-None".into(),
    };
    if let Some(tag) = &config.internal_docker_tag {
        return Ok(format!("{base_image}:{tag}"));
    }
    let (language, version) = if config.node_only() {
        ("node", config.node_version.clone().unwrap_or_default())
    } else {
        (
            "py",
            config
                .python_version
                .clone()
                .unwrap_or_else(|| "None".into()),
        )
    };
    let version_distro = format!("{version}{distro_tag}");
    let full = if let Some(api) = api_version {
        let api = resolve_range(api, base_image)?;
        format!("{api}-{language}{version_distro}")
    } else if base_image.contains("/langgraph-server") && !base_image.contains(&version_distro) {
        return Ok(format!("{base_image}-{language}{version_distro}"));
    } else {
        version_distro
    };
    Ok(format!("{base_image}:{full}"))
}

/// A compatible range (`~=0.11.0.dev5`, `>~=...`) is resolved by the CLI against the
/// versions published on PyPI, which hostplane does not ask: such a range is refused
/// after the checks the CLI makes before asking.
fn resolve_range<'a>(api_version: &'a str, base_image: &str) -> Result<&'a str> {
    let Some(range) = API_VERSION_RANGE.captures(api_version) else {
        return Ok(api_version);
    };
    let floor = range.get(2).map_or("", |m| m.as_str().trim());
    if !API_VERSION_FLOOR.is_match(floor) {
        return fail(
            ErrorKind::Usage,
            format!(
                "Invalid compatible api_version range: {api_version}.\n\nUse a compatible \
                 version range, e.g.:\n  \"api_version\": \"~=0.11.0.dev5\"\nor a \
                 stable-floating range, e.g.:\n  \"api_version\": \">~=0.11.0.dev5\""
            ),
        );
    }
    if base_image.contains(':') {
        return fail(
            ErrorKind::Usage,
            "Compatible api_version ranges cannot be used with a tagged base_image.",
        );
    }
    fail(
        ErrorKind::Unsupported,
        format!(
            "hostplane does not resolve compatible api_version ranges ({api_version}): pin \
             an exact version, e.g. \"api_version\": \"{floor}\""
        ),
    )
}

/// Whether the base image's `uv` can install packages (the CLI's `pip_installer: auto`).
pub(crate) fn image_supports_uv(base_image: &str) -> bool {
    static SEMVER: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r":(\d+(?:\.\d+)?(?:\.\d+)?)(?:-|$)").expect("pattern"));
    if base_image == "langchain/langgraph-trial" {
        return false;
    }
    let Some(m) = SEMVER.captures(base_image) else {
        return true;
    };
    let version: Vec<u64> = m[1].split('.').filter_map(|p| p.parse().ok()).collect();
    version.as_slice() >= [0u64, 2, 47].as_slice()
}
