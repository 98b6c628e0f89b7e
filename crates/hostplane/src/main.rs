//! The `hostplane` binary: `serve` runs the API, `admin` manages organizations,
//! workspaces and API keys directly in the database.

mod admin;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
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
    Serve(ServeArgs),
    /// Manage organizations, workspaces and API keys (works while a server runs).
    Admin(admin::AdminArgs),
}

#[derive(Args, Clone)]
pub struct DbArgs {
    /// `sqlite://PATH` (created if missing) or `postgres://USER:PASS@HOST/DB`.
    #[arg(
        long,
        env = "HOSTPLANE_DATABASE_URL",
        default_value = "sqlite://hostplane.db"
    )]
    database_url: String,
    /// Connections in the PostgreSQL pool.
    #[arg(long, env = "HOSTPLANE_DB_POOL_SIZE", default_value_t = 16)]
    db_pool_size: u32,
}

impl DbArgs {
    async fn open(&self) -> anyhow::Result<std::sync::Arc<dyn store::Store>> {
        let opts = store::StoreOptions {
            max_connections: self.db_pool_size,
            ..Default::default()
        };
        store::open(&self.database_url, &opts)
            .await
            .context("opening the database")
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
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
}

fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(&args.log, args.log_format);
    let store = args.db.open().await?;
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
                    "hostplane: try: curl -H 'X-Api-Key: {key}' http://{}/v2/listeners",
                    args.listen
                );
            }
            None => println!("hostplane: API key for it: the value of HOSTPLANE_BOOTSTRAP_API_KEY"),
        }
    }
    let config = api::ApiConfig {
        max_body_bytes: args.max_body_bytes,
        request_timeout: Duration::from_secs(args.request_timeout_secs),
    };
    let app = api::router(store, config);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, "hostplane listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
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
            Command::Serve(args) => serve(args).await.map(|_| std::process::ExitCode::SUCCESS),
            Command::Admin(args) => admin::run(args).await,
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
