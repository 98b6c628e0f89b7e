//! Where a deployment runs. An `external_docker` deployment names its listener (or uses
//! the only one there is) and a namespace that listener serves. The other sources cannot
//! name one (the reference's rule), so a remote build or a pushed image runs on the
//! workspace's oldest listener, in that listener's first namespace.

use super::rules;
use crate::error::ApiResult;
use crate::AppState;
use compat::format::py_list_repr;
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// Resolves the listener and namespace of an `external_docker` create; may fill in
/// `listener_config.k8s_namespace`.
pub(crate) async fn place_on_listener(
    app: &AppState,
    workspace: Uuid,
    config: &mut Map<String, Value>,
) -> ApiResult<Option<Uuid>> {
    let named = config
        .get("listener_id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok());
    let Some(listener_id) = named else {
        let ids = app.store.listener_ids(workspace).await?;
        if ids.is_empty() {
            return Ok(None);
        }
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        return Err(rules::source_error(format!(
            "'source_config.listener_id' is required for workspace with available listener IDs: {}",
            py_list_repr(&ids)
        )));
    };
    let listener = app
        .store
        .get_listener(workspace, listener_id)
        .await?
        .ok_or_else(|| {
            rules::source_error(format!(
                "listener ID '{listener_id}' not found in LangSmith workspace ID '{workspace}'."
            ))
        })?;
    let served = listener.k8s_namespaces.unwrap_or_default();
    let asked = config
        .get("listener_config")
        .and_then(|c| c.get("k8s_namespace"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let namespace = match asked {
        Some(ns) if served.contains(&ns) => ns,
        Some(ns) => {
            return Err(rules::source_error(format!(
                "namespace '{ns}' is not served by listener ID '{listener_id}'. Served \
                 namespaces: {}",
                py_list_repr(&served)
            )))
        }
        None if served.len() == 1 => served[0].clone(),
        None => {
            return Err(rules::source_error(format!(
                "'source_config.listener_config.k8s_namespace' is required for listener ID \
                 '{listener_id}'. Served namespaces: {}",
                py_list_repr(&served)
            )))
        }
    };
    config.insert(
        "listener_config".into(),
        json!({ "k8s_namespace": namespace }),
    );
    Ok(Some(listener_id))
}

/// The listener a deployment of another source than `external_docker` runs on: the
/// workspace's oldest, when it has one.
pub(crate) async fn default_listener(app: &AppState, workspace: Uuid) -> ApiResult<Option<Uuid>> {
    Ok(app.store.oldest_listener(workspace).await?)
}
