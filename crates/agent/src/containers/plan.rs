//! Container mode's decisions, as pure functions of what the desired state asks for and
//! what the engine shows: which containers go once a revision serves, and which
//! deployments have left the desired state. The sink carries them out.

use super::{LABEL_DEPLOYMENT, LABEL_REVISION, LABEL_ROLE};
use protocol::DesiredDeployment;
use std::collections::{BTreeSet, HashSet};
use uuid::Uuid;

/// One of the agent's containers, as the engine lists it (by the agent's labels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub id: String,
    pub deployment: Option<Uuid>,
    /// `api`, `postgres` or `redis`.
    pub role: String,
    pub revision: Option<Uuid>,
}

impl Seen {
    pub fn of(c: &bollard::models::ContainerSummary) -> Option<Seen> {
        let labels = c.labels.as_ref()?;
        let uuid = |k: &str| labels.get(k).and_then(|v| v.parse().ok());
        Some(Seen {
            id: c.id.clone()?,
            deployment: uuid(LABEL_DEPLOYMENT),
            role: labels.get(LABEL_ROLE).cloned().unwrap_or_default(),
            revision: uuid(LABEL_REVISION),
        })
    }
}

/// What goes of a deployment's containers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Retire {
    /// Older API containers: removed after the drain, once `serving` answers.
    pub drained: Vec<String>,
    /// Store containers of stores the deployment now brings itself (`*_URI_CUSTOM`);
    /// the PostgreSQL volume stays until the deployment is deleted, as in Kubernetes.
    pub stores: Vec<String>,
}

/// What goes of `d`'s containers in `seen` when `serving` (the API container now
/// answering, if a switch just happened) serves it.
pub fn retire(d: &DesiredDeployment, seen: &[Seen], serving: Option<&str>) -> Retire {
    let brings = |custom: &str| d.env.iter().any(|e| e.name == custom);
    let own: Vec<&Seen> = seen.iter().filter(|c| c.deployment == Some(d.id)).collect();
    let drained = match serving {
        Some(serving) => own
            .iter()
            .filter(|c| c.role == "api" && c.id != serving)
            .map(|c| c.id.clone())
            .collect(),
        None => Vec::new(),
    };
    let stores = own
        .iter()
        .filter(|c| {
            (c.role == "postgres" && brings("POSTGRES_URI_CUSTOM"))
                || (c.role == "redis" && brings("REDIS_URI_CUSTOM"))
        })
        .map(|c| c.id.clone())
        .collect();
    Retire { drained, stores }
}

/// The deployments with containers here that are not in `keep` (deleted while the agent
/// was away).
pub fn gone(seen: &[Seen], keep: &HashSet<Uuid>) -> BTreeSet<Uuid> {
    crate::runner::left_behind(seen.iter().filter_map(|c| c.deployment), keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(id: &str, deployment: u128, role: &str) -> Seen {
        Seen {
            id: id.into(),
            deployment: Some(Uuid::from_u128(deployment)),
            role: role.into(),
            revision: None,
        }
    }

    fn deployment(env: &[&str]) -> DesiredDeployment {
        serde_json::from_value(serde_json::json!({
            "id": Uuid::from_u128(1), "name": "d", "namespace": "ns", "deployment_type": null,
            "status": "READY", "deleting": false, "active_revision_id": null, "revision": null,
            "resource_spec": null, "secret_references": null,
            "env": env.iter().map(|n| serde_json::json!({"name": n, "value": "v"})).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    #[test]
    fn what_goes_once_a_revision_serves() {
        let all = [
            seen("old", 1, "api"),
            seen("new", 1, "api"),
            seen("pg", 1, "postgres"),
            seen("redis", 1, "redis"),
            seen("theirs", 2, "api"),
        ];
        let own_stores = deployment(&[]);
        let after_switch = retire(&own_stores, &all, Some("new"));
        assert_eq!(
            after_switch,
            Retire {
                drained: vec!["old".into()],
                stores: vec![]
            }
        );
        // Checking a live revision removes no server.
        assert_eq!(retire(&own_stores, &all, None), Retire::default());
        let brings_postgres = deployment(&["POSTGRES_URI_CUSTOM"]);
        let r = retire(&brings_postgres, &all, None);
        assert_eq!(r.stores, ["pg"]);
        let brings_both = deployment(&["POSTGRES_URI_CUSTOM", "REDIS_URI_CUSTOM"]);
        assert_eq!(retire(&brings_both, &all, None).stores, ["pg", "redis"]);
    }

    #[test]
    fn deployments_left_behind() {
        let all = [
            seen("a", 1, "api"),
            seen("b", 2, "redis"),
            seen("c", 3, "api"),
        ];
        let keep = HashSet::from([Uuid::from_u128(1)]);
        let expected = BTreeSet::from([Uuid::from_u128(2), Uuid::from_u128(3)]);
        assert_eq!(gone(&all, &keep), expected);
    }
}
