//! The reply cache: a NAS that hears nothing retransmits the same packet (same source,
//! Identifier and Request Authenticator, RFC 5080 §2.2.2). It must get the same answer,
//! and the request must not run again: a second accounting record would count the
//! traffic twice.
//!
//! Entries live for a time window and the cache holds at most a fixed number; the
//! oldest go first. A request still being handled is remembered too, so a
//! retransmission arriving meanwhile is dropped rather than run in parallel; the NAS
//! retransmits again and then gets the cached answer.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What identifies one request of one NAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    /// Source address and port: two NAS processes may share an address.
    pub src: SocketAddr,
    /// The request's Code, so an auth and an acct packet can never answer each other.
    pub code: u8,
    pub identifier: u8,
    pub authenticator: [u8; 16],
}

/// What the cache knows about a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Not seen in the window: handle it. It is now marked in progress.
    New,
    /// Being handled right now.
    InProgress,
    /// Answered already: send these bytes again.
    Answered(Vec<u8>),
}

#[derive(Debug)]
enum Slot {
    InProgress,
    Answered(Vec<u8>),
}

#[derive(Debug)]
struct Entry {
    slot: Slot,
    since: Instant,
}

#[derive(Debug)]
pub(crate) struct ReplyCache {
    entries: HashMap<Key, Entry>,
    /// Insertion order, for expiry. May name keys already removed or re-inserted;
    /// `since` tells whether the entry is still the one this points at.
    order: VecDeque<(Instant, Key)>,
    ttl: Duration,
    capacity: usize,
}

impl ReplyCache {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            ttl,
            capacity: capacity.max(1),
        }
    }

    /// Looks `key` up; a new key is marked in progress.
    pub(crate) fn begin(&mut self, key: Key, now: Instant) -> Lookup {
        self.expire(now);
        match self.entries.get(&key) {
            Some(Entry {
                slot: Slot::Answered(reply),
                ..
            }) => return Lookup::Answered(reply.clone()),
            Some(Entry {
                slot: Slot::InProgress,
                ..
            }) => return Lookup::InProgress,
            None => {}
        }
        while self.entries.len() >= self.capacity {
            if !self.pop_oldest() {
                break;
            }
        }
        self.entries.insert(
            key,
            Entry {
                slot: Slot::InProgress,
                since: now,
            },
        );
        self.order.push_back((now, key));
        Lookup::New
    }

    /// Records the answer sent for `key`, or forgets `key` when none was sent (the
    /// request was dropped), so that a retransmission is handled afresh.
    pub(crate) fn finish(&mut self, key: Key, reply: Option<&[u8]>) {
        match reply {
            Some(reply) => {
                if let Some(entry) = self.entries.get_mut(&key) {
                    entry.slot = Slot::Answered(reply.to_vec());
                }
            }
            None => {
                self.entries.remove(&key);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(since, _)) = self.order.front() {
            // Stale order records (of removed keys) are dropped here too once old,
            // and early if they pile up, so `order` stays bounded as well.
            if now.saturating_duration_since(since) < self.ttl
                && self.order.len() <= 2 * self.capacity
            {
                break;
            }
            self.pop_oldest();
        }
    }

    /// Drops the oldest order record and its entry if still current; false when empty.
    fn pop_oldest(&mut self) -> bool {
        let Some((since, key)) = self.order.pop_front() else {
            return false;
        };
        if self.entries.get(&key).is_some_and(|e| e.since == since) {
            self.entries.remove(&key);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u8) -> Key {
        Key {
            src: "127.0.0.1:5000".parse().unwrap(),
            code: 1,
            identifier: id,
            authenticator: [id; 16],
        }
    }

    #[test]
    fn answers_a_retransmission_and_drops_one_in_progress() {
        let now = Instant::now();
        let mut c = ReplyCache::new(Duration::from_secs(30), 10);
        assert_eq!(c.begin(key(1), now), Lookup::New);
        assert_eq!(c.begin(key(1), now), Lookup::InProgress);
        c.finish(key(1), Some(b"reply"));
        assert_eq!(c.begin(key(1), now), Lookup::Answered(b"reply".to_vec()));
        let other_port = Key {
            src: "127.0.0.1:5001".parse().unwrap(),
            ..key(1)
        };
        assert_eq!(c.begin(other_port, now), Lookup::New);
        let other_code = Key { code: 4, ..key(1) };
        assert_eq!(c.begin(other_code, now), Lookup::New);
    }

    #[test]
    fn forgets_dropped_requests() {
        let now = Instant::now();
        let mut c = ReplyCache::new(Duration::from_secs(30), 10);
        assert_eq!(c.begin(key(1), now), Lookup::New);
        c.finish(key(1), None);
        assert_eq!(c.begin(key(1), now), Lookup::New);
    }

    #[test]
    fn expires_after_the_window() {
        let now = Instant::now();
        let mut c = ReplyCache::new(Duration::from_secs(30), 10);
        c.begin(key(1), now);
        c.finish(key(1), Some(b"r"));
        assert!(matches!(
            c.begin(key(1), now + Duration::from_secs(29)),
            Lookup::Answered(_)
        ));
        assert_eq!(c.begin(key(1), now + Duration::from_secs(30)), Lookup::New);
    }

    #[test]
    fn holds_at_most_capacity_evicting_the_oldest() {
        let now = Instant::now();
        let mut c = ReplyCache::new(Duration::from_secs(30), 3);
        for id in 0..5 {
            c.begin(key(id), now);
            c.finish(key(id), Some(&[id]));
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.begin(key(4), now), Lookup::Answered(vec![4]));
        assert_eq!(c.begin(key(0), now), Lookup::New);
    }

    #[test]
    fn order_stays_bounded_when_requests_are_dropped() {
        let now = Instant::now();
        let mut c = ReplyCache::new(Duration::from_secs(30), 4);
        for _ in 0..100 {
            c.begin(key(1), now);
            c.finish(key(1), None);
        }
        assert!(c.order.len() <= 9, "{}", c.order.len());
    }
}
