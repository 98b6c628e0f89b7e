//! hostplane's HTTP API: the router, one module per resource, authentication, the single
//! error-to-HTTP mapping and the served OpenAPI document.

pub mod agent_auth;
pub mod auth;
pub mod background;
pub mod bodies;
pub mod console;
pub mod dataplane;
pub mod deployments;
pub mod error;
pub mod git;
pub mod integrations;
pub mod listeners;
pub mod logs;
pub mod oauth;
pub mod openapi;
pub mod operations;
pub mod registry;
pub mod request;
pub mod routing;
pub mod secrets;
pub mod telemetry;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put, MethodRouter};
use axum::Router;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use store::Store;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// A request still running after this long is answered with 503.
    pub request_timeout: Duration,
    /// The same for tarball uploads, which may be large and slow.
    pub upload_timeout: Duration,
    /// Base URL clients reach this server at (upload URLs are built on it).
    pub public_url: String,
    /// Where uploaded source tarballs are kept.
    pub storage_dir: PathBuf,
    /// Largest source tarball accepted.
    pub max_upload_bytes: u64,
    /// Most bytes of uploaded tarballs kept per workspace.
    pub upload_quota_bytes: u64,
    /// The registry `push-token` issues credentials for (none: not set up).
    pub registry: Option<registry::Registry>,
    /// Seals deployment secrets at rest.
    pub secrets: secrets::SecretBox,
    /// Leases and log retention of the data plane.
    pub dataplane: dataplane::DataPlaneConfig,
    /// Set when the server begins to shut down: long-polls answer at once.
    pub closing: Arc<std::sync::atomic::AtomicBool>,
    /// How long an authenticated key is remembered ([`auth::KeyCache`]); zero (the
    /// library's default; the binary sets 1 s): never.
    pub key_cache_ttl: Duration,
    /// Whether the web console ([`console`]) is served.
    pub console: bool,
    /// Limits of fetching `github` sources ([`git`]).
    pub git: git::GitConfig,
    /// Limits and address policy of Agent Auth's calls to providers ([`oauth`]).
    pub outbound: oauth::OutboundConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            upload_timeout: Duration::from_secs(3600),
            public_url: "http://127.0.0.1:1985".into(),
            storage_dir: PathBuf::from("hostplane-data"),
            max_upload_bytes: 200 * 1024 * 1024,
            upload_quota_bytes: 2 * 1024 * 1024 * 1024,
            registry: None,
            secrets: secrets::SecretBox::generate(),
            dataplane: dataplane::DataPlaneConfig::default(),
            closing: Arc::default(),
            key_cache_ttl: Duration::ZERO,
            console: true,
            git: git::GitConfig::default(),
            outbound: oauth::OutboundConfig::default(),
        }
    }
}

/// One page of a list: `{"resources": [...], "offset": <offset of the next page>}`.
#[derive(serde::Serialize)]
pub struct Page<T> {
    pub resources: Vec<T>,
    pub offset: i128,
}

impl<T: serde::Serialize> Page<T> {
    /// The 200 answer for the page read at `offset` (the next page starts after it).
    pub fn response(resources: Vec<T>, offset: i128) -> axum::response::Response {
        let offset = offset + resources.len() as i128;
        error::json_response(StatusCode::OK, &Page { resources, offset })
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub keys: Arc<auth::KeyCache>,
    /// Rendered bodies of listeners and deployments ([`bodies`]).
    pub bodies: Arc<bodies::Bodies>,
    pub config: Arc<ApiConfig>,
    pub secrets: secrets::SecretBox,
    /// Git and REST access to integrations' hosts.
    pub forge: Arc<git::Forge>,
    /// Agent Auth's client for OAuth providers and MCP servers.
    pub outbound: Arc<oauth::Outbound>,
    /// Token refreshes under way, one per token.
    pub refreshes: Arc<operations::agent_auth::Turns>,
}

/// Every route of the compatible API with its handlers. The router and the
/// trailing-slash redirect ([`routing`]) are both built from this one list.
fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    use deployments::uploads;
    vec![
        (
            "/v2/listeners",
            get(listeners::list).post(listeners::create),
        ),
        (
            "/v2/listeners/{listener_id}",
            get(listeners::get)
                .patch(listeners::patch)
                .delete(listeners::delete),
        ),
        (
            "/v2/deployments",
            get(deployments::list)
                .post(deployments::create)
                .delete(deployments::delete_many),
        ),
        (
            "/v2/deployments/{deployment_id}",
            get(deployments::get)
                .patch(deployments::patch)
                .delete(deployments::delete),
        ),
        (
            "/v2/deployments/{deployment_id}/revisions",
            get(deployments::list_revisions),
        ),
        (
            "/v2/deployments/{deployment_id}/revisions/{revision_id}",
            get(deployments::get_revision),
        ),
        (
            "/v2/deployments/{deployment_id}/revisions/{revision_id}/redeploy",
            post(deployments::redeploy),
        ),
        (
            "/v2/deployments/{deployment_id}/push-token",
            post(uploads::push_token),
        ),
        (
            "/v2/deployments/{deployment_id}/upload-url",
            post(uploads::upload_url),
        ),
        ("/uploads/{token}", put(uploads::put_upload)),
        (
            "/v1/projects/{deployment_id}/deploy_logs",
            post(logs::deploy_logs),
        ),
        (
            "/v1/projects/{deployment_id}/revisions/{revision_id}/deploy_logs",
            post(logs::revision_deploy_logs),
        ),
        (
            "/v1/projects/{deployment_id}/revisions/{revision_id}/build_logs",
            post(logs::revision_build_logs),
        ),
        ("/v1/integrations/github/install", get(integrations::list)),
        (
            "/v1/integrations/github/{integration_id}/repos",
            get(integrations::repositories),
        ),
        (
            "/v1/integrations/forge/github/install",
            get(integrations::list),
        ),
        (
            "/v1/integrations/forge/github/{integration_id}/repos",
            get(integrations::repositories),
        ),
        (
            "/v2/auth/providers",
            get(agent_auth::list_providers).post(agent_auth::create_provider),
        ),
        (
            "/v2/auth/providers/{provider_id}",
            get(agent_auth::get_provider)
                .patch(agent_auth::update_provider)
                .delete(agent_auth::delete_provider)
                .post(agent_auth::discover_provider),
        ),
        ("/v2/auth/setup/{provider_id}", get(agent_auth::setup_page)),
        (
            "/v2/auth/callback/{provider_id}",
            get(agent_auth::callback_query).post(agent_auth::callback),
        ),
        ("/v2/auth/authenticate", post(agent_auth::authenticate)),
        ("/v2/auth/wait/{auth_id}", get(agent_auth::wait)),
        (
            "/v2/auth/tokens",
            get(agent_auth::list_tokens).delete(agent_auth::revoke_tokens),
        ),
        (
            "/v2/auth/tokens/exists",
            get(agent_auth::token_exists).delete(agent_auth::delete_token),
        ),
        (
            "/v2/auth/tokens/{token_id}",
            delete(agent_auth::delete_token),
        ),
        (
            "/v2/auth/tokens/{token_id}/metadata",
            patch(agent_auth::update_token),
        ),
        (
            "/v2/auth/tokens/workspace/slack/exists",
            get(agent_auth::slack_exists),
        ),
        (
            "/v2/auth/tokens/workspace/slack",
            delete(agent_auth::revoke_slack),
        ),
        (
            "/v2/auth/agents/{agent_id}/connections",
            get(agent_auth::list_connections).post(agent_auth::create_connection),
        ),
        (
            "/v2/auth/agents/{agent_id}/connections/{connection_id}",
            delete(agent_auth::delete_connection),
        ),
        ("/openapi.json", get(openapi::serve)),
        ("/ok", get(ok)),
    ]
}

/// The data-plane routes (their own surface, not part of the compatible API), under
/// [`dataplane::PREFIX`].
fn dataplane_routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/heartbeat", post(dataplane::heartbeat)),
        ("/desired", get(dataplane::desired)),
        ("/revisions/{revision_id}/claim", post(dataplane::claim)),
        ("/revisions/{revision_id}/source", get(dataplane::source)),
        ("/revisions/{revision_id}/status", post(dataplane::report)),
        (
            "/deployments/{deployment_id}/deleted",
            post(dataplane::deleted),
        ),
        ("/logs", post(dataplane::logs)),
        ("/registry-credential", post(dataplane::registry_credential)),
        (
            "/revisions/{revision_id}/build-credential",
            post(dataplane::build_credential),
        ),
        (
            "/revisions/{revision_id}/build-source",
            get(dataplane::build_source),
        ),
    ]
}

/// The data plane's router: its routes and its own document.
fn dataplane_api() -> Router<AppState> {
    let routes = dataplane_routes()
        .into_iter()
        .map(|(t, handlers)| (format!("{}{t}", dataplane::PREFIX), handlers))
        .chain([(
            "/dataplane/openapi.json".to_owned(),
            get(dataplane::openapi::serve),
        )]);
    router_of(routes)
}

/// A router of `routes`, with FastAPI's 405 and route templates for telemetry.
fn router_of<S: AsRef<str>>(
    routes: impl IntoIterator<Item = (S, MethodRouter<AppState>)>,
) -> Router<AppState> {
    routes
        .into_iter()
        .fold(Router::new(), |router, (template, handlers)| {
            router.route(template.as_ref(), handlers)
        })
        .method_not_allowed_fallback(routing::method_not_allowed)
        .route_layer(axum::middleware::from_fn(telemetry::tag_route))
}

/// The data-plane route templates, prefix included.
pub fn dataplane_templates() -> Vec<String> {
    dataplane_routes()
        .into_iter()
        .map(|(t, _)| format!("{}{t}", dataplane::PREFIX))
        .collect()
}

/// The templates of [`routes`].
pub fn route_templates() -> &'static [&'static str] {
    static TEMPLATES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    TEMPLATES.get_or_init(|| routes().into_iter().map(|(t, _)| t).collect())
}

/// The compatible API, mounted at the root and under `/api-host`.
fn compatible_api() -> Router<AppState> {
    router_of(routes())
}

async fn ok() -> Response {
    error::json_response(StatusCode::OK, &serde_json::json!({ "ok": true }))
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    error::ApiError::Internal(format!("a handler panicked: {message}")).into_response()
}

/// The whole service: routes, fallbacks, request ids, tracing, panic and time limits.
pub fn router(store: Arc<dyn Store>, config: ApiConfig) -> Router {
    let limits = (config.request_timeout, config.upload_timeout);
    telemetry::prometheus();
    let secrets = config.secrets.clone();
    let state = AppState {
        store,
        keys: Arc::new(auth::KeyCache::new(config.key_cache_ttl)),
        bodies: Arc::default(),
        forge: Arc::new(git::Forge::new(config.git.clone())),
        outbound: Arc::new(oauth::Outbound::new(config.outbound.clone())),
        refreshes: Arc::default(),
        config: Arc::new(config),
        secrets,
    };
    if let Some(every) = state.config.git.poll_interval {
        background::spawn_git_poller(state.clone(), every);
    }
    let api = compatible_api();
    let console = if state.config.console {
        console::router()
    } else {
        Router::new()
    };
    let app = Router::new()
        .merge(api.clone())
        .nest(routing::SELF_HOSTED_PREFIX, api)
        .merge(dataplane_api())
        .route("/registry/token", get(registry::token))
        .route(integrations::WEBHOOK_ROUTE, post(integrations::push))
        .route(
            agent_auth::BROWSER_CALLBACK_ROUTE,
            get(agent_auth::callback_page),
        )
        .merge(console)
        .fallback(routing::fallback)
        .with_state(state);
    with_service_layers(app, limits)
}

/// What wraps every route: panics become a 500 answer, a time limit, telemetry and
/// request ids.
fn with_service_layers(app: Router, (request_limit, upload_limit): (Duration, Duration)) -> Router {
    let app = app
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| async move {
                let path = req.uri().path();
                let limit = if routing::is_transfer(path) {
                    upload_limit
                } else {
                    request_limit + routing::long_poll_wait(path).unwrap_or_default()
                };
                match tokio::time::timeout(limit, next.run(req)).await {
                    Ok(res) => res,
                    Err(_) => error::ApiError::Unavailable(
                        "The request took too long and was stopped.".into(),
                    )
                    .into_response(),
                }
            },
        ));
    // The rest wraps the router as a whole (a layer on a router wraps each route after
    // its method is chosen), so that HEAD can be refused before axum routes it to GET.
    Router::new()
        .fallback_service(app)
        .layer(axum::middleware::from_fn(routing::no_head))
        .layer(axum::middleware::from_fn(telemetry::observe))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(axum::middleware::from_fn(telemetry::drop_unsafe_request_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    /// A handler that panics answers 500 with a detail, and the service keeps serving.
    #[tokio::test]
    async fn panics_become_500_and_service_goes_on() {
        async fn boom() -> &'static str {
            panic!("handler bug")
        }
        async fn fine() -> &'static str {
            "fine"
        }
        let app = with_service_layers(
            Router::new()
                .route("/boom", get(boom))
                .route("/fine", get(fine)),
            (Duration::from_secs(5), Duration::from_secs(5)),
        );
        let res = app
            .clone()
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], br#"{"detail":"Internal Server Error"}"#);
        let res = app
            .oneshot(Request::get("/fine").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    /// A request over the time limit answers 503; uploads have a longer limit.
    #[tokio::test]
    async fn slow_requests_get_503() {
        async fn slow() -> &'static str {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "late"
        }
        let app = with_service_layers(
            Router::new()
                .route("/slow", get(slow))
                .route("/uploads/{token}", get(slow)),
            (Duration::from_millis(50), Duration::from_secs(10)),
        );
        let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
        let res = app.clone().oneshot(get("/slow")).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
        assert_eq!(
            &body[..],
            br#"{"detail":"The request took too long and was stopped."}"#
        );
        let res = app.oneshot(get("/uploads/t")).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
}
