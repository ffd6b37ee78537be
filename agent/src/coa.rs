//! The agent as an RFC 5176 client: Disconnect-Request and CoA-Request to a NAS.
//!
//! This is mechanism only: who is disconnected and when is the policy loop's business.
//! It hands a [`NasState`], an [`OnlineSession`] and an [`Action`] to [`CoaClient::send`] and
//! journals the [`CoaEvent`] it gets back as `EventBody::Coa`.
//!
//! # The packet
//! [`build_request`] identifies the NAS by NAS-IP-Address (NAS-IPv6-Address for an IPv6
//! NAS), the address it sends RADIUS from, and the session by User-Name, Acct-Session-Id
//! and, when known, Framed-IP-Address (RFC 5176 §3; accel-ppp and others match the NAS
//! identification before the session). A CoA-Request adds the new rate in the NAS's
//! dialect, with the same functions the Access-Accept uses
//! ([`access::mikrotik_rate_limit`], [`access::accel_ppp_filter_id`]). Every request
//! carries a Message-Authenticator. Both are computed by
//! [`authenticator::sign_request`]: the Message-Authenticator first, as HMAC-MD5 over
//! the packet with the Authenticator field and its own value zeroed (RFC 5176 §3.3 read
//! with RFC 5080 §2.2.2, which is what FreeRADIUS checks), then the Request
//! Authenticator `MD5(Code + Identifier + Length + 16 zero octets + Attributes +
//! Secret)` (RFC 5176 §2.3), which covers the Message-Authenticator.
//!
//! # Retransmission and matching
//! One UDP socket serves every NAS. A request is resent byte for byte (same Identifier,
//! same authenticator, so the NAS can spot the duplicate) after
//! [`CoaConfig::first_timeout`], then after twice that, and so on, up to
//! [`CoaConfig::attempts`] sends in all. Answers are matched by source address (IP and
//! port) and Identifier, and accepted only if their Response Authenticator (and
//! Message-Authenticator, when present) verify with the NAS secret and their code
//! answers the request's. Anything else is dropped and counted in [`CoaStats`].
//!
//! Identifiers are 8 bits per destination: at most 256 requests are in flight to one
//! NAS address and port, and a 257th waits for one to finish. Identifiers are handed
//! out round-robin, so a late answer to a finished request is not mistaken for the
//! answer to the next one that happens to reuse its Identifier soon after.

// House rule: every public item is documented; the compiler keeps us to it here.
#![warn(missing_docs)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use outpost_protocol::{CoaEvent, CoaKind, CoaOutcome, NasKind, NasState, Rate};
use radius::core::code::Code;
use radius::core::packet::Packet;
use radius::core::{rfc2865, rfc2866, rfc2869, rfc3162};
use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::radius::attrs::{self, HEADER_LEN};
use crate::radius::{access, authenticator};
use crate::store::OnlineSession;

/// Error-Cause (RFC 5176 §3.5).
pub const ERROR_CAUSE: u8 = 101;

/// The largest RADIUS packet (RFC 2865 §3).
const MAX_DATAGRAM: usize = 4096;

/// Identifiers available per destination.
const IDENTIFIERS: usize = 256;

/// Errors of the CoA client: a request that cannot be sent at all, or an answer that is
/// not a valid one to the request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The NAS's address is not an IP address.
    #[error("NAS address {0:?} is not an IP address")]
    NasAddress(String),
    /// The NAS has no CoA port (0).
    #[error("NAS {nas_ip} has no CoA port")]
    NoCoaPort {
        /// The NAS in question.
        nas_ip: String,
    },
    /// A CoA-Request was asked of a NAS whose dialect has no rate attributes (a
    /// [`NasKind::Generic`] NAS): it would carry nothing to change.
    #[error("NAS {nas_ip} is generic: it has no rate attribute to change")]
    NoRateDialect {
        /// The NAS in question.
        nas_ip: String,
    },
    /// The session cannot be named in a request: an empty User-Name or
    /// Acct-Session-Id.
    #[error("cannot identify the session: {0}")]
    Session(&'static str),
    /// The codec refused the request, e.g. an attribute longer than 253 octets.
    #[error("RADIUS codec")]
    Codec(#[source] radius::core::packet::PacketError),
    /// The socket failed.
    #[error("CoA socket: {op}")]
    Io {
        /// The operation that failed (`bind`, `send`, `local_addr`).
        op: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An answer is not a well-framed RADIUS packet.
    #[error("malformed answer: {0}")]
    Malformed(&'static str),
    /// An answer's Identifier is not the request's.
    #[error("answer has Identifier {got}, the request {expected}")]
    IdentifierMismatch {
        /// The request's Identifier.
        expected: u8,
        /// The answer's.
        got: u8,
    },
    /// An answer's code does not answer the request's (e.g. a CoA-ACK to a
    /// Disconnect-Request, or a request).
    #[error("answer code {got} does not answer request code {request}")]
    UnexpectedCode {
        /// The request's code.
        request: u8,
        /// The answer's code.
        got: u8,
    },
    /// The Response Authenticator or Message-Authenticator does not verify with the
    /// secret: forged, corrupted, or signed with another secret.
    #[error("answer is not signed with the NAS secret")]
    BadAuthenticator,
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Retransmission settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoaConfig {
    /// Sends in all, the first included; at least 1.
    pub attempts: u32,
    /// How long to wait for an answer to the first send; each retransmission waits
    /// twice as long as the one before.
    pub first_timeout: Duration,
}

impl Default for CoaConfig {
    /// 3 sends, waiting 1 s, 2 s and 4 s: 7 s in all before giving up, about what a
    /// NAS allows its own RADIUS server (MikroTik and accel-ppp: 3 × 3 s).
    fn default() -> Self {
        Self {
            attempts: 3,
            first_timeout: Duration::from_secs(1),
        }
    }
}

/// What to ask of the NAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Disconnect-Request: end the session.
    Disconnect,
    /// CoA-Request: the session's new rate.
    ChangeRate(Rate),
}

impl Action {
    fn kind(&self) -> CoaKind {
        match self {
            Action::Disconnect => CoaKind::Disconnect,
            Action::ChangeRate(_) => CoaKind::Coa,
        }
    }

    fn code(&self) -> Code {
        match self {
            Action::Disconnect => Code::DisconnectRequest,
            Action::ChangeRate(_) => Code::CoARequest,
        }
    }
}

/// Builds a Disconnect-Request or CoA-Request with `identifier` about `session`, in
/// `nas`'s dialect and signed with its secret. See the module docs for its attributes
/// and authenticators.
///
/// Fails for a CoA-Request to a [`NasKind::Generic`] NAS, for an empty User-Name or
/// Acct-Session-Id, and for values the codec refuses (longer than 253 octets).
pub fn build_request(
    identifier: u8,
    nas: &NasState,
    session: &OnlineSession,
    action: &Action,
) -> Result<Vec<u8>> {
    let secret = nas.secret.as_bytes();
    if session.username.is_empty() {
        return Err(Error::Session("empty User-Name"));
    }
    if session.session_id.is_empty() {
        return Err(Error::Session("empty Acct-Session-Id"));
    }
    let mut packet = Packet::new_with_identifier(action.code(), secret, identifier);
    match nas.ip.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(IpAddr::V4(ip)) => rfc2865::add_nas_ip_address(&mut packet, &ip),
        Ok(IpAddr::V6(ip)) => rfc3162::add_nas_ipv6_address(&mut packet, &ip),
        // The NAS list holds addresses only; a NAS without one gets no identification
        // attribute rather than no Disconnect.
        Err(_) => {}
    }
    rfc2865::add_user_name(&mut packet, &session.username);
    rfc2866::add_acct_session_id(&mut packet, &session.session_id);
    // Framed-IP-Address is IPv4 only (RFC 2865 §5.8).
    if let Some(IpAddr::V4(ip)) = session.framed_ip {
        rfc2865::add_framed_ip_address(&mut packet, &ip);
    }
    if let Action::ChangeRate(rate) = action {
        match nas.kind {
            NasKind::Mikrotik => packet.add(attrs::vendor_specific(
                attrs::VENDOR_MIKROTIK,
                attrs::MIKROTIK_RATE_LIMIT,
                access::mikrotik_rate_limit(rate).as_bytes(),
            )),
            NasKind::AccelPpp => {
                rfc2865::add_filter_id(&mut packet, &access::accel_ppp_filter_id(rate))
            }
            NasKind::Generic => {
                return Err(Error::NoRateDialect {
                    nas_ip: nas.ip.clone(),
                });
            }
        }
    }
    rfc2869::add_message_authenticator(&mut packet, &[0; 16]);
    let mut bytes = packet.encode().map_err(Error::Codec)?;
    authenticator::sign_request(&mut bytes, secret);
    Ok(bytes)
}

/// A verified answer from the NAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// [`CoaOutcome::Ack`] or [`CoaOutcome::Nak`].
    pub outcome: CoaOutcome,
    /// The Error-Cause attribute, if the answer had one: usually on a NAK (e.g. 503
    /// Session-Context-Not-Found), though RFC 5176 §3.5 also allows 201
    /// Residual-Context-Removed on an ACK.
    pub error_cause: Option<u32>,
}

/// Checks that `response` is a valid answer to `request` (both whole datagrams, the
/// request as [`build_request`] made it) from a NAS whose secret is `secret`: well
/// framed, the same Identifier, an ACK or NAK of the request's kind, and a Response
/// Authenticator (and Message-Authenticator, if present) that verify.
pub fn parse_response(response: &[u8], request: &[u8], secret: &[u8]) -> Result<Answer> {
    if request.len() < HEADER_LEN {
        return Err(Error::Malformed("request shorter than a RADIUS header"));
    }
    let response = framed(response)?;
    if response[1] != request[1] {
        return Err(Error::IdentifierMismatch {
            expected: request[1],
            got: response[1],
        });
    }
    let outcome = match (request[0], response[0]) {
        (40, 41) | (43, 44) => CoaOutcome::Ack,
        (40, 42) | (43, 45) => CoaOutcome::Nak,
        (request, got) => return Err(Error::UnexpectedCode { request, got }),
    };
    let request_authenticator: [u8; 16] = request[4..HEADER_LEN]
        .try_into()
        .unwrap_or_else(|_| unreachable!("the header is 20 octets"));
    if !authenticator::verify_response(response, &request_authenticator, secret) {
        return Err(Error::BadAuthenticator);
    }
    let error_cause = attrs::raw_attributes(response)
        .find(|a| a.typ == ERROR_CAUSE)
        .and_then(|a| attrs::u32_value(&response[a.value_offset..a.value_offset + a.value_len]));
    Ok(Answer {
        outcome,
        error_cause,
    })
}

/// The datagram cut at its Length field, if that fits.
fn framed(datagram: &[u8]) -> Result<&[u8]> {
    if datagram.len() < HEADER_LEN {
        return Err(Error::Malformed("shorter than a RADIUS header"));
    }
    let len = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    if len < HEADER_LEN || len > datagram.len() {
        return Err(Error::Malformed("Length field does not fit the datagram"));
    }
    Ok(&datagram[..len])
}

/// Counters of a [`CoaClient`], for metrics and tests.
#[derive(Debug, Default)]
pub struct CoaStats {
    requests: AtomicU64,
    retransmissions: AtomicU64,
    acks: AtomicU64,
    naks: AtomicU64,
    timeouts: AtomicU64,
    forged: AtomicU64,
    unmatched: AtomicU64,
    malformed: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoaStatsSnapshot {
    /// Requests sent (first sends).
    pub requests: u64,
    /// Retransmissions sent.
    pub retransmissions: u64,
    /// Requests that ended with an ACK.
    pub acks: u64,
    /// Requests that ended with a NAK.
    pub naks: u64,
    /// Requests that ended without a valid answer.
    pub timeouts: u64,
    /// Answers dropped because they did not verify against the request they matched:
    /// a bad authenticator, or a code that does not answer the request.
    pub forged: u64,
    /// Answers dropped because no request was in flight to their source with their
    /// Identifier: late (after a timeout), duplicate, or from elsewhere.
    pub unmatched: u64,
    /// Datagrams dropped because they are not well-framed RADIUS packets.
    pub malformed: u64,
}

impl CoaStats {
    /// The counters now.
    pub fn snapshot(&self) -> CoaStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CoaStatsSnapshot {
            requests: get(&self.requests),
            retransmissions: get(&self.retransmissions),
            acks: get(&self.acks),
            naks: get(&self.naks),
            timeouts: get(&self.timeouts),
            forged: get(&self.forged),
            unmatched: get(&self.unmatched),
            malformed: get(&self.malformed),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A request waiting for its answer.
struct Pending {
    /// The request as sent, to verify the answer against.
    request: Vec<u8>,
    secret: Vec<u8>,
    /// Taken when the answer arrives.
    answer: Option<oneshot::Sender<Answer>>,
}

/// The requests in flight to one destination (NAS address and CoA port).
#[derive(Default)]
struct Destination {
    /// Where the next Identifier search starts.
    next: u8,
    in_flight: HashMap<u8, Pending>,
}

impl Destination {
    /// The first free Identifier from `next` on, round-robin; `None` when all 256 are
    /// in flight.
    fn allocate(&mut self) -> Option<u8> {
        let start = self.next;
        let id = (0..=u8::MAX)
            .map(|i| start.wrapping_add(i))
            .find(|id| !self.in_flight.contains_key(id))?;
        self.next = id.wrapping_add(1);
        Some(id)
    }
}

/// Destinations, each with a semaphore of 256 permits guarding its Identifiers. Entries
/// are kept once made: there is one per NAS the site has, a handful.
#[derive(Default)]
struct Table {
    destinations: HashMap<SocketAddr, Destination>,
    permits: HashMap<SocketAddr, Arc<Semaphore>>,
}

struct Inner {
    socket: UdpSocket,
    config: CoaConfig,
    table: Mutex<Table>,
    stats: CoaStats,
}

impl Inner {
    fn table(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock leaves the table consistent (every change is
        // one insert or remove), so keep going rather than poison every later request.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Frees a request's Identifier when the request ends, however it ends (answered,
/// timed out, or its future dropped).
struct InFlight<'a> {
    inner: &'a Inner,
    destination: SocketAddr,
    identifier: u8,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(d) = self.inner.table().destinations.get_mut(&self.destination) {
            d.in_flight.remove(&self.identifier);
        }
    }
}

/// The agent's RFC 5176 client: one UDP socket, any number of NASes, any number of
/// requests in flight at once (`send` takes `&self`; share the client with an `Arc`).
///
/// A background task reads the socket and hands verified answers to the waiting
/// requests; it stops when the client is dropped.
pub struct CoaClient {
    inner: Arc<Inner>,
    receiver: JoinHandle<()>,
}

impl std::fmt::Debug for CoaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoaClient")
            .field("local_addr", &self.inner.socket.local_addr().ok())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Drop for CoaClient {
    fn drop(&mut self) {
        self.receiver.abort();
    }
}

impl CoaClient {
    /// A client sending from `addr`: `0.0.0.0:0` for IPv4 NASes, `[::]:0` for both
    /// families, or the agent's address on the NAS-facing network when the NAS only
    /// takes requests from a known address (NASes commonly accept CoA only from their
    /// configured RADIUS servers).
    ///
    /// Must be called inside a Tokio runtime: it starts the receiving task.
    pub async fn bind(addr: SocketAddr, config: CoaConfig) -> Result<CoaClient> {
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(|source| Error::Io { op: "bind", source })?;
        let inner = Arc::new(Inner {
            socket,
            config: CoaConfig {
                attempts: config.attempts.max(1),
                ..config
            },
            table: Mutex::default(),
            stats: CoaStats::default(),
        });
        let local = inner.socket.local_addr().ok();
        let receiver = tokio::spawn(
            receive(Arc::clone(&inner)).instrument(info_span!("coa_receive", local = ?local)),
        );
        Ok(CoaClient { inner, receiver })
    }

    /// The address the client sends from.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.inner.socket.local_addr().map_err(|source| Error::Io {
            op: "local_addr",
            source,
        })
    }

    /// The client's counters.
    pub fn stats(&self) -> CoaStatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// Sends `action` about `session` to `nas` (at `nas.ip`, port `nas.coa_port`,
    /// signed with `nas.secret`), retransmitting until a valid answer or
    /// [`CoaConfig::attempts`] sends, and returns how it ended. `reason` is copied
    /// into the event (`suspended`, `expired`, `disabled`, `plan_change`).
    ///
    /// `Ok` is every answer the NAS could give, a timeout included: journal it. `Err`
    /// means nothing could be asked: the NAS address is not an IP or it has no CoA
    /// port, a CoA-Request was asked of a [`NasKind::Generic`] NAS, the session cannot
    /// be encoded, or the socket refused to send (e.g. an IPv6 NAS from a socket
    /// bound to an IPv4 address).
    #[tracing::instrument(name = "coa", skip_all, fields(nas = %nas.ip,
        username = %session.username, session_id = %session.session_id,
        kind = ?action.kind(), reason))]
    pub async fn send(
        &self,
        nas: &NasState,
        session: &OnlineSession,
        action: &Action,
        reason: &str,
    ) -> Result<CoaEvent> {
        let ip: IpAddr = nas
            .ip
            .parse()
            .map_err(|_| Error::NasAddress(nas.ip.clone()))?;
        if nas.coa_port == 0 {
            return Err(Error::NoCoaPort {
                nas_ip: nas.ip.clone(),
            });
        }
        // Refused before waiting for an Identifier, not only when building.
        if matches!(action, Action::ChangeRate(_)) && nas.kind == NasKind::Generic {
            return Err(Error::NoRateDialect {
                nas_ip: nas.ip.clone(),
            });
        }
        let destination = SocketAddr::new(ip.to_canonical(), nas.coa_port);
        let inner = &*self.inner;

        // One permit per Identifier: holding one guarantees a free Identifier below.
        let permits = Arc::clone(
            inner
                .table()
                .permits
                .entry(destination)
                .or_insert_with(|| Arc::new(Semaphore::new(IDENTIFIERS))),
        );
        let _permit = permits
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the semaphore is never closed"));

        let (tx, mut rx) = oneshot::channel();
        let (request, _in_flight) = {
            let mut table = inner.table();
            let dest = table.destinations.entry(destination).or_default();
            let identifier = dest
                .allocate()
                .unwrap_or_else(|| unreachable!("a permit is held, so an Identifier is free"));
            let request = build_request(identifier, nas, session, action)?;
            dest.in_flight.insert(
                identifier,
                Pending {
                    request: request.clone(),
                    secret: nas.secret.as_bytes().to_vec(),
                    answer: Some(tx),
                },
            );
            let guard = InFlight {
                inner,
                destination,
                identifier,
            };
            (request, guard)
        };
        debug!(identifier = request[1], "sending");

        let event = |outcome, error_cause, attempts| CoaEvent {
            kind: action.kind(),
            outcome,
            username: session.username.clone(),
            nas_ip: nas.ip.clone(),
            session_id: session.session_id.clone(),
            error_cause,
            attempts,
            reason: reason.to_owned(),
        };
        let mut wait = inner.config.first_timeout;
        for attempt in 1..=inner.config.attempts {
            inner
                .socket
                .send_to(&request, destination)
                .await
                .map_err(|source| Error::Io { op: "send", source })?;
            bump(if attempt == 1 {
                &inner.stats.requests
            } else {
                &inner.stats.retransmissions
            });
            match tokio::time::timeout(wait, &mut rx).await {
                Ok(Ok(answer)) => {
                    bump(match answer.outcome {
                        CoaOutcome::Nak => &inner.stats.naks,
                        _ => &inner.stats.acks,
                    });
                    info!(outcome = ?answer.outcome, error_cause = answer.error_cause, attempt, "answered");
                    return Ok(event(answer.outcome, answer.error_cause, attempt));
                }
                // The sender lives in the table until our guard removes it, so it
                // cannot be dropped unanswered while we wait; treat it as no answer.
                Ok(Err(_)) | Err(_) => {
                    debug!(attempt, wait_ms = wait.as_millis() as u64, "no answer");
                }
            }
            wait = wait.saturating_mul(2);
        }
        bump(&inner.stats.timeouts);
        warn!(
            attempts = inner.config.attempts,
            "no valid answer from the NAS"
        );
        Ok(event(CoaOutcome::Timeout, None, inner.config.attempts))
    }
}

/// Reads answers and hands each valid one to the request waiting for it.
async fn receive(inner: Arc<Inner>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, from) = match inner.socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // UDP receive errors are per datagram (e.g. an ICMP error surfacing);
                // the socket itself stays usable.
                debug!(error = %e, "receive failed");
                continue;
            }
        };
        dispatch(&inner, &buf[..len], from);
    }
}

fn dispatch(inner: &Inner, datagram: &[u8], from: SocketAddr) {
    // On a dual-stack socket an IPv4 NAS answers from an IPv4-mapped address; match it
    // against the IPv4 address the request went to.
    let from = SocketAddr::new(from.ip().to_canonical(), from.port());
    let Ok(packet) = framed(datagram) else {
        bump(&inner.stats.malformed);
        debug!(%from, len = datagram.len(), "malformed datagram dropped");
        return;
    };
    let identifier = packet[1];
    let mut table = inner.table();
    let Some(pending) = table
        .destinations
        .get_mut(&from)
        .and_then(|d| d.in_flight.get_mut(&identifier))
        .filter(|p| p.answer.is_some())
    else {
        drop(table);
        bump(&inner.stats.unmatched);
        debug!(%from, identifier, "answer matches no request in flight; dropped");
        return;
    };
    match parse_response(packet, &pending.request, &pending.secret) {
        Ok(answer) => {
            if let Some(tx) = pending.answer.take() {
                // The waiter may have just given up; then the answer is simply late.
                let _ = tx.send(answer);
            }
        }
        Err(e) => {
            drop(table);
            bump(&inner.stats.forged);
            warn!(%from, identifier, error = %e, "answer does not verify; dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const SECRET: &[u8] = b"coa-secret";

    fn session() -> OnlineSession {
        OnlineSession {
            nas_ip: "192.0.2.1".into(),
            session_id: "81a00002".into(),
            username: "amina".into(),
            framed_ip: Some(IpAddr::V4(Ipv4Addr::new(100, 64, 0, 7))),
            framed_ipv6: None,
        }
    }

    fn nas(kind: NasKind) -> NasState {
        NasState {
            id: 1,
            ip: "192.0.2.1".into(),
            secret: String::from_utf8(SECRET.to_vec()).unwrap(),
            kind,
            coa_port: 3799,
            require_message_authenticator: true,
        }
    }

    fn rate() -> Rate {
        Rate {
            download_kbps: 20_000,
            upload_kbps: 5_000,
            burst_download_kbps: None,
            burst_upload_kbps: None,
        }
    }

    /// `(type, value)` of every attribute.
    fn attributes(packet: &[u8]) -> Vec<(u8, Vec<u8>)> {
        attrs::raw_attributes(packet)
            .map(|a| {
                (
                    a.typ,
                    packet[a.value_offset..a.value_offset + a.value_len].to_vec(),
                )
            })
            .collect()
    }

    /// An answer to `request` with `code` and `extra` attributes, signed as a NAS does.
    fn answer(request: &[u8], code: u8, extra: &[(u8, Vec<u8>)], secret: &[u8]) -> Vec<u8> {
        let mut reply = vec![code, request[1], 0, 0];
        reply.extend([0u8; 16]);
        for (typ, value) in extra {
            reply.push(*typ);
            reply.push(u8::try_from(value.len() + 2).unwrap());
            reply.extend(value);
        }
        let len = u16::try_from(reply.len()).unwrap().to_be_bytes();
        reply[2..4].copy_from_slice(&len);
        let ra: [u8; 16] = request[4..20].try_into().unwrap();
        authenticator::sign_response(&mut reply, &ra, secret);
        reply
    }

    /// RFC 5176 §2.3 and §3.3, recomputed here by hand from the definitions rather
    /// than through `sign_request`.
    #[test]
    fn disconnect_request_is_signed_per_rfc_5176() {
        let bytes =
            build_request(7, &nas(NasKind::Mikrotik), &session(), &Action::Disconnect).unwrap();
        assert_eq!(bytes[0], 40);
        assert_eq!(bytes[1], 7);
        assert_eq!(
            usize::from(u16::from_be_bytes([bytes[2], bytes[3]])),
            bytes.len()
        );

        // Request Authenticator = MD5(Code+Identifier+Length+16 zeros+Attributes+Secret).
        use md5::{Digest, Md5};
        let mut md5 = Md5::new();
        md5.update(&bytes[..4]);
        md5.update([0u8; 16]);
        md5.update(&bytes[20..]);
        md5.update(SECRET);
        assert_eq!(bytes[4..20], md5.finalize()[..]);

        // Message-Authenticator = HMAC-MD5 over the packet with the Authenticator
        // field and its own value zeroed.
        let offset = attrs::message_authenticator_offset(&bytes)
            .unwrap()
            .unwrap();
        let mut zeroed = bytes.clone();
        zeroed[4..20].fill(0);
        zeroed[offset..offset + 16].fill(0);
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<Md5> as Mac>::new_from_slice(SECRET).unwrap();
        mac.update(&zeroed);
        assert_eq!(bytes[offset..offset + 16], mac.finalize().into_bytes()[..]);
        assert!(authenticator::verify_request_message_authenticator(
            &bytes, offset, SECRET
        ));
        assert!(!authenticator::verify_request_message_authenticator(
            &bytes, offset, b"other"
        ));

        let attrs = attributes(&bytes);
        assert!(attrs.contains(&(1, b"amina".to_vec())), "User-Name");
        assert!(
            attrs.contains(&(44, b"81a00002".to_vec())),
            "Acct-Session-Id"
        );
        assert!(
            attrs.contains(&(8, vec![100, 64, 0, 7])),
            "Framed-IP-Address"
        );
        assert!(attrs.contains(&(4, vec![192, 0, 2, 1])), "NAS-IP-Address");
        assert_eq!(attrs.iter().filter(|(t, _)| *t == 80).count(), 1);
        // Nothing else: RFC 5176 §3.2 forbids Service-Type in a Disconnect-Request,
        // and no rate belongs in one.
        assert_eq!(attrs.len(), 5, "{attrs:?}");
    }

    #[test]
    fn an_ipv6_nas_is_named_by_nas_ipv6_address() {
        let v6 = NasState {
            ip: "2001:db8::1".into(),
            ..nas(NasKind::Mikrotik)
        };
        let attrs = attributes(&build_request(1, &v6, &session(), &Action::Disconnect).unwrap());
        let mut expected = vec![0x20, 0x01, 0x0d, 0xb8];
        expected.extend([0; 11]);
        expected.push(1);
        assert!(attrs.contains(&(95, expected)), "{attrs:?}");
        assert!(attrs.iter().all(|(t, _)| *t != 4));
    }

    #[test]
    fn framed_ip_is_left_out_when_unknown() {
        let s = OnlineSession {
            framed_ip: None,
            ..session()
        };
        let bytes = build_request(1, &nas(NasKind::Generic), &s, &Action::Disconnect).unwrap();
        assert!(attributes(&bytes).iter().all(|(t, _)| *t != 8));
    }

    #[test]
    fn coa_request_carries_the_rate_in_the_nas_dialect() {
        let action = Action::ChangeRate(rate());
        let mikrotik = build_request(3, &nas(NasKind::Mikrotik), &session(), &action).unwrap();
        assert_eq!(mikrotik[0], 43);
        let decoded = Packet::decode(&mikrotik, SECRET).unwrap();
        assert_eq!(
            attrs::vendor_attribute(&decoded, attrs::VENDOR_MIKROTIK, attrs::MIKROTIK_RATE_LIMIT)
                .as_deref(),
            Some(&b"5000k/20000k"[..])
        );
        assert!(authenticator::verify_accounting_request(&mikrotik, SECRET));

        let accel = build_request(3, &nas(NasKind::AccelPpp), &session(), &action).unwrap();
        assert!(
            attributes(&accel).contains(&(11, b"20000/5000".to_vec())),
            "Filter-Id"
        );
        assert!(authenticator::verify_accounting_request(&accel, SECRET));

        assert!(matches!(
            build_request(3, &nas(NasKind::Generic), &session(), &action),
            Err(Error::NoRateDialect { .. })
        ));
    }

    #[test]
    fn unencodable_sessions_are_refused() {
        let empty = OnlineSession {
            session_id: String::new(),
            ..session()
        };
        assert!(matches!(
            build_request(1, &nas(NasKind::Mikrotik), &empty, &Action::Disconnect),
            Err(Error::Session(_))
        ));
        let long = OnlineSession {
            username: "x".repeat(300),
            ..session()
        };
        assert!(matches!(
            build_request(1, &nas(NasKind::Mikrotik), &long, &Action::Disconnect),
            Err(Error::Codec(_))
        ));
    }

    #[test]
    fn good_ack_and_nak_with_error_cause_are_read() {
        let request =
            build_request(9, &nas(NasKind::Mikrotik), &session(), &Action::Disconnect).unwrap();
        let ack = answer(&request, 41, &[], SECRET);
        assert_eq!(
            parse_response(&ack, &request, SECRET).unwrap(),
            Answer {
                outcome: CoaOutcome::Ack,
                error_cause: None
            }
        );
        let nak = answer(
            &request,
            42,
            &[(101, 503u32.to_be_bytes().to_vec())],
            SECRET,
        );
        assert_eq!(
            parse_response(&nak, &request, SECRET).unwrap(),
            Answer {
                outcome: CoaOutcome::Nak,
                error_cause: Some(503)
            }
        );
        // With a Message-Authenticator, which must verify too.
        let with_ma = answer(&request, 41, &[(80, vec![0; 16])], SECRET);
        assert!(parse_response(&with_ma, &request, SECRET).is_ok());
        let mut bad_ma = with_ma.clone();
        bad_ma[22] ^= 1;
        // Re-sign the Response Authenticator alone, so only the MA is wrong.
        let ra: [u8; 16] = request[4..20].try_into().unwrap();
        bad_ma[4..20].copy_from_slice(&ra);
        use md5::{Digest, Md5};
        let digest: [u8; 16] = Md5::new()
            .chain_update(&bad_ma)
            .chain_update(SECRET)
            .finalize()
            .into();
        bad_ma[4..20].copy_from_slice(&digest);
        assert!(matches!(
            parse_response(&bad_ma, &request, SECRET),
            Err(Error::BadAuthenticator)
        ));
    }

    #[test]
    fn forged_mismatched_and_malformed_answers_are_refused() {
        let request = build_request(
            9,
            &nas(NasKind::Mikrotik),
            &session(),
            &Action::ChangeRate(rate()),
        )
        .unwrap();
        let forged = answer(&request, 44, &[], b"guessed");
        assert!(matches!(
            parse_response(&forged, &request, SECRET),
            Err(Error::BadAuthenticator)
        ));
        let mut tampered = answer(
            &request,
            45,
            &[(101, 503u32.to_be_bytes().to_vec())],
            SECRET,
        );
        *tampered.last_mut().unwrap() = 0xF6; // 503 -> 502
        assert!(matches!(
            parse_response(&tampered, &request, SECRET),
            Err(Error::BadAuthenticator)
        ));
        let mut other_id = answer(&request, 44, &[], SECRET);
        other_id[1] = 10;
        assert!(matches!(
            parse_response(&other_id, &request, SECRET),
            Err(Error::IdentifierMismatch {
                expected: 9,
                got: 10
            })
        ));
        // A Disconnect-ACK does not answer a CoA-Request, even correctly signed.
        let wrong_kind = answer(&request, 41, &[], SECRET);
        assert!(matches!(
            parse_response(&wrong_kind, &request, SECRET),
            Err(Error::UnexpectedCode {
                request: 43,
                got: 41
            })
        ));
        assert!(matches!(
            parse_response(&request[..10], &request, SECRET),
            Err(Error::Malformed(_))
        ));
        let mut long_length = answer(&request, 44, &[], SECRET);
        long_length[3] = 200;
        assert!(matches!(
            parse_response(&long_length, &request, SECRET),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn identifiers_are_unique_in_flight_and_handed_out_round_robin() {
        let mut d = Destination::default();
        let pending = || Pending {
            request: Vec::new(),
            secret: Vec::new(),
            answer: None,
        };
        let mut seen = std::collections::HashSet::new();
        for _ in 0..IDENTIFIERS {
            let id = d.allocate().unwrap();
            assert!(seen.insert(id), "identifier {id} handed out twice");
            d.in_flight.insert(id, pending());
        }
        assert_eq!(d.allocate(), None, "all 256 in flight");
        d.in_flight.remove(&42);
        d.in_flight.remove(&7);
        // The search goes on from where it stopped (after 255, i.e. at 0), so 7 comes
        // before 42.
        assert_eq!(d.allocate(), Some(7));
        d.in_flight.insert(7, pending());
        assert_eq!(d.allocate(), Some(42));

        // Round-robin: a freed Identifier is not the next one handed out.
        let mut d = Destination::default();
        let a = d.allocate().unwrap();
        d.in_flight.insert(a, pending());
        d.in_flight.remove(&a);
        assert_ne!(d.allocate(), Some(a));
    }

    // The client against a scripted NAS: a plain UDP socket in the test, because a real
    // NAS (FreeRADIUS, in agent/tests/coa_freeradius.rs) never forges, misnumbers or
    // withholds answers on demand.

    /// Long enough never to fire in a passing test: a guard against hangs, not a
    /// statement about speed.
    const HANG_GUARD: Duration = Duration::from_secs(60);

    async fn peer() -> (UdpSocket, NasState) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut nas = nas(NasKind::Mikrotik);
        nas.ip = "127.0.0.1".into();
        nas.coa_port = socket.local_addr().unwrap().port();
        (socket, nas)
    }

    async fn client(attempts: u32, first_timeout: Duration) -> CoaClient {
        client_on("127.0.0.1:0", attempts, first_timeout).await
    }

    async fn client_on(addr: &str, attempts: u32, first_timeout: Duration) -> CoaClient {
        CoaClient::bind(
            addr.parse().unwrap(),
            CoaConfig {
                attempts,
                first_timeout,
            },
        )
        .await
        .unwrap()
    }

    async fn recv(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buf = vec![0; MAX_DATAGRAM];
        let (len, from) = tokio::time::timeout(HANG_GUARD, socket.recv_from(&mut buf))
            .await
            .expect("request within the hang guard")
            .unwrap();
        buf.truncate(len);
        (buf, from)
    }

    #[tokio::test]
    async fn forged_misnumbered_and_stray_answers_are_ignored_and_counted() {
        let (nas_socket, nas) = peer().await;
        let stray = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let client = client(1, HANG_GUARD).await;
        let session = session();
        let sending = client.send(&nas, &session, &Action::Disconnect, "suspended");
        let answering = async {
            let (request, from) = recv(&nas_socket).await;
            let forged = answer(&request, 41, &[], b"guessed");
            let mut misnumbered = answer(&request, 41, &[], SECRET);
            misnumbered[1] = misnumbered[1].wrapping_add(1);
            let good = answer(&request, 41, &[], SECRET);
            // Each is handled before the next is read: the socket keeps them in order.
            nas_socket.send_to(&forged, from).await.unwrap();
            nas_socket.send_to(&misnumbered, from).await.unwrap();
            stray.send_to(&good, from).await.unwrap(); // right bytes, wrong source port
            nas_socket.send_to(&[1, 2, 3], from).await.unwrap();
            nas_socket.send_to(&good, from).await.unwrap();
        };
        let (event, ()) = tokio::join!(sending, answering);
        let event = event.unwrap();
        assert_eq!(
            event,
            CoaEvent {
                kind: CoaKind::Disconnect,
                outcome: CoaOutcome::Ack,
                username: "amina".into(),
                nas_ip: "127.0.0.1".into(),
                session_id: "81a00002".into(),
                error_cause: None,
                attempts: 1,
                reason: "suspended".into(),
            }
        );
        assert_eq!(
            client.stats(),
            CoaStatsSnapshot {
                requests: 1,
                acks: 1,
                forged: 1,
                unmatched: 2,
                malformed: 1,
                ..Default::default()
            }
        );
    }

    #[tokio::test]
    async fn silence_ends_in_timeout_after_identical_retransmissions() {
        let (nas_socket, nas) = peer().await;
        // Short waits keep the test quick; nothing is asserted about time.
        let client = client(3, Duration::from_millis(20)).await;
        let event = client
            .send(&nas, &session(), &Action::ChangeRate(rate()), "plan_change")
            .await
            .unwrap();
        assert_eq!(event.outcome, CoaOutcome::Timeout);
        assert_eq!(event.kind, CoaKind::Coa);
        assert_eq!(event.attempts, 3);
        assert_eq!(event.error_cause, None);
        let first = recv(&nas_socket).await.0;
        for _ in 1..3 {
            assert_eq!(
                recv(&nas_socket).await.0,
                first,
                "a retransmission is the same packet"
            );
        }
        let s = client.stats();
        assert_eq!((s.requests, s.retransmissions, s.timeouts), (1, 2, 1));

        // An answer after the request gave up matches nothing.
        let late = answer(&first, 44, &[], SECRET);
        nas_socket
            .send_to(&late, client.local_addr().unwrap())
            .await
            .unwrap();
        // Then a second request, answered, proves the late one was read first.
        let second = session();
        let sending = client.send(&nas, &second, &Action::Disconnect, "expired");
        let answering = async {
            let (request, from) = recv(&nas_socket).await;
            assert_ne!(request[1], first[1], "Identifiers go round-robin");
            let nak = answer(
                &request,
                42,
                &[(101, 503u32.to_be_bytes().to_vec())],
                SECRET,
            );
            nas_socket.send_to(&nak, from).await.unwrap();
        };
        let (event, ()) = tokio::join!(sending, answering);
        let event = event.unwrap();
        assert_eq!(
            (event.outcome, event.error_cause),
            (CoaOutcome::Nak, Some(503))
        );
        let s = client.stats();
        assert_eq!((s.unmatched, s.naks), (1, 1));
    }

    /// 300 requests at once to one NAS: the NAS holds its answers until it has 256
    /// distinct requests unanswered, so all 256 Identifiers are in flight together, and
    /// the other 44 can only be sent as answers free Identifiers.
    #[tokio::test]
    async fn concurrent_requests_never_share_an_identifier() {
        const TOTAL: usize = 300;
        let (nas_socket, nas) = peer().await;
        let client = Arc::new(client(1, HANG_GUARD).await);
        let mut sending = tokio::task::JoinSet::new();
        for i in 0..TOTAL {
            let (client, nas) = (Arc::clone(&client), nas.clone());
            let session = OnlineSession {
                session_id: format!("s{i}"),
                ..session()
            };
            sending.spawn(async move {
                client
                    .send(&nas, &session, &Action::Disconnect, "disabled")
                    .await
            });
        }
        let answering = async {
            let mut unanswered: HashMap<u8, Vec<u8>> = HashMap::new();
            let mut held = true;
            let mut answered = 0;
            while answered < TOTAL {
                let (request, from) = recv(&nas_socket).await;
                if let Some(other) = unanswered.insert(request[1], request.clone()) {
                    panic!(
                        "Identifier {} in flight twice: {:?} and {:?}",
                        request[1],
                        &other[20..],
                        &request[20..]
                    );
                }
                if held && unanswered.len() < IDENTIFIERS {
                    continue;
                }
                held = false;
                for (_, request) in unanswered.drain() {
                    nas_socket
                        .send_to(&answer(&request, 41, &[], SECRET), from)
                        .await
                        .unwrap();
                    answered += 1;
                }
            }
        };
        let (events, ()) = tokio::join!(sending.join_all(), answering);
        let mut ids: Vec<String> = Vec::new();
        for event in events {
            let event = event.unwrap();
            assert_eq!((event.outcome, event.attempts), (CoaOutcome::Ack, 1));
            ids.push(event.session_id);
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), TOTAL, "each request got its own answer");
        assert_eq!(client.stats().acks, TOTAL as u64);
    }

    /// A client on a dual-stack socket sends to an IPv4 NAS and hears its answer from
    /// the IPv4-mapped address.
    #[tokio::test]
    async fn dual_stack_client_matches_ipv4_answers() {
        let (nas_socket, nas) = peer().await;
        let client = client_on("[::]:0", 1, HANG_GUARD).await;
        let session = session();
        let sending = client.send(&nas, &session, &Action::Disconnect, "expired");
        let answering = async {
            let (request, from) = recv(&nas_socket).await;
            nas_socket
                .send_to(&answer(&request, 41, &[], SECRET), from)
                .await
                .unwrap();
        };
        let (event, ()) = tokio::join!(sending, answering);
        assert_eq!(event.unwrap().outcome, CoaOutcome::Ack);
        assert_eq!(client.stats().unmatched, 0);
    }

    #[tokio::test]
    async fn requests_that_cannot_be_made_are_errors_not_events() {
        let (_nas_socket, nas) = peer().await;
        let client = client(1, HANG_GUARD).await;
        let generic = NasState {
            kind: NasKind::Generic,
            ..nas.clone()
        };
        assert!(matches!(
            client
                .send(&generic, &session(), &Action::ChangeRate(rate()), "plan_change")
                .await,
            Err(Error::NoRateDialect { nas_ip }) if nas_ip == "127.0.0.1"
        ));
        let portless = NasState {
            coa_port: 0,
            ..nas.clone()
        };
        assert!(matches!(
            client
                .send(&portless, &session(), &Action::Disconnect, "expired")
                .await,
            Err(Error::NoCoaPort { .. })
        ));
        let nameless = NasState {
            ip: "nas.example".into(),
            ..nas
        };
        assert!(matches!(
            client
                .send(&nameless, &session(), &Action::Disconnect, "expired")
                .await,
            Err(Error::NasAddress(_))
        ));
        assert_eq!(client.stats(), CoaStatsSnapshot::default());
    }
}
