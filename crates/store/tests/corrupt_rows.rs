//! A row that does not hold what the schema promises (an unknown plan or status, JSON
//! that does not parse) is an error for the caller, on both backends, never a silent
//! default that would then be written back.

#![allow(clippy::unwrap_used)]

mod common;

use common::fresh;
use hostplane_store::{NewListener, StoreError, Window};

async fn corrupt(url: &str, sql: &str) {
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query(sql).execute(&pool).await.unwrap();
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
}

fn is_corrupt<T: std::fmt::Debug>(r: hostplane_store::Result<T>, what: &str) {
    match r {
        Err(StoreError::Other(reason)) => assert!(reason.contains(what), "{reason}"),
        other => panic!("a corrupt {what} gave {other:?}"),
    }
}

async fn corrupt_rows_are_errors(postgres: bool) {
    let (store, url) = fresh(postgres).await;
    let boot = store.bootstrap(None).await.unwrap().unwrap();
    let ws = boot.workspace.id;
    let listener = store
        .create_listener(NewListener {
            workspace_id: ws,
            compute_type: "k8s".into(),
            compute_id: "c".into(),
            version: None,
            k8s_namespaces: Some(vec!["a".into()]),
        })
        .await
        .unwrap();
    corrupt(&url, "UPDATE listeners SET k8s_namespaces = 'not json'").await;
    is_corrupt(store.get_listener(ws, listener.id).await, "namespace list");
    is_corrupt(
        store.list_listeners(ws, Window::first(10)).await,
        "namespace list",
    );

    // A timestamp beyond what a date can be.
    let late = store
        .create_listener(NewListener {
            workspace_id: ws,
            compute_type: "k8s".into(),
            compute_id: "late".into(),
            version: None,
            k8s_namespaces: None,
        })
        .await
        .unwrap();
    corrupt(
        &url,
        &format!(
            "UPDATE listeners SET updated_at = {} WHERE id = '{}'",
            i64::MAX,
            late.id
        ),
    )
    .await;
    is_corrupt(store.get_listener(ws, late.id).await, "timestamp");

    // A deployment whose status is no status, and one with JSON that does not parse.
    let insert = |id: &str, status: &str, config: &str| {
        format!(
            "INSERT INTO deployments (id, workspace_id, name, source, source_config, \
             source_revision_config, secrets, status, created_at, updated_at) VALUES \
             ('{id}', '{ws}', 'd-{status}', 'internal_docker', '{config}', '{{}}', 'v2:', \
             '{status}', 1, 1)"
        )
    };
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    corrupt(&url, &insert(&a.to_string(), "DONE", "{}")).await;
    is_corrupt(store.get_deployment(ws, a).await, "deployment status");
    is_corrupt(
        store.delete_deployment(ws, a, false).await,
        "deployment status",
    );
    corrupt(&url, &insert(&b.to_string(), "READY", "{not json")).await;
    is_corrupt(store.get_deployment(ws, b).await, "JSON value");
    if !postgres {
        // SQLite keeps ids as text, so one can be no UUID at all.
        let sql = format!(
            "UPDATE listeners SET id = 'not-a-uuid' WHERE id = '{}'",
            listener.id
        );
        corrupt(&url, &sql).await;
        is_corrupt(
            store.listener_versions(ws, Window::first(10)).await,
            "bad uuid in id",
        );
    }
}

#[tokio::test]
async fn corrupt_rows_are_errors_sqlite() {
    corrupt_rows_are_errors(false).await;
}

#[tokio::test]
async fn corrupt_rows_are_errors_postgres() {
    corrupt_rows_are_errors(true).await;
}
