//! What a backend provides, so that every transaction is written once
//! (`transactions/`): statements with typed arguments ([`Query`]), a connection that
//! runs them ([`Conn`]), the few SQL spellings that differ ([`Dialect`]), and the ways a
//! store runs work ([`Backend`]: reads, transactions, snapshots, wake-ups).
//!
//! Statements use `$1`-style placeholders, which both PostgreSQL and SQLite read. A
//! UUID is bound as `uuid` in PostgreSQL and as text in SQLite; a list of values as an
//! array in PostgreSQL and as a JSON array in SQLite ([`Dialect::any`] reads either).

use crate::changes::Changes;
use crate::records::{Bump, Listener, NewListener, PoolStats};
use crate::rows::Columns;
use crate::{BoxFut, Result};
use async_trait::async_trait;
use uuid::Uuid;

/// One argument of a statement.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Id(Option<Uuid>),
    Ids(Option<Vec<Uuid>>),
    Text(Option<String>),
    Texts(Option<Vec<String>>),
    Int(Option<i64>),
    Flag(Option<bool>),
}

/// A statement and its arguments, `$1` first.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    pub(crate) sql: String,
    pub(crate) args: Vec<Arg>,
}

/// A statement with no arguments yet.
pub(crate) fn query(sql: impl Into<String>) -> Query {
    Query {
        sql: sql.into(),
        args: Vec::new(),
    }
}

impl Query {
    /// Binds the next `$n`.
    pub(crate) fn bind(mut self, value: impl Into<Arg>) -> Self {
        self.args.push(value.into());
        self
    }
}

macro_rules! args {
    ($($t:ty => $variant:ident($conv:expr)),* $(,)?) => {
        $(impl From<$t> for Arg {
            fn from(v: $t) -> Arg {
                #[allow(clippy::redundant_closure_call)]
                Arg::$variant(($conv)(v))
            }
        })*
    };
}

args! {
    Uuid => Id(Some),
    Option<Uuid> => Id(|v| v),
    &str => Text(|v: &str| Some(v.to_owned())),
    String => Text(Some),
    &String => Text(|v: &String| Some(v.clone())),
    Option<String> => Text(|v| v),
    &Option<String> => Text(Clone::clone),
    Option<&str> => Text(|v: Option<&str>| v.map(str::to_owned)),
    i64 => Int(Some),
    Option<i64> => Int(|v| v),
    bool => Flag(Some),
    Option<bool> => Flag(|v| v),
    &[Uuid] => Ids(|v: &[Uuid]| Some(v.to_vec())),
    &Option<Vec<Uuid>> => Ids(Clone::clone),
    &Option<Vec<String>> => Texts(Clone::clone),
}

/// The SQL spellings that differ between the backends, side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Postgres,
    Sqlite,
}

/// The `NOTIFY` channel of wake-ups; payload `<id>:<generation>` (a listener's id and
/// generation, or a finished sign-in's id and 1).
pub(crate) const CHANNEL: &str = "hostplane_generations";

/// The advisory lock that lets one PostgreSQL replica at a time run the first-start
/// setup (creates in a workspace lock on a hash of the workspace id instead).
const BOOTSTRAP_LOCK: i64 = 0x686f_7374_0001;

impl Dialect {
    /// The larger of two values: `GREATEST` or SQLite's two-argument `MAX`.
    pub(crate) fn greatest(self) -> &'static str {
        match self {
            Dialect::Postgres => "GREATEST",
            Dialect::Sqlite => "MAX",
        }
    }

    /// Appended to a `SELECT` whose rows the transaction goes on to change: PostgreSQL
    /// locks them; SQLite's writer already holds the database's write lock.
    pub(crate) fn for_update(self) -> &'static str {
        match self {
            Dialect::Postgres => " FOR UPDATE",
            Dialect::Sqlite => "",
        }
    }

    /// `FOR UPDATE OF alias` where the backend locks rows.
    pub(crate) fn for_update_of(self, alias: &str) -> String {
        match self {
            Dialect::Postgres => format!(" FOR UPDATE OF {alias}"),
            Dialect::Sqlite => String::new(),
        }
    }

    /// `position of needle in haystack`: `strpos` or `instr`.
    pub(crate) fn position(self) -> &'static str {
        match self {
            Dialect::Postgres => "strpos",
            Dialect::Sqlite => "instr",
        }
    }

    /// Membership in a bound list ([`Arg::Ids`], [`Arg::Texts`]), e.g. `= ANY($2)`.
    pub(crate) fn any(self, list: &str) -> String {
        match self {
            Dialect::Postgres => format!("= ANY({list})"),
            Dialect::Sqlite => format!("IN (SELECT value FROM json_each({list}))"),
        }
    }

    /// A text field of a JSON text column.
    pub(crate) fn json_field(self, column: &str, field: &str) -> String {
        match self {
            Dialect::Postgres => format!("({column}::jsonb ->> '{field}')"),
            Dialect::Sqlite => format!("json_extract({column}, '$.{field}')"),
        }
    }

    /// The statement that takes a [`Lock`]: a transaction-scoped advisory lock in
    /// PostgreSQL; none in SQLite, where every write already holds the database's write
    /// lock (`BEGIN IMMEDIATE`).
    pub(crate) fn lock(self, lock: Lock) -> Option<Query> {
        if self == Dialect::Sqlite {
            return None;
        }
        Some(match lock {
            Lock::Bootstrap => query("SELECT pg_advisory_xact_lock($1)").bind(BOOTSTRAP_LOCK),
            Lock::ListenerCreates(ws) => {
                query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))").bind(ws)
            }
            Lock::DeploymentCreates(ws) => {
                query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 1))").bind(ws)
            }
        })
    }

    /// Begins a write transaction. SQLite takes the write lock first, so a write cannot
    /// fail half-way on a lock upgrade.
    pub(crate) fn begin_write(self) -> &'static str {
        match self {
            Dialect::Postgres => "BEGIN",
            Dialect::Sqlite => "BEGIN IMMEDIATE",
        }
    }

    /// Begins a read-only transaction that sees one snapshot (SQLite reads one snapshot
    /// from a transaction's first read on).
    pub(crate) fn begin_snapshot(self) -> &'static str {
        match self {
            Dialect::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
            Dialect::Sqlite => "BEGIN",
        }
    }

    /// Wraps an `UPDATE listeners ... RETURNING id, generation` so that the change is
    /// announced to every process at commit (PostgreSQL `NOTIFY` on [`CHANNEL`]);
    /// SQLite's one process announces it itself after the commit.
    pub(crate) fn announce(self, update: String) -> String {
        match self {
            Dialect::Postgres => format!(
                "WITH b AS ({update}) SELECT b.id, b.generation FROM b, \
                 LATERAL (SELECT pg_notify('{CHANNEL}', b.id::text || ':' || b.generation::text)) n"
            ),
            Dialect::Sqlite => update,
        }
    }

    /// Announces `<id>:<generation>` on [`CHANNEL`] to every process at commit (for
    /// wake-ups that are not a listener's generation); SQLite's one process announces
    /// it itself after the commit.
    pub(crate) fn announce_one(self, id: Uuid, generation: i64) -> Option<Query> {
        match self {
            Dialect::Postgres => Some(
                query(format!("SELECT pg_notify('{CHANNEL}', $1)"))
                    .bind(format!("{id}:{generation}")),
            ),
            Dialect::Sqlite => None,
        }
    }

    /// `updated_at` (or another time column) moved to now, or just past its value when
    /// the clock is behind it: every change moves a row's version forward.
    pub(crate) fn advance(self, column: &str, now: &str) -> String {
        format!("{column} = {}({now}, {column} + 1)", self.greatest())
    }
}

/// What a writer serialises on, beyond the rows it locks (SQLite's writer holds the
/// database's one write lock, so there it is nothing).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Lock {
    /// The first start's check that no organization exists yet.
    Bootstrap,
    /// Listener creates of a workspace, so creation times follow commit order.
    ListenerCreates(Uuid),
    /// Deployment creates of a workspace, likewise.
    DeploymentCreates(Uuid),
}

/// A connection (or a transaction on one) of a backend.
#[async_trait]
pub(crate) trait Conn: Send {
    type Row: Columns + Send + Sync;
    const DIALECT: Dialect;

    /// Runs a statement; the number of rows it changed.
    fn execute(&mut self, q: Query) -> BoxFut<'_, Result<u64>>;
    /// Every row a statement returns.
    fn fetch_all(&mut self, q: Query) -> BoxFut<'_, Result<Vec<Self::Row>>>;
    /// The first row a statement returns, if any.
    fn fetch_optional(&mut self, q: Query) -> BoxFut<'_, Result<Option<Self::Row>>>;
    fn dialect(&self) -> Dialect {
        Self::DIALECT
    }

    /// Takes `lock` until the transaction ends.
    async fn lock(&mut self, lock: Lock) -> Result<()> {
        if let Some(q) = Self::DIALECT.lock(lock) {
            self.fetch_all(q).await?;
        }
        Ok(())
    }

    /// Moves the generation of a listener, or of the listener a deployment is placed on,
    /// in one statement (see [`Dialect::announce`]).
    async fn bump(&mut self, target: BumpOf) -> Result<Vec<Bump>> {
        let (which, id) = match target {
            BumpOf::Listener(id) => ("$1", id),
            BumpOf::DeploymentsListener(id) => {
                ("(SELECT listener_id FROM deployments WHERE id = $1)", id)
            }
        };
        let update = format!(
            "UPDATE listeners SET generation = generation + 1 WHERE id = {which} \
             RETURNING id, generation"
        );
        let row = self
            .fetch_optional(query(Self::DIALECT.announce(update)).bind(id))
            .await?;
        row.map(|r| Ok((r.uuid("id")?, r.int("generation")?)))
            .into_iter()
            .collect()
    }

    /// The one row a statement must return.
    async fn fetch_one(&mut self, q: Query) -> Result<Self::Row> {
        let what = q.sql.clone();
        self.fetch_optional(q)
            .await?
            .ok_or_else(|| crate::StoreError::Other(format!("no row returned by {what}")))
    }
}

/// Implements [`Conn`]'s statement methods for an sqlx connection: `$id` turns a UUID
/// and `$list` a list ([`Arg::Ids`], [`Arg::Texts`]) into what the backend stores;
/// everything else binds as it is.
macro_rules! sqlx_statements {
    ($row:ty, id: $id:expr, list: $list:expr) => {
        fn execute(&mut self, q: $crate::sql::Query) -> $crate::BoxFut<'_, $crate::Result<u64>> {
            Box::pin(async move {
                let done = $crate::sql::sqlx_statements!(@bind q, $id, $list);
                Ok(done.execute(&mut *self).await?.rows_affected())
            })
        }

        fn fetch_all(
            &mut self,
            q: $crate::sql::Query,
        ) -> $crate::BoxFut<'_, $crate::Result<Vec<$row>>> {
            Box::pin(async move {
                let rows = $crate::sql::sqlx_statements!(@bind q, $id, $list);
                Ok(rows.fetch_all(&mut *self).await?)
            })
        }

        fn fetch_optional(
            &mut self,
            q: $crate::sql::Query,
        ) -> $crate::BoxFut<'_, $crate::Result<Option<$row>>> {
            Box::pin(async move {
                let row = $crate::sql::sqlx_statements!(@bind q, $id, $list);
                Ok(row.fetch_optional(&mut *self).await?)
            })
        }
    };
    (@bind $q:ident, $id:expr, $list:expr) => {{
        use $crate::sql::Arg;
        let mut s = sqlx::query(&$q.sql);
        for arg in &$q.args {
            s = match arg {
                Arg::Id(v) => s.bind(v.as_ref().map($id)),
                Arg::Ids(v) => s.bind(v.as_deref().map($list)),
                Arg::Texts(v) => s.bind(v.as_deref().map($list)),
                Arg::Text(v) => s.bind(v.as_deref()),
                Arg::Int(v) => s.bind(*v),
                Arg::Flag(v) => s.bind(*v),
            };
        }
        s
    }};
}
pub(crate) use sqlx_statements;

/// Whose generation [`Conn::bump`] moves.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BumpOf {
    Listener(Uuid),
    DeploymentsListener(Uuid),
}

/// Turns a row of either backend into a value.
pub(crate) type Decode<T> = for<'r> fn(&'r (dyn Columns + 'r)) -> Result<T>;

/// Work on a connection of `C`, borrowing it.
pub(crate) type Work<C, T> = Box<dyn for<'c> FnOnce(&'c mut C) -> BoxFut<'c, Result<T>> + Send>;

/// Wraps a closure as [`Work`].
pub(crate) fn work<C, T, F>(f: F) -> Work<C, T>
where
    F: for<'c> FnOnce(&'c mut C) -> BoxFut<'c, Result<T>> + Send + 'static,
{
    Box::new(f)
}

/// The outcome of bringing a database's schema up to date.
pub(crate) fn migrated(
    outcome: std::result::Result<(), sqlx::migrate::MigrateError>,
) -> Result<()> {
    outcome.map_err(|e| crate::StoreError::Other(format!("migration failed: {e}")))
}

/// What every backend holds: its pool, and this process's wake-ups for desired-state
/// long-polls.
pub(crate) struct Shared<DB: sqlx::Database> {
    pub(crate) pool: sqlx::Pool<DB>,
    pub(crate) changes: std::sync::Arc<Changes>,
}

/// Runs `f` in a transaction begun with `begin`, on a task of its own (see
/// [`crate::detached`]): committed when `f` succeeds, rolled back otherwise, whatever
/// happens to the caller.
pub(crate) async fn in_transaction<DB, T>(
    pool: &sqlx::Pool<DB>,
    begin: &'static str,
    f: Work<DB::Connection, T>,
) -> Result<T>
where
    DB: sqlx::Database,
    DB::Connection: Conn,
    T: Send + 'static,
{
    let pool = pool.clone();
    crate::detached(async move {
        let mut tx = pool.begin_with(begin).await?;
        match f(&mut tx).await {
            Ok(value) => {
                tx.commit().await?;
                Ok(value)
            }
            Err(e) => {
                tx.rollback().await?;
                Err(e)
            }
        }
    })
    .await
}

/// A store's database and the ways it runs work; the store's traits are implemented
/// once over it (`transactions/`).
#[async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    type Db: sqlx::Database<Connection = Self::Conn>;
    type Conn: Conn + sqlx::Connection<Database = Self::Db> + 'static;

    fn shared(&self) -> &Shared<Self::Db>;

    fn pool(&self) -> &sqlx::Pool<Self::Db> {
        &self.shared().pool
    }

    /// This process's wake-ups for desired-state long-polls.
    fn changes(&self) -> &Changes {
        &self.shared().changes
    }

    /// Transactions committed by group commit, and the writes they acknowledged.
    fn group_commits(&self) -> (u64, u64) {
        (0, 0)
    }

    /// Rows of a read that needs no transaction, each decoded by `decode` (SQLite runs
    /// these on the calling thread, see `sqlite/reads.rs`).
    async fn read<T: Send + 'static>(&self, q: Query, decode: Decode<T>) -> Result<Vec<T>> {
        let rows = self.pool().acquire().await?.fetch_all(q).await?;
        rows.iter().map(|r| decode(r)).collect()
    }

    /// `f` on a pooled connection, each statement committing on its own.
    async fn run<T: Send + 'static>(&self, f: Work<Self::Conn, T>) -> Result<T> {
        let mut conn = self.pool().acquire().await?;
        f(&mut conn).await
    }

    /// One statement on its own; the number of rows it changed.
    async fn execute(&self, q: Query) -> Result<u64> {
        self.run(work(move |c: &mut Self::Conn| Box::pin(c.execute(q))))
            .await
    }

    /// `f` in a write transaction ([`Dialect::begin_write`]).
    async fn transaction<T: Send + 'static>(&self, f: Work<Self::Conn, T>) -> Result<T> {
        in_transaction(self.pool(), Self::Conn::DIALECT.begin_write(), f).await
    }

    /// `f` in a read-only transaction that sees one snapshot of the database
    /// ([`Dialect::begin_snapshot`]).
    async fn snapshot<T: Send + 'static>(&self, f: Work<Self::Conn, T>) -> Result<T> {
        in_transaction(self.pool(), Self::Conn::DIALECT.begin_snapshot(), f).await
    }

    fn pool_stats(&self) -> PoolStats {
        let pool = self.pool();
        let (group_commits, group_committed_writes) = self.group_commits();
        PoolStats {
            size: pool.size(),
            idle: pool.num_idle(),
            max: pool.options().get_max_connections(),
            group_commits,
            group_committed_writes,
        }
    }

    /// Creates a listener: by default a transaction of its own under
    /// [`Lock::ListenerCreates`] (SQLite commits several together instead).
    async fn create_listener(&self, new: NewListener) -> Result<Listener> {
        self.transaction(work(move |c: &mut Self::Conn| {
            Box::pin(async move {
                c.lock(Lock::ListenerCreates(new.workspace_id)).await?;
                crate::transactions::listeners::insert(c, &new).await
            })
        }))
        .await
    }

    /// A write transaction that moves listener generations: after its commit, this
    /// process's pollers of those listeners wake (other replicas hear PostgreSQL's
    /// `NOTIFY`).
    async fn write<T: Send + 'static>(&self, f: Work<Self::Conn, (T, Vec<Bump>)>) -> Result<T> {
        let (value, bumps) = self.transaction(f).await?;
        for (listener, generation) in bumps {
            self.changes().bump(listener, generation);
        }
        Ok(value)
    }

    /// The first row of a read, decoded.
    async fn read_one<T: Send + 'static>(&self, q: Query, decode: Decode<T>) -> Result<Option<T>> {
        Ok(self.read(q, decode).await?.into_iter().next())
    }
}
