//! SQLite reads on the calling thread.
//!
//! sqlx runs each SQLite connection on a thread of its own and hands every query and
//! every row across with a channel. For the small indexed reads that most requests make
//! (authenticate, get by id, a page) the thread switches cost many times the query: a
//! profile of `GET /v2/listeners/{id}` under load spent about 60% of the server's time in
//! futex waits and wake-ups between those threads, and under 1% in SQLite itself. These
//! reads therefore go through a few read-only rusqlite connections (the same SQLite
//! library sqlx links), each keeping its statements prepared, run right on the task that
//! asks: an indexed read takes microseconds, and in WAL mode a reader never waits for the
//! writer. Each statement runs in its own read transaction, so a read sees every write
//! committed (and so acknowledged) before it started. Writes stay on sqlx.

use crate::rows::Columns;
use crate::sql::{Arg, Decode, Query};
use crate::{Result, StoreError};
use rusqlite::{Connection, OpenFlags, Row};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use uuid::Uuid;

/// Idle connections kept; more are opened when more readers run at once.
const KEEP_IDLE: usize = 8;

pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

fn error(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        other => StoreError::Other(other.to_string()),
    }
}

impl Readers {
    /// Readers of the database file at `path` (which exists: the writer made it).
    pub(super) fn open(path: PathBuf) -> Result<Self> {
        let readers = Readers {
            path,
            idle: Mutex::new(Vec::new()),
        };
        let first = readers.connect()?;
        readers.put_back(first);
        Ok(readers)
    }

    fn connect(&self) -> Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags).map_err(error)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(error)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    fn put_back(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < KEEP_IDLE {
                idle.push(conn);
            }
        }
    }

    /// Runs `f` on an idle connection (or a new one).
    fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = match self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            Some(c) => c,
            None => self.connect()?,
        };
        let out = f(&conn);
        self.put_back(conn);
        out
    }

    /// Every row of `q`, decoded. Its `$n` placeholders are bound by name, as sqlx
    /// binds them, so one statement text serves both.
    pub(super) fn all<T>(&self, q: &Query, decode: Decode<T>) -> Result<Vec<T>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(&q.sql).map_err(error)?;
            for index in 1..=stmt.parameter_count() {
                bind(&mut stmt, index, q)?;
            }
            // Columns by name once per query: rusqlite looks a name up by scanning
            // SQLite's column names, which showed in the profile of a page of 100.
            let names: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
            let mut rows = stmt.raw_query();
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(error)? {
                out.push(decode(&Named { row, names: &names })?);
            }
            Ok(out)
        })
    }
}

/// Binds statement parameter `index`, which is `$n`, to the query's `n`th argument.
fn bind(stmt: &mut rusqlite::CachedStatement<'_>, index: usize, q: &Query) -> Result<()> {
    let arg = stmt
        .parameter_name(index)
        .and_then(|name| name.strip_prefix('$')?.parse::<usize>().ok())
        .and_then(|n| q.args.get(n.checked_sub(1)?))
        .ok_or_else(|| StoreError::Other(format!("parameter {index} of {} is unbound", q.sql)))?;
    let mut uuid = uuid::Uuid::encode_buffer();
    let bound = match arg {
        Arg::Id(v) => stmt.raw_bind_parameter(
            index,
            v.as_ref()
                .map(|id| &*id.hyphenated().encode_lower(&mut uuid)),
        ),
        Arg::Text(v) => stmt.raw_bind_parameter(index, v.as_deref()),
        Arg::Int(v) => stmt.raw_bind_parameter(index, *v),
        Arg::Flag(v) => stmt.raw_bind_parameter(index, *v),
        Arg::Ids(v) => stmt.raw_bind_parameter(index, v.as_deref().map(super::json_list)),
        Arg::Texts(v) => stmt.raw_bind_parameter(index, v.as_deref().map(super::json_list)),
    };
    bound.map_err(error)
}

/// A row whose columns are found by name.
pub(super) struct Named<'r, 's> {
    row: &'r Row<'s>,
    names: &'r [String],
}

impl Named<'_, '_> {
    fn index(&self, col: &str) -> Result<usize> {
        self.names
            .iter()
            .position(|n| n == col)
            .ok_or_else(|| StoreError::Other(format!("no column {col}")))
    }

    fn get<T: rusqlite::types::FromSql>(&self, col: &str) -> Result<T> {
        self.row.get(self.index(col)?).map_err(error)
    }
}

impl Columns for Named<'_, '_> {
    fn text(&self, col: &str) -> Result<String> {
        self.get(col)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        self.get(col)
    }
    fn int(&self, col: &str) -> Result<i64> {
        self.get(col)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>> {
        self.get(col)
    }
    fn flag(&self, col: &str) -> Result<bool> {
        self.get(col)
    }
    fn opt_uuid(&self, col: &str) -> Result<Option<Uuid>> {
        // Parsed where SQLite keeps the text: no copy per row.
        let value = self.row.get_ref(self.index(col)?).map_err(error)?;
        let text = value
            .as_str_or_null()
            .map_err(|e| StoreError::Other(format!("{col}: {e}")))?;
        crate::rows::uuid_text(col, text)
    }
}
