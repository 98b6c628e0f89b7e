//! `/metrics` and request ids through the real router.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Backend, TestApp};
use serde_json::json;

async fn metrics_are_exported(backend: Backend) {
    let app = TestApp::new(backend).await;
    let body = json!({"compute_type": "k8s", "compute_id": "m", "compute_config": {}});
    assert_eq!(
        app.call("POST", "/v2/listeners", Some(body)).await.status,
        201
    );
    assert_eq!(app.call("GET", "/v2/listeners", None).await.status, 200);
    assert_eq!(app.call("GET", "/nowhere", None).await.status, 404);
    let res = app.send("GET", "/metrics", &[], None).await;
    assert_eq!(res.status, 200);
    let text = String::from_utf8(res.body).unwrap();
    for needle in [
        r#"http_requests_total{method="POST",route="/v2/listeners",status="201"}"#,
        r#"http_requests_total{method="GET",route="unmatched",status="404"}"#,
        r#"http_request_duration_seconds_bucket{method="GET",route="/v2/listeners",status="200",le="0.005"}"#,
        r#"hostplane_resources{kind="listeners"}"#,
        "db_pool_connections",
        "db_up 1",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    assert!(!text.contains(&app.key), "metrics must never contain keys");
}

async fn request_ids(backend: Backend) {
    let app = TestApp::new(backend).await;
    let res = app.send("GET", "/ok", &[], None).await;
    let id = res
        .headers
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    // A caller's id is kept.
    let res = app
        .send("GET", "/ok", &[("x-request-id", "trace-123")], None)
        .await;
    assert_eq!(res.headers.get("x-request-id").unwrap(), "trace-123");
}

on_both_backends!(metrics_are_exported, request_ids);
