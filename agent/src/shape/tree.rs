//! The HTB tree as numbers: which class minor, shard and u32 hash-table node each
//! shaped subscriber gets, checked before anything reaches `tc`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use super::*;

pub(super) fn validate(s: &Shaped) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidRate {
            subscriber_id: s.subscriber_id,
            reason,
        })
    };
    let r = &s.rate;
    if r.download_kbps == 0 {
        return bad("download rate is 0");
    }
    if r.upload_kbps == 0 {
        return bad("upload rate is 0");
    }
    if r.burst_download_kbps.is_some_and(|b| b < r.download_kbps) {
        return bad("download burst is below the download rate");
    }
    if r.burst_upload_kbps.is_some_and(|b| b < r.upload_kbps) {
        return bad("upload burst is below the upload rate");
    }
    Ok(())
}

/// The ids in use, for assigning new ones.
#[derive(Debug, Default)]
pub(super) struct Slots {
    minors: BTreeSet<u16>,
    /// (octet 3, octet 4) -> node ids in use.
    nodes: HashMap<(u8, u8), BTreeSet<u16>>,
}

impl Slots {
    fn of(classes: &BTreeMap<i64, Class>) -> Slots {
        let mut slots = Slots::default();
        for c in classes.values() {
            slots.take(c);
        }
        slots
    }

    fn take(&mut self, c: &Class) {
        self.minors.insert(c.minor);
        self.nodes.entry(bucket(c.ip)).or_default().insert(c.node);
    }

    fn minor_for(&self, id: i64) -> Result<u16> {
        let span = CAPACITY as i64;
        let start = (id - i64::from(FIRST_SUBSCRIBER_MINOR)).rem_euclid(span);
        (0..span)
            .map(|k| FIRST_SUBSCRIBER_MINOR + ((start + k) % span) as u16)
            .find(|m| !self.minors.contains(m))
            .ok_or(Error::Full {
                wanted: self.minors.len() + 1,
            })
    }

    /// A class for a subscriber not in the set yet: its minor and node from the free
    /// ones (not taken until [`Slots::take`]).
    fn new_class(&self, s: &Shaped) -> Result<Class> {
        Ok(Class {
            subscriber_id: s.subscriber_id,
            minor: self.minor_for(s.subscriber_id)?,
            node: self.node_for(s.ip)?,
            ip: s.ip,
            rate: s.rate,
        })
    }

    fn node_for(&self, ip: Ipv4Addr) -> Result<u16> {
        let used = self.nodes.get(&bucket(ip));
        (1..=BUCKET_CAPACITY as u16)
            .find(|n| used.is_none_or(|u| !u.contains(n)))
            .ok_or(Error::BucketFull { ip })
    }
}

pub(super) fn bucket(ip: Ipv4Addr) -> (u8, u8) {
    let [_, _, o3, o4] = ip.octets();
    (o3, o4)
}

pub(super) fn check_unique_ips(classes: &BTreeMap<i64, Class>) -> Result<()> {
    let mut seen: HashMap<Ipv4Addr, i64> = HashMap::new();
    for c in classes.values() {
        if let Some(first) = seen.insert(c.ip, c.subscriber_id) {
            return Err(Error::DuplicateIp {
                ip: c.ip,
                first,
                second: c.subscriber_id,
            });
        }
    }
    Ok(())
}

pub(super) fn check_input(subs: &[Shaped]) -> Result<()> {
    let mut ids = BTreeSet::new();
    for s in subs {
        validate(s)?;
        if !ids.insert(s.subscriber_id) {
            return Err(Error::DuplicateSubscriber {
                subscriber_id: s.subscriber_id,
            });
        }
    }
    Ok(())
}

/// Assigns ids to a whole set from scratch, in ascending subscriber id order, so the
/// same set always gets the same ids.
pub fn assign(subs: &[Shaped]) -> Result<BTreeMap<i64, Class>> {
    check_input(subs)?;
    if subs.len() > CAPACITY {
        return Err(Error::Full { wanted: subs.len() });
    }
    let mut sorted: Vec<&Shaped> = subs.iter().collect();
    sorted.sort_by_key(|s| s.subscriber_id);
    let mut slots = Slots::default();
    let mut out = BTreeMap::new();
    for s in sorted {
        let c = slots.new_class(s)?;
        slots.take(&c);
        out.insert(s.subscriber_id, c);
    }
    check_unique_ips(&out)?;
    Ok(out)
}

/// The set after adding or re-rating `subs` in `current`: existing subscribers keep
/// their minor (and their node while their address stays), new ones get free ids.
pub fn assign_upsert(
    current: &BTreeMap<i64, Class>,
    subs: &[Shaped],
) -> Result<BTreeMap<i64, Class>> {
    check_input(subs)?;
    let mut next = current.clone();
    let mut slots = Slots::of(current);
    // Free the old slots of moving subscribers first, so a swap of addresses between two
    // subscribers in one call does not run out of nodes.
    for s in subs {
        if let Some(old) = current.get(&s.subscriber_id)
            && old.ip != s.ip
        {
            slots
                .nodes
                .entry(bucket(old.ip))
                .or_default()
                .remove(&old.node);
        }
    }
    for s in subs {
        let c = match current.get(&s.subscriber_id) {
            Some(old) if old.ip == s.ip => Class {
                rate: s.rate,
                ..*old
            },
            Some(old) => Class {
                node: slots.node_for(s.ip)?,
                ip: s.ip,
                rate: s.rate,
                ..*old
            },
            None => {
                if slots.minors.len() >= CAPACITY {
                    return Err(Error::Full {
                        wanted: slots.minors.len() + 1,
                    });
                }
                slots.new_class(s)?
            }
        };
        slots.take(&c);
        next.insert(s.subscriber_id, c);
    }
    check_unique_ips(&next)?;
    Ok(next)
}
