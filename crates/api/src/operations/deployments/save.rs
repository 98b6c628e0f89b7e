//! Writing a deployment: new revisions, field-by-field merges, and retries under
//! optimistic concurrency.

use super::not_found;
use crate::error::{ApiError, ApiResult};
use serde_json::{Map, Value};
use store::lifecycle::{RevisionRules, RevisionStatus};
use store::{Deployment, NewRevision, StoreError};
use uuid::Uuid;

/// The stored form of a revision configuration: the request fields plus the
/// response-only `repo_commit_sha`.
pub(crate) fn revision_config(mut config: Map<String, Value>) -> Value {
    config.entry("repo_commit_sha").or_insert(Value::Null);
    Value::Object(config)
}

pub(crate) fn new_revision(source: &str, config: &Value) -> NewRevision {
    let has_image = store::RevisionConfig::of(config).image_uri.is_some();
    NewRevision {
        source: source.to_owned(),
        source_revision_config: config.clone(),
        status: RevisionStatus::initial(has_image),
    }
}

pub(crate) fn merge_fields(base: &mut Value, patch: Option<&Map<String, Value>>) {
    if let (Some(base), Some(patch)) = (base.as_object_mut(), patch) {
        for (k, v) in patch.iter().filter(|(_, v)| !v.is_null()) {
            base.insert(k.clone(), v.clone());
        }
    }
}

/// How many times a change is tried against a deployment other writers keep changing.
const SAVE_ATTEMPTS: u32 = 8;

/// Optimistic concurrency: `attempt` reads the deployment, decides the change and saves
/// it against what it read, giving `None` when another write got in between. Then it
/// runs again on the fresh state after a short random pause, up to [`SAVE_ATTEMPTS`]
/// times; past that the answer is a 409 that asks the client to retry. A try that loses
/// the race writes nothing.
pub(crate) async fn save_with_retries<F, Fut>(mut attempt: F) -> ApiResult<Deployment>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ApiResult<Option<Deployment>>>,
{
    for round in 0..SAVE_ATTEMPTS {
        if let Some(saved) = attempt().await? {
            return Ok(saved);
        }
        let most = 2u64 << round.min(5);
        let pause = rand::Rng::gen_range(&mut rand::thread_rng(), 0..=most);
        tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
    }
    Err(ApiError::Conflict(
        "The deployment is being changed by other requests; retry.".into(),
    ))
}

/// A save's outcome for [`save_with_retries`]: `None` when it lost a race.
pub(crate) fn unless_stale(
    id: Uuid,
    saved: store::Result<Deployment>,
) -> ApiResult<Option<Deployment>> {
    match saved {
        Ok(d) => Ok(Some(d)),
        Err(StoreError::Stale) => Ok(None),
        Err(StoreError::NotFound) => Err(not_found(id)),
        Err(e) => Err(e.into()),
    }
}
