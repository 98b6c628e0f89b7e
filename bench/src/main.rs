//! `loadgen`: a closed-loop HTTP load generator for hostplane.
//!
//! `loadgen suite` seeds a running server and runs every scenario against it with keep-
//! alive connections, a warm-up, fixed concurrency and duration, and prints one table:
//! requests per second (and as a ratio to `GET /ok` in the same run), p50/p99/p99.9
//! latency, errors, the server's CPU seconds per 1,000 requests and its peak RSS, both
//! read from `/proc/PID`.

mod pollers;

use anyhow::{bail, Context};
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Clone)]
#[command(name = "loadgen", about = "Benchmark a running hostplane")]
struct Args {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:1985")]
    url: String,
    /// API key of a workspace on an enterprise organization.
    #[arg(long)]
    key: String,
    /// Server process id, for CPU and memory readings.
    #[arg(long)]
    pid: u32,
    /// A label for the table (e.g. the backend).
    #[arg(long, default_value = "")]
    label: String,
    /// Seconds measured per scenario.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of warm-up before each measurement.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Connections for read scenarios.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Connections for write scenarios.
    #[arg(long, default_value_t = 32)]
    write_connections: usize,
    /// Largest listener count of the scaling run.
    #[arg(long, default_value_t = 100_000)]
    scale_max: u64,
    /// `suite` (every request scenario) or `pollers` (listener agents long-polling).
    #[arg(long, default_value = "suite")]
    scenario: String,
    /// pollers: agents poll this replica while changes go to `--url`.
    #[arg(long)]
    poll_url: Option<String>,
    /// pollers: the other replica's process id.
    #[arg(long)]
    pid2: Option<u32>,
    /// pollers: the server's database, where listener keys are created.
    #[arg(long, default_value = "")]
    database_url: String,
    /// pollers: how many agents.
    #[arg(long, default_value_t = 1000)]
    pollers: usize,
    /// pollers: how many PATCHes are timed.
    #[arg(long, default_value_t = 200)]
    changes: usize,
    /// pollers: seconds the agents sit idle while the server's cost is read.
    #[arg(long, default_value_t = 20.0)]
    idle: f64,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Target {
    client: HttpClient,
    url: String,
    key: String,
}

impl Target {
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Bytes)> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url))
            .header("x-api-key", &self.key);
        let bytes = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Bytes::from(b.to_string())
            }
            None => Bytes::new(),
        };
        let res = self.client.request(req.body(Full::new(bytes))?).await?;
        let status = res.status().as_u16();
        let body = res.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// What one request of a scenario is, given a unique counter.
type RequestFn = Arc<dyn Fn(u64) -> (Method, String, Option<Value>) + Send + Sync>;

struct Outcome {
    name: String,
    requests: u64,
    errors: u64,
    seconds: f64,
    hist: Histogram<u64>,
    cpu_seconds: f64,
    peak_rss_kib: u64,
}

impl Outcome {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

fn proc_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the full line: 11 and 12 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resets the peak-RSS mark so each scenario reports its own peak.
fn reset_peak_rss(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

async fn run_scenario(
    target: &Arc<Target>,
    args: &Args,
    name: &str,
    connections: usize,
    make: RequestFn,
) -> Outcome {
    let counter = Arc::new(AtomicU64::new(0));
    let worker = |measure: bool, seconds: f64| {
        let tasks: Vec<_> = (0..connections)
            .map(|_| {
                let (target, make, counter) = (target.clone(), make.clone(), counter.clone());
                tokio::spawn(async move {
                    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()));
                    let (mut ok, mut errors) = (0u64, 0u64);
                    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
                    while Instant::now() < deadline {
                        let (method, path, body) = make(counter.fetch_add(1, Ordering::Relaxed));
                        let start = Instant::now();
                        let result = target.send(method, &path, body).await;
                        let micros = start.elapsed().as_micros() as u64;
                        match result {
                            Ok((status, _)) if status < 400 => ok += 1,
                            _ => errors += 1,
                        }
                        if measure {
                            let _ = hist.record(micros.max(1));
                        }
                    }
                    (hist, ok, errors)
                })
            })
            .collect();
        tasks
    };
    for t in worker(false, args.warmup) {
        let _ = t.await;
    }
    reset_peak_rss(args.pid);
    let cpu_before = proc_cpu_seconds(args.pid);
    let start = Instant::now();
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable!());
    let (mut ok, mut errors) = (0, 0);
    for t in worker(true, args.duration) {
        if let Ok((h, o, e)) = t.await {
            let _ = hist.add(&h);
            ok += o;
            errors += e;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu = proc_cpu_seconds(args.pid) - cpu_before;
    let peak = proc_status_kib(args.pid, "VmHWM:");
    Outcome {
        name: name.to_owned(),
        requests: ok + errors,
        errors,
        seconds,
        hist,
        cpu_seconds: cpu,
        peak_rss_kib: peak,
    }
}

fn listener_body(compute_id: String) -> Value {
    json!({
        "compute_type": "k8s",
        "compute_id": compute_id,
        "compute_config": {"k8s_namespaces": ["agents"]},
    })
}

/// Creates listeners until the workspace holds `total`.
async fn seed_listeners(target: &Arc<Target>, total: u64) -> anyhow::Result<()> {
    let have = count_listeners(target).await?;
    if have >= total {
        return Ok(());
    }
    let next = Arc::new(AtomicU64::new(have));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (target, next) = (target.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return Ok::<(), anyhow::Error>(());
                    }
                    let (status, body) = target
                        .send(
                            Method::POST,
                            "/v2/listeners",
                            Some(listener_body(format!("seed-{n}"))),
                        )
                        .await?;
                    if status != 201 && status != 409 {
                        bail!(
                            "seeding answered {status}: {}",
                            String::from_utf8_lossy(&body)
                        );
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn count_listeners(target: &Arc<Target>) -> anyhow::Result<u64> {
    // Binary search on offset: cheap for any size.
    let (mut lo, mut hi) = (0u64, 1u64);
    let has = |offset: u64| {
        let target = target.clone();
        async move {
            let (_, body) = target
                .send(
                    Method::GET,
                    &format!("/v2/listeners?limit=1&offset={offset}"),
                    None,
                )
                .await?;
            let v: Value = serde_json::from_slice(&body)?;
            Ok::<bool, anyhow::Error>(v["resources"].as_array().is_some_and(|a| !a.is_empty()))
        }
    };
    while has(hi - 1).await? {
        lo = hi;
        hi *= 2;
    }
    while lo < hi {
        let mid = (lo + hi) / 2;
        if has(mid).await? {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn print_table(label: &str, outcomes: &[Outcome], ok_rps: f64) {
    println!();
    println!("## {label}");
    println!();
    println!(
        "| scenario | req/s | vs /ok | p50 ms | p99 ms | p99.9 ms | errors \
         | server CPU s / 1k req | peak RSS MB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for o in outcomes {
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.3} | {:.1} |",
            o.name,
            o.rps(),
            o.rps() / ok_rps,
            ms(&o.hist, 0.5),
            ms(&o.hist, 0.99),
            ms(&o.hist, 0.999),
            o.errors,
            o.cpu_seconds * 1000.0 / o.requests.max(1) as f64,
            o.peak_rss_kib as f64 / 1024.0
        );
    }
}

fn fixed(method: Method, path: String) -> RequestFn {
    Arc::new(move |_| (method.clone(), path.clone(), None))
}

async fn suite(args: Args) -> anyhow::Result<()> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector);
    let target = Arc::new(Target {
        client,
        url: args.url.trim_end_matches('/').to_owned(),
        key: args.key.clone(),
    });
    let idle_rss = proc_status_kib(args.pid, "VmRSS:");
    let run_id = std::process::id();
    let mut outcomes = Vec::new();

    let ok = run_scenario(
        &target,
        &args,
        "GET /ok",
        args.connections,
        fixed(Method::GET, "/ok".into()),
    )
    .await;
    let ok_rps = ok.rps();
    outcomes.push(ok);

    let mut scaling = Vec::new();
    for size in [1_000u64, 10_000] {
        seed_listeners(&target, size).await?;
        let o = run_scenario(
            &target,
            &args,
            &format!("list 100 @ offset 0, {size} listeners"),
            args.connections,
            fixed(Method::GET, "/v2/listeners?limit=100&offset=0".into()),
        )
        .await;
        scaling.push((size, ms(&o.hist, 0.5), ms(&o.hist, 0.99), o.rps()));
        if size == 10_000 {
            outcomes.push(o);
        }
    }

    let (_, first) = target
        .send(Method::GET, "/v2/listeners?limit=1", None)
        .await?;
    let first: Value = serde_json::from_slice(&first)?;
    let listener_id = first["resources"][0]["id"]
        .as_str()
        .context("no listener to read")?
        .to_owned();
    outcomes.push(
        run_scenario(
            &target,
            &args,
            "get listener",
            args.connections,
            fixed(Method::GET, format!("/v2/listeners/{listener_id}")),
        )
        .await,
    );
    outcomes.push(
        run_scenario(
            &target,
            &args,
            "list 100 @ offset 9900 of 10,000",
            args.connections,
            fixed(Method::GET, "/v2/listeners?limit=100&offset=9900".into()),
        )
        .await,
    );
    let patch_id = listener_id.clone();
    outcomes.push(
        run_scenario(
            &target,
            &args,
            "patch listener",
            args.connections,
            Arc::new(move |n| {
                (
                    Method::PATCH,
                    format!("/v2/listeners/{patch_id}"),
                    Some(json!({"version": format!("v{n}")})),
                )
            }),
        )
        .await,
    );
    let mix_id = listener_id.clone();
    outcomes.push(
        run_scenario(
            &target,
            &args,
            "mix 90% get / 10% create",
            args.write_connections,
            Arc::new(move |n| {
                if n % 10 == 0 {
                    (
                        Method::POST,
                        "/v2/listeners".into(),
                        Some(listener_body(format!("mix-{run_id}-{n}"))),
                    )
                } else {
                    (Method::GET, format!("/v2/listeners/{mix_id}"), None)
                }
            }),
        )
        .await,
    );
    outcomes.push(
        run_scenario(
            &target,
            &args,
            &format!("create listener ({} conns)", args.write_connections),
            args.write_connections,
            Arc::new(move |n| {
                (
                    Method::POST,
                    "/v2/listeners".into(),
                    Some(listener_body(format!("bench-{run_id}-{n}"))),
                )
            }),
        )
        .await,
    );
    let label = format!("create deployment ({} conns)", args.write_connections);
    let body = move |n| {
        let body = json!({
            "name": format!("d{run_id}-{n}"),
            "source": "internal_docker",
            "source_config": {},
            "source_revision_config": {},
            "secrets": [{"name": "K", "value": "v"}],
        });
        (Method::POST, "/v2/deployments".into(), Some(body))
    };
    outcomes.push(
        run_scenario(
            &target,
            &args,
            &label,
            args.write_connections,
            Arc::new(body),
        )
        .await,
    );
    let (_, dep) = target
        .send(Method::GET, "/v2/deployments?limit=1", None)
        .await?;
    let dep: Value = serde_json::from_slice(&dep)?;
    let dep_id = dep["resources"][0]["id"]
        .as_str()
        .context("no deployment to read")?
        .to_owned();
    outcomes.push(
        run_scenario(
            &target,
            &args,
            "get deployment",
            args.connections,
            fixed(Method::GET, format!("/v2/deployments/{dep_id}")),
        )
        .await,
    );

    if args.scale_max > 10_000 {
        seed_listeners(&target, args.scale_max).await?;
        let o = run_scenario(
            &target,
            &args,
            &format!("list 100 @ offset 0, {} listeners", args.scale_max),
            args.connections,
            fixed(Method::GET, "/v2/listeners?limit=100&offset=0".into()),
        )
        .await;
        scaling.push((args.scale_max, ms(&o.hist, 0.5), ms(&o.hist, 0.99), o.rps()));
        outcomes.push(o);
    }

    print_table(&args.label, &outcomes, ok_rps);
    println!();
    println!(
        "Scaling (list 100 at offset 0; the count includes listeners created by earlier \
         scenarios):"
    );
    println!();
    println!("| listeners | p50 ms | p99 ms | req/s |");
    println!("|---:|---:|---:|---:|");
    for (size, p50, p99, rps) in &scaling {
        println!("| {size} | {p50:.2} | {p99:.2} | {rps:.0} |");
    }
    let peak = outcomes.iter().map(|o| o.peak_rss_kib).max().unwrap_or(0);
    println!();
    println!(
        "Server RSS: {:.1} MB idle at start, {:.1} MB peak under load.",
        idle_rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.scenario == "pollers" {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(4096)
            .build(connector);
        let poller_args = pollers::PollerArgs {
            url: args.url.clone(),
            poll_url: args.poll_url.clone(),
            key: args.key.clone(),
            database_url: args.database_url.clone(),
            pids: std::iter::once(args.pid).chain(args.pid2).collect(),
            pollers: args.pollers,
            changes: args.changes,
            idle_seconds: args.idle,
            label: args.label.clone(),
        };
        return rt.block_on(pollers::run(client, poller_args));
    }
    rt.block_on(suite(args))
}
