//! `loadgen --scenario pollers`: many listener agents long-polling one server (or one
//! replica while changes go to another), measured from a PATCH to the moment the right
//! agent holds the new desired state, plus what the idle pollers cost the server.
//!
//! Setup: one listener per agent, a listener key for each (created straight in the
//! database, as `hostplane admin api-key create --listener` does), one deployment per
//! listener. Then every agent long-polls `desired` with `wait=60`; after an idle period
//! (server CPU and memory read from `/proc`), deployments are PATCHed one at a time and
//! the time until the agent of that deployment has the new revision is recorded. Wake-ups
//! of agents whose state did not change are counted too: there should be none.

use crate::{ms, proc_cpu_seconds, proc_status_kib, HttpClient};
use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct PollerArgs {
    /// Where changes are made (and agents poll, unless `poll_url` is set).
    pub url: String,
    /// Where agents poll: another replica.
    pub poll_url: Option<String>,
    pub key: String,
    pub database_url: String,
    pub pids: Vec<u32>,
    pub pollers: usize,
    pub changes: usize,
    pub idle_seconds: f64,
    pub label: String,
}

async fn send(
    client: &HttpClient,
    url: &str,
    key: &str,
    method: Method,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut req = Request::builder()
        .method(method)
        .uri(url)
        .header("x-api-key", key);
    let bytes = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Bytes::from(b.to_string())
        }
        None => Bytes::new(),
    };
    let res = client.request(req.body(Full::new(bytes))?).await?;
    let status = res.status().as_u16();
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// What each agent last received: the revision of its deployment and when.
type Seen = Arc<Mutex<HashMap<usize, (String, Instant)>>>;

pub async fn run(client: HttpClient, args: PollerArgs) -> anyhow::Result<()> {
    let base = args.url.trim_end_matches('/').to_owned();
    let poll_base = args
        .poll_url
        .clone()
        .unwrap_or_else(|| base.clone())
        .trim_end_matches('/')
        .to_owned();
    let store = store::open(&args.database_url, &store::StoreOptions::default())
        .await
        .context("opening the database to create listener keys")?;
    let run_id = std::process::id();

    // Listeners, keys, one deployment each.
    let mut agents = Vec::with_capacity(args.pollers);
    for i in 0..args.pollers {
        let (status, l) = send(
            &client,
            &format!("{base}/v2/listeners"),
            &args.key,
            Method::POST,
            Some(
                json!({"compute_type": "k8s", "compute_id": format!("poll-{run_id}-{i}"),
                        "compute_config": {"k8s_namespaces": ["ns"]}}),
            ),
        )
        .await?;
        if status != 201 {
            bail!("creating a listener: {status} {l}");
        }
        let listener: uuid::Uuid = l["id"].as_str().unwrap_or_default().parse()?;
        let Some(found) = store.find_listener(listener).await? else {
            bail!("listener {listener} not in the database");
        };
        let Some((ws, _)) = store.get_workspace(found.workspace_id).await? else {
            bail!("no workspace for listener {listener}");
        };
        let key = store::generate_key();
        store
            .create_api_key(
                store::KeyScope::Listener {
                    org_id: ws.org_id,
                    workspace_id: ws.id,
                    listener_id: listener,
                },
                &store::hash_key(&key),
            )
            .await?;
        let (status, d) = send(
            &client,
            &format!("{base}/v2/deployments"),
            &args.key,
            Method::POST,
            Some(
                json!({"name": format!("poll-{run_id}-{i}"), "source": "external_docker",
                        "source_config": {"listener_id": listener},
                        "source_revision_config": {"image_uri": "registry.test/a:0"},
                        "secrets": []}),
            ),
        )
        .await?;
        if status != 201 {
            bail!("creating a deployment: {status} {d}");
        }
        let dep = d["id"].as_str().unwrap_or_default().to_owned();
        agents.push((listener, key, dep));
    }

    // Every agent long-polls; each answer with a new generation is a wake-up.
    let seen: Seen = Arc::default();
    let wakeups = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (i, (listener, key, _)) in agents.iter().enumerate() {
        let (client, seen, wakeups, errors, ready) = (
            client.clone(),
            seen.clone(),
            wakeups.clone(),
            errors.clone(),
            ready.clone(),
        );
        let url = format!("{poll_base}/dataplane/v1/listeners/{listener}/desired");
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut after = -1i64;
            loop {
                let uri = format!("{url}?protocol_version=1&after={after}&wait=60");
                match send(&client, &uri, &key, Method::GET, None).await {
                    Ok((200, state)) => {
                        let g = state["generation"].as_i64().unwrap_or(after);
                        if after == -1 {
                            ready.fetch_add(1, Ordering::Relaxed);
                        } else if g > after {
                            wakeups.fetch_add(1, Ordering::Relaxed);
                        }
                        after = g;
                        let rev = state["deployments"][0]["revision"]["id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        if let Ok(mut s) = seen.lock() {
                            s.insert(i, (rev, Instant::now()));
                        }
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }
    while (ready.load(Ordering::Relaxed) as usize) < agents.len() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let every agent settle into its long-poll.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Idle: what holding the polls costs.
    let cpu_before: Vec<f64> = args.pids.iter().map(|&p| proc_cpu_seconds(p)).collect();
    let idle_start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.idle_seconds)).await;
    let idle = idle_start.elapsed().as_secs_f64();
    let idle_cpu: Vec<f64> = args
        .pids
        .iter()
        .zip(&cpu_before)
        .map(|(&p, before)| (proc_cpu_seconds(p) - before) / idle * 100.0)
        .collect();
    let rss: Vec<f64> = args
        .pids
        .iter()
        .map(|&p| proc_status_kib(p, "VmRSS:") as f64 / 1024.0)
        .collect();
    let idle_wakeups = wakeups.swap(0, Ordering::Relaxed);

    // Changes: PATCH one deployment, wait until its agent holds the new revision.
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut lost = 0;
    for c in 0..args.changes {
        let i = (c * 7919) % agents.len();
        let dep = &agents[i].2;
        let start = Instant::now();
        let (status, d) = send(
            &client,
            &format!("{base}/v2/deployments/{dep}"),
            &args.key,
            Method::PATCH,
            Some(json!({"source_revision_config": {"image_uri": format!("registry.test/a:{}", c + 1)}})),
        )
        .await?;
        if status != 200 {
            bail!("PATCH: {status} {d}");
        }
        let rev = d["latest_revision_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let deadline = start + Duration::from_secs(10);
        loop {
            let arrived = seen
                .lock()
                .ok()
                .and_then(|s| s.get(&i).filter(|(r, _)| *r == rev).map(|(_, t)| *t));
            if let Some(t) = arrived {
                let _ = hist.record((t.saturating_duration_since(start).as_micros() as u64).max(1));
                break;
            }
            if Instant::now() > deadline {
                lost += 1;
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    let change_wakeups = wakeups.load(Ordering::Relaxed);
    for t in &tasks {
        t.abort();
    }

    println!();
    println!("## {}: {} agents long-polling", args.label, agents.len());
    println!();
    println!(
        "| PATCH → agent p50 ms | p99 ms | max ms | changes | missed | wake-ups (changes / idle) \
         | poll errors | idle server CPU % | server RSS MB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let join = |v: &[f64], digits: usize| {
        v.iter()
            .map(|x| format!("{x:.digits$}"))
            .collect::<Vec<_>>()
            .join(" + ")
    };
    println!(
        "| {:.2} | {:.2} | {:.2} | {} | {} | {} / {} | {} | {} | {} |",
        ms(&hist, 0.5),
        ms(&hist, 0.99),
        hist.max() as f64 / 1000.0,
        args.changes,
        lost,
        change_wakeups,
        idle_wakeups,
        errors.load(Ordering::Relaxed),
        join(&idle_cpu, 2),
        join(&rss, 1),
    );
    Ok(())
}
