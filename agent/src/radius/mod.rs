//! The site's RADIUS server: the NAS asks, the agent answers from its local store.
//!
//! The `radius` crate is only the codec (packet framing, attribute helpers, the
//! RFC 2865 response authenticator). Everything a server needs on top of it is here:
//!
//! - [`server`]: the UDP loops ([`Server`]), one per socket (auth 1812-style, acct
//!   1813-style, or one socket for both).
//! - [`handler`]: [`Handler::handle`], one datagram in, at most one datagram out. The
//!   server and the fuzz target (`agent/fuzz`) call this same function.
//! - [`access`]: Access-Request decisions (PAP, CHAP, MS-CHAPv2, status, expiry, MAC
//!   binding, session limit) and the Accept attributes in each NAS dialect.
//! - [`accounting`]: Accounting-Request parsing into [`outpost_protocol::Accounting`].
//! - `cache`: the reply cache that answers retransmissions without running them again.
//! - The crypto, as pure functions: [`pap`], [`chap`], [`mschapv2`], [`authenticator`]
//!   (Message-Authenticator, request and response authenticators).
//! - `memory`: `MemoryBackend`, an in-memory [`Backend`] for the unit tests (built
//!   only for them; integration tests and the fuzz target bring their own backend).
//!
//! The module knows nothing about SQLite or sync: it reaches the rest of the agent
//! through [`Backend`].

// House rule: every public item is documented; the compiler keeps us to it here.
#![warn(missing_docs)]

pub mod access;
pub mod accounting;
pub mod attrs;
pub mod authenticator;
mod cache;
pub mod chap;
pub mod handler;
#[cfg(test)]
pub(crate) mod memory;
pub mod mschapv2;
pub mod pap;
pub mod server;
pub mod stats;

use std::net::IpAddr;
use std::sync::Arc;

use outpost_protocol::{EventBody, NasState, SiteSettings, SubscriberState};

pub use handler::{Handler, Listener};
pub use server::{Config, Server};
pub use stats::{Stats, StatsSnapshot};

/// What the RADIUS server needs from the rest of the agent: the synced desired state,
/// the online-session table and the journal.
///
/// Every method is synchronous and may block (a journal write waits for `fsync`). The
/// server therefore calls it only from its own OS threads, never on an async worker:
/// a slow disk delays only the thread waiting on it, while the socket's other threads
/// ([`Config::threads_per_socket`]) keep answering.
///
/// The lookups ([`Backend::nas`], [`Backend::subscriber`]) are on every request's
/// path: they hand out shared references rather than copies.
pub trait Backend: Send + Sync + 'static {
    /// The NAS whose requests come from `ip`, if it is in the synced NAS list.
    fn nas(&self, ip: IpAddr) -> Option<Arc<NasState>>;

    /// The subscriber whose login is `username` (exact match), if this site serves it.
    fn subscriber(&self, username: &str) -> Option<Arc<SubscriberState>>;

    /// The site's settings.
    fn settings(&self) -> SiteSettings;

    /// How many sessions of `username` are online now, by the session table.
    fn online_sessions(&self, username: &str) -> u32;

    /// Durably journal `event` and, for [`EventBody::Accounting`], apply it to the
    /// session table (Start and Interim-Update put the session online, Stop takes it
    /// off), in one transaction. Returns only once the record is durable: the server
    /// acknowledges accounting to the NAS after this returns `Ok`, and not at all
    /// otherwise, so the NAS retransmits.
    ///
    /// [`EventBody::NasSessionsClosed`] goes through [`Backend::close_nas_sessions`],
    /// which knows how many sessions it closed.
    fn record(&self, event: EventBody) -> Result<(), BackendError>;

    /// [`Backend::record`] for several events at once, one result each, in order: the
    /// server hands over every accounting record of a batch of datagrams together, so a
    /// backend that commits in groups makes them durable with one write. Returns only
    /// once each `Ok` is durable.
    fn record_batch(&self, events: Vec<EventBody>) -> Vec<Result<(), BackendError>> {
        events.into_iter().map(|e| self.record(e)).collect()
    }

    /// Close every online session of the NAS at `nas_ip` and journal one
    /// [`EventBody::NasSessionsClosed`] with the number closed and `reason`, in one
    /// transaction; return that number once it is durable. Used for
    /// Accounting-On/Accounting-Off, when the NAS says it (re)started.
    fn close_nas_sessions(&self, nas_ip: &str, reason: &str) -> Result<u32, BackendError>;
}

part_error!(
    /// A [`Backend`] could not make a record durable.
    BackendError,
    "RADIUS backend"
);

/// Errors of the RADIUS module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket could not be read or written.
    #[error("RADIUS socket: {op}")]
    Io {
        /// The operation that failed (`recv`, `send`, `local_addr`).
        op: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The `radius` codec refused a datagram or a reply.
    #[error("RADIUS codec")]
    Codec(#[source] radius::core::packet::PacketError),
    /// A datagram is not a packet this server can use; it is dropped and counted.
    #[error("malformed RADIUS packet: {0}")]
    Malformed(&'static str),
    /// The backend failed to make a record durable.
    #[error("RADIUS backend")]
    Backend(#[source] BackendError),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Compares two secrets-derived byte strings in time independent of where they differ,
/// so an attacker timing our answers learns nothing about a correct response.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn backend_error_keeps_its_cause() {
        let io = std::io::Error::other("disk full");
        let e = Error::Backend(BackendError::new("journal write", io));
        let chain: Vec<String> =
            std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                .map(|e| e.to_string())
                .collect();
        assert_eq!(
            chain,
            [
                "RADIUS backend",
                "RADIUS backend: journal write",
                "disk full"
            ]
        );
    }
}
