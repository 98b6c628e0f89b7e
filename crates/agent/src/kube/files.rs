//! `render` mode: the objects of each deployment as YAML files, for a GitOps tool (Argo
//! CD, Flux, `kubectl apply -k`) to apply:
//! `DIR/<namespace>/<deployment name>/<kind>-<name>.yaml` and a `kustomization.yaml`
//! listing them, byte for byte the same for the same desired state. A deployment's
//! folder is replaced as a whole (written beside it, then renamed), so a reader never
//! sees half of one. Unless the agent can read the cluster (`--render-observe`), a
//! revision counts as `DEPLOYED` once its files are written, and the tool that applies
//! them owns the rollout; with it, `DEPLOYED` waits until the tool has applied the
//! revision and it rolled out, as in `native` mode.

use super::native::KubeSink;
use super::render::base_name;
use super::yaml::to_yaml;
use super::RenderInputs;
use crate::runner::{Failure, Rollout, Sink};
use async_trait::async_trait;
use protocol::{DesiredDeployment, DesiredRevision, Observed};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use uuid::Uuid;

/// The first line of every `kustomization.yaml` this mode writes; pruning reads the
/// deployment id back from it and leaves any folder without it alone.
const MARK: &str = "# Written by hostplane listener for deployment ";

pub struct RenderSettings {
    pub inputs: RenderInputs,
    pub dir: PathBuf,
}

pub struct FileSink {
    settings: RenderSettings,
    /// When the agent can read the cluster the files go to: a revision counts as
    /// `DEPLOYED` once the GitOps tool has applied it and it rolled out.
    observer: Option<KubeSink>,
    /// What each deployment's folder holds now: (revision, folder).
    written: Mutex<HashMap<Uuid, (Uuid, PathBuf)>>,
}

impl FileSink {
    pub fn new(settings: RenderSettings) -> std::io::Result<Self> {
        std::fs::create_dir_all(&settings.dir)?;
        Ok(FileSink {
            settings,
            observer: None,
            written: Mutex::new(HashMap::new()),
        })
    }

    /// Waits for each written revision to roll out in the cluster `observer` reads.
    pub fn observing(mut self, observer: KubeSink) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The files of one deployment: name → content, and the kustomization.
    pub fn files(&self, d: &DesiredDeployment, rev: &DesiredRevision) -> Vec<(String, String)> {
        let mut files: Vec<(String, String)> = self
            .settings
            .inputs
            .objects(d, rev, false, None)
            .into_iter()
            .map(|o| {
                let kind = o.kind.to_ascii_lowercase();
                (format!("{kind}-{}.yaml", o.name), to_yaml(&o.doc))
            })
            .collect();
        let resources: Vec<serde_json::Value> = files
            .iter()
            .map(|(name, _)| serde_json::Value::String(name.clone()))
            .collect();
        let kustomization = serde_json::json!({
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": resources,
        });
        files.push((
            "kustomization.yaml".to_owned(),
            format!("{MARK}{}; do not edit.\n{}", d.id, to_yaml(&kustomization)),
        ));
        files
    }

    fn folder(&self, d: &DesiredDeployment) -> Result<PathBuf, Failure> {
        let ns = d.namespace.as_deref().unwrap_or("default");
        let name = base_name(d);
        for part in [ns, name.as_str()] {
            let plain = !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !plain {
                return Err(Failure::new(
                    "InvalidName",
                    format!("{part:?} cannot name a folder"),
                ));
            }
        }
        Ok(self.settings.dir.join(ns).join(name))
    }

    /// Writes the files into a new folder beside `folder`, then swaps it in.
    fn write(folder: &Path, files: &[(String, String)]) -> std::io::Result<()> {
        let parent = folder
            .parent()
            .ok_or_else(|| std::io::Error::other("no parent folder"))?;
        std::fs::create_dir_all(parent)?;
        let leaf = folder
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("deployment");
        let staging = parent.join(format!(".{leaf}.writing"));
        let old = parent.join(format!(".{leaf}.old"));
        let _ = std::fs::remove_dir_all(&staging);
        let _ = std::fs::remove_dir_all(&old);
        std::fs::create_dir_all(&staging)?;
        for (name, content) in files {
            // Secrets are readable by the agent's user only.
            let mode = if name.starts_with("secret-") {
                0o600
            } else {
                0o644
            };
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(staging.join(name))?
                .write_all(content.as_bytes())?;
        }
        if folder.exists() {
            std::fs::rename(folder, &old)?;
        }
        std::fs::rename(&staging, folder)?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }

    /// The deployment id a folder was written for.
    fn owner(folder: &Path) -> Option<Uuid> {
        let text = std::fs::read_to_string(folder.join("kustomization.yaml")).ok()?;
        let rest = text.lines().next()?.strip_prefix(MARK)?;
        rest.split(';').next()?.parse().ok()
    }

    fn remove(&self, deployment: Uuid) -> std::io::Result<()> {
        let written = self
            .written
            .lock()
            .ok()
            .and_then(|mut w| w.remove(&deployment));
        let folders: Vec<PathBuf> = match written {
            Some((_, folder)) => vec![folder],
            None => self
                .folders()?
                .into_iter()
                .filter(|(id, _)| *id == deployment)
                .map(|(_, f)| f)
                .collect(),
        };
        for folder in folders {
            if Self::owner(&folder) == Some(deployment) {
                std::fs::remove_dir_all(&folder)?;
            }
        }
        Ok(())
    }

    /// Every deployment folder this mode wrote: (deployment id, folder).
    fn folders(&self) -> std::io::Result<Vec<(Uuid, PathBuf)>> {
        let mut out = Vec::new();
        for ns in std::fs::read_dir(&self.settings.dir)? {
            let ns = ns?.path();
            if !ns.is_dir() {
                continue;
            }
            for dep in std::fs::read_dir(&ns)? {
                let dep = dep?.path();
                if let Some(id) = Self::owner(&dep) {
                    out.push((id, dep));
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Sink for FileSink {
    fn mode(&self) -> &'static str {
        "render"
    }

    /// Render mode writes manifests for someone else to apply; it never builds.
    fn build_refusal(&self) -> Option<Failure> {
        Some(Failure::new(
            "BuildNotSupported",
            "render mode does not build images: build the image in CI and deploy it with \
             `langgraph deploy --image-uri IMAGE`",
        ))
    }

    async fn facts(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut facts = serde_json::Map::new();
        facts.insert(
            "render_dir".into(),
            serde_json::json!(self.settings.dir.display().to_string()),
        );
        facts
    }

    async fn observe(&self) -> Vec<Observed> {
        if let Some(observer) = &self.observer {
            return observer.observe().await;
        }
        let written = self.written.lock().map(|w| w.clone()).unwrap_or_default();
        written
            .into_iter()
            .map(|(id, (rev, folder))| Observed {
                deployment_id: id,
                revision_id: Some(rev),
                phase: "written".into(),
                ready_replicas: 0,
                total_replicas: 0,
                endpoint: Some(folder.display().to_string()),
                last_error: None,
            })
            .collect()
    }

    async fn deploy(&self, rollout: Rollout<'_>) -> Result<String, Failure> {
        let (d, rev, logs) = (rollout.deployment, rollout.revision, rollout.logs);
        let folder = self.folder(d)?;
        let files = self.files(d, rev);
        let unchanged = files.iter().all(|(name, content)| {
            std::fs::read_to_string(folder.join(name)).is_ok_and(|c| c == *content)
        }) && std::fs::read_dir(&folder).map(|r| r.count()).unwrap_or(0)
            == files.len();
        if !unchanged {
            Self::write(&folder, &files)
                .map_err(|e| Failure::new("WriteFailed", format!("{}: {e}", folder.display())))?;
            logs.line(
                d.id,
                rev.id,
                "INFO",
                format!("wrote {} files to {}", files.len(), folder.display()),
            )
            .await;
        }
        if let Ok(mut w) = self.written.lock() {
            w.insert(d.id, (rev.id, folder.clone()));
        }
        if let Some(observer) = &self.observer {
            return observer.rollout(d, rev, logs, false).await;
        }
        Ok(format!(
            "http://{}.{}.svc:8000 (files in {})",
            base_name(d),
            d.namespace.as_deref().unwrap_or("default"),
            folder.display()
        ))
    }

    async fn delete(&self, deployment: &DesiredDeployment) -> anyhow::Result<()> {
        Ok(self.remove(deployment.id)?)
    }

    async fn prune(&self, keep: &HashSet<Uuid>, _namespaces: &[String]) -> anyhow::Result<()> {
        for (id, _) in self.folders()? {
            if !keep.contains(&id) {
                tracing::info!(deployment = %id, "removing the files of a deployment that no longer exists");
                self.remove(id)?;
            }
        }
        Ok(())
    }
}
