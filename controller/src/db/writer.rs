//! Group commit: the writer thread runs the requests' write closures that are queued
//! while it works in one `BEGIN IMMEDIATE … COMMIT`, each closure inside a savepoint of
//! its own, and answers each request only after that COMMIT has returned.
//!
//! Why: a renewal's own statements are cheap next to its commit, which writes every page
//! the transaction touched to the WAL (about 20 pages for a renewal: the ledger, the
//! operation, the renewal, the audit entry, the idempotency record, their indexes). A
//! batch writes the pages its closures share once.
//!
//! What stays exact:
//! - one order: closures run one after another on one connection, so a closure sees
//!   every earlier closure's writes, committed or still in the open batch (the audit
//!   hash chain, an Idempotency-Key used twice in one batch, a balance and its credit
//!   limit);
//! - one request's failure is its own: its savepoint is rolled back (its security event,
//!   if any, recorded in a savepoint of its own) and the batch goes on;
//! - nothing is answered before it is committed: if the COMMIT fails, or SQLite rolls
//!   the whole transaction back under a closure (an I/O error, a full disk), every
//!   closure of the batch that had succeeded is answered with an internal error;
//! - a panicking closure rolls back its savepoint and answers an internal error, like
//!   the blocking-pool task it replaces.
//!
//! The writer does not wait to fill a batch: it takes what is queued when it starts one,
//! and what arrives while the batch runs, up to [`MAX_JOBS`] closures. An idle
//! controller commits each write alone, at once. A long closure (an import) holds back
//! the answers of the short ones before it in its batch, as it holds back those queued
//! behind it with or without batches.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::{Cached, Feed, audit};
use crate::error::{Error, ErrorKind, Result};

/// At most this many closures share one commit.
pub const MAX_JOBS: usize = 256;

/// What the writer has done so far, for tests and monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Writes queued and not yet taken into a batch.
    pub queued: usize,
    /// Batches (transactions) the writer thread has ended, committed or not.
    pub batches: u64,
    /// Writes the writer thread has run.
    pub writes: u64,
}

#[derive(Default)]
struct Counters {
    queued: AtomicUsize,
    batches: AtomicU64,
    writes: AtomicU64,
}

/// A queued write: a closure and where its answer goes.
pub(super) trait Job: Send {
    /// Runs the closure in its own savepoint of `tx`; the answer waits for the commit.
    fn run(self: Box<Self>, tx: &Transaction<'_>) -> Box<dyn Reply>;
    /// The batch could not begin: answers `e` without running.
    fn refuse(self: Box<Self>, e: Error);
}

/// A closure's outcome, held until its batch's fate is known.
pub(super) trait Reply: Send {
    /// `committed`: the batch's COMMIT returned success.
    fn send(self: Box<Self>, committed: bool);
}

/// A closure `f` whose result goes to `answer`.
pub(super) struct Call<F, S> {
    pub f: F,
    pub answer: S,
}

impl<T, F, S> Job for Call<F, S>
where
    T: Send + 'static,
    F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    S: FnOnce(Result<T>) + Send + 'static,
{
    fn run(self: Box<Self>, tx: &Transaction<'_>) -> Box<dyn Reply> {
        let Call { f, answer } = *self;
        Box::new(Held {
            out: in_savepoint(tx, f),
            answer,
        })
    }

    fn refuse(self: Box<Self>, e: Error) {
        (self.answer)(Err(e))
    }
}

struct Held<T, S> {
    out: Result<T>,
    answer: S,
}

impl<T: Send, S: FnOnce(Result<T>) + Send> Reply for Held<T, S> {
    fn send(self: Box<Self>, committed: bool) {
        let out = match self.out {
            Ok(_) if !committed => Err(lost()),
            // A refusal wrote nothing, committed or not: it stays the answer.
            out => out,
        };
        (self.answer)(out)
    }
}

/// The answer of a closure that succeeded in a batch that did not commit (the cause is
/// logged once for the batch).
fn lost() -> Error {
    Error::new(
        ErrorKind::Internal,
        "internal",
        "internal error; see the controller log",
    )
}

/// Runs `f` between `SAVEPOINT outpost_write` and its `RELEASE`; on an error or a panic, rolls
/// the savepoint back and records the error's security event, if any, in its place.
fn in_savepoint<T>(
    tx: &Transaction<'_>,
    f: impl FnOnce(&Transaction<'_>) -> Result<T>,
) -> Result<T> {
    tx.cached_exec("SAVEPOINT outpost_write", [])?;
    let out = catch_unwind(AssertUnwindSafe(|| f(tx))).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(panic = %what, "a write panicked; its savepoint is rolled back");
        Err(lost())
    });
    if tx.is_autocommit() {
        // SQLite ended the whole transaction under the closure; the batch sees it.
        return out;
    }
    match out {
        Ok(v) => {
            tx.cached_exec("RELEASE outpost_write", [])?;
            Ok(v)
        }
        Err(mut e) => {
            tx.cached_exec("ROLLBACK TO outpost_write", [])?;
            tx.cached_exec("RELEASE outpost_write", [])?;
            if let Some(event) = e.security.take() {
                let logged = tx
                    .cached_exec("SAVEPOINT security", [])
                    .map_err(Error::from)
                    .and_then(|_| match audit::record_security(tx, &event) {
                        Ok(_) => tx.cached_exec("RELEASE security", []).map_err(Error::from),
                        Err(le) => {
                            tx.cached_exec("ROLLBACK TO security", [])?;
                            tx.cached_exec("RELEASE security", [])?;
                            Err(le)
                        }
                    });
                if let Err(le) = logged {
                    tracing::error!(error = %le, "could not record security event");
                }
            }
            Err(e)
        }
    }
}

/// The writer thread's end of the queue, and the thread, joined when the last handle
/// goes (its batch committed and answered, its connection returned).
pub(super) struct Queue {
    jobs: Option<mpsc::Sender<Box<dyn Job>>>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
    thread_id: ThreadId,
    checkpointer: Option<JoinHandle<()>>,
}

impl Queue {
    /// Starts the writer thread on `conn` (shared with [`super::Db::write_blocking`]).
    /// Starts the writer thread on `conn` (shared with [`super::Db::write_blocking`]),
    /// and the checkpointer on `checkpoints`, a read-write connection of its own.
    pub(super) fn start(
        conn: Arc<Mutex<Connection>>,
        checkpoints: Connection,
        feed: Arc<Feed>,
    ) -> std::io::Result<Queue> {
        let (jobs, queued) = mpsc::channel::<Box<dyn Job>>();
        let (poke, poked) = mpsc::sync_channel::<()>(1);
        let checkpointer = std::thread::Builder::new()
            .name("outpost-checkpoint".into())
            .spawn(move || checkpoint(&checkpoints, &poked))?;
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let thread = std::thread::Builder::new()
            .name("outpost-writer".into())
            .spawn(move || {
                while let Ok(first) = queued.recv() {
                    c.queued.fetch_sub(1, Ordering::AcqRel);
                    let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                    group(&mut conn, first, &queued, &c);
                    drop(conn);
                    feed.publish();
                    // Full: a checkpoint is due already.
                    let _ = poke.try_send(());
                }
            })?;
        Ok(Queue {
            jobs: Some(jobs),
            counters,
            thread_id: thread.thread().id(),
            thread: Some(thread),
            checkpointer: Some(checkpointer),
        })
    }

    pub(super) fn stats(&self) -> WriteStats {
        WriteStats {
            queued: self.counters.queued.load(Ordering::Acquire),
            batches: self.counters.batches.load(Ordering::Acquire),
            writes: self.counters.writes.load(Ordering::Acquire),
        }
    }

    pub(super) fn submit(&self, job: Box<dyn Job>) -> Result<()> {
        self.counters.queued.fetch_add(1, Ordering::AcqRel);
        let sent = self.jobs.as_ref().map(|q| q.send(job));
        match sent {
            Some(Ok(())) => Ok(()),
            Some(Err(mpsc::SendError(job))) => {
                self.counters.queued.fetch_sub(1, Ordering::AcqRel);
                let e = Error::internal(&WriterGone);
                job.refuse(lost());
                Err(e)
            }
            None => Err(Error::internal(&WriterGone)),
        }
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.jobs.take();
        // A closure holding the last handle ends on the writer thread itself: it cannot
        // wait for itself, and the thread ends on its own after this batch.
        if std::thread::current().id() != self.thread_id
            && let Some(t) = self.thread.take()
        {
            let _ = t.join();
            // The writer held the checkpointer's only poke: it ends too.
            if let Some(c) = self.checkpointer.take() {
                let _ = c.join();
            }
        }
    }
}

/// At most one background checkpoint per this interval.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(20);

/// Copies committed WAL frames into the database file after the writer's batches, on a
/// thread of its own: a `PASSIVE` checkpoint takes no lock the writer needs, and run
/// inline after a commit (SQLite's automatic checkpoint) its copying and fsyncs were
/// about half of the writer thread's CPU samples in the renewals benchmark. The writer's own automatic checkpoint (at 1000 frames) stays as the
/// backstop; it finds little left to copy while this keeps up.
fn checkpoint(conn: &Connection, poked: &mpsc::Receiver<()>) {
    while poked.recv().is_ok() {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            // Busy: the writer's own checkpoint runs; the next poke tries again.
            tracing::debug!(error = %e, "background checkpoint skipped");
        }
        std::thread::sleep(CHECKPOINT_EVERY);
    }
}

/// The writer thread has stopped (it panicked outside any closure).
#[derive(Debug, thiserror::Error)]
#[error("the database writer thread has stopped")]
pub struct WriterGone;

/// One batch: `first`, then whatever is queued, in one transaction; answers after it.
fn group(
    conn: &mut Connection,
    first: Box<dyn Job>,
    queued: &mpsc::Receiver<Box<dyn Job>>,
    counters: &Counters,
) {
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            // The rest stay queued for the next attempt.
            first.refuse(Error::from(e));
            return;
        }
    };
    let mut replies: Vec<Box<dyn Reply>> = Vec::new();
    let mut next = Some(first);
    let mut ended = false;
    while let Some(job) = next.take() {
        replies.push(job.run(&tx));
        if tx.is_autocommit() {
            ended = true;
            break;
        }
        if replies.len() < MAX_JOBS {
            next = queued.try_recv().ok();
            if next.is_some() {
                counters.queued.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
    let committed = if ended {
        tracing::error!(
            writes = replies.len(),
            "SQLite rolled a batch back under a write; its writes are answered as failed"
        );
        false
    } else {
        match tx.commit() {
            Ok(()) => true,
            Err(e) => {
                let _ = Error::internal(&e);
                tracing::error!(writes = replies.len(), "a batch's COMMIT failed");
                false
            }
        }
    };
    // Counted before anyone is answered, so an answered caller sees its batch counted.
    counters
        .writes
        .fetch_add(replies.len() as u64, Ordering::AcqRel);
    counters.batches.fetch_add(1, Ordering::AcqRel);
    for r in replies {
        r.send(committed);
    }
}
