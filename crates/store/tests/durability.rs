//! The README promises that an acknowledged SQLite write is on disk: WAL with
//! `synchronous=FULL` on every connection. A crash test cannot tell (killing the process
//! leaves the page cache intact), so this reads the settings back from SQLite itself.

#![allow(clippy::unwrap_used)]

use hostplane_store::sqlite::SqliteStore;
use hostplane_store::StoreOptions;

#[tokio::test]
async fn every_connection_is_durable() {
    let dir = std::env::temp_dir().join(format!("hostplane-durability-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("d.db").display());
    let store = SqliteStore::open(&url, &StoreOptions::default())
        .await
        .unwrap();
    let settings = store.connection_settings().await.unwrap();
    assert_eq!(settings.len(), 8, "every connection of the pool");
    for s in settings {
        // synchronous 2 is FULL; foreign keys enforce listener references.
        assert_eq!(s, ("wal".to_owned(), 2, 1));
    }
    let _ = std::fs::remove_dir_all(dir);
}
