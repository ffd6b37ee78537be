//! Cutting off subscribers with nftables: the mechanism, which knows addresses only.
//!
//! - [`ruleset`]: the `[enforce]` config and the table it makes, as plain data.
//! - [`nft`]: [`Enforcer`] applies it and verifies it; the skeleton through the
//!   `nftables` crate (JSON to `nft`), elements through [`netlink`].
//! - [`netlink`]: our minimal nf_tables netlink batch for set elements.
//!
//! # Why two paths
//! Measured on the 2-vCPU lab VM (`cargo bench -p outpost-tests --bench enforce`, see
//! `tests/benches/enforce.rs` for the figures and method): a `nft` process costs ~3-7 ms
//! before it does anything, and loading 100k elements as JSON through `nft -j -f` costs
//! ~470 ms, most of it parsing. The same 100k through one netlink batch is several times
//! faster, and one element change costs well under a millisecond, where the `nft` CLI
//! costs ~7 ms. The skeleton changes rarely and benefits from nft's rule compiler, so it
//! stays with the `nftables` crate; it is only rewritten when missing or different.

pub mod netlink;
pub mod nft;
pub mod ruleset;

pub use nft::{Enforcer, Error, Report, Result};
pub use ruleset::{EnforceConfig, Ruleset};
