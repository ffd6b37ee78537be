//! The desired state: applied from the controller in one transaction, held in memory
//! for lookups, and hashed for the acknowledgement digest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use outpost_protocol as proto;
use rusqlite::params;
use sha2::{Digest, Sha256};

use super::{Result, Store, set_meta};

/// The desired state held in memory for lookups.
#[derive(Default)]
pub(super) struct Desired {
    /// Shared with the RADIUS threads, which take a reference per request, not a copy.
    pub(super) subscribers: HashMap<String, Arc<proto::SubscriberState>>,
    /// Subscriber id → username, so a delta can find a renamed or removed row.
    pub(super) usernames: HashMap<i64, String>,
    pub(super) nas: HashMap<IpAddr, Arc<proto::NasState>>,
    pub(super) settings: Option<proto::SiteSettings>,
    pub(super) brands: HashMap<i64, proto::Brand>,
}
impl Store {
    /// Applies a state from the controller in one transaction: a snapshot replaces the
    /// desired state whole, a delta upserts and removes rows.
    pub fn apply(&self, s: &proto::StateResponse) -> Result<()> {
        if s.kind == proto::StateKind::Unchanged {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if s.kind == proto::StateKind::Snapshot {
            tx.execute("DELETE FROM subscribers", [])?;
            tx.execute("DELETE FROM nas", [])?;
            tx.execute("DELETE FROM brands", [])?;
        }
        {
            let mut up = tx.prepare_cached(
                "INSERT INTO subscribers (id, username, state) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET username = excluded.username, state = excluded.state",
            )?;
            let mut clash =
                tx.prepare_cached("DELETE FROM subscribers WHERE username = ?1 AND id <> ?2")?;
            for sub in &s.subscribers {
                // A username freed by one subscriber and taken by another in the same batch.
                clash.execute(params![sub.username, sub.id])?;
                up.execute(params![sub.id, sub.username, serde_json::to_string(sub)?])?;
            }
            let mut del = tx.prepare_cached("DELETE FROM subscribers WHERE id = ?1")?;
            for id in &s.removed_subscribers {
                del.execute([id])?;
            }
            let mut up = tx.prepare_cached(
                "INSERT INTO nas (id, ip, state) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET ip = excluded.ip, state = excluded.state",
            )?;
            let mut clash = tx.prepare_cached("DELETE FROM nas WHERE ip = ?1 AND id <> ?2")?;
            for n in &s.nas {
                clash.execute(params![n.ip, n.id])?;
                up.execute(params![n.id, n.ip, serde_json::to_string(n)?])?;
            }
            let mut del = tx.prepare_cached("DELETE FROM nas WHERE id = ?1")?;
            for id in &s.removed_nas {
                del.execute([id])?;
            }
            let mut up = tx.prepare_cached(
                "INSERT INTO brands (tenant_id, state) VALUES (?1, ?2)
                 ON CONFLICT (tenant_id) DO UPDATE SET state = excluded.state",
            )?;
            for b in &s.brands {
                up.execute(params![b.tenant_id, serde_json::to_string(b)?])?;
            }
        }
        if let Some(settings) = &s.settings {
            set_meta(&tx, "settings", &serde_json::to_string(settings)?)?;
        }
        super::notices::apply(&tx, s)?;
        set_meta(&tx, "revision", &s.revision.to_string())?;
        tx.commit()?;
        drop(conn);
        if s.kind == proto::StateKind::Snapshot {
            self.reload()?;
            self.snapshots.fetch_add(1, Ordering::AcqRel);
        } else {
            self.desired
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .patch(s);
            self.revision.store(s.revision, Ordering::Release);
        }
        self.changed.notify_one();
        Ok(())
    }

    /// Wakes after something enforcement may care about changed: a state applied, a
    /// session address learnt or released by a subscriber it cuts off or shapes, a NAS
    /// restart.
    pub fn changed(&self) -> &tokio::sync::Notify {
        &self.changed
    }

    /// The site's settings; before the first sync, interim updates every 300 s and
    /// shaping by the NAS.
    pub fn settings(&self) -> proto::SiteSettings {
        self.desired
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .settings
            .clone()
            .unwrap_or(proto::SiteSettings {
                acct_interim_interval_secs: 300,
                shaping_enabled: false,
            })
    }

    /// Snapshots applied since the store was opened.
    pub fn snapshots(&self) -> u64 {
        self.snapshots.load(Ordering::Acquire)
    }

    /// Every subscriber of the desired state, shared (no copies of the rows).
    pub fn subscribers(&self) -> Vec<Arc<proto::SubscriberState>> {
        let d = self.desired.read().unwrap_or_else(|p| p.into_inner());
        d.subscribers.values().cloned().collect()
    }

    /// The subscriber with this id.
    pub fn subscriber_by_id(&self, id: i64) -> Option<proto::SubscriberState> {
        let d = self.desired.read().unwrap_or_else(|p| p.into_inner());
        let name = d.usernames.get(&id)?;
        d.subscribers.get(name).map(|s| (**s).clone())
    }

    /// The brand shown to `tenant_id`'s subscribers, if the controller sent one.
    pub fn brand(&self, tenant_id: i64) -> Option<proto::Brand> {
        let d = self.desired.read().unwrap_or_else(|p| p.into_inner());
        d.brands.get(&tenant_id).cloned()
    }

    /// The NAS with this address in the desired state.
    pub fn nas_by_ip(&self, ip: &str) -> Option<proto::NasState> {
        let ip: IpAddr = ip.parse().ok()?;
        let d = self.desired.read().unwrap_or_else(|p| p.into_inner());
        d.nas.get(&ip).map(|n| (**n).clone())
    }
    /// Hex SHA-256 of what the agent enforces, by the protocol's canonical form.
    pub fn digest(&self) -> String {
        self.digest_enforced(&std::collections::HashSet::new())
    }

    /// Like [`Store::digest`], but the subscribers in `unenforced` (cut off by their
    /// status, yet their block is not in the kernel) are reported as active: that is
    /// what the site actually does to them, and the controller sees the drift.
    pub fn digest_enforced(&self, unenforced: &std::collections::HashSet<i64>) -> String {
        let d = self.desired.read().unwrap_or_else(|p| p.into_inner());
        let subs: Vec<proto::SubscriberState> = d
            .subscribers
            .values()
            .map(|s| {
                let mut s = (**s).clone();
                if unenforced.contains(&s.id) {
                    s.status = proto::SubscriberStatus::Active;
                }
                s
            })
            .collect();
        let nas: Vec<proto::NasState> = d.nas.values().map(|n| (**n).clone()).collect();
        hex::encode(Sha256::digest(proto::digest_input(&subs, &nas).as_bytes()))
    }

    /// How many subscribers and NAS the desired state holds.
    pub fn counts(&self) -> (usize, usize) {
        let d = self.desired.read().unwrap_or_else(|p| p.into_inner());
        (d.subscribers.len(), d.nas.len())
    }
}

impl Desired {
    /// Patches the in-memory copy with a delta the file has already committed, so a
    /// one-subscriber change costs one row, not a re-read of the whole site.
    fn patch(&mut self, s: &proto::StateResponse) {
        for id in &s.removed_subscribers {
            if let Some(name) = self.usernames.remove(id) {
                self.subscribers.remove(&name);
            }
        }
        for sub in &s.subscribers {
            if let Some(old) = self.usernames.insert(sub.id, sub.username.clone()) {
                self.subscribers.remove(&old);
            }
            // The username may have belonged to another id until this batch.
            if let Some(prev) = self
                .subscribers
                .insert(sub.username.clone(), Arc::new(sub.clone()))
                && prev.id != sub.id
            {
                self.usernames.remove(&prev.id);
            }
        }
        for id in &s.removed_nas {
            self.nas.retain(|_, n| n.id != *id);
        }
        for n in &s.nas {
            self.nas.retain(|_, old| old.id != n.id);
            if let Ok(ip) = n.ip.parse() {
                self.nas.insert(ip, Arc::new(n.clone()));
            }
        }
        if let Some(settings) = &s.settings {
            self.settings = Some(settings.clone());
        }
        for b in &s.brands {
            self.brands.insert(b.tenant_id, b.clone());
        }
    }
}
