//! `/metrics` and request ids through the real router.
//!
//! The Prometheus recorder is global to the process, so the tests here take turns.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Backend, TestApp};
use serde_json::json;
use std::collections::BTreeSet;

static TURNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The value of one series in a scrape; fails when the series is not there, so a check
/// on a value cannot pass on a series that does not exist.
fn value(text: &str, series: &str) -> f64 {
    find(text, series).unwrap_or_else(|| panic!("no series {series} in the scrape:\n{text}"))
}

/// A counter before the requests a test counts: 0 when no request of its kind has been
/// counted yet in this process (the recorder is global; the series appears with the
/// first one).
fn counter_before(text: &str, series: &str) -> f64 {
    find(text, series).unwrap_or(0.0)
}

fn find(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

/// Every series of a scrape, without values.
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.rsplit_once(' ').unwrap().0.to_owned())
        .collect()
}

async fn metrics_count_each_request(backend: Backend) {
    let _turn = TURNS.lock().await;
    let app = TestApp::new(backend).await;
    let created = r#"http_requests_total{method="POST",route="/v2/listeners",status="201"}"#;
    let listed =
        r#"http_request_duration_seconds_count{method="GET",route="/v2/listeners",status="200"}"#;
    let before = app.scrape().await;
    let body = json!({"compute_type": "k8s", "compute_id": "m", "compute_config": {}});
    assert_eq!(
        app.call("POST", "/v2/listeners", Some(body)).await.status,
        201
    );
    assert_eq!(app.call("GET", "/v2/listeners", None).await.status, 200);
    assert_eq!(app.call("GET", "/nowhere", None).await.status, 404);
    let after = app.scrape().await;
    assert_eq!(
        value(&after, created),
        counter_before(&before, created) + 1.0
    );
    assert_eq!(value(&after, listed), counter_before(&before, listed) + 1.0);
    let unmatched = r#"http_requests_total{method="GET",route="unmatched",status="404"}"#;
    assert_eq!(
        value(&after, unmatched),
        counter_before(&before, unmatched) + 1.0
    );
    // The pool gauges describe this app's pool.
    let pool = app.store.pool_stats();
    assert_eq!(
        value(&after, "db_pool_max_connections"),
        f64::from(pool.max)
    );
    assert!(value(&after, "db_pool_connections") >= 1.0);
    assert_eq!(value(&after, "db_up"), 1.0);
    assert!(!after.contains(&app.key), "metrics must never contain keys");
}

/// `/metrics` is not part of the API's port: it has a router (and address) of its own.
async fn metrics_are_not_on_the_api(backend: Backend) {
    let _turn = TURNS.lock().await;
    let app = TestApp::new(backend).await;
    for path in ["/metrics", "/api-host/metrics"] {
        let res = app.send("GET", path, &[], None).await;
        assert_eq!(
            (res.status.as_u16(), res.json()),
            (404, json!({"detail": "Not Found"}))
        );
    }
}

/// The resource counts are read at most every few seconds, however often one scrapes.
async fn resource_counts_are_cached(backend: Backend) {
    let _turn = TURNS.lock().await;
    let app = TestApp::new(backend).await;
    let listeners = r#"hostplane_resources{kind="listeners"}"#;
    assert_eq!(value(&app.scrape().await, listeners), 0.0);
    let body = json!({"compute_type": "k8s", "compute_id": "c", "compute_config": {}});
    assert_eq!(
        app.call("POST", "/v2/listeners", Some(body)).await.status,
        201
    );
    assert_eq!(value(&app.scrape().await, listeners), 0.0);
    assert_eq!(
        value(
            &app.scrape().await,
            r#"hostplane_resources{kind="workspaces"}"#
        ),
        1.0
    );
}

/// Made-up methods and paths cannot add series: thousands of them leave the set of
/// series as it was, and every label is from the fixed set.
async fn labels_are_bounded(backend: Backend) {
    let _turn = TURNS.lock().await;
    let app = TestApp::new(backend).await;
    let weird = |i: usize| format!("M{i}{}", "X".repeat(2000));
    // One of each kind first, so the series they belong to exist.
    for (method, path) in [
        (weird(0), "/v2/listeners".to_owned()),
        (weird(0), "/x".into()),
        ("GET".into(), "/x".into()),
    ] {
        app.send(&method, &path, &[], None).await;
    }
    let before = series(&app.scrape().await);
    for i in 1..1500 {
        app.send(&weird(i), "/v2/listeners", &[], None).await;
        app.send(&weird(i), &format!("/made-up/{i}"), &[], None)
            .await;
        app.send(
            "GET",
            &format!("/made-up/{i}/{}", "y".repeat(2000)),
            &[],
            None,
        )
        .await;
    }
    let text = app.scrape().await;
    let after = series(&text);
    assert_eq!(after, before);
    assert!(text.len() < 64 * 1024, "{} bytes of metrics", text.len());
    assert!(!text.contains("XXXX") && !text.contains("made-up"));
}

async fn request_ids(backend: Backend) {
    let _turn = TURNS.lock().await;
    let app = TestApp::new(backend).await;
    let id_of = |res: &common::Response| {
        res.headers
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    let res = app.send("GET", "/ok", &[], None).await;
    assert!(uuid::Uuid::parse_str(&id_of(&res)).is_ok());
    // A caller's id is kept when it is short and plain.
    let res = app
        .send("GET", "/ok", &[("x-request-id", "trace-123_a.b:c")], None)
        .await;
    assert_eq!(id_of(&res), "trace-123_a.b:c");
    // Otherwise it is replaced: it is logged, and could forge log fields.
    let long = "a".repeat(129);
    for unsafe_id in ["x status=500 route=/admin", "a\"b", "", &long] {
        let res = app
            .send("GET", "/ok", &[("x-request-id", unsafe_id)], None)
            .await;
        assert!(
            uuid::Uuid::parse_str(&id_of(&res)).is_ok(),
            "{unsafe_id:?} kept"
        );
    }
}

on_both_backends!(
    metrics_count_each_request,
    metrics_are_not_on_the_api,
    resource_counts_are_cached,
    labels_are_bounded,
    request_ids
);
