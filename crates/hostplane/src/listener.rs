//! `hostplane listener`: the agent that runs a listener's deployments. It speaks the
//! data-plane protocol to a control plane (`hostplane serve`) with a listener key and
//! applies what it is told through a mode: `native` applies their Kubernetes objects to
//! a cluster; `lgp` applies one `LGP` per deployment for the official operator; `containers` runs deployments as containers on this machine's Docker or
//! Podman engine; `render` writes their Kubernetes objects as files for a GitOps tool.

use crate::LogFormat;
use agent::builds::BuildSettings;
use agent::containers::{ContainerSettings, ContainerSink};
use agent::control::ControlPlane;
use agent::kube::files::{FileSink, RenderSettings};
use agent::kube::native::{Flavor, KubeSettings, KubeSink};
use agent::kube::RenderInputs;
use agent::runner;
use anyhow::Context;
use clap::{Args, ValueEnum};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Where deployments run.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// A Kubernetes cluster, by server-side apply (`KUBECONFIG`, `~/.kube/config`, or the
    /// pod's service account).
    Native,
    /// A Kubernetes cluster that runs the official operator: one `LGP` object per
    /// deployment (`apps.langchain.ai/v1alpha1`).
    Lgp,
    /// Containers on this machine's Docker or Podman engine (`DOCKER_HOST`).
    Containers,
    /// Kubernetes manifests written to `--render-dir` for a GitOps tool to apply.
    Render,
}

#[derive(Args)]
pub struct ListenerArgs {
    /// Base URL of the control plane (`hostplane serve`).
    #[arg(long, env = "HOSTPLANE_CONTROL_PLANE_URL")]
    control_plane_url: String,
    /// The listener this agent runs (`POST /v2/listeners` made it).
    #[arg(long, env = "HOSTPLANE_LISTENER_ID")]
    listener_id: Uuid,
    /// The listener key (`hostplane admin api-key create --listener ID`).
    #[arg(long, env = "HOSTPLANE_LISTENER_KEY", hide_env_values = true)]
    listener_key: String,
    #[arg(
        long,
        env = "HOSTPLANE_LISTENER_MODE",
        value_enum,
        default_value = "native"
    )]
    mode: Mode,
    /// Names this agent replica; claims belong to it, so keep it stable across restarts
    /// (default: the host name).
    #[arg(long, env = "HOSTPLANE_AGENT_ID")]
    agent_id: Option<String>,
    /// render: the folder the manifests go to (`DIR/<namespace>/<deployment>/`).
    #[arg(long, env = "HOSTPLANE_RENDER_DIR", required_if_eq("mode", "render"))]
    render_dir: Option<std::path::PathBuf>,
    /// render: read the cluster the files go to (as native mode connects) and count a
    /// revision as deployed only once the GitOps tool applied it and it rolled out,
    /// rather than once its files are written.
    #[arg(long, env = "HOSTPLANE_RENDER_OBSERVE", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    render_observe: bool,
    /// containers: the address deployments answer on.
    #[arg(long, env = "HOSTPLANE_CONTAINER_BIND", default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// containers: the ports deployments get their address from (`LOW-HIGH`).
    #[arg(long, env = "HOSTPLANE_CONTAINER_PORTS", default_value = "20000-20999",
          value_parser = port_range)]
    ports: (u16, u16),
    /// The image of each deployment's PostgreSQL (unless it brings its own through
    /// `POSTGRES_URI_CUSTOM`).
    #[arg(
        long,
        env = "HOSTPLANE_POSTGRES_IMAGE",
        default_value = "docker.io/library/postgres:16"
    )]
    postgres_image: String,
    /// The image of each deployment's Redis (unless `REDIS_URI_CUSTOM`).
    #[arg(
        long,
        env = "HOSTPLANE_REDIS_IMAGE",
        default_value = "docker.io/library/redis:7"
    )]
    redis_image: String,
    /// Seconds a new revision has to start (native: roll out) and answer `GET /ok`
    /// before it counts as failed.
    #[arg(long, env = "HOSTPLANE_HEALTH_TIMEOUT_SECS", default_value_t = 120)]
    health_timeout_secs: u64,
    /// native: whether `DEPLOYED` also waits for `GET /ok` through the deployment's
    /// Service (by the API server's service proxy).
    #[arg(long, env = "HOSTPLANE_OK_CHECK", default_value_t = true, action = clap::ArgAction::Set)]
    ok_check: bool,
    /// Seconds the previous revision keeps running after traffic moved to the new one.
    #[arg(long, env = "HOSTPLANE_DRAIN_SECS", default_value_t = 2)]
    drain_secs: u64,
    /// Seconds a stopping container gets between SIGTERM and SIGKILL.
    #[arg(long, env = "HOSTPLANE_STOP_TIMEOUT_SECS", default_value_t = 10)]
    stop_timeout_secs: u64,
    /// Whether source revisions (`langgraph deploy --remote`) are built here; off, they
    /// fail at once with `BuildsDisabled` (render mode never builds).
    #[arg(long, env = "HOSTPLANE_BUILDS", default_value_t = true, action = clap::ArgAction::Set)]
    builds: bool,
    /// Where builds unpack their source, one folder per build, removed afterwards
    /// (default: `hostplane-builds` in the system's temporary folder).
    #[arg(long, env = "HOSTPLANE_BUILD_DIR")]
    build_dir: Option<std::path::PathBuf>,
    /// Seconds one build may take once it has a slot (see --max-builds), to its image.
    #[arg(long, env = "HOSTPLANE_BUILD_TIMEOUT_SECS", default_value_t = 1800)]
    build_timeout_secs: u64,
    /// Builds at once; more wait for a free slot.
    #[arg(long, env = "HOSTPLANE_MAX_BUILDS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    max_builds: u64,
    /// Bytes an uploaded source may hold once decompressed (512 MiB).
    #[arg(long, env = "HOSTPLANE_SOURCE_MAX_BYTES", default_value_t = 512 * 1024 * 1024)]
    source_max_bytes: u64,
    /// Files and folders an uploaded source may hold.
    #[arg(long, env = "HOSTPLANE_SOURCE_MAX_ENTRIES", default_value_t = 100_000)]
    source_max_entries: u64,
    /// native, lgp: the image of the build Jobs, BuildKit rootless (it runs
    /// `buildctl-daemonless.sh`, `wget`, `tar` and `sed`).
    #[arg(long, env = "HOSTPLANE_BUILDKIT_IMAGE", default_value = agent::kube::job::DEFAULT_BUILDKIT_IMAGE)]
    buildkit_image: String,
    /// Log filter.
    #[arg(long, env = "HOSTPLANE_LOG", default_value = "info")]
    log: String,
    #[arg(long, env = "HOSTPLANE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

fn port_range(text: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = text
        .split_once('-')
        .ok_or_else(|| "expected LOW-HIGH, e.g. 20000-20999".to_owned())?;
    let lo: u16 = lo.trim().parse().map_err(|e| format!("{lo}: {e}"))?;
    let hi: u16 = hi.trim().parse().map_err(|e| format!("{hi}: {e}"))?;
    if lo == 0 || lo > hi {
        return Err("LOW must be at least 1 and at most HIGH".into());
    }
    Ok((lo, hi))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "hostplane-listener".to_owned())
}

fn render_inputs(args: &ListenerArgs) -> RenderInputs {
    RenderInputs {
        listener_id: args.listener_id,
        listener_key: args.listener_key.clone(),
        postgres_image: args.postgres_image.clone(),
        redis_image: args.redis_image.clone(),
    }
}

async fn kube_sink(
    args: &ListenerArgs,
    flavor: Flavor,
    control: &ControlPlane,
) -> anyhow::Result<KubeSink> {
    KubeSink::connect(
        KubeSettings {
            flavor,
            inputs: render_inputs(args),
            rollout_timeout: Duration::from_secs(args.health_timeout_secs),
            check_ok: args.ok_check,
            poll: Duration::from_secs(1),
            buildkit_image: args.buildkit_image.clone(),
        },
        control.clone(),
    )
    .await
    .context(
        "cannot reach the Kubernetes API server: set KUBECONFIG, or run in a pod with a \
         service account",
    )
}

pub async fn run(args: ListenerArgs) -> anyhow::Result<ExitCode> {
    crate::init_logging(&args.log, args.log_format);
    let agent_id = args.agent_id.clone().unwrap_or_else(host_name);
    let control = ControlPlane::new(
        &args.control_plane_url,
        args.listener_id,
        &args.listener_key,
        &agent_id,
    )?;
    let sink: Arc<dyn runner::Sink> = match args.mode {
        Mode::Native => Arc::new(kube_sink(&args, Flavor::Native, &control).await?),
        Mode::Lgp => Arc::new(kube_sink(&args, Flavor::Lgp, &control).await?),
        Mode::Containers => Arc::new(
            ContainerSink::connect(
                ContainerSettings {
                    listener_id: args.listener_id,
                    listener_key: args.listener_key.clone(),
                    bind: args.bind,
                    ports: args.ports,
                    postgres_image: args.postgres_image.clone(),
                    redis_image: args.redis_image.clone(),
                    health_timeout: Duration::from_secs(args.health_timeout_secs),
                    drain: Duration::from_secs(args.drain_secs),
                    stop_timeout: Duration::from_secs(args.stop_timeout_secs),
                },
                control.clone(),
            )
            .await
            .context(
                "cannot reach the container engine: set DOCKER_HOST (e.g. \
                 unix:///run/podman/podman.sock) or start Docker",
            )?,
        ),
        Mode::Render => {
            let dir = args.render_dir.clone().unwrap_or_default();
            let files = FileSink::new(RenderSettings {
                inputs: render_inputs(&args),
                dir: dir.clone(),
            })
            .with_context(|| format!("cannot create the render folder {}", dir.display()))?;
            if args.render_observe {
                Arc::new(files.observing(kube_sink(&args, Flavor::Native, &control).await?))
            } else {
                Arc::new(files)
            }
        }
    };
    tracing::info!(listener = %args.listener_id, agent = %agent_id, "listener agent starting");
    let builds = BuildSettings {
        enabled: args.builds,
        dir: args
            .build_dir
            .clone()
            .unwrap_or_else(|| BuildSettings::default().dir),
        limits: build::archive::Limits {
            max_bytes: args.source_max_bytes,
            max_entries: args.source_max_entries,
        },
        timeout: Duration::from_secs(args.build_timeout_secs),
        slots: usize::try_from(args.max_builds).unwrap_or(usize::MAX),
    };
    runner::run(control, sink, builds).await;
    Ok(ExitCode::SUCCESS)
}
