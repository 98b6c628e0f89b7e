//! The deployment and revision state machines. The control plane creates revisions in a
//! waiting state; everything after that is the data plane's to report, and only the
//! transitions listed here are accepted.

/// Statuses of a deployment (the reference's enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentStatus {
    AwaitingDatabase,
    Ready,
    Unused,
    AwaitingDelete,
    Unknown,
}

impl DeploymentStatus {
    pub const ALL: [DeploymentStatus; 5] = [
        DeploymentStatus::AwaitingDatabase,
        DeploymentStatus::Ready,
        DeploymentStatus::Unused,
        DeploymentStatus::AwaitingDelete,
        DeploymentStatus::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStatus::AwaitingDatabase => "AWAITING_DATABASE",
            DeploymentStatus::Ready => "READY",
            DeploymentStatus::Unused => "UNUSED",
            DeploymentStatus::AwaitingDelete => "AWAITING_DELETE",
            DeploymentStatus::Unknown => "UNKNOWN",
        }
    }

    /// The status of this name; `None` for a name that is not one.
    pub fn parse(s: &str) -> Option<DeploymentStatus> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// Statuses of a revision: the wire's enum ([`protocol::RevisionStatus`], which also
/// names them), so the server and its agents cannot drift. The rules about them are
/// [`RevisionRules`].
pub use protocol::RevisionStatus;

/// The control plane's rules about revision statuses.
pub trait RevisionRules: Copy {
    /// The statuses a newer revision supersedes: they become `SKIPPED`.
    fn superseded() -> impl Iterator<Item = RevisionStatus>;
    /// The statuses an agent holds a lease in, which go back to waiting when it expires.
    fn leased() -> impl Iterator<Item = RevisionStatus>;
    /// Where a new revision starts: an image only needs deploying, anything else a build.
    fn initial(has_image: bool) -> RevisionStatus;
    /// Still waiting for a data plane; a newer revision supersedes it (`SKIPPED`).
    fn is_waiting(self) -> bool;
    /// Clients stop polling at these.
    fn is_final(self) -> bool;
    /// A data plane has picked the revision up (deleting its deployment then needs the
    /// data plane to tear it down).
    fn started(self) -> bool;
    /// The transitions the control plane and the data plane may make.
    fn can_become(self, next: RevisionStatus) -> bool;
}

impl RevisionRules for RevisionStatus {
    fn superseded() -> impl Iterator<Item = RevisionStatus> {
        RevisionStatus::ALL
            .into_iter()
            .filter(|s| s.is_waiting() && s.can_become(RevisionStatus::Skipped))
    }

    fn leased() -> impl Iterator<Item = RevisionStatus> {
        RevisionStatus::ALL
            .into_iter()
            .filter(|s| released_status(*s).is_some())
    }

    fn initial(has_image: bool) -> RevisionStatus {
        if has_image {
            RevisionStatus::AwaitingDeploy
        } else {
            RevisionStatus::AwaitingBuild
        }
    }

    fn is_waiting(self) -> bool {
        matches!(
            self,
            RevisionStatus::AwaitingBuild | RevisionStatus::AwaitingDeploy
        )
    }

    fn is_final(self) -> bool {
        use RevisionStatus::*;
        matches!(
            self,
            Deployed | CreateFailed | BuildFailed | DeployFailed | Skipped
        )
    }

    fn started(self) -> bool {
        use RevisionStatus::*;
        !matches!(
            self,
            Creating | Queued | AwaitingBuild | AwaitingDeploy | Skipped
        )
    }

    fn can_become(self, next: RevisionStatus) -> bool {
        use RevisionStatus::*;
        match self {
            Creating => matches!(
                next,
                Queued | AwaitingBuild | AwaitingDeploy | CreateFailed | Interrupted
            ),
            Queued => matches!(
                next,
                AwaitingBuild | AwaitingDeploy | CreateFailed | Skipped | Interrupted
            ),
            AwaitingBuild => matches!(next, Building | Skipped | Interrupted),
            Building => matches!(next, AwaitingDeploy | BuildFailed | Interrupted),
            AwaitingDeploy => matches!(next, Deploying | Skipped | Interrupted),
            Deploying => matches!(next, Deployed | DeployFailed | Interrupted),
            // A deployed revision stays deployed; a newer one takes over as active.
            Deployed | CreateFailed | BuildFailed | DeployFailed | Skipped | Interrupted
            | Unknown => false,
        }
    }
}

/// What deleting a deployment does: it goes at once when no data plane has started any
/// of its revisions (or when `force` is given for one already awaiting deletion);
/// otherwise it waits in `AWAITING_DELETE` for the data plane to tear it down.
pub fn delete_outcome(
    status: DeploymentStatus,
    revision_statuses: &[RevisionStatus],
    force: bool,
) -> crate::DeleteOutcome {
    let awaiting = status == DeploymentStatus::AwaitingDelete;
    let started = revision_statuses.iter().any(|s| s.started());
    if (force && awaiting) || !started {
        crate::DeleteOutcome::Removed
    } else {
        crate::DeleteOutcome::MarkedForDeletion
    }
}

/// Where a claim takes a revision: a waiting revision to its working status, a revision
/// already in work to itself (the holder renewing, or another agent taking over an
/// expired lease). `None` when its status cannot be claimed.
pub fn claimed_status(status: RevisionStatus) -> Option<RevisionStatus> {
    use RevisionStatus::*;
    match status {
        AwaitingDeploy | Deploying => Some(Deploying),
        AwaitingBuild | Building => Some(Building),
        _ => None,
    }
}

/// Where an expired lease puts a revision back.
pub fn released_status(status: RevisionStatus) -> Option<RevisionStatus> {
    match status {
        RevisionStatus::Deploying => Some(RevisionStatus::AwaitingDeploy),
        RevisionStatus::Building => Some(RevisionStatus::AwaitingBuild),
        _ => None,
    }
}

/// The claim decision for a revision of a deployment that is not being deleted.
pub fn claim(
    status: RevisionStatus,
    holder: Option<&str>,
    lease_live: bool,
    agent: &str,
) -> std::result::Result<RevisionStatus, crate::ClaimRefusal> {
    let next = claimed_status(status).ok_or(crate::ClaimRefusal::NotClaimable)?;
    match holder {
        Some(h) if h != agent && lease_live && next == status => Err(crate::ClaimRefusal::Held),
        _ => Ok(next),
    }
}

/// The report decision: `Ok(None)` when the revision is already where the report would
/// take it (the same report twice), `Ok(Some(next))` to move it.
pub fn report(
    status: RevisionStatus,
    holder: Option<&str>,
    agent: &str,
    stored_image: Option<&str>,
    reported: RevisionStatus,
    reported_image: Option<&str>,
) -> std::result::Result<Option<RevisionStatus>, crate::ReportRefusal> {
    use RevisionStatus::*;
    // A finished build is reported as the revision moving to AWAITING_DEPLOY.
    let built = reported == AwaitingDeploy;
    let repeated = if built {
        !matches!(status, AwaitingBuild | Building) && stored_image == reported_image
    } else {
        status == reported
    };
    if repeated {
        return Ok(None);
    }
    let allowed = match reported {
        AwaitingDeploy | BuildFailed => status == Building,
        Deployed | DeployFailed => status == Deploying,
        _ => false,
    };
    if !allowed || !status.can_become(reported) {
        return Err(crate::ReportRefusal::NotAllowed);
    }
    if holder != Some(agent) {
        return Err(crate::ReportRefusal::NotHolder);
    }
    Ok(Some(reported))
}

/// The log line a report leaves (kind, level, text), so `langgraph deploy logs` shows
/// what happened and why.
pub fn report_log_line(
    revision: uuid::Uuid,
    next: RevisionStatus,
    image: Option<&str>,
    reason: Option<&str>,
    message: Option<&str>,
) -> (&'static str, &'static str, String) {
    let why = [reason, message]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    let why = if why.is_empty() {
        String::new()
    } else {
        format!(": {why}")
    };
    match next {
        RevisionStatus::AwaitingDeploy => (
            "build",
            "INFO",
            format!(
                "Build of revision {revision} finished: {}",
                image.unwrap_or_default()
            ),
        ),
        RevisionStatus::BuildFailed => (
            "build",
            "ERROR",
            format!("Build of revision {revision} failed{why}"),
        ),
        RevisionStatus::DeployFailed => (
            "deploy",
            "ERROR",
            format!("Revision {revision} failed to deploy{why}"),
        ),
        _ => ("deploy", "INFO", format!("Revision {revision} deployed")),
    }
}

/// What a report sees of the revision's deployment.
#[derive(Debug, Clone, Copy)]
pub struct DeploymentView {
    pub status: DeploymentStatus,
    /// When its active revision was created, if it has one.
    pub active_created_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The whole effect of an accepted report, which a store applies as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportEffect {
    /// The revision's new status; its lease ends.
    pub revision: RevisionStatus,
    /// The revision becomes the deployment's active one, and the deployment takes this
    /// status: a deployed revision never replaces a newer active one.
    pub activate: Option<DeploymentStatus>,
    /// Revisions of the deployment created before this one and still waiting become
    /// `SKIPPED`.
    pub skip_older: bool,
    /// The log line it leaves: kind, level, text.
    pub log: (&'static str, &'static str, String),
}

/// Decides a report on `rev` (see [`report`]) and, when it changes something, everything
/// it changes. `Ok(None)`: the same report again, nothing to do.
pub fn report_effect(
    rev: &crate::Revision,
    deployment: DeploymentView,
    r: &crate::Report,
) -> std::result::Result<Option<ReportEffect>, crate::ReportRefusal> {
    let held = rev.data_plane.lease_holder.as_deref();
    let stored_image = rev.data_plane.image.as_deref();
    let image = r.image.as_deref();
    let Some(next) = report(rev.status, held, &r.agent_id, stored_image, r.status, image)? else {
        return Ok(None);
    };
    let deployed = next == RevisionStatus::Deployed;
    let newest = deployment
        .active_created_at
        .is_none_or(|active| active <= rev.created_at);
    let activate = (deployed && newest).then_some(match deployment.status {
        DeploymentStatus::AwaitingDelete => DeploymentStatus::AwaitingDelete,
        _ => DeploymentStatus::Ready,
    });
    let (reason, message) = (r.reason.as_deref(), r.message.as_deref());
    Ok(Some(ReportEffect {
        revision: next,
        activate,
        skip_older: deployed,
        log: report_log_line(rev.id, next, image, reason, message),
    }))
}

#[cfg(test)]
mod tests {
    use super::RevisionStatus::*;
    use super::*;

    fn deploying(created_at: i64) -> crate::Revision {
        crate::Revision {
            id: uuid::Uuid::nil(),
            deployment_id: uuid::Uuid::nil(),
            source: "internal_docker".into(),
            source_revision_config: serde_json::json!({}),
            status: Deploying,
            remote_reconciled: true,
            created_at: chrono::DateTime::from_timestamp_micros(created_at).unwrap(),
            updated_at: chrono::DateTime::from_timestamp_micros(created_at).unwrap(),
            data_plane: crate::RevisionProgress {
                lease_holder: Some("a".into()),
                ..Default::default()
            },
        }
    }

    fn reported(status: RevisionStatus) -> crate::Report {
        crate::Report {
            agent_id: "a".into(),
            status,
            image: None,
            reason: None,
            message: None,
        }
    }

    #[test]
    fn report_effects() {
        let view = |status, active: Option<i64>| DeploymentView {
            status,
            active_created_at: active.map(|t| chrono::DateTime::from_timestamp_micros(t).unwrap()),
        };
        let ready = DeploymentStatus::Ready;
        let effect = |rev: &crate::Revision, d, s| report_effect(rev, d, &reported(s));
        // Deployed with no active revision, or one no newer: it becomes active, the
        // deployment READY, and older waiting revisions are skipped.
        for active in [None, Some(5), Some(10)] {
            let e = effect(
                &deploying(10),
                view(DeploymentStatus::Unknown, active),
                Deployed,
            );
            let e = e.unwrap().unwrap();
            assert_eq!(
                (e.revision, e.activate, e.skip_older),
                (Deployed, Some(ready), true)
            );
        }
        // A newer revision is active already: this one does not replace it.
        let e = effect(&deploying(10), view(ready, Some(11)), Deployed)
            .unwrap()
            .unwrap();
        assert_eq!((e.activate, e.skip_older), (None, true));
        // A deployment being deleted stays so.
        let deleting = view(DeploymentStatus::AwaitingDelete, None);
        let e = effect(&deploying(10), deleting, Deployed).unwrap().unwrap();
        assert_eq!(e.activate, Some(DeploymentStatus::AwaitingDelete));
        // A failure changes only the revision.
        let e = effect(&deploying(10), view(ready, None), DeployFailed)
            .unwrap()
            .unwrap();
        assert_eq!(
            (e.revision, e.activate, e.skip_older),
            (DeployFailed, None, false)
        );
        assert_eq!(e.log.0, "deploy");
        // The same report again does nothing; a refused one is refused.
        let mut done = deploying(10);
        done.status = Deployed;
        assert_eq!(effect(&done, view(ready, None), Deployed), Ok(None));
        assert_eq!(
            effect(&done, view(ready, None), BuildFailed),
            Err(crate::ReportRefusal::NotAllowed)
        );
    }

    #[test]
    fn image_path_and_build_path() {
        assert_eq!(RevisionStatus::initial(true), AwaitingDeploy);
        assert_eq!(RevisionStatus::initial(false), AwaitingBuild);
        for (a, b) in [
            (AwaitingBuild, Building),
            (Building, AwaitingDeploy),
            (AwaitingDeploy, Deploying),
            (Deploying, Deployed),
        ] {
            assert!(a.can_become(b), "{a:?} -> {b:?}");
        }
        assert!(!Deployed.can_become(Deploying));
        assert!(!AwaitingDeploy.can_become(Deployed));
        assert!(AwaitingDeploy.can_become(Skipped) && !Deploying.can_become(Skipped));
        // An operator can interrupt anything that has not finished, nothing that has.
        for s in RevisionStatus::ALL {
            let unfinished = !s.is_final() && !matches!(s, Interrupted | Unknown);
            assert_eq!(s.can_become(Interrupted), unfinished, "{s:?}");
        }
    }

    #[test]
    fn claims() {
        use crate::ClaimRefusal;
        assert_eq!(claim(AwaitingDeploy, None, false, "a"), Ok(Deploying));
        assert_eq!(claim(AwaitingBuild, None, false, "a"), Ok(Building));
        // The holder renews; another agent waits for the lease to run out.
        assert_eq!(claim(Deploying, Some("a"), true, "a"), Ok(Deploying));
        assert_eq!(
            claim(Deploying, Some("a"), true, "b"),
            Err(ClaimRefusal::Held)
        );
        assert_eq!(claim(Deploying, Some("a"), false, "b"), Ok(Deploying));
        for s in [
            Skipped,
            Deployed,
            DeployFailed,
            BuildFailed,
            Interrupted,
            Queued,
        ] {
            assert_eq!(claim(s, None, false, "a"), Err(ClaimRefusal::NotClaimable));
        }
        assert_eq!(released_status(Building), Some(AwaitingBuild));
        assert_eq!(released_status(Deployed), None);
    }

    #[test]
    fn reports() {
        use crate::ReportRefusal;
        let a = Some("a");
        assert_eq!(
            report(Deploying, a, "a", None, Deployed, None),
            Ok(Some(Deployed))
        );
        assert_eq!(report(Deployed, None, "a", None, Deployed, None), Ok(None));
        assert_eq!(
            report(Deploying, a, "b", None, Deployed, None),
            Err(ReportRefusal::NotHolder)
        );
        assert_eq!(
            report(AwaitingDeploy, None, "a", None, Deployed, None),
            Err(ReportRefusal::NotAllowed)
        );
        assert_eq!(
            report(Deployed, None, "a", None, DeployFailed, None),
            Err(ReportRefusal::NotAllowed)
        );
        // A build: BUILT is the move to AWAITING_DEPLOY with the image; again is a no-op.
        assert_eq!(
            report(Building, a, "a", None, AwaitingDeploy, Some("img")),
            Ok(Some(AwaitingDeploy))
        );
        assert_eq!(
            report(
                Deploying,
                Some("b"),
                "a",
                Some("img"),
                AwaitingDeploy,
                Some("img")
            ),
            Ok(None)
        );
        assert_eq!(
            report(Building, a, "a", None, BuildFailed, None),
            Ok(Some(BuildFailed))
        );
        assert_eq!(
            report(Deploying, a, "a", None, BuildFailed, None),
            Err(ReportRefusal::NotAllowed)
        );
    }

    #[test]
    fn names_round_trip() {
        for s in RevisionStatus::ALL {
            assert_eq!(RevisionStatus::parse(s.as_str()), Some(s));
        }
        for d in DeploymentStatus::ALL {
            assert_eq!(DeploymentStatus::parse(d.as_str()), Some(d));
        }
        assert_eq!(RevisionStatus::parse("DONE"), None);
        assert_eq!(
            RevisionStatus::superseded().collect::<Vec<_>>(),
            [AwaitingBuild, AwaitingDeploy]
        );
        assert_eq!(
            RevisionStatus::leased().collect::<Vec<_>>(),
            [Building, Deploying]
        );
        assert!(Skipped.is_final() && !Skipped.started() && Building.started());
    }
}
