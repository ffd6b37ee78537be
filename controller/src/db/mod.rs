//! Storage: one SQLite file in WAL mode. Writes go through a single writer connection
//! in `BEGIN IMMEDIATE` transactions, committed in groups by the writer thread
//! ([`writer`]); reads through a small pool. DB code is plain synchronous
//! `fn(&Connection, …)`, one module per aggregate; async handlers reach it through
//! [`Db::read`] (on the blocking pool) and [`Db::write`] (queued to the writer thread).

pub mod agent;
pub mod audit;
pub mod brand;
pub mod ledger;
pub mod messages;
pub mod nas;
pub mod notice;
pub mod paging;
pub mod plan;
pub mod retention;
pub mod row;
pub mod session;
pub mod site;
pub mod snapshot;
pub mod subscriber;
pub mod tenant;
pub mod throttle;
pub mod user;
pub mod wan;
pub mod writer;

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use rusqlite_migration::{M, Migrations};

use crate::error::{Error, Result};
pub use paging::{Page, Paged, Paging};

/// The controller's migrations, in order. Files are never edited once landed.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/controller/0001_init.sql"),
    include_str!("../../../migrations/controller/0002_billing.sql"),
    include_str!("../../../migrations/controller/0003_agents.sql"),
    include_str!("../../../migrations/controller/0004_branding.sql"),
    include_str!("../../../migrations/controller/0005_retention.sql"),
    include_str!("../../../migrations/controller/0006_login_throttle.sql"),
    include_str!("../../../migrations/controller/0007_wan.sql"),
    include_str!("../../../migrations/controller/0008_wan_ports.sql"),
    include_str!("../../../migrations/controller/0009_tunnel.sql"),
    include_str!("../../../migrations/controller/0010_subscriber_search.sql"),
    include_str!("../../../migrations/controller/0011_brand_tagline.sql"),
    include_str!("../../../migrations/controller/0012_status_history.sql"),
    include_str!("../../../migrations/controller/0013_tunnel_rotation.sql"),
    include_str!("../../../migrations/controller/0014_session_counters.sql"),
    include_str!("../../../migrations/controller/0015_notices.sql"),
    include_str!("../../../migrations/controller/0016_portal_sessions.sql"),
    include_str!("../../../migrations/controller/0017_reseller_restores.sql"),
    include_str!("../../../migrations/controller/0018_messaging.sql"),
];

const READERS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite refused to open or configure the file.
    #[error("cannot open database {path}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    /// The file was written by a newer Outpost: running would corrupt it.
    #[error(
        "database {path} has schema version {found}, but this outpost-controller knows only up to {known}; \
         it was written by a newer release. Upgrade the binary (or restore a backup); refusing to start"
    )]
    TooNew {
        path: String,
        found: i64,
        known: usize,
    },
    /// A read-only check met a database this binary would first have to migrate.
    #[error(
        "database {path} has schema version {found}; this outpost-controller writes {known}. \
         Run `outpost-controller serve` once to migrate it, then check again"
    )]
    Outdated {
        path: String,
        found: i64,
        known: usize,
    },
    /// The operating system would not start the writer or the checkpoint thread.
    #[error("cannot start the database writer thread")]
    Writer(#[source] std::io::Error),
    /// A migration failed; the transaction was rolled back and the file is unchanged.
    #[error("migrating database {path} failed")]
    Migrate {
        path: String,
        #[source]
        source: rusqlite_migration::Error,
    },
}

fn migrations() -> Migrations<'static> {
    Migrations::new(MIGRATIONS.iter().map(|sql| M::up(sql)).collect())
}

/// The schema version this binary writes.
pub fn schema_version() -> usize {
    MIGRATIONS.len()
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    // Every query goes through prepare_cached (see `Cached`): keep them all.
    conn.set_prepared_statement_cache_capacity(256);
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Savepoint journals in memory: the writer runs each write of a batch in a
    // savepoint, and on disk (the default) each one spilled the pages it touched to a
    // temporary file, which cost more than the commit it shares.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// Opens (creating if needed) and migrates the database, refusing a newer schema.
pub fn open_and_migrate(path: &Path) -> Result<Connection, DbError> {
    let p = path.display().to_string();
    let mut conn = Connection::open(path).map_err(|source| DbError::Open {
        path: p.clone(),
        source,
    })?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .and_then(|_| configure(&conn))
        .map_err(|source| DbError::Open {
            path: p.clone(),
            source,
        })?;
    schema_found(&conn, &p)?;
    // Applies every pending file in one transaction: all or nothing.
    migrations()
        .to_latest(&mut conn)
        .map_err(|source| DbError::Migrate { path: p, source })?;
    Ok(conn)
}

/// The file's schema version, refusing one newer than this binary knows.
fn schema_found(conn: &Connection, p: &str) -> Result<i64, DbError> {
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|source| DbError::Open {
            path: p.to_string(),
            source,
        })?;
    if found > MIGRATIONS.len() as i64 {
        return Err(DbError::TooNew {
            path: p.to_string(),
            found,
            known: MIGRATIONS.len(),
        });
    }
    Ok(found)
}

/// Opens an existing database read-only, for checks that must not change what they
/// check (`audit verify`, `ledger verify`): no migration, no journal-mode switch.
pub fn open_read_only(path: &Path) -> Result<Connection, DbError> {
    let p = path.display().to_string();
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .and_then(|c| configure(&c).map(|_| c))
    .map_err(|source| DbError::Open {
        path: p.clone(),
        source,
    })?;
    let found = schema_found(&conn, &p)?;
    if found < MIGRATIONS.len() as i64 {
        return Err(DbError::Outdated {
            path: p,
            found,
            known: MIGRATIONS.len(),
        });
    }
    Ok(conn)
}

/// A connection pool that is just a stack guarded by a mutex: reads are short.
struct Pool {
    conns: Mutex<Vec<Connection>>,
    ready: Condvar,
}

impl Pool {
    fn with<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        let conn = {
            let mut guard = self.conns.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(c) = guard.pop() {
                    break c;
                }
                guard = self.ready.wait(guard).unwrap_or_else(|p| p.into_inner());
            }
        };
        let out = f(&conn);
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
        self.ready.notify_one();
        out
    }
}

/// Wakes long-polling agents when the change feed grows. The writer's update hook
/// notes every new `site_changes` row; after each commit the head is published.
pub struct Feed {
    noted: std::sync::atomic::AtomicI64,
    head: tokio::sync::watch::Sender<i64>,
    /// Set once the controller is stopping: held long polls answer at once.
    closing: tokio::sync::watch::Sender<bool>,
}

impl Feed {
    fn publish(&self) {
        let noted = self.noted.load(std::sync::atomic::Ordering::Acquire);
        self.head.send_if_modified(|h| {
            if noted > *h {
                *h = noted;
                true
            } else {
                false
            }
        });
    }

    /// A receiver that changes whenever a write adds to the feed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<i64> {
        self.head.subscribe()
    }

    /// Answers every held long poll now and every later one at once: the controller is
    /// stopping. Their connections then close while the tunnel can still carry that to
    /// the agents, which otherwise wait out their request timeout before they retry.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// A receiver that turns true when [`Feed::close`] is called.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }
}

/// Handle to the controller database. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    /// The write connection: the writer thread's, and [`Db::write_blocking`]'s between
    /// its batches.
    writer: Arc<Mutex<Connection>>,
    /// Queued writes, committed in groups by the writer thread.
    queue: Arc<writer::Queue>,
    readers: Arc<Pool>,
    /// One permit per reader connection, taken before a blocking thread is used, so a
    /// burst of reads (a thousand long polls waking at once) waits as tasks, not threads.
    read_permits: Arc<tokio::sync::Semaphore>,
    pub feed: Arc<Feed>,
}

impl Db {
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let writer = open_and_migrate(path)?;
        let head: i64 = writer
            .query_row(
                "SELECT coalesce(max(revision), 0) FROM site_changes",
                [],
                |r| r.get(0),
            )
            .map_err(|source| DbError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let feed = Arc::new(Feed {
            noted: std::sync::atomic::AtomicI64::new(head),
            head: tokio::sync::watch::Sender::new(head),
            closing: tokio::sync::watch::Sender::new(false),
        });
        let hook = feed.clone();
        writer.update_hook(Some(move |action, _db: &str, table: &str, rowid: i64| {
            if action == rusqlite::hooks::Action::SQLITE_INSERT && table == "site_changes" {
                hook.noted
                    .fetch_max(rowid, std::sync::atomic::Ordering::AcqRel);
            }
        }));
        let p = path.display().to_string();
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let c = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | OpenFlags::SQLITE_OPEN_URI,
            )
            .and_then(|c| configure(&c).map(|_| c))
            .map_err(|source| DbError::Open {
                path: p.clone(),
                source,
            })?;
            readers.push(c);
        }
        let checkpoints = Connection::open(path)
            .and_then(|c| configure(&c).map(|_| c))
            .map_err(|source| DbError::Open {
                path: p.clone(),
                source,
            })?;
        let writer = Arc::new(Mutex::new(writer));
        let queue = writer::Queue::start(writer.clone(), checkpoints, feed.clone())
            .map_err(DbError::Writer)?;
        Ok(Db {
            writer,
            queue: Arc::new(queue),
            readers: Arc::new(Pool {
                conns: Mutex::new(readers),
                ready: Condvar::new(),
            }),
            read_permits: Arc::new(tokio::sync::Semaphore::new(READERS)),
            feed,
        })
    }

    /// Runs `f` on a read connection, off the async runtime.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let pool = self.readers.clone();
        let _permit = self
            .read_permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        tokio::task::spawn_blocking(move || pool.with(f)).await?
    }

    /// Runs `f` on the writer thread inside the current batch's `BEGIN IMMEDIATE`
    /// transaction, in a savepoint of its own, and answers once that batch has
    /// committed. On `Err` only `f`'s savepoint is rolled back, and if the error carries
    /// a security event, that event is recorded in its place. See [`writer`].
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.queue.submit(Box::new(writer::Call {
            f,
            answer: move |out| {
                let _ = answer.send(out);
            },
        }))?;
        answered
            .await
            .map_err(|_| Error::internal(&writer::WriterGone))?
    }

    /// What the writer thread has done so far (see [`writer::WriteStats`]).
    pub fn write_stats(&self) -> writer::WriteStats {
        self.queue.stats()
    }

    /// Synchronous access to the writer, for the CLI and start-up: `f` runs on the
    /// calling thread in a transaction of its own, between the writer thread's batches.
    pub fn write_blocking<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let out = write_tx(&mut conn, f);
        self.feed.publish();
        out
    }
}

fn write_tx<T>(conn: &mut Connection, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    match f(&tx) {
        Ok(v) => {
            tx.commit()?;
            Ok(v)
        }
        Err(mut e) => {
            drop(tx); // rolls back
            if let Some(event) = e.security.take() {
                let logged = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(Error::from)
                    .and_then(|tx| {
                        audit::record_security(&tx, &event)?;
                        tx.commit().map_err(Error::from)
                    });
                if let Err(le) = logged {
                    tracing::error!(error = %le, "could not record security event");
                }
            }
            Err(e)
        }
    }
}

/// `query_row` and `execute` through the connection's prepared-statement cache.
/// Preparing is most of a short statement's cost (the renewal transaction runs a dozen).
pub trait Cached {
    fn cached_row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>;
    fn cached_exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
}

impl Cached for Connection {
    fn cached_row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }
    fn cached_exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }
}

/// A `WHERE` clause built from optional filters, always starting from a scope predicate,
/// with its positional parameters. Every list query is built with one.
pub struct Filter {
    sql: String,
    args: Vec<rusqlite::types::Value>,
    newest_first: bool,
}

impl Filter {
    /// Starts from `scope`'s predicate over the owning-tenant column.
    pub fn scoped(scope: &crate::scope::Scope, column: &str) -> Filter {
        let (pred, p) = scope.owns(column);
        Filter::new(pred, vec![p])
    }

    /// Starts from any predicate and its parameters.
    pub fn new(pred: String, args: Vec<rusqlite::types::Value>) -> Filter {
        Filter {
            sql: pred,
            args,
            newest_first: false,
        }
    }

    /// Adds `AND clause`, binding `value` to each `?` in it.
    pub fn and(&mut self, clause: &str, value: impl Into<rusqlite::types::Value>) -> &mut Self {
        let v = value.into();
        self.and_with(clause, vec![v; clause.matches('?').count()])
    }

    /// Adds `AND clause` with one value per `?`, in order.
    pub fn and_with(&mut self, clause: &str, values: Vec<rusqlite::types::Value>) -> &mut Self {
        debug_assert_eq!(clause.matches('?').count(), values.len(), "{clause}");
        self.args.extend(values);
        self.sql.push_str(" AND ");
        self.sql.push_str(clause);
        self
    }

    /// Adds the clause only when the filter value is present.
    pub fn and_opt<V: Into<rusqlite::types::Value>>(
        &mut self,
        clause: &str,
        value: Option<V>,
    ) -> &mut Self {
        if let Some(v) = value {
            self.and(clause, v);
        }
        self
    }

    /// Adds a case-insensitive "contains" over several columns when `q` is non-empty.
    pub fn search(&mut self, columns: &[&str], q: Option<&str>) -> &mut Self {
        if let Some(q) = q.map(str::trim).filter(|q| !q.is_empty()) {
            let any: Vec<String> = columns
                .iter()
                .map(|c| format!("instr(lower({c}), lower(?)) > 0"))
                .collect();
            self.and(&format!("({})", any.join(" OR ")), q.to_string());
        }
        self
    }

    /// [`Filter::search`], with the full-text index `fts` (FTS5 trigram, `detail=none`, over the same
    /// columns, rowid = `id_column`) naming the candidates when `q` is long enough for
    /// it (three characters). The `instr` test still decides, so a search finds the
    /// same rows as without the index; it reads only the candidates instead of every
    /// row in scope (a search that matches nothing would otherwise read them all).
    pub fn search_indexed(
        &mut self,
        fts: &str,
        id_column: &str,
        columns: &[&str],
        q: Option<&str>,
    ) -> &mut Self {
        if let Some(q) = q.map(str::trim).filter(|q| q.chars().count() >= 3) {
            // Rows holding every trigram of the text (the index keeps no positions, so
            // not necessarily in order or in one column): the candidates. Sixteen
            // trigrams narrow enough; the `instr` test decides the rest.
            let chars: Vec<char> = q.to_lowercase().chars().collect();
            let mut terms: Vec<String> = Vec::new();
            for w in chars.windows(3) {
                let t: String = w.iter().collect();
                if !terms.contains(&t) && terms.len() < 16 {
                    terms.push(t);
                }
            }
            let query: Vec<String> = terms
                .iter()
                .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
                .collect();
            let clause = format!("{id_column} IN (SELECT rowid FROM {fts} WHERE {fts} MATCH ?)");
            self.and(&clause, query.join(" AND "));
        }
        self.search(columns, q)
    }

    /// Makes [`Filter::page`] read newest first, the cursor being the id to go below.
    pub fn newest_first(mut self) -> Filter {
        self.newest_first = true;
        self
    }

    /// Runs `SELECT … WHERE <filter> AND id > after ORDER BY id LIMIT fetch` (oldest
    /// first; newest first, `AND id < before ORDER BY id DESC`, no bound from the top):
    /// the rows of the page `paging` asks for, and one more if another follows.
    pub fn page<T>(
        mut self,
        conn: &Connection,
        select: &str,
        id_column: &str,
        paging: Paging,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let (cmp, order, cursor) = if self.newest_first {
            ("<", "DESC", paging.before())
        } else {
            (">", "ASC", Some(paging.after))
        };
        self.and_opt(&format!("{id_column} {cmp} ?"), cursor);
        let sql = format!(
            "{select} WHERE {} ORDER BY {id_column} {order} LIMIT ?",
            self.sql
        );
        self.args.push((paging.fetch() as i64).into());
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(self.args), row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Formats unix seconds as RFC 3339 for the API.
pub fn rfc3339(ts: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ts)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_newer_schema_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        drop(open_and_migrate(&path).unwrap());
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        let err = open_and_migrate(&path).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DbError::TooNew { found: 99, .. }), "{msg}");
        assert!(msg.contains("newer release"), "{msg}");
    }

    #[test]
    fn migrations_are_valid_and_idempotent() {
        migrations().validate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        drop(open_and_migrate(&path).unwrap());
        let c = open_and_migrate(&path).unwrap();
        let v: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v as usize, schema_version());
        let mode: String = c
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = c
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
    }
}
