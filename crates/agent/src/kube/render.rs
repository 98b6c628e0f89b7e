//! The pure render: one desired deployment becomes the Kubernetes objects that run it.
//! No I/O and no randomness: the same input gives the same objects, byte for byte, so
//! the modes (apply, write to files) differ only in where the objects go.
//!
//! Objects, all in the deployment's namespace and labelled with the deployment, revision
//! and listener ids and `app.kubernetes.io/managed-by: hostplane`:
//! - `Secret` `<name>-env`: the deployment's secrets (`env`), read by the containers
//!   through `secretKeyRef`, never inlined;
//! - `Deployment` `<name>` (the API server, port 8000, probes on `/ok`) and, for `prod`
//!   deployments, `Deployment` `<name>-queue`: the queue worker, the same image started
//!   with `/storage/queue_entrypoint.sh` as the official chart does (the server then runs
//!   no jobs itself, `N_JOBS_PER_WORKER=0`);
//! - `Service` `<name>` on port 8000;
//! - `HorizontalPodAutoscaler` `<name>` when `min_scale < max_scale` (and `<name>-queue`
//!   likewise for the queue's scales);
//! - unless the deployment brings its own (`POSTGRES_URI_CUSTOM`): `Secret`
//!   `<name>-postgres` (password and URI), `StatefulSet` and `Service` `<name>-postgres`
//!   with a volume claim; unless `REDIS_URI_CUSTOM`: `Deployment` and `Service`
//!   `<name>-redis`.
//!
//! `resource_spec` maps field by field: `cpu`/`memory_mb` are requests, limits default to
//! twice the request (`cpu_limit`, `memory_limit_mb` override); `min_scale` is the
//! replica count; `queue_*` the queue worker's; `redis_*` and `db_*` the stores';
//! `labels` and `annotations` go on every object and pod; `service_account_name`,
//! `image_pull_secrets`, `volumes`, `volume_mounts`, `init_containers` and `sidecars` go
//! into the pod specs as given (they already use Kubernetes field names).

use protocol::{DesiredDeployment, DesiredRevision};
use serde_json::{json, Map, Value};
use uuid::Uuid;

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_DEPLOYMENT: &str = "hostplane.dev/deployment-id";
pub const LABEL_REVISION: &str = "hostplane.dev/revision-id";
pub const LABEL_LISTENER: &str = "hostplane.dev/listener-id";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// The official operator's custom resource.
pub const LGP_API_VERSION: &str = "apps.langchain.ai/v1alpha1";

/// Everything the render needs besides the deployment.
pub struct RenderContext<'a> {
    pub listener_id: Uuid,
    /// The database password of the deployment's own PostgreSQL (derived by the caller
    /// from a secret it holds, so that it is stable without being stored here).
    pub postgres_password: &'a str,
    /// Images of the stores the deployment gets when it brings none.
    pub postgres_image: &'a str,
    pub redis_image: &'a str,
    /// A Secret holding the listener's login to hostplane's registry, added to the
    /// user's `image_pull_secrets` when the revision's image is on that registry.
    pub pull_secret: Option<&'a str>,
}

/// One rendered object: its kind and name (for file names and deletes) and the document.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub kind: &'static str,
    pub name: String,
    pub doc: Value,
}

/// Kubernetes names are at most 63 characters: a long deployment name is cut and given a
/// piece of its id, so that `<base>-postgres` and the like still fit.
pub fn base_name(d: &DesiredDeployment) -> String {
    if d.name.len() <= 50 {
        d.name.clone()
    } else {
        let id = d.id.simple().to_string();
        format!("{}-{}", d.name[..41].trim_end_matches('-'), &id[..8])
    }
}

fn spec_field<'a>(d: &'a DesiredDeployment, field: &str) -> Option<&'a Value> {
    d.resource_spec
        .as_ref()
        .and_then(|s| s.get(field))
        .filter(|v| !v.is_null())
}

fn spec_f64(d: &DesiredDeployment, field: &str) -> Option<f64> {
    spec_field(d, field).and_then(Value::as_f64)
}

fn spec_i64(d: &DesiredDeployment, field: &str) -> Option<i64> {
    spec_field(d, field).and_then(Value::as_i64)
}

/// A CPU quantity in millicores (`0.5` → `500m`).
fn cpu(cores: f64) -> String {
    format!("{}m", (cores * 1000.0).round() as i64)
}

/// `requests` and `limits` from a request and an optional limit (twice the request when
/// absent); defaults apply when the spec says nothing.
fn resources(d: &DesiredDeployment, prefix: &str, default_cpu: f64, default_mb: i64) -> Value {
    let cpu_req = spec_f64(d, &format!("{prefix}cpu")).unwrap_or(default_cpu);
    let cpu_lim = spec_f64(d, &format!("{prefix}cpu_limit")).unwrap_or(cpu_req * 2.0);
    let mem_req = spec_i64(d, &format!("{prefix}memory_mb")).unwrap_or(default_mb);
    let mem_lim = spec_i64(d, &format!("{prefix}memory_limit_mb")).unwrap_or(mem_req * 2);
    json!({
        "requests": {"cpu": cpu(cpu_req), "memory": format!("{mem_req}Mi")},
        "limits": {"cpu": cpu(cpu_lim), "memory": format!("{mem_lim}Mi")},
    })
}

/// Drops `null` members, recursively: the user's Kubernetes shapes as they mean them.
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

fn user_list(d: &DesiredDeployment, field: &str) -> Option<Value> {
    spec_field(d, field)
        .filter(|v| v.as_array().is_some_and(|a| !a.is_empty()))
        .map(without_nulls)
}

/// The user's string map (labels, annotations), sorted for determinism.
fn user_map(d: &DesiredDeployment, field: &str) -> Map<String, Value> {
    let mut pairs: Vec<(String, Value)> = spec_field(d, field)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), Value::String(v.as_str()?.to_owned()))))
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs.into_iter().collect()
}

struct Renderer<'a> {
    d: &'a DesiredDeployment,
    rev: &'a DesiredRevision,
    ctx: &'a RenderContext<'a>,
    base: String,
    namespace: String,
}

impl<'a> Renderer<'a> {
    fn new(d: &'a DesiredDeployment, rev: &'a DesiredRevision, ctx: &'a RenderContext<'a>) -> Self {
        Renderer {
            d,
            rev,
            ctx,
            base: base_name(d),
            namespace: d.namespace.clone().unwrap_or_else(|| "default".to_owned()),
        }
    }

    /// Labels of an object of `component`: the user's, then ours (which win).
    fn labels(&self, component: &str) -> Map<String, Value> {
        let mut labels = user_map(self.d, "labels");
        for (k, v) in [
            ("app.kubernetes.io/name", self.base.clone()),
            (LABEL_COMPONENT, component.to_owned()),
            (MANAGED_BY, "hostplane".to_owned()),
            (LABEL_DEPLOYMENT, self.d.id.to_string()),
            (LABEL_REVISION, self.rev.id.to_string()),
            (LABEL_LISTENER, self.ctx.listener_id.to_string()),
        ] {
            labels.insert(k.to_owned(), Value::String(v));
        }
        labels
    }

    /// Labels of a store's pod template: without the revision, so that a new revision
    /// does not restart the deployment's PostgreSQL or Redis.
    fn store_pod_labels(&self, component: &str) -> Map<String, Value> {
        let mut labels = self.labels(component);
        labels.remove(LABEL_REVISION);
        labels
    }

    /// Labels of the PostgreSQL volume claim: fixed for the deployment's life, since a
    /// StatefulSet's claim templates cannot change.
    fn claim_labels(&self) -> Value {
        json!({
            LABEL_COMPONENT: "postgres",
            MANAGED_BY: "hostplane",
            LABEL_DEPLOYMENT: self.d.id.to_string(),
            LABEL_LISTENER: self.ctx.listener_id.to_string(),
        })
    }

    /// The labels a selector matches on: fixed for the deployment's life.
    fn selector(&self, component: &str) -> Value {
        json!({
            LABEL_DEPLOYMENT: self.d.id.to_string(),
            LABEL_COMPONENT: component,
        })
    }

    fn metadata(&self, name: &str, component: &str) -> Value {
        let mut m = json!({
            "name": name,
            "namespace": self.namespace,
            "labels": self.labels(component),
        });
        let annotations = user_map(self.d, "annotations");
        if !annotations.is_empty() {
            m["annotations"] = Value::Object(annotations);
        }
        m
    }

    fn object(
        &self,
        kind: &'static str,
        api: &str,
        name: &str,
        component: &str,
        rest: Value,
    ) -> Object {
        let mut doc = json!({
            "apiVersion": api,
            "kind": kind,
            "metadata": self.metadata(name, component),
        });
        if let (Some(doc), Value::Object(rest)) = (doc.as_object_mut(), rest) {
            doc.extend(rest);
        }
        Object {
            kind,
            name: name.to_owned(),
            doc,
        }
    }

    fn has_env(&self, name: &str) -> bool {
        self.d.env.iter().any(|e| e.name == name)
    }

    fn secret_ref(secret: &str, key: &str) -> Value {
        json!({"secretKeyRef": {"name": secret, "key": key}})
    }

    /// Whether the deployment runs a separate queue worker.
    fn queued(&self) -> bool {
        self.d.deployment_type.as_deref() == Some("prod")
    }

    /// The env of the server (`api`) or the queue worker (`queue`): values of the
    /// deployment's own secrets and stores are read from their Secrets.
    fn env(&self, component: &str) -> Value {
        use crate::env::{container_env, Role, Value as From};
        let role = match (component, self.queued()) {
            ("queue", _) => Role::Queue,
            (_, true) => Role::Server,
            (_, false) => Role::Combined,
        };
        let env_secret = format!("{}-env", self.base);
        let own_postgres = format!("{}-postgres", self.base);
        let entries = container_env(self.d, self.rev, role)
            .into_iter()
            .map(|var| {
                let name = var.name;
                match var.value {
                    From::Literal(value) => json!({"name": name, "value": value}),
                    From::OwnRedis => {
                        json!({"name": name, "value": format!("redis://{}-redis:6379", self.base)})
                    }
                    From::Given(key) => {
                        json!({"name": name, "valueFrom": Self::secret_ref(&env_secret, key)})
                    }
                    From::SecretRef { secret, key } => {
                        json!({"name": name, "valueFrom": Self::secret_ref(secret, key)})
                    }
                    From::OwnPostgres => {
                        json!({"name": name, "valueFrom": Self::secret_ref(&own_postgres, "uri")})
                    }
                }
            })
            .collect();
        Value::Array(entries)
    }

    /// The pod template of the server (`api`) or the queue worker (`queue`).
    /// The user's `image_pull_secrets`, and the registry login's Secret when there is one.
    fn pull_secrets(&self) -> Option<Value> {
        let mut list = match user_list(self.d, "image_pull_secrets") {
            Some(Value::Array(list)) => list,
            _ => Vec::new(),
        };
        if let Some(name) = self.ctx.pull_secret {
            list.push(json!({"name": name}));
        }
        (!list.is_empty()).then_some(Value::Array(list))
    }

    fn pod(&self, component: &str, image: &str, resources: Value) -> Value {
        let probe = |delay: u32, period: u32| {
            json!({"httpGet": {"path": "/ok", "port": 8000},
                   "initialDelaySeconds": delay, "periodSeconds": period})
        };
        let mut container = json!({
            "name": if component == "api" { "api-server" } else { "queue-worker" },
            "image": image,
            "env": self.env(component),
            "resources": resources,
        });
        if component == "api" {
            container["ports"] = json!([{"name": "http", "containerPort": 8000}]);
            container["readinessProbe"] = probe(5, 5);
            container["livenessProbe"] = probe(30, 10);
        } else {
            container["command"] = json!(["/storage/queue_entrypoint.sh"]);
        }
        if let Some(mounts) = user_list(self.d, "volume_mounts") {
            container["volumeMounts"] = mounts;
        }
        let mut containers = vec![container];
        if let Some(Value::Array(sidecars)) = user_list(self.d, "sidecars") {
            containers.extend(sidecars);
        }
        let mut spec = json!({"containers": containers});
        if let Some(account) = spec_field(self.d, "service_account_name").and_then(Value::as_str) {
            spec["serviceAccountName"] = json!(account);
        }
        if let Some(secrets) = self.pull_secrets() {
            spec["imagePullSecrets"] = secrets;
        }
        for (field, key) in [
            ("volumes", "volumes"),
            ("init_containers", "initContainers"),
        ] {
            if let Some(list) = user_list(self.d, field) {
                spec[key] = list;
            }
        }
        let mut metadata = json!({"labels": self.labels(component)});
        let annotations = user_map(self.d, "annotations");
        if !annotations.is_empty() {
            metadata["annotations"] = Value::Object(annotations);
        }
        json!({"metadata": metadata, "spec": spec})
    }

    fn workload(&self, name: &str, component: &str, min: i64, max: i64, pod: Value) -> Vec<Object> {
        let mut spec = json!({
            "selector": {"matchLabels": self.selector(component)},
            "template": pod,
        });
        let autoscaled = min < max;
        if !autoscaled {
            spec["replicas"] = json!(min);
        }
        let mut out = vec![self.object(
            "Deployment",
            "apps/v1",
            name,
            component,
            json!({"spec": spec}),
        )];
        if autoscaled {
            out.push(self.object(
                "HorizontalPodAutoscaler",
                "autoscaling/v2",
                name,
                component,
                json!({"spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    "minReplicas": min,
                    "maxReplicas": max,
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                 "target": {"type": "Utilization", "averageUtilization": 75}}}],
                }}),
            ));
        }
        out
    }

    fn service(&self, name: &str, component: &str, port: u16) -> Object {
        self.object(
            "Service",
            "v1",
            name,
            component,
            json!({"spec": {
                "selector": self.selector(component),
                "ports": [{"name": "tcp", "port": port, "targetPort": port}],
            }}),
        )
    }

    /// `<base>-env`: the deployment's secrets, which containers read by reference.
    fn env_secret(&self) -> Object {
        let env_data: Map<String, Value> = {
            use base64::Engine;
            let mut pairs: Vec<(String, Value)> = self
                .d
                .env
                .iter()
                .map(|e| {
                    let encoded = base64::engine::general_purpose::STANDARD.encode(&e.value);
                    (e.name.clone(), Value::String(encoded))
                })
                .collect();
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            pairs.into_iter().collect()
        };
        self.object(
            "Secret",
            "v1",
            &format!("{}-env", self.base),
            "api",
            json!({"type": "Opaque", "data": env_data}),
        )
    }

    /// `(min, max)` replicas of the server, or of the queue worker with `queue_`.
    fn scales(&self, prefix: &str) -> (i64, i64) {
        let min = spec_i64(self.d, &format!("{prefix}min_scale"))
            .unwrap_or(1)
            .max(0);
        let max = spec_i64(self.d, &format!("{prefix}max_scale"))
            .unwrap_or(min)
            .max(min);
        (min, max)
    }

    /// The `lgp` mode's objects: the env Secret and one `LGP` that the official
    /// operator turns into the server, queue worker, stores and autoscalers. The
    /// operator supplies `PORT`, the job count and the stores' URIs itself, so the
    /// server's env keeps only ours and the user's (and the URIs the deployment brings).
    fn lgp(&self) -> Vec<Object> {
        let env: Vec<Value> = self
            .env("api")
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| match e["name"].as_str().unwrap_or_default() {
                "PORT" | "N_JOBS_PER_WORKER" => false,
                "POSTGRES_URI" => self.has_env("POSTGRES_URI_CUSTOM"),
                "REDIS_URI" => self.has_env("REDIS_URI_CUSTOM"),
                _ => true,
            })
            .cloned()
            .collect();
        let (min, max) = self.scales("");
        let (qmin, qmax) = self.scales("queue_");
        let mut server = json!({
            "image": self.rev.image.clone().unwrap_or_default(),
            "env": env,
            "labels": self.labels("api"),
            "resources": resources(self.d, "", 1.0, 1024),
            "queueEnabled": self.queued(),
        });
        if self.queued() {
            server["queueResources"] = resources(self.d, "queue_", 1.0, 1024);
        }
        if min == max {
            server["replicas"] = json!(min);
        }
        let annotations = user_map(self.d, "annotations");
        if !annotations.is_empty() {
            server["annotations"] = Value::Object(annotations.clone());
        }
        if let Some(account) = spec_field(self.d, "service_account_name").and_then(Value::as_str) {
            server["serviceAccountName"] = json!(account);
        }
        if let Some(secrets) = self.pull_secrets() {
            server["imagePullSecrets"] = secrets;
        }
        for (field, key) in [
            ("volumes", "volumes"),
            ("volume_mounts", "volumeMounts"),
            ("init_containers", "initContainers"),
            ("sidecars", "sidecars"),
        ] {
            if let Some(list) = user_list(self.d, field) {
                server[key] = list;
            }
        }
        let autoscaling = if min < max || qmin < qmax {
            json!({"enabled": true, "autoscalerType": "HPA",
                   "minReplicas": min, "maxReplicas": max,
                   "queueMinReplicas": qmin, "queueMaxReplicas": qmax})
        } else {
            json!({"enabled": false})
        };
        let mut spec = json!({
            "serverSpec": server,
            "autoscaling": autoscaling,
            "database": {"enabled": !self.has_env("POSTGRES_URI_CUSTOM")},
            "redis": {"enabled": !self.has_env("REDIS_URI_CUSTOM")},
            "ingress": {"enabled": false},
        });
        if !self.has_env("POSTGRES_URI_CUSTOM") {
            spec["database"]["storageSizeGi"] =
                json!(spec_i64(self.d, "db_storage_gi").unwrap_or(10));
            spec["database"]["resources"] = resources(self.d, "db_", 0.5, 1024);
            if let Some(max) = spec_i64(self.d, "db_max_connections") {
                spec["database"]["maxConnections"] = json!(max);
            }
        }
        if !self.has_env("REDIS_URI_CUSTOM") {
            spec["redis"]["resources"] = resources(self.d, "redis_", 0.5, 512);
        }
        // What the operator puts on everything it makes: the user's labels only, so that
        // our selectors never match the operator's own objects.
        let mut labels = user_map(self.d, "labels");
        labels.retain(|k, _| k != MANAGED_BY && !k.starts_with("hostplane.dev/"));
        if !labels.is_empty() {
            spec["labels"] = Value::Object(labels);
        }
        if !annotations.is_empty() {
            spec["annotations"] = Value::Object(annotations);
        }
        vec![
            self.env_secret(),
            self.object(
                "LGP",
                LGP_API_VERSION,
                &self.base,
                "api",
                json!({"spec": spec}),
            ),
        ]
    }

    fn render(&self) -> Vec<Object> {
        let image = self.rev.image.clone().unwrap_or_default();
        let mut out = Vec::new();
        out.push(self.env_secret());
        let (min, max) = self.scales("");
        let api = self.pod("api", &image, resources(self.d, "", 1.0, 1024));
        out.extend(self.workload(&self.base, "api", min, max, api));
        out.push(self.service(&self.base, "api", 8000));
        if self.queued() {
            let (qmin, qmax) = self.scales("queue_");
            let queue = self.pod("queue", &image, resources(self.d, "queue_", 1.0, 1024));
            out.extend(self.workload(&format!("{}-queue", self.base), "queue", qmin, qmax, queue));
        }
        if !self.has_env("POSTGRES_URI_CUSTOM") {
            out.extend(self.postgres());
        }
        if !self.has_env("REDIS_URI_CUSTOM") {
            out.extend(self.redis());
        }
        out
    }

    fn postgres(&self) -> Vec<Object> {
        use base64::Engine;
        let name = format!("{}-postgres", self.base);
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let uri = format!(
            "postgres://postgres:{}@{name}:5432/postgres?sslmode=disable",
            self.ctx.postgres_password
        );
        let storage = spec_i64(self.d, "db_storage_gi").unwrap_or(10);
        let mut env = vec![
            json!({"name": "POSTGRES_USER", "value": "postgres"}),
            json!({"name": "POSTGRES_DB", "value": "postgres"}),
            json!({"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"}),
            json!({"name": "POSTGRES_PASSWORD", "valueFrom": Self::secret_ref(&name, "password")}),
        ];
        if let Some(max) = spec_i64(self.d, "db_max_connections") {
            env.push(json!({"name": "POSTGRES_MAX_CONNECTIONS", "value": max.to_string()}));
        }
        let mut container = json!({
            "name": "postgres",
            "image": self.ctx.postgres_image,
            "env": env,
            "ports": [{"name": "tcp", "containerPort": 5432}],
            "resources": resources(self.d, "db_", 0.5, 1024),
            "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}],
        });
        if let Some(max) = spec_i64(self.d, "db_max_connections") {
            container["args"] = json!(["-c", format!("max_connections={max}")]);
        }
        vec![
            self.object(
                "Secret",
                "v1",
                &name,
                "postgres",
                json!({"type": "Opaque", "data": {
                    "password": b64(self.ctx.postgres_password),
                    "uri": b64(&uri),
                }}),
            ),
            self.object(
                "StatefulSet",
                "apps/v1",
                &name,
                "postgres",
                json!({"spec": {
                    "serviceName": name,
                    "replicas": 1,
                    "selector": {"matchLabels": self.selector("postgres")},
                    "template": {
                        "metadata": {"labels": self.store_pod_labels("postgres")},
                        "spec": {"containers": [container]},
                    },
                    "volumeClaimTemplates": [{
                        "metadata": {"name": "data", "labels": self.claim_labels()},
                        "spec": {"accessModes": ["ReadWriteOnce"],
                                 "resources": {"requests": {"storage": format!("{storage}Gi")}}},
                    }],
                }}),
            ),
            self.service(&name, "postgres", 5432),
        ]
    }

    fn redis(&self) -> Vec<Object> {
        let name = format!("{}-redis", self.base);
        let container = json!({
            "name": "redis",
            "image": self.ctx.redis_image,
            "ports": [{"name": "tcp", "containerPort": 6379}],
            "resources": resources(self.d, "redis_", 0.5, 512),
        });
        vec![
            self.object(
                "Deployment",
                "apps/v1",
                &name,
                "redis",
                json!({"spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": self.selector("redis")},
                    "template": {
                        "metadata": {"labels": self.store_pod_labels("redis")},
                        "spec": {"containers": [container]},
                    },
                }}),
            ),
            self.service(&name, "redis", 6379),
        ]
    }
}

/// The objects that run `revision` of `d`, in a fixed order.
pub fn render(
    d: &DesiredDeployment,
    revision: &DesiredRevision,
    ctx: &RenderContext<'_>,
) -> Vec<Object> {
    Renderer::new(d, revision, ctx).render()
}

/// The `lgp` mode's objects for `revision` of `d`: the env Secret and one `LGP`.
pub fn render_lgp(
    d: &DesiredDeployment,
    revision: &DesiredRevision,
    ctx: &RenderContext<'_>,
) -> Vec<Object> {
    Renderer::new(d, revision, ctx).lgp()
}
