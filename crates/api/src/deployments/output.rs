//! The JSON of deployments and revisions, fields in the reference's order; secrets are
//! unsealed for the answer.

use crate::error::{ApiError, ApiResult};
use crate::AppState;
use compat::format::Timestamp;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use store::{Deployment, Revision};
use uuid::Uuid;

/// The deployment's JSON, fields in the reference's order.
#[derive(Serialize)]
pub(crate) struct DeploymentOut<'a> {
    name: &'a str,
    source: &'a str,
    source_config: &'a Value,
    source_revision_config: &'a Value,
    secrets: Box<RawValue>,
    secret_references: &'a Option<Value>,
    id: Uuid,
    tenant_id: Uuid,
    created_at: Timestamp,
    updated_at: Timestamp,
    status: &'a str,
    latest_revision_id: Option<Uuid>,
    active_revision_id: Option<Uuid>,
    image_version: &'a Option<String>,
}

/// Secrets are unsealed for the answer, as the reference returns them.
pub(crate) fn to_json<'a>(app: &AppState, d: &'a Deployment) -> ApiResult<DeploymentOut<'a>> {
    let secrets = app
        .secrets
        .open(&d.secrets, d.id)
        .and_then(|plain| String::from_utf8(plain).ok())
        .and_then(|text| RawValue::from_string(text).ok())
        .ok_or_else(|| {
            ApiError::Internal(format!(
                "the secrets of deployment {} cannot be opened: was HOSTPLANE_SECRET_KEY changed?",
                d.id
            ))
        })?;
    Ok(DeploymentOut {
        name: &d.name,
        source: &d.source,
        source_config: &d.source_config,
        source_revision_config: &d.source_revision_config,
        secrets,
        secret_references: &d.secret_references,
        id: d.id,
        tenant_id: d.workspace_id,
        created_at: Timestamp(d.created_at),
        updated_at: Timestamp(d.updated_at),
        status: d.status.as_str(),
        latest_revision_id: d.latest_revision_id,
        active_revision_id: d.active_revision_id,
        image_version: &d.image_version,
    })
}

#[derive(Serialize)]
pub(crate) struct RevisionOut<'a> {
    id: Uuid,
    created_at: Timestamp,
    updated_at: Timestamp,
    status: &'a str,
    source: &'a str,
    source_revision_config: &'a Value,
}

pub(crate) fn revision_json(r: &Revision) -> RevisionOut<'_> {
    RevisionOut {
        id: r.id,
        created_at: Timestamp(r.created_at),
        updated_at: Timestamp(r.updated_at),
        status: r.status.as_str(),
        source: &r.source,
        source_revision_config: &r.source_revision_config,
    }
}
