//! The agent loop every mode shares (`agent::runner`), driven against the real server
//! with a sink whose work the test holds and releases.

#![allow(clippy::unwrap_used)]

mod support;

use agent::runner::{Failure, Rollout, Sink};
use protocol::{DesiredDeployment, Observed};
use serde_json::json;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{agent::listener_with_key, sqlite_db, Server};
use tokio::sync::{mpsc, Semaphore};
use uuid::Uuid;

/// A sink that records each `deploy` call and holds every call after the first for a
/// revision (the check that what is deployed still runs) until the test adds a permit;
/// and each `build` call, held until a permit too, which then gives an image.
struct HeldSink {
    calls: mpsc::UnboundedSender<Uuid>,
    seen: Mutex<HashSet<Uuid>>,
    gate: Arc<Semaphore>,
}

#[async_trait::async_trait]
impl Sink for HeldSink {
    fn mode(&self) -> &'static str {
        "held"
    }
    async fn facts(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }
    async fn observe(&self) -> Vec<Observed> {
        Vec::new()
    }
    async fn deploy(&self, rollout: Rollout<'_>) -> Result<String, Failure> {
        let revision = rollout.revision;
        let again = !self.seen.lock().unwrap().insert(revision.id);
        self.calls.send(revision.id).unwrap();
        if again {
            self.gate.acquire().await.unwrap().forget();
        }
        Ok("http://127.0.0.1:9".into())
    }
    async fn build(&self, job: agent::builds::Job<'_>) -> Result<String, Failure> {
        self.calls.send(job.revision.id).unwrap();
        self.gate.acquire().await.unwrap().forget();
        Ok(format!("registry.test/built@sha256:{}", "c".repeat(64)))
    }
    async fn delete(&self, _: &DesiredDeployment) -> anyhow::Result<()> {
        Ok(())
    }
    async fn prune(&self, _: &HashSet<Uuid>, _: &[String]) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The shared runner against `server` as `listener`'s agent, with a [`HeldSink`]: the
/// task, the ids its sink was asked to deploy, and the gate of its held calls.
fn run_held(
    server: &Server,
    listener: &str,
    key: &str,
    builds: agent::builds::BuildSettings,
) -> (
    tokio::task::JoinHandle<()>,
    mpsc::UnboundedReceiver<Uuid>,
    Arc<Semaphore>,
) {
    let (tx, calls) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(0));
    let sink = HeldSink {
        calls: tx,
        seen: Mutex::default(),
        gate: gate.clone(),
    };
    let control =
        agent::control::ControlPlane::new(&server.url(), listener.parse().unwrap(), key, "held")
            .unwrap();
    let task = tokio::spawn(agent::runner::run(control, Arc::new(sink), builds));
    (task, calls, gate)
}

async fn next_call(calls: &mut mpsc::UnboundedReceiver<Uuid>, what: &str) -> Uuid {
    tokio::time::timeout(Duration::from_secs(20), calls.recv())
        .await
        .unwrap_or_else(|_| panic!("the agent did not {what} within 20 s"))
        .unwrap()
}

/// A revision created while its deployment's task is busy (here: the check after
/// `DEPLOYED` of the revision before) starts as soon as that task ends, although the
/// task's end changes nothing the long-poll would wake for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_skipped_while_busy_starts_when_the_task_ends() {
    let db = sqlite_db();
    let server = Server::start(&db);
    let (listener, key) = listener_with_key(&server, &db, "held");
    let (status, dep) = server.call(
        "POST",
        "/v2/deployments",
        Some(json!({"name": "held", "source": "external_docker",
                    "source_config": {"listener_id": listener},
                    "source_revision_config": {"image_uri": "img:1"}, "secrets": []})),
    );
    assert_eq!(status, 201, "{dep}");
    let dep_id = dep["id"].as_str().unwrap().to_owned();
    let first: Uuid = dep["latest_revision_id"].as_str().unwrap().parse().unwrap();

    let (agent, mut calls, gate) = run_held(&server, &listener, &key, Default::default());

    assert_eq!(
        next_call(&mut calls, "deploy the first revision").await,
        first
    );
    // DEPLOYED wakes the loop, which checks the revision again: that check is held.
    assert_eq!(
        next_call(&mut calls, "check the deployed revision").await,
        first
    );
    let polls = || server.log_text().matches("/desired").count();
    let before = polls();
    let (status, patched) = server.call(
        "PATCH",
        &format!("/v2/deployments/{dep_id}"),
        Some(json!({"source_revision_config": {"image_uri": "img:2"}})),
    );
    assert_eq!(status, 200, "{patched}");
    let second: Uuid = patched["latest_revision_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // The loop has read the new revision (its long-poll answered) while the deployment
    // was busy.
    support::wait_until("the agent to read the new revision", 20, || {
        polls() > before
    });
    let released = Instant::now();
    gate.add_permits(1);
    assert_eq!(
        next_call(&mut calls, "deploy the second revision").await,
        second
    );
    let took = released.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "the second revision started {took:?} after the busy task ended (skipped work \
         waited for the next change or the long-poll's 30 s)"
    );
    agent.abort();
}

/// A `resource_spec` the API accepts but no mode could write validly (a replica count
/// past 32 bits, here) fails the revision with a reason naming the field, and the mode
/// is never asked to deploy it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_specs_fail_before_any_mode_sees_them() {
    let db = sqlite_db();
    let server = Server::start(&db);
    let (listener, key) = listener_with_key(&server, &db, "refusing");
    let (status, dep) = server.call(
        "POST",
        "/v2/deployments",
        Some(json!({"name": "huge", "source": "external_docker",
                    "source_config": {"listener_id": listener,
                                      "resource_spec": {"min_scale": 3_000_000_000_i64}},
                    "source_revision_config": {"image_uri": "img:1"}, "secrets": []})),
    );
    assert_eq!(status, 201, "{dep}");
    let dep_id = dep["id"].as_str().unwrap().to_owned();
    let rev = dep["latest_revision_id"].as_str().unwrap().to_owned();
    let (agent, mut calls, _gate) = run_held(&server, &listener, &key, Default::default());
    support::wait_until("the revision to fail", 20, || {
        server.revision_status(&dep_id, &rev) == "DEPLOY_FAILED"
    });
    let (_, logs) = server.call(
        "POST",
        &format!("/v1/projects/{dep_id}/deploy_logs"),
        Some(json!({"order": "asc"})),
    );
    let lines: Vec<&str> = logs["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        lines,
        [format!(
            "Revision {rev} failed to deploy: InvalidResourceSpec: resource_spec.min_scale is \
             3000000000; replica counts are at most 2147483647"
        )]
    );
    assert!(calls.try_recv().is_err(), "the mode was asked to deploy it");
    agent.abort();
}

/// With one build slot, a second build waits for it (and says so in its log); a build
/// past the timeout fails with `BuildTimeout`, which frees the slot; the time limit
/// counts from the slot, so the waiting build gets its whole time and is built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_wait_for_a_slot_and_time_out() {
    let db = sqlite_db();
    let server = Server::start(&db);
    let (listener, key) = listener_with_key(&server, &db, "builder");
    let project = support::source::minimal_project();
    let mut revisions = Vec::new();
    for name in ["first", "second"] {
        let id = server.source_deployment(name)["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let rev = server.upload_source(&id, &project, "langgraph.json");
        revisions.push((id, rev));
    }
    let settings = agent::builds::BuildSettings {
        slots: 1,
        timeout: Duration::from_secs(3),
        dir: db.dir.0.join("builds"),
        ..Default::default()
    };
    let (task, mut builds, gate) = run_held(&server, &listener, &key, settings);
    let log = |(dep, rev): &(String, String)| server.revision_logs(dep, rev, "build_logs");
    let first_built = next_call(&mut builds, "start a build").await;
    let (held, waiting) = if first_built.to_string() == revisions[0].1 {
        (&revisions[0], &revisions[1])
    } else {
        (&revisions[1], &revisions[0])
    };
    support::wait_until("the second build to wait for the slot", 20, || {
        log(waiting).contains(&"Waiting for a free build slot".to_owned())
    });
    let second_built = next_call(&mut builds, "start the second build").await;
    assert_eq!(second_built.to_string(), waiting.1);
    // The held build ran out of time, which freed the slot.
    support::wait_until("the held build to fail", 20, || {
        server.revision_status(&held.0, &held.1) == "BUILD_FAILED"
    });
    assert_eq!(
        log(held).last().unwrap(),
        &format!(
            "Build of revision {} failed: BuildTimeout: the build did not finish within 3s",
            held.1
        )
    );
    gate.add_permits(1);
    support::wait_until("the waiting build to be deployed", 20, || {
        server.revision_status(&waiting.0, &waiting.1) == "DEPLOYED"
    });
    let lines = log(waiting);
    let waited = lines
        .iter()
        .position(|l| l == "Waiting for a free build slot");
    let started = lines
        .iter()
        .position(|l| *l == format!("Building revision {}", waiting.1));
    assert!(waited.is_some() && started > waited, "{lines:?}");
    task.abort();
}
