//! hostplane's HTTP API: the router, one module per resource, authentication, the single
//! error-to-HTTP mapping and the served OpenAPI document.

pub mod auth;
pub mod error;
pub mod listeners;
pub mod openapi;
pub mod request;
pub mod routing;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use std::time::Duration;
use store::Store;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// A request still running after this long is answered with 503.
    pub request_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<ApiConfig>,
}

/// The compatible API, mounted at the root and under `/api-host`.
fn compatible_api() -> Router<AppState> {
    Router::new()
        .route(
            "/v2/listeners",
            get(listeners::list).post(listeners::create),
        )
        .route(
            "/v2/listeners/{listener_id}",
            get(listeners::get)
                .patch(listeners::patch)
                .delete(listeners::delete),
        )
        .route("/openapi.json", get(openapi::serve))
        .route("/ok", get(ok))
        .method_not_allowed_fallback(routing::method_not_allowed)
}

async fn ok() -> Response {
    error::json_response(StatusCode::OK, &serde_json::json!({ "ok": true }))
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    error::ApiError::Internal.into_response()
}

/// The whole service: routes, fallbacks, request ids, tracing, panic and time limits.
pub fn router(store: Arc<dyn Store>, config: ApiConfig) -> Router {
    let timeout = config.request_timeout;
    let state = AppState {
        store,
        config: Arc::new(config),
    };
    let api = compatible_api();
    Router::new()
        .merge(api.clone())
        .nest(routing::SELF_HOSTED_PREFIX, api)
        .fallback(routing::fallback)
        .with_state(state)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn(
            move |req, next: axum::middleware::Next| async move {
                match tokio::time::timeout(timeout, next.run(req)).await {
                    Ok(res) => res,
                    Err(_) => error::ApiError::Unavailable(
                        "The request took too long and was stopped.".into(),
                    )
                    .into_response(),
                }
            },
        ))
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}
