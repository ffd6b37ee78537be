//! Applies a [`Ruleset`] and the blocked addresses to the kernel, and checks the result.
//!
//! Two paths, chosen by measurement (see [`super`]): the skeleton (table, sets, chains,
//! rules) goes through the `nftables` crate as one atomic JSON batch to `nft`, and only
//! when it is missing or different; elements go through our own netlink batch
//! ([`super::netlink`]), because a `nft` process per change costs milliseconds.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use nftables::helper::{self, NftablesError};
use nftables::schema::{NfListObject, Table};
use nftables::types::NfFamily;
use std::borrow::Cow;

use super::netlink::{self, Conn, SetOp};
use super::ruleset::{ConfigError, EnforceConfig, Existing, Ruleset, SET4, SET6};

/// At most this many elements are looked up to confirm a full load; a batch is all or
/// nothing, so a sample (first, last, evenly spaced) confirms it landed.
const FULL_SAMPLE: usize = 64;
/// The errno of a delete of an element that is not there.
const ENOENT: i32 = 2;

/// What can go wrong enforcing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `[enforce]` config cannot make a ruleset.
    #[error("enforce config")]
    Config(#[from] ConfigError),
    /// Running `nft` failed or it refused our JSON.
    #[error("nft while {what}")]
    Nft {
        /// What we asked of it.
        what: &'static str,
        /// Its error, with its stderr.
        #[source]
        source: NftablesError,
    },
    /// The netlink side (elements) failed; the kernel kept its previous state.
    #[error("set elements")]
    Netlink(#[from] netlink::Error),
    /// After applying, the table is not what we wrote.
    #[error("table inet {table} differs from the ruleset: {}", .differences.join("; "))]
    Skeleton {
        /// Our table.
        table: String,
        /// What differs.
        differences: Vec<String>,
    },
    /// A set of ours does not exist.
    #[error("set {set} of table inet {table} is missing")]
    SetMissing {
        /// Our table.
        table: String,
        /// The set.
        set: &'static str,
    },
    /// Addresses that should be blocked are not in the sets.
    #[error("{} address(es) should be blocked but are not in the sets, e.g. {}", .0.len(), .0[0])]
    NotBlocked(Vec<IpAddr>),
    /// Addresses that should not be blocked are in the sets.
    #[error("{} address(es) should be unblocked but are still in the sets, e.g. {}", .0.len(), .0[0])]
    StillBlocked(Vec<IpAddr>),
    /// The same address is both added and removed in one change.
    #[error("{0} is both added and removed in one change")]
    Contradiction(IpAddr),
}

/// `Result` for this module.
pub type Result<T> = std::result::Result<T, Error>;

/// What an apply did, for logs and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Whether the skeleton had to be (re)written through `nft`.
    pub skeleton_written: bool,
    /// Elements sent for adding.
    pub added: usize,
    /// Elements sent for removal (after a full load: those no longer blocked).
    pub removed: usize,
    /// Addresses blocked after the apply.
    pub blocked: usize,
    /// Time from the call until the element batch was acknowledged by the kernel.
    pub to_kernel: Duration,
    /// Whole call, verification included.
    pub total: Duration,
}

/// The kernel side of enforcement in the current network namespace.
///
/// Dropping it leaves the table as it is: blocked subscribers stay blocked while the
/// agent restarts. Only [`Enforcer::clear`] removes the table.
#[derive(Debug)]
pub struct Enforcer {
    ruleset: Ruleset,
    conn: Conn,
    enforced: BTreeSet<IpAddr>,
}

fn set_of(a: &IpAddr) -> &'static str {
    if a.is_ipv4() { SET4 } else { SET6 }
}

fn split(addrs: impl IntoIterator<Item = IpAddr>) -> (Vec<IpAddr>, Vec<IpAddr>) {
    addrs.into_iter().partition(|a| a.is_ipv4())
}

impl Enforcer {
    /// Checks the config and opens the netlink socket; touches nothing yet.
    pub fn new(cfg: EnforceConfig) -> Result<Enforcer> {
        let ruleset = Ruleset::new(&cfg)?;
        let conn = Conn::open()?;
        Ok(Enforcer {
            ruleset,
            conn,
            enforced: BTreeSet::new(),
        })
    }

    /// The ruleset this enforcer keeps in place.
    pub fn ruleset(&self) -> &Ruleset {
        &self.ruleset
    }

    /// What the kernel holds per the last successful, verified apply.
    pub fn enforced(&self) -> &BTreeSet<IpAddr> {
        &self.enforced
    }

    /// Our table as the kernel has it (elements left out), or `None` when it is absent.
    /// Read over netlink: nft 1.0.6 fetches every set element before any listing (~0.9 s
    /// with 100k elements), even with `-t`.
    fn existing(&self) -> Result<Option<Existing>> {
        let state = self.conn.table_state(self.ruleset.table_name())?;
        Ok(state.map(|mut s| Existing {
            forward_comments: s.comments.remove("forward").unwrap_or_default(),
            chains: s.chains,
            sets: s.sets,
        }))
    }

    /// Writes the skeleton when it is missing or differs; returns whether it wrote.
    fn ensure_skeleton(&self) -> Result<bool> {
        let existing = self.existing()?;
        if existing
            .as_ref()
            .is_some_and(|e| self.ruleset.is_current(e))
        {
            return Ok(false);
        }
        let batch = self.ruleset.rewrite_batch(&existing.unwrap_or_default());
        tracing::info!(
            table = self.ruleset.table_name(),
            "writing the enforcement skeleton"
        );
        helper::apply_ruleset(&batch).map_err(|source| Error::Nft {
            what: "writing our table",
            source,
        })?;
        Ok(true)
    }

    fn verify_skeleton(&self) -> Result<()> {
        let differences = match self.existing()? {
            Some(e) => self.ruleset.differences(&e),
            None => vec!["table missing".to_string()],
        };
        if differences.is_empty() {
            return Ok(());
        }
        Err(Error::Skeleton {
            table: self.ruleset.table_name().into(),
            differences,
        })
    }

    fn verify_elements(&self, present: &[IpAddr], absent: &[IpAddr]) -> Result<()> {
        let table = self.ruleset.table_name().to_string();
        for set in [SET4, SET6] {
            if !self.conn.set_exists(&table, set)? {
                return Err(Error::SetMissing { table, set });
            }
        }
        let found = self.conn.contains(&table, set_of, present)?;
        let missing: Vec<IpAddr> = present
            .iter()
            .zip(found)
            .filter(|(_, f)| !f)
            .map(|(a, _)| *a)
            .collect();
        if !missing.is_empty() {
            return Err(Error::NotBlocked(missing));
        }
        let found = self.conn.contains(&table, set_of, absent)?;
        let still: Vec<IpAddr> = absent
            .iter()
            .zip(found)
            .filter(|(_, f)| *f)
            .map(|(a, _)| *a)
            .collect();
        if !still.is_empty() {
            return Err(Error::StillBlocked(still));
        }
        Ok(())
    }

    /// Makes the table match the ruleset with exactly `blocked` in the sets.
    ///
    /// The elements are replaced in one kernel transaction (flush both sets, add all):
    /// an address blocked before and after is never unblocked, not even for a packet. A
    /// skeleton rewrite keeps the sets and their elements.
    pub fn full(&mut self, blocked: &BTreeSet<IpAddr>) -> Result<Report> {
        let start = Instant::now();
        let skeleton_written = self.ensure_skeleton()?;
        let (v4, v6) = split(blocked.iter().copied());
        let table = self.ruleset.table_name().to_string();
        self.conn.apply(
            &table,
            &[
                (SET4, SetOp::Flush),
                (SET6, SetOp::Flush),
                (SET4, SetOp::Add(&v4)),
                (SET6, SetOp::Add(&v6)),
            ],
        )?;
        let to_kernel = start.elapsed();
        let removed = self.enforced.difference(blocked).count();
        self.enforced.clear();
        if skeleton_written {
            self.verify_skeleton()?;
        }
        let sample = sample(blocked, FULL_SAMPLE);
        self.verify_elements(&sample, &[])?;
        self.enforced = blocked.clone();
        let report = Report {
            skeleton_written,
            added: blocked.len(),
            removed,
            blocked: blocked.len(),
            to_kernel,
            total: start.elapsed(),
        };
        tracing::info!(
            table,
            blocked = report.blocked,
            skeleton_written,
            ms = report.total.as_secs_f64() * 1e3,
            "enforcement reconciled"
        );
        Ok(report)
    }

    /// Adds and removes elements in one kernel transaction, then looks each one up.
    /// The skeleton must be in place (after [`Enforcer::full`]); when this fails (say
    /// someone deleted our table), the kernel kept its previous state and a
    /// [`Enforcer::full`] repairs everything. Removing an address the kernel does not
    /// hold is not an error.
    pub fn change(&mut self, add: &[IpAddr], remove: &[IpAddr]) -> Result<Report> {
        let start = Instant::now();
        let add_set: BTreeSet<IpAddr> = add.iter().copied().collect();
        let remove_set: BTreeSet<IpAddr> = remove.iter().copied().collect();
        if let Some(a) = add_set.intersection(&remove_set).next() {
            return Err(Error::Contradiction(*a));
        }
        let table = self.ruleset.table_name().to_string();
        let (a4, a6) = split(add_set.iter().copied());
        let (r4, r6) = split(remove_set.iter().copied());
        let batch = |r4: &[IpAddr], r6: &[IpAddr]| {
            self.conn.apply(
                &table,
                &[
                    (SET4, SetOp::Delete(r4)),
                    (SET6, SetOp::Delete(r6)),
                    (SET4, SetOp::Add(&a4)),
                    (SET6, SetOp::Add(&a6)),
                ],
            )
        };
        match batch(&r4, &r6) {
            Ok(()) => {}
            // Deleting an absent element fails the whole batch; that happens when the
            // kernel drifted from what we think it holds. Drop those and retry once.
            Err(netlink::Error::Refused { errno: ENOENT, .. }) if !remove_set.is_empty() => {
                let asked: Vec<IpAddr> = r4.iter().chain(&r6).copied().collect();
                let present = self.conn.contains(&table, set_of, &asked)?;
                let keep: Vec<IpAddr> = asked
                    .iter()
                    .zip(present)
                    .filter(|(_, p)| *p)
                    .map(|(a, _)| *a)
                    .collect();
                tracing::warn!(
                    table,
                    absent = asked.len() - keep.len(),
                    "unblocking addresses the kernel did not hold"
                );
                let (k4, k6) = split(keep);
                batch(&k4, &k6)?;
            }
            Err(e) => return Err(e.into()),
        }
        let to_kernel = start.elapsed();
        let (add_v, rem_v): (Vec<IpAddr>, Vec<IpAddr>) = (
            add_set.iter().copied().collect(),
            remove_set.iter().copied().collect(),
        );
        // Until the lookups confirm it, we no longer know what the kernel holds for these.
        for a in add_set.iter().chain(&remove_set) {
            self.enforced.remove(a);
        }
        self.verify_elements(&add_v, &rem_v)?;
        self.enforced.extend(add_v);
        Ok(Report {
            skeleton_written: false,
            added: add_set.len(),
            removed: remove_set.len(),
            blocked: self.enforced.len(),
            to_kernel,
            total: start.elapsed(),
        })
    }

    /// Checks that table, sets, chains and rules are in place and current, and that
    /// `present` are in the sets and `absent` are not, looking up only those elements
    /// (netlink dumps of sets/chains/rules without elements, single-element lookups).
    pub fn verify(&self, present: &[IpAddr], absent: &[IpAddr]) -> Result<()> {
        self.verify_skeleton()?;
        self.verify_elements(present, absent)
    }

    /// Removes table `inet <table>` on purpose; nothing else. Absent already is fine.
    pub fn clear(table: &str) -> Result<()> {
        let probe = Ruleset::new(&EnforceConfig {
            table: table.into(),
            ..EnforceConfig::default()
        })?;
        if Conn::open()?.table_state(table)?.is_none() {
            return Ok(());
        }
        let mut batch = nftables::batch::Batch::new();
        batch.delete(NfListObject::Table(Table {
            family: NfFamily::INet,
            name: Cow::Owned(probe.table_name().to_string()),
            handle: None,
        }));
        helper::apply_ruleset(&batch.to_nftables()).map_err(|source| Error::Nft {
            what: "deleting our table",
            source,
        })?;
        tracing::warn!(table, "enforcement table removed");
        Ok(())
    }
}

/// Up to `n` elements spread over `set`, always including the first and last.
fn sample(set: &BTreeSet<IpAddr>, n: usize) -> Vec<IpAddr> {
    if set.len() <= n {
        return set.iter().copied().collect();
    }
    let step = set.len().div_ceil(n - 1);
    let mut out: Vec<IpAddr> = set.iter().step_by(step).copied().collect();
    if let Some(last) = set.iter().next_back()
        && out.last() != Some(last)
    {
        out.push(*last);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent moves the enforcer onto a blocking thread.
    #[test]
    fn enforcer_is_send() {
        fn send<T: Send>() {}
        send::<Enforcer>();
    }

    #[test]
    fn sample_spans_the_set() {
        let set: BTreeSet<IpAddr> = (0..1000u32)
            .map(|i| IpAddr::from(i.to_be_bytes()))
            .collect();
        let s = sample(&set, 64);
        assert!(s.len() <= 65 && s.len() >= 32, "{}", s.len());
        assert_eq!(s.first(), set.iter().next());
        assert_eq!(s.last(), set.iter().next_back());
        assert_eq!(sample(&set, 2000).len(), 1000);
    }
}
