//! The `hostplane` binary: `serve` runs the control plane (the API, the data-plane
//! routes, the console), `listener` runs a listener's agent, `admin` manages
//! organizations, workspaces and API keys directly in the database, and `dockerfile`
//! writes the Dockerfile a project builds from.

mod admin;
mod dockerfile;
mod listener;
mod server;

/// mimalloc: the database drivers allocate per row and per value, and glibc's allocator
/// was the largest single cost of listing (profiled with perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "hostplane",
    version,
    about = "Self-hostable control plane for agent deployments"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API server.
    Serve(Box<ServeArgs>),
    /// Manage organizations, workspaces, API keys and integrations (works while a
    /// server runs).
    Admin(Box<admin::AdminArgs>),
    /// Run a listener agent: the data plane that runs a listener's deployments.
    Listener(Box<listener::ListenerArgs>),
    /// Write the Dockerfile a project builds from (the official `langgraph dockerfile`'s).
    Dockerfile(dockerfile::DockerfileArgs),
}

#[derive(Args, Clone)]
pub struct DbArgs {
    /// `sqlite://PATH` (created if missing) or `postgres://USER:PASS@HOST/DB`.
    #[arg(
        long,
        global = true,
        env = "HOSTPLANE_DATABASE_URL",
        default_value = "sqlite://hostplane.db"
    )]
    database_url: String,
    /// Connections in the PostgreSQL pool.
    #[arg(
        long,
        global = true,
        env = "HOSTPLANE_DB_POOL_SIZE",
        default_value_t = 16
    )]
    db_pool_size: u32,
    /// Milliseconds a request waits for a database connection before it gets 503.
    #[arg(
        long,
        global = true,
        env = "HOSTPLANE_DB_ACQUIRE_TIMEOUT_MS",
        default_value_t = 3000
    )]
    db_acquire_timeout_ms: u64,
}

impl DbArgs {
    async fn open(&self) -> anyhow::Result<std::sync::Arc<dyn store::Store>> {
        let opts = store::StoreOptions {
            max_connections: self.db_pool_size,
            acquire_timeout: Duration::from_millis(self.db_acquire_timeout_ms),
        };
        store::open(&self.database_url, &opts)
            .await
            .context("opening the database")
    }
}

/// The key that seals secrets at rest (deployment secrets, integration credentials).
#[derive(Args, Clone)]
pub struct SecretArgs {
    /// Key that encrypts deployment secrets at rest; the same on every replica.
    #[arg(long, env = "HOSTPLANE_SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// A key used before the current one: secrets it sealed stay readable (key rotation,
    /// or a key shorter than 32 characters from an older version).
    #[arg(long, env = "HOSTPLANE_PREVIOUS_SECRET_KEY", hide_env_values = true)]
    previous_secret_key: Option<String>,
    /// Where a generated secret key is kept when HOSTPLANE_SECRET_KEY is not set
    /// (default: STORAGE_DIR/secret.key).
    #[arg(long, env = "HOSTPLANE_SECRET_KEY_FILE")]
    secret_key_file: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Address to listen on.
    #[arg(long, env = "HOSTPLANE_LISTEN", default_value = "127.0.0.1:1985")]
    listen: SocketAddr,
    /// Address serving Prometheus metrics at `/metrics` (not served unless set; keep it
    /// off the public network, e.g. 127.0.0.1:9185).
    #[arg(long, env = "HOSTPLANE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// API key for the default workspace created on first start (else one is generated).
    #[arg(long, env = "HOSTPLANE_BOOTSTRAP_API_KEY", hide_env_values = true)]
    bootstrap_api_key: Option<String>,
    /// Log filter, e.g. `info` or `hostplane=debug,tower_http=info`.
    #[arg(long, env = "HOSTPLANE_LOG", default_value = "info")]
    log: String,
    #[arg(long, env = "HOSTPLANE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Largest accepted request body in bytes (413 above it).
    #[arg(long, env = "HOSTPLANE_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    max_body_bytes: usize,
    /// Seconds a request may run before it is answered with 503.
    #[arg(long, env = "HOSTPLANE_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    request_timeout_secs: u64,
    /// Seconds a tarball upload may take before it is answered with 503.
    #[arg(long, env = "HOSTPLANE_UPLOAD_TIMEOUT_SECS", default_value_t = 3600)]
    upload_timeout_secs: u64,
    /// Seconds a client has to send a request's headers before the connection is closed.
    #[arg(long, env = "HOSTPLANE_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    header_timeout_secs: u64,
    /// Seconds a connection may stay open with no request in flight after a request
    /// (before its first request, the header timeout applies).
    #[arg(long, env = "HOSTPLANE_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    idle_timeout_secs: u64,
    /// Open client connections in all; more wait in the listen backlog. Lowered to fit
    /// the process's open-file limit when that is smaller.
    #[arg(long, env = "HOSTPLANE_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
    /// Open client connections from one IP address; more are closed at once.
    #[arg(long, env = "HOSTPLANE_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections_per_address: u64,
    /// Base URL clients reach this server at, for upload URLs (default: http://LISTEN).
    #[arg(long, env = "HOSTPLANE_PUBLIC_URL")]
    public_url: Option<String>,
    /// Folder for uploaded source tarballs (and the generated secret key).
    #[arg(long, env = "HOSTPLANE_STORAGE_DIR", default_value = "hostplane-data")]
    storage_dir: PathBuf,
    /// Seconds a listener agent's claim on a revision lasts without a heartbeat; an
    /// expired claim goes back to the queue for another agent replica.
    #[arg(long, env = "HOSTPLANE_DATAPLANE_LEASE_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    dataplane_lease_secs: u64,
    /// Log lines kept per deployment and kind (deploy, build); the oldest go first.
    #[arg(long, env = "HOSTPLANE_LOG_RETENTION_LINES", default_value_t = 10_000,
          value_parser = clap::value_parser!(i64).range(1..))]
    log_retention_lines: i64,
    /// Largest source tarball accepted, in bytes.
    #[arg(long, env = "HOSTPLANE_MAX_UPLOAD_BYTES", default_value_t = 200 * 1024 * 1024)]
    max_upload_bytes: u64,
    /// Most bytes of uploaded source tarballs kept per workspace.
    #[arg(long, env = "HOSTPLANE_UPLOAD_QUOTA_BYTES", default_value_t = 2 * 1024 * 1024 * 1024)]
    upload_quota_bytes: u64,
    /// Milliseconds an authenticated API key is remembered, so that requests skip the
    /// database for it; a key revoked elsewhere (`admin api-key revoke`, another replica)
    /// stops working within this time. 0 asks the database on every request.
    #[arg(long, env = "HOSTPLANE_KEY_CACHE_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    key_cache_ms: u64,
    /// Serve the web console (`/console`, `/o/<workspace>/host/...`) on the API's port.
    #[arg(long, env = "HOSTPLANE_CONSOLE", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    console: bool,
    #[command(flatten)]
    secret: SecretArgs,
    /// Container registry `push-token` issues credentials for: host[:port][/path]. The
    /// registry must use token authentication with this server as its token service.
    #[arg(long, env = "HOSTPLANE_REGISTRY_URL")]
    registry_url: Option<String>,
    /// The registry's `auth.token.service` name.
    #[arg(
        long,
        env = "HOSTPLANE_REGISTRY_SERVICE",
        default_value = "hostplane-registry"
    )]
    registry_service: String,
    /// Key that signs registry tokens (PKCS#8 PEM), its certificate beside it with the
    /// extension `.crt`; both created on first start (default:
    /// STORAGE_DIR/registry-signing-key.pem).
    #[arg(long, env = "HOSTPLANE_REGISTRY_SIGNING_KEY_FILE")]
    registry_signing_key_file: Option<PathBuf>,
    /// Seconds a git command (reading refs, fetching a `github` source) or a call to a
    /// git host's API may take.
    #[arg(long, env = "HOSTPLANE_GIT_TIMEOUT_SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    git_timeout_secs: u64,
    /// Largest `github` source fetched, in bytes (repository data and tarball alike).
    #[arg(long, env = "HOSTPLANE_GIT_MAX_SOURCE_BYTES", default_value_t = 200 * 1024 * 1024)]
    git_max_source_bytes: u64,
    /// Seconds between polls of the branches `build_on_push` deployments follow, for git
    /// hosts that cannot deliver push events to this server; 0 (the default): no polling.
    #[arg(long, env = "HOSTPLANE_GIT_POLL_SECS", default_value_t = 0)]
    git_poll_secs: u64,
    /// Let Agent Auth reach OAuth providers and MCP servers on loopback, private
    /// (10/8, 172.16/12, 192.168/16, fc00::/7) and shared (100.64/10) addresses.
    /// Link-local addresses (cloud metadata services) stay out of reach regardless.
    #[arg(long, env = "HOSTPLANE_AUTH_ALLOW_PRIVATE_NETWORKS")]
    auth_allow_private_networks: bool,
    /// Seconds a call to an OAuth provider or MCP server may take.
    #[arg(long, env = "HOSTPLANE_AUTH_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    auth_timeout_secs: u64,
}

impl ServeArgs {
    fn registry(&self) -> anyhow::Result<Option<api::registry::Registry>> {
        for gone in [
            "HOSTPLANE_REGISTRY_PASSWORD",
            "HOSTPLANE_REGISTRY_TOKEN_FILE",
            "HOSTPLANE_REGISTRY_USERNAME",
        ] {
            if std::env::var_os(gone).is_some() {
                anyhow::bail!(
                    "{gone} is no longer supported: one registry password handed to every \
                     workspace is unsafe; \
                     hostplane now issues per-workspace registry tokens (see docs/security.md)"
                );
            }
        }
        let Some(url) = &self.registry_url else {
            return Ok(None);
        };
        let key_file = self
            .registry_signing_key_file
            .clone()
            .unwrap_or_else(|| self.storage_dir.join("registry-signing-key.pem"));
        if let Some(dir) = key_file.parent().filter(|d| !d.as_os_str().is_empty()) {
            owner_only_dir(dir)?;
        }
        api::registry::Registry::load_or_create(
            url.clone(),
            self.registry_service.clone(),
            &key_file,
        )
        .map(Some)
        .map_err(|e| anyhow::anyhow!("registry signing key: {e}"))
    }
}

impl SecretArgs {
    /// The box sealing secrets, keyed by [`Self::secret_key`]; the key file's default
    /// place is in `storage_dir`, and it is generated there when `create` allows.
    pub(crate) fn secret_box(
        &self,
        storage_dir: &std::path::Path,
        create: bool,
    ) -> anyhow::Result<api::secrets::SecretBox> {
        let key = self.secret_key(storage_dir, create)?;
        api::secrets::SecretBox::new(&key, self.previous_secret_key.as_deref()).map_err(|e| {
            anyhow::anyhow!(
                "HOSTPLANE_SECRET_KEY (or the key file): {e}; to keep reading secrets sealed \
                 with an older key, set that one as HOSTPLANE_PREVIOUS_SECRET_KEY"
            )
        })
    }

    /// The configured key, or the one kept in the key file (generated on first start).
    fn secret_key(&self, storage_dir: &std::path::Path, create: bool) -> anyhow::Result<String> {
        if let Some(key) = &self.secret_key {
            return Ok(key.clone());
        }
        let path = self
            .secret_key_file
            .clone()
            .unwrap_or_else(|| storage_dir.join("secret.key"));
        if let Ok(key) = std::fs::read_to_string(&path) {
            return Ok(key.trim().to_owned());
        }
        if !create {
            anyhow::bail!(
                "no secret key: set HOSTPLANE_SECRET_KEY (or --secret-key-file, --storage-dir) \
                 as the server has it; {} does not exist",
                path.display()
            );
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            owner_only_dir(dir)?;
        }
        let key = api::secrets::SecretBox::generate_key();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating the secret key file {}", path.display()))?;
        std::io::Write::write_all(&mut file, key.as_bytes())?;
        file.sync_all()?;
        tracing::warn!(
            path = %path.display(),
            "HOSTPLANE_SECRET_KEY is not set: generated a key that encrypts deployment secrets \
             and stored it in this file; \
             back it up, and set HOSTPLANE_SECRET_KEY to the same value on every replica"
        );
        Ok(key)
    }
}

/// Creates `dir` and its missing parents readable by the owner only; a folder that was
/// already there and that others may read or write is used, with a warning.
fn owner_only_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Ok(meta) = std::fs::metadata(dir) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %dir.display(), "the storage folder is open to other users \
                                                  (uploaded sources, keys); consider chmod 700");
        }
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

pub(crate) fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    // Colours only on a terminal: a log file or collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// File descriptors kept for everything but client connections (database, uploads,
/// logs, the metrics listener).
const RESERVED_FILES: u64 = 128;

/// `wanted` connections, or fewer when the open-file limit cannot hold them: the soft
/// limit is raised toward the hard one first, and if that is still too low the cap is
/// lowered with a warning, so the server never runs out of descriptors for accepting.
fn fit_open_files(wanted: u64) -> usize {
    let needed = wanted + RESERVED_FILES;
    let Ok(soft) = rlimit::increase_nofile_limit(needed) else {
        return wanted as usize;
    };
    if soft >= needed {
        return wanted as usize;
    }
    let fits = soft.saturating_sub(RESERVED_FILES).max(1);
    tracing::warn!(
        wanted,
        open_file_limit = soft,
        max_connections = fits,
        "the open-file limit is too low for HOSTPLANE_MAX_CONNECTIONS; using fewer"
    );
    fits as usize
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(&args.log, args.log_format);
    let store = args.db.open().await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    // The bound address, so that port 0 (the system picks) gives working URLs.
    let address = listener.local_addr()?;
    if let Some(b) = store
        .bootstrap(args.bootstrap_api_key.as_deref())
        .await
        .context("first-start setup")?
    {
        println!(
            "hostplane: first start: created organization 'default' ({}) {}",
            b.org.plan.as_str(),
            b.org.id
        );
        println!("hostplane: workspace 'default' {}", b.workspace.id);
        match &b.generated_key {
            Some(key) => {
                println!("hostplane: API key for it (shown once, store it now): {key}");
                println!(
                    "hostplane: try: curl -H 'X-Api-Key: {key}' http://{address}/v2/listeners"
                );
            }
            None => println!("hostplane: API key for it: the value of HOSTPLANE_BOOTSTRAP_API_KEY"),
        }
    }
    owner_only_dir(&args.storage_dir)?;
    let config = api::ApiConfig {
        max_body_bytes: args.max_body_bytes,
        request_timeout: Duration::from_secs(args.request_timeout_secs),
        upload_timeout: Duration::from_secs(args.upload_timeout_secs),
        public_url: args
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{address}")),
        storage_dir: args.storage_dir.clone(),
        max_upload_bytes: args.max_upload_bytes,
        upload_quota_bytes: args.upload_quota_bytes,
        registry: args.registry()?,
        secrets: args.secret.secret_box(&args.storage_dir, true)?,
        dataplane: api::dataplane::DataPlaneConfig {
            lease: Duration::from_secs(args.dataplane_lease_secs),
            log_retention: args.log_retention_lines,
        },
        closing: Default::default(),
        key_cache_ttl: Duration::from_millis(args.key_cache_ms),
        console: args.console,
        git: api::git::GitConfig {
            timeout: Duration::from_secs(args.git_timeout_secs),
            max_bytes: args.git_max_source_bytes,
            poll_interval: (args.git_poll_secs > 0)
                .then(|| Duration::from_secs(args.git_poll_secs)),
        },
        outbound: api::oauth::OutboundConfig {
            allow_private: args.auth_allow_private_networks,
            timeout: Duration::from_secs(args.auth_timeout_secs),
            ..Default::default()
        },
    };
    if let Some(addr) = args.metrics_listen {
        let metrics = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics address {addr}"))?;
        tracing::info!(address = %metrics.local_addr()?, "metrics listening");
        let router = api::telemetry::metrics_router(store.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(metrics, router).await {
                tracing::error!(error = %e, "the metrics server stopped");
            }
        });
    }
    api::background::spawn_janitor(
        store.clone(),
        args.storage_dir.clone(),
        config.upload_timeout,
    );
    api::background::spawn_lease_sweeper(store.clone(), config.dataplane.lease);
    let closing = config.closing.clone();
    let wake = store.clone();
    let shutdown = async move {
        shutdown_signal().await;
        // Long-polls answer now instead of holding the drain for up to a minute.
        closing.store(true, std::sync::atomic::Ordering::Relaxed);
        wake.wake_all();
    };
    let console = config
        .console
        .then(|| format!("{}/console", config.public_url));
    let app = api::router(store, config);
    tracing::info!(%address, "hostplane listening");
    if let Some(url) = console {
        tracing::info!(%url, "web console");
    }
    let limits = server::Limits {
        header_read_timeout: Duration::from_secs(args.header_timeout_secs),
        idle_timeout: Duration::from_secs(args.idle_timeout_secs),
        max_connections: fit_open_files(args.max_connections),
        max_connections_per_address: args.max_connections_per_address as usize,
        drain_timeout: Duration::from_secs(args.request_timeout_secs + 5),
    };
    server::serve(listener, app, limits, shutdown).await?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hostplane: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(*args).await.map(|_| std::process::ExitCode::SUCCESS),
            Command::Admin(args) => admin::run(*args).await,
            Command::Listener(args) => listener::run(*args).await,
            Command::Dockerfile(args) => Ok(dockerfile::run(args)),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hostplane: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
