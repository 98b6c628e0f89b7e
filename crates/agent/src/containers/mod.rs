//! Container mode: deployments as containers on one Docker or Podman host, through the
//! Docker Engine API (bollard).
//!
//! Per deployment, in the network `hp-<namespace>`:
//! - the API server, `hp-<namespace>-<name>-<revision prefix>`, from the revision's
//!   image, with the deployment's env (secrets passed as env only), port 8000 published on
//!   an ephemeral port of the bind address, restart policy `unless-stopped`;
//! - unless the deployment brings its own (`POSTGRES_URI_CUSTOM`, `REDIS_URI_CUSTOM`),
//!   `hp-<namespace>-<name>-postgres` with the named volume `hp-<namespace>-<name>-pgdata`
//!   (kept across revisions, removed with the deployment) and `hp-<namespace>-<name>-redis`.
//!
//! Everything carries labels with the listener, deployment and revision ids; the agent
//! finds its objects by those labels and never touches one without them.
//!
//! The address: each deployment has one port on the bind address for good, served by a
//! small TCP proxy inside the agent ([`proxy`]) that forwards to the API container of the
//! live revision. An update starts the new container beside the old one, waits for its
//! `/ok`, switches the proxy, then stops the old one after a short drain: no gap. The
//! trade-off is that this address needs the agent process: while the agent restarts it
//! does not answer (the containers keep running, and each also answers on its own
//! published port, which `docker ps` shows).

mod engine;
pub mod image;
pub mod plan;
mod proxy;

use crate::runner::{level_of, Failure, LogSink, Rollout, Sink};
use async_trait::async_trait;
use bollard::models::{
    ContainerCreateBody, HostConfig, NetworkCreateRequest, PortBinding, RestartPolicy,
    RestartPolicyNameEnum, VolumeCreateOptions,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, ListContainersOptions,
    LogsOptions, RemoveContainerOptions, RemoveVolumeOptions, StopContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use protocol::{DesiredDeployment, DesiredRevision, Observed};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use uuid::Uuid;

pub const LABEL_MANAGED: &str = "app.kubernetes.io/managed-by";
pub const LABEL_LISTENER: &str = "hostplane.listener-id";
pub const LABEL_DEPLOYMENT: &str = "hostplane.deployment-id";
pub const LABEL_REVISION: &str = "hostplane.revision-id";
pub const LABEL_ROLE: &str = "hostplane.role";
pub const LABEL_PORT: &str = "hostplane.port";

/// Settings of container mode.
#[derive(Debug, Clone)]
pub struct ContainerSettings {
    pub listener_id: Uuid,
    /// The listener key, from which each deployment's PostgreSQL password is derived.
    pub listener_key: String,
    /// Address the deployments' ports are opened on.
    pub bind: std::net::IpAddr,
    /// Ports deployments get their address from, inclusive.
    pub ports: (u16, u16),
    pub postgres_image: String,
    pub redis_image: String,
    /// How long a new container has to answer `/ok`.
    pub health_timeout: Duration,
    /// How long the old container keeps running after the switch.
    pub drain: Duration,
    /// How long a stopping container gets between SIGTERM and SIGKILL.
    pub stop_timeout: Duration,
}

/// A deployment's live state in this agent.
struct Live {
    name: String,
    revision: Uuid,
    container: String,
    port: u16,
    proxy: proxy::Proxy,
}

pub struct ContainerSink {
    docker: Docker,
    /// Logins to the control plane's registry, for images under it.
    logins: crate::control::RegistryLogins,
    settings: ContainerSettings,
    live: tokio::sync::Mutex<HashMap<Uuid, Live>>,
    /// The port each deployment answers at, reserved before its first container starts.
    ports: Mutex<HashMap<Uuid, u16>>,
    /// Containers whose output is being sent as deploy logs.
    followed: Mutex<HashSet<String>>,
}

fn labels(settings: &ContainerSettings, deployment: Uuid, role: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_owned(), "hostplane".to_owned()),
        (LABEL_LISTENER.to_owned(), settings.listener_id.to_string()),
        (LABEL_DEPLOYMENT.to_owned(), deployment.to_string()),
        (LABEL_ROLE.to_owned(), role.to_owned()),
    ])
}

/// Containers come back after a crash or a reboot, until the agent stops them.
fn restart_unless_stopped() -> RestartPolicy {
    RestartPolicy {
        name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
        maximum_retry_count: None,
    }
}

fn failure(reason: &str, e: impl std::fmt::Display) -> Failure {
    Failure::new(reason, e.to_string())
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl ContainerSink {
    /// Stops and removes every container and volume of the deployment.
    async fn teardown(&self, deployment: Uuid) -> anyhow::Result<()> {
        if let Some(l) = self.live.lock().await.remove(&deployment) {
            tracing::info!(name = %l.name, port = l.port, "closing the deployment's address");
            l.proxy.stop();
        }
        if let Ok(mut ports) = self.ports.lock() {
            ports.remove(&deployment);
        }
        let all = self
            .ours(&[(LABEL_DEPLOYMENT, deployment.to_string())])
            .await?;
        let ids: Vec<String> = all.into_iter().filter_map(|c| c.id).collect();
        futures_util::future::join_all(ids.iter().map(|id| self.remove(id))).await;
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{LABEL_LISTENER}={}", self.settings.listener_id),
                format!("{LABEL_DEPLOYMENT}={deployment}"),
            ],
        )]);
        let volumes = self
            .docker
            .list_volumes(Some(bollard::query_parameters::ListVolumesOptions {
                filters: Some(filters),
            }))
            .await?;
        for v in volumes.volumes.unwrap_or_default() {
            self.docker
                .remove_volume(&v.name, Some(RemoveVolumeOptions { force: true }))
                .await?;
        }
        image::prune_images(&self.docker, self.settings.listener_id, deployment, None).await;
        Ok(())
    }

    /// Connects to `DOCKER_HOST` (default `/var/run/docker.sock`) and checks the engine
    /// answers.
    pub async fn connect(
        settings: ContainerSettings,
        control: crate::control::ControlPlane,
    ) -> anyhow::Result<Self> {
        let docker = Docker::connect_with_local_defaults()?;
        let version = docker.version().await?;
        tracing::info!(
            engine = version.version.as_deref().unwrap_or("?"),
            "connected to the container engine"
        );
        Ok(ContainerSink {
            docker,
            logins: crate::control::RegistryLogins::new(control),
            settings,
            live: tokio::sync::Mutex::new(HashMap::new()),
            ports: Mutex::new(HashMap::new()),
            followed: Mutex::new(HashSet::new()),
        })
    }

    fn prefix(d: &DesiredDeployment) -> String {
        format!(
            "hp-{}-{}",
            d.namespace.as_deref().unwrap_or("default"),
            d.name
        )
    }

    /// Removes what [`plan::retire`] says goes of the deployment's containers while
    /// `serving` (of `revision`) serves: the stores it no longer uses at once; the older
    /// servers after the drain, and then (after a switch, `switched`) the build images
    /// of other revisions, in the background: the address already points at `serving`,
    /// so the revision does not wait for them.
    async fn retire(&self, d: &DesiredDeployment, serving: Option<(&str, Uuid)>, switched: bool) {
        let seen: Vec<plan::Seen> = self
            .ours(&[(LABEL_DEPLOYMENT, d.id.to_string())])
            .await
            .unwrap_or_default()
            .iter()
            .filter_map(plan::Seen::of)
            .collect();
        let retire = plan::retire(d, &seen, serving.map(|(id, _)| id));
        for id in &retire.stores {
            tracing::info!(deployment = %d.id, "removing a store the deployment now brings itself");
            self.remove(id).await;
        }
        let Some((_, revision)) = serving else {
            return;
        };
        if retire.drained.is_empty() && !switched {
            return;
        }
        if let Ok(mut f) = self.followed.lock() {
            for id in &retire.drained {
                f.remove(id);
            }
        }
        let (docker, drain, stop) = (
            self.docker.clone(),
            self.settings.drain,
            self.settings.stop_timeout,
        );
        let (listener, deployment) = (self.settings.listener_id, d.id);
        tokio::spawn(async move {
            if !retire.drained.is_empty() {
                tokio::time::sleep(drain).await;
                let removals = retire
                    .drained
                    .iter()
                    .map(|old| engine::remove_container(&docker, old, stop));
                futures_util::future::join_all(removals).await;
            }
            if switched {
                image::prune_images(&docker, listener, deployment, Some(revision)).await;
            }
        });
    }

    /// A running support container (`postgres` or `redis`) of the deployment; its env.
    async fn ensure_support(
        &self,
        d: &DesiredDeployment,
        role: &str,
        image: &str,
        env: Vec<String>,
        volume: Option<(&str, &str)>,
    ) -> Result<Vec<String>, Failure> {
        let name = format!("{}-{role}", Self::prefix(d));
        let existing = self
            .ours(&[
                (LABEL_DEPLOYMENT, d.id.to_string()),
                (LABEL_ROLE, role.to_owned()),
            ])
            .await
            .map_err(|e| failure("EngineUnavailable", e))?;
        if let Some(c) = existing.first() {
            let id = c.id.clone().unwrap_or_default();
            if self.exit_code(&id).await?.is_some() {
                let _ = self
                    .docker
                    .start_container(
                        &id,
                        None::<bollard::query_parameters::StartContainerOptions>,
                    )
                    .await;
            }
            // The env it was created with (the generated password): the listing's labels
            // cannot hold it, and an inspect may fail on podman-only states; retry then.
            for _ in 0..20 {
                if let Ok(info) = self
                    .docker
                    .inspect_container(&id, None::<InspectContainerOptions>)
                    .await
                {
                    return Ok(info.config.and_then(|c| c.env).unwrap_or_default());
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            return Err(Failure::new(
                "EngineUnavailable",
                format!("cannot read the settings of {role} container {id}"),
            ));
        }
        let image = self.ensure_image(image).await?;
        let mut binds = Vec::new();
        if let Some((volume, path)) = volume {
            let mut vlabels = labels(&self.settings, d.id, role);
            vlabels.insert(LABEL_ROLE.to_owned(), "volume".to_owned());
            self.docker
                .create_volume(VolumeCreateOptions {
                    name: Some(volume.to_owned()),
                    labels: Some(vlabels),
                    ..Default::default()
                })
                .await
                .map_err(|e| failure("VolumeFailed", e))?;
            binds.push(format!("{volume}:{path}"));
        }
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            env: Some(env.clone()),
            labels: Some(labels(&self.settings, d.id, role)),
            host_config: Some(HostConfig {
                network_mode: Some(format!(
                    "hp-{}",
                    d.namespace.as_deref().unwrap_or("default")
                )),
                binds: Some(binds),
                restart_policy: Some(restart_unless_stopped()),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.create_and_start(&name, body).await?;
        Ok(env)
    }

    /// The env of the API server ([`crate::env::container_env`]), with the deployment's
    /// own PostgreSQL and Redis started when it uses them.
    async fn server_env(
        &self,
        d: &DesiredDeployment,
        rev: &DesiredRevision,
    ) -> Result<Vec<String>, Failure> {
        use crate::env::{container_env, Role, Value};
        let prefix = Self::prefix(d);
        let mut env = Vec::new();
        for var in container_env(d, rev, Role::Combined) {
            let value = match var.value {
                Value::Literal(value) => value,
                Value::Given(name) => d
                    .env
                    .iter()
                    .rev()
                    .find(|e| e.name == name)
                    .map(|e| e.value.clone())
                    .unwrap_or_default(),
                // Refused before anything starts (`unsupported`).
                Value::SecretRef { .. } => return Err(refusal(SECRET_REFERENCES.into())),
                Value::OwnPostgres => {
                    let password = crate::env::postgres_password(&self.settings.listener_key, d.id);
                    let fresh = vec![
                        format!("POSTGRES_PASSWORD={password}"),
                        "POSTGRES_USER=postgres".to_owned(),
                        "POSTGRES_DB=postgres".to_owned(),
                    ];
                    let volume = format!("{prefix}-pgdata");
                    let image = self.settings.postgres_image.clone();
                    let data = Some((volume.as_str(), "/var/lib/postgresql/data"));
                    let actual = self
                        .ensure_support(d, "postgres", &image, fresh, data)
                        .await?;
                    // A container made earlier keeps the password it was made with.
                    let password = actual
                        .iter()
                        .find_map(|e| e.strip_prefix("POSTGRES_PASSWORD="))
                        .unwrap_or_default();
                    format!(
                        "postgres://postgres:{password}@{prefix}-postgres:5432/postgres\
                         ?sslmode=disable"
                    )
                }
                Value::OwnRedis => {
                    let image = self.settings.redis_image.clone();
                    self.ensure_support(d, "redis", &image, vec![], None)
                        .await?;
                    format!("redis://{prefix}-redis:6379")
                }
            };
            env.push(format!("{}={value}", var.name));
        }
        Ok(env)
    }

    /// The port a deployment answers at: the one already reserved or carried by its
    /// containers, else a free one of the range (searched from a place its id picks).
    async fn port_for(&self, d: &DesiredDeployment) -> Result<u16, Failure> {
        if let Some(port) = self.ports.lock().ok().and_then(|p| p.get(&d.id).copied()) {
            return Ok(port);
        }
        let labelled: Vec<(Option<Uuid>, u16)> = self
            .ours(&[(LABEL_ROLE, "api".to_owned())])
            .await
            .map_err(|e| failure("EngineUnavailable", e))?
            .iter()
            .filter_map(|c| {
                let l = c.labels.as_ref()?;
                let dep = l.get(LABEL_DEPLOYMENT).and_then(|v| v.parse().ok());
                Some((dep, l.get(LABEL_PORT)?.parse().ok()?))
            })
            .collect();
        let mut ports = self
            .ports
            .lock()
            .map_err(|_| Failure::new("Internal", "port table poisoned"))?;
        if let Some((_, port)) = labelled.iter().find(|(dep, _)| *dep == Some(d.id)) {
            ports.insert(d.id, *port);
            return Ok(*port);
        }
        let taken: HashSet<u16> = labelled
            .iter()
            .map(|(_, p)| *p)
            .chain(ports.values().copied())
            .collect();
        let (lo, hi) = self.settings.ports;
        let span = u32::from(hi - lo) + 1;
        let start = (d.id.as_u128() % u128::from(span)) as u32;
        for i in 0..span {
            let port = lo + ((start + i) % span) as u16;
            if !taken.contains(&port)
                && std::net::TcpListener::bind((self.settings.bind, port)).is_ok()
            {
                ports.insert(d.id, port);
                return Ok(port);
            }
        }
        Err(Failure::new(
            "NoFreePort",
            format!("every port of {lo}-{hi} is taken"),
        ))
    }

    /// The API container of the revision: adopted when it exists and runs, else created.
    async fn api_container(
        &self,
        d: &DesiredDeployment,
        rev: &DesiredRevision,
        image: &str,
        port: u16,
    ) -> Result<(String, bool), Failure> {
        let existing = self
            .ours(&[
                (LABEL_DEPLOYMENT, d.id.to_string()),
                (LABEL_REVISION, rev.id.to_string()),
                (LABEL_ROLE, "api".to_owned()),
            ])
            .await
            .map_err(|e| failure("EngineUnavailable", e))?;
        for c in existing {
            let id = c.id.unwrap_or_default();
            if self.exit_code(&id).await?.is_none() {
                return Ok((id, true));
            }
            // A leftover that stopped: start afresh.
            self.remove(&id).await;
        }
        let image = self.ensure_image(image).await?;
        let env = self.server_env(d, rev).await?;
        let short: String = rev.id.simple().to_string().chars().take(8).collect();
        let name = format!("{}-{short}", Self::prefix(d));
        let mut labels = labels(&self.settings, d.id, "api");
        labels.insert(LABEL_REVISION.to_owned(), rev.id.to_string());
        labels.insert(LABEL_PORT.to_owned(), port.to_string());
        let body = ContainerCreateBody {
            image: Some(image),
            env: Some(env),
            labels: Some(labels),
            exposed_ports: Some(HashMap::from([("8000/tcp".to_owned(), HashMap::new())])),
            host_config: Some(HostConfig {
                network_mode: Some(format!(
                    "hp-{}",
                    d.namespace.as_deref().unwrap_or("default")
                )),
                port_bindings: Some(HashMap::from([(
                    "8000/tcp".to_owned(),
                    Some(vec![PortBinding {
                        host_ip: Some(self.settings.bind.to_string()),
                        host_port: Some(String::new()),
                    }]),
                )])),
                restart_policy: Some(restart_unless_stopped()),
                ..Default::default()
            }),
            ..Default::default()
        };
        Ok((self.create_and_start(&name, body).await?, false))
    }
}

const SECRET_REFERENCES: &str = "secret_references name Kubernetes Secrets";

fn refusal(what: String) -> Failure {
    Failure::new(
        "UnsupportedInContainerMode",
        format!("{what}; container mode runs one server container per deployment"),
    )
}

/// What container mode cannot honour of a `resource_spec`: it runs one API server
/// container and nothing of the pod spec, so these would be dropped without a word.
fn unsupported(d: &DesiredDeployment) -> Result<(), Failure> {
    use crate::spec::field;
    let refuse = |what: String| Err(refusal(what));
    for list in ["volumes", "volume_mounts", "init_containers", "sidecars"] {
        if field(d, list)
            .and_then(serde_json::Value::as_array)
            .is_some_and(|a| !a.is_empty())
        {
            return refuse(format!("resource_spec.{list} is set"));
        }
    }
    if let Some(min) = field(d, "min_scale").and_then(serde_json::Value::as_i64) {
        if min > 1 {
            return refuse(format!("resource_spec.min_scale is {min}"));
        }
    }
    if crate::env::secret_references(d).next().is_some() {
        return refuse(SECRET_REFERENCES.into());
    }
    Ok(())
}

#[async_trait]
impl Sink for ContainerSink {
    fn check(&self, d: &DesiredDeployment) -> Result<(), Failure> {
        unsupported(d)
    }

    fn mode(&self) -> &'static str {
        "containers"
    }

    async fn facts(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut facts = serde_json::Map::new();
        if let Ok(v) = self.docker.version().await {
            facts.insert("engine".into(), serde_json::json!(v.version));
            facts.insert("api_version".into(), serde_json::json!(v.api_version));
            facts.insert("os".into(), serde_json::json!(v.os));
            facts.insert("arch".into(), serde_json::json!(v.arch));
        }
        facts
    }

    async fn observe(&self) -> Vec<Observed> {
        let live = self.live.lock().await;
        live.iter()
            .map(|(id, l)| Observed {
                deployment_id: *id,
                revision_id: Some(l.revision),
                phase: "available".into(),
                ready_replicas: 1,
                total_replicas: 1,
                endpoint: Some(format!("http://{}:{}", self.settings.bind, l.port)),
                last_error: None,
            })
            .collect()
    }

    async fn deploy(&self, rollout: Rollout<'_>) -> Result<String, Failure> {
        let (d, rev, logs) = (rollout.deployment, rollout.revision, rollout.logs);
        let image = crate::runner::image_of(rev)?.to_owned();
        let address = |port: u16| format!("http://{}:{port}", self.settings.bind);
        // Already live here: check that it still runs.
        let current = self
            .live
            .lock()
            .await
            .get(&d.id)
            .filter(|l| l.revision == rev.id)
            .map(|l| (l.container.clone(), l.port));
        if let Some((container, port)) = current {
            if self.exit_code(&container).await?.is_none() {
                self.retire(d, Some((&container, rev.id)), false).await;
                return Ok(address(port));
            }
        }
        let port = self.port_for(d).await?;
        self.ensure_network(&format!(
            "hp-{}",
            d.namespace.as_deref().unwrap_or("default")
        ))
        .await?;
        let (id, adopted) = self.api_container(d, rev, &image, port).await?;
        if !adopted {
            logs.line(d.id, rev.id, "INFO", format!("started {image}"))
                .await;
        }
        self.follow(&id, d.id, rev.id, logs.clone(), !adopted);
        let up = match self.published(&id).await {
            Ok(target) => self.healthy(&id, target).await.map(|()| target),
            // Podman's inspect can fail on a stopped container; its wait still answers.
            Err(f) if f.reason == "EngineUnavailable" => match self.exit_code(&id).await {
                Ok(Some(code)) => Err(self.exited(&id, code).await),
                _ => Err(f),
            },
            Err(f) => Err(f),
        };
        let target = match up {
            Ok(target) => target,
            Err(f) => {
                // The failed container goes; what ran before keeps serving.
                self.remove(&id).await;
                return Err(f);
            }
        };
        // Switch the address to the new container, then retire the old ones.
        {
            let mut live = self.live.lock().await;
            match live.get_mut(&d.id) {
                Some(l) => {
                    l.proxy.point_to(target);
                    l.revision = rev.id;
                    l.container = id.clone();
                }
                None => {
                    let at = SocketAddr::new(self.settings.bind, port);
                    let proxy = proxy::Proxy::start(at, target)
                        .await
                        .map_err(|e| failure("PortUnavailable", format!("port {port}: {e}")))?;
                    live.insert(
                        d.id,
                        Live {
                            name: d.name.clone(),
                            revision: rev.id,
                            container: id.clone(),
                            port,
                            proxy,
                        },
                    );
                }
            }
        }
        self.retire(d, Some((&id, rev.id)), true).await;
        Ok(address(port))
    }

    async fn build(&self, job: crate::builds::Job<'_>) -> Result<String, Failure> {
        self.build_image(job).await
    }

    async fn delete(&self, deployment: &DesiredDeployment) -> anyhow::Result<()> {
        self.teardown(deployment.id).await
    }

    async fn prune(&self, keep: &HashSet<Uuid>, _namespaces: &[String]) -> anyhow::Result<()> {
        let seen: Vec<plan::Seen> = self
            .ours(&[])
            .await?
            .iter()
            .filter_map(plan::Seen::of)
            .collect();
        for id in plan::gone(&seen, keep) {
            tracing::info!(deployment = %id, "removing a deployment that no longer exists");
            self.teardown(id).await?;
        }
        self.prune_orphan_images(keep).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::unsupported;
    use crate::spec::tests::with;
    use serde_json::json;

    #[test]
    fn what_one_container_cannot_honour_is_refused() {
        for spec in [
            json!({}),
            json!({"min_scale": 1, "max_scale": 5, "volumes": []}),
        ] {
            assert!(unsupported(&with(spec.clone())).is_ok(), "{spec}");
        }
        for (spec, message) in [
            (json!({"min_scale": 3}), "resource_spec.min_scale is 3"),
            (
                json!({"sidecars": [{"name": "s", "image": "i"}]}),
                "resource_spec.sidecars is set",
            ),
            (
                json!({"volumes": [{"name": "v", "emptyDir": {}}]}),
                "resource_spec.volumes is set",
            ),
        ] {
            let f = unsupported(&with(spec)).unwrap_err();
            assert_eq!(f.reason, "UnsupportedInContainerMode");
            assert_eq!(
                f.message,
                format!("{message}; container mode runs one server container per deployment")
            );
        }
        let mut d = with(json!({}));
        let refs = json!([{"name": "T", "secret_name": "s", "secret_key": "k"}]);
        for (refs, refused) in [(json!([]), false), (refs, true)] {
            d.secret_references = Some(refs);
            let f = unsupported(&d);
            assert_eq!(f.is_err(), refused);
            if let Err(f) = f {
                assert_eq!(f.reason, "UnsupportedInContainerMode");
                assert_eq!(
                    f.message,
                    "secret_references name Kubernetes Secrets; container mode runs one \
                     server container per deployment"
                );
            }
        }
    }
}
