//! Everything a compatible operation needs from a request, extracted in FastAPI's order:
//! the body is read and decoded (a malformed body is reported before auth), then the
//! caller is authenticated; parameters and the body are validated by the handler.

use crate::auth::{authenticate, Tenant};
use crate::error::ApiError;
use crate::AppState;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::header;
use compat::body::{self, Body, BodyError, UNPARSEABLE_DETAIL};
use compat::query::{percent_decode, Query};
use compat::{validate, Errors, Loc};
use store::Window;
use uuid::Uuid;

/// An authenticated request of a compatible operation. `BODY` says whether the
/// operation declares a request body: only then is the body parsed (FastAPI ignores the
/// body of operations that take none).
pub struct Call<const BODY: bool = false> {
    pub tenant: Tenant,
    pub body: Body,
    pub query: Query,
    path: Vec<(String, String)>,
}

/// A request of an operation with a JSON body.
pub type BodyCall = Call<true>;

impl<const BODY: bool> FromRequest<AppState> for Call<BODY> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &AppState) -> Result<Self, ApiError> {
        let (mut parts, raw_body) = req.into_parts();
        let params = RawPathParams::from_request_parts(&mut parts, app)
            .await
            .ok();
        let mut path = Vec::new();
        for (name, raw) in params.iter().flatten() {
            let value = percent_decode(raw, false);
            // Starlette decodes before routing: an encoded slash makes another path.
            if value.contains('/') {
                return Err(ApiError::route_not_found());
            }
            path.push((name.to_owned(), value));
        }
        let limit = app.config.max_body_bytes;
        let too_large = || {
            ApiError::PayloadTooLarge(format!(
                "Request body is larger than the limit of {limit} bytes."
            ))
        };
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let bytes = axum::body::to_bytes(raw_body, limit).await.map_err(|e| {
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            {
                too_large()
            } else {
                ApiError::BadRequest(UNPARSEABLE_DETAIL.into())
            }
        })?;
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let decoded = if BODY {
            body::decode(content_type.as_deref(), &bytes)
        } else {
            Ok(Body::Missing)
        };
        let body = match decoded {
            Ok(b) => b,
            Err(BodyError::Invalid(item)) => return Err(ApiError::Validation(vec![*item])),
            Err(BodyError::Unparseable) => {
                return Err(ApiError::BadRequest(UNPARSEABLE_DETAIL.into()))
            }
        };
        let tenant = authenticate(app.store.as_ref(), &app.keys, &parts.headers).await?;
        Ok(Call {
            tenant,
            body,
            query: Query::parse(parts.uri.query()),
            path,
        })
    }
}

impl<const BODY: bool> Call<BODY> {
    /// A string path parameter, decoded.
    pub fn path_str(&self, name: &str) -> &str {
        self.path
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// A UUID path parameter; errors are located at `["path", name]`.
    pub fn path_uuid(&self, name: &str, errs: &mut Errors) -> Option<Uuid> {
        validate::uuid_text(self.path_str(name), Loc::new("path").key(name), errs)
    }

    /// An integer query parameter with a default and bounds. The value can exceed 64
    /// bits, as Python's can; callers clamp it where a database needs a `BIGINT`.
    pub fn query_int(
        &self,
        name: &str,
        default: i64,
        ge: Option<i64>,
        le: Option<i64>,
        errs: &mut Errors,
    ) -> Option<i128> {
        match self.query.get(name) {
            None => Some(i128::from(default)),
            Some(raw) => validate::query_int(raw, Loc::new("query").key(name), errs, ge, le),
        }
    }

    /// `limit` and `offset` of a list, validated as the reference declares them: the
    /// window to read (its offset clamped for the database) and the offset as sent.
    pub fn paging(&self, errs: &mut Errors) -> Option<(Window, i128)> {
        let limit = self.query_int("limit", 20, Some(1), Some(100), errs);
        let offset = self.query_int("offset", 0, Some(0), None, errs);
        let (limit, offset) = limit.zip(offset)?;
        let window = Window::new(limit as i64, i64::try_from(offset).unwrap_or(i64::MAX));
        Some((window, offset))
    }

    /// An optional boolean query parameter.
    pub fn query_bool(&self, name: &str, errs: &mut Errors) -> Option<Option<bool>> {
        match self.query.get(name) {
            None => Some(None),
            Some(raw) => validate::boolean(
                &compat::Value::Str(raw.to_owned()),
                Loc::new("query").key(name),
                errs,
            )
            .map(Some),
        }
    }

    /// An optional string query parameter.
    pub fn query_str(&self, name: &str) -> Option<String> {
        self.query.get(name).map(str::to_owned)
    }

    /// The body of an operation whose body is required: `missing` when there is none.
    fn required_body(&self, errs: &mut Errors) -> Option<&compat::Value> {
        match &self.body {
            Body::Missing => {
                errs.push(compat::ErrorItem::missing(
                    Loc::new("body"),
                    compat::Value::Null,
                ));
                None
            }
            Body::Present(v) => Some(v),
        }
    }

    /// The body validated as a required model (`missing` when absent).
    pub fn body_schema(
        &self,
        model: &compat::schema::Model,
        errs: &mut Errors,
    ) -> Option<compat::Value> {
        let v = self.required_body(errs)?;
        compat::schema::validate_model(model, v, Loc::new("body"), errs)
    }

    /// The body as a required model: `missing` when absent.
    pub fn body_model<'a>(&'a self, errs: &'a mut Errors) -> Option<validate::Fields<'a>> {
        let v = self.required_body(errs)?;
        validate::model(v, Loc::new("body"), errs)
    }
}
