//! Outpost agent: keeps one site working from its local store.
//!
//! # Layout
//! - [`site`]: [`site::Site::start`] wires one whole site (store, enforcement loop, CoA
//!   dispatcher, suspended page, sync, outbox delivery, RADIUS listeners) and returns a
//!   [`site::SiteHandle`] with the bound addresses, a status read and `shutdown()`.
//! - [`store`]: the local SQLite store; `store/mod.rs` opens and migrates it,
//!   `desired.rs` applies and holds the desired state at a revision (and its digest),
//!   `sessions.rs` the PPP/IPoE sessions online by accounting (and the
//!   [`radius::Backend`] it implements), `outbox.rs` the journal of events.
//! - [`radius`]: the RADIUS server loop (the `radius` crate is only the codec): NAS
//!   allow-list, Message-Authenticator, reply cache, PAP/CHAP/MS-CHAPv2, accounting.
//! - [`edge`]: enforcement. `policy.rs` decides who is cut off ([`edge::decide`]:
//!   status, the agent's clock, addresses from accounting) as an [`edge::Enforcement`];
//!   `firewall.rs` is the [`edge::Firewall`] trait the kernel side implements and
//!   [`edge::apply`]; `run.rs` the loop that applies, shapes, publishes what it
//!   enforces on a watch channel ([`sync::Enforced`]) and queues CoA jobs.
//! - [`enforce`]: nftables: the ruleset as data, the kernel side (nft + our netlink
//!   batch for set elements).
//! - [`shape`]: per-subscriber HTB speed shaping on the BNG (IPoE): `tree.rs` the class
//!   and filter numbering, `tc.rs` the tree as operations (and their `tc` text),
//!   `netlink.rs` those as rtnetlink messages, `shaper.rs` the [`shape::Shaper`].
//! - [`coa`]: the RFC 5176 client: Disconnect-Request and CoA-Request to a NAS, with
//!   retransmission and verified answers, as [`outpost_protocol::CoaEvent`]s.
//! - [`sync`]: long poll + apply + ack (with what the edge published), and outbox
//!   delivery, with backoff. It reads the edge's channel and imports nothing of it.
//! - [`wan`]: WAN checks: our ICMP echo engine (one raw socket per family) and TCP
//!   connect probes of every subscriber's CPE, state per target, transitions journaled.
//! - [`portal`]: the "service suspended" page blocked subscribers' HTTP lands on.
//! - [`wg`]: the agent's end of the management tunnel (`outpost-wg` runs it): brought
//!   up by [`site::Site::start`] from `identity.json` alone, read by `status`; its key
//!   rotated make before break by [`wg::run_rotation`] (`outpost-agent rotate-key`).
//! - [`health`]: `/healthz`, `/readyz` and `/metrics` (Prometheus text) on
//!   `[metrics] listen`, loopback or the tunnel address only; the counters themselves
//!   stay in the parts that make them and are read at scrape time.
//! - [`config`]: the TOML config and the enrolled identity.
//! - [`clock`]: the one wall clock expiry, journal and sessions are judged by.
//! - `main.rs`: the `outpost-agent` CLI (`enroll`, `run`, `status`,
//!   `enforcement clear`); `run` is [`site::Site::start`] until Ctrl-C.

/// An error type for a part the agent drives through a trait (the firewall, the RADIUS
/// backend): what it was doing and, when there is one, why it failed. The parts'
/// errors differ only in their name and `Display` prefix, so they are made here.
macro_rules! part_error {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Debug)]
        pub struct $name {
            /// What it was doing.
            pub message: String,
            /// Why it failed.
            pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
        }

        impl $name {
            /// An error with a cause, e.g. a SQLite error, kept for the log's cause chain.
            pub fn new(
                message: impl Into<String>,
                source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
            ) -> Self {
                Self {
                    message: message.into(),
                    source: Some(source.into()),
                }
            }

            /// An error without an underlying cause.
            pub fn msg(message: impl Into<String>) -> Self {
                Self {
                    message: message.into(),
                    source: None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!($prefix, ": {}"), self.message)
            }
        }

        impl std::error::Error for $name {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.source
                    .as_deref()
                    .map(|e| e as &(dyn std::error::Error + 'static))
            }
        }
    };
}

pub mod clock;
pub mod coa;
pub mod config;
pub mod edge;
pub mod enforce;
pub mod health;
pub mod portal;
pub mod radius;
pub mod shape;
pub mod site;
pub mod store;
pub mod sync;
pub mod wan;
pub mod wg;

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
