//! The agent loop every mode shares: heartbeat, long-poll the whole desired state,
//! claim what waits, hand the work to the mode's [`Sink`], report, ship logs, confirm
//! deletions. Level-triggered: each answer describes everything, so a restart, a lost
//! connection or a missed change costs nothing but time. The control plane being down
//! only makes the loop retry with backoff; nothing is ever removed because of it.

use crate::builds::{BuildLog, BuildSettings};
use crate::control::{CallError, ControlPlane};
use async_trait::async_trait;
use protocol::*;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// Why a deployment could not be brought up: the reason and message of `DEPLOY_FAILED`.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub reason: String,
    pub message: String,
}

impl Failure {
    pub fn new(reason: &str, message: impl Into<String>) -> Self {
        Failure {
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

/// Where log lines go: batched and sent to the control plane by [`ship_logs`].
#[derive(Clone)]
pub struct LogSink(tokio::sync::mpsc::Sender<Shipped>);

/// What [`ship_logs`] receives: a line, or a request to send what it holds now.
enum Shipped {
    Line(LogLine),
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl LogSink {
    /// A deploy log line of a revision.
    pub async fn line(&self, deployment: Uuid, revision: Uuid, level: &str, message: String) {
        let line = LogLine {
            deployment_id: deployment,
            revision_id: revision,
            kind: LogKind::Deploy,
            timestamp: chrono::Utc::now(),
            level: level.to_owned(),
            message,
        };
        self.send(line).await;
    }

    /// Sends a line, its message cut to the protocol's limit.
    pub async fn send(&self, mut line: LogLine) {
        if line.message.len() > MAX_LOG_MESSAGE_BYTES {
            let mut end = MAX_LOG_MESSAGE_BYTES;
            while !line.message.is_char_boundary(end) {
                end -= 1;
            }
            line.message.truncate(end);
        }
        let _ = self.0.send(Shipped::Line(line)).await;
    }

    /// Waits until every line sent before is with the control plane (or given up on),
    /// so that a report that follows comes after them in the logs.
    pub async fn flush(&self) {
        let (done, sent) = tokio::sync::oneshot::channel();
        if self.0.send(Shipped::Flush(done)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(30), sent).await;
        }
    }
}

/// The level of a log line, guessed from its text.
pub fn level_of(text: &str) -> &'static str {
    let upper = text.to_uppercase();
    if upper.contains("CRITICAL") {
        "CRITICAL"
    } else if upper.contains("ERROR") {
        "ERROR"
    } else if upper.contains("WARNING") || upper.contains("WARN ") {
        "WARNING"
    } else if upper.contains("DEBUG") {
        "DEBUG"
    } else {
        "INFO"
    }
}

/// What a mode does with the desired state; the loop decides when.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// The mode's name, as heartbeats report it.
    fn mode(&self) -> &'static str;
    /// Refuses what this mode cannot honour of a deployment (beyond [`crate::spec::check`],
    /// which holds for every mode), before anything is written.
    fn check(&self, _deployment: &DesiredDeployment) -> Result<(), Failure> {
        Ok(())
    }
    /// Facts about the host or cluster, for heartbeats.
    async fn facts(&self) -> serde_json::Map<String, serde_json::Value>;
    /// What runs now, per deployment.
    async fn observe(&self) -> Vec<Observed>;
    /// Brings the deployment to run the revision (adopting what already runs for it
    /// after a restart); the address it answers at, once it does.
    async fn deploy(&self, rollout: Rollout<'_>) -> Result<String, Failure>;
    /// Builds the job's prepared source into an image the mode can run, sending the
    /// builder's output to the job's log; the image. Only called when
    /// [`Sink::build_refusal`] is `None`.
    async fn build(&self, _job: crate::builds::Job<'_>) -> Result<String, Failure> {
        Err(Failure::new(
            "BuildNotSupported",
            "this mode does not build",
        ))
    }
    /// Why this mode does not build source revisions (`langgraph deploy --remote`);
    /// `None` (the default) for a mode that builds them. An agent fails such a revision
    /// at once with this reason instead of leaving it waiting.
    fn build_refusal(&self) -> Option<Failure> {
        None
    }
    /// Removes everything of the deployment.
    async fn delete(&self, deployment: &DesiredDeployment) -> anyhow::Result<()>;
    /// Removes what belongs to deployments that are not in `keep` (deleted while the
    /// agent was away), in the listener's `namespaces`.
    async fn prune(&self, keep: &HashSet<Uuid>, namespaces: &[String]) -> anyhow::Result<()>;
}

/// What a mode is asked to run: the revision of a deployment, and where its deploy log
/// lines go.
pub struct Rollout<'a> {
    pub deployment: &'a DesiredDeployment,
    pub revision: &'a DesiredRevision,
    pub logs: LogSink,
}

/// How long one desired-state long-poll may wait.
const WAIT: Duration = Duration::from_secs(30);

/// Builds: their settings and the free slots.
pub struct Builds {
    pub settings: BuildSettings,
    slots: tokio::sync::Semaphore,
}

impl Builds {
    pub fn new(settings: BuildSettings) -> Self {
        let slots = tokio::sync::Semaphore::new(settings.slots.max(1));
        Builds { settings, slots }
    }
}

/// Runs the agent until the process ends.
pub async fn run(control: ControlPlane, sink: Arc<dyn Sink>, builds: BuildSettings) {
    let (tx, rx) = tokio::sync::mpsc::channel(10_000);
    let logs = LogSink(tx);
    tokio::spawn(ship_logs(control.clone(), rx));
    tokio::spawn(heartbeats(control.clone(), sink.clone()));
    let context = Context {
        control: control.clone(),
        sink,
        logs,
        builds: Arc::new(Builds::new(builds)),
        announced: Arc::default(),
    };
    let busy: Busy = Arc::default();
    // Work skipped because its deployment was busy starts as soon as the busy task ends,
    // not at the next change: the task wakes the loop.
    let finished: Wake = Arc::default();
    let mut after = -1;
    let mut backoff = Duration::from_millis(500);
    loop {
        let answer = tokio::select! {
            answer = control.desired(after, WAIT) => answer,
            () = finished.notify.notified() => control.desired(-1, Duration::ZERO).await,
        };
        let state = match answer {
            Ok(state) => {
                backoff = Duration::from_millis(500);
                state
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot read the desired state");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        after = state.generation;
        reconcile(&context, &busy, &finished, &state).await;
    }
}

/// Set when a round skipped work because its deployment was busy; the next task to end
/// then wakes the loop.
#[derive(Default)]
struct Skipped {
    skipped: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

type Wake = Arc<Skipped>;

/// What a deployment's task does: a teardown, a build (of that revision), or other work.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Doing {
    Teardown,
    Build(Uuid),
    Other,
}

/// The task working on each deployment.
type Busy = Arc<Mutex<HashMap<Uuid, (tokio::task::AbortHandle, Doing)>>>;
/// The (deployment, revision) pairs whose address was printed.
type Announced = Arc<Mutex<HashSet<(Uuid, Uuid)>>>;

/// What every task of the loop uses.
#[derive(Clone)]
struct Context {
    control: ControlPlane,
    sink: Arc<dyn Sink>,
    logs: LogSink,
    builds: Arc<Builds>,
    announced: Announced,
}

impl Context {
    /// Why this agent does not build: builds are off, or its mode does not build.
    fn build_refusal(&self) -> Option<Failure> {
        if !self.builds.settings.enabled {
            return Some(Failure::new(
                "BuildsDisabled",
                "this listener's agent does not build images (builds are off): build the \
                 image yourself and deploy it with `langgraph deploy --image-uri IMAGE`",
            ));
        }
        self.sink.build_refusal()
    }

    /// Asks the mode to run `rev` of `d`, its log lines going to the agent's log sink.
    async fn deploy(
        &self,
        d: &DesiredDeployment,
        rev: &DesiredRevision,
    ) -> Result<String, Failure> {
        let rollout = Rollout {
            deployment: d,
            revision: rev,
            logs: self.logs.clone(),
        };
        self.sink.deploy(rollout).await
    }
}

/// Starts the work the state asks for; each deployment has at most one task at a time,
/// except that a deletion stops whatever else was under way for its deployment, and
/// work on another revision stops a build (a newer revision superseded it).
async fn reconcile(context: &Context, busy: &Busy, finished: &Wake, state: &DesiredState) {
    let keep: HashSet<Uuid> = state.deployments.iter().map(|d| d.id).collect();
    let refuses_builds = context.build_refusal().is_some();
    for (d, work) in plan(state, &context.control.agent_id, refuses_builds) {
        let Ok(mut tasks) = busy.lock() else {
            continue;
        };
        let doing = work.doing();
        match tasks.get(&d.id).map(|(h, t)| (h, *t)) {
            Some((running, Doing::Build(old))) if work.revision() != Some(old) => {
                running.abort();
                if doing != Doing::Teardown {
                    tokio::spawn(cancelled(context.control.clone(), old));
                }
            }
            Some((running, Doing::Other)) if doing == Doing::Teardown => running.abort(),
            Some(_) => {
                // A skipped check of what runs can wait for the next round; skipped
                // changes should not.
                if !matches!(work, Work::Keep(_)) {
                    finished
                        .skipped
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                continue;
            }
            None => {}
        }
        let id = d.id;
        let (context, busy2, finished, d) =
            (context.clone(), busy.clone(), finished.clone(), d.clone());
        let task = tokio::spawn(async move {
            work.run(&context, &d).await;
            if let Ok(mut b) = busy2.lock() {
                // Only its own entry: a teardown or a newer build may have replaced it.
                if b.get(&d.id)
                    .is_some_and(|(h, t)| *t == doing && !h.is_finished())
                {
                    b.remove(&d.id);
                }
            }
            // Set under the lock by a round that found this deployment busy, so read
            // after this task left the map: that work starts now.
            if finished
                .skipped
                .swap(false, std::sync::atomic::Ordering::AcqRel)
            {
                finished.notify.notify_one();
            }
        });
        tasks.insert(id, (task.abort_handle(), doing));
    }
    // Only when no task works on a deployment outside `keep`: such a task (a deploy of a
    // deployment deleted meanwhile) may be creating what pruning would remove. Tasks of
    // kept deployments (the check after DEPLOYED runs every round) do not stop it.
    let clear = busy
        .lock()
        .map(|b| b.keys().all(|id| keep.contains(id)))
        .unwrap_or(false);
    if clear {
        if let Err(e) = context.sink.prune(&keep, &state.namespaces).await {
            tracing::warn!(error = %e, "pruning what no deployment needs failed");
        }
    }
}

/// What a deployment needs from this agent; `bool`: its namespace is one the listener
/// serves (a deployment left in one it no longer serves fails rather than runs).
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    /// Tear it down, then confirm it is gone.
    Delete,
    /// Claim the revision, then deploy it.
    Claim(DesiredRevision, bool),
    /// Deploy the revision this agent already holds.
    Deploy(DesiredRevision, bool),
    /// Check that the deployed revision still runs (and adopt it after a restart).
    Keep(DesiredRevision),
    /// Claim the source revision (again, as its holder after a restart), then build it.
    Build(DesiredRevision),
    /// Claim the source revision, then fail its build: this mode does not build.
    RefuseBuild(DesiredRevision),
}

/// The work each deployment of `state` needs from agent `agent_id`, in the state's
/// order; deployments that need nothing of it (held by another agent, failed) are left
/// out. A revision waiting for a build is built, or failed at once when the agent
/// `refuses_builds`. A pure function of the state: every mode runs what it decides
/// through its [`Sink`].
pub fn plan<'s>(
    state: &'s DesiredState,
    agent_id: &str,
    refuses_builds: bool,
) -> Vec<(&'s DesiredDeployment, Work)> {
    state
        .deployments
        .iter()
        .filter_map(|d| {
            let served = d
                .namespace
                .as_ref()
                .is_some_and(|ns| state.namespaces.contains(ns));
            let work = match (&d.revision, d.deleting) {
                (_, true) => Work::Delete,
                (Some(rev), false) => match rev.status {
                    RevisionStatus::AwaitingDeploy => Work::Claim(rev.clone(), served),
                    RevisionStatus::Deploying if rev.lease_holder.as_deref() == Some(agent_id) => {
                        Work::Deploy(rev.clone(), served)
                    }
                    RevisionStatus::Deployed if served => Work::Keep(rev.clone()),
                    // Its source is not uploaded yet.
                    RevisionStatus::AwaitingBuild if rev.build.is_none() => return None,
                    RevisionStatus::AwaitingBuild if refuses_builds => {
                        Work::RefuseBuild(rev.clone())
                    }
                    RevisionStatus::AwaitingBuild => Work::Build(rev.clone()),
                    RevisionStatus::Building
                        if rev.lease_holder.as_deref() == Some(agent_id) && !refuses_builds =>
                    {
                        Work::Build(rev.clone())
                    }
                    _ => return None,
                },
                (None, false) => return None,
            };
            Some((d, work))
        })
        .collect()
}

impl Work {
    fn doing(&self) -> Doing {
        match self {
            Work::Delete => Doing::Teardown,
            Work::Build(rev) => Doing::Build(rev.id),
            _ => Doing::Other,
        }
    }

    /// The revision the work is about (none for a teardown).
    fn revision(&self) -> Option<Uuid> {
        match self {
            Work::Delete => None,
            Work::Claim(rev, _)
            | Work::Deploy(rev, _)
            | Work::Keep(rev)
            | Work::Build(rev)
            | Work::RefuseBuild(rev) => Some(rev.id),
        }
    }

    async fn run(self, context: &Context, d: &DesiredDeployment) {
        let control = &context.control;
        match self {
            Work::Delete => match context.sink.delete(d).await {
                Ok(()) => match control.deleted(d.id).await {
                    Ok(_) | Err(CallError::Refused { status: 404, .. }) => {
                        tracing::info!(deployment = %d.id, name = %d.name, "deleted");
                    }
                    Err(e) => tracing::warn!(error = %e, "confirming a deletion failed"),
                },
                Err(e) => tracing::warn!(error = %e, deployment = %d.id, "teardown failed"),
            },
            Work::Claim(rev, served) => match control.claim(rev.id).await {
                Ok(_) => deploy_and_report(context, d, &rev, served).await,
                // Another replica won, or the revision moved on: the next state says.
                Err(e) => tracing::debug!(error = %e, revision = %rev.id, "claim not taken"),
            },
            Work::Deploy(rev, served) => deploy_and_report(context, d, &rev, served).await,
            Work::Build(rev) => {
                if let Err(e) = control.claim(rev.id).await {
                    tracing::debug!(error = %e, revision = %rev.id, "claim not taken");
                    return;
                }
                let outcome = build(context, d, &rev).await;
                // The build's lines come before the report's in the logs.
                context.logs.flush().await;
                let report = match &outcome {
                    Ok(image) => {
                        control
                            .report(rev.id, ReportStatus::Built, None, Some(image.clone()))
                            .await
                    }
                    Err(f) => {
                        control
                            .report(rev.id, ReportStatus::BuildFailed, Some(f), None)
                            .await
                    }
                };
                match (report, outcome) {
                    (Ok(_), Ok(image)) => println!(
                        "hostplane listener: deployment {} ({}) revision {} built: {image}",
                        d.name, d.id, rev.id
                    ),
                    (Ok(_), Err(f)) => failed(d, rev.id, &f),
                    (Err(e), _) => {
                        tracing::warn!(error = %e, revision = %rev.id, "the report was refused")
                    }
                }
            }
            Work::RefuseBuild(rev) => {
                let Some(f) = context.build_refusal() else {
                    return;
                };
                if let Err(e) = control.claim(rev.id).await {
                    tracing::debug!(error = %e, revision = %rev.id, "claim not taken");
                    return;
                }
                match control
                    .report(rev.id, ReportStatus::BuildFailed, Some(&f), None)
                    .await
                {
                    Ok(_) => failed(d, rev.id, &f),
                    Err(e) => {
                        tracing::warn!(error = %e, revision = %rev.id, "the report was refused")
                    }
                }
            }
            Work::Keep(rev) => match context.deploy(d, &rev).await {
                Ok(address) => announce(&context.announced, d, rev.id, &address),
                Err(f) => {
                    tracing::warn!(deployment = %d.id, reason = %f.reason, message = %f.message,
                                   "the deployed revision is not running")
                }
            },
        }
    }
}

/// Builds a source revision this agent holds: waits for a free build slot, then
/// prepares the source and has the mode build it within the build timeout. The
/// image, or why there is none (also sent as the build log's last line).
async fn build(
    context: &Context,
    d: &DesiredDeployment,
    rev: &DesiredRevision,
) -> Result<String, Failure> {
    let builds = &context.builds;
    let log = BuildLog {
        logs: context.logs.clone(),
        deployment: d.id,
        revision: rev.id,
    };
    // The time limit starts once the build has a slot.
    let _slot = match builds.slots.try_acquire() {
        Ok(slot) => slot,
        Err(_) => {
            log.line("INFO", "Waiting for a free build slot").await;
            builds
                .slots
                .acquire()
                .await
                .map_err(|e| Failure::new("BuildFailed", e.to_string()))?
        }
    };
    let work = async {
        log.line("INFO", format!("Building revision {}", rev.id))
            .await;
        let source =
            crate::builds::prepare(&context.control, d, rev, &builds.settings, &log).await?;
        let job = crate::builds::Job {
            deployment: d,
            revision: rev,
            source: &source,
            log: &log,
        };
        context.sink.build(job).await
    };
    let timeout = builds.settings.timeout;
    // A panic fails the build rather than leaving it BUILDING under a renewed lease.
    let work = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(work));
    let outcome = match tokio::time::timeout(timeout, work).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) => Err(Failure::new(
            "BuildFailed",
            "the agent's build task panicked (a bug: see the agent's log)",
        )),
        Err(_) => Err(Failure::new(
            "BuildTimeout",
            format!("the build did not finish within {timeout:?}"),
        )),
    };
    match &outcome {
        Ok(image) => log.line("INFO", format!("Built {image}")).await,
        Err(f) => {
            log.line("ERROR", format!("{}: {}", f.reason, f.message))
                .await
        }
    }
    outcome
}

/// Fails the build of `revision`, stopped because a newer revision superseded it.
async fn cancelled(control: ControlPlane, revision: Uuid) {
    let f = Failure::new("BuildCancelled", "a newer revision superseded this build");
    if let Err(e) = control
        .report(revision, ReportStatus::BuildFailed, Some(&f), None)
        .await
    {
        tracing::debug!(error = %e, %revision, "reporting a cancelled build");
    }
}

/// Prints that a revision failed.
fn failed(d: &DesiredDeployment, revision: Uuid, f: &Failure) {
    println!(
        "hostplane listener: deployment {} ({}) revision {revision} failed: {}: {}",
        d.name, d.id, f.reason, f.message
    );
}

/// Prints where a deployment answers, once per revision.
fn announce(announced: &Announced, d: &DesiredDeployment, revision: Uuid, address: &str) {
    let first = announced
        .lock()
        .map(|mut a| a.insert((d.id, revision)))
        .unwrap_or(false);
    if first {
        println!(
            "hostplane listener: deployment {} ({}) answers at {address}",
            d.name, d.id
        );
    }
}

/// The deployments among `found` (those something is left of here) that are not in
/// `keep`: deleted while the agent was away, so what is left of them goes.
pub fn left_behind(found: impl IntoIterator<Item = Uuid>, keep: &HashSet<Uuid>) -> BTreeSet<Uuid> {
    found.into_iter().filter(|id| !keep.contains(id)).collect()
}

/// The image a revision runs: a revision without one (a source revision not built yet)
/// cannot be deployed by any mode.
pub fn image_of(rev: &DesiredRevision) -> Result<&str, Failure> {
    rev.image
        .as_deref()
        .ok_or_else(|| Failure::new("NoImage", "the revision has no image to run"))
}

async fn deploy_and_report(
    context: &Context,
    d: &DesiredDeployment,
    rev: &DesiredRevision,
    served: bool,
) {
    let sink = context.sink.as_ref();
    let outcome = if !served {
        Err(Failure::new(
            "NamespaceNotServed",
            format!(
                "namespace {:?} is not one of the listener's k8s_namespaces",
                d.namespace.as_deref().unwrap_or_default()
            ),
        ))
    } else if let Err(refused) = crate::spec::check(d)
        .and_then(|()| image_of(rev).map(drop))
        .and_then(|()| sink.check(d))
    {
        // Nothing is written for a deployment that no mode, or not this one, can run.
        Err(refused)
    } else {
        context.deploy(d, rev).await
    };
    context.logs.flush().await;
    let report = match &outcome {
        Ok(_) => {
            context
                .control
                .report(rev.id, ReportStatus::Deployed, None, None)
                .await
        }
        Err(f) => {
            context
                .control
                .report(rev.id, ReportStatus::DeployFailed, Some(f), None)
                .await
        }
    };
    match (outcome, report) {
        (Ok(address), Ok(_)) => announce(&context.announced, d, rev.id, &address),
        (Err(f), Ok(_)) => failed(d, rev.id, &f),
        (_, Err(e)) => tracing::warn!(error = %e, revision = %rev.id, "the report was refused"),
    }
}

/// Sends heartbeats for ever, at the interval the control plane asks for.
async fn heartbeats(control: ControlPlane, sink: Arc<dyn Sink>) {
    let mut every = Duration::from_secs(10);
    loop {
        let beat = Heartbeat {
            protocol_version: PROTOCOL_VERSION,
            agent_id: control.agent_id.clone(),
            agent_version: concat!("hostplane-listener/", env!("CARGO_PKG_VERSION")).to_owned(),
            mode: sink.mode().to_owned(),
            cluster: sink.facts().await,
            deployments: sink.observe().await,
        };
        match control.heartbeat(&beat).await {
            Ok(answer) => {
                every = Duration::from_secs(answer.heartbeat_interval_seconds.max(1));
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Bytes of messages in one batch, well under the control plane's default body limit
/// (1 MiB).
const BATCH_BYTES: usize = 256 * 1024;

/// Batches log lines (up to the protocol's limit and [`BATCH_BYTES`], or whatever came
/// within half a second) and sends them; lines of deployments that are gone are dropped.
async fn ship_logs(control: ControlPlane, mut rx: tokio::sync::mpsc::Receiver<Shipped>) {
    while let Some(first) = rx.recv().await {
        let mut flushed = Vec::new();
        let mut batch = Vec::new();
        let mut size = 0;
        let mut next = Some(first);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Some(item) = next.take() {
            match item {
                Shipped::Line(line) => {
                    size += line.message.len();
                    batch.push(line);
                }
                // Whoever waits is answered once what came before is sent.
                Shipped::Flush(done) => {
                    flushed.push(done);
                    break;
                }
            }
            if batch.len() >= MAX_LOG_BATCH || size >= BATCH_BYTES {
                break;
            }
            next = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .ok()
                .flatten();
        }
        send_batch(&control, batch).await;
        for done in flushed {
            let _ = done.send(());
        }
    }
}

/// Sends one batch, retrying a while; lines of deployments that are gone are dropped.
async fn send_batch(control: &ControlPlane, mut batch: Vec<LogLine>) {
    if batch.is_empty() {
        return;
    }
    let mut tries = 0;
    loop {
        match control.logs(batch.clone()).await {
            Ok(_) => break,
            Err(CallError::Refused { status: 404, .. }) => {
                // A deployment of the batch is gone: send the rest one by one.
                for line in batch.drain(..) {
                    let _ = control.logs(vec![line]).await;
                }
                break;
            }
            Err(e) if tries < 5 => {
                tries += 1;
                tracing::debug!(error = %e, "sending logs failed; retrying");
                tokio::time::sleep(Duration::from_secs(1 << tries)).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, lines = batch.len(), "dropping log lines");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests;
