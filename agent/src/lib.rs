//! Outpost agent: keeps one site working from its local store.
//!
//! # Layout
//! - [`enforce`]: nftables enforcement: the ruleset as data, the kernel side (nft +
//!   our netlink batch for set elements).
//! - [`radius`]: the RADIUS server loop (the `radius` crate is only the codec): NAS
//!   allow-list, Message-Authenticator, reply cache, PAP/CHAP/MS-CHAPv2, accounting.
//! - [`coa`]: the RFC 5176 client: Disconnect-Request and CoA-Request to a NAS, with
//!   retransmission and verified answers, as [`outpost_protocol::CoaEvent`]s.
//! - [`store`]: the local SQLite store (desired state at a revision, sessions, outbox);
//!   it implements [`radius::Backend`].
//! - [`shape`]: per-subscriber HTB speed shaping on the BNG (IPoE), applied with `tc -batch`.
//! - [`sync`]: long poll + apply + ack, and outbox delivery, with backoff.
//! - [`edge`]: the enforcement policy loop: who is cut off (status, the agent's clock,
//!   addresses from accounting), applied through a firewall, CoA jobs for the NAS.
//! - [`portal`]: the "service suspended" page blocked subscribers' HTTP lands on.
//! - [`config`]: the TOML config and the enrolled identity.
//! - `main.rs`: the `outpost-agent` CLI (`enroll`, `run`, `status`).

pub mod clock;
pub mod coa;
pub mod config;
pub mod edge;
pub mod enforce;
pub mod portal;
pub mod radius;
pub mod shape;
pub mod site;
pub mod store;
pub mod sync;

/// Displays an error with its causes, `a: b: c`, for one-line logs.
pub(crate) struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}
