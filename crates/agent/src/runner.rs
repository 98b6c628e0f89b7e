//! The agent loop every mode shares: heartbeat, long-poll the whole desired state,
//! claim what waits, hand the work to the mode's [`Sink`], report, ship logs, confirm
//! deletions. Level-triggered: each answer describes everything, so a restart, a lost
//! connection or a missed change costs nothing but time. The control plane being down
//! only makes the loop retry with backoff; nothing is ever removed because of it.

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
pub struct LogSink(tokio::sync::mpsc::Sender<LogLine>);

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
        let _ = self.0.send(line).await;
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
    /// Brings `deployment` to run `revision` (adopting what already runs for it after a
    /// restart); the address it answers at, once it does.
    async fn deploy(
        &self,
        deployment: &DesiredDeployment,
        revision: &DesiredRevision,
        logs: LogSink,
    ) -> Result<String, Failure>;
    /// Why this mode does not build source revisions (`langgraph deploy --remote`);
    /// `None` for a mode that builds them. An agent fails such a revision at once with
    /// this reason instead of leaving it waiting.
    fn build_refusal(&self) -> Option<Failure> {
        Some(Failure::new(
            "BuildNotSupported",
            format!(
                "the listener's {} mode does not build images from source yet: build the \
                 image yourself and deploy it with `langgraph deploy --image-uri IMAGE`",
                self.mode()
            ),
        ))
    }
    /// Removes everything of the deployment.
    async fn delete(&self, deployment: &DesiredDeployment) -> anyhow::Result<()>;
    /// Removes what belongs to deployments that are not in `keep` (deleted while the
    /// agent was away), in the listener's `namespaces`.
    async fn prune(&self, keep: &HashSet<Uuid>, namespaces: &[String]) -> anyhow::Result<()>;
}

/// How long one desired-state long-poll may wait.
const WAIT: Duration = Duration::from_secs(30);

/// Runs the agent until the process ends.
pub async fn run(control: ControlPlane, sink: Arc<dyn Sink>) {
    let (tx, rx) = tokio::sync::mpsc::channel(10_000);
    let logs = LogSink(tx);
    tokio::spawn(ship_logs(control.clone(), rx));
    tokio::spawn(heartbeats(control.clone(), sink.clone()));
    let busy: Busy = Arc::default();
    let announced: Announced = Arc::default();
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
        reconcile(&control, &sink, &logs, &busy, &announced, &finished, &state).await;
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

/// The task working on each deployment, and whether it is a teardown.
type Busy = Arc<Mutex<HashMap<Uuid, (tokio::task::AbortHandle, bool)>>>;
/// The (deployment, revision) pairs whose address was printed.
type Announced = Arc<Mutex<HashSet<(Uuid, Uuid)>>>;

/// Starts the work the state asks for; each deployment has at most one task at a time,
/// except that a deletion stops whatever else was under way for its deployment.
async fn reconcile(
    control: &ControlPlane,
    sink: &Arc<dyn Sink>,
    logs: &LogSink,
    busy: &Busy,
    announced: &Announced,
    finished: &Wake,
    state: &DesiredState,
) {
    let keep: HashSet<Uuid> = state.deployments.iter().map(|d| d.id).collect();
    let refuses_builds = sink.build_refusal().is_some();
    for (d, work) in plan(state, &control.agent_id, refuses_builds) {
        let Ok(mut tasks) = busy.lock() else {
            continue;
        };
        let teardown = matches!(work, Work::Delete);
        match tasks.get(&d.id) {
            Some((running, false)) if teardown => running.abort(),
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
        let (control, sink, logs, busy2, announced, finished, d) = (
            control.clone(),
            sink.clone(),
            logs.clone(),
            busy.clone(),
            announced.clone(),
            finished.clone(),
            d.clone(),
        );
        let task = tokio::spawn(async move {
            work.run(&control, sink.as_ref(), logs, &announced, &d)
                .await;
            if let Ok(mut b) = busy2.lock() {
                // Only its own entry: a teardown may have replaced it.
                if b.get(&d.id)
                    .is_some_and(|(h, t)| *t == teardown && !h.is_finished())
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
        tasks.insert(id, (task.abort_handle(), teardown));
    }
    // Only when no task works on a deployment outside `keep`: such a task (a deploy of a
    // deployment deleted meanwhile) may be creating what pruning would remove. Tasks of
    // kept deployments (the check after DEPLOYED runs every round) do not stop it.
    let clear = busy
        .lock()
        .map(|b| b.keys().all(|id| keep.contains(id)))
        .unwrap_or(false);
    if clear {
        if let Err(e) = sink.prune(&keep, &state.namespaces).await {
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
    /// Claim the source revision, then fail its build: this mode does not build.
    RefuseBuild(DesiredRevision),
}

/// The work each deployment of `state` needs from agent `agent_id`, in the state's
/// order; deployments that need nothing of it (held by another agent, failed) are left
/// out, and so are revisions waiting for a build unless the agent `refuses_builds`. A
/// pure function of the state: every mode runs what it decides through its [`Sink`].
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
                    RevisionStatus::AwaitingBuild if refuses_builds => {
                        Work::RefuseBuild(rev.clone())
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
    async fn run(
        self,
        control: &ControlPlane,
        sink: &dyn Sink,
        logs: LogSink,
        announced: &Announced,
        d: &DesiredDeployment,
    ) {
        match self {
            Work::Delete => match sink.delete(d).await {
                Ok(()) => match control.deleted(d.id).await {
                    Ok(_) | Err(CallError::Refused { status: 404, .. }) => {
                        tracing::info!(deployment = %d.id, name = %d.name, "deleted");
                    }
                    Err(e) => tracing::warn!(error = %e, "confirming a deletion failed"),
                },
                Err(e) => tracing::warn!(error = %e, deployment = %d.id, "teardown failed"),
            },
            Work::Claim(rev, served) => match control.claim(rev.id).await {
                Ok(_) => deploy_and_report(control, sink, logs, announced, d, &rev, served).await,
                // Another replica won, or the revision moved on: the next state says.
                Err(e) => tracing::debug!(error = %e, revision = %rev.id, "claim not taken"),
            },
            Work::Deploy(rev, served) => {
                deploy_and_report(control, sink, logs, announced, d, &rev, served).await
            }
            Work::RefuseBuild(rev) => {
                let Some(f) = sink.build_refusal() else {
                    return;
                };
                if let Err(e) = control.claim(rev.id).await {
                    tracing::debug!(error = %e, revision = %rev.id, "claim not taken");
                    return;
                }
                let report = control.report(
                    rev.id,
                    ReportStatus::BuildFailed,
                    Some(f.reason.clone()),
                    Some(f.message.clone()),
                );
                match report.await {
                    Ok(_) => println!(
                        "hostplane listener: deployment {} ({}) revision {} failed: {}: {}",
                        d.name, d.id, rev.id, f.reason, f.message
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, revision = %rev.id, "the report was refused")
                    }
                }
            }
            Work::Keep(rev) => match sink.deploy(d, &rev, logs).await {
                Ok(address) => announce(announced, d, rev.id, &address),
                Err(f) => {
                    tracing::warn!(deployment = %d.id, reason = %f.reason, message = %f.message,
                                   "the deployed revision is not running")
                }
            },
        }
    }
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
    control: &ControlPlane,
    sink: &dyn Sink,
    logs: LogSink,
    announced: &Announced,
    d: &DesiredDeployment,
    rev: &DesiredRevision,
    served: bool,
) {
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
        sink.deploy(d, rev, logs).await
    };
    let report = match &outcome {
        Ok(_) => {
            control
                .report(rev.id, ReportStatus::Deployed, None, None)
                .await
        }
        Err(f) => {
            control
                .report(
                    rev.id,
                    ReportStatus::DeployFailed,
                    Some(f.reason.clone()),
                    Some(f.message.clone()),
                )
                .await
        }
    };
    match (outcome, report) {
        (Ok(address), Ok(_)) => announce(announced, d, rev.id, &address),
        (Err(f), Ok(_)) => {
            println!(
                "hostplane listener: deployment {} ({}) revision {} failed: {}: {}",
                d.name, d.id, rev.id, f.reason, f.message
            );
        }
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
async fn ship_logs(control: ControlPlane, mut rx: tokio::sync::mpsc::Receiver<LogLine>) {
    while let Some(first) = rx.recv().await {
        let mut size = first.message.len();
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while batch.len() < MAX_LOG_BATCH && size < BATCH_BYTES {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(line)) => {
                    size += line.message.len();
                    batch.push(line);
                }
                _ => break,
            }
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
}

#[cfg(test)]
mod tests {
    use super::{image_of, plan, Work};
    use protocol::DesiredState;
    use serde_json::json;

    /// A deployment `n` in `namespace`, its revision in `status` held by `holder`.
    fn deployment(
        n: u8,
        namespace: &str,
        status: Option<&str>,
        holder: Option<&str>,
        deleting: bool,
    ) -> serde_json::Value {
        json!({
            "id": format!("00000000-0000-0000-0000-0000000000{n:02}"), "name": format!("d{n}"),
            "namespace": namespace, "deployment_type": null, "status": "READY",
            "deleting": deleting, "active_revision_id": null, "resource_spec": null,
            "secret_references": null, "env": [],
            "revision": status.map(|s| json!({
                "id": format!("10000000-0000-0000-0000-0000000000{n:02}"), "status": s,
                "image": "i", "build": null, "lease_holder": holder,
                "created_at": "2026-01-01T00:00:00Z",
            })),
        })
    }

    #[test]
    fn each_deployment_gets_the_work_its_state_asks_for() {
        let state: DesiredState = serde_json::from_value(json!({
            "protocol_version": 1, "generation": 3, "namespaces": ["ns"],
            "listener_id": "20000000-0000-0000-0000-000000000000",
            "deployments": [
                deployment(1, "ns", Some("AWAITING_DEPLOY"), None, false),
                deployment(2, "other", Some("AWAITING_DEPLOY"), None, false),
                deployment(3, "ns", Some("DEPLOYING"), Some("me"), false),
                deployment(4, "ns", Some("DEPLOYING"), Some("someone else"), false),
                deployment(5, "ns", Some("DEPLOYED"), Some("me"), false),
                deployment(6, "other", Some("DEPLOYED"), None, false),
                deployment(7, "ns", Some("AWAITING_BUILD"), None, false),
                deployment(8, "ns", Some("DEPLOY_FAILED"), None, false),
                deployment(9, "ns", None, None, false),
                deployment(10, "ns", Some("DEPLOYING"), Some("someone else"), true),
            ],
        }))
        .unwrap();
        let planned = |refuses_builds| -> Vec<(String, Work)> {
            plan(&state, "me", refuses_builds)
                .into_iter()
                .map(|(d, w)| (d.name.clone(), w))
                .collect()
        };
        let rev = |i: usize| state.deployments[i].revision.clone().unwrap();
        let mut want = vec![
            ("d1".to_owned(), Work::Claim(rev(0), true)),
            ("d2".to_owned(), Work::Claim(rev(1), false)),
            ("d3".to_owned(), Work::Deploy(rev(2), true)),
            ("d5".to_owned(), Work::Keep(rev(4))),
            ("d10".to_owned(), Work::Delete),
        ];
        assert_eq!(planned(false), want);
        // An agent that cannot build fails the waiting build instead of ignoring it.
        want.insert(4, ("d7".to_owned(), Work::RefuseBuild(rev(6))));
        assert_eq!(planned(true), want);
    }

    #[test]
    fn a_revision_without_an_image_is_refused_for_every_mode() {
        let state: DesiredState = serde_json::from_value(json!({
            "protocol_version": 1, "generation": 1, "namespaces": ["ns"],
            "listener_id": "20000000-0000-0000-0000-000000000000",
            "deployments": [deployment(1, "ns", Some("AWAITING_DEPLOY"), None, false)],
        }))
        .unwrap();
        let mut rev = state.deployments[0].revision.clone().unwrap();
        assert_eq!(image_of(&rev).ok(), Some("i"));
        rev.image = None;
        let refused = image_of(&rev).unwrap_err();
        assert_eq!(
            (refused.reason.as_str(), refused.message.as_str()),
            ("NoImage", "the revision has no image to run")
        );
    }
}
