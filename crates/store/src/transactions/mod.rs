//! Every store operation, written once over [`crate::sql::Backend`]: the store's traits
//! are implemented here for any backend, one module per part of [`crate::Store`].

mod agent_auth;
mod console;
mod dataplane;
pub(crate) mod deployments;
mod identity;
mod integrations;
pub(crate) mod listeners;
mod uploads;

use crate::lifecycle::RevisionStatus;

/// Statuses as an SQL list of literals, `'AWAITING_BUILD', 'AWAITING_DEPLOY'`.
pub(crate) fn status_list(statuses: impl Iterator<Item = RevisionStatus>) -> String {
    statuses
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}
