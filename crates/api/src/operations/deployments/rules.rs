//! The rules a deployment must satisfy beyond its schema (docs/compatibility.md records
//! the texts and their order).

use crate::error::{ApiError, ApiResult};
use serde_json::{Map, Value};

/// Fields of `source_config` that never change after creation, in the order checked.
pub const IMMUTABLE: &[&str] = &[
    "integration_id",
    "repo_url",
    "deployment_type",
    "listener_id",
    "listener_config",
];

pub fn source_error(msg: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!("Source configuration error: {msg}"))
}

/// 1 to 63 lower-case letters, digits and `-`, starting with a letter.
pub fn check_name(name: &str) -> ApiResult<()> {
    let b = name.as_bytes();
    let ok = (1..=63).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "Deployment name '{name}' is invalid: use at most 63 lower-case letters, digits and \
             '-', starting with a letter."
        )))
    }
}

fn sent(obj: Option<&Map<String, Value>>, field: &str) -> bool {
    obj.and_then(|o| o.get(field)).is_some_and(|v| !v.is_null())
}

/// The `langgraph_config_path` and "only applicable" rules, for a create or a patch
/// (`source` is the deployment's source).
pub fn check_applicable(
    source: &str,
    source_config: Option<&Map<String, Value>>,
    revision_config: Option<&Map<String, Value>>,
    secret_references_sent: bool,
) -> ApiResult<()> {
    if matches!(source, "external_docker" | "internal_docker")
        && sent(revision_config, "langgraph_config_path")
    {
        return Err(source_error(format!(
            "'source_revision_config.langgraph_config_path' must be null for '{source}' source."
        )));
    }
    if source != "external_docker" {
        let candidates = [
            (
                "source_config.custom_url",
                sent(source_config, "custom_url"),
            ),
            (
                "source_config.resource_spec",
                sent(source_config, "resource_spec"),
            ),
            ("secret_references", secret_references_sent),
            (
                "source_config.listener_id",
                sent(source_config, "listener_id"),
            ),
            (
                "source_config.listener_config",
                sent(source_config, "listener_config"),
            ),
        ];
        if let Some((path, _)) = candidates.iter().find(|(_, s)| *s) {
            return Err(source_error(format!(
                "'{path}' is only applicable for 'external_docker' source."
            )));
        }
    }
    Ok(())
}

/// Source rules of a create that need no lookup, before the listener rules (and, for
/// `github`, before the integration's: [`crate::operations::integrations::check_github`]).
pub fn check_create(
    source: &str,
    source_config: &Map<String, Value>,
    revision_config: &Map<String, Value>,
    secret_references_sent: bool,
) -> ApiResult<()> {
    if source == "external_docker" && !sent(Some(revision_config), "image_uri") {
        return Err(source_error(
            "'source_revision_config.image_uri' is required for 'external_docker' source.",
        ));
    }
    check_applicable(
        source,
        Some(source_config),
        Some(revision_config),
        secret_references_sent,
    )
}

/// Rules of a patch against the stored deployment, in the order docs/compatibility.md gives.
pub fn check_patch(
    stored_source: &str,
    stored_config: &Value,
    patch_config: Option<&Map<String, Value>>,
    patch_revision_config: Option<&Map<String, Value>>,
    revision_source_sent: bool,
    secret_references_sent: bool,
) -> ApiResult<()> {
    for field in IMMUTABLE {
        if let Some(v) = patch_config
            .and_then(|c| c.get(*field))
            .filter(|v| !v.is_null())
        {
            if stored_config.get(*field) != Some(v) {
                return Err(source_error(format!(
                    "'source_config.{field}' cannot be changed once the deployment is created."
                )));
            }
        }
    }
    if revision_source_sent && stored_source == "external_docker" {
        return Err(source_error(
            "'revision_source' is not supported for 'external_docker' source.",
        ));
    }
    check_applicable(
        stored_source,
        patch_config,
        patch_revision_config,
        secret_references_sent,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "agent-1", "a-", &"a".repeat(63)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "1a", "A", "a_b", &"a".repeat(64), "é"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
