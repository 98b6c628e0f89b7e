//! The runner's rules, checked without a server: which work each deployment's state asks for.

use super::{image_of, plan, Work};
use protocol::DesiredState;
use serde_json::json;

/// A deployment `n` in `namespace`, its revision in `status` held by `holder`.
fn deployment(
    n: u8,
    namespace: &str,
    status: Option<&str>,
    holder: Option<&str>,
    deleting: bool,
) -> serde_json::Value {
    json!({
        "id": format!("00000000-0000-0000-0000-0000000000{n:02}"), "name": format!("d{n}"),
        "namespace": namespace, "deployment_type": null, "status": "READY",
        "deleting": deleting, "active_revision_id": null, "resource_spec": null,
        "secret_references": null, "env": [],
        "revision": status.map(|s| json!({
            "id": format!("10000000-0000-0000-0000-0000000000{n:02}"), "status": s,
            "image": "i", "lease_holder": holder,
            // Source revisions with an uploaded source; `d11` waits for its upload.
            "build": (s.contains("BUILD") && n != 11).then(|| json!({
                "langgraph_config_path": null, "install_command": null, "build_command": null,
            })),
            "created_at": "2026-01-01T00:00:00Z",
        })),
    })
}

#[test]
fn each_deployment_gets_the_work_its_state_asks_for() {
    let state: DesiredState = serde_json::from_value(json!({
        "protocol_version": 1, "generation": 3, "namespaces": ["ns"],
        "listener_id": "20000000-0000-0000-0000-000000000000",
        "deployments": [
            deployment(1, "ns", Some("AWAITING_DEPLOY"), None, false),
            deployment(2, "other", Some("AWAITING_DEPLOY"), None, false),
            deployment(3, "ns", Some("DEPLOYING"), Some("me"), false),
            deployment(4, "ns", Some("DEPLOYING"), Some("someone else"), false),
            deployment(5, "ns", Some("DEPLOYED"), Some("me"), false),
            deployment(6, "other", Some("DEPLOYED"), None, false),
            deployment(7, "ns", Some("AWAITING_BUILD"), None, false),
            deployment(8, "ns", Some("DEPLOY_FAILED"), None, false),
            deployment(9, "ns", None, None, false),
            deployment(10, "ns", Some("DEPLOYING"), Some("someone else"), true),
            deployment(11, "ns", Some("AWAITING_BUILD"), None, false),
            deployment(12, "ns", Some("BUILDING"), Some("me"), false),
            deployment(13, "ns", Some("BUILDING"), Some("someone else"), false),
        ],
    }))
    .unwrap();
    let planned = |refuses_builds| -> Vec<(String, Work)> {
        plan(&state, "me", refuses_builds)
            .into_iter()
            .map(|(d, w)| (d.name.clone(), w))
            .collect()
    };
    let rev = |i: usize| state.deployments[i].revision.clone().unwrap();
    let want = |d7: Work, d12: Option<Work>| {
        let mut want = vec![
            ("d1".to_owned(), Work::Claim(rev(0), true)),
            ("d2".to_owned(), Work::Claim(rev(1), false)),
            ("d3".to_owned(), Work::Deploy(rev(2), true)),
            ("d5".to_owned(), Work::Keep(rev(4))),
            ("d7".to_owned(), d7),
            ("d10".to_owned(), Work::Delete),
        ];
        want.extend(d12.map(|w| ("d12".to_owned(), w)));
        want
    };
    // An agent that builds builds what waits and resumes what it holds; one that
    // cannot fails the waiting build instead of ignoring it.
    assert_eq!(
        planned(false),
        want(Work::Build(rev(6)), Some(Work::Build(rev(11))))
    );
    assert_eq!(planned(true), want(Work::RefuseBuild(rev(6)), None));
}

#[test]
fn a_revision_without_an_image_is_refused_for_every_mode() {
    let state: DesiredState = serde_json::from_value(json!({
        "protocol_version": 1, "generation": 1, "namespaces": ["ns"],
        "listener_id": "20000000-0000-0000-0000-000000000000",
        "deployments": [deployment(1, "ns", Some("AWAITING_DEPLOY"), None, false)],
    }))
    .unwrap();
    let mut rev = state.deployments[0].revision.clone().unwrap();
    assert_eq!(image_of(&rev).ok(), Some("i"));
    rev.image = None;
    let refused = image_of(&rev).unwrap_err();
    assert_eq!(
        (refused.reason.as_str(), refused.message.as_str()),
        ("NoImage", "the revision has no image to run")
    );
}
