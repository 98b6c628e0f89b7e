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

/// The bearer token the fake accepts (written into [`FakeKube::kubeconfig`]).
pub const TOKEN: &str = "fake-kube-token";

/// A resource the fake serves.
struct Resource {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    /// Whether `metadata.generation` moves when the spec changes.
    generation: bool,
}

const RESOURCES: &[Resource] = &[
    res("", "v1", "secrets", "Secret", false),
    res("", "v1", "services", "Service", false),
    res("", "v1", "pods", "Pod", false),
    res(
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        false,
    ),
    res("apps", "v1", "deployments", "Deployment", true),
    res("apps", "v1", "statefulsets", "StatefulSet", true),
    res(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        true,
    ),
    res("apps.langchain.ai", "v1alpha1", "lgps", "LGP", true),
];

const fn res(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    generation: bool,
) -> Resource {
    Resource {
        group,
        version,
        plural,
        kind,
        generation,
    }
}

impl Resource {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps`, as Kubernetes names a resource in messages.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

fn resource(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
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
    /// ends in `CrashLoopBackOff`.
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

fn images(pod: &Value) -> Vec<String> {
    pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["image"].as_str().map(str::to_owned))
        .collect()
}

fn status(code: u16, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

fn not_found(r: &Resource, name: &str) -> Response {
    status(
        404,
        "NotFound",
        format!("{} \"{name}\" not found", r.qualified()),
    )
}

/// A parsed request path.
struct Target<'a> {
    resource: &'static Resource,
    namespace: String,
    name: Option<String>,
    /// `log`, or `proxy` with the rest of the path.
    sub: Option<(&'a str, String)>,
}

fn route(path: &str) -> Option<Target<'_>> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let ["namespaces", ns, plural, rest @ ..] = rest else {
        return None;
    };
    let resource = resource(group, version, plural)?;
    let (name, sub) = match rest {
        [] => (None, None),
        [name] => (Some((*name).to_owned()), None),
        [name, sub, tail @ ..] => (Some((*name).to_owned()), Some((*sub, tail.join("/")))),
    };
    Some(Target {
        resource,
        namespace: (*ns).to_owned(),
        name,
        sub,
    })
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Percent-decoding of a query component (`+` is a space).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `labels` match an equality-based selector (`a=b,c!=d,e`).
fn matches(selector: &str, labels: &Value) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            labels[k.trim()].as_str() != Some(v.trim())
        } else if let Some((k, v)) = term.split_once('=') {
            let k = k.trim().trim_end_matches('=');
            labels[k].as_str() == Some(v.trim_start_matches('=').trim())
        } else {
            labels.get(term.trim()).is_some()
        }
    })
}

fn serve(
    state: &Arc<Mutex<Cluster>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut c = state.lock().unwrap_or_else(|e| e.into_inner());
    let path = uri.path().to_owned();
    let target = route(&path);
    let attributes = target
        .as_ref()
        .map(|t| authorize(&c, &method, t))
        .unwrap_or_default();
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"));
    let response = if !authorized {
        status(401, "Unauthorized", "Unauthorized".to_owned())
    } else if let Some(denied) = attributes.iter().find(|a| c.forbidden.contains(a)) {
        status(
            403,
            "Forbidden",
            format!(
                "{} is forbidden: User \"system:serviceaccount:hostplane:listener\" cannot {} \
                 resource \"{}\" in API group \"{}\" in the namespace \"{}\"",
                path, denied.verb, denied.resource, denied.group, denied.namespace
            ),
        )
    } else if path == "/version" {
        axum::Json(json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-hostplane-fake",
            "platform": "linux/amd64",
        }))
        .into_response()
    } else {
        match target {
            Some(t) if !c.namespaces.contains(&t.namespace) => status(
                404,
                "NotFound",
                format!("namespaces \"{}\" not found", t.namespace),
            ),
            Some(t) => handle(&mut c, state, &method, &uri, &headers, &body, t),
            None => status(
                404,
                "NotFound",
                "the server could not find the requested resource".into(),
            ),
        }
    };
    c.requests.push(Logged {
        method: method.to_string(),
        path,
        query: uri.query().unwrap_or("").to_owned(),
        status: response.status().as_u16(),
        attributes,
    });
    response
}

/// The attributes Kubernetes authorizes a request as. A server-side apply that creates
/// its object is checked as `patch` and as `create`.
fn authorize(c: &Cluster, method: &Method, t: &Target<'_>) -> Vec<Attributes> {
    let r = t.resource;
    let mut resource = r.plural.to_owned();
    if let Some((sub, _)) = &t.sub {
        resource = format!("{resource}/{sub}");
    }
    let verbs: Vec<&str> = match (method.as_str(), &t.name) {
        ("GET", None) => vec!["list"],
        ("GET", Some(_)) => vec!["get"],
        ("POST", _) => vec!["create"],
        ("PUT", _) => vec!["update"],
        ("PATCH", Some(name)) => {
            let exists = c.objects.contains_key(&Cluster::key(r, &t.namespace, name));
            if exists {
                vec!["patch"]
            } else {
                vec!["patch", "create"]
            }
        }
        ("DELETE", None) => vec!["deletecollection"],
        ("DELETE", Some(_)) => vec!["delete"],
        _ => vec![],
    };
    verbs
        .into_iter()
        .map(|v| Attributes {
            verb: v.to_owned(),
            group: r.group.to_owned(),
            resource: resource.clone(),
            namespace: t.namespace.clone(),
        })
        .collect()
}

fn handle(
    c: &mut Cluster,
    state: &Arc<Mutex<Cluster>>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    t: Target<'_>,
) -> Response {
    let r = t.resource;
    let ns = t.namespace.as_str();
    let query = query_map(uri);
    let selector = query.get("labelSelector").cloned().unwrap_or_default();
    match (method.as_str(), t.name.as_deref(), &t.sub) {
        ("GET", None, None) => {
            let items: Vec<Value> = c
                .of(r, ns)
                .filter(|o| matches(&selector, &o["metadata"]["labels"]))
                .cloned()
                .collect();
            axum::Json(json!({
                "apiVersion": r.api_version(), "kind": format!("{}List", r.kind),
                "metadata": {"resourceVersion": c.resource_version.to_string()},
                "items": items,
            }))
            .into_response()
        }
        ("GET", Some(name), None) => match c.objects.get(&Cluster::key(r, ns, name)) {
            Some(o) => axum::Json(o.clone()).into_response(),
            None => not_found(r, name),
        },
        ("PATCH", Some(name), None) => apply(c, r, ns, name, &query, headers, body),
        ("DELETE", Some(name), None) => match c.remove(r, ns, name) {
            Some(o) => axum::Json(o).into_response(),
            None => not_found(r, name),
        },
        ("DELETE", None, None) => {
            let names: Vec<String> = c
                .of(r, ns)
                .filter(|o| matches(&selector, &o["metadata"]["labels"]))
                .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_owned))
                .collect();
            let items: Vec<Value> = names.iter().filter_map(|n| c.remove(r, ns, n)).collect();
            axum::Json(json!({
                "apiVersion": r.api_version(), "kind": format!("{}List", r.kind),
                "metadata": {}, "items": items,
            }))
            .into_response()
        }
        ("GET", Some(name), Some(("log", _))) if r.plural == "pods" => {
            pod_logs(c, state, ns, name, &query)
        }
        ("GET", Some(name), Some(("proxy", _))) if r.plural == "services" => {
            service_proxy(c, ns, name)
        }
        _ => status(
            405,
            "MethodNotAllowed",
            format!("the fake does not serve {method} {}", uri.path()),
        ),
    }
}

/// Server-side apply with one field manager: the applied object is the whole intent for
/// the fields it sets; `status` and the server's metadata stay.
fn apply(
    c: &mut Cluster,
    r: &'static Resource,
    ns: &str,
    name: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type != "application/apply-patch+yaml" {
        return status(
            415,
            "UnsupportedMediaType",
            format!("the fake only serves server-side apply, not {content_type:?}"),
        );
    }
    let Some(manager) = query.get("fieldManager").filter(|m| !m.is_empty()) else {
        return status(
            422,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
        );
    };
    let Ok(applied) = serde_json::from_slice::<Value>(body) else {
        return status(
            400,
            "BadRequest",
            "the fake reads apply bodies as JSON".into(),
        );
    };
    if applied["apiVersion"] != json!(r.api_version())
        || applied["kind"] != json!(r.kind)
        || applied["metadata"]["name"] != json!(name)
        || applied["metadata"]["namespace"]
            .as_str()
            .is_some_and(|n| n != ns)
    {
        return status(
            400,
            "BadRequest",
            format!("the object does not match {} {ns}/{name}", r.kind),
        );
    }
    let key = Cluster::key(r, ns, name);
    let existing = c.objects.get(&key).cloned();
    let created = existing.is_none();
    let mut obj = existing.unwrap_or_else(|| {
        json!({
            "apiVersion": r.api_version(), "kind": r.kind,
            "metadata": {
                "name": name, "namespace": ns,
                "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            },
        })
    });
    let spec_before = obj.get("spec").cloned();
    let Some(target) = obj.as_object_mut() else {
        unreachable!("objects are JSON objects")
    };
    // Fields the previous apply set and this one does not are removed.
    target.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
    if let Some(fields) = applied.as_object() {
        for (k, v) in fields {
            if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status") {
                target.insert(k.clone(), v.clone());
            }
        }
    }
    let meta = &mut obj["metadata"];
    for field in ["labels", "annotations"] {
        match applied["metadata"].get(field) {
            Some(v) => meta[field] = v.clone(),
            None => {
                meta.as_object_mut().map(|m| m.remove(field));
            }
        }
    }
    meta["managedFields"] = json!([{
        "manager": manager, "operation": "Apply", "apiVersion": r.api_version(),
        "fieldsType": "FieldsV1", "time": now(),
    }]);
    if r.generation {
        let generation = meta["generation"].as_i64().unwrap_or(0);
        if created || spec_before != obj.get("spec").cloned() {
            obj["metadata"]["generation"] = json!(generation + 1);
        }
    }
    if r.plural == "services" && obj["spec"]["clusterIP"].is_null() {
        obj["spec"]["clusterIP"] = json!(format!(
            "10.96.{}.{}",
            c.resource_version % 250,
            c.resource_version % 200 + 2
        ));
    }
    c.insert(r, ns, name, obj);
    let stored = c.objects.get(&key).cloned().unwrap_or(Value::Null);
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (code, axum::Json(stored)).into_response()
}

fn pod_logs(
    c: &Cluster,
    state: &Arc<Mutex<Cluster>>,
    ns: &str,
    name: &str,
    query: &HashMap<String, String>,
) -> Response {
    let key = (ns.to_owned(), name.to_owned());
    let Some(pod) = c.pods.get(&key) else {
        return not_found(resource_of_kind("Pod"), name);
    };
    let mut lines = pod.logs.clone();
    if let Some(tail) = query.get("tailLines").and_then(|t| t.parse::<usize>().ok()) {
        lines = lines.split_off(lines.len().saturating_sub(tail));
    }
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    if query.get("follow").map(String::as_str) != Some("true") {
        return text.into_response();
    }
    // Following: what is there, then each new line until the pod is gone.
    let first =
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(text)) });
    let rest = futures_util::stream::unfold(
        (state.clone(), key, pod.logs.len()),
        |(state, key, mut seen)| async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let c = state.lock().unwrap_or_else(|e| e.into_inner());
                let pod = c.pods.get(&key)?;
                if pod.logs.len() > seen {
                    let text: String = pod.logs[seen..].iter().map(|l| format!("{l}\n")).collect();
                    seen = pod.logs.len();
                    drop(c);
                    return Some((Ok(Bytes::from(text)), (state, key, seen)));
                }
            }
        },
    );
    Body::from_stream(futures_util::StreamExt::chain(first, rest)).into_response()
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// `GET /api/v1/namespaces/NS/services/NAME[:PORT]/proxy/...`: answers for the pods
/// behind the Service, as `{"ok":true}` when one of them is ready.
fn service_proxy(c: &Cluster, ns: &str, name: &str) -> Response {
    let service = name
        .split(':')
        .find(|p| !matches!(*p, "http" | "https"))
        .unwrap_or(name);
    let r = resource_of_kind("Service");
    let Some(svc) = c.objects.get(&Cluster::key(r, ns, service)) else {
        return not_found(r, service);
    };
    let selector = &svc["spec"]["selector"];
    let selector: Vec<String> = selector
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    let behind: Vec<&Value> = c
        .of(resource_of_kind("Pod"), ns)
        .filter(|p| matches(&selector.join(","), &p["metadata"]["labels"]) && ready(p))
        .collect();
    let unhealthy = |p: &Value| {
        images(p)
            .iter()
            .any(|i| matches!(c.faults.get(i), Some(Fault::Unhealthy)))
    };
    if !behind.is_empty() && behind.iter().all(|p| unhealthy(p)) {
        return status(
            500,
            "InternalError",
            "the server answered 500 on /ok".into(),
        );
    }
    let serving = !behind.is_empty();
    if serving {
        axum::Json(json!({"ok": true})).into_response()
    } else {
        status(
            503,
            "ServiceUnavailable",
            format!("no endpoints available for service \"{service}\""),
        )
    }
}

fn short_hash(v: &Value) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(v.to_string().as_bytes());
    digest.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Plays the controllers and the kubelet, every 50 ms.
async fn kubelet(cluster: Arc<Mutex<Cluster>>) {
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut c = cluster.lock().unwrap_or_else(|e| e.into_inner());
        let namespaces: Vec<String> = c.namespaces.iter().cloned().collect();
        for ns in &namespaces {
            lgp_operator(&mut c, ns);
            deployment_controller(&mut c, ns);
            statefulset_controller(&mut c, ns);
            run_pods(&mut c, ns);
            workload_status(&mut c, ns);
        }
    }
}

fn owned_pods(c: &Cluster, ns: &str, kind: &str, name: &str) -> Vec<Value> {
    c.of(resource_of_kind("Pod"), ns)
        .filter(|p| owner(p) == Some((kind, name)))
        .cloned()
        .collect()
}

fn name_of(o: &Value) -> String {
    o["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn create_pod(
    c: &mut Cluster,
    ns: &str,
    pod_name: &str,
    template: &Value,
    owner: (&str, &str),
    extra: (&str, &str),
) {
    let mut labels = template["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    labels.insert(extra.0.to_owned(), json!(extra.1));
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": pod_name, "namespace": ns, "labels": labels,
            "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now(),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner.0, "name": owner.1,
                                 "controller": true}],
        },
        "spec": template["spec"].clone(),
        "status": {"phase": "Pending"},
    });
    c.insert(resource_of_kind("Pod"), ns, pod_name, pod);
    c.pods.insert(
        (ns.to_owned(), pod_name.to_owned()),
        Pod {
            started: Instant::now(),
            logs: Vec::new(),
            started_logs: false,
        },
    );
}

/// Deployments: pods of the current template up to `replicas`; the old template's pods
/// go once the new ones are all ready (a rolling update that never drops below the
/// wanted count, as with `maxUnavailable: 0`).
fn deployment_controller(c: &mut Cluster, ns: &str) {
    let deployments: Vec<Value> = c.of(resource_of_kind("Deployment"), ns).cloned().collect();
    for d in deployments {
        let name = name_of(&d);
        let template = &d["spec"]["template"];
        let hash = short_hash(template);
        let wanted = usize::try_from(d["spec"]["replicas"].as_u64().unwrap_or(1)).unwrap_or(1);
        let pods = owned_pods(c, ns, "Deployment", &name);
        let (new, old): (Vec<&Value>, Vec<&Value>) = pods
            .iter()
            .partition(|p| p["metadata"]["labels"]["pod-template-hash"] == json!(hash));
        for _ in new.len()..wanted {
            let suffix = uuid::Uuid::new_v4().simple().to_string();
            let pod_name = format!("{name}-{hash}-{}", &suffix[..5]);
            create_pod(
                c,
                ns,
                &pod_name,
                template,
                ("Deployment", &name),
                ("pod-template-hash", &hash),
            );
        }
        for extra in new.iter().skip(wanted) {
            c.remove(resource_of_kind("Pod"), ns, &name_of(extra));
        }
        if new.len() >= wanted && new.iter().take(wanted).all(|p| ready(p)) {
            for p in old {
                c.remove(resource_of_kind("Pod"), ns, &name_of(p));
            }
        }
    }
}

/// StatefulSets: pods `<name>-<i>`, replaced one by one on a new template, with a
/// PersistentVolumeClaim per claim template that outlives them (labelled with the
/// claim template's labels and the set's selector, as Kubernetes does).
fn statefulset_controller(c: &mut Cluster, ns: &str) {
    let sets: Vec<Value> = c.of(resource_of_kind("StatefulSet"), ns).cloned().collect();
    for s in sets {
        let name = name_of(&s);
        let template = &s["spec"]["template"];
        let hash = format!("{name}-{}", short_hash(template));
        let wanted = usize::try_from(s["spec"]["replicas"].as_u64().unwrap_or(1)).unwrap_or(1);
        for i in 0..wanted {
            let pod_name = format!("{name}-{i}");
            let key = Cluster::key(resource_of_kind("Pod"), ns, &pod_name);
            match c.objects.get(&key) {
                Some(p) if p["metadata"]["labels"]["controller-revision-hash"] != json!(hash) => {
                    c.remove(resource_of_kind("Pod"), ns, &pod_name);
                }
                Some(_) => {}
                None => {
                    for claim in s["spec"]["volumeClaimTemplates"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        let pvc_name = format!("{}-{pod_name}", name_of(claim));
                        let pvc_res = resource_of_kind("PersistentVolumeClaim");
                        if c.objects
                            .contains_key(&Cluster::key(pvc_res, ns, &pvc_name))
                        {
                            continue;
                        }
                        let mut labels = claim["metadata"]["labels"]
                            .as_object()
                            .cloned()
                            .unwrap_or_default();
                        if let Some(m) = s["spec"]["selector"]["matchLabels"].as_object() {
                            labels.extend(m.clone());
                        }
                        let pvc = json!({
                            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                            "metadata": {"name": pvc_name, "namespace": ns, "labels": labels,
                                         "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now()},
                            "spec": claim["spec"].clone(),
                            "status": {"phase": "Bound"},
                        });
                        c.insert(pvc_res, ns, &pvc_name, pvc);
                    }
                    create_pod(
                        c,
                        ns,
                        &pod_name,
                        template,
                        ("StatefulSet", &name),
                        ("controller-revision-hash", &hash),
                    );
                }
            }
        }
        for p in owned_pods(c, ns, "StatefulSet", &name) {
            let index = name_of(&p)
                .rsplit('-')
                .next()
                .and_then(|i| i.parse::<usize>().ok())
                .unwrap_or(usize::MAX);
            if index >= wanted {
                c.remove(resource_of_kind("Pod"), ns, &name_of(&p));
            }
        }
    }
}

fn set_status(c: &mut Cluster, kind: &str, ns: &str, name: &str, status: Value) {
    let r = resource_of_kind(kind);
    let key = Cluster::key(r, ns, name);
    let changed = c.objects.get(&key).is_some_and(|o| o["status"] != status);
    if changed {
        let version = c.next_version();
        if let Some(o) = c.objects.get_mut(&key) {
            o["status"] = status;
            o["metadata"]["resourceVersion"] = json!(version);
        }
    }
}

/// The kubelet: each pod runs, turns ready after the delay, or plays its image's fault.
fn run_pods(c: &mut Cluster, ns: &str) {
    let pods: Vec<Value> = c.of(resource_of_kind("Pod"), ns).cloned().collect();
    for pod in pods {
        let name = name_of(&pod);
        let key = (ns.to_owned(), name.clone());
        let Some(elapsed) = c.pods.get(&key).map(|p| p.started.elapsed()) else {
            continue;
        };
        let fault = images(&pod).iter().find_map(|i| c.faults.get(i)).cloned();
        let starting = elapsed < c.ready_after;
        let scheduled = json!({"type": "PodScheduled", "status": "True"});
        let containers = pod["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let statuses =
            |state: &dyn Fn(&Value) -> Value| -> Value { containers.iter().map(state).collect() };
        let status = match &fault {
            Some(Fault::Unschedulable) => json!({
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                "message": "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."}],
            }),
            _ if starting => json!({
                "phase": "Pending",
                "conditions": [scheduled],
                "containerStatuses": statuses(&|k| json!({
                    "name": k["name"], "image": k["image"], "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": "ContainerCreating"}},
                })),
            }),
            Some(Fault::ImagePull) => {
                let reason = if elapsed < c.ready_after * 2 {
                    "ErrImagePull"
                } else {
                    "ImagePullBackOff"
                };
                let faults = c.faults.clone();
                json!({
                    "phase": "Pending",
                    "conditions": [scheduled, {"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
                    "containerStatuses": statuses(&|k| {
                        let image = k["image"].as_str().unwrap_or_default();
                        if matches!(faults.get(image), Some(Fault::ImagePull)) {
                            json!({"name": k["name"], "image": image, "ready": false, "restartCount": 0,
                                   "state": {"waiting": {"reason": reason,
                                   "message": format!("Back-off pulling image \"{image}\": ErrImagePull: failed to pull and unpack image \"{image}\": not found")}}})
                        } else {
                            json!({"name": k["name"], "image": image, "ready": false, "restartCount": 0,
                                   "state": {"waiting": {"reason": "PodInitializing"}}})
                        }
                    }),
                })
            }
            Some(Fault::CrashLoop { exit_code, logs }) => {
                if let Some(p) = c.pods.get_mut(&key) {
                    if !p.started_logs {
                        p.logs.extend(logs.iter().cloned());
                        p.started_logs = true;
                    }
                }
                let pod_name = name.clone();
                json!({
                    "phase": "Running",
                    "conditions": [scheduled, {"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
                    "containerStatuses": statuses(&|k| json!({
                        "name": k["name"], "image": k["image"], "ready": false, "restartCount": 3,
                        "state": {"waiting": {"reason": "CrashLoopBackOff",
                                  "message": format!("back-off 40s restarting failed container={} pod={pod_name}", k["name"].as_str().unwrap_or_default())}},
                        "lastState": {"terminated": {"exitCode": exit_code, "reason": "Error"}},
                    })),
                })
            }
            Some(Fault::Unhealthy) | None => {
                let lines: Vec<String> = images(&pod)
                    .iter()
                    .flat_map(|i| c.image_logs.get(i).cloned().unwrap_or_default())
                    .collect();
                if let Some(p) = c.pods.get_mut(&key) {
                    if !p.started_logs {
                        p.logs.extend(lines);
                        p.started_logs = true;
                    }
                }
                json!({
                    "phase": "Running",
                    "conditions": [scheduled, {"type": "Ready", "status": "True"}],
                    "containerStatuses": statuses(&|k| json!({
                        "name": k["name"], "image": k["image"], "ready": true, "restartCount": 0,
                        "started": true, "state": {"running": {}},
                    })),
                })
            }
        };
        set_status(c, "Pod", ns, &name, status);
    }
}

/// Deployment and StatefulSet statuses from their pods.
fn workload_status(c: &mut Cluster, ns: &str) {
    for kind in ["Deployment", "StatefulSet"] {
        let workloads: Vec<Value> = c.of(resource_of_kind(kind), ns).cloned().collect();
        for w in workloads {
            let name = name_of(&w);
            let pods = owned_pods(c, ns, kind, &name);
            let current = if kind == "Deployment" {
                ("pod-template-hash", short_hash(&w["spec"]["template"]))
            } else {
                (
                    "controller-revision-hash",
                    format!("{name}-{}", short_hash(&w["spec"]["template"])),
                )
            };
            let updated = pods
                .iter()
                .filter(|p| p["metadata"]["labels"][current.0] == json!(current.1))
                .count();
            let ready_count = pods.iter().filter(|p| ready(p)).count();
            let mut status = Map::new();
            status.insert(
                "observedGeneration".into(),
                w["metadata"]["generation"].clone(),
            );
            status.insert("replicas".into(), json!(pods.len()));
            status.insert("updatedReplicas".into(), json!(updated));
            status.insert("readyReplicas".into(), json!(ready_count));
            status.insert("availableReplicas".into(), json!(ready_count));
            if kind == "StatefulSet" {
                status.insert("currentReplicas".into(), json!(updated));
            } else if pods.len() > ready_count {
                status.insert(
                    "unavailableReplicas".into(),
                    json!(pods.len() - ready_count),
                );
            }
            set_status(c, kind, ns, &name, Value::Object(status));
        }
    }
}

/// The label the fake operator selects an `LGP`'s pods by.
const LGP_LABEL: &str = "lgp.apps.langchain.ai/name";

/// The official operator, as far as the agent can see it: each `LGP` gets a Deployment
/// and a Service of its name (owned by it), and a status reporting the Deployment's
/// rollout, once the Deployment controller has seen its current spec, and the
/// in-cluster endpoint.
fn lgp_operator(c: &mut Cluster, ns: &str) {
    let lgps: Vec<Value> = c.of(resource_of_kind("LGP"), ns).cloned().collect();
    for lgp in lgps {
        let name = name_of(&lgp);
        let server = &lgp["spec"]["serverSpec"];
        let mut labels = server["labels"].as_object().cloned().unwrap_or_default();
        labels.insert(LGP_LABEL.into(), json!(name));
        let replicas = server["replicas"]
            .as_i64()
            .or_else(|| lgp["spec"]["autoscaling"]["minReplicas"].as_i64())
            .unwrap_or(1);
        let spec = json!({
            "replicas": replicas,
            "selector": {"matchLabels": {LGP_LABEL: name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "api-server", "image": server["image"],
                                         "env": server["env"]}]},
            },
        });
        let metadata = |kind_labels: Value| {
            json!({
                "name": name, "namespace": ns, "labels": kind_labels,
                "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now(),
                "ownerReferences": [{"apiVersion": "apps.langchain.ai/v1alpha1", "kind": "LGP",
                                     "name": name, "controller": true}],
            })
        };
        let deployments = resource_of_kind("Deployment");
        let key = Cluster::key(deployments, ns, &name);
        match c.objects.get(&key).cloned() {
            Some(mut d) if d["spec"] != spec => {
                let generation = d["metadata"]["generation"].as_i64().unwrap_or(0);
                d["spec"] = spec;
                d["metadata"]["generation"] = json!(generation + 1);
                c.insert(deployments, ns, &name, d);
            }
            Some(_) => {}
            None => {
                let mut m = metadata(json!({LGP_LABEL: name}));
                m["generation"] = json!(1);
                let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": m, "spec": spec});
                c.insert(deployments, ns, &name, d);
            }
        }
        let services = resource_of_kind("Service");
        if !c.objects.contains_key(&Cluster::key(services, ns, &name)) {
            let svc = json!({
                "apiVersion": "v1", "kind": "Service", "metadata": metadata(json!({LGP_LABEL: name})),
                "spec": {"selector": {LGP_LABEL: name},
                         "ports": [{"name": "http", "port": 8000, "targetPort": 8000}]},
            });
            c.insert(services, ns, &name, svc);
        }
        let Some(d) = c.objects.get(&key) else {
            continue;
        };
        let seen = d["status"]["observedGeneration"] == d["metadata"]["generation"];
        let mut status = lgp["status"].as_object().cloned().unwrap_or_default();
        if seen {
            let ds = &d["status"];
            status.insert(
                "observedGeneration".into(),
                lgp["metadata"]["generation"].clone(),
            );
            status.insert(
                "deploymentStatus".into(),
                json!({
                    "replicas": ds["replicas"], "updatedReplicas": ds["updatedReplicas"],
                    "readyReplicas": ds["readyReplicas"], "availableReplicas": ds["availableReplicas"],
                }),
            );
        }
        status.insert(
            "endpoint".into(),
            json!(format!("http://{name}.{ns}.svc.cluster.local:8000")),
        );
        set_status(c, "LGP", ns, &name, Value::Object(status));
    }
}
