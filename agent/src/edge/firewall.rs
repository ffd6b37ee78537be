//! The kernel side of enforcement, as a trait: nftables in production
//! ([`crate::enforce::Enforcer`]), an in-memory set in unit tests. [`apply`] brings a
//! firewall to a wanted set, whole or by difference, and verifies it.

use std::collections::BTreeSet;
use std::net::IpAddr;

/// The kernel side: nftables in production (`enforce`), an in-memory set in unit tests.
pub trait Firewall: Send + 'static {
    /// Make the kernel hold exactly `blocked`, atomically, and confirm it landed.
    fn full(&mut self, blocked: &BTreeSet<IpAddr>) -> Result<(), FirewallError>;
    /// Add and remove individual addresses, and confirm each one.
    fn change(&mut self, add: &[IpAddr], remove: &[IpAddr]) -> Result<(), FirewallError>;
    /// Check the table is in place and these addresses are (not) in it.
    fn verify(&mut self, present: &[IpAddr], absent: &[IpAddr]) -> Result<(), FirewallError>;
    /// What the kernel holds per the last verified apply.
    fn enforced(&self) -> &BTreeSet<IpAddr>;
}

part_error!(
    /// A [`Firewall`] failed.
    FirewallError,
    "firewall"
);

impl Firewall for crate::enforce::Enforcer {
    fn full(&mut self, blocked: &BTreeSet<IpAddr>) -> Result<(), FirewallError> {
        crate::enforce::Enforcer::full(self, blocked)
            .map(|_| ())
            .map_err(|e| FirewallError::new("full reconcile", e))
    }

    fn change(&mut self, add: &[IpAddr], remove: &[IpAddr]) -> Result<(), FirewallError> {
        crate::enforce::Enforcer::change(self, add, remove)
            .map(|_| ())
            .map_err(|e| FirewallError::new("element change", e))
    }

    fn verify(&mut self, present: &[IpAddr], absent: &[IpAddr]) -> Result<(), FirewallError> {
        crate::enforce::Enforcer::verify(self, present, absent)
            .map_err(|e| FirewallError::new("verify", e))
    }

    fn enforced(&self) -> &BTreeSet<IpAddr> {
        crate::enforce::Enforcer::enforced(self)
    }
}

/// Counts of one apply.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyStats {
    pub added: usize,
    pub removed: usize,
}

/// Brings `fw` to `wanted`: whole when `full`, else by the difference from what it
/// holds; then verifies what was touched.
pub fn apply(
    fw: &mut dyn Firewall,
    wanted: &BTreeSet<IpAddr>,
    full: bool,
) -> Result<ApplyStats, FirewallError> {
    let before = fw.enforced().clone();
    if full {
        // `full` confirms its own load; the batch is all or nothing.
        fw.full(wanted)?;
        return Ok(ApplyStats {
            added: wanted.difference(&before).count(),
            removed: before.difference(wanted).count(),
        });
    }
    let add: Vec<IpAddr> = wanted.difference(&before).copied().collect();
    let remove: Vec<IpAddr> = before.difference(wanted).copied().collect();
    if !add.is_empty() || !remove.is_empty() {
        fw.change(&add, &remove)?;
    }
    // `change` confirmed what it touched; a sample of the rest shows the table is still
    // in place: a set flushed by hand (or by `nft flush ruleset`) fails here and gets
    // rebuilt.
    let sample: Vec<IpAddr> = wanted
        .iter()
        .step_by((wanted.len() / 32).max(1))
        .copied()
        .collect();
    fw.verify(&sample, &[])?;
    Ok(ApplyStats {
        added: add.len(),
        removed: remove.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// An in-memory firewall: stands in for nftables in unit tests of the policy (the
    /// real one is exercised in the netns lab tests).
    #[derive(Default)]
    struct MemoryFirewall {
        set: BTreeSet<IpAddr>,
        fail_next: bool,
        calls: Vec<&'static str>,
    }

    impl Firewall for MemoryFirewall {
        fn full(&mut self, blocked: &BTreeSet<IpAddr>) -> Result<(), FirewallError> {
            self.calls.push("full");
            if std::mem::take(&mut self.fail_next) {
                return Err(FirewallError::msg("nft refused the batch"));
            }
            self.set = blocked.clone();
            Ok(())
        }
        fn change(&mut self, add: &[IpAddr], remove: &[IpAddr]) -> Result<(), FirewallError> {
            self.calls.push("change");
            if std::mem::take(&mut self.fail_next) {
                return Err(FirewallError::msg("netlink said no"));
            }
            self.set.extend(add);
            for r in remove {
                self.set.remove(r);
            }
            Ok(())
        }
        fn verify(&mut self, present: &[IpAddr], absent: &[IpAddr]) -> Result<(), FirewallError> {
            if present.iter().all(|p| self.set.contains(p))
                && absent.iter().all(|a| !self.set.contains(a))
            {
                Ok(())
            } else {
                Err(FirewallError::msg("verify mismatch"))
            }
        }
        fn enforced(&self) -> &BTreeSet<IpAddr> {
            &self.set
        }
    }

    #[test]
    fn apply_rebuilds_whole_then_patches_the_difference() {
        let mut fw = MemoryFirewall::default();
        let a: BTreeSet<IpAddr> = [ip("100.64.0.1"), ip("100.64.0.2")].into();
        assert_eq!(
            apply(&mut fw, &a, true).unwrap(),
            ApplyStats {
                added: 2,
                removed: 0
            }
        );
        let b: BTreeSet<IpAddr> = [ip("100.64.0.2"), ip("2001:db8::1")].into();
        assert_eq!(
            apply(&mut fw, &b, false).unwrap(),
            ApplyStats {
                added: 1,
                removed: 1
            }
        );
        assert_eq!(fw.set, b);
        // Nothing to do: no kernel call, only a verify.
        apply(&mut fw, &b, false).unwrap();
        assert_eq!(fw.calls, ["full", "change"]);
        fw.fail_next = true;
        let c: BTreeSet<IpAddr> = [ip("100.64.0.3")].into();
        assert!(apply(&mut fw, &c, false).is_err());
        assert_eq!(fw.set, b, "a failed change leaves what was enforced");
    }
}
