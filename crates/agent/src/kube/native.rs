//! `native` and `lgp` modes: the rendered objects go to the cluster by server-side apply
//! (field manager `hostplane-listener`), through kube-rs with the usual configuration
//! (`KUBECONFIG` or `~/.kube/config`, else the pod's service account). `native` applies
//! the workloads, Services, Secrets and stores itself; `lgp` applies one `LGP` (and the
//! env Secret) for the official operator to expand, and reads the rollout from the
//! status the operator reports.
//!
//! A revision is `DEPLOYED` once its objects are applied, its workloads rolled out
//! (observed generation current, every replica updated and ready, no old pod left) and,
//! unless turned off, `GET /ok` answers 200 through the deployment's Service (by the API
//! server's service proxy, so the check works from inside the cluster and from outside).
//! A pod of the revision stuck on a terminal reason fails it at once; a rollout past its
//! deadline fails with the most specific reason seen (an unschedulable pod says so).
//! Objects of the deployment that the revision no longer renders (an HPA, a queue
//! worker, a store the deployment now brings itself) are deleted after the apply. The
//! pods' logs are followed and shipped as deploy logs.

use super::render::{
    base_name, Object, LABEL_COMPONENT, LABEL_DEPLOYMENT, LABEL_LISTENER, LABEL_REVISION,
    MANAGED_BY,
};
use super::{plan, RenderInputs};
use crate::runner::{level_of, Failure, LogSink, Rollout, Sink};
use async_trait::async_trait;
use futures_util::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, LogParams, Patch, PatchParams,
};
use protocol::{DesiredDeployment, DesiredRevision, Observed};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// The field manager of every apply.
pub const FIELD_MANAGER: &str = "hostplane-listener";

/// What the agent applies: the objects themselves, or one `LGP` for the official
/// operator to expand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Native,
    Lgp,
}

pub struct KubeSettings {
    pub flavor: Flavor,
    pub inputs: RenderInputs,
    /// How long a revision has to roll out and answer `/ok`.
    pub rollout_timeout: Duration,
    /// Whether `DEPLOYED` waits for `GET /ok` through the Service.
    pub check_ok: bool,
    /// How often a rollout is looked at.
    pub poll: Duration,
    /// The image of the build Jobs (BuildKit rootless).
    pub buildkit_image: String,
}

/// The kinds a deployment's objects have, in the order a teardown deletes them
/// (what depends on others first). Pods go with their workloads.
const NATIVE_KINDS: &[&str] = &[
    "Job",
    "HorizontalPodAutoscaler",
    "Deployment",
    "StatefulSet",
    "Service",
    "Secret",
    "PersistentVolumeClaim",
];
/// In `lgp` mode the operator owns everything it makes from the `LGP`.
/// (Build Jobs, and their Secrets, are the agent's own in both.)
const LGP_KINDS: &[&str] = &["Job", "LGP", "Secret"];

fn api_resource(kind: &str) -> ApiResource {
    let (group, version, plural) = match kind {
        "Deployment" => ("apps", "v1", "deployments"),
        "StatefulSet" => ("apps", "v1", "statefulsets"),
        "HorizontalPodAutoscaler" => ("autoscaling", "v2", "horizontalpodautoscalers"),
        "Service" => ("", "v1", "services"),
        "Secret" => ("", "v1", "secrets"),
        "PersistentVolumeClaim" => ("", "v1", "persistentvolumeclaims"),
        "LGP" => ("apps.langchain.ai", "v1alpha1", "lgps"),
        "Job" => ("batch", "v1", "jobs"),
        other => unreachable!("the render makes no {other}"),
    };
    ApiResource {
        group: group.to_owned(),
        version: version.to_owned(),
        api_version: if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        },
        kind: kind.to_owned(),
        plural: plural.to_owned(),
    }
}

/// A Kubernetes error as one line: the API's own message when it gave one.
pub(super) fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

/// Container waiting reasons that do not resolve by waiting, and the failure reason
/// each is reported as.
fn terminal(reason: &str) -> Option<&'static str> {
    match reason {
        "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => Some("ImagePullFailed"),
        "CrashLoopBackOff" => Some("CrashLoopBackOff"),
        "CreateContainerConfigError" => Some("CreateContainerConfigError"),
        "CreateContainerError" => Some("CreateContainerError"),
        _ => None,
    }
}

pub struct KubeSink {
    pub(super) client: kube::Client,
    pub(super) settings: KubeSettings,
    /// The log follower of each deployment: (revision, task).
    followers: Mutex<HashMap<Uuid, (Uuid, tokio::task::AbortHandle)>>,
    /// The last failure of each deployment, for heartbeats.
    failures: Mutex<HashMap<Uuid, String>>,
    /// Namespaces this agent has seen deployments in (heartbeats look there).
    namespaces: Mutex<BTreeSet<String>>,
    pub(super) control: crate::control::ControlPlane,
    /// The listener's logins to hostplane's registry.
    pub(super) logins: crate::control::RegistryLogins,
}

impl KubeSink {
    /// Connects with the usual configuration and checks the API server answers.
    pub async fn connect(
        settings: KubeSettings,
        control: crate::control::ControlPlane,
    ) -> anyhow::Result<Self> {
        let client = kube::Client::try_default().await?;
        client.apiserver_version().await?;
        Ok(KubeSink {
            client,
            settings,
            followers: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            namespaces: Mutex::new(BTreeSet::new()),
            logins: crate::control::RegistryLogins::new(control.clone()),
            control,
        })
    }

    fn api(&self, kind: &str, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &api_resource(kind))
    }

    fn kinds(&self) -> &'static [&'static str] {
        match self.settings.flavor {
            Flavor::Native => NATIVE_KINDS,
            Flavor::Lgp => LGP_KINDS,
        }
    }

    /// The kind whose objects stand for the deployments, one each.
    fn main_kind(&self) -> &'static str {
        match self.settings.flavor {
            Flavor::Native => "Deployment",
            Flavor::Lgp => "LGP",
        }
    }

    fn objects(
        &self,
        d: &DesiredDeployment,
        rev: &DesiredRevision,
        pull_secret: Option<&str>,
    ) -> Vec<Object> {
        let lgp = self.settings.flavor == Flavor::Lgp;
        self.settings.inputs.objects(d, rev, lgp, pull_secret)
    }

    /// Selects everything this listener made for deployment `id` (or, with `None`, for
    /// any deployment).
    fn selector(&self, id: Option<Uuid>) -> String {
        let mut s = format!(
            "{MANAGED_BY}=hostplane,{LABEL_LISTENER}={}",
            self.settings.inputs.listener_id
        );
        if let Some(id) = id {
            s.push_str(&format!(",{LABEL_DEPLOYMENT}={id}"));
        }
        s
    }

    /// Applies every object; an API server that is briefly away (a connection error, a
    /// 5xx, 429) is retried until the deadline, a refusal (403, 422...) fails at once.
    pub(super) async fn apply(
        &self,
        objects: &[Object],
        namespace: &str,
        deadline: Instant,
    ) -> Result<(), Failure> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        for o in objects {
            let api = self.api(o.kind, namespace);
            loop {
                let e = match api.patch(&o.name, &params, &Patch::Apply(&o.doc)).await {
                    Ok(_) => break,
                    Err(e) => e,
                };
                let transient = match &e {
                    kube::Error::Api(s) => s.code >= 500 || s.code == 429,
                    _ => true,
                };
                if !transient || Instant::now() >= deadline {
                    return Err(Failure::new(
                        "ApplyFailed",
                        format!("{} {}: {}", o.kind, o.name, describe(&e)),
                    ));
                }
                tracing::warn!(kind = o.kind, name = %o.name, error = %describe(&e), "apply failed; retrying");
                tokio::time::sleep(self.settings.poll).await;
            }
        }
        Ok(())
    }

    /// Deletes the deployment's objects that `objects` no longer has.
    async fn remove_stale(
        &self,
        id: Uuid,
        namespace: &str,
        objects: &[Object],
    ) -> Result<(), kube::Error> {
        let lp = ListParams::default().labels(&self.selector(Some(id)));
        let mut live = Vec::new();
        for kind in self
            .kinds()
            .iter()
            .filter(|k| plan::replaced_with_revisions(k))
        {
            let listed = self.api(kind, namespace).list(&lp).await?;
            live.extend(listed.iter().map(|o| plan::Live::of(kind, o)));
        }
        for l in plan::stale(objects, &live) {
            tracing::info!(kind = l.kind, name = %l.name, "deleting an object the revision no longer has");
            let api = self.api(l.kind, namespace);
            api.delete(&l.name, &DeleteParams::background()).await?;
        }
        Ok(())
    }

    /// Waits until the revision's workloads are rolled out; fails on a terminal pod
    /// state or at the deadline.
    async fn await_rollout(
        &self,
        d: &DesiredDeployment,
        rev: &DesiredRevision,
        namespace: &str,
        objects: &[Object],
        deadline: Instant,
    ) -> Result<(), Failure> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let of_revision = ListParams::default().labels(&format!(
            "{LABEL_DEPLOYMENT}={},{LABEL_REVISION}={}",
            d.id, rev.id
        ));
        loop {
            let mut pending = Vec::new();
            let mut stuck = None;
            for o in objects
                .iter()
                .filter(|o| matches!(o.kind, "Deployment" | "StatefulSet" | "LGP"))
            {
                match self.api(o.kind, namespace).get(&o.name).await {
                    Ok(live) => {
                        if let Some(waiting) = rollout_pending(o.kind, &live, Some(rev.id)) {
                            pending.push(format!("{} {}: {waiting}", o.kind, o.name));
                        }
                    }
                    Err(e) => pending.push(format!("{} {}: {}", o.kind, o.name, describe(&e))),
                }
            }
            match pods.list(&of_revision).await {
                Ok(list) => {
                    for pod in list {
                        match pod_problem(&pod) {
                            Some(Problem::Terminal(mut f, container)) => {
                                if f.reason == "CrashLoopBackOff" {
                                    f.message
                                        .push_str(&self.last_lines(&pods, &pod, &container).await);
                                }
                                return Err(f);
                            }
                            Some(Problem::Stuck(f)) => stuck = Some(f),
                            None => {}
                        }
                    }
                }
                Err(e) => pending.push(format!("pods: {}", describe(&e))),
            }
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(stuck.unwrap_or_else(|| {
                    Failure::new(
                        "RolloutTimeout",
                        format!(
                            "not rolled out after {} s: {}",
                            self.settings.rollout_timeout.as_secs(),
                            pending.join("; ")
                        ),
                    )
                }));
            }
            tokio::time::sleep(self.settings.poll).await;
        }
    }

    /// The last log lines of a crashing container, for the failure message.
    pub(super) async fn last_lines(&self, pods: &Api<Pod>, pod: &Pod, container: &str) -> String {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let params = LogParams {
            container: Some(container.to_owned()),
            previous: true,
            tail_lines: Some(20),
            ..LogParams::default()
        };
        let text = match pods.logs(&name, &params).await {
            Ok(t) => t,
            // No previous run kept: the current one's.
            Err(_) => pods
                .logs(
                    &name,
                    &LogParams {
                        previous: false,
                        ..params
                    },
                )
                .await
                .unwrap_or_default(),
        };
        let text = text.trim_end();
        if text.is_empty() {
            String::new()
        } else {
            format!("; last lines:\n{text}")
        }
    }

    /// The Service (and port) the deployment answers behind: ours, or the one the
    /// operator reports as the `LGP`'s endpoint (`http://NAME[.NAMESPACE.svc...]:PORT`).
    async fn service_of(&self, d: &DesiredDeployment, namespace: &str) -> Option<(String, u16)> {
        let base = base_name(d);
        if self.settings.flavor == Flavor::Native {
            return Some((base, 8000));
        }
        let live = self.api("LGP", namespace).get(&base).await.ok()?;
        let endpoint = live.data["status"]["endpoint"].as_str()?;
        let rest = endpoint.strip_prefix("http://")?;
        let (host, port) = rest.trim_end_matches('/').split_once(':')?;
        let (name, domain) = host.split_once('.').unwrap_or((host, ""));
        let in_cluster = domain.is_empty()
            || domain == namespace
            || domain.starts_with(&format!("{namespace}.svc"));
        if !in_cluster {
            return None;
        }
        Some((name.to_owned(), port.parse().ok()?))
    }

    /// Waits until `GET /ok` answers through the Service, by the API server's proxy.
    async fn await_ok(
        &self,
        namespace: &str,
        service: &str,
        port: u16,
        deadline: Instant,
    ) -> Result<(), Failure> {
        let path = format!("/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy/ok");
        loop {
            let request = http::Request::get(&path)
                .body(Vec::new())
                .map_err(|e| Failure::new("Internal", e.to_string()))?;
            let last = match self.client.request_text(request).await {
                Ok(_) => return Ok(()),
                Err(e) => describe(&e),
            };
            if Instant::now() >= deadline {
                return Err(Failure::new(
                    "HealthCheckTimeout",
                    format!(
                        "GET /ok through Service {service} did not answer within {} s: {last}",
                        self.settings.rollout_timeout.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(self.settings.poll).await;
        }
    }

    /// Follows the logs of the revision's pods (replacing the follower of an older
    /// revision) until the deployment moves on or goes.
    fn follow_logs(&self, d: &DesiredDeployment, rev: &DesiredRevision, logs: LogSink) {
        let Ok(mut followers) = self.followers.lock() else {
            return;
        };
        if let Some((revision, task)) = followers.get(&d.id) {
            if *revision == rev.id && !task.is_finished() {
                return;
            }
            task.abort();
        }
        let pods: Api<Pod> = Api::namespaced(
            self.client.clone(),
            d.namespace.as_deref().unwrap_or("default"),
        );
        let (deployment, revision) = (d.id, rev.id);
        let selector = format!("{LABEL_DEPLOYMENT}={deployment},{LABEL_REVISION}={revision}");
        let task = tokio::spawn(async move {
            let since = chrono::Utc::now();
            let mut followed = HashSet::new();
            let mut streams = tokio::task::JoinSet::new();
            loop {
                if let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await {
                    for pod in list {
                        let name = pod.metadata.name.clone().unwrap_or_default();
                        let running =
                            pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                        let Some(container) = pod
                            .spec
                            .as_ref()
                            .and_then(|s| s.containers.first())
                            .map(|c| c.name.clone())
                        else {
                            continue;
                        };
                        if !running || !followed.insert(name.clone()) {
                            continue;
                        }
                        // A pod that started before this agent did: only what it prints
                        // from now on (the rest was shipped before, or is lost).
                        let created = pod
                            .metadata
                            .creation_timestamp
                            .as_ref()
                            .map(|t| t.0.as_second());
                        let since_seconds = created
                            .filter(|c| *c < since.timestamp())
                            .map(|_| (chrono::Utc::now() - since).num_seconds().max(1));
                        let params = LogParams {
                            container: Some(container),
                            follow: true,
                            since_seconds,
                            ..LogParams::default()
                        };
                        let (pods, logs) = (pods.clone(), logs.clone());
                        streams.spawn(async move {
                            let Ok(stream) = pods.log_stream(&name, &params).await else {
                                return;
                            };
                            let mut lines = stream.lines();
                            while let Some(Ok(line)) = lines.next().await {
                                let level = level_of(&line);
                                logs.line(deployment, revision, level, line).await;
                            }
                        });
                    }
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
        followers.insert(d.id, (rev.id, task.abort_handle()));
    }

    fn stop_following(&self, id: Uuid) {
        if let Some((_, task)) = self.followers.lock().ok().and_then(|mut f| f.remove(&id)) {
            task.abort();
        }
    }

    /// Brings `rev` of `d` up and waits until it runs: applies its objects (unless
    /// someone else does, as in `render` mode), then waits for the rollout and `/ok`,
    /// and follows the pods' logs. The address it answers at.
    pub async fn rollout(
        &self,
        d: &DesiredDeployment,
        rev: &DesiredRevision,
        logs: LogSink,
        apply: bool,
    ) -> Result<String, Failure> {
        let namespace = d.namespace.clone().unwrap_or_else(|| "default".to_owned());
        if let Ok(mut n) = self.namespaces.lock() {
            n.insert(namespace.clone());
        }
        let deadline = Instant::now() + self.settings.rollout_timeout;
        // Pods pull images on hostplane's registry with the listener's login (render
        // mode writes files, which never hold it).
        let login = match apply {
            true => self.pull_secret_for(d, rev).await,
            false => None,
        };
        let mut objects = self.objects(d, rev, login.as_ref().map(|s| s.name.as_str()));
        objects.splice(0..0, login);
        let outcome: Result<(), Failure> = async {
            if apply {
                self.apply(&objects, &namespace, deadline).await?;
                self.remove_stale(d.id, &namespace, &objects)
                    .await
                    .map_err(|e| Failure::new("ApplyFailed", describe(&e)))?;
            }
            self.await_rollout(d, rev, &namespace, &objects, deadline)
                .await?;
            if self.settings.check_ok {
                match self.service_of(d, &namespace).await {
                    Some((service, port)) => {
                        self.await_ok(&namespace, &service, port, deadline).await?
                    }
                    None => {
                        let note = "the operator reported no in-cluster endpoint; /ok not checked";
                        logs.line(d.id, rev.id, "WARNING", note.to_owned()).await;
                    }
                }
            }
            Ok(())
        }
        .await;
        if let Ok(mut f) = self.failures.lock() {
            match &outcome {
                Ok(()) => f.remove(&d.id),
                Err(e) => f.insert(d.id, format!("{}: {}", e.reason, e.message)),
            };
        }
        outcome?;
        self.follow_logs(d, rev, logs);
        Ok(format!("http://{}.{namespace}.svc:8000", base_name(d)))
    }

    /// Deletes every object of deployment `id` in `namespace` and waits until its pods
    /// are gone.
    async fn teardown(&self, id: Uuid, namespace: &str) -> anyhow::Result<()> {
        self.stop_following(id);
        let lp = ListParams::default().labels(&self.selector(Some(id)));
        for kind in self.kinds() {
            self.api(kind, namespace)
                .delete_collection(&DeleteParams::background(), &lp)
                .await?;
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let deadline = Instant::now() + self.settings.rollout_timeout;
        while !pods.list(&lp).await?.items.is_empty() {
            if Instant::now() >= deadline {
                anyhow::bail!("the pods of deployment {id} are still terminating");
            }
            tokio::time::sleep(self.settings.poll).await;
        }
        if let Ok(mut f) = self.failures.lock() {
            f.remove(&id);
        }
        Ok(())
    }
}

/// What still keeps a workload (or an `LGP`, by what its operator reports) from being
/// rolled out, if anything.
fn rollout_pending(kind: &str, live: &DynamicObject, revision: Option<Uuid>) -> Option<String> {
    let int = |v: &Value| v.as_i64().unwrap_or(0);
    let spec = &live.data["spec"];
    let (status, wanted) = if kind == "LGP" {
        let wanted = spec["serverSpec"]["replicas"]
            .as_i64()
            .or_else(|| spec["autoscaling"]["minReplicas"].as_i64())
            .unwrap_or(1);
        (&live.data["status"]["deploymentStatus"], wanted)
    } else {
        (&live.data["status"], spec["replicas"].as_i64().unwrap_or(1))
    };
    let generation = live.metadata.generation.unwrap_or(0);
    let observed = int(&live.data["status"]["observedGeneration"]);
    let live_revision = live
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_REVISION))
        .and_then(|r| r.parse::<Uuid>().ok());
    if let Some(wanted) = revision.filter(|r| live_revision != Some(*r)) {
        return Some(format!("revision {wanted} is not applied yet"));
    }
    let (total, updated, ready) = (
        int(&status["replicas"]),
        int(&status["updatedReplicas"]),
        int(&status["readyReplicas"]),
    );
    if observed < generation {
        Some("the controller has not seen the change yet".to_owned())
    } else if updated < wanted || ready < wanted || total > updated {
        Some(format!(
            "{ready}/{wanted} ready, {updated} updated, {} old",
            total - updated
        ))
    } else {
        None
    }
}

enum Problem {
    /// Fails the revision at once; the container it concerns.
    Terminal(Failure, String),
    /// Fails it at the deadline, with this rather than a bare timeout.
    Stuck(Failure),
}

fn pod_problem(pod: &Pod) -> Option<Problem> {
    let status = pod.status.as_ref()?;
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for c in containers {
        let Some(waiting) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = waiting.reason.as_deref().unwrap_or_default();
        if let Some(failure) = terminal(reason) {
            let mut message = format!(
                "pod {name}, container {}: {reason}: {}",
                c.name,
                waiting.message.as_deref().unwrap_or_default()
            );
            let exit = c
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code);
            if let Some(code) = exit {
                message.push_str(&format!(
                    " (exit code {code}, restarted {} times)",
                    c.restart_count
                ));
            }
            return Some(Problem::Terminal(
                Failure::new(failure, message),
                c.name.clone(),
            ));
        }
    }
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    })?;
    Some(Problem::Stuck(Failure::new(
        "Unschedulable",
        format!(
            "pod {name}: {}",
            unschedulable.message.as_deref().unwrap_or_default()
        ),
    )))
}

#[async_trait]
impl Sink for KubeSink {
    fn mode(&self) -> &'static str {
        match self.settings.flavor {
            Flavor::Native => "native",
            Flavor::Lgp => "lgp",
        }
    }

    async fn facts(&self) -> serde_json::Map<String, Value> {
        let mut facts = serde_json::Map::new();
        if let Ok(v) = self.client.apiserver_version().await {
            facts.insert("kubernetes".into(), serde_json::json!(v.git_version));
            facts.insert("platform".into(), serde_json::json!(v.platform));
        }
        facts
    }

    async fn observe(&self) -> Vec<Observed> {
        let namespaces: Vec<String> = self
            .namespaces
            .lock()
            .map(|n| n.iter().cloned().collect())
            .unwrap_or_default();
        let failures = self.failures.lock().map(|f| f.clone()).unwrap_or_default();
        let lp =
            ListParams::default().labels(&format!("{},{LABEL_COMPONENT}=api", self.selector(None)));
        let mut out = Vec::new();
        for ns in namespaces {
            let Ok(list) = self.api(self.main_kind(), &ns).list(&lp).await else {
                continue;
            };
            for live in list {
                let labels = live.metadata.labels.clone().unwrap_or_default();
                let Some(id) = labels.get(LABEL_DEPLOYMENT).and_then(|v| v.parse().ok()) else {
                    continue;
                };
                let status = &live.data["status"];
                let count =
                    |f: &str| u32::try_from(status[f].as_u64().unwrap_or(0)).unwrap_or(u32::MAX);
                let name = live.metadata.name.clone().unwrap_or_default();
                out.push(Observed {
                    deployment_id: id,
                    revision_id: labels.get(LABEL_REVISION).and_then(|v| v.parse().ok()),
                    phase: if rollout_pending(self.main_kind(), &live, None).is_none() {
                        "available".into()
                    } else {
                        "progressing".into()
                    },
                    ready_replicas: count("readyReplicas"),
                    total_replicas: count("replicas"),
                    endpoint: Some(format!("http://{name}.{ns}.svc:8000")),
                    last_error: failures.get(&id).cloned(),
                });
            }
        }
        out
    }

    async fn deploy(&self, rollout: Rollout<'_>) -> Result<String, Failure> {
        let (d, rev, logs) = (rollout.deployment, rollout.revision, rollout.logs);
        self.rollout(d, rev, logs, true).await
    }

    async fn build(&self, job: crate::builds::Job<'_>) -> Result<String, Failure> {
        self.build_with_job(job).await
    }

    async fn delete(&self, d: &DesiredDeployment) -> anyhow::Result<()> {
        let namespace = d.namespace.as_deref().unwrap_or("default");
        self.teardown(d.id, namespace).await
    }

    async fn prune(&self, keep: &HashSet<Uuid>, namespaces: &[String]) -> anyhow::Result<()> {
        if let Ok(mut n) = self.namespaces.lock() {
            n.extend(namespaces.iter().cloned());
        }
        let lp = ListParams::default().labels(&self.selector(None));
        for ns in namespaces {
            let mut live = Vec::new();
            for kind in self.kinds() {
                let listed = self.api(kind, ns).list(&lp).await?;
                live.extend(listed.iter().map(|o| plan::Live::of(kind, o)));
            }
            for id in plan::gone(&live, keep) {
                tracing::info!(deployment = %id, namespace = %ns, "removing the objects of a deployment that no longer exists");
                self.teardown(id, ns).await?;
            }
        }
        Ok(())
    }
}
