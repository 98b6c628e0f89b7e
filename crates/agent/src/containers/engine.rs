//! Container mode's side of the engine: listing, creating, starting, inspecting,
//! following and removing the agent's own containers, with the retries Podman's
//! in-between states need.

use super::*;

impl ContainerSink {
    /// Our containers matching `filters` (labels), every state.
    pub(super) async fn ours(
        &self,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Vec<bollard::models::ContainerSummary>> {
        let mut label = vec![format!("{LABEL_LISTENER}={}", self.settings.listener_id)];
        label.extend(extra.iter().map(|(k, v)| format!("{k}={v}")));
        let filters = HashMap::from([("label".to_owned(), label)]);
        let mut tries = 0;
        loop {
            let listed = self
                .docker
                .list_containers(Some(ListContainersOptions {
                    all: true,
                    filters: Some(filters.clone()),
                    ..Default::default()
                }))
                .await;
            match listed {
                Ok(list) => return Ok(list),
                // Podman lists a container that is between exit and restart (or cleanup)
                // as `stopped`, a state Docker's schema lacks: it passes within moments.
                Err(
                    bollard::errors::Error::JsonDataError { .. }
                    | bollard::errors::Error::JsonSerdeError { .. },
                ) if tries < 40 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub(super) async fn remove(&self, id: &str) {
        if let Ok(mut f) = self.followed.lock() {
            f.remove(id);
        }
        remove_container(&self.docker, id, self.settings.stop_timeout).await;
    }

    pub(super) async fn ensure_network(&self, name: &str) -> Result<(), Failure> {
        match self
            .docker
            .inspect_network(
                name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => {
                let req = NetworkCreateRequest {
                    name: name.to_owned(),
                    labels: Some(HashMap::from([(
                        LABEL_MANAGED.to_owned(),
                        "hostplane".to_owned(),
                    )])),
                    ..Default::default()
                };
                match self.docker.create_network(req).await {
                    Ok(_) => Ok(()),
                    // Created by a concurrent deployment in the same namespace.
                    Err(_)
                        if self
                            .docker
                            .inspect_network(
                                name,
                                None::<bollard::query_parameters::InspectNetworkOptions>,
                            )
                            .await
                            .is_ok() =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(failure("NetworkFailed", e)),
                }
            }
            Err(e) => Err(failure("EngineUnavailable", e)),
        }
    }

    /// The reference to create containers from: `image` itself when the engine has it,
    /// else pulled. A reference pinned by a digest that names a local image's id
    /// (`my-agent@sha256:<id>`, the only digest Docker gives an image it built and never
    /// pushed) resolves to that image when one of its tags has the same name: the id pins
    /// the content as a registry digest does.
    pub(super) async fn ensure_image(&self, image: &str) -> Result<String, Failure> {
        if self.docker.inspect_image(image).await.is_ok() {
            return Ok(image.to_owned());
        }
        if let Some((name, digest)) = image.split_once('@') {
            if let Ok(local) = self.docker.inspect_image(digest).await {
                let named = local
                    .repo_tags
                    .unwrap_or_default()
                    .iter()
                    .any(|t| t.rsplit_once(':').map_or(t.as_str(), |(n, _)| n) == name);
                if named && local.id.as_deref() == Some(digest) {
                    return Ok(digest.to_owned());
                }
            }
        }
        // The listener's pull-only login when the image is on the control plane's
        // registry (the registry refuses it for another workspace's images).
        let login = self
            .logins
            .for_image(image)
            .await
            .map(|l| bollard::auth::DockerCredentials {
                username: Some(l.username),
                password: Some(l.password),
                serveraddress: Some(l.registry),
                ..Default::default()
            });
        let mut pull = self.docker.create_image(
            Some(CreateImageOptions {
                from_image: Some(image.to_owned()),
                ..Default::default()
            }),
            None,
            login,
        );
        while let Some(step) = pull.next().await {
            if let Err(e) = step {
                return Err(failure(
                    "ImagePullFailed",
                    format!("cannot pull image {image}: {e}"),
                ));
            }
        }
        self.docker
            .inspect_image(image)
            .await
            .map(|_| image.to_owned())
            .map_err(|e| failure("ImagePullFailed", format!("image {image} is missing: {e}")))
    }

    /// Creates the container `name` and starts it: its id.
    pub(super) async fn create_and_start(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<String, Failure> {
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.to_owned()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|e| failure("ContainerCreateFailed", format!("{name}: {e}")))?;
        self.docker
            .start_container(
                &created.id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(|e| failure("ContainerStartFailed", format!("{name}: {e}")))?;
        Ok(created.id)
    }

    /// The host address the container's port 8000 is published on. A container that
    /// exited has no published port, and one that an engine restarts (a crash loop) has
    /// none until it runs again: the first is the exit's failure, the second is waited
    /// for, as is a podman-only state (see `exit_code`) that passes.
    pub(super) async fn published(&self, id: &str) -> Result<SocketAddr, Failure> {
        let mut tries = 0;
        loop {
            let last_try = tries >= 20;
            match self
                .docker
                .inspect_container(id, None::<InspectContainerOptions>)
                .await
            {
                Ok(info) => {
                    let port = info
                        .network_settings
                        .and_then(|n| n.ports)
                        .and_then(|p| p.get("8000/tcp").cloned().flatten())
                        .and_then(|b| b.into_iter().find_map(|b| b.host_port))
                        .and_then(|p| p.parse::<u16>().ok());
                    if let Some(port) = port {
                        return Ok(SocketAddr::new(self.settings.bind, port));
                    }
                    let state = info.state.unwrap_or_default();
                    let running =
                        state.running.unwrap_or(false) && !state.restarting.unwrap_or(false);
                    if !running {
                        return Err(self.exited(id, state.exit_code.unwrap_or(-1)).await);
                    }
                    if last_try {
                        return Err(Failure::new(
                            "NoPublishedPort",
                            "port 8000 is not published",
                        ));
                    }
                }
                Err(e) if last_try => return Err(failure("EngineUnavailable", e)),
                Err(_) => {}
            }
            tries += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `None` while the container runs (or restarts), else its exit code (`-1` when it
    /// is gone). Podman reports states Docker's schema does not know (`stopped`), which
    /// bollard cannot read; then a `wait` for "not running" with a short timeout decides.
    pub(super) async fn exit_code(&self, id: &str) -> Result<Option<i64>, Failure> {
        match self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => {
                let state = info.state.unwrap_or_default();
                // Between restarts of a crash loop the state says running with code 0;
                // `healthy` learns the real code from the engine's `wait`. A container
                // waiting to be restarted (Docker's `restarting`) has exited: its code
                // is the last exit's.
                if state.running.unwrap_or(false) && !state.restarting.unwrap_or(false) {
                    Ok(None)
                } else {
                    Ok(Some(state.exit_code.unwrap_or(-1)))
                }
            }
            Err(e) if is_not_found(&e) => Ok(Some(-1)),
            // Podman's inspect can fail on a container that is just exiting (a 500 on
            // its gone process's cgroup) or answer what bollard cannot parse; the
            // engine's `wait` still tells.
            Err(
                bollard::errors::Error::JsonDataError { .. }
                | bollard::errors::Error::JsonSerdeError { .. }
                | bollard::errors::Error::DockerResponseServerError {
                    status_code: 500, ..
                },
            ) => {
                let mut wait = self.docker.wait_container(
                    id,
                    Some(bollard::query_parameters::WaitContainerOptions {
                        condition: "not-running".to_owned(),
                    }),
                );
                match tokio::time::timeout(Duration::from_millis(200), wait.next()).await {
                    Err(_) => Ok(None),
                    Ok(Some(Ok(r))) => Ok(Some(r.status_code)),
                    Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError {
                        code,
                        ..
                    }))) => Ok(Some(code)),
                    Ok(_) => Ok(Some(-1)),
                }
            }
            Err(e) => Err(failure("EngineUnavailable", e)),
        }
    }

    /// The failure of a container that exited: its code and last lines.
    pub(super) async fn exited(&self, id: &str, code: i64) -> Failure {
        let last = self.tail(id).await;
        Failure::new(
            "ContainerExited",
            format!("the server exited with code {code}; last lines:\n{last}"),
        )
    }

    /// The last lines a container wrote.
    pub(super) async fn tail(&self, id: &str) -> String {
        let mut out = self.docker.logs(
            id,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                tail: "20".to_owned(),
                ..Default::default()
            }),
        );
        let mut text = String::new();
        while let Some(Ok(chunk)) = out.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        text.trim().to_owned()
    }

    /// Waits until the container answers `GET /ok` with 200; fails when it exits (the
    /// engine's `wait` gives the true exit code even when the restart policy brings it
    /// straight back) or the time runs out.
    pub(super) async fn healthy(&self, id: &str, addr: SocketAddr) -> Result<(), Failure> {
        let deadline = tokio::time::Instant::now() + self.settings.health_timeout;
        type Exits = std::pin::Pin<
            Box<
                dyn futures_util::Stream<
                        Item = Result<
                            bollard::models::ContainerWaitResponse,
                            bollard::errors::Error,
                        >,
                    > + Send,
            >,
        >;
        let mut exit: Exits = Box::pin(self.docker.wait_container(
            id,
            Some(bollard::query_parameters::WaitContainerOptions {
                condition: "next-exit".to_owned(),
            }),
        ));
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                ended = exit.next() => {
                    let code = match ended {
                        Some(Ok(r)) => r.status_code,
                        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
                        // The wait itself failed: fall back to polling the state.
                        _ => {
                            exit = Box::pin(futures_util::stream::pending());
                            continue;
                        }
                    };
                    return Err(self.exited(id, code).await);
                }
                _ = tick.tick() => {
                    if probe(addr).await {
                        return Ok(());
                    }
                    if let Some(code) = self.exit_code(id).await? {
                        return Err(self.exited(id, code).await);
                    }
                    if tokio::time::Instant::now() >= deadline {
                        let last = self.tail(id).await;
                        return Err(Failure::new(
                            "HealthCheckTimeout",
                            format!(
                                "GET /ok did not answer 200 within {:?}; last lines:\n{last}",
                                self.settings.health_timeout
                            ),
                        ));
                    }
                }
            }
        }
    }

    /// Sends the container's output as deploy logs of the revision (once per container).
    pub(super) fn follow(&self, id: &str, d: Uuid, rev: Uuid, logs: LogSink, from_start: bool) {
        let first = self
            .followed
            .lock()
            .map(|mut f| f.insert(id.to_owned()))
            .unwrap_or(false);
        if !first {
            return;
        }
        let docker = self.docker.clone();
        let id = id.to_owned();
        let since = if from_start {
            0
        } else {
            chrono::Utc::now().timestamp() as i32
        };
        tokio::spawn(async move {
            let mut out = docker.logs(
                &id,
                Some(LogsOptions {
                    follow: true,
                    stdout: true,
                    stderr: true,
                    since,
                    timestamps: true,
                    ..Default::default()
                }),
            );
            let mut pending = String::new();
            while let Some(Ok(chunk)) = out.next().await {
                pending.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                // A line that never ends is sent in pieces rather than kept growing.
                if pending.len() > protocol::MAX_LOG_MESSAGE_BYTES && !pending.contains('\n') {
                    pending.push('\n');
                }
                while let Some(at) = pending.find('\n') {
                    let line: String = pending.drain(..=at).collect();
                    let line = line.trim_end();
                    let (at, text) = match line.split_once(' ') {
                        Some((ts, rest)) => match chrono::DateTime::parse_from_rfc3339(ts) {
                            Ok(t) => (t.with_timezone(&chrono::Utc), rest),
                            Err(_) => (chrono::Utc::now(), line),
                        },
                        None => (chrono::Utc::now(), line),
                    };
                    logs.send(protocol::LogLine {
                        deployment_id: d,
                        revision_id: rev,
                        kind: protocol::LogKind::Deploy,
                        timestamp: at,
                        level: level_of(text).to_owned(),
                        message: text.to_owned(),
                    })
                    .await;
                }
            }
        });
    }
}

/// One `GET /ok` on a fresh connection: true on a 200.
pub(super) async fn probe(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /ok HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1.") && &head[9..12] == b"200")
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Stops a container (SIGKILL after `stop_timeout`) and removes it; one that is gone
/// already is fine.
pub(super) async fn remove_container(docker: &Docker, id: &str, stop_timeout: Duration) {
    let _ = docker
        .stop_container(
            id,
            Some(StopContainerOptions {
                t: Some(stop_timeout.as_secs() as i32),
                ..Default::default()
            }),
        )
        .await;
    let removed = docker
        .remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                v: false,
                ..Default::default()
            }),
        )
        .await;
    if let Err(e) = removed {
        if !is_not_found(&e) {
            tracing::warn!(container = id, error = %e, "cannot remove a container");
        }
    }
}
