//! A listener agent written for tests: it speaks the data-plane protocol over plain
//! HTTP, either one call at a time or as a scripted loop that plays a cluster (claims
//! what waits, "builds" and "deploys" it, sends log lines, confirms deletions).

use super::{exchange, http};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// One agent replica of a listener.
#[derive(Clone)]
pub struct Agent {
    pub port: u16,
    pub listener: String,
    pub key: String,
    pub id: String,
}

/// The image a scripted build reports.
pub const BUILT_IMAGE: &str = "registry.test/built/agent@sha256:\
    1111111111111111111111111111111111111111111111111111111111111111";

impl Agent {
    pub fn new(port: u16, listener: &str, key: &str, id: &str) -> Agent {
        Agent {
            port,
            listener: listener.to_owned(),
            key: key.to_owned(),
            id: id.to_owned(),
        }
    }

    fn path(&self, rest: &str) -> String {
        format!("/dataplane/v1/listeners/{}{rest}", self.listener)
    }

    /// A data-plane call with this agent's key: status and JSON body.
    pub fn call(&self, method: &str, rest: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let (status, text) = http(
            self.port,
            method,
            &self.path(rest),
            &[
                ("X-Api-Key", &self.key),
                ("Content-Type", "application/json"),
            ],
            &body,
        );
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub fn heartbeat(&self, observed: Value) -> (u16, Value) {
        self.call(
            "POST",
            "/heartbeat",
            Some(json!({
                "protocol_version": 1, "agent_id": self.id, "agent_version": "test-agent/1.0",
                "mode": "scripted", "cluster": {"kind": "test"}, "deployments": observed,
            })),
        )
    }

    /// The desired state; panics unless 200.
    pub fn desired(&self, after: i64, wait: u64) -> Value {
        let (status, body) = self.call(
            "GET",
            &format!("/desired?protocol_version=1&after={after}&wait={wait}"),
            None,
        );
        assert_eq!(status, 200, "{body}");
        body
    }

    pub fn claim(&self, revision: &str) -> (u16, Value) {
        self.call(
            "POST",
            &format!("/revisions/{revision}/claim"),
            Some(json!({"protocol_version": 1, "agent_id": self.id})),
        )
    }

    /// A status report with extra fields (`reason`, `message`, `image`).
    pub fn report(&self, revision: &str, status: &str, extra: Value) -> (u16, Value) {
        let mut body = json!({"protocol_version": 1, "agent_id": self.id, "status": status});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        self.call("POST", &format!("/revisions/{revision}/status"), Some(body))
    }

    pub fn deleted(&self, deployment: &str) -> (u16, Value) {
        self.call(
            "POST",
            &format!("/deployments/{deployment}/deleted"),
            Some(json!({"protocol_version": 1, "agent_id": self.id})),
        )
    }

    pub fn logs(&self, lines: Value) -> (u16, Value) {
        self.call(
            "POST",
            "/logs",
            Some(json!({"protocol_version": 1, "lines": lines})),
        )
    }

    /// The build source of a revision this agent holds: status and bytes.
    pub fn source(&self, revision: &str) -> (u16, Vec<u8>) {
        let path = self.path(&format!(
            "/revisions/{revision}/source?protocol_version=1&agent_id={}",
            self.id
        ));
        exchange(self.port, "GET", &path, &[("X-Api-Key", &self.key)], b"").unwrap()
    }

    /// Runs the scripted loop on a thread until `stop` is set. The images in `failing`
    /// are the ones the test wants to fail to deploy (as a cluster would report an image
    /// it cannot pull); every other image deploys.
    pub fn spawn_scripted(self, stop: Arc<AtomicBool>, failing: Vec<String>) -> JoinHandle<()> {
        std::thread::spawn(move || {
            let mut after = -1;
            while !stop.load(Ordering::Relaxed) {
                self.heartbeat(json!([]));
                let state = self.desired(after, 1);
                after = state["generation"].as_i64().unwrap();
                for d in state["deployments"].as_array().unwrap() {
                    self.reconcile(d, &failing);
                }
            }
        })
    }

    /// One step towards what `d` asks: delete, build or deploy.
    fn reconcile(&self, d: &Value, failing: &[String]) {
        let dep = d["id"].as_str().unwrap();
        if d["deleting"] == true {
            self.log(
                dep,
                d["active_revision_id"].as_str(),
                "deploy",
                "tearing down",
            );
            self.deleted(dep);
            return;
        }
        let Some(rev) = d["revision"].as_object() else {
            return;
        };
        let rid = rev["id"].as_str().unwrap();
        let image = rev["image"].as_str().unwrap_or_default();
        match rev["status"].as_str().unwrap() {
            "AWAITING_BUILD" => {
                if self.claim(rid).0 != 200 {
                    return;
                }
                let (status, bytes) = self.source(rid);
                let gzip = status == 200 && bytes.starts_with(&[0x1f, 0x8b]);
                self.log(dep, Some(rid), "build", "Step 1/2 : FROM scratch");
                if gzip {
                    self.log(dep, Some(rid), "build", "Step 2/2 : pushed");
                    self.report(rid, "BUILT", json!({"image": BUILT_IMAGE}));
                } else {
                    let why = format!("source answered {status}");
                    self.report(
                        rid,
                        "BUILD_FAILED",
                        json!({"reason": "NoSource", "message": why}),
                    );
                }
            }
            "AWAITING_DEPLOY" => {
                if self.claim(rid).0 != 200 {
                    return;
                }
                self.log(dep, Some(rid), "deploy", &format!("pulling {image}"));
                if failing.iter().any(|f| f == image) {
                    self.log(dep, Some(rid), "deploy", "ERROR back-off pulling image");
                    self.report(
                        rid,
                        "DEPLOY_FAILED",
                        json!({"reason": "ImagePullBackOff", "message": format!("cannot pull {image}")}),
                    );
                } else {
                    self.log(dep, Some(rid), "deploy", "Application startup complete.");
                    self.report(rid, "DEPLOYED", json!({}));
                }
            }
            _ => {}
        }
    }

    fn log(&self, dep: &str, rev: Option<&str>, kind: &str, message: &str) {
        let Some(rev) = rev else {
            return;
        };
        let level = if message.starts_with("ERROR") {
            "ERROR"
        } else {
            "INFO"
        };
        self.logs(json!([{
            "deployment_id": dep, "revision_id": rev, "kind": kind,
            "timestamp": chrono::Utc::now().to_rfc3339(), "level": level, "message": message,
        }]));
    }
}

/// A listener with namespace `ns` and a listener key for it: `(listener id, key)`.
pub fn listener_with_key(
    server: &super::Server,
    db: &super::Db,
    compute_id: &str,
) -> (String, String) {
    let (status, body) = server.call(
        "POST",
        "/v2/listeners",
        Some(json!({
            "compute_type": "k8s", "compute_id": compute_id,
            "compute_config": {"k8s_namespaces": ["ns"]},
        })),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let key = super::admin(db, &["api-key", "create", "--listener", &id]);
    assert_eq!(key["listener_id"], id.as_str());
    (id, key["key"].as_str().unwrap().to_owned())
}
