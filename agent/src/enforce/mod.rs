//! Cutting off subscribers with nftables: the mechanism, which knows addresses only.
//!
//! - [`ruleset`]: the `[enforce]` config and the table it makes, as plain data.
//! - [`nft`]: [`Enforcer`] applies it and verifies it; the skeleton through the
//!   `nftables` crate (JSON to `nft`), elements through [`netlink`].
//! - [`netlink`]: our minimal nf_tables netlink batch for set elements.
//!
//! # Why two paths
//! Measured with `cargo bench -p outpost-tests --bench enforce` (2-vCPU lab VM shared
//! with other builds, kernel 6.18, nftables 1.0.6, iptables 1.8.9 nf_tables; method in
//! `tests/benches/enforce.rs`), medians of 5 (30 for single changes):
//!
//! | 100,000 blocked addresses | time |
//! | --- | --- |
//! | `Enforcer::full`, fresh table (skeleton via nft + netlink elements + verify) | 78 ms |
//! | `Enforcer::full` over the existing table (flush + re-add, verify) | 110 ms |
//! | `nft -f` text / `nft -j -f` JSON of the same set | 253 / 193 ms |
//! | `iptables-restore` of 100k per-IP DROP rules | 1108 ms |
//! | `Enforcer::change` of one address, to the kernel's ACK / with verifying lookup | 0.053 / 0.093 ms |
//! | one `nft add element` process / one `iptables -A` (100k rules) | 15.8 / 56 ms |
//! | change call to the first dropped packet: ours / `nft` CLI / `iptables -I` | 0.05 / 4.2 / 51 ms |
//!
//! (At 1,000,000 addresses: `full` 0.85 s fresh, 1.3 s over the existing table, against
//! 1.9 s for `nft -f`; one change 0.06 ms.)
//!
//! So elements go through [`netlink`]: one process per change cannot come near a tenth
//! of a millisecond, and a 100k load through one netlink batch is ~2.5x faster than `nft`
//! parsing the same set. The skeleton changes rarely and wants nft's rule compiler, so it
//! stays with the `nftables` crate (JSON to `nft`, one atomic batch), written only when
//! missing or different (~30-60 ms even over a 100k set). Reading the table back is
//! netlink too: nft 1.0.6 fetches every set element before any `list`, even with `-t`
//! (~0.9 s at 100k), so neither verification nor the "is it current" check uses it.
//!
//! Forwarding cost is flat in the set size (a hash lookup), where an iptables chain is
//! linear: 64-byte UDP through the BNG delivered ~109k-164k pps with a 10k-100k set,
//! against 18k pps behind 10k iptables rules (9x) and 2.2k behind 100k (49x). With
//! nothing blocked ours is slower (0.75-1.1x across runs): the portal redirect needs a
//! NAT chain, which turns on conntrack in the namespace; a BNG doing NAT has it anyway.

pub mod netlink;
pub mod nft;
pub mod ruleset;

pub use nft::{Enforcer, Error, Report, Result};
pub use ruleset::{EnforceConfig, Ruleset};
