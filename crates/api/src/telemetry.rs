//! Operator telemetry: Prometheus metrics at `/metrics` (served on an address of its own,
//! see [`metrics_router`]) and one structured log line per request (request id, method,
//! route template, status, duration). Never keys or secrets.
//!
//! Every label comes from a fixed set: methods outside the standard ones are `other`,
//! routes are the router's templates or `unmatched`, so no request can add series.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use store::{ResourceCounts, Store};

/// The route template a response was produced by, handed from the router to the outer
/// middleware.
#[derive(Clone)]
struct Route(String);

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The process-wide Prometheus recorder (installed on first use).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("http_request_duration_seconds".into()),
                LATENCY_BUCKETS,
            )
            .map(PrometheusBuilder::build_recorder);
        match recorder {
            Ok(recorder) => {
                let handle = recorder.handle();
                // Fails only when another recorder was installed first; then ours stays empty.
                let _ = metrics::set_global_recorder(recorder);
                handle
            }
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        }
    })
}

/// Inside the router: remembers which route template matched, and counts the requests
/// of each route between routing and their answer in `http_requests_in_flight` (a
/// request whose client went away stops counting when its handler is dropped).
pub async fn tag_route(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let _in_flight = route
        .clone()
        .map(|route| Held::up(metrics::gauge!("http_requests_in_flight", "route" => route)));
    let mut res = next.run(req).await;
    if let Some(route) = route {
        res.extensions_mut().insert(Route(route));
    }
    res
}

/// One unit of a gauge, held from [`Held::up`] until dropped (the answer, a wake-up, or
/// a client that went away, which drops its handler).
pub(crate) struct Held(metrics::Gauge);

impl Held {
    pub(crate) fn up(gauge: metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Held(gauge)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// The method as a label: made-up methods all count as `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Longest caller-supplied request id kept.
const MAX_REQUEST_ID: usize = 128;

/// A caller's `X-Request-Id` is logged and echoed, so it is kept only when it is one
/// short value of letters, digits and `-_.:`; anything else is replaced by a generated
/// id (it could otherwise forge fields in text logs).
pub async fn drop_unsafe_request_id(mut req: Request, next: Next) -> Response {
    let ids = req.headers().get_all("x-request-id");
    let mut values = ids.iter();
    let safe = match (values.next(), values.next()) {
        (Some(v), None) => is_safe_request_id(v.as_bytes()),
        (None, _) => true,
        (Some(_), Some(_)) => false,
    };
    if !safe {
        req.headers_mut().remove("x-request-id");
    }
    next.run(req).await
}

fn is_safe_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len())
        && id
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
}

/// Around everything: counts, times and logs each request.
pub async fn observe(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(req.method());
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let res = next.run(req).await;
    let route = res
        .extensions()
        .get::<Route>()
        .map_or("unmatched", |r| r.0.as_str())
        .to_owned();
    let status = res.status().as_u16();
    let elapsed = start.elapsed();
    let labels = [
        ("method", method.to_owned()),
        ("route", route.clone()),
        ("status", status.to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
    tracing::info!(
        target: "hostplane::request",
        request_id = %request_id,
        method = %method,
        route = %route,
        status,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    res
}

/// How long resource counts are reused between scrapes: counting whole tables on every
/// scrape would let a scraper (or anyone who can reach it) load the database.
const COUNTS_TTL: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct MetricsState {
    store: Arc<dyn Store>,
    counts: Arc<tokio::sync::Mutex<Option<(Instant, ResourceCounts)>>>,
}

/// The metrics endpoint, on a router of its own so that it can listen on an address of
/// its own (off the public network) instead of beside the API.
pub fn metrics_router(store: Arc<dyn Store>) -> Router {
    prometheus();
    Router::new()
        .route("/metrics", get(serve_metrics))
        .with_state(MetricsState {
            store,
            counts: Arc::default(),
        })
}

/// The resource counts, read at most once per [`COUNTS_TTL`]; concurrent scrapes wait
/// for one query instead of each running their own.
async fn resource_counts(state: &MetricsState) -> store::Result<ResourceCounts> {
    let mut cached = state.counts.lock().await;
    if let Some((at, counts)) = *cached {
        if at.elapsed() < COUNTS_TTL {
            return Ok(counts);
        }
    }
    let counts = state.store.resource_counts().await?;
    *cached = Some((Instant::now(), counts));
    Ok(counts)
}

/// `GET /metrics`: Prometheus text format, with database pool and resource gauges
/// refreshed at scrape time (the counts at most every [`COUNTS_TTL`]).
async fn serve_metrics(State(state): State<MetricsState>) -> Response {
    let pool = state.store.pool_stats();
    metrics::gauge!("db_pool_connections").set(f64::from(pool.size));
    metrics::gauge!("db_pool_idle_connections").set(pool.idle as f64);
    metrics::gauge!("db_pool_max_connections").set(f64::from(pool.max));
    metrics::counter!("db_group_commits_total").absolute(pool.group_commits);
    metrics::counter!("db_group_committed_writes_total").absolute(pool.group_committed_writes);
    match resource_counts(&state).await {
        Ok(counts) => {
            for (kind, n) in [
                ("organizations", counts.organizations),
                ("workspaces", counts.workspaces),
                ("api_keys", counts.api_keys),
                ("listeners", counts.listeners),
                ("deployments", counts.deployments),
                ("revisions", counts.revisions),
            ] {
                metrics::gauge!("hostplane_resources", "kind" => kind).set(n as f64);
            }
            metrics::gauge!("db_up").set(1.0);
        }
        Err(_) => metrics::gauge!("db_up").set(0.0),
    }
    let body = prometheus().render();
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}
