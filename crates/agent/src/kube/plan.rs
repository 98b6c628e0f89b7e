//! The Kubernetes modes' decisions, as pure functions of the rendered objects and what
//! the API server lists: which live objects a revision no longer has, and which
//! deployments have left the desired state. The sink lists, asks, and deletes.

use super::native::FIELD_MANAGER;
use super::render::{Object, LABEL_DEPLOYMENT};
use kube::api::DynamicObject;
use std::collections::{BTreeSet, HashSet};
use uuid::Uuid;

/// A live object of one of the kinds the agent applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub kind: &'static str,
    pub name: String,
    /// The deployment its labels name.
    pub deployment: Option<Uuid>,
    /// Whether this agent applied it (another controller may copy our labels).
    pub ours: bool,
}

impl Live {
    pub fn of(kind: &'static str, o: &DynamicObject) -> Live {
        let ours = o.metadata.managed_fields.iter().flatten().any(|m| {
            m.manager.as_deref() == Some(FIELD_MANAGER) && m.operation.as_deref() == Some("Apply")
        });
        Live {
            kind,
            name: o.metadata.name.clone().unwrap_or_default(),
            deployment: o
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_DEPLOYMENT))
                .and_then(|v| v.parse().ok()),
            ours,
        }
    }
}

/// Whether an object of `kind` goes when a revision no longer has it: not a
/// PersistentVolumeClaim, whose data stays until the deployment is deleted.
pub fn replaced_with_revisions(kind: &str) -> bool {
    kind != "PersistentVolumeClaim"
}

/// The live objects of a deployment that its revision's objects no longer include: only
/// those this agent applied, of kinds that go with revisions.
pub fn stale<'l>(desired: &[Object], live: &'l [Live]) -> Vec<&'l Live> {
    live.iter()
        .filter(|l| l.ours && replaced_with_revisions(l.kind))
        .filter(|l| !desired.iter().any(|o| o.kind == l.kind && o.name == l.name))
        .collect()
}

/// The deployments with objects here that are not in `keep` (deleted while the agent
/// was away).
pub fn gone(live: &[Live], keep: &HashSet<Uuid>) -> BTreeSet<Uuid> {
    crate::runner::left_behind(live.iter().filter_map(|l| l.deployment), keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn live(kind: &'static str, name: &str, deployment: u128, ours: bool) -> Live {
        Live {
            kind,
            name: name.into(),
            deployment: Some(Uuid::from_u128(deployment)),
            ours,
        }
    }

    #[test]
    fn what_a_revision_no_longer_has_goes() {
        let desired = [Object {
            kind: "Deployment",
            name: "d".into(),
            doc: json!({}),
        }];
        let all = [
            live("Deployment", "d", 1, true),
            live("Deployment", "d-queue", 1, true),
            live("Service", "copied", 1, false),
            live("PersistentVolumeClaim", "data", 1, true),
        ];
        let names: Vec<&str> = stale(&desired, &all)
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(names, ["d-queue"]);
        let keep = HashSet::from([Uuid::from_u128(1)]);
        assert!(gone(&all, &keep).is_empty());
        assert_eq!(
            gone(&all, &HashSet::new()),
            BTreeSet::from([Uuid::from_u128(1)])
        );
    }
}
