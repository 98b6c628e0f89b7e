//! Container mode's builds: a prepared source ([`crate::builds::Prepared`]) sent to the
//! engine's build API (`POST /build`, which Docker and Podman both serve) as one tar
//! stream, tagged `localhost/hostplane-build/<listener id>/<deployment id>:<revision id>`;
//! the builder's output goes to the build log as it comes. Build images go with the
//! containers they served. They are found by that tag, not by labels: Docker's builder
//! turns each label it is asked to add into a step of its own (a container and a commit
//! each, seconds on every build).

use super::*;
use crate::builds::Job;
use bollard::query_parameters::{BuildImageOptions, ListImagesOptions, RemoveImageOptions};
use std::path::Path;

/// Lines of the builder's output a failed build's message ends with.
const LAST_LINES: usize = 20;

/// Where a listener's build images are kept.
fn repository(listener: Uuid) -> String {
    format!("localhost/hostplane-build/{listener}/")
}

/// The tag of a revision's image.
pub fn tag(listener: Uuid, deployment: Uuid, revision: Uuid) -> String {
    format!("{}{deployment}:{revision}", repository(listener))
}

/// The deployment and revision of one of `listener`'s build image tags.
fn ids_of(listener: Uuid, tag: &str) -> Option<(Uuid, Uuid)> {
    let (deployment, revision) = tag.strip_prefix(&repository(listener))?.split_once(':')?;
    Some((deployment.parse().ok()?, revision.parse().ok()?))
}

/// Writes the context as a tar file: the folder's files, the Dockerfile under a name of
/// its own, and a `.dockerignore` that keeps that Dockerfile (and a `.dockerignore` the
/// project did not have) out of `COPY .`: the official CLI sends its Dockerfile on
/// standard input, so the image it builds holds neither.
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
    pub(super) async fn build_image(&self, job: Job<'_>) -> Result<String, Failure> {
        let (d, rev, source, log) = (job.deployment, job.revision, job.source, job.log);
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
        let image = tag(self.settings.listener_id, d.id, rev.id);
        let options = BuildImageOptions {
            dockerfile: name,
            t: Some(image.clone()),
            rm: true,
            forcerm: true,
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

    /// Removes the build images of deployments not in `keep` (deleted while the agent
    /// was away, or tagged by a build the engine finished after it was cancelled).
    pub(super) async fn prune_orphan_images(&self, keep: &HashSet<Uuid>) {
        let listener = self.settings.listener_id;
        for ((d, _), target) in build_images(&self.docker, listener).await {
            if !keep.contains(&d) {
                remove_image(&self.docker, &target).await;
            }
        }
    }
}

/// Removes the deployment's build images, except `keep`'s.
pub(super) async fn prune_images(
    docker: &Docker,
    listener: Uuid,
    deployment: Uuid,
    keep: Option<Uuid>,
) {
    for ((d, revision), target) in build_images(docker, listener).await {
        if d == deployment && Some(revision) != keep {
            remove_image(docker, &target).await;
        }
    }
}

/// `listener`'s build images: their deployment and revision, and their tag.
async fn build_images(docker: &Docker, listener: Uuid) -> Vec<((Uuid, Uuid), String)> {
    // Podman's listing fails while an image it is listing goes (a build under way
    // commits and drops intermediate images): it is asked again for a few seconds.
    let mut tries = 0;
    let listed = loop {
        match docker.list_images(None::<ListImagesOptions>).await {
            Ok(listed) => break listed,
            Err(e) if tries < 20 => {
                tracing::debug!(error = %e, "listing images failed; retrying");
                tries += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list images; build images stay for now");
                return Vec::new();
            }
        }
    };
    listed
        .into_iter()
        .flat_map(|image| image.repo_tags)
        .filter_map(|tag| Some((ids_of(listener, &tag)?, tag)))
        .collect()
}

/// Removes a build image; a refusal (a container the engine is still letting go of holds
/// it) is tried again for a few seconds, since nothing else would remove it later.
async fn remove_image(docker: &Docker, target: &str) {
    for attempt in 1.. {
        match docker
            .remove_image(target, None::<RemoveImageOptions>, None)
            .await
        {
            Ok(_) => return,
            Err(e) if is_not_found(&e) => return,
            Err(e) if attempt < 10 => {
                tracing::debug!(image = %target, error = %e, "removing a build image failed; retrying");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => {
                tracing::warn!(image = %target, error = %e, "cannot remove a build image");
                return;
            }
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

#[cfg(test)]
mod tests {
    use super::{ids_of, tag};
    use uuid::Uuid;

    #[test]
    fn build_tags_name_their_listener_deployment_and_revision() {
        let (l, d, r) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let t = tag(l, d, r);
        assert_eq!(t, format!("localhost/hostplane-build/{l}/{d}:{r}"));
        assert_eq!(ids_of(l, &t), Some((d, r)));
        assert_eq!(ids_of(Uuid::new_v4(), &t), None);
        assert_eq!(ids_of(l, "localhost/hostplane-build/x:y"), None);
    }
}
