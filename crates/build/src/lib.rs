//! The Dockerfile the official `langgraph` CLI (0.4.40) generates for a project, as a
//! pure function of its `langgraph.json` and what its files are ([`files::Files`]): the
//! same validation and error texts, the same local-dependency rules, the same lines, byte
//! for byte. `hostplane dockerfile` prints it, and agents build from it ([`flatten`]
//! adapts it for builders that take one context).
//!
//! The port follows the CLI's own order of checks, so that a config with several
//! problems reports the same one first. Not ported: `source.kind = "uv"` projects and
//! compatible `api_version` ranges (`~=`, `>~=`), which the CLI resolves against PyPI;
//! both are refused with an error that says so.
//!
//! [`archive`] unpacks an uploaded source tarball, which is untrusted, into a folder;
//! [`Confined`] lets the generator read only inside it.

pub mod archive;
pub mod config;
pub mod files;
mod flatten;
mod local;
mod node;
pub mod pyjson;
mod python;
mod tag;

pub use config::{load, Config};
pub use files::{Confined, Disk, Files, Memory};
pub use flatten::flatten;

use indexmap::IndexMap;

/// How the CLI would have failed: the Python exception it raises and its message. A
/// `Usage` error is click's (the CLI prints `Error: <message>` and exits 2); the others
/// end the CLI with a traceback whose last line is `<Exception>: <message>` (exit 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Usage,
    Value,
    FileNotFound,
    NotADirectory,
    IsADirectory,
    Type,
    JsonDecode,
    /// Something the CLI would do that hostplane does not (see the crate's notes).
    Unsupported,
}

impl ErrorKind {
    /// The Python exception's name.
    pub fn exception(self) -> &'static str {
        match self {
            ErrorKind::Usage => "click.exceptions.UsageError",
            ErrorKind::Value => "ValueError",
            ErrorKind::FileNotFound => "FileNotFoundError",
            ErrorKind::NotADirectory => "NotADirectoryError",
            ErrorKind::IsADirectory => "IsADirectoryError",
            ErrorKind::Type => "TypeError",
            ErrorKind::JsonDecode => "json.decoder.JSONDecodeError",
            ErrorKind::Unsupported => "NotImplementedError",
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub(crate) fn fail<T>(kind: ErrorKind, message: impl Into<String>) -> Result<T, Error> {
    Err(Error {
        kind,
        message: message.into(),
    })
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What `langgraph dockerfile` takes besides the config.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--base-image`.
    pub base_image: Option<String>,
    /// `--api-version`.
    pub api_version: Option<String>,
    /// `--engine-runtime-mode distributed` (else `combined_queue_worker`).
    pub distributed: bool,
    /// A JavaScript project's install and build commands (`source_config` of a remote
    /// deploy); the CLI's own detection when unset.
    pub install_command: Option<String>,
    pub build_command: Option<String>,
}

/// A generated Dockerfile and the named build contexts it needs (local dependencies
/// outside the config's folder: name → absolute folder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    pub text: String,
    pub contexts: IndexMap<String, String>,
}

/// The Dockerfile for the config loaded from `config_path` (absolute), as
/// `langgraph dockerfile` writes it.
pub fn generate(
    files: &dyn Files,
    config_path: &str,
    config: &Config,
    options: &Options,
) -> Result<Dockerfile> {
    let mut config = config.clone();
    let base_image = match &options.base_image {
        Some(b) => b.clone(),
        None => tag::default_base_image(&config, options.distributed),
    };
    let api_version = options.api_version.as_deref();
    if config.node_only() {
        node::dockerfile(
            files,
            config_path,
            &config,
            &base_image,
            api_version,
            options,
        )
    } else {
        python::dockerfile(files, config_path, &mut config, &base_image, api_version)
    }
}
