//! Edge enforcement policy: which addresses the site cuts off, decided from the local
//! store, so it keeps deciding while the controller is unreachable.
//!
//! The policy is a pure function ([`decide`]) from the desired state, the online sessions
//! and the agent's clock to a [`Enforcement`]: every address to hold in the walled garden, with
//! whose it is and why. The loop ([`Edge::run`]) applies each plan through a
//! [`Firewall`] (the nftables mechanism in `enforce`, which knows nothing about
//! resellers or plans), verifies it, publishes what is enforced for the suspended page
//! and the acknowledgement digest, and asks the NAS to cut live sessions
//! ([`CoaJob`]) when a subscriber becomes blocked or changes plan.
//!
//! It wakes when the store changes (a state applied, an address learnt from
//! accounting, a NAS restart), when the next subscriber expires by the agent's own
//! clock, when the sync loop wants the result before acknowledging, and every
//! `verify_interval` to check the kernel still holds what it should.

mod firewall;
mod policy;
mod run;

pub use firewall::{ApplyStats, Firewall, FirewallError, apply};
pub use policy::{Cutoff, Enforcement, Reason, addresses, decide, standing};
pub use run::{CoaAction, CoaJob, Edge, EdgeHandle, EdgeOptions, View, dispatch_coa};
