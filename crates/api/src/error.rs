//! The one error type of the API and the one place it becomes an HTTP response.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use compat::error::{ErrorItem, ValidationBody};
use store::StoreError;

#[derive(Debug)]
pub enum ApiError {
    /// 422 with pydantic-style items.
    Validation(Vec<ErrorItem>),
    /// 422 with a text (the data-plane protocol, which is not FastAPI's).
    Unprocessable(String),
    BadRequest(String),
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    MethodNotAllowed,
    Conflict(String),
    PayloadTooLarge(String),
    TooManyRequests(String),
    /// 307 to the given location (FastAPI's trailing-slash redirect).
    Redirect(String),
    Unavailable(String),
    /// 502: a server we called (an OAuth provider) failed.
    BadGateway(String),
    /// 500; the cause is logged, never shown to the client.
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// Fails with a 422 when validation collected any error.
    pub fn check(errs: Vec<ErrorItem>) -> ApiResult<()> {
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(errs))
        }
    }

    /// What validation produced, or the 422 for the errors it collected. A validator
    /// that returns nothing without reporting why is a bug (500).
    pub fn validated<T>(errs: Vec<ErrorItem>, value: Option<T>) -> ApiResult<T> {
        Self::check(errs)?;
        value.ok_or_else(|| ApiError::Internal("validation gave no value and no error".into()))
    }

    /// The status of the answer and the text a person should read (the console shows it).
    pub fn status_and_text(&self) -> (StatusCode, String) {
        match self {
            ApiError::Validation(items) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                items
                    .iter()
                    .map(|item| match item.loc.to_string() {
                        path if path.is_empty() => item.msg.clone(),
                        path => format!("{path}: {}", item.msg),
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            ApiError::Unprocessable(t) => (StatusCode::UNPROCESSABLE_ENTITY, t.clone()),
            ApiError::BadRequest(t) => (StatusCode::BAD_REQUEST, t.clone()),
            ApiError::Unauthorized(t) => (StatusCode::UNAUTHORIZED, t.clone()),
            ApiError::Forbidden(t) => (StatusCode::FORBIDDEN, t.clone()),
            ApiError::NotFound(t) => (StatusCode::NOT_FOUND, t.clone()),
            ApiError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed".into())
            }
            ApiError::Conflict(t) => (StatusCode::CONFLICT, t.clone()),
            ApiError::PayloadTooLarge(t) => (StatusCode::PAYLOAD_TOO_LARGE, t.clone()),
            ApiError::TooManyRequests(t) => (StatusCode::TOO_MANY_REQUESTS, t.clone()),
            ApiError::Redirect(location) => (StatusCode::TEMPORARY_REDIRECT, location.clone()),
            ApiError::Unavailable(t) => (StatusCode::SERVICE_UNAVAILABLE, t.clone()),
            ApiError::BadGateway(t) => (StatusCode::BAD_GATEWAY, t.clone()),
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal Server Error".into(),
                )
            }
        }
    }

    pub fn route_not_found() -> Self {
        ApiError::NotFound("Not Found".into())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(reason) => {
                tracing::warn!(%reason, "database unavailable");
                ApiError::Unavailable("The database is unavailable; try again shortly.".into())
            }
            StoreError::Conflict | StoreError::InUse => ApiError::Conflict("Conflict".into()),
            StoreError::Stale => {
                ApiError::Conflict("The resource changed concurrently; retry the request.".into())
            }
            StoreError::NotFound => ApiError::route_not_found(),
            StoreError::Unrepresentable(_) => ApiError::BadRequest(
                "Text values cannot contain the NUL character (\\u0000).".into(),
            ),
            StoreError::Other(reason) => ApiError::Internal(format!("database: {reason}")),
        }
    }
}

fn detail(status: StatusCode, text: &str) -> Response {
    json_response(status, &serde_json::json!({ "detail": text }))
}

/// A JSON response with FastAPI's compact encoding.
pub fn json_response<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Validation(items) => json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &ValidationBody { detail: &items },
            ),
            ApiError::Redirect(location) => {
                let mut res = StatusCode::TEMPORARY_REDIRECT.into_response();
                if let Ok(v) = HeaderValue::from_str(&location) {
                    res.headers_mut().insert(header::LOCATION, v);
                }
                res
            }
            other => {
                let (status, text) = other.status_and_text();
                detail(status, &text)
            }
        }
    }
}
