//! The agent's local store: one SQLite file holding the site's desired state at a
//! revision, the online sessions, and the outbox journal.
//!
//! Everything the agent enforces comes from here, so the site keeps working while the
//! controller is unreachable. The desired state is also kept in memory (RADIUS looks it
//! up per request); the file is the truth and is read back on start.
//!
//! Durability: WAL with `synchronous=FULL`, so a committed journal record survives a
//! power cut, and a state batch is applied in one transaction, so `kill -9` at any
//! moment leaves either the old revision or the new one. Accounting from every RADIUS
//! thread is group-committed (`group`): one transaction and one `fsync` for all the
//! records that arrived while the previous commit was on the disk.

mod desired;
mod group;
mod notices;
mod outbox;
mod sessions;
mod wan;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use outpost_protocol as proto;
use rusqlite::{Connection, OptionalExtension, params};
use rusqlite_migration::{M, Migrations};

use desired::Desired;
pub use sessions::OnlineSession;
use sessions::{Sessions, count_online};

const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/agent/0001_init.sql"),
    include_str!("../../../migrations/agent/0002_edge.sql"),
    include_str!("../../../migrations/agent/0003_wan.sql"),
    include_str!("../../../migrations/agent/0004_stopped_sessions.sql"),
    include_str!("../../../migrations/agent/0005_notices.sql"),
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("agent store")]
    Sqlite(#[from] rusqlite::Error),
    /// The schema could not be brought up to date.
    #[error("agent store migration")]
    Migrate(#[from] rusqlite_migration::Error),
    /// The store was written by a newer agent.
    #[error("agent store {path} has schema {found}, this agent knows {known}: upgrade the agent")]
    TooNew {
        path: String,
        found: i64,
        known: usize,
    },
    /// A stored row is not valid protocol JSON.
    #[error("agent store row is damaged")]
    Json(#[from] serde_json::Error),
    /// The outbox is at its bound; see [`Store::journal`].
    #[error("the outbox holds {0} unshipped events, its limit")]
    OutboxFull(u64),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The local store.
pub struct Store {
    conn: Mutex<Connection>,
    desired: RwLock<Desired>,
    /// Online sessions per username, mirrored from the `sessions` table.
    online: Mutex<HashMap<String, u32>>,
    revision: AtomicU64,
    /// Unshipped events in the outbox.
    backlog: AtomicU64,
    /// The outbox bound: past it, accounting is refused (the NAS retries) and other
    /// events are dropped and counted.
    max_outbox: u64,
    /// Non-accounting events dropped because the outbox (or the deferred rejects) was
    /// full.
    pub dropped_events: AtomicU64,
    /// Rejects waiting to be journaled, with the time each happened (see
    /// [`Store::flush_deferred`]).
    deferred: Mutex<Vec<(i64, proto::EventBody)>>,
    /// How many of them, including those being journaled right now.
    deferred_count: AtomicU64,
    /// Online sessions with their addresses, mirrored from the `sessions` table.
    sessions: Mutex<Sessions>,
    /// Woken when a state is applied, a session's address appears, moves or goes, or a
    /// NAS restarts. One waiter: the edge loop.
    changed: tokio::sync::Notify,
    /// Counts snapshots applied, so enforcement knows to rebuild rather than patch.
    snapshots: AtomicU64,
    /// Accounting records handed over to be committed together.
    group: group::GroupCommit,
}

impl Store {
    /// Opens (creating) and migrates the store, and loads the desired state.
    pub fn open(path: &Path, max_outbox: u64) -> Result<Store> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Room for every statement the hot paths prepare (the default holds 16).
        conn.set_prepared_statement_cache_capacity(64);
        let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if found > MIGRATIONS.len() as i64 {
            return Err(StoreError::TooNew {
                path: path.display().to_string(),
                found,
                known: MIGRATIONS.len(),
            });
        }
        Migrations::new(MIGRATIONS.iter().map(|m| M::up(m)).collect()).to_latest(&mut conn)?;
        let store = Store {
            conn: Mutex::new(conn),
            desired: RwLock::new(Desired::default()),
            online: Mutex::new(HashMap::new()),
            revision: AtomicU64::new(0),
            backlog: AtomicU64::new(0),
            max_outbox,
            dropped_events: AtomicU64::new(0),
            deferred: Mutex::new(Vec::new()),
            deferred_count: AtomicU64::new(0),
            sessions: Mutex::new(Sessions::default()),
            changed: tokio::sync::Notify::new(),
            snapshots: AtomicU64::new(0),
            group: group::GroupCommit::default(),
        };
        store.reload()?;
        Ok(store)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the desired state, sessions and counters back from the file.
    fn reload(&self) -> Result<()> {
        let conn = self.conn();
        let mut d = Desired::default();
        {
            let mut stmt = conn.prepare("SELECT state FROM subscribers")?;
            for row in stmt.query_map([], |r| r.get::<_, String>(0))? {
                let s: proto::SubscriberState = serde_json::from_str(&row?)?;
                d.usernames.insert(s.id, s.username.clone());
                d.subscribers.insert(s.username.clone(), Arc::new(s));
            }
            let mut stmt = conn.prepare("SELECT state FROM nas")?;
            for row in stmt.query_map([], |r| r.get::<_, String>(0))? {
                let n: proto::NasState = serde_json::from_str(&row?)?;
                if let Ok(ip) = n.ip.parse() {
                    d.nas.insert(ip, Arc::new(n));
                }
            }
        }
        {
            let mut stmt = conn.prepare("SELECT state FROM brands")?;
            for row in stmt.query_map([], |r| r.get::<_, String>(0))? {
                let b: proto::Brand = serde_json::from_str(&row?)?;
                d.brands.insert(b.tenant_id, b);
            }
        }
        let mut sessions = Sessions::default();
        {
            let mut stmt = conn
                .prepare("SELECT nas_ip, session_id, username, framed_ip, framed_ipv6 FROM sessions ORDER BY updated_at")?;
            let rows = stmt.query_map([], |r| {
                Ok(OnlineSession {
                    nas_ip: r.get(0)?,
                    session_id: r.get(1)?,
                    username: r.get(2)?,
                    framed_ip: r.get::<_, Option<String>>(3)?.and_then(|a| a.parse().ok()),
                    framed_ipv6: r.get::<_, Option<String>>(4)?.and_then(|a| a.parse().ok()),
                })
            })?;
            for row in rows {
                sessions.upsert(row?);
            }
        }
        d.settings = get_meta(&conn, "settings")?
            .map(|s| serde_json::from_str(&s))
            .transpose()?;
        let rev = get_meta(&conn, "revision")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let shipped: u64 = get_meta(&conn, "shipped_through")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let backlog: i64 = conn.query_row(
            "SELECT count(*) FROM outbox WHERE seq > ?1",
            [shipped as i64],
            |r| r.get(0),
        )?;
        let online = count_online(&conn)?;
        drop(conn);
        *self.desired.write().unwrap_or_else(|p| p.into_inner()) = d;
        *self.online.lock().unwrap_or_else(|p| p.into_inner()) = online;
        *self.sessions.lock().unwrap_or_else(|p| p.into_inner()) = sessions;
        self.revision.store(rev, Ordering::Release);
        self.backlog.store(backlog as u64, Ordering::Release);
        Ok(())
    }

    /// The revision of the desired state held.
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    /// Unshipped events.
    pub fn backlog(&self) -> u64 {
        self.backlog.load(Ordering::Acquire)
    }

    /// Reads a meta value (identity, last contact, …).
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        get_meta(&self.conn(), key)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        set_meta(&self.conn(), key, value)
    }
}

fn get_meta(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::radius::Backend;
    use proto::{
        Accounting, AcctStatus, EventBody, StateKind, StateResponse, SubscriberState,
        SubscriberStatus,
    };
    use sha2::{Digest, Sha256};

    fn sub(id: i64, name: &str, status: SubscriberStatus) -> SubscriberState {
        SubscriberState {
            status,
            expires_at: None,
            rate: None,
            tenant_id: 2,
            ..outpost_testkit::fixtures::subscriber(id, name, &format!("pw-{id}"))
        }
    }

    fn nas(id: i64, ip: &str) -> proto::NasState {
        proto::NasState {
            id,
            ip: ip.into(),
            secret: "s".into(),
            kind: proto::NasKind::Mikrotik,
            coa_port: 3799,
            require_message_authenticator: true,
        }
    }

    fn state(
        kind: StateKind,
        revision: u64,
        subs: Vec<SubscriberState>,
        removed: Vec<i64>,
    ) -> StateResponse {
        StateResponse {
            kind,
            revision,
            subscribers: subs,
            removed_subscribers: removed,
            nas: vec![nas(1, "192.0.2.1")],
            removed_nas: vec![],
            settings: Some(proto::SiteSettings {
                acct_interim_interval_secs: 120,
                shaping_enabled: false,
            }),
            brands: vec![],
            notices: None,
        }
    }

    fn acct(status: AcctStatus, user: &str, session: &str) -> EventBody {
        EventBody::Accounting(Accounting {
            framed_ip: Some("100.64.0.2".into()),
            session_time: 10,
            input_octets: 1,
            output_octets: 2,
            ..outpost_testkit::fixtures::accounting(status, user, session, "192.0.2.1")
        })
    }

    #[test]
    fn snapshots_replace_deltas_patch_and_everything_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        let s = Store::open(&path, 100).unwrap();
        s.apply(&state(
            StateKind::Snapshot,
            5,
            vec![
                sub(1, "amina", SubscriberStatus::Active),
                sub(2, "bruno", SubscriberStatus::Active),
            ],
            vec![],
        ))
        .unwrap();
        s.apply(&state(
            StateKind::Delta,
            7,
            vec![
                sub(2, "bruno", SubscriberStatus::Suspended),
                sub(3, "chen", SubscriberStatus::Active),
            ],
            vec![1],
        ))
        .unwrap();
        assert_eq!(s.revision(), 7);
        assert!(s.subscriber("amina").is_none());
        assert_eq!(
            s.subscriber("bruno").unwrap().status,
            SubscriberStatus::Suspended
        );
        assert_eq!(s.settings().acct_interim_interval_secs, 120);
        assert!(s.nas("192.0.2.1".parse().unwrap()).is_some());
        // A username that moves to another subscriber id in one batch.
        s.apply(&state(
            StateKind::Delta,
            8,
            vec![sub(4, "chen", SubscriberStatus::Active)],
            vec![],
        ))
        .unwrap();
        assert_eq!(s.subscriber("chen").unwrap().id, 4);
        let digest = s.digest();
        s.record(acct(AcctStatus::Start, "bruno", "x1")).unwrap();
        assert_eq!(s.online_sessions("bruno"), 1);
        drop(s);
        // Reopened (a restart, or after kill -9: every change above was one transaction).
        let s = Store::open(&path, 100).unwrap();
        assert_eq!(
            (s.revision(), s.digest(), s.online_sessions("bruno")),
            (8, digest, 1)
        );
        assert_eq!(s.backlog(), 1);
        // A snapshot drops what it does not list.
        s.apply(&state(
            StateKind::Snapshot,
            9,
            vec![sub(2, "bruno", SubscriberStatus::Active)],
            vec![],
        ))
        .unwrap();
        assert_eq!(s.counts(), (1, 1));
    }

    #[test]
    fn the_digest_is_the_protocols() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("a.db"), 10).unwrap();
        let subs = vec![
            sub(2, "b", SubscriberStatus::Active),
            sub(1, "a", SubscriberStatus::Expired),
        ];
        s.apply(&state(StateKind::Snapshot, 1, subs.clone(), vec![]))
            .unwrap();
        let expected = hex::encode(Sha256::digest(
            proto::digest_input(&subs, &[nas(1, "192.0.2.1")]).as_bytes(),
        ));
        assert_eq!(s.digest(), expected);
    }

    #[test]
    fn sessions_open_and_close_and_a_nas_reboot_closes_all_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("a.db"), 100).unwrap();
        s.record(acct(AcctStatus::Start, "amina", "s1")).unwrap();
        s.record(acct(AcctStatus::InterimUpdate, "amina", "s1"))
            .unwrap();
        assert_eq!(
            s.online_sessions("amina"),
            1,
            "an interim does not add a session"
        );
        s.record(acct(AcctStatus::Start, "amina", "s2")).unwrap();
        assert_eq!(s.online_sessions("amina"), 2);
        s.record(acct(AcctStatus::Stop, "amina", "s1")).unwrap();
        s.record(acct(AcctStatus::Stop, "amina", "s1")).unwrap();
        assert_eq!(
            s.online_sessions("amina"),
            1,
            "a repeated stop closes nothing more"
        );
        assert_eq!(
            s.close_nas_sessions("192.0.2.1", "accounting-on").unwrap(),
            1
        );
        assert_eq!(s.online_total(), 0);
        assert_eq!(s.backlog(), 6);
        let batch = s.outbox_batch(100).unwrap();
        assert_eq!(
            batch.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5, 6]
        );
        assert!(matches!(
            batch[5].body,
            EventBody::NasSessionsClosed { closed: 1, .. }
        ));
    }

    #[test]
    fn a_record_older_than_its_sessions_end_brings_nothing_back_online() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let s = Store::open(&path, 100).unwrap();
        let t0 = crate::clock::now() - 600;
        let at = |status, session: &str, t: i64| {
            let EventBody::Accounting(a) = acct(status, "amina", session) else {
                unreachable!()
            };
            EventBody::Accounting(Accounting {
                event_time: Some(t),
                ..a
            })
        };
        s.record(at(AcctStatus::Start, "s1", t0)).unwrap();
        s.record(at(AcctStatus::Stop, "s1", t0 + 300)).unwrap();
        // The NAS resends an interim from before the Stop (another source port, or past
        // the reply cache), and the Start again: the session stays ended.
        s.record(at(AcctStatus::InterimUpdate, "s1", t0 + 120))
            .unwrap();
        s.record(at(AcctStatus::Start, "s1", t0)).unwrap();
        assert_eq!(s.online_sessions("amina"), 0);
        assert!(s.sessions().is_empty(), "{:?}", s.sessions());
        // Still journaled: the controller sees them and counts nothing twice.
        assert_eq!(s.backlog(), 4);
        // Remembered across a restart.
        drop(s);
        let s = Store::open(&path, 100).unwrap();
        s.record(at(AcctStatus::InterimUpdate, "s1", t0 + 300))
            .unwrap();
        assert_eq!(s.online_sessions("amina"), 0, "as old as the Stop: ended");
        // A newer Start under the same id is a new session (a rebooted NAS reuses ids).
        s.record(at(AcctStatus::Start, "s1", t0 + 400)).unwrap();
        assert_eq!(s.online_sessions("amina"), 1);
        // After Accounting-On the NAS reuses ids from the start, whatever its clock says:
        // those are new sessions.
        assert_eq!(
            s.close_nas_sessions("192.0.2.1", "accounting-on").unwrap(),
            1
        );
        s.record(at(AcctStatus::Start, "s1", t0 + 10)).unwrap();
        assert_eq!(s.online_sessions("amina"), 1);
    }

    #[test]
    fn rejects_wait_for_one_flush_and_keep_their_time() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("a.db"), 100).unwrap();
        let reject = |user: &str| EventBody::AuthReject {
            username: user.into(),
            nas_ip: "192.0.2.1".into(),
            reason: proto::RejectReason::WrongPassword,
            calling_station_id: None,
        };
        s.record(reject("a")).unwrap();
        s.record(reject("b")).unwrap();
        assert_eq!((s.deferred(), s.backlog()), (2, 0), "nothing written yet");
        let before = crate::clock::now();
        s.record(acct(AcctStatus::Start, "amina", "s1")).unwrap();
        assert_eq!(
            (s.deferred(), s.backlog()),
            (2, 1),
            "accounting does not wait"
        );
        assert_eq!(s.flush_deferred().unwrap(), 2);
        assert_eq!((s.deferred(), s.backlog()), (0, 3));
        let batch = s.outbox_batch(10).unwrap();
        let users: Vec<_> = batch
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::AuthReject { username, .. } => Some((username.clone(), e.at)),
                _ => None,
            })
            .collect();
        assert_eq!(users.len(), 2);
        assert_eq!((users[0].0.as_str(), users[1].0.as_str()), ("a", "b"));
        assert!(users.iter().all(|(_, at)| *at <= before), "{users:?}");
        // Reading the outbox journals what waits, so nothing is shipped late.
        s.record(reject("c")).unwrap();
        assert_eq!(s.outbox_batch(10).unwrap().len(), 4);
        // Past the bound a reject is dropped and counted, never blocking.
        for _ in 0..outbox::MAX_DEFERRED + 5 {
            s.record(reject("flood")).unwrap();
        }
        assert_eq!(s.deferred(), outbox::MAX_DEFERRED);
        assert_eq!(s.dropped_events.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn shipping_prunes_without_reusing_sequence_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let s = Store::open(&path, 100).unwrap();
        for i in 0..5 {
            s.record(acct(AcctStatus::Start, "u", &format!("s{i}")))
                .unwrap();
        }
        s.mark_shipped(5).unwrap();
        assert_eq!(s.backlog(), 0);
        assert!(s.outbox_batch(10).unwrap().is_empty());
        drop(s);
        let s = Store::open(&path, 100).unwrap();
        s.record(acct(AcctStatus::Stop, "u", "s0")).unwrap();
        let batch = s.outbox_batch(10).unwrap();
        assert_eq!(
            batch.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![6],
            "numbering continues after pruning and a restart"
        );
        // An answer for less than was sent only ships that much.
        s.record(acct(AcctStatus::Stop, "u", "s1")).unwrap();
        s.mark_shipped(6).unwrap();
        assert_eq!(
            s.outbox_batch(10)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            vec![7]
        );
    }

    #[test]
    fn a_full_outbox_refuses_accounting_and_drops_rejects_counting_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("a.db"), 2).unwrap();
        s.record(acct(AcctStatus::Start, "u", "a")).unwrap();
        s.record(acct(AcctStatus::Start, "u", "b")).unwrap();
        let e = s.record(acct(AcctStatus::Start, "u", "c")).unwrap_err();
        assert!(e.to_string().contains("journal accounting"), "{e}");
        assert_eq!(
            s.online_sessions("u"),
            2,
            "the refused Start changed nothing"
        );
        let reject = EventBody::AuthReject {
            username: "u".into(),
            nas_ip: "192.0.2.1".into(),
            reason: proto::RejectReason::WrongPassword,
            calling_station_id: None,
        };
        s.record(reject).unwrap();
        // A reject waits to be journaled; when it is, the full outbox drops it.
        assert_eq!(s.flush_deferred().unwrap(), 1);
        assert_eq!(s.dropped_events.load(Ordering::Relaxed), 1);
        assert_eq!((s.backlog(), s.deferred()), (2, 0));
        s.mark_shipped(2).unwrap();
        s.record(acct(AcctStatus::Start, "u", "c")).unwrap();
        assert_eq!(s.online_sessions("u"), 3);
    }

    #[test]
    fn a_store_from_a_newer_agent_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        drop(Store::open(&path, 10).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 9)
            .unwrap();
        assert!(matches!(
            Store::open(&path, 10),
            Err(StoreError::TooNew { found: 9, .. })
        ));
    }

    #[test]
    fn session_addresses_follow_accounting_and_the_newest_claim_wins() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("a.db"), 100).unwrap();
        s.apply(&state(StateKind::Snapshot, 1, vec![], vec![]))
            .unwrap();
        let start = |user: &str, sid: &str, ip: &str| {
            let mut e = acct(AcctStatus::Start, user, sid);
            if let EventBody::Accounting(a) = &mut e {
                a.framed_ip = Some(ip.into());
                a.framed_ipv6 = Some(format!("2001:db8::{}", &sid[1..]));
            }
            e
        };
        s.record(start("amina", "s1", "100.64.0.7")).unwrap();
        let got = s.sessions_of("amina");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].framed_ip, Some("100.64.0.7".parse().unwrap()));
        assert_eq!(got[0].framed_ipv6, Some("2001:db8::1".parse().unwrap()));
        // An interim without the address keeps it.
        let mut interim = acct(AcctStatus::InterimUpdate, "amina", "s1");
        if let EventBody::Accounting(a) = &mut interim {
            a.framed_ip = None;
        }
        s.record(interim).unwrap();
        assert_eq!(
            s.sessions_of("amina")[0].framed_ip,
            Some("100.64.0.7".parse().unwrap())
        );
        // Amina's Stop was lost; the pool gave her address to bruno.
        s.record(start("bruno", "s2", "100.64.0.7")).unwrap();
        assert!(s.sessions_of("amina").is_empty());
        assert_eq!(s.sessions_of("bruno").len(), 1);
        // Restart: the table is read back in order, so the newest claim still wins.
        drop(s);
        let s = Store::open(&dir.path().join("a.db"), 100).unwrap();
        assert!(s.sessions_of("amina").is_empty());
        assert_eq!(
            s.sessions_of("bruno")[0].framed_ip,
            Some("100.64.0.7".parse().unwrap())
        );
        s.record(acct(AcctStatus::Stop, "bruno", "s2")).unwrap();
        assert!(s.sessions_of("bruno").is_empty());
    }

    /// Enforcement is woken for the sessions of the subscribers it cuts off or shapes,
    /// and for an address taken from one of them, not for anyone else's.
    #[tokio::test]
    async fn only_sessions_enforcement_uses_wake_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("a.db"), 100).unwrap();
        let mut shaped = state(
            StateKind::Snapshot,
            1,
            vec![
                sub(1, "amina", SubscriberStatus::Active),
                sub(2, "bruno", SubscriberStatus::Suspended),
            ],
            vec![],
        );
        s.apply(&shaped).unwrap();
        let woken = || async {
            tokio::time::timeout(Duration::ZERO, s.changed().notified())
                .await
                .is_ok()
        };
        assert!(woken().await, "the state applied");
        let start = |user: &str, sid: &str, ip: &str| {
            let mut e = acct(AcctStatus::Start, user, sid);
            if let EventBody::Accounting(a) = &mut e {
                a.framed_ip = Some(ip.into());
            }
            e
        };
        s.record(start("amina", "s1", "100.64.0.1")).unwrap();
        s.record(acct(AcctStatus::Stop, "amina", "s1")).unwrap();
        s.record(start("nobody-here", "s9", "100.64.0.9")).unwrap();
        assert!(!woken().await, "an active, unshaped subscriber's sessions");
        s.record(start("bruno", "s2", "100.64.0.2")).unwrap();
        assert!(woken().await, "a suspended subscriber's address appeared");
        // Amina takes bruno's address (his Stop was lost): his blocked address goes.
        s.record(start("amina", "s3", "100.64.0.2")).unwrap();
        assert!(
            woken().await,
            "an address taken from a suspended subscriber"
        );
        assert!(s.sessions_of("bruno").is_empty());
        // With shaping on, an active subscriber with a rate is followed too.
        shaped.revision = 2;
        shaped.subscribers[0].rate = Some(proto::Rate {
            download_kbps: 10_000,
            upload_kbps: 2_000,
            burst_download_kbps: None,
            burst_upload_kbps: None,
        });
        shaped.settings.as_mut().unwrap().shaping_enabled = true;
        s.apply(&shaped).unwrap();
        assert!(woken().await);
        s.record(acct(AcctStatus::Stop, "amina", "s3")).unwrap();
        assert!(woken().await, "a shaped subscriber's address went");
    }

    #[test]
    fn brands_survive_a_restart_and_a_delta_updates_one() {
        let dir = tempfile::tempdir().unwrap();
        let brand = |t: i64, name: &str| proto::Brand {
            tenant_id: t,
            name: name.into(),
            color: Some("#0a7d32".into()),
            logo_url: None,
            contact: Some("+1 555 0100".into()),
            tagline: None,
        };
        let s = Store::open(&dir.path().join("a.db"), 100).unwrap();
        let mut snap = state(StateKind::Snapshot, 1, vec![], vec![]);
        snap.brands = vec![brand(2, "Skylink"), brand(4, "FibreCo")];
        s.apply(&snap).unwrap();
        let mut delta = state(StateKind::Delta, 2, vec![], vec![]);
        delta.brands = vec![brand(2, "Skylink Wireless")];
        s.apply(&delta).unwrap();
        drop(s);
        let s = Store::open(&dir.path().join("a.db"), 100).unwrap();
        assert_eq!(s.brand(2).unwrap().name, "Skylink Wireless");
        assert_eq!(s.brand(4).unwrap().name, "FibreCo");
        assert!(s.brand(9).is_none());
        // A snapshot replaces them whole.
        s.apply(&state(StateKind::Snapshot, 3, vec![], vec![]))
            .unwrap();
        assert!(s.brand(2).is_none());
        assert_eq!(s.snapshots(), 1);
    }

    #[test]
    fn the_digest_reports_an_unenforced_block_as_active() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("a.db"), 100).unwrap();
        s.apply(&state(
            StateKind::Snapshot,
            1,
            vec![sub(1, "amina", SubscriberStatus::Suspended)],
            vec![],
        ))
        .unwrap();
        let enforced = s.digest();
        let unenforced = s.digest_enforced(&[1].into());
        assert_ne!(enforced, unenforced);
        s.apply(&state(
            StateKind::Snapshot,
            2,
            vec![sub(1, "amina", SubscriberStatus::Active)],
            vec![],
        ))
        .unwrap();
        assert_eq!(s.digest(), unenforced);
    }
}
