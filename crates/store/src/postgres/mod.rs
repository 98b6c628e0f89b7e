//! The PostgreSQL backend: a connection pool; several `hostplane serve` processes on one
//! database behave as one service because every rule is enforced by the database.

use crate::changes::Changes;
use crate::sql::{Backend, Conn, Dialect, Shared, CHANNEL};
use crate::{Result, StoreOptions};
use async_trait::async_trait;
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::PgConnection;
use std::sync::Arc;
use uuid::Uuid;

pub struct PgStore {
    /// The pool, and this replica's wake-ups, fed by `NOTIFY`.
    shared: Shared<sqlx::Postgres>,
}

impl PgStore {
    pub async fn open(url: &str, opts: &StoreOptions) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.acquire_timeout)
            // No ping before each use: it doubled the round trips of every read. A
            // connection that died while idle fails its next query (a 503), and sqlx then
            // closes it, so the pool heals after an outage without a restart.
            .test_before_acquire(false)
            .connect(url)
            .await?;
        // sqlx holds an advisory lock while migrating, so replicas may start together.
        crate::sql::migrated(sqlx::migrate!("migrations/postgres").run(&pool).await)?;
        let changes = Arc::<Changes>::default();
        follow_notifications(pool.clone(), changes.clone());
        Ok(PgStore {
            shared: Shared { pool, changes },
        })
    }
}

#[async_trait]
impl Conn for PgConnection {
    type Row = PgRow;
    const DIALECT: Dialect = Dialect::Postgres;

    crate::sql::sqlx_statements!(PgRow, id: Uuid::clone, list: std::convert::identity);
}

impl Backend for PgStore {
    type Db = sqlx::Postgres;
    type Conn = PgConnection;
    fn shared(&self) -> &Shared<sqlx::Postgres> {
        &self.shared
    }
}

/// Follows [`CHANNEL`] on a connection of its own and wakes local pollers; after a lost
/// connection (notifications may have been missed) it wakes them all.
fn follow_notifications(pool: sqlx::PgPool, changes: Arc<Changes>) {
    tokio::spawn(async move {
        loop {
            let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for data-plane changes; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(e) = listener.listen(CHANNEL).await {
                tracing::warn!(error = %e, "LISTEN failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            changes.wake_all();
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => {
                        if let Some((id, generation)) = n.payload().split_once(':') {
                            if let (Ok(id), Ok(g)) = (Uuid::parse_str(id), generation.parse()) {
                                changes.bump(id, g);
                            }
                        }
                    }
                    // The connection dropped: anything may have been missed.
                    Ok(None) => changes.wake_all(),
                    Err(e) => {
                        tracing::warn!(error = %e, "data-plane change feed lost; reconnecting");
                        changes.wake_all();
                        break;
                    }
                }
            }
        }
    });
}
