//! Outpost agent: keeps one site working from its local store.
//!
//! # Layout
//! - [`radius`]: the RADIUS server loop (the `radius` crate is only the codec): NAS
//!   allow-list, Message-Authenticator, reply cache, PAP/CHAP/MS-CHAPv2, accounting.
//! - [`store`]: the local SQLite store (desired state at a revision, sessions, outbox);
//!   it implements [`radius::Backend`].
//! - [`shape`]: per-subscriber HTB speed shaping on the BNG (IPoE), applied with `tc -batch`.
//! - [`sync`]: long poll + apply + ack, and outbox delivery, with backoff.
//! - [`config`]: the TOML config and the enrolled identity.
//! - `main.rs`: the `outpost-agent` CLI (`enroll`, `run`, `status`).

pub mod config;
pub mod radius;
pub mod shape;
pub mod store;
pub mod sync;
