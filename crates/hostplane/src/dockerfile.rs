//! `hostplane dockerfile`: writes the Dockerfile hostplane's builders use for a project,
//! which is the one the official `langgraph dockerfile` writes, with its flags and its
//! messages (an invalid config exits 2 for the CLI's usage errors, 1 for the others).

use build::{Disk, ErrorKind};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct DockerfileArgs {
    /// Where to write the Dockerfile.
    save_path: PathBuf,
    /// The project's configuration file.
    #[arg(short, long, default_value = "langgraph.json")]
    config: PathBuf,
    /// Base image instead of langchain/langgraph-api or langchain/langgraphjs-api (a tag
    /// pins a version, e.g. langchain/langgraph-server:0.2.18).
    #[arg(long)]
    base_image: Option<String>,
    /// The API server version the base image's tag starts with (e.g. 0.3).
    #[arg(long)]
    api_version: Option<String>,
    /// `distributed` builds on the executor image.
    #[arg(long, value_enum, default_value = "combined_queue_worker")]
    engine_runtime_mode: RuntimeMode,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
#[clap(rename_all = "snake_case")]
enum RuntimeMode {
    CombinedQueueWorker,
    Distributed,
}

const USAGE: &str = "Usage: hostplane dockerfile [OPTIONS] SAVE_PATH\nTry 'hostplane dockerfile \
                     --help' for help.\n";

pub fn run(args: DockerfileArgs) -> ExitCode {
    let config = match std::fs::canonicalize(&args.config) {
        Ok(path) if path.is_file() => path,
        _ => {
            eprintln!(
                "{USAGE}\nError: Invalid value for '--config' / '-c': File '{}' does not exist.",
                args.config.display()
            );
            return ExitCode::from(2);
        }
    };
    let save_path = absolute(&args.save_path);
    let config_text = config.to_string_lossy().into_owned();
    println!("🔍 Validating configuration at path: {config_text}");
    let loaded = match build::load(&Disk, &config_text) {
        Ok(c) => c,
        Err(e) => return failed(&e),
    };
    if loaded.image_distro.as_deref() != Some("wolfi") {
        println!(
            "⚠️  Security Recommendation: Consider switching to Wolfi Linux for enhanced security."
        );
        println!(
            "   Wolfi is a security-oriented, minimal Linux distribution designed for containers."
        );
        println!(
            "   To switch, add '\"image_distro\": \"wolfi\"' to your langgraph.json config file."
        );
        println!();
    }
    println!("✅ Configuration validated!");
    println!("📝 Generating Dockerfile at {}", save_path.display());
    let options = build::Options {
        base_image: args.base_image,
        api_version: args.api_version,
        distributed: args.engine_runtime_mode == RuntimeMode::Distributed,
        ..Default::default()
    };
    let dockerfile = match build::generate(&Disk, &config_text, &loaded, &options) {
        Ok(d) => d,
        Err(e) => return failed(&e),
    };
    if let Err(e) = std::fs::write(&save_path, &dockerfile.text) {
        eprintln!("hostplane: cannot write {}: {e}", save_path.display());
        return ExitCode::FAILURE;
    }
    println!("✅ Created: Dockerfile");
    if !dockerfile.contexts.is_empty() {
        let contexts: Vec<String> = dockerfile
            .contexts
            .iter()
            .map(|(name, path)| format!("{name}={path}"))
            .collect();
        println!(
            "📝 Run docker build with these additional build contexts `--build-context {}`",
            contexts.join(",")
        );
    }
    let folder = save_path.parent().unwrap_or(Path::new("/"));
    println!(
        "🎉 Files generated successfully at path {}!",
        folder.display()
    );
    ExitCode::SUCCESS
}

/// Reports an invalid project as the official CLI does: click's usage error, or the last
/// line of the traceback of the exception it raises.
fn failed(e: &build::Error) -> ExitCode {
    if e.kind == ErrorKind::Usage {
        eprintln!("{USAGE}\nError: {}", e.message);
        ExitCode::from(2)
    } else {
        eprintln!("{}: {}", e.kind.exception(), e.message);
        ExitCode::FAILURE
    }
}

/// `path` made absolute, its existing folder resolved as Python's `Path.resolve` does.
fn absolute(path: &Path) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    match (path.parent().map(std::fs::canonicalize), path.file_name()) {
        (Some(Ok(parent)), Some(name)) => parent.join(name),
        _ => path,
    }
}
