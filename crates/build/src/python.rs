//! A Python project's Dockerfile (`python_config_to_docker`).

use crate::config::{
    check_files_for_credentials, is_truthy, truthy, Config, BUILD_TOOLS, DEFAULT_NODE_VERSION,
    SECTIONS,
};
use crate::files::{self, Files};
use crate::local::{self, LocalDeps};
use crate::{node, pyjson, tag, Dockerfile, Result};
use indexmap::IndexMap;
use serde_json::Value;

pub(crate) fn dockerfile(
    files: &dyn Files,
    config_path: &str,
    config: &mut Config,
    base_image: &str,
    api_version: Option<&str>,
) -> Result<Dockerfile> {
    let config_dir = files::parent(config_path).to_owned();
    let uninstall = tools_to_uninstall(config);
    check_dependency_files(files, &config_dir, &config.dependencies)?;
    let installer = match config.pip_installer.as_str() {
        "auto" if tag::image_supports_uv(base_image) => "uv",
        "auto" => "pip",
        other => other,
    };
    let install_cmd = if installer == "uv" {
        "uv pip install --system"
    } else {
        "pip install"
    };
    let mut pip_install =
        format!("PYTHONDONTWRITEBYTECODE=1 {install_cmd} --no-cache-dir -c /api/constraints.txt");
    let pip_config = match config.pip_config_file.as_deref().filter(|f| !f.is_empty()) {
        Some(file) => {
            pip_install = format!("PIP_CONFIG_FILE=/pipconfig.txt {pip_install}");
            format!("ADD {file} /pipconfig.txt")
        }
        None => String::new(),
    };

    let pypi: Vec<&str> = config
        .dependencies
        .iter()
        .filter(|d| !d.starts_with('.'))
        .map(String::as_str)
        .collect();
    let deps = local::assemble(files, config_path, &config.dependencies)?;
    local::rewrite_graphs(files, &config_dir, &deps, &mut config.graphs)?;
    for (name, label) in [
        ("auth", "Auth"),
        ("encryption", "Encryption"),
        ("priority", "Priority"),
        ("checkpointer", "Checkpointer"),
    ] {
        if let Some(section) = config.sections.get_mut(name).filter(is_section) {
            let dependencies = &config.dependencies;
            local::rewrite_section_path(files, &config_dir, &deps, section, label, dependencies)?;
        }
    }
    if let Some(http) = config.sections.get_mut("http").filter(is_section) {
        local::rewrite_http_app(files, &config_dir, &deps, http)?;
    }

    let pypi_step = if pypi.is_empty() {
        String::new()
    } else {
        format!("RUN {pip_install} {}", pypi.join(" "))
    };
    let reqs_step = requirements_step(&deps, &config_dir, &pip_install);
    let real_step = deps
        .real
        .iter()
        .map(|(full, (rel, name))| {
            let copy = if deps.additional.contains(full) {
                format!("COPY --from={name} . /deps/{name}")
            } else {
                format!("ADD {rel} /deps/{name}")
            };
            format!(
                "# -- Adding local package {rel} --\n{copy}\n# -- End of local package {rel} --"
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let faux_step = deps
        .faux
        .iter()
        .map(|(full, (rel, dest))| faux_package(full, rel, dest, deps.additional.contains(full)))
        .collect::<Vec<_>>()
        .join("\n\n");
    let contexts = contexts(&deps);

    let with_node = (config.section("ui").is_some_and(is_truthy) || truthy(&config.node_version))
        && deps.working_dir.is_some();
    let node_step = if with_node {
        "RUN /storage/install-node.sh".to_owned()
    } else {
        String::new()
    };
    let installs = [
        node_step, pip_config, pypi_step, reqs_step, real_step, faux_step,
    ]
    .into_iter()
    .filter(|s| !s.is_empty())
    .collect::<Vec<_>>()
    .join("\n\n");
    let env = env_lines(config);
    let js_step = match (&deps.working_dir, with_node) {
        (Some(dir), true) => [
            "# -- Installing JS dependencies --".to_owned(),
            format!(
                "ENV NODE_VERSION={}",
                config
                    .node_version
                    .as_deref()
                    .filter(|v| !v.is_empty())
                    .unwrap_or(DEFAULT_NODE_VERSION)
            ),
            format!("WORKDIR {dir}"),
            format!(
                "RUN {} && tsx /api/langgraph_api/js/build.mts",
                node::install_command(files, &config_dir)
            ),
            "# -- End of JS dependencies install --".to_owned(),
        ]
        .join("\n"),
        _ => String::new(),
    };
    let image = tag::docker_tag(config, base_image, api_version)?;

    let mut lines: Vec<String> = Vec::new();
    if !contexts.is_empty() {
        lines.extend(["# syntax=docker/dockerfile:1.4".to_owned(), String::new()]);
    }
    let each_dep = format!(
        "RUN for dep in /deps/*; do {i12}echo \"Installing $dep\"; {i12}if [ -d \"$dep\" ]; then \
         {i16}echo \"Installing $dep\"; {i16}(cd \"$dep\" && {pip_install} -e .); {i12}fi; \
         {i8}done",
        i8 = " ".repeat(8),
        i12 = " ".repeat(12),
        i16 = " ".repeat(16),
    );
    lines.extend([
        format!("FROM {image}"),
        String::new(),
        config.dockerfile_lines.join("\n"),
        String::new(),
        installs,
        String::new(),
        "# -- Installing all local dependencies --".to_owned(),
        each_dep,
        "# -- End of local dependencies install --".to_owned(),
        env.join("\n"),
        String::new(),
        js_step,
        String::new(),
        cleanup(install_cmd, &uninstall, installer),
        String::new(),
        deps.working_dir
            .as_ref()
            .map(|d| format!("WORKDIR {d}"))
            .unwrap_or_default(),
    ]);
    Ok(Dockerfile {
        text: lines.join("\n"),
        contexts,
    })
}

/// A non-empty object (the CLI skips a section that is not).
fn is_section(v: &&mut Value) -> bool {
    v.is_object() && is_truthy(v)
}

/// `ENV` lines for the sections the server reads as JSON, then the graphs.
pub(crate) fn env_lines(config: &Config) -> Vec<String> {
    let mut lines: Vec<String> = SECTIONS
        .iter()
        .filter_map(|(name, var)| {
            let value = config.section(name)?;
            Some(format!("ENV {var}='{}'", pyjson::dumps(value)))
        })
        .collect();
    lines.push(format!(
        "ENV LANGSERVE_GRAPHS='{}'",
        pyjson::dumps(&Value::Object(config.graphs.clone()))
    ));
    lines
}

/// The build tools removed at the end: all three unless `keep_pkg_tools` keeps some.
fn tools_to_uninstall(config: &Config) -> Vec<&'static str> {
    match &config.keep_pkg_tools {
        Some(Value::Bool(true)) => Vec::new(),
        Some(Value::Array(keep)) if !keep.is_empty() => BUILD_TOOLS
            .into_iter()
            .filter(|t| !keep.iter().any(|k| k.as_str() == Some(t)))
            .collect(),
        _ => BUILD_TOOLS.to_vec(),
    }
}

/// Refuses credentials in the dependency files of local dependencies.
fn check_dependency_files(
    files: &dyn Files,
    config_dir: &str,
    dependencies: &[String],
) -> Result<()> {
    for dep in dependencies.iter().filter(|d| d.starts_with('.')) {
        let root = files::resolve(&files::join(config_dir, dep));
        check_files_for_credentials(
            files,
            &root,
            &[
                "requirements.txt",
                "pyproject.toml",
                "setup.py",
                "setup.cfg",
            ],
        )?;
    }
    Ok(())
}

fn requirements_step(deps: &LocalDeps, config_dir: &str, pip_install: &str) -> String {
    if deps.pip_reqs.is_empty() {
        return String::new();
    }
    let mut lines: Vec<String> = deps
        .pip_reqs
        .iter()
        .map(|(host, dest)| {
            if deps.additional.iter().any(|a| a == files::parent(host)) {
                // The CLI names the context after the file here, not after its folder.
                format!(
                    "COPY --from=outer-{} requirements.txt {dest}",
                    files::name(host)
                )
            } else {
                let rel = files::relative_to(host, config_dir).unwrap_or(host);
                format!("ADD {rel} {dest}")
            }
        })
        .collect();
    let all: Vec<String> = deps
        .pip_reqs
        .iter()
        .map(|(_, d)| format!("-r {d}"))
        .collect();
    lines.push(format!("RUN {pip_install} {}", all.join(" ")));
    format!(
        "# -- Installing local requirements --\n{}\n# -- End of local requirements install --",
        lines.join("\n")
    )
}

/// A folder without packaging metadata, copied in with a generated `pyproject.toml`.
fn faux_package(full: &str, rel: &str, dest: &str, outside: bool) -> String {
    let name = files::name(full);
    let copy = if outside {
        format!("COPY --from=outer-{name} . {dest}")
    } else {
        format!("ADD {rel} {dest}")
    };
    let pyproject = shell_quote(&format!("/deps/outer-{name}/pyproject.toml"));
    format!(
        "# -- Adding non-package dependency {name} --\n{copy}\nRUN set -ex && \\\n    for line in '[project]' \\\n                'name = \"{name}\"' \\\n                'version = \"0.1\"' \\\n                '[tool.setuptools.package-data]' \\\n                '\"*\" = [\"**/*\"]' \\\n                '[build-system]' \\\n                'requires = [\"setuptools>=61\"]' \\\n                'build-backend = \"setuptools.build_meta\"'; do \\\n        echo \"$line\" >> {pyproject}; \\\n    done\n# -- End of non-package dependency {name} --"
    )
}

/// Named build contexts for the dependencies outside the config's folder.
fn contexts(deps: &LocalDeps) -> IndexMap<String, String> {
    let mut contexts: IndexMap<String, String> = IndexMap::new();
    let mut registered: Vec<&str> = Vec::new();
    for path in &deps.additional {
        if registered.contains(&path.as_str()) {
            continue;
        }
        let preferred = match deps.real.get(path) {
            Some((_, name)) => name.clone(),
            None => format!("outer-{}", files::name(path)),
        };
        let mut name = preferred.clone();
        let mut suffix = 1;
        while contexts.contains_key(&name) {
            name = format!("{preferred}_{suffix}");
            suffix += 1;
        }
        registered.push(path);
        contexts.insert(name, path.clone());
    }
    contexts
}

/// The lines that put the server's own package back and remove build tools.
fn cleanup(install_cmd: &str, uninstall: &[&str], installer: &str) -> String {
    let mut commands = vec![format!(
        "# -- Ensure user deps didn't inadvertently overwrite langgraph-api\nRUN mkdir -p \
         /api/langgraph_api /api/langgraph_runtime /api/langgraph_license && touch \
         /api/langgraph_api/__init__.py /api/langgraph_runtime/__init__.py \
         /api/langgraph_license/__init__.py\nRUN PYTHONDONTWRITEBYTECODE=1 {install_cmd} \
         --no-cache-dir --no-deps -e /api\n# -- End of ensuring user deps didn't inadvertently \
         overwrite langgraph-api --\n# -- Removing build deps from the final image ~<:===~~~ --"
    )];
    if uninstall.is_empty() {
        if installer == "uv" {
            commands
                .push("RUN rm /usr/bin/uv /usr/bin/uvx\n# -- End of build deps removal --".into());
        }
        return commands.join("\n");
    }
    let packs = uninstall.join(" ");
    commands.push(format!("RUN pip uninstall -y {packs}"));
    let pip = uninstall.contains(&"pip");
    for (lib, bin) in [
        ("/usr/local/lib", "/usr/local/bin"),
        ("/usr/lib", "/usr/bin"),
    ] {
        let mut rm: Vec<String> = uninstall
            .iter()
            .map(|p| format!("{lib}/python*/site-packages/{p}*"))
            .collect();
        if pip {
            rm.push(format!("&& find {bin} -name \"pip*\" -delete || true"));
        }
        commands.push(format!("RUN rm -rf {}", rm.join(" ")));
    }
    if installer == "uv" {
        commands.push(format!(
            "RUN uv pip uninstall --system {packs} && rm /usr/bin/uv /usr/bin/uvx"
        ));
    }
    commands.join("\n")
}

/// Python's `shlex.quote`.
fn shell_quote(s: &str) -> String {
    if s.is_empty() {
        return "''".into();
    }
    let safe = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\"'\"'"))
    }
}
