//! The SQLite backend: one file, WAL mode, `synchronous=FULL` so that an acknowledged
//! write survives a crash of the process or the machine.

use crate::records::*;
use crate::sql::{in_transaction, work, Backend, Conn, Decode, Dialect, Query, Shared};
use crate::{Result, StoreError, StoreOptions};
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{SqliteConnection, SqlitePool};
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

mod reads;
use reads::Readers;

pub struct SqliteStore {
    /// The pool (writes), and the wake-ups of desired-state long-polls (one process
    /// serves an SQLite file).
    shared: Shared<sqlx::Sqlite>,
    /// The hot reads, on the calling thread (see `reads.rs`).
    readers: Readers,
    /// Listener creates go through one writer that commits them in batches.
    creates: tokio::sync::mpsc::Sender<CreateJob>,
    /// What that writer has committed.
    grouped: std::sync::Arc<Grouped>,
}

/// Group commit's work so far: transactions committed, and creates acknowledged by them.
#[derive(Default)]
struct Grouped {
    commits: std::sync::atomic::AtomicU64,
    writes: std::sync::atomic::AtomicU64,
}

type CreateJob = (NewListener, tokio::sync::oneshot::Sender<Result<Listener>>);

/// Largest number of creates committed together.
const GROUP_COMMIT_MAX: usize = 128;

/// Group commit: every create waiting when the writer is free goes into one
/// transaction, so one `fsync` acknowledges them all; each insert has its own
/// savepoint, so a conflict fails only its own request. Answers are sent only after
/// the commit is durable.
async fn create_writer(
    pool: SqlitePool,
    mut jobs: tokio::sync::mpsc::Receiver<CreateJob>,
    grouped: std::sync::Arc<Grouped>,
) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < GROUP_COMMIT_MAX {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (news, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let outcome = in_transaction(
            &pool,
            Dialect::Sqlite.begin_write(),
            work(move |conn: &mut SqliteConnection| {
                Box::pin(async move {
                    let mut results = Vec::with_capacity(news.len());
                    for new in &news {
                        sqlx::query("SAVEPOINT one").execute(&mut *conn).await?;
                        let result = crate::transactions::listeners::insert(&mut *conn, new).await;
                        let undo = if result.is_err() {
                            "ROLLBACK TO one"
                        } else {
                            "RELEASE one"
                        };
                        sqlx::query(undo).execute(&mut *conn).await?;
                        if result.is_err() {
                            sqlx::query("RELEASE one").execute(&mut *conn).await?;
                        }
                        results.push(result);
                    }
                    Ok(results)
                })
            }),
        )
        .await;
        match outcome {
            Ok(results) => {
                use std::sync::atomic::Ordering::Relaxed;
                grouped.commits.fetch_add(1, Relaxed);
                let acknowledged = results.iter().filter(|r| r.is_ok()).count();
                grouped.writes.fetch_add(acknowledged as u64, Relaxed);
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                let text = e.to_string();
                for reply in replies {
                    let err = match &e {
                        StoreError::Unavailable(_) => StoreError::Unavailable(text.clone()),
                        _ => StoreError::Other(text.clone()),
                    };
                    let _ = reply.send(Err(err));
                }
            }
        }
    }
}

impl SqliteStore {
    pub async fn open(url: &str, opts: &StoreOptions) -> Result<Self> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Other(format!("bad SQLite URL: {e}")))?;
        let file = connect.get_filename().to_path_buf();
        if file.as_os_str().is_empty() || file == std::path::Path::new(":memory:") {
            return Err(StoreError::Other(
                "SQLite needs a database file (sqlite://PATH): an in-memory database would \
                 lose everything at exit"
                    .into(),
            ));
        }
        create_owner_only(&file)?;
        let connect = connect
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(connect)
            .await?;
        crate::sql::migrated(sqlx::migrate!("migrations/sqlite").run(&pool).await)?;
        let readers = Readers::open(file)?;
        let (creates, jobs) = tokio::sync::mpsc::channel(1024);
        let grouped = std::sync::Arc::<Grouped>::default();
        tokio::spawn(create_writer(pool.clone(), jobs, grouped.clone()));
        Ok(SqliteStore {
            shared: Shared {
                pool,
                changes: Default::default(),
            },
            readers,
            creates,
            grouped,
        })
    }

    /// How every connection of the pool is really set up, read back from SQLite rather
    /// than from our options: `(journal_mode, synchronous, foreign_keys)` for each, all
    /// of them held at once so that each is a different connection.
    pub async fn connection_settings(&self) -> Result<Vec<(String, i64, i64)>> {
        let pool = self.pool();
        let max = pool.options().get_max_connections();
        let mut held = Vec::new();
        for _ in 0..max {
            held.push(pool.acquire().await?);
        }
        let mut out = Vec::new();
        for conn in &mut held {
            let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut **conn)
                .await?;
            let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut **conn)
                .await?;
            let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
                .fetch_one(&mut **conn)
                .await?;
            out.push((journal, synchronous, foreign_keys));
        }
        Ok(out)
    }
}

/// A UUID as SQLite stores it.
fn text_id(id: &Uuid) -> String {
    id.to_string()
}

/// A list as the JSON array `json_each` reads.
fn json_list<T: serde::Serialize>(list: &[T]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

#[async_trait]
impl Conn for SqliteConnection {
    type Row = SqliteRow;
    const DIALECT: Dialect = Dialect::Sqlite;

    crate::sql::sqlx_statements!(SqliteRow, id: text_id, list: json_list);
}

#[async_trait]
impl Backend for SqliteStore {
    type Db = sqlx::Sqlite;
    type Conn = SqliteConnection;
    fn shared(&self) -> &Shared<sqlx::Sqlite> {
        &self.shared
    }

    fn group_commits(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let grouped = &self.grouped;
        (grouped.commits.load(Relaxed), grouped.writes.load(Relaxed))
    }

    /// On the calling thread, through [`Readers`].
    async fn read<T: Send + 'static>(&self, q: Query, decode: Decode<T>) -> Result<Vec<T>> {
        self.readers.all(&q, decode)
    }

    /// Through the group-commit writer.
    async fn create_listener(&self, new: NewListener) -> Result<Listener> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let gone = || StoreError::Unavailable("the SQLite writer has stopped".into());
        self.creates.send((new, reply)).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Creates the database file readable by its owner only, before SQLite creates it with
/// the process umask; SQLite gives the `-wal` and `-shm` files the database file's mode.
fn create_owner_only(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), "the database file is readable by \
                                                            other users; consider chmod 600");
                }
            }
            Ok(())
        }
        Err(e) => Err(StoreError::Other(format!(
            "cannot create the database file {}: {e}",
            path.display()
        ))),
    }
}
