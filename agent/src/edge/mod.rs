//! Edge enforcement: which addresses the site cuts off, decided from the local store,
//! so it keeps deciding while the controller is unreachable.
//!
//! - `policy.rs`: a pure function ([`decide`]) from the desired state, the online
//!   sessions and the agent's clock to an [`Enforcement`]: every address to hold in the
//!   walled garden, with whose it is and why.
//! - `firewall.rs`: the [`Firewall`] the loop applies through (the nftables mechanism
//!   in `enforce`, which knows nothing about resellers or plans), and [`apply`].
//! - `run.rs`: the loop ([`Edge::run`]) applies each enforcement, verifies it, shapes
//!   when the site shapes, publishes what is enforced (the suspended page's view, and
//!   [`crate::sync::Enforced`] on a watch channel for the acknowledgement), and asks the
//!   NAS to cut live sessions ([`CoaJob`]) when a subscriber becomes blocked or its
//!   plan's rate changes.
//!
//! The loop wakes when the store changes (a state applied, an address learnt from
//! accounting, a NAS restart), when the next subscriber expires by the agent's own
//! clock, when asked for a reconcile ([`EdgeHandle::reconcile`]), and every
//! `verify_interval` to check the kernel still holds what it should.

mod firewall;
mod policy;
mod run;

pub use firewall::{ApplyStats, Firewall, FirewallError, apply};
pub use policy::{Cutoff, Enforcement, Reason, addresses, decide, standing};
pub use run::{CoaAction, CoaJob, Edge, EdgeHandle, EdgeOptions, EdgeStats, View, dispatch_coa};
