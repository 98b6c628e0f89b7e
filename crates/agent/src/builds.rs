//! Building a revision from its uploaded source (`langgraph deploy --remote`), the part
//! every mode that builds shares: fetch the tarball from the control plane, unpack it
//! (untrusted: [`build::archive`]), generate the Dockerfile the official CLI would
//! ([`build::generate`]), and hand the mode one folder and one Dockerfile to build. What
//! the mode's builder makes of them (the engine's build API, a BuildKit Job) is its own.

use crate::control::ControlPlane;
use crate::runner::{Failure, LogSink};
use protocol::{DesiredDeployment, DesiredRevision};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How an agent builds.
#[derive(Debug, Clone)]
pub struct BuildSettings {
    /// Off: source revisions fail at once (`BuildsDisabled`), for a listener that should
    /// only run images built elsewhere.
    pub enabled: bool,
    /// Where each build unpacks its source (`DIR/<revision id>/`, removed afterwards).
    pub dir: PathBuf,
    /// What an uploaded source may hold.
    pub limits: build::archive::Limits,
    /// How long one build may take once it has a slot, to its image.
    pub timeout: Duration,
    /// Builds at once; more wait for a free slot.
    pub slots: usize,
}

impl Default for BuildSettings {
    fn default() -> Self {
        BuildSettings {
            enabled: true,
            dir: std::env::temp_dir().join("hostplane-builds"),
            limits: build::archive::Limits::default(),
            timeout: Duration::from_secs(30 * 60),
            slots: 2,
        }
    }
}

/// A build's own folder, removed with everything in it when dropped (also when the
/// build is cancelled).
pub struct Workdir(PathBuf);

impl Workdir {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A source ready to build: the Dockerfile and the one folder it builds from.
pub struct Prepared {
    pub dockerfile: String,
    /// The build context: the config's folder, or the source's root when the project
    /// has dependencies outside that folder.
    pub context: PathBuf,
    /// The source's root (what the tarball unpacked into).
    pub root: PathBuf,
    pub workdir: Workdir,
}

/// One build, as a mode's builder receives it: the revision of a deployment, its
/// prepared source, and where the builder's output goes.
#[derive(Clone, Copy)]
pub struct Job<'a> {
    pub deployment: &'a DesiredDeployment,
    pub revision: &'a DesiredRevision,
    pub source: &'a Prepared,
    pub log: &'a BuildLog,
}

/// Sends a build's log lines.
#[derive(Clone)]
pub struct BuildLog {
    pub logs: LogSink,
    pub deployment: uuid::Uuid,
    pub revision: uuid::Uuid,
}

impl BuildLog {
    pub async fn line(&self, level: &str, message: impl Into<String>) {
        self.logs
            .send(protocol::LogLine {
                deployment_id: self.deployment,
                revision_id: self.revision,
                kind: protocol::LogKind::Build,
                timestamp: chrono::Utc::now(),
                level: level.to_owned(),
                message: message.into(),
            })
            .await;
    }
}

/// Fetches, unpacks and checks the revision's source, and generates its Dockerfile.
pub async fn prepare(
    control: &ControlPlane,
    d: &DesiredDeployment,
    rev: &DesiredRevision,
    settings: &BuildSettings,
    log: &BuildLog,
) -> Result<Prepared, Failure> {
    let spec = rev.build.clone().unwrap_or_default();
    let config_rel = spec
        .langgraph_config_path
        .clone()
        .unwrap_or_else(|| "langgraph.json".to_owned());
    if config_rel.starts_with('/') || config_rel.split('/').any(|s| s == "..") {
        return Err(Failure::new(
            "InvalidConfigPath",
            format!(
                "the config path {config_rel:?} must be relative to the source and stay inside it"
            ),
        ));
    }
    let machine = |e: std::io::Error| Failure::new("BuildFailed", format!("{e}"));
    let workdir = Workdir(settings.dir.join(rev.id.to_string()));
    let _ = std::fs::remove_dir_all(workdir.path());
    std::fs::create_dir_all(workdir.path()).map_err(machine)?;
    let tarball = workdir.path().join("source.tar.gz");
    // A gzip stream is never much larger than what it holds.
    let max = settings.limits.max_bytes.saturating_add(1 << 20);
    let size = control
        .source(rev.id, &tarball, max)
        .await
        .map_err(|e| Failure::new("SourceUnavailable", format!("cannot fetch the source: {e}")))?;
    log.line(
        "INFO",
        format!(
            "Fetched the source archive ({size} bytes) of deployment {}",
            d.name
        ),
    )
    .await;
    // The folder is named after the deployment: a project uploaded from its own folder
    // loses that folder's name, and the Dockerfile names its package after it.
    let root = workdir.path().join("src").join(&d.name);
    std::fs::create_dir_all(&root).map_err(machine)?;
    let (from, into, limits) = (tarball.clone(), root.clone(), settings.limits);
    let unpacked = tokio::task::spawn_blocking(move || {
        let file =
            std::fs::File::open(&from).map_err(|e| build::archive::Refused::Io(e.to_string()))?;
        build::archive::unpack(std::io::BufReader::new(file), &into, &limits)
    })
    .await
    .map_err(|e| Failure::new("BuildFailed", e.to_string()))?
    .map_err(|refused| Failure::new("SourceRefused", refused.to_string()))?;
    let _ = std::fs::remove_file(&tarball);
    log.line(
        "INFO",
        format!(
            "Unpacked {} files ({} bytes)",
            unpacked.files, unpacked.bytes
        ),
    )
    .await;
    let root_text = root.to_string_lossy().into_owned();
    let files = build::Confined::new(&root_text);
    let config_path = build::files::join(&root_text, &config_rel);
    let invalid = |e: build::Error| Failure::new("InvalidConfig", e.message);
    let config = build::load(&files, &config_path).map_err(invalid)?;
    let options = build::Options {
        install_command: spec.install_command.clone(),
        build_command: spec.build_command.clone(),
        ..Default::default()
    };
    let generated = build::generate(&files, &config_path, &config, &options).map_err(invalid)?;
    let config_dir = build::files::parent(&config_path).to_owned();
    let (dockerfile, context) = if generated.contexts.is_empty() {
        (generated.text, PathBuf::from(&config_dir))
    } else {
        let text = build::flatten(&generated, &root_text, &config_dir)
            .map_err(|e| Failure::new("InvalidConfig", e))?;
        let names: Vec<&str> = generated.contexts.keys().map(String::as_str).collect();
        log.line(
            "INFO",
            format!(
                "The project has dependencies outside its folder ({}): building from the \
                 source's root as one context, without the named build contexts and the \
                 `# syntax=` line of `langgraph dockerfile`",
                names.join(", ")
            ),
        )
        .await;
        (text, root.clone())
    };
    Ok(Prepared {
        dockerfile,
        context,
        root,
        workdir,
    })
}
