//! Group commit: the accounting records of every RADIUS thread made durable together,
//! one transaction and one `fsync` for all that arrived while the previous commit was
//! on the disk.
//!
//! A record used to be one transaction of its own, and with `synchronous=FULL` one
//! `fsync` each; the threads answering accounting queued on the store's lock behind
//! each other's `fsync`. Now a thread hands its records over ([`Store::record_together`])
//! and waits. Whoever finds no commit under way becomes the writer: it takes every
//! record handed over so far, journals them in one transaction, commits (one `fsync`),
//! brings the in-memory mirrors up to date in the same order, and wakes every thread
//! whose records were in it; a thread whose records came in while the writer was busy
//! becomes the next writer. So there is one writer at a time, the batch grows with the
//! load by itself (no timer, nothing waits when the server is idle), and a thread
//! learns its records are journaled only after the commit that made them durable.
//! The RADIUS server answers a record only then (`radius::Handler::handle_batch`): a
//! `kill -9` at any moment loses no acknowledged record.
//!
//! A record refused on its own (the outbox at its bound) fails alone; any other error
//! fails the whole transaction, so every record in it gets an error and the NAS
//! retransmits each.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use outpost_protocol as proto;

use super::sessions::{Recorded, backend_err};
use super::{Store, StoreError};
use crate::ErrorChain;
use crate::radius::BackendError;

/// The records handed over and not yet taken by a writer.
#[derive(Default)]
pub(super) struct GroupCommit {
    queue: Mutex<Queue>,
    /// Notified (all) after every commit.
    committed: Condvar,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Handover>,
    /// A writer is journaling a batch now.
    writing: bool,
}

/// Where a thread finds the results of its records once a writer has committed them.
type Results = Arc<Mutex<Option<Vec<Result<(), BackendError>>>>>;

/// One thread's records and where their results go.
struct Handover {
    events: Vec<proto::EventBody>,
    results: Results,
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The error a record gets when its whole transaction failed: the cause is shared by
/// the batch, so each gets its text.
fn batch_failed(e: &StoreError) -> BackendError {
    BackendError::msg(format!("journal accounting: {}", ErrorChain(e)))
}

impl Store {
    /// Journals `events` durably, each with what it does to the session table, in
    /// order, together with whatever other threads hand over meanwhile; returns once
    /// the commit holding them is durable, one result per event. Rejects are deferred
    /// instead (see [`Store::flush_deferred`]) and succeed at once.
    pub(super) fn record_together(
        &self,
        events: Vec<proto::EventBody>,
    ) -> Vec<Result<(), BackendError>> {
        let mut results: Vec<Option<Result<(), BackendError>>> = Vec::with_capacity(events.len());
        let mut journaled = Vec::with_capacity(events.len());
        for event in events {
            if let proto::EventBody::AuthReject { .. } = event {
                self.defer(event);
                results.push(Some(Ok(())));
            } else {
                journaled.push(event);
                results.push(None);
            }
        }
        if !journaled.is_empty() {
            let mut done = self.hand_over(journaled).into_iter();
            for slot in results.iter_mut().filter(|r| r.is_none()) {
                *slot = done.next();
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(BackendError::msg("journal accounting: no result"))))
            .collect()
    }

    /// Queues `events` and waits until a commit held them, writing it if no one else is.
    fn hand_over(&self, events: Vec<proto::EventBody>) -> Vec<Result<(), BackendError>> {
        let results: Results = Arc::new(Mutex::new(None));
        let group = &self.group;
        let mut queue = group.lock();
        queue.waiting.push(Handover {
            events,
            results: results.clone(),
        });
        loop {
            if let Some(done) = results.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return done;
            }
            if queue.writing {
                queue = group
                    .committed
                    .wait(queue)
                    .unwrap_or_else(|p| p.into_inner());
                continue;
            }
            queue.writing = true;
            let batch = std::mem::take(&mut queue.waiting);
            drop(queue);
            // Whatever happens in the writer, the next thread must be able to write.
            let written =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.write_batch(batch)));
            queue = group.lock();
            queue.writing = false;
            group.committed.notify_all();
            if let Err(panic) = written {
                drop(queue);
                std::panic::resume_unwind(panic);
            }
        }
    }

    /// One transaction for every record of `batch`, then the mirrors, then the results.
    fn write_batch(&self, batch: Vec<Handover>) {
        let mut conn = self.conn();
        let mut write = || -> Result<Vec<Vec<Result<Recorded, StoreError>>>, StoreError> {
            let tx = conn.transaction()?;
            let mut ahead = 0;
            let mut outcomes = Vec::with_capacity(batch.len());
            for handover in &batch {
                let mut each = Vec::with_capacity(handover.events.len());
                for event in &handover.events {
                    match self.record_in(&tx, event, ahead) {
                        Ok(done) => {
                            ahead += u64::from(done.seq > 0);
                            each.push(Ok(done));
                        }
                        // Refused before anything was written: this record alone fails.
                        Err(e @ StoreError::OutboxFull(_)) => each.push(Err(e)),
                        Err(e) => return Err(e),
                    }
                }
                outcomes.push(each);
            }
            tx.commit()?;
            Ok(outcomes)
        };
        let written = write();
        drop(conn);
        match written {
            Ok(outcomes) => {
                for (handover, each) in batch.into_iter().zip(outcomes) {
                    let results = handover
                        .events
                        .iter()
                        .zip(each)
                        .map(|(event, outcome)| match outcome {
                            Ok(done) => {
                                self.note_recorded(event, done);
                                Ok(())
                            }
                            Err(e) => Err(backend_err("journal accounting", e)),
                        })
                        .collect();
                    *handover.results.lock().unwrap_or_else(|p| p.into_inner()) = Some(results);
                }
            }
            Err(e) => {
                tracing::error!(error = %ErrorChain(&e), records = batch.iter().map(|h| h.events.len()).sum::<usize>(), "a batch of accounting could not be journaled");
                for handover in batch {
                    let results = handover
                        .events
                        .iter()
                        .map(|_| Err(batch_failed(&e)))
                        .collect();
                    *handover.results.lock().unwrap_or_else(|p| p.into_inner()) = Some(results);
                }
            }
        }
    }
}
