//! The store's contract, checked without HTTP on both backends: the same calls must
//! give the same results on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used)]

mod common;

use hostplane_store::lifecycle::{DeploymentStatus, RevisionRules, RevisionStatus};
use hostplane_store::{
    AgentBeat, DeleteOutcome, Deployment, ListenerPatch, NewListener, NewRevision, StoreError,
    Versioned,
};
use hostplane_store::{Reservation, UploadRoom, Window};
use serde_json::json;
use uuid::Uuid;

async fn fresh(postgres: bool) -> std::sync::Arc<dyn hostplane_store::Store> {
    common::fresh(postgres).await.0
}

fn listener(ws: Uuid, compute_id: &str) -> NewListener {
    NewListener {
        workspace_id: ws,
        compute_type: "k8s".into(),
        compute_id: compute_id.into(),
        version: None,
        k8s_namespaces: Some(vec!["agents".into()]),
    }
}

fn deployment(ws: Uuid, name: &str, listener_id: Option<Uuid>) -> Deployment {
    let now = chrono::Utc::now();
    Deployment {
        id: Uuid::new_v4(),
        workspace_id: ws,
        name: name.into(),
        source: "external_docker".into(),
        source_config: json!({}),
        source_revision_config: json!({"image_uri": "docker.io/acme/a:1"}),
        secrets: "v2:".into(),
        secret_references: None,
        tracked_packages: None,
        deployment_type: None,
        listener_id,
        status: DeploymentStatus::AwaitingDatabase,
        latest_revision_id: None,
        active_revision_id: None,
        image_version: None,
        remote_reconciled: false,
        created_at: now,
        updated_at: now,
    }
}

fn image_revision(tag: &str) -> NewRevision {
    NewRevision {
        source: "external_docker".into(),
        source_revision_config: json!({"image_uri": format!("docker.io/acme/a:{tag}")}),
        status: RevisionStatus::initial(true),
    }
}

async fn listeners(postgres: bool) {
    let store = fresh(postgres).await;
    let ws = store
        .bootstrap(Some("k"))
        .await
        .unwrap()
        .unwrap()
        .workspace
        .id;
    let a = store.create_listener(listener(ws, "a")).await.unwrap();
    let b = store.create_listener(listener(ws, "b")).await.unwrap();
    assert!(matches!(
        store.create_listener(listener(ws, "a")).await,
        Err(StoreError::Conflict)
    ));
    // Oldest first, and the ids placement sees in the same order.
    let page = store.list_listeners(ws, Window::first(10)).await.unwrap();
    assert_eq!(page, vec![a.clone(), b.clone()]);
    assert_eq!(store.listener_ids(ws).await.unwrap(), vec![a.id, b.id]);
    assert_eq!(
        store.list_listeners(ws, Window::new(1, 1)).await.unwrap(),
        vec![b.clone()]
    );
    // Another workspace sees nothing.
    let other = Uuid::new_v4();
    assert_eq!(store.get_listener(other, a.id).await.unwrap(), None);
    assert!(store.listener_ids(other).await.unwrap().is_empty());
    // A patch changes what it names and moves updated_at forward.
    let patch = ListenerPatch {
        version: Some("1.2".into()),
        k8s_namespaces: Some(None),
    };
    let patched = store
        .patch_listener(ws, a.id, patch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (patched.version.as_deref(), patched.k8s_namespaces),
        (Some("1.2"), None)
    );
    assert!(patched.updated_at > a.updated_at);
    // A listener a deployment uses cannot go; a free one can, once.
    store
        .create_deployment(deployment(ws, "d", Some(b.id)), image_revision("1"))
        .await
        .unwrap();
    assert!(matches!(
        store.delete_listener(ws, b.id).await,
        Err(StoreError::InUse)
    ));
    assert!(store.delete_listener(ws, a.id).await.unwrap());
    assert!(!store.delete_listener(ws, a.id).await.unwrap());
}

async fn revisions(postgres: bool) {
    let store = fresh(postgres).await;
    let ws = store.bootstrap(None).await.unwrap().unwrap().workspace.id;
    let created = store
        .create_deployment(deployment(ws, "d", None), image_revision("1"))
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_deployment(deployment(ws, "d", None), image_revision("1"))
            .await,
        Err(StoreError::Conflict)
    ));
    // A new revision supersedes the one still waiting.
    let saved = store
        .save_deployment(
            created.clone(),
            created.updated_at,
            Some(image_revision("2")),
        )
        .await
        .unwrap();
    assert_ne!(saved.latest_revision_id, created.latest_revision_id);
    let revs = store
        .list_revisions(ws, created.id, &Default::default(), Window::first(10))
        .await
        .unwrap()
        .unwrap();
    let statuses: Vec<RevisionStatus> = revs.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        vec![RevisionStatus::AwaitingDeploy, RevisionStatus::Skipped]
    );
    assert_eq!(Some(revs[0].id), saved.latest_revision_id);
    // A save against what is no longer there is stale and writes nothing.
    assert!(matches!(
        store
            .save_deployment(
                created.clone(),
                created.updated_at,
                Some(image_revision("3"))
            )
            .await,
        Err(StoreError::Stale)
    ));
    let again = store
        .list_revisions(ws, created.id, &Default::default(), Window::first(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.len(), 2);
    // Nothing started: the deployment goes at once, its revisions with it.
    assert_eq!(
        store
            .delete_deployment(ws, created.id, false)
            .await
            .unwrap(),
        DeleteOutcome::Removed
    );
    assert_eq!(store.get_deployment(ws, created.id).await.unwrap(), None);
    assert_eq!(
        store
            .delete_deployment(ws, created.id, false)
            .await
            .unwrap(),
        DeleteOutcome::NotFound
    );
}

async fn uploads(postgres: bool) {
    let store = fresh(postgres).await;
    let ws = store.bootstrap(None).await.unwrap().unwrap().workspace.id;
    let d = store
        .create_deployment(deployment(ws, "src", None), image_revision("1"))
        .await
        .unwrap();
    let expires = chrono::Utc::now() + chrono::Duration::minutes(5);
    let path = "hostplane-uploads/x/1.tar.gz";
    assert!(store
        .create_upload(d.id, "hash-1", path, expires, 2)
        .await
        .unwrap());
    // At most two outstanding per deployment.
    assert!(store
        .create_upload(d.id, "hash-2", "hostplane-uploads/x/2.tar.gz", expires, 2)
        .await
        .unwrap());
    assert!(!store
        .create_upload(d.id, "hash-3", "hostplane-uploads/x/3.tar.gz", expires, 2)
        .await
        .unwrap());
    let room = |want, need| UploadRoom {
        quota: 1000,
        want,
        need,
        until: expires,
    };
    let held = |bytes, used| Reservation::Held {
        deployment: d.id,
        object_path: path.to_owned(),
        bytes,
        used,
    };
    // Holding 600 of 1000 leaves 400: another upload needing 500 finds no room, one
    // taking what is left gets 400.
    assert_eq!(
        store
            .reserve_upload("hash-1", room(600, 600))
            .await
            .unwrap(),
        held(600, 0)
    );
    // Being written: not available to a second request.
    assert_eq!(
        store.reserve_upload("hash-1", room(1, 1)).await.unwrap(),
        Reservation::Unavailable
    );
    assert_eq!(
        store
            .reserve_upload("hash-2", room(500, 500))
            .await
            .unwrap(),
        Reservation::NoRoom { used: 600 }
    );
    // Released, its room is free again.
    store.release_upload("hash-1").await.unwrap();
    assert_eq!(
        store
            .reserve_upload("hash-1", room(600, 600))
            .await
            .unwrap(),
        held(600, 0)
    );
    store.complete_upload("hash-1", 234).await.unwrap();
    assert!(matches!(
        store.complete_upload("hash-1", 234).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        store.reserve_upload("hash-1", room(1, 1)).await.unwrap(),
        Reservation::Unavailable
    );
    // Completed, its size counts instead of its hold.
    match store.reserve_upload("hash-2", room(1000, 1)).await.unwrap() {
        Reservation::Held { bytes, used, .. } => assert_eq!((bytes, used), (766, 234)),
        other => panic!("{other:?}"),
    }
    store.release_upload("hash-2").await.unwrap();
    // A hold past its deadline counts for nothing.
    let past = chrono::Utc::now() - chrono::Duration::seconds(1);
    let stale = UploadRoom {
        until: past,
        ..room(700, 700)
    };
    assert!(matches!(
        store.reserve_upload("hash-2", stale).await.unwrap(),
        Reservation::Held { bytes: 700, .. }
    ));
    assert!(matches!(
        store
            .reserve_upload("hash-2", room(766, 766))
            .await
            .unwrap(),
        Reservation::Held {
            bytes: 766,
            used: 234,
            ..
        }
    ));
    store.release_upload("hash-2").await.unwrap();
    assert!(store.upload_completed(d.id, path).await.unwrap());
    // Young, it stays; unused past the grace, it goes (and frees the quota).
    let an_hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    assert!(!store.collect_upload(path, an_hour_ago).await.unwrap());
    assert!(store
        .collect_upload(path, chrono::Utc::now())
        .await
        .unwrap());
    assert!(matches!(
        store
            .reserve_upload("hash-2", room(1000, 1000))
            .await
            .unwrap(),
        Reservation::Held {
            bytes: 1000,
            used: 0,
            ..
        }
    ));
}

/// Versions: what a list would return, in its order, with the `updated_at` every change
/// moves forward; reads by ids stay in their workspace.
async fn versions(postgres: bool) {
    let store = fresh(postgres).await;
    let ws = store.bootstrap(None).await.unwrap().unwrap().workspace.id;
    let a = store.create_listener(listener(ws, "a")).await.unwrap();
    let b = store.create_listener(listener(ws, "b")).await.unwrap();
    let page = store
        .listener_versions(ws, Window::first(10))
        .await
        .unwrap();
    assert_eq!(page, vec![(a.id, a.updated_at), (b.id, b.updated_at)]);
    assert_eq!(
        store
            .listener_versions(ws, Window::new(1, 1))
            .await
            .unwrap(),
        vec![(b.id, b.updated_at)]
    );
    let patched = store
        .patch_listener(
            ws,
            a.id,
            ListenerPatch {
                version: Some("v2".into()),
                k8s_namespaces: None,
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert!(patched.updated_at > a.updated_at);
    assert_eq!(
        store.version(Versioned::Listener, ws, a.id).await.unwrap(),
        Some(patched.updated_at)
    );
    let mut read = store
        .listeners_by_ids(ws, &[b.id, a.id, Uuid::new_v4()])
        .await
        .unwrap();
    read.sort_by_key(|l| l.compute_id.clone());
    assert_eq!(
        read.iter()
            .map(|l| (l.id, l.version.clone()))
            .collect::<Vec<_>>(),
        vec![(a.id, Some("v2".into())), (b.id, None)]
    );
    let other = Uuid::new_v4();
    assert!(store
        .listeners_by_ids(other, &[a.id])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .version(Versioned::Listener, other, a.id)
            .await
            .unwrap(),
        None
    );
    let d = store
        .create_deployment(deployment(ws, "v", None), image_revision("1"))
        .await
        .unwrap();
    assert_eq!(
        store
            .version(Versioned::Deployment, ws, d.id)
            .await
            .unwrap(),
        Some(d.updated_at)
    );
    assert_eq!(
        store
            .version(Versioned::Deployment, ws, a.id)
            .await
            .unwrap(),
        None
    );
}

/// Console sessions live until they expire or end; agent states are what the last
/// heartbeat said, per workspace.
async fn console(postgres: bool) {
    let store = fresh(postgres).await;
    let ws = store.bootstrap(None).await.unwrap().unwrap().workspace.id;
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let past = chrono::Utc::now() - chrono::Duration::seconds(1);
    store.create_session("t1", "key-1", later).await.unwrap();
    store.create_session("t2", "key-2", past).await.unwrap();
    assert_eq!(
        store.session_key("t1").await.unwrap().as_deref(),
        Some("key-1")
    );
    assert_eq!(store.session_key("t2").await.unwrap(), None);
    assert_eq!(store.session_key("t3").await.unwrap(), None);
    store.delete_session("t1").await.unwrap();
    store.delete_session("t1").await.unwrap();
    assert_eq!(store.session_key("t1").await.unwrap(), None);

    let quiet = store.create_listener(listener(ws, "quiet")).await.unwrap();
    let busy = store.create_listener(listener(ws, "busy")).await.unwrap();
    assert!(store.agent_states(ws).await.unwrap().is_empty());
    let beat = AgentBeat {
        agent_id: "a1".into(),
        version: "v9".into(),
        facts: r#"{"mode":"native"}"#.into(),
        lease_until: later,
    };
    store.heartbeat(busy.id, beat).await.unwrap().unwrap();
    let states = store.agent_states(ws).await.unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].listener_id, busy.id);
    assert_eq!(states[0].facts, Some(json!({"mode": "native"})));
    assert!(states[0].last_seen_at.is_some());
    assert!(states.iter().all(|s| s.listener_id != quiet.id));
    assert!(store.agent_states(Uuid::new_v4()).await.unwrap().is_empty());
}

/// Keys: by id, revoked or not; revoking twice is fine, an unknown id is `NotFound`.
async fn api_keys(postgres: bool) {
    let store = fresh(postgres).await;
    let boot = store.bootstrap(None).await.unwrap().unwrap();
    let scope = hostplane_store::KeyScope::Workspace {
        org_id: boot.org.id,
        workspace_id: boot.workspace.id,
    };
    let key = store.create_api_key(scope, "hash-k").await.unwrap();
    let got = store.get_api_key(key.id).await.unwrap().unwrap();
    assert_eq!((got.id, got.revoked_at), (key.id, None));
    store.revoke_api_key(key.id).await.unwrap();
    store.revoke_api_key(key.id).await.unwrap();
    assert!(store
        .get_api_key(key.id)
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_some());
    assert!(store.get_api_key(Uuid::new_v4()).await.unwrap().is_none());
    assert!(matches!(
        store.revoke_api_key(Uuid::new_v4()).await,
        Err(StoreError::NotFound)
    ));
}

fn oauth_provider(ws: Uuid, provider_id: &str) -> hostplane_store::OAuthProvider {
    let now = chrono::Utc::now();
    hostplane_store::OAuthProvider {
        id: Uuid::new_v4(),
        workspace_id: ws,
        provider_id: provider_id.into(),
        name: "Acme".into(),
        client_id: "cid".into(),
        client_secret: Some("sealed".into()),
        auth_url: "https://a.example/auth".into(),
        token_url: "https://a.example/token".into(),
        uses_pkce: true,
        code_challenge_method: Some("S256".into()),
        provider_type: None,
        mcp_server_url: None,
        token_endpoint_auth_method: "none".into(),
        is_dynamic_client: false,
        created_at: now,
        updated_at: now,
    }
}

fn sign_in(
    ws: Uuid,
    provider_row: Uuid,
    state_hash: &str,
    expires_at: chrono::DateTime<chrono::Utc>,
) -> hostplane_store::AuthRequest {
    hostplane_store::AuthRequest {
        id: Uuid::new_v4(),
        workspace_id: ws,
        provider_row,
        state_hash: state_hash.into(),
        verifier: Some("sealed-verifier".into()),
        owner: "alice".into(),
        agent_id: None,
        scopes: vec!["read".into()],
        is_default: true,
        status: hostplane_store::AuthRequestStatus::Pending,
        token_id: None,
        error: None,
        expires_at,
        created_at: chrono::Utc::now(),
    }
}

/// Agent Auth: a sign-in is taken once, only while pending and unexpired and only from
/// its workspace; finishing it saves the token (its owner's only default) and wakes its
/// waiters; expired sign-ins are swept; a provider's delete takes its rows along.
async fn agent_auth(postgres: bool) {
    use hostplane_store::{AuthOutcome, AuthRequestStatus, TokenFilter};
    let store = fresh(postgres).await;
    let ws = store.bootstrap(None).await.unwrap().unwrap().workspace.id;
    let p = store
        .create_provider(oauth_provider(ws, "acme"))
        .await
        .unwrap();
    assert!(matches!(
        store.create_provider(oauth_provider(ws, "acme")).await,
        Err(StoreError::Conflict)
    ));
    let soon = chrono::Utc::now() + chrono::Duration::minutes(10);
    let long_ago = chrono::Utc::now() - chrono::Duration::hours(2);
    let live = sign_in(ws, p.id, "h-live", soon);
    let old = sign_in(ws, p.id, "h-old", long_ago);
    store.create_auth_request(live.clone()).await.unwrap();
    store.create_auth_request(old.clone()).await.unwrap();
    assert_eq!(store.pending_auth_requests(ws).await.unwrap(), 1);

    assert!(store
        .take_auth_request("h-old", None)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .take_auth_request("h-live", Some(Uuid::new_v4()))
        .await
        .unwrap()
        .is_none());
    let woken = store.watch_auth_request(live.id);
    let taken = store
        .take_auth_request("h-live", Some(ws))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(taken.status, AuthRequestStatus::Exchanging);
    assert!(store
        .take_auth_request("h-live", None)
        .await
        .unwrap()
        .is_none());

    let now = chrono::Utc::now();
    let token = |id: Uuid| hostplane_store::OAuthToken {
        id,
        workspace_id: ws,
        provider_row: p.id,
        provider_id: "acme".into(),
        owner: "alice".into(),
        access_token: "sealed-at".into(),
        refresh_token: None,
        scopes: vec!["read".into()],
        expires_at: None,
        provider_account_label: None,
        is_default: true,
        created_at: now,
        updated_at: now,
    };
    let first = token(Uuid::new_v4());
    store
        .finish_auth_request(live.id, AuthOutcome::Completed(Box::new(first.clone())))
        .await
        .unwrap();
    assert!(woken.has_changed().unwrap());
    let done = store.get_auth_request(ws, live.id).await.unwrap().unwrap();
    assert_eq!(
        (done.status, done.token_id, done.verifier),
        (AuthRequestStatus::Completed, Some(first.id), None)
    );
    assert!(store
        .get_auth_request(Uuid::new_v4(), live.id)
        .await
        .unwrap()
        .is_none());
    // A finished sign-in cannot be finished again.
    assert!(matches!(
        store
            .finish_auth_request(live.id, AuthOutcome::Failed("late".into()))
            .await,
        Err(StoreError::NotFound)
    ));

    // A second default token of the owner takes the default flag.
    let second = sign_in(ws, p.id, "h-2", soon);
    store.create_auth_request(second.clone()).await.unwrap();
    store.take_auth_request("h-2", None).await.unwrap().unwrap();
    let next = token(Uuid::new_v4());
    store
        .finish_auth_request(second.id, AuthOutcome::Completed(Box::new(next.clone())))
        .await
        .unwrap();
    let all = store
        .list_tokens(ws, &TokenFilter::default())
        .await
        .unwrap();
    let defaults: Vec<_> = all.iter().filter(|t| t.is_default).map(|t| t.id).collect();
    assert_eq!(defaults, [next.id]);
    assert!(store
        .list_tokens(Uuid::new_v4(), &TokenFilter::default())
        .await
        .unwrap()
        .is_empty());

    assert_eq!(
        store
            .sweep_auth_requests(now - chrono::Duration::hours(1))
            .await
            .unwrap(),
        1
    );
    assert!(store.get_auth_request(ws, old.id).await.unwrap().is_none());

    assert!(store.delete_provider(ws, "acme").await.unwrap());
    assert!(!store.delete_provider(ws, "acme").await.unwrap());
    assert!(store
        .list_tokens(ws, &TokenFilter::default())
        .await
        .unwrap()
        .is_empty());
    assert!(store.get_auth_request(ws, live.id).await.unwrap().is_none());
}

macro_rules! both {
    ($($name:ident),*) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(false).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(true).await })*
        }
    };
}

both!(listeners, revisions, uploads, console, versions, api_keys, agent_auth);
