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

/// Statuses of a revision (the reference's enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevisionStatus {
    Creating,
    Queued,
    AwaitingBuild,
    Building,
    AwaitingDeploy,
    Deploying,
    CreateFailed,
    BuildFailed,
    DeployFailed,
    Deployed,
    Skipped,
    Interrupted,
    Unknown,
}

impl RevisionStatus {
    pub const ALL: [RevisionStatus; 13] = [
        RevisionStatus::Creating,
        RevisionStatus::Queued,
        RevisionStatus::AwaitingBuild,
        RevisionStatus::Building,
        RevisionStatus::AwaitingDeploy,
        RevisionStatus::Deploying,
        RevisionStatus::CreateFailed,
        RevisionStatus::BuildFailed,
        RevisionStatus::DeployFailed,
        RevisionStatus::Deployed,
        RevisionStatus::Skipped,
        RevisionStatus::Interrupted,
        RevisionStatus::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        use RevisionStatus::*;
        match self {
            Creating => "CREATING",
            Queued => "QUEUED",
            AwaitingBuild => "AWAITING_BUILD",
            Building => "BUILDING",
            AwaitingDeploy => "AWAITING_DEPLOY",
            Deploying => "DEPLOYING",
            CreateFailed => "CREATE_FAILED",
            BuildFailed => "BUILD_FAILED",
            DeployFailed => "DEPLOY_FAILED",
            Deployed => "DEPLOYED",
            Skipped => "SKIPPED",
            Interrupted => "INTERRUPTED",
            Unknown => "UNKNOWN",
        }
    }

    /// The status of this name; `None` for a name that is not one.
    pub fn parse(s: &str) -> Option<RevisionStatus> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The statuses a new revision supersedes (they become `SKIPPED`), as an SQL list of
    /// literals: `'AWAITING_BUILD', 'AWAITING_DEPLOY'`.
    /// Built once: it is part of every revision insert.
    pub fn superseded_sql() -> &'static str {
        static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        SQL.get_or_init(|| {
            let names: Vec<String> = Self::ALL
                .into_iter()
                .filter(|s| s.is_waiting() && s.can_become(RevisionStatus::Skipped))
                .map(|s| format!("'{}'", s.as_str()))
                .collect();
            names.join(", ")
        })
    }

    /// Where a new revision starts: an image only needs deploying, anything else a build.
    pub fn initial(has_image: bool) -> RevisionStatus {
        if has_image {
            RevisionStatus::AwaitingDeploy
        } else {
            RevisionStatus::AwaitingBuild
        }
    }

    /// Still waiting for a data plane; a newer revision supersedes it (`SKIPPED`).
    pub fn is_waiting(self) -> bool {
        matches!(
            self,
            RevisionStatus::AwaitingBuild | RevisionStatus::AwaitingDeploy
        )
    }

    /// Clients stop polling at these.
    pub fn is_final(self) -> bool {
        use RevisionStatus::*;
        matches!(
            self,
            Deployed | CreateFailed | BuildFailed | DeployFailed | Skipped
        )
    }

    /// A data plane has picked the revision up (deleting its deployment then needs the
    /// data plane to tear it down).
    pub fn started(self) -> bool {
        use RevisionStatus::*;
        !matches!(
            self,
            Creating | Queued | AwaitingBuild | AwaitingDeploy | Skipped
        )
    }

    /// The transitions the control plane and the data plane may make.
    pub fn can_become(self, next: RevisionStatus) -> bool {
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

#[cfg(test)]
mod tests {
    use super::RevisionStatus::*;
    use super::*;

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
            RevisionStatus::superseded_sql(),
            "'AWAITING_BUILD', 'AWAITING_DEPLOY'"
        );
        assert!(Skipped.is_final() && !Skipped.started() && Building.started());
    }
}
