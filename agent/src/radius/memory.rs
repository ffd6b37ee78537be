//! [`MemoryBackend`]: the whole [`Backend`] contract in memory — NAS list,
//! subscribers, settings, the online-session table and a journal with sequence
//! numbers. The crate's unit tests drive the handler with it (built only for them;
//! integration tests use the real store); "durable" here means "in the journal
//! vector", which is as durable as memory gets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use outpost_protocol::{AcctStatus, Event, EventBody, NasState, SiteSettings, SubscriberState};

use super::{Backend, BackendError};
use crate::store::OnlineSession;

#[derive(Debug, Default)]
struct State {
    nas: Vec<Arc<NasState>>,
    subscribers: HashMap<String, Arc<SubscriberState>>,
    settings: Option<SiteSettings>,
    /// Keyed by (NAS, Acct-Session-Id): session ids are only unique per NAS.
    sessions: HashMap<(String, String), OnlineSession>,
    journal: Vec<Event>,
}

/// An in-memory [`Backend`]. Every call takes one lock, so each record is applied to
/// the session table and journaled atomically.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    state: Mutex<State>,
}

impl MemoryBackend {
    /// An empty backend with `settings`.
    pub fn new(settings: SiteSettings) -> Self {
        Self {
            state: Mutex::new(State {
                settings: Some(settings),
                ..State::default()
            }),
        }
    }

    /// Adds a NAS, or replaces the one with the same id.
    pub fn upsert_nas(&self, nas: NasState) {
        let mut state = self.lock();
        state.nas.retain(|n| n.id != nas.id);
        state.nas.push(Arc::new(nas));
    }

    /// Adds a subscriber, or replaces the one with the same id.
    pub fn upsert_subscriber(&self, subscriber: SubscriberState) {
        let mut state = self.lock();
        state.subscribers.retain(|_, s| s.id != subscriber.id);
        state
            .subscribers
            .insert(subscriber.username.clone(), Arc::new(subscriber));
    }

    /// The online sessions, ordered by NAS and session id.
    pub fn sessions(&self) -> Vec<OnlineSession> {
        let mut sessions: Vec<_> = self.lock().sessions.values().cloned().collect();
        sessions.sort_by(|a, b| (&a.nas_ip, &a.session_id).cmp(&(&b.nas_ip, &b.session_id)));
        sessions
    }

    /// Everything journaled, oldest first.
    pub fn journal(&self) -> Vec<Event> {
        self.lock().journal.clone()
    }

    /// A panic while holding the lock cannot leave the state half-updated (each
    /// method finishes its changes before anything can panic), so a poisoned lock is
    /// still good.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn journal(&mut self, body: EventBody) {
        let seq = self.journal.last().map_or(1, |e| e.seq + 1);
        self.journal.push(Event {
            seq,
            at: crate::clock::now(),
            body,
        });
    }

    fn close_nas_sessions(&mut self, nas_ip: &str, reason: &str) -> u32 {
        let before = self.sessions.len();
        self.sessions.retain(|(nas, _), _| nas != nas_ip);
        let closed = u32::try_from(before - self.sessions.len()).unwrap_or(u32::MAX);
        self.journal(EventBody::NasSessionsClosed {
            nas_ip: nas_ip.to_owned(),
            closed,
            reason: reason.to_owned(),
        });
        closed
    }
}

impl Backend for MemoryBackend {
    fn nas(&self, ip: IpAddr) -> Option<Arc<NasState>> {
        self.lock()
            .nas
            .iter()
            .find(|n| {
                n.ip.parse::<IpAddr>()
                    .is_ok_and(|a| a.to_canonical() == ip.to_canonical())
            })
            .cloned()
    }

    fn subscriber(&self, username: &str) -> Option<Arc<SubscriberState>> {
        self.lock().subscribers.get(username).cloned()
    }

    fn settings(&self) -> SiteSettings {
        // A site that has not synced settings yet: no interim updates, RADIUS shaping.
        self.lock().settings.clone().unwrap_or(SiteSettings {
            acct_interim_interval_secs: 0,
            shaping_enabled: false,
        })
    }

    fn online_sessions(&self, username: &str) -> u32 {
        let n = self
            .lock()
            .sessions
            .values()
            .filter(|s| s.username == username)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn record(&self, event: EventBody) -> Result<(), BackendError> {
        let mut state = self.lock();
        match &event {
            EventBody::Accounting(a) => {
                let key = (a.nas_ip.clone(), a.session_id.clone());
                match a.status {
                    // An interim for a session we never saw start still proves it is
                    // online (the Start may have been lost while we were down).
                    AcctStatus::Start | AcctStatus::InterimUpdate => {
                        state.sessions.insert(
                            key,
                            OnlineSession {
                                nas_ip: a.nas_ip.clone(),
                                session_id: a.session_id.clone(),
                                username: a.username.clone(),
                                framed_ip: a.framed_ip.as_deref().and_then(|ip| ip.parse().ok()),
                                framed_ipv6: a
                                    .framed_ipv6
                                    .as_deref()
                                    .and_then(|ip| ip.parse().ok()),
                            },
                        );
                    }
                    AcctStatus::Stop => {
                        state.sessions.remove(&key);
                    }
                }
                state.journal(event);
            }
            EventBody::NasSessionsClosed { nas_ip, reason, .. } => {
                // Keep the journal truthful: the count is what was actually closed.
                let (nas_ip, reason) = (nas_ip.clone(), reason.clone());
                state.close_nas_sessions(&nas_ip, &reason);
            }
            EventBody::AuthReject { .. } | EventBody::Coa(_) | EventBody::WanCheck(_) => {
                state.journal(event)
            }
        }
        Ok(())
    }

    fn close_nas_sessions(&self, nas_ip: &str, reason: &str) -> Result<u32, BackendError> {
        Ok(self.lock().close_nas_sessions(nas_ip, reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::{NasKind, RejectReason};

    fn acct(status: AcctStatus, nas_ip: &str, session_id: &str, username: &str) -> EventBody {
        EventBody::Accounting(outpost_testkit::fixtures::accounting(
            status, username, session_id, nas_ip,
        ))
    }

    fn backend() -> MemoryBackend {
        MemoryBackend::new(SiteSettings {
            acct_interim_interval_secs: 60,
            shaping_enabled: false,
        })
    }

    #[test]
    fn start_interim_stop_move_sessions_on_and_off_line() {
        let b = backend();
        b.record(acct(AcctStatus::Start, "10.0.0.1", "a", "amina"))
            .unwrap();
        b.record(acct(AcctStatus::Start, "10.0.0.1", "b", "amina"))
            .unwrap();
        // The same session id on another NAS is another session.
        b.record(acct(AcctStatus::InterimUpdate, "10.0.0.2", "a", "amina"))
            .unwrap();
        assert_eq!(b.online_sessions("amina"), 3);
        // A repeated Start does not count twice.
        b.record(acct(AcctStatus::Start, "10.0.0.1", "a", "amina"))
            .unwrap();
        assert_eq!(b.online_sessions("amina"), 3);
        b.record(acct(AcctStatus::Stop, "10.0.0.1", "a", "amina"))
            .unwrap();
        assert_eq!(b.online_sessions("amina"), 2);
        assert_eq!(b.online_sessions("someone-else"), 0);
        let seqs: Vec<u64> = b.journal().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn closing_a_nas_closes_only_its_sessions_and_journals_the_count() {
        let b = backend();
        b.record(acct(AcctStatus::Start, "10.0.0.1", "a", "amina"))
            .unwrap();
        b.record(acct(AcctStatus::Start, "10.0.0.1", "b", "omar"))
            .unwrap();
        b.record(acct(AcctStatus::Start, "10.0.0.2", "c", "omar"))
            .unwrap();
        assert_eq!(
            b.close_nas_sessions("10.0.0.1", "Accounting-On").unwrap(),
            2
        );
        assert_eq!(
            b.sessions()
                .iter()
                .map(|s| s.session_id.as_str())
                .collect::<Vec<_>>(),
            ["c"]
        );
        assert_eq!(
            b.journal().last().unwrap().body,
            EventBody::NasSessionsClosed {
                nas_ip: "10.0.0.1".into(),
                closed: 2,
                reason: "Accounting-On".into()
            }
        );
        // Through `record` the count is the real one too.
        b.record(EventBody::NasSessionsClosed {
            nas_ip: "10.0.0.2".into(),
            closed: 99,
            reason: "x".into(),
        })
        .unwrap();
        assert!(matches!(
            b.journal().last().unwrap().body,
            EventBody::NasSessionsClosed { closed: 1, .. }
        ));
    }

    #[test]
    fn rejects_are_journaled_without_touching_sessions() {
        let b = backend();
        b.record(EventBody::AuthReject {
            username: "x".into(),
            nas_ip: "10.0.0.1".into(),
            reason: RejectReason::WrongPassword,
            calling_station_id: None,
        })
        .unwrap();
        assert_eq!(b.journal().len(), 1);
        assert!(b.sessions().is_empty());
    }

    #[test]
    fn finds_nas_by_address_in_any_spelling() {
        let b = backend();
        b.upsert_nas(NasState {
            id: 1,
            ip: "127.0.0.1".into(),
            secret: "s".into(),
            kind: NasKind::Mikrotik,
            coa_port: 3799,
            require_message_authenticator: false,
        });
        assert!(b.nas("127.0.0.1".parse().unwrap()).is_some());
        assert!(
            b.nas("::ffff:127.0.0.1".parse().unwrap()).is_some(),
            "v4-mapped source on a dual-stack socket"
        );
        assert!(b.nas("127.0.0.2".parse().unwrap()).is_none());
    }
}
