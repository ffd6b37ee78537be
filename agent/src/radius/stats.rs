//! Counters of what the RADIUS server did, for metrics and for tests that need to know
//! a datagram was dealt with even when nothing was sent back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use outpost_protocol::RejectReason;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::Notify;

/// Every reason an Access-Request is rejected for, in [`Stats::rejects_by_reason`]'s order.
pub const REJECT_REASONS: [RejectReason; 8] = [
    RejectReason::UnknownUser,
    RejectReason::WrongPassword,
    RejectReason::Suspended,
    RejectReason::Disabled,
    RejectReason::Expired,
    RejectReason::MacMismatch,
    RejectReason::SessionLimit,
    RejectReason::UnsupportedAuth,
];

/// How a reject reason is spelled on the wire and in metrics (`snake_case`).
pub fn reject_reason_label(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::UnknownUser => "unknown_user",
        RejectReason::WrongPassword => "wrong_password",
        RejectReason::Suspended => "suspended",
        RejectReason::Disabled => "disabled",
        RejectReason::Expired => "expired",
        RejectReason::MacMismatch => "mac_mismatch",
        RejectReason::SessionLimit => "session_limit",
        RejectReason::UnsupportedAuth => "unsupported_auth",
    }
}

fn reject_index(reason: RejectReason) -> usize {
    REJECT_REASONS
        .iter()
        .position(|r| *r == reason)
        .expect("every reason is listed")
}

/// What a datagram ended with, as metrics label it: the code of the reply sent, or
/// `none` when it was dropped.
pub const REPLY_CODES: [&str; 4] = [
    "access_accept",
    "access_reject",
    "accounting_response",
    "none",
];

/// The index in [`REPLY_CODES`] of a reply's code octet.
pub(crate) fn reply_code_index(reply: &[u8]) -> usize {
    match reply.first() {
        Some(2) => 0,
        Some(3) => 1,
        Some(5) => 2,
        _ => 3,
    }
}

/// Time from a datagram's arrival at the handler to its reply being ready (or its
/// drop), one histogram per [`REPLY_CODES`] entry.
#[derive(Debug)]
pub struct Latency(pub [Histogram; 4]);

impl Default for Latency {
    fn default() -> Self {
        // 50 µs to about 0.8 s: a cached answer, an accept from memory, an accounting
        // record waiting on fsync, a disk in trouble.
        Latency(std::array::from_fn(|_| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 15))
        }))
    }
}

/// What the server has done since it started. Every datagram counts once in
/// `requests` and then in at most one of the other counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Datagrams received.
    pub requests: AtomicU64,
    /// Access-Accepts sent (not counting cached re-sends).
    pub accepts: AtomicU64,
    /// Access-Rejects sent (not counting cached re-sends).
    pub rejects: AtomicU64,
    /// Datagrams from a source that is not in the NAS list; not answered.
    pub unknown_nas: AtomicU64,
    /// Requests whose Message-Authenticator or accounting Request Authenticator is
    /// wrong (forged, or the NAS has another secret); not answered.
    pub bad_authenticator: AtomicU64,
    /// Access-Requests without Message-Authenticator from a NAS that must send it
    /// (BlastRADIUS mitigation); not answered.
    pub missing_message_authenticator: AtomicU64,
    /// Datagrams that are not a RADIUS request we serve; not answered.
    pub malformed: AtomicU64,
    /// Retransmissions answered from the reply cache.
    pub retransmissions: AtomicU64,
    /// Retransmissions that arrived while the original was still being handled;
    /// dropped, the NAS will ask again.
    pub duplicates_in_progress: AtomicU64,
    /// Accounting-Requests recorded durably and acknowledged.
    pub acct_records: AtomicU64,
    /// Status-Server requests (RFC 5997) answered.
    pub status_server: AtomicU64,
    /// Requests left unanswered because the backend failed (the NAS retransmits) or a
    /// reply could not be encoded.
    pub backend_errors: AtomicU64,
    /// Access-Rejects sent, by reason, in [`REJECT_REASONS`]' order.
    rejects_by_reason: [AtomicU64; 8],
    /// Retransmissions answered from the reply cache, by the cached reply's code, in
    /// [`REPLY_CODES`]' order (the last is never used: a drop is not cached).
    retransmissions_by_code: [AtomicU64; 4],
    /// How long handling took, by what it ended with.
    pub latency: Latency,
    /// Datagrams the server has finished with: answered (the reply sent) or dropped.
    handled: AtomicU64,
    handled_changed: Notify,
}

/// A copy of [`Stats`] at one moment, easy to compare and print.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// [`Stats::requests`].
    pub requests: u64,
    /// [`Stats::accepts`].
    pub accepts: u64,
    /// [`Stats::rejects`].
    pub rejects: u64,
    /// [`Stats::unknown_nas`].
    pub unknown_nas: u64,
    /// [`Stats::bad_authenticator`].
    pub bad_authenticator: u64,
    /// [`Stats::missing_message_authenticator`].
    pub missing_message_authenticator: u64,
    /// [`Stats::malformed`].
    pub malformed: u64,
    /// [`Stats::retransmissions`].
    pub retransmissions: u64,
    /// [`Stats::duplicates_in_progress`].
    pub duplicates_in_progress: u64,
    /// [`Stats::acct_records`].
    pub acct_records: u64,
    /// [`Stats::status_server`].
    pub status_server: u64,
    /// [`Stats::backend_errors`].
    pub backend_errors: u64,
    /// [`Stats::handled`].
    pub handled: u64,
}

impl Stats {
    /// Reads every counter. Counters move independently; a snapshot taken while
    /// requests are in progress need not add up.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            requests: get(&self.requests),
            accepts: get(&self.accepts),
            rejects: get(&self.rejects),
            unknown_nas: get(&self.unknown_nas),
            bad_authenticator: get(&self.bad_authenticator),
            missing_message_authenticator: get(&self.missing_message_authenticator),
            malformed: get(&self.malformed),
            retransmissions: get(&self.retransmissions),
            duplicates_in_progress: get(&self.duplicates_in_progress),
            acct_records: get(&self.acct_records),
            status_server: get(&self.status_server),
            backend_errors: get(&self.backend_errors),
            handled: self.handled.load(Ordering::SeqCst),
        }
    }

    /// How many datagrams the server has finished with.
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::SeqCst)
    }

    /// Waits until the server has finished with at least `n` datagrams: once this
    /// returns, every reply to them has been handed to the kernel, so a datagram that
    /// is not in the client's socket now was never sent.
    pub async fn wait_handled(&self, n: u64) {
        loop {
            let changed = self.handled_changed.notified();
            tokio::pin!(changed);
            // Register before checking, so an increment in between is not missed.
            changed.as_mut().enable();
            if self.handled() >= n {
                return;
            }
            changed.await;
        }
    }

    /// Access-Rejects sent so far, by reason (every reason listed, zeros included).
    pub fn rejects_by_reason(&self) -> [(RejectReason, u64); 8] {
        std::array::from_fn(|i| {
            (
                REJECT_REASONS[i],
                self.rejects_by_reason[i].load(Ordering::Relaxed),
            )
        })
    }

    /// Retransmissions answered from the reply cache so far, by the reply's code
    /// (`access_accept`, `access_reject`, `accounting_response`).
    pub fn retransmissions_by_code(&self) -> [(&'static str, u64); 3] {
        std::array::from_fn(|i| {
            (
                REPLY_CODES[i],
                self.retransmissions_by_code[i].load(Ordering::Relaxed),
            )
        })
    }

    pub(crate) fn reject(&self, reason: RejectReason) {
        Self::bump(&self.rejects);
        Self::bump(&self.rejects_by_reason[reject_index(reason)]);
    }

    pub(crate) fn retransmission(&self, reply: &[u8]) {
        Self::bump(&self.retransmissions);
        Self::bump(&self.retransmissions_by_code[reply_code_index(reply)]);
    }

    pub(crate) fn observe(&self, reply: Option<&[u8]>, took: Duration) {
        let i = reply.map_or(3, reply_code_index);
        self.latency.0[i].observe(took.as_secs_f64());
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn mark_handled(&self) {
        self.handled.fetch_add(1, Ordering::SeqCst);
        self.handled_changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn wait_handled_wakes_on_the_nth_datagram() {
        let stats = Arc::new(Stats::default());
        let waiter = tokio::spawn({
            let stats = stats.clone();
            async move { stats.wait_handled(3).await }
        });
        for _ in 0..3 {
            tokio::task::yield_now().await;
            stats.mark_handled();
        }
        waiter.await.unwrap();
        assert_eq!(stats.snapshot().handled, 3);
        stats.wait_handled(2).await; // already past: returns at once
    }
}
