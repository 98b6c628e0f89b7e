//! The work a server does on its own, for the life of the process: collecting unused
//! upload files and expired Agent Auth sign-ins, releasing expired data-plane leases, and (when set) polling the
//! branches `github` deployments follow. Each holds the store (the poller the
//! operations' state) and its settings, nothing of the HTTP side.

use crate::operations::uploads::collect_garbage;
use std::time::Duration;

/// Runs [`collect_garbage`] at start and then every ten minutes, for the life of the
/// process: partial files are stale after the upload time limit, unused uploads after a
/// day. Agent Auth sign-ins go an hour after they expired.
pub fn spawn_janitor(
    app_store: std::sync::Arc<dyn store::Store>,
    storage_dir: std::path::PathBuf,
    upload_timeout: std::time::Duration,
) {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(600);
    const UNUSED_GRACE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
    tokio::spawn(async move {
        loop {
            match collect_garbage(&*app_store, &storage_dir, upload_timeout, UNUSED_GRACE).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "removed unused upload files"),
                Err(e) => tracing::warn!(error = %e, "upload garbage collection failed"),
            }
            let expired = chrono::Utc::now() - chrono::Duration::hours(1);
            if let Err(e) = app_store.sweep_auth_requests(expired).await {
                tracing::warn!(error = %e, "forgetting expired sign-ins failed");
            }
            tokio::time::sleep(EVERY).await;
        }
    });
}

/// Every few seconds, puts revisions whose lease ran out back where they were, so
/// another agent replica can claim them (a claim also takes over an expired lease on
/// its own; this makes the public status honest in between).
pub fn spawn_lease_sweeper(store: std::sync::Arc<dyn store::Store>, lease: Duration) {
    let every = (lease / 4).clamp(Duration::from_millis(250), Duration::from_secs(15));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match store.release_expired_leases().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(revisions = n, "released expired data-plane leases"),
                Err(e) => tracing::warn!(error = %e, "releasing expired leases failed"),
            }
        }
    });
}

/// Every `every`, gives each `build_on_push` deployment whose branch moved a revision
/// building the new commit ([`crate::operations::integrations::poll`]), for hosts that
/// cannot deliver push events. Replicas polling together create one revision per
/// commit: a revision is saved only against the deployment it read.
pub fn spawn_git_poller(app: crate::AppState, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match crate::operations::integrations::poll(&app).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deployments = n, "branches moved: new revisions"),
                Err(e) => tracing::warn!(error = ?e, "polling followed branches failed"),
            }
        }
    });
}
