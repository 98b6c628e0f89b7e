//! Container mode's builds: a prepared source ([`crate::builds::Prepared`]) sent to the
//! engine's build API (`POST /build`, which Docker and Podman both serve) as one tar
//! stream, tagged `localhost/hostplane-build/<deployment id>:<revision id>` and labelled
//! like the containers; the builder's output goes to the build log as it comes. Build
//! images go with the containers they served.

use super::*;
use crate::builds::{BuildLog, Prepared};
use bollard::query_parameters::{BuildImageOptions, ListImagesOptions, RemoveImageOptions};
use std::path::Path;

/// Lines of the builder's output a failed build's message ends with.
const LAST_LINES: usize = 20;

/// The tag of a revision's image.
pub fn tag(deployment: Uuid, revision: Uuid) -> String {
    format!("localhost/hostplane-build/{deployment}:{revision}")
}

/// Writes the context as a tar file: the folder's files, the Dockerfile under a name of
/// its own, and a `.dockerignore` that keeps that Dockerfile (and a `.dockerignore` the
/// project did not have) out of `COPY .`, as `docker build -f -` does.
fn context_tar(
    context: &Path,
    dockerfile: &str,
    dockerfile_name: &str,
    out: &Path,
) -> std::io::Result<()> {
    let ignore = context.join(".dockerignore");
    let mut ignored = std::fs::read_to_string(&ignore).unwrap_or_default();
    if ignored.is_empty() {
        ignored.push_str(".dockerignore\n");
    } else if !ignored.ends_with('\n') {
        ignored.push('\n');
    }
    ignored.push_str(dockerfile_name);
    ignored.push('\n');
    std::fs::write(&ignore, ignored)?;
    std::fs::write(context.join(dockerfile_name), dockerfile)?;
    let mut tar = tar::Builder::new(std::fs::File::create(out)?);
    tar.follow_symlinks(false);
    tar.append_dir_all(".", context)?;
    tar.into_inner()?.sync_all()
}

/// The file's contents as a stream of chunks.
fn file_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = bytes::Bytes> + Send + 'static {
    futures_util::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((bytes::Bytes::from(buf), file))
            }
        }
    })
}

impl ContainerSink {
    pub(super) async fn build_image(
        &self,
        d: &DesiredDeployment,
        rev: &DesiredRevision,
        source: &Prepared,
        log: &BuildLog,
    ) -> Result<String, Failure> {
        let name = format!("Dockerfile.hostplane-{}", rev.id.simple());
        let tar = source.workdir.path().join("context.tar");
        let (context, text, named, out) = (
            source.context.clone(),
            source.dockerfile.clone(),
            name.clone(),
            tar.clone(),
        );
        tokio::task::spawn_blocking(move || context_tar(&context, &text, &named, &out))
            .await
            .map_err(|e| failure("BuildFailed", e))?
            .map_err(|e| {
                failure(
                    "BuildFailed",
                    format!("cannot write the build context: {e}"),
                )
            })?;
        let file = tokio::fs::File::open(&tar)
            .await
            .map_err(|e| failure("BuildFailed", e))?;
        let image = tag(d.id, rev.id);
        let mut labels = labels(&self.settings, d.id, "build");
        labels.insert(LABEL_REVISION.to_owned(), rev.id.to_string());
        let options = BuildImageOptions {
            dockerfile: name,
            t: Some(image.clone()),
            rm: true,
            forcerm: true,
            labels: Some(labels),
            ..Default::default()
        };
        let body = bollard::body_stream(file_stream(file));
        let mut output = self.docker.build_image(options, None, Some(body));
        let mut last: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        let mut pending = String::new();
        while let Some(step) = output.next().await {
            let info = match step {
                Ok(info) => info,
                Err(e) => return Err(build_failed(&e.to_string(), &last)),
            };
            if let Some(error) = info.error_detail.and_then(|e| e.message).or(info.error) {
                for line in pending.lines().filter(|l| !l.trim().is_empty()) {
                    keep(&mut last, line);
                    log.line("INFO", line.trim_end()).await;
                }
                log.line("ERROR", error.trim_end()).await;
                return Err(build_failed(&error, &last));
            }
            let text = info.stream.or(info.status).unwrap_or_default();
            pending.push_str(&text);
            while let Some(at) = pending.find('\n') {
                let line: String = pending.drain(..=at).collect();
                let line = line.trim_end();
                if !line.trim().is_empty() {
                    keep(&mut last, line);
                    log.line(level_of(line), line).await;
                }
            }
        }
        if !pending.trim().is_empty() {
            log.line("INFO", pending.trim_end()).await;
        }
        self.docker.inspect_image(&image).await.map_err(|e| {
            failure(
                "BuildFailed",
                format!("the engine did not keep the image {image}: {e}"),
            )
        })?;
        Ok(image)
    }

    /// Removes the deployment's build images, except `keep`'s.
    pub(super) async fn prune_images(&self, deployment: Uuid, keep: Option<Uuid>) {
        for (revision, target) in self
            .build_images(LABEL_DEPLOYMENT, &deployment.to_string())
            .await
        {
            if keep.is_none() || revision.map(|(_, r)| r) != keep {
                self.remove_image(&target).await;
            }
        }
    }

    /// Removes the build images of deployments not in `keep` (deleted while the agent
    /// was away, or tagged by a build the engine finished after it was cancelled).
    pub(super) async fn prune_orphan_images(&self, keep: &HashSet<Uuid>) {
        let listener = self.settings.listener_id.to_string();
        for (ids, target) in self.build_images(LABEL_LISTENER, &listener).await {
            if !ids.is_some_and(|(d, _)| keep.contains(&d)) {
                self.remove_image(&target).await;
            }
        }
    }

    /// This listener's build images with label `key=value`: their deployment and revision
    /// ids, and the reference to remove them by.
    async fn build_images(&self, key: &str, value: &str) -> Vec<(Option<(Uuid, Uuid)>, String)> {
        // One label in the filter: Podman does not combine several as Docker does. The
        // others are checked here.
        let filters = HashMap::from([("label".to_owned(), vec![format!("{key}={value}")])]);
        let listed = self
            .docker
            .list_images(Some(ListImagesOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .await;
        let listener = self.settings.listener_id.to_string();
        listed
            .unwrap_or_default()
            .into_iter()
            .filter_map(|image| {
                let label = |k: &str| image.labels.get(k).map(String::as_str);
                if label(LABEL_LISTENER) != Some(listener.as_str())
                    || label(LABEL_ROLE) != Some("build")
                {
                    return None;
                }
                let id = |k: &str| label(k).and_then(|v| v.parse::<Uuid>().ok());
                let ids = id(LABEL_DEPLOYMENT).zip(id(LABEL_REVISION));
                let target = ids.map_or_else(|| image.id.clone(), |(d, r)| tag(d, r));
                Some((ids, target))
            })
            .collect()
    }

    async fn remove_image(&self, target: &str) {
        if let Err(e) = self
            .docker
            .remove_image(target, None::<RemoveImageOptions>, None)
            .await
        {
            tracing::warn!(image = %target, error = %e, "cannot remove a build image");
        }
    }
}

fn keep(last: &mut std::collections::VecDeque<String>, line: &str) {
    if last.len() == LAST_LINES {
        last.pop_front();
    }
    last.push_back(line.trim_end().to_owned());
}

fn build_failed(error: &str, last: &std::collections::VecDeque<String>) -> Failure {
    let lines: Vec<&str> = last.iter().map(String::as_str).collect();
    Failure::new(
        "BuildFailed",
        format!("{}; last lines:\n{}", error.trim_end(), lines.join("\n")),
    )
}
