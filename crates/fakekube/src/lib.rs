//! A fake Kubernetes API server for tests, on 127.0.0.1 only. It implements what the
//! hostplane listener uses, with the real API's paths, bodies and status codes:
//! server-side apply (`PATCH` with `application/apply-patch+yaml`), get, list and delete
//! (one object or a collection, by label selector), pod logs (also followed), the service
//! proxy, and `/version`. A simulated kubelet and controllers make applied workloads
//! real enough to observe: Deployments and StatefulSets get pods (rolling over on a new
//! pod template), pods turn ready after a delay, statuses and PersistentVolumeClaims are
//! filled in, an `LGP` gets a Deployment and a Service as the official operator would
//! make them, with its status, and faults can be injected per image (image pull failure, crash loop,
//! unschedulable). Every request is logged with the authorization attributes Kubernetes
//! would check for it, so tests can assert exact request sequences and RBAC rules.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

mod controllers;
mod http;
use controllers::*;
use http::*;

/// The bearer token the fake accepts (written into [`FakeKube::kubeconfig`]).
pub const TOKEN: &str = "fake-kube-token";

/// A resource the fake serves.
struct Resource {
    /// `v1` for the core group, else `group/version`.
    api_version: &'static str,
    plural: &'static str,
    kind: &'static str,
    /// Whether `metadata.generation` moves when the spec changes.
    generation: bool,
}

/// One line per resource: API version, plural, kind, whether the generation moves.
#[rustfmt::skip]
const RESOURCES: &[Resource] = &[
    res("v1",                         "secrets",                  "Secret",                  false),
    res("v1",                         "services",                 "Service",                 false),
    res("v1",                         "pods",                     "Pod",                     false),
    res("v1",                         "persistentvolumeclaims",   "PersistentVolumeClaim",   false),
    res("apps/v1",                    "deployments",              "Deployment",              true),
    res("apps/v1",                    "statefulsets",             "StatefulSet",             true),
    res("autoscaling/v2",             "horizontalpodautoscalers", "HorizontalPodAutoscaler", true),
    res("apps.langchain.ai/v1alpha1", "lgps",                     "LGP",                     true),
    res("batch/v1",                   "jobs",                     "Job",                     true),
];

const fn res(
    api_version: &'static str,
    plural: &'static str,
    kind: &'static str,
    generation: bool,
) -> Resource {
    Resource {
        api_version,
        plural,
        kind,
        generation,
    }
}

impl Resource {
    fn api_version(&self) -> String {
        self.api_version.to_owned()
    }

    /// The API group and version (the core group is `""`).
    fn group_version(&self) -> (&'static str, &'static str) {
        self.api_version
            .split_once('/')
            .unwrap_or(("", self.api_version))
    }

    /// `deployments.apps`, as Kubernetes names a resource in messages.
    fn qualified(&self) -> String {
        match self.group_version() {
            ("", _) => self.plural.to_owned(),
            (group, _) => format!("{}.{group}", self.plural),
        }
    }
}

fn resource(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group_version() == (group, version) && r.plural == plural)
}

fn resource_of_kind(kind: &str) -> &'static Resource {
    RESOURCES
        .iter()
        .find(|r| r.kind == kind)
        .unwrap_or_else(|| unreachable!("the fake knows every kind it creates"))
}

/// What Kubernetes authorizes a request as: RBAC rules are written against these.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attributes {
    pub verb: String,
    pub group: String,
    /// The resource, with its subresource after a slash (`pods/log`, `services/proxy`).
    pub resource: String,
    pub namespace: String,
}

/// One request the fake answered.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    /// Empty for requests that need no authorization (`/version`) or that the fake
    /// could not route.
    pub attributes: Vec<Attributes>,
}

impl Logged {
    /// `METHOD path?query`, for asserting sequences.
    pub fn line(&self) -> String {
        if self.query.is_empty() {
            format!("{} {}", self.method, self.path)
        } else {
            format!("{} {}?{}", self.method, self.path, self.query)
        }
    }
}

/// A fault the kubelet plays for every container started from an image.
#[derive(Debug, Clone)]
pub enum Fault {
    /// The image cannot be pulled: `ErrImagePull`, then `ImagePullBackOff`.
    ImagePull,
    /// The container exits at once with this code after printing these lines, and
    /// ends in `CrashLoopBackOff` (a Job's pod, which is not restarted, in `Failed`).
    CrashLoop { exit_code: i32, logs: Vec<String> },
    /// No node can take the pod.
    Unschedulable,
    /// The pod runs and reports Ready, but its server's `/ok` answers 500 through the
    /// Service.
    Unhealthy,
}

struct Pod {
    started: Instant,
    logs: Vec<String>,
    /// Whether the image's start lines were written.
    started_logs: bool,
}

struct Cluster {
    namespaces: HashSet<String>,
    /// (api version, plural, namespace, name) → object.
    objects: BTreeMap<(String, String, String, String), Value>,
    resource_version: u64,
    faults: HashMap<String, Fault>,
    image_logs: HashMap<String, Vec<String>>,
    pods: HashMap<(String, String), Pod>,
    requests: Vec<Logged>,
    ready_after: Duration,
    /// Attributes the fake refuses with 403, as RBAC would.
    forbidden: Vec<Attributes>,
}

impl Cluster {
    fn next_version(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    fn key(r: &Resource, ns: &str, name: &str) -> (String, String, String, String) {
        (
            r.api_version(),
            r.plural.to_owned(),
            ns.to_owned(),
            name.to_owned(),
        )
    }

    fn of<'a>(&'a self, r: &Resource, ns: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        let (api, plural) = (r.api_version(), r.plural);
        self.objects
            .iter()
            .filter(move |((a, p, n, _), _)| *a == api && p == plural && n == ns)
            .map(|(_, v)| v)
    }

    fn insert(&mut self, r: &Resource, ns: &str, name: &str, mut obj: Value) {
        obj["metadata"]["resourceVersion"] = json!(self.next_version());
        self.objects.insert(Self::key(r, ns, name), obj);
    }

    /// Removes an object and what it owns (a workload's pods, an `LGP`'s objects).
    fn remove(&mut self, r: &Resource, ns: &str, name: &str) -> Option<Value> {
        let gone = self.objects.remove(&Self::key(r, ns, name))?;
        if r.plural == "pods" {
            self.pods.remove(&(ns.to_owned(), name.to_owned()));
        }
        let owned: Vec<(&'static Resource, String)> = self
            .objects
            .iter()
            .filter(|((_, _, n, _), o)| n == ns && owner(o) == Some((r.kind, name)))
            .filter_map(|((api, plural, _, child), _)| {
                let res = RESOURCES
                    .iter()
                    .find(|x| x.api_version() == *api && x.plural == plural)?;
                Some((res, child.clone()))
            })
            .collect();
        for (res, child) in owned {
            self.remove(res, ns, &child);
        }
        Some(gone)
    }
}

fn owner(obj: &Value) -> Option<(&str, &str)> {
    let o = obj["metadata"]["ownerReferences"].get(0)?;
    Some((o["kind"].as_str()?, o["name"].as_str()?))
}

/// The fake API server; it stops when dropped.
pub struct FakeKube {
    pub url: String,
    cluster: Arc<Mutex<Cluster>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl FakeKube {
    /// Starts a fake cluster with these namespaces on a free port of 127.0.0.1.
    pub async fn start(namespaces: &[&str]) -> std::io::Result<FakeKube> {
        let cluster = Arc::new(Mutex::new(Cluster {
            namespaces: namespaces.iter().map(|n| (*n).to_owned()).collect(),
            objects: BTreeMap::new(),
            resource_version: 1000,
            faults: HashMap::new(),
            image_logs: HashMap::new(),
            pods: HashMap::new(),
            requests: Vec::new(),
            ready_after: Duration::from_millis(300),
            forbidden: Vec::new(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let state = cluster.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move { serve(&state, method, uri, headers, body) }
            },
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let kubelet = tokio::spawn(kubelet(cluster.clone()));
        Ok(FakeKube {
            url,
            cluster,
            tasks: vec![server, kubelet],
        })
    }

    fn lock(&self) -> MutexGuard<'_, Cluster> {
        self.cluster.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes a kubeconfig that points at the fake into `dir`; its path.
    pub fn kubeconfig(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: fake\n  user:\n    token: {TOKEN}\ncontexts:\n- name: fake\n  \
             context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
             current-context: fake\n",
            self.url
        );
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// How long a started pod takes to turn ready.
    pub fn set_ready_after(&self, delay: Duration) {
        self.lock().ready_after = delay;
    }

    /// Every container started from `image` plays `fault` (`None`: runs normally again).
    pub fn set_fault(&self, image: &str, fault: Option<Fault>) {
        let mut c = self.lock();
        match fault {
            Some(f) => c.faults.insert(image.to_owned(), f),
            None => c.faults.remove(image),
        };
    }

    /// Lines every container of `image` prints when it starts.
    pub fn set_image_logs(&self, image: &str, lines: &[&str]) {
        let lines = lines.iter().map(|l| (*l).to_owned()).collect();
        self.lock().image_logs.insert(image.to_owned(), lines);
    }

    /// Appends a line to the logs of every running pod with a container of `image`.
    pub fn print(&self, image: &str, line: &str) {
        let mut c = self.lock();
        let names: Vec<(String, String)> = c
            .objects
            .iter()
            .filter(|((_, p, _, _), pod)| p == "pods" && images(pod).iter().any(|i| i == image))
            .map(|((_, _, ns, name), _)| (ns.clone(), name.clone()))
            .collect();
        for key in names {
            if let Some(pod) = c.pods.get_mut(&key) {
                pod.logs.push(line.to_owned());
            }
        }
    }

    /// Refuses requests with these attributes (403), as a Role without them would.
    pub fn forbid(&self, attributes: Attributes) {
        self.lock().forbidden.push(attributes);
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<Logged> {
        self.lock().requests.clone()
    }

    /// The objects of a kind (`Deployment`, `Pod`...) in a namespace, by name.
    pub fn objects(&self, kind: &str, namespace: &str) -> Vec<Value> {
        let r = resource_of_kind(kind);
        self.lock().of(r, namespace).cloned().collect()
    }

    /// Every object in the cluster, as `Kind/namespace/name`, sorted.
    pub fn inventory(&self) -> Vec<String> {
        let c = self.lock();
        c.objects
            .iter()
            .map(|((api, plural, ns, name), _)| {
                let kind = RESOURCES
                    .iter()
                    .find(|r| r.api_version() == *api && r.plural == plural)
                    .map_or("?", |r| r.kind);
                format!("{kind}/{ns}/{name}")
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }
}
