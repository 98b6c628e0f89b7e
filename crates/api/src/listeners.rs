//! Listeners (v2): the five routes, their request models and their JSON; what each does
//! is [`crate::operations::listeners`].

use crate::auth::Tenant;
use crate::error::{json_response, ApiError, ApiResult};
use crate::operations::listeners;
use crate::request::{BodyCall, Call};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use compat::format::Timestamp;
use compat::validate::{self, Fields};
use compat::{ErrorItem, Errors, Loc, Value};
use serde::Serialize;
use store::{Listener, ListenerPatch};
use uuid::Uuid;

/// The listener's JSON, fields in the reference's order.
#[derive(Serialize)]
struct ListenerOut<'a> {
    version: &'a Option<String>,
    compute_type: &'a str,
    compute_id: &'a str,
    compute_config: ComputeConfigOut<'a>,
    id: Uuid,
    created_at: Timestamp,
    updated_at: Timestamp,
}

#[derive(Serialize)]
struct ComputeConfigOut<'a> {
    k8s_namespaces: &'a Option<Vec<String>>,
}

fn to_json(l: &Listener) -> ListenerOut<'_> {
    ListenerOut {
        version: &l.version,
        compute_type: &l.compute_type,
        compute_id: &l.compute_id,
        compute_config: ComputeConfigOut {
            k8s_namespaces: &l.k8s_namespaces,
        },
        id: l.id,
        created_at: Timestamp(l.created_at),
        updated_at: Timestamp(l.updated_at),
    }
}

/// `ListenerComputeConfig`: `k8s_namespaces` is an optional list of distinct namespace
/// names; a bad list fails as a whole with the first problem found.
fn compute_config(v: &Value, loc: Loc, errs: &mut Errors) -> Option<Option<Vec<String>>> {
    let ns_loc = loc.key("k8s_namespaces");
    let mut m = validate::model(v, loc, errs)?;
    let raw = m.raw("k8s_namespaces").cloned();
    let namespaces = m.optional("k8s_namespaces", |v, loc, errs| {
        validate::list(v, loc, errs, validate::string)
    })?;
    if let (Some(list), Some(raw)) = (&namespaces, raw) {
        if let Some(problem) = listeners::namespaces_problem(list) {
            m.errs.push(ErrorItem::value_error(ns_loc, &problem, raw));
            return None;
        }
    }
    Some(namespaces)
}

/// `ListenerCreateRequest`.
fn create_request(m: &mut Fields<'_>) -> Option<listeners::Create> {
    let version = m.optional("version", validate::string);
    let compute_type = m.required("compute_type", |v, l, e| {
        validate::literal(v, l, e, &["k8s"])
    });
    let compute_id = m.required("compute_id", |v, l, e| {
        validate::string_len(v, l, e, Some(1), None)
    });
    let config = m.required("compute_config", compute_config);
    compute_type?;
    Some(listeners::Create {
        version: version?,
        compute_id: compute_id?,
        k8s_namespaces: config?,
    })
}

/// `ListenerPatchRequest`: `compute_type` and `compute_id` are not part of it, so a
/// patch ignores them like any unknown field.
fn patch_request(m: &mut Fields<'_>) -> Option<ListenerPatch> {
    let version = m.optional("version", validate::string);
    let config = m.optional("compute_config", compute_config);
    Some(ListenerPatch {
        version: version?,
        k8s_namespaces: config?,
    })
}

pub async fn create(State(app): State<AppState>, call: BodyCall) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let req = call
        .body_model(&mut errs)
        .and_then(|mut m| create_request(&mut m));
    let req = ApiError::validated(errs, req)?;
    let l = listeners::create(&app, &call.tenant, req).await?;
    Ok(json_response(StatusCode::CREATED, &to_json(&l)))
}

/// Creates a listener from the console's form, validated as the API's body is.
pub(crate) async fn create_from(
    app: &AppState,
    tenant: &Tenant,
    body: &compat::Value,
) -> ApiResult<Listener> {
    let mut errs = Vec::new();
    let req =
        validate::model(body, Loc::new("body"), &mut errs).and_then(|mut m| create_request(&mut m));
    let req = ApiError::validated(errs, req)?;
    listeners::create(app, tenant, req).await
}

pub async fn list(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let paging = call.paging(&mut errs);
    let (window, offset) = ApiError::validated(errs, paging)?;
    let tenant = &call.tenant;
    // The versions of the page first; only listeners not rendered at that version are read
    // whole ([`crate::bodies`]).
    let page: Vec<_> = listeners::versions(&app, tenant, window)
        .await?
        .into_iter()
        .map(|(id, version)| (id, app.bodies.known(id, version)))
        .collect();
    let missing: Vec<Uuid> = page
        .iter()
        .filter(|(_, known)| known.is_none())
        .map(|(id, _)| *id)
        .collect();
    let read = listeners::by_ids(&app, tenant, &missing).await?;
    let mut resources = Vec::with_capacity(page.len());
    for (id, known) in page {
        // Neither remembered nor read: deleted since the versions were read, so it is no
        // longer on the page.
        if let Some(body) = known {
            resources.push(body);
        } else if let Some(l) = read.iter().find(|l| l.id == id) {
            resources.push(body(&app, l)?);
        }
    }
    Ok(crate::Page::response(resources, offset))
}

pub async fn get(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let id = call.path_uuid("listener_id", &mut errs);
    let id = ApiError::validated(errs, id)?;
    let version = listeners::version(&app, &call.tenant, id).await?;
    if let Some(known) = app.bodies.known(id, version) {
        return Ok(json_response(StatusCode::OK, &known));
    }
    let l = listeners::get(&app, &call.tenant, id).await?;
    Ok(json_response(StatusCode::OK, &body(&app, &l)?))
}

/// The listener's JSON, rendered once per version ([`crate::bodies`]).
fn body(app: &AppState, l: &Listener) -> ApiResult<std::sync::Arc<serde_json::value::RawValue>> {
    app.bodies.get(l.id, l.updated_at, || Ok(to_json(l)))
}

pub async fn patch(State(app): State<AppState>, call: BodyCall) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let id = call.path_uuid("listener_id", &mut errs);
    let patch = call
        .body_model(&mut errs)
        .and_then(|mut m| patch_request(&mut m));
    let (id, patch) = ApiError::validated(errs, id.zip(patch))?;
    let l = listeners::patch(&app, &call.tenant, id, patch).await?;
    Ok(json_response(StatusCode::OK, &body(&app, &l)?))
}

pub async fn delete(State(app): State<AppState>, call: Call) -> ApiResult<Response> {
    let mut errs = Vec::new();
    let id = call.path_uuid("listener_id", &mut errs);
    let id = ApiError::validated(errs, id)?;
    listeners::delete(&app, &call.tenant, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
