//! The Kubernetes modes' builds and pulls.
//!
//! A source revision is built by a Job in its deployment's namespace, one per revision,
//! running BuildKit rootless (`buildctl-daemonless.sh`, the image a setting). The Job
//! holds no listener key: a Secret gives it a URL that fetches that one revision's
//! source while it builds, and a login that pushes under the workspace's prefix of
//! hostplane's registry (both from the data plane's `build-credential`, both short-lived),
//! plus the Dockerfile the agent generated. The agent follows the Job, ships its pod's
//! output as build logs, reads the pushed digest from the container's termination
//! message, and deletes the Job and the Secret afterwards (also when the build is
//! cancelled).
//!
//! Images on hostplane's registry are pulled with the listener's pull-only login, kept
//! in a Secret of the deployment (`<name>-registry`, applied with its other objects, so
//! renewed with them) and named in the pods' `imagePullSecrets`.

use super::native::{describe, KubeSink};
use super::render::{
    base_name, Object, LABEL_COMPONENT, LABEL_DEPLOYMENT, LABEL_LISTENER, LABEL_REVISION,
    MANAGED_BY,
};
use crate::builds::BuildLog;
use crate::runner::Failure;
use base64::Engine;
use futures_util::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, LogParams};
use protocol::{BuildCredential, DesiredDeployment, DesiredRevision, RegistryCredential};
use serde_json::json;
use uuid::Uuid;

/// The pinned default image of the build Jobs.
pub const DEFAULT_BUILDKIT_IMAGE: &str = "docker.io/moby/buildkit:v0.16.0-rootless";

/// What the build container runs: fetch and unpack the source, build the context with
/// the agent's Dockerfile, push, and leave the pushed digest as its termination message.
const SCRIPT: &str = r#"set -eu
wget -q -O /tmp/source.tar.gz "$(cat /hostplane/source-url)"
mkdir -p /workspace/src
tar -xzf /tmp/source.tar.gz -C /workspace/src
buildctl-daemonless.sh build --frontend dockerfile.v0 \
  --local "context=/workspace/src/$CONTEXT" --local dockerfile=/hostplane \
  --output "type=image,name=$IMAGE,push=true" --metadata-file /tmp/metadata.json
digest=$(tr -d '\n ' < /tmp/metadata.json | sed -n 's/.*"containerimage.digest":"\(sha256:[0-9a-f]*\)".*/\1/p')
echo "$digest" > /dev/termination-log
echo "pushed $IMAGE@$digest""#;

/// A Docker `config.json` with one registry login.
fn docker_config(registry: &str, username: &str, password: &str) -> String {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    json!({"auths": {registry: {"auth": auth}}}).to_string()
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The name of a revision's build Job and Secret.
pub fn build_name(revision: Uuid) -> String {
    format!("hp-build-{}", revision.simple())
}

/// The Secret and the Job that build `rev` of `d` (a pure function): the Dockerfile,
/// the context folder within the source, what to push to, and the credential.
pub fn build_objects(
    listener: Uuid,
    d: &DesiredDeployment,
    rev: &DesiredRevision,
    credential: &BuildCredential,
    dockerfile: &str,
    context: &str,
    buildkit_image: &str,
) -> (String, Vec<Object>) {
    let name = build_name(rev.id);
    let namespace = d.namespace.as_deref().unwrap_or("default");
    let image = format!(
        "{}/{}{}:{}",
        credential.registry, credential.repository_prefix, d.id, rev.id
    );
    let labels = json!({
        MANAGED_BY: "hostplane",
        LABEL_LISTENER: listener.to_string(),
        LABEL_DEPLOYMENT: d.id.to_string(),
        LABEL_REVISION: rev.id.to_string(),
        LABEL_COMPONENT: "build",
    });
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "type": "Opaque",
        "data": {
            "source-url": b64(&credential.source_url),
            "Dockerfile": b64(dockerfile),
            "config.json": b64(&docker_config(&credential.registry, &credential.username, &credential.password)),
        },
    });
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {
                    "labels": labels,
                    // Rootless BuildKit makes its own user namespaces.
                    "annotations": {"container.apparmor.security.beta.kubernetes.io/build": "unconfined"},
                },
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": false,
                    "securityContext": {
                        "runAsUser": 1000, "runAsGroup": 1000,
                        "seccompProfile": {"type": "Unconfined"},
                    },
                    "containers": [{
                        "name": "build",
                        "image": buildkit_image,
                        "command": ["sh", "-c", SCRIPT],
                        "env": [
                            {"name": "BUILDKITD_FLAGS", "value": "--oci-worker-no-process-sandbox"},
                            {"name": "DOCKER_CONFIG", "value": "/hostplane/docker"},
                            {"name": "CONTEXT", "value": context},
                            {"name": "IMAGE", "value": image},
                        ],
                        "terminationMessagePolicy": "File",
                        "volumeMounts": [
                            {"name": "build", "mountPath": "/hostplane", "readOnly": true},
                            {"name": "workspace", "mountPath": "/workspace"},
                            {"name": "buildkitd", "mountPath": "/home/user/.local/share/buildkit"},
                        ],
                    }],
                    "volumes": [
                        {"name": "build", "secret": {"secretName": name, "items": [
                            {"key": "config.json", "path": "docker/config.json"},
                            {"key": "Dockerfile", "path": "Dockerfile"},
                            {"key": "source-url", "path": "source-url"},
                        ]}},
                        {"name": "workspace", "emptyDir": {}},
                        {"name": "buildkitd", "emptyDir": {}},
                    ],
                },
            },
        },
    });
    let objects = vec![
        Object {
            kind: "Secret",
            name: name.clone(),
            doc: secret,
        },
        Object {
            kind: "Job",
            name,
            doc: job,
        },
    ];
    (
        format!(
            "{}/{}{}",
            credential.registry, credential.repository_prefix, d.id
        ),
        objects,
    )
}

/// The Secret holding the listener's registry login for the pods of deployment `d`
/// (one per deployment, so that it goes with the deployment's other objects).
pub fn pull_secret(listener: Uuid, d: &DesiredDeployment, login: &RegistryCredential) -> Object {
    let config = docker_config(&login.registry, &login.username, &login.password);
    let name = format!("{}-registry", base_name(d));
    Object {
        kind: "Secret",
        name: name.clone(),
        doc: json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": d.namespace.as_deref().unwrap_or("default"),
                         "labels": {
                MANAGED_BY: "hostplane", LABEL_LISTENER: listener.to_string(),
                LABEL_DEPLOYMENT: d.id.to_string(), LABEL_COMPONENT: "registry-login",
            }},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": b64(&config)},
        }),
    }
}

/// Deletes a build's Job (with its pod) and Secret when dropped: after the build, and
/// when the build is cancelled (its task aborted).
struct Leftovers {
    client: kube::Client,
    namespace: String,
    name: String,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let (client, namespace, name) = (
            self.client.clone(),
            self.namespace.clone(),
            self.name.clone(),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
                let _ = jobs.delete(&name, &DeleteParams::background()).await;
                let secrets: Api<k8s_openapi::api::core::v1::Secret> =
                    Api::namespaced(client, &namespace);
                let _ = secrets.delete(&name, &DeleteParams::default()).await;
            });
        }
    }
}

impl KubeSink {
    /// The Secret with the listener's registry login when `rev`'s image is on
    /// hostplane's registry (applied with the deployment's other objects, so renewed
    /// whenever they are).
    pub(super) async fn pull_secret_for(
        &self,
        d: &DesiredDeployment,
        rev: &DesiredRevision,
    ) -> Option<Object> {
        let login = self.logins.for_image(rev.image.as_deref()?).await?;
        Some(pull_secret(self.settings.inputs.listener_id, d, &login))
    }

    /// Builds `rev` with a Job (see the module's notes): the pushed image, by digest.
    pub(super) async fn build_with_job(
        &self,
        job: crate::builds::Job<'_>,
    ) -> Result<String, Failure> {
        let (d, rev, source, log) = (job.deployment, job.revision, job.source, job.log);
        let namespace = d.namespace.clone().unwrap_or_else(|| "default".to_owned());
        let credential = match self.control.build_credential(rev.id).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Err(Failure::new(
                    "NoRegistry",
                    "builds in Kubernetes push to hostplane's registry, and the control plane \
                     has none: set HOSTPLANE_REGISTRY_URL on the server (docs/security.md, \
                     container registry)",
                ))
            }
            Err(e) => {
                return Err(Failure::new(
                    "BuildFailed",
                    format!("no build credential: {e}"),
                ))
            }
        };
        let context = source
            .context
            .strip_prefix(&source.root)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let context = if context.is_empty() {
            ".".to_owned()
        } else {
            context
        };
        let (repository, objects) = build_objects(
            self.settings.inputs.listener_id,
            d,
            rev,
            &credential,
            &source.dockerfile,
            &context,
            &self.settings.buildkit_image,
        );
        let name = build_name(rev.id);
        let _leftovers = Leftovers {
            client: self.client.clone(),
            namespace: namespace.clone(),
            name: name.clone(),
        };
        let deadline = tokio::time::Instant::now() + self.settings.rollout_timeout;
        self.apply(&objects, &namespace, deadline).await?;
        log.line(
            "INFO",
            format!("Started the build Job {name} in namespace {namespace}"),
        )
        .await;
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &namespace);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let mut shipping: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            let job = jobs.get(&name).await.map_err(|e| {
                Failure::new("BuildFailed", format!("the build Job: {}", describe(&e)))
            })?;
            let status = job.status.unwrap_or_default();
            let pod = pods
                .list(&ListParams::default().labels(&format!("job-name={name}")))
                .await
                .ok()
                .and_then(|l| l.items.into_iter().next());
            if let (None, Some(pod)) = (&shipping, &pod) {
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                if matches!(phase, Some("Running" | "Succeeded" | "Failed")) {
                    shipping = Some(self.ship_build_output(&pods, pod, log.clone()));
                }
            }
            let done = status.succeeded.unwrap_or(0) > 0;
            let failed = status.failed.unwrap_or(0) > 0;
            if done || failed {
                if let Some(task) = shipping.take() {
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
                }
                let terminated = pod
                    .as_ref()
                    .and_then(|p| p.status.as_ref())
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|c| c.first())
                    .and_then(|c| c.state.as_ref())
                    .and_then(|s| s.terminated.clone());
                let message = terminated.and_then(|t| t.message).unwrap_or_default();
                let digest = message.trim();
                if done && digest.starts_with("sha256:") {
                    return Ok(format!("{repository}@{digest}"));
                }
                let last = match &pod {
                    Some(p) => self.last_lines(&pods, p, "build").await,
                    None => String::new(),
                };
                let why = if done {
                    format!(
                        "the build Job ended without a pushed digest (it left {digest:?}){last}"
                    )
                } else {
                    format!("the build Job failed{last}")
                };
                return Err(Failure::new("BuildFailed", why));
            }
            tokio::time::sleep(self.settings.poll).await;
        }
    }

    /// Sends the build pod's output to the build log as it comes.
    fn ship_build_output(
        &self,
        pods: &Api<Pod>,
        pod: &Pod,
        log: BuildLog,
    ) -> tokio::task::JoinHandle<()> {
        let (pods, name) = (pods.clone(), pod.metadata.name.clone().unwrap_or_default());
        tokio::spawn(async move {
            let params = LogParams {
                container: Some("build".to_owned()),
                follow: true,
                ..LogParams::default()
            };
            let Ok(stream) = pods.log_stream(&name, &params).await else {
                return;
            };
            let mut lines = stream.lines();
            while let Some(Ok(line)) = lines.next().await {
                log.line(crate::runner::level_of(&line), line).await;
            }
        })
    }
}
