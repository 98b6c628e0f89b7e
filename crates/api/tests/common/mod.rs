//! Test harness: the real router over a real, fresh database per test, on either backend.
//!
//! PostgreSQL tests need `HOSTPLANE_TEST_POSTGRES_URL` (a server URL with rights to
//! create databases); `scripts/test` starts a throwaway server and sets it.

#![allow(dead_code, clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use std::sync::Arc;
use store::{KeyScope, Plan, Store, StoreOptions};
use tower::ServiceExt;
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub router: Router,
    /// The metrics endpoint, served apart from the API.
    pub metrics: Router,
    pub store: Arc<dyn Store>,
    /// Key of the bootstrap workspace.
    pub key: String,
    pub workspace: Uuid,
    pub org: Uuid,
    _dir: Option<tempdir::TempDir>,
}

mod tempdir {
    /// A folder removed on drop.
    pub struct TempDir(pub std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON, however deep (the server accepts 256 levels).
    pub fn json(&self) -> serde_json::Value {
        use serde::Deserialize;
        let mut de = serde_json::Deserializer::from_slice(&self.body);
        de.disable_recursion_limit();
        serde_json::Value::deserialize(&mut de)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// Connects to a fresh, empty database of the given backend.
pub async fn fresh_store(backend: Backend) -> (Arc<dyn Store>, Option<tempdir::TempDir>) {
    let opts = StoreOptions {
        max_connections: 8,
        ..Default::default()
    };
    match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(format!("hostplane-test-{}", Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            let url = format!("sqlite://{}", dir.join("test.db").display());
            (
                store::open(&url, &opts).await.unwrap(),
                Some(tempdir::TempDir(dir)),
            )
        }
        Backend::Postgres => {
            let admin_url = std::env::var("HOSTPLANE_TEST_POSTGRES_URL").unwrap_or_else(|_| {
                panic!(
                    "HOSTPLANE_TEST_POSTGRES_URL is not set: the PostgreSQL half of the suite \
                     needs a server. Run `scripts/test`, which starts a throwaway one."
                )
            });
            let name = format!("hp_test_{}", Uuid::new_v4().simple());
            let admin = sqlx_admin(&admin_url).await;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&admin)
                .await
                .unwrap();
            let (base, _) = admin_url.rsplit_once('/').unwrap();
            let url = format!("{base}/{name}");
            (store::open(&url, &opts).await.unwrap(), None)
        }
    }
}

async fn sqlx_admin(url: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL server at {url}: {e}"))
}

impl TestApp {
    pub async fn new(backend: Backend) -> Self {
        Self::with_config(backend, hostplane_api::ApiConfig::default()).await
    }

    pub async fn with_config(backend: Backend, mut config: hostplane_api::ApiConfig) -> Self {
        let (store, dir) = fresh_store(backend).await;
        let dir = dir.unwrap_or_else(|| {
            let d = std::env::temp_dir().join(format!("hostplane-test-{}", Uuid::new_v4()));
            std::fs::create_dir_all(&d).unwrap();
            tempdir::TempDir(d)
        });
        config.storage_dir = dir.0.join("storage");
        let dir = Some(dir);
        let boot = store
            .bootstrap(None)
            .await
            .unwrap()
            .expect("fresh database bootstraps");
        let key = boot.generated_key.clone().unwrap();
        let router = hostplane_api::router(store.clone(), config);
        let metrics = hostplane_api::telemetry::metrics_router(store.clone());
        TestApp {
            router,
            metrics,
            store,
            key,
            workspace: boot.workspace.id,
            org: boot.org.id,
            _dir: dir,
        }
    }

    /// Where this app keeps uploads.
    pub fn storage_dir(&self) -> std::path::PathBuf {
        self._dir.as_ref().unwrap().0.join("storage")
    }

    /// A new workspace in a new organization on `plan`, with a workspace-scoped key.
    pub async fn other_workspace(&self, plan: Plan) -> (Uuid, String) {
        let org = self.store.create_org("other", plan).await.unwrap();
        let ws = self.store.create_workspace(org.id, "other").await.unwrap();
        let key = self
            .key_for(KeyScope::Workspace {
                org_id: org.id,
                workspace_id: ws.id,
            })
            .await;
        (ws.id, key)
    }

    /// A new workspace in the bootstrap organization, with a workspace-scoped key.
    pub async fn sibling_workspace(&self) -> (Uuid, String) {
        let ws = self
            .store
            .create_workspace(self.org, "sibling")
            .await
            .unwrap();
        let key = self
            .key_for(KeyScope::Workspace {
                org_id: self.org,
                workspace_id: ws.id,
            })
            .await;
        (ws.id, key)
    }

    pub async fn key_for(&self, scope: KeyScope) -> String {
        let value = store::generate_key();
        self.store
            .create_api_key(scope, &store::hash_key(&value))
            .await
            .unwrap();
        value
    }

    /// A listener key for `listener` of the bootstrap workspace.
    pub async fn listener_key(&self, listener: Uuid) -> String {
        self.key_for(KeyScope::Listener {
            org_id: self.org,
            workspace_id: self.workspace,
            listener_id: listener,
        })
        .await
    }

    /// Sends raw parts through the router.
    pub async fn send(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Response {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(body.map(Body::from).unwrap_or_else(Body::empty))
            .unwrap();
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Response {
            status,
            headers,
            body,
        }
    }

    /// One `GET /metrics` on the metrics router: the Prometheus text.
    pub async fn scrape(&self) -> String {
        let req = Request::get("/metrics").body(Body::empty()).unwrap();
        let res = self.metrics.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// A JSON request with the bootstrap key.
    pub async fn call(&self, method: &str, uri: &str, body: Option<serde_json::Value>) -> Response {
        self.call_as(&self.key, method, uri, body).await
    }

    pub async fn call_as(
        &self,
        key: &str,
        method: &str,
        uri: &str,
        body: Option<serde_json::Value>,
    ) -> Response {
        let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
        let mut headers = vec![("x-api-key", key)];
        if bytes.is_some() {
            headers.push(("content-type", "application/json"));
        }
        self.send(method, uri, &headers, bytes).await
    }
}

/// Declares each async test fn(Backend) once per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() { super::$name($crate::common::Backend::Sqlite).await }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() { super::$name($crate::common::Backend::Postgres).await }
            )*
        }
    };
}

/// A valid `external_docker` create body named `name`, with one secret.
pub fn image_body(name: &str) -> Value {
    json!({
        "name": name,
        "source": "external_docker",
        "source_config": {},
        "source_revision_config": {"image_uri": "docker.io/acme/agent:1"},
        "secrets": [{"name": "TOKEN", "value": "s3cret-value"}],
    })
}

/// Creates a deployment with `key`; its answer (which must be a 201).
pub async fn create(app: &TestApp, key: &str, body: Value) -> Value {
    let res = app
        .call_as(key, "POST", "/v2/deployments", Some(body))
        .await;
    assert_eq!(res.status, 201, "{}", String::from_utf8_lossy(&res.body));
    res.json()
}
