//! A fresh database of either backend for store-level tests.
//!
//! PostgreSQL needs `HOSTPLANE_TEST_POSTGRES_URL` (set by `scripts/test`).

#![allow(dead_code, clippy::unwrap_used)]

use hostplane_store::{Store, StoreOptions};
use std::sync::Arc;
use uuid::Uuid;

/// A fresh, migrated store of the backend, and its URL (for reaching the database
/// directly).
pub async fn fresh(postgres: bool) -> (Arc<dyn Store>, String) {
    let url = if postgres {
        let admin = std::env::var("HOSTPLANE_TEST_POSTGRES_URL")
            .expect("HOSTPLANE_TEST_POSTGRES_URL is not set: run scripts/test");
        let name = format!("hp_store_{}", Uuid::new_v4().simple());
        let pool = sqlx::PgPool::connect(&admin).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .unwrap();
        format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
    } else {
        let dir = std::env::temp_dir().join(format!("hp-store-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        format!("sqlite://{}", dir.join("s.db").display())
    };
    let store = hostplane_store::open(&url, &StoreOptions::default())
        .await
        .unwrap();
    (store, url)
}
