//! Auth Service (v2) and Agent Connections (v2): the reference's `/v2/auth/...` routes.
//! Requests are validated against the reference's models, then handed to
//! [`crate::operations::agent_auth`]; the browser's callback answers with a small page.

use crate::auth::Tenant;
use crate::error::{json_response, ApiError, ApiResult};
use crate::operations::agent_auth::{self as ops, Authenticated, CallbackParams, Waited};
use crate::request::{BodyCall, Call};
use crate::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use compat::format::Timestamp;
use compat::query::Query;
use compat::schema::{Field, Model, Ty};
use compat::{ErrorItem, Loc};
use serde::Serialize;
use serde_json::json;
use store::{AgentConnection, OAuthProvider, OAuthToken};

mod models {
    use super::*;

    const STR: Ty = Ty::Str;
    const BOOL: Ty = Ty::Bool;
    const UUID: Ty = Ty::Uuid;
    const STR_LIST: Ty = Ty::List(&STR);
    const PROVIDER_TYPES: Ty = Ty::Literal(&["microsoft", "salesforce", "slack"]);

    /// A field with a default that may not be sent as `null`.
    const fn defaulted(name: &'static str, ty: Ty) -> Field {
        Field {
            name,
            ty,
            required: false,
        }
    }

    pub static PROVIDER_CREATE: Model = Model {
        fields: &[
            Field::required("provider_id", STR),
            Field::required("name", STR),
            Field::required("client_id", STR),
            Field::optional("client_secret", &STR),
            Field::required("auth_url", STR),
            Field::required("token_url", STR),
            defaulted("uses_pkce", BOOL),
            defaulted("code_challenge_method", STR),
            Field::optional("provider_type", &PROVIDER_TYPES),
            defaulted(
                "token_endpoint_auth_method",
                Ty::Literal(&["none", "client_secret_basic", "client_secret_post"]),
            ),
        ],
    };

    pub static PROVIDER_PATCH: Model = Model {
        fields: &[
            Field::optional("name", &STR),
            Field::optional("client_id", &STR),
            Field::optional("client_secret", &STR),
            Field::optional("auth_url", &STR),
            Field::optional("token_url", &STR),
            Field::optional("uses_pkce", &BOOL),
            Field::optional("code_challenge_method", &STR),
        ],
    };

    pub static MCP_DISCOVER: Model = Model {
        fields: &[
            Field::required("provider_id", STR),
            Field::required("name", STR),
            Field::required("mcp_server_url", STR),
        ],
    };

    pub static AUTHENTICATE: Model = Model {
        fields: &[
            Field::optional("user_id", &STR),
            Field::optional("ls_user_id", &STR),
            Field::optional("agent_id", &STR),
            Field::required("provider", STR),
            Field::required("scopes", STR_LIST),
            defaulted("use_agent_builder_public_oauth", BOOL),
            defaulted("force_new", BOOL),
            Field::optional("token_id", &UUID),
            defaulted("is_default", BOOL),
        ],
    };

    pub static FINALIZE: Model = Model {
        fields: &[Field::required("code", STR), Field::required("state", STR)],
    };

    pub static TOKEN_UPDATE: Model = Model {
        fields: &[
            Field::optional("provider_account_label", &STR),
            Field::optional("is_default", &BOOL),
        ],
    };

    pub static CONNECTION_CREATE: Model = Model {
        fields: &[Field::required("oauth_token_id", STR)],
    };
}

/// The body validated against `model`, as `T`.
fn body<T: serde::de::DeserializeOwned>(call: &BodyCall, model: &Model) -> ApiResult<T> {
    let mut errs = Vec::new();
    let v = call.body_schema(model, &mut errs);
    crate::deployments::models::typed(ApiError::validated(errs, v)?)
}

/// A required string query parameter (`missing` when absent).
fn required_query(call: &Call, name: &str) -> ApiResult<String> {
    call.query_str(name).ok_or_else(|| {
        ApiError::Validation(vec![ErrorItem::missing(
            Loc::new("query").key(name),
            compat::Value::Null,
        )])
    })
}

/// `OAuthProviderResponse` (the client secret is never part of it).
#[derive(Serialize)]
struct ProviderOut<'a> {
    id: uuid::Uuid,
    organization_id: uuid::Uuid,
    provider_id: &'a str,
    name: &'a str,
    client_id: &'a str,
    auth_url: &'a str,
    token_url: &'a str,
    uses_pkce: bool,
    code_challenge_method: Option<&'a str>,
    provider_type: Option<&'a str>,
    mcp_server_url: Option<&'a str>,
    token_endpoint_auth_method: &'a str,
    is_dynamic_client: bool,
    created_at: Timestamp,
    updated_at: Timestamp,
}

fn provider_out<'a>(tenant: &Tenant, p: &'a OAuthProvider) -> ProviderOut<'a> {
    ProviderOut {
        id: p.id,
        organization_id: tenant.org_id,
        provider_id: &p.provider_id,
        name: &p.name,
        client_id: &p.client_id,
        auth_url: &p.auth_url,
        token_url: &p.token_url,
        uses_pkce: p.uses_pkce,
        code_challenge_method: p.code_challenge_method.as_deref(),
        provider_type: p.provider_type.as_deref(),
        mcp_server_url: p.mcp_server_url.as_deref(),
        token_endpoint_auth_method: &p.token_endpoint_auth_method,
        is_dynamic_client: p.is_dynamic_client,
        created_at: Timestamp(p.created_at),
        updated_at: Timestamp(p.updated_at),
    }
}

/// `OAuthTokenSummary`: no token values.
#[derive(Serialize)]
struct TokenOut<'a> {
    id: uuid::Uuid,
    provider_id: &'a str,
    provider_account_label: Option<&'a str>,
    scopes: &'a [String],
    expires_at: Option<Timestamp>,
    is_default: bool,
    created_at: Timestamp,
    updated_at: Timestamp,
}

fn token_out(t: &OAuthToken) -> TokenOut<'_> {
    TokenOut {
        id: t.id,
        provider_id: &t.provider_id,
        provider_account_label: t.provider_account_label.as_deref(),
        scopes: &t.scopes,
        expires_at: t.expires_at.map(Timestamp),
        is_default: t.is_default,
        created_at: Timestamp(t.created_at),
        updated_at: Timestamp(t.updated_at),
    }
}

/// `AgentConnectionResponse`.
#[derive(Serialize)]
struct ConnectionOut<'a> {
    id: uuid::Uuid,
    agent_id: &'a str,
    oauth_token_id: uuid::Uuid,
    provider_id: &'a str,
    provider_account_label: Option<&'a str>,
    scopes: &'a [String],
    expires_at: Option<Timestamp>,
    created_by: &'a str,
    created_at: Timestamp,
}

fn connection_out(c: &AgentConnection) -> ConnectionOut<'_> {
    ConnectionOut {
        id: c.id,
        agent_id: &c.agent_id,
        oauth_token_id: c.token.id,
        provider_id: &c.token.provider_id,
        provider_account_label: c.token.provider_account_label.as_deref(),
        scopes: &c.token.scopes,
        expires_at: c.token.expires_at.map(Timestamp),
        created_by: &c.created_by,
        created_at: Timestamp(c.created_at),
    }
}

pub async fn list_providers(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let all = ops::list_providers(&app, &call.tenant).await?;
    let out: Vec<_> = all.iter().map(|p| provider_out(&call.tenant, p)).collect();
    Ok(json_response(StatusCode::OK, &out))
}

pub async fn create_provider(State(app): State<AppState>, call: BodyCall) -> ApiResult<Response> {
    let new = body(&call, &models::PROVIDER_CREATE)?;
    let p = ops::create_provider(&app, &call.tenant, new).await?;
    Ok(json_response(
        StatusCode::OK,
        &provider_out(&call.tenant, &p),
    ))
}

#[derive(serde::Deserialize)]
struct Discover {
    provider_id: String,
    name: String,
    mcp_server_url: String,
}

/// `POST /v2/auth/providers/mcp-discover`. It shares its path's shape with a provider's
/// routes; a POST to any other provider is their 405, decided before auth as routing is.
pub async fn discover_provider(
    State(app): State<AppState>,
    Path(provider_id): Path<String>,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    if provider_id != "mcp-discover" {
        return Err(ApiError::MethodNotAllowed);
    }
    let call = <BodyCall as axum::extract::FromRequest<AppState>>::from_request(req, &app).await?;
    let d: Discover = body(&call, &models::MCP_DISCOVER)?;
    let p =
        ops::discover_provider(&app, &call.tenant, d.provider_id, d.name, d.mcp_server_url).await?;
    Ok(json_response(
        StatusCode::OK,
        &provider_out(&call.tenant, &p),
    ))
}

pub async fn get_provider(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let p = ops::get_provider(&app, &call.tenant, call.path_str("provider_id")).await?;
    Ok(json_response(
        StatusCode::OK,
        &provider_out(&call.tenant, &p),
    ))
}

pub async fn update_provider(State(app): State<AppState>, call: BodyCall) -> ApiResult<Response> {
    let patch = body(&call, &models::PROVIDER_PATCH)?;
    let id = call.path_str("provider_id");
    let p = ops::update_provider(&app, &call.tenant, id, patch).await?;
    Ok(json_response(
        StatusCode::OK,
        &provider_out(&call.tenant, &p),
    ))
}

pub async fn delete_provider(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let id = call.path_str("provider_id");
    ops::delete_provider(&app, &call.tenant, id).await?;
    let message = format!("OAuth provider '{id}' deleted");
    Ok(json_response(
        StatusCode::OK,
        &json!({ "message": message }),
    ))
}

pub async fn authenticate(State(app): State<AppState>, call: BodyCall) -> ApiResult<Response> {
    let req = body(&call, &models::AUTHENTICATE)?;
    let out = match ops::authenticate(&app, &call.tenant, req).await? {
        Authenticated::Token {
            owner,
            access_token,
            token,
        } => json!({
            "status": "completed",
            "url": null,
            "auth_id": null,
            "token": access_token,
            "user_id": owner,
            "metadata": {
                "token_id": token.id,
                "provider_id": token.provider_id,
                "scopes": token.scopes,
                "expires_at": token.expires_at.map(Timestamp),
                "provider_account_label": token.provider_account_label,
            },
        }),
        Authenticated::SignIn {
            owner,
            url,
            auth_id,
            expired,
        } => json!({
            "status": if expired { "token_expired" } else { "pending" },
            "url": url,
            "auth_id": auth_id,
            "token": null,
            "user_id": owner,
            "metadata": null,
        }),
    };
    Ok(json_response(StatusCode::OK, &out))
}

pub async fn wait(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let timeout = call.query_int("timeout", 30, None, None, &mut errs);
    let timeout = ApiError::validated(errs, timeout)?;
    let (status, token) =
        match ops::wait(&app, &call.tenant, call.path_str("auth_id"), timeout).await? {
            Waited::Completed(token) => ("completed", Some(token)),
            Waited::Timeout => ("timeout", None),
            Waited::NotFound => ("not_found", None),
        };
    Ok(json_response(
        StatusCode::OK,
        &json!({ "status": status, "token": token }),
    ))
}

/// The query of the unauthenticated callbacks.
fn callback_params(q: &Query) -> CallbackParams {
    let get = |n: &str| q.get(n).map(str::to_owned);
    CallbackParams {
        code: get("code"),
        state: get("state"),
        error: get("error"),
        error_description: get("error_description"),
    }
}

/// A small page for the person who just signed in (text escaped by maud).
fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let markup = maud::html! {
        (maud::DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { (title) " · hostplane" } }
            body style="font-family: sans-serif; max-width: 36rem; margin: 4rem auto" {
                h1 { (title) }
                p { (text) }
            }
        }
    };
    (status, Html(markup.into_string())).into_response()
}

/// Where providers send the user's browser back (hostplane's own route, beside the
/// compatible API): no key, the single-use `state` identifies the sign-in.
pub const BROWSER_CALLBACK_ROUTE: &str = "/auth/callback/{provider_id}";

/// [`BROWSER_CALLBACK_ROUTE`]: finishes the sign-in and shows a page saying how it went.
pub async fn callback_page(
    State(app): State<AppState>,
    Path(provider_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = callback_params(&Query::parse(raw.as_deref()));
    match ops::callback(&app, &provider_id, params, None).await {
        Ok(name) => page(
            StatusCode::OK,
            "Signed in",
            &format!("You are signed in to {name}. You can close this window."),
        ),
        Err(e) => {
            let (status, text) = e.status_and_text();
            page(status, "Sign-in not completed", &text)
        }
    }
}

#[derive(serde::Deserialize)]
struct Finalize {
    code: String,
    state: String,
}

/// `POST /v2/auth/callback/{provider_id}`: the provider's answer relayed by a client
/// with a key (the sign-in must be of its workspace).
pub async fn callback(State(app): State<AppState>, call: BodyCall) -> ApiResult<Response> {
    let f: Finalize = body(&call, &models::FINALIZE)?;
    let params = CallbackParams {
        code: Some(f.code),
        state: Some(f.state),
        ..CallbackParams::default()
    };
    finish(&app, &call, params).await
}

/// `GET /v2/auth/callback/{provider_id}`: the same with the answer's query parameters.
pub async fn callback_query(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let params = callback_params(&call.query);
    finish(&app, &call, params).await
}

async fn finish<const B: bool>(
    app: &AppState,
    call: &Call<B>,
    params: CallbackParams,
) -> ApiResult<Response> {
    let provider_id = call.path_str("provider_id");
    let ws = Some(call.tenant.workspace_id);
    ops::callback(app, provider_id, params, ws).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "status": "completed", "provider_id": provider_id }),
    ))
}

/// `GET /v2/auth/setup/{provider_id}`: where a GitHub App sends the browser after it was
/// installed; records the installation on the integration whose id is `provider_id`.
pub async fn setup_page(
    State(app): State<AppState>,
    Path(integration): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let q = Query::parse(raw.as_deref());
    let mut errs = Vec::new();
    let installation = match q.get("installation_id") {
        None => Some(None),
        Some(v) => compat::validate::query_int(
            v,
            Loc::new("query").key("installation_id"),
            &mut errs,
            None,
            None,
        )
        .map(Some),
    };
    let installation = ApiError::validated(errs, installation)?;
    let done = crate::operations::integrations::record_installation(
        &app,
        &integration,
        installation,
        q.get("state"),
    )
    .await;
    Ok(match done {
        Ok(name) => page(
            StatusCode::OK,
            "GitHub App installed",
            &format!(
                "The installation is recorded on integration {name}. You can close this window."
            ),
        ),
        Err(e) => {
            let (status, text) = e.status_and_text();
            page(status, "Installation not recorded", &text)
        }
    })
}

/// Tokens of the provider named by `provider_id` (all when `None`).
fn of_provider(provider_id: Option<String>) -> store::TokenFilter {
    store::TokenFilter {
        provider_id,
        ..Default::default()
    }
}

pub async fn list_tokens(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let filter = of_provider(call.query_str("provider_id"));
    let all = ops::list_tokens(&app, &call.tenant, filter).await?;
    let out: Vec<_> = all.iter().map(token_out).collect();
    Ok(json_response(StatusCode::OK, &out))
}

pub async fn revoke_tokens(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let provider_id = required_query(&call, "provider_id")?;
    let n = ops::revoke_tokens(&app, &call.tenant, of_provider(Some(provider_id.clone()))).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "message": format!("Revoked {n} token(s)"), "provider_id": provider_id }),
    ))
}

pub async fn token_exists(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let provider_id = required_query(&call, "provider_id")?;
    let all = ops::list_tokens(&app, &call.tenant, of_provider(Some(provider_id))).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "has_token": !all.is_empty() }),
    ))
}

pub async fn update_token(State(app): State<AppState>, call: BodyCall) -> ApiResult<Response> {
    #[derive(serde::Deserialize)]
    struct Update {
        provider_account_label: Option<String>,
        is_default: Option<bool>,
    }
    let u: Update = body(&call, &models::TOKEN_UPDATE)?;
    let id = call.path_str("token_id");
    let t = ops::update_token(
        &app,
        &call.tenant,
        id,
        u.provider_account_label,
        u.is_default,
    )
    .await?;
    Ok(json_response(StatusCode::OK, &token_out(&t)))
}

/// `DELETE /v2/auth/tokens/{token_id}`; also routed for `/v2/auth/tokens/exists`, whose
/// `DELETE` is this one with the token id `exists`.
pub async fn delete_token(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let id = match call.path_str("token_id") {
        "" => "exists",
        id => id,
    };
    ops::delete_token(&app, &call.tenant, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn slack_exists(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let all = ops::list_tokens(&app, &call.tenant, ops::slack_tokens()).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "has_token": !all.is_empty() }),
    ))
}

pub async fn revoke_slack(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let n = ops::revoke_tokens(&app, &call.tenant, ops::slack_tokens()).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "message": format!("Revoked {n} Slack token(s)") }),
    ))
}

pub async fn list_connections(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let all = ops::list_connections(&app, &call.tenant, call.path_str("agent_id")).await?;
    let data: Vec<_> = all.iter().map(connection_out).collect();
    Ok(json_response(StatusCode::OK, &json!({ "data": data })))
}

pub async fn create_connection(State(app): State<AppState>, call: BodyCall) -> ApiResult<Response> {
    #[derive(serde::Deserialize)]
    struct Create {
        oauth_token_id: String,
    }
    let c: Create = body(&call, &models::CONNECTION_CREATE)?;
    let agent = call.path_str("agent_id");
    let made = ops::create_connection(&app, &call.tenant, agent, &c.oauth_token_id).await?;
    Ok(json_response(StatusCode::CREATED, &connection_out(&made)))
}

pub async fn delete_connection(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let agent = call.path_str("agent_id");
    ops::delete_connection(&app, &call.tenant, agent, call.path_str("connection_id")).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
