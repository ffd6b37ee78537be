//! One datagram in, at most one datagram out: [`Handler::handle`].
//!
//! The order of checks matters:
//! 1. the source must be a NAS in the synced list (else drop, before any parsing, so
//!    strangers cost us nothing);
//! 2. the packet must decode and be a request this socket serves;
//! 3. the reply cache answers retransmissions (before authentication, which they
//!    already passed; a forgery carrying a cached key only gets the NAS's own answer);
//! 4. Message-Authenticator / accounting Request Authenticator must verify;
//! 5. then the request runs, and its answer is cached.
//!
//! Status-Server (RFC 5997) skips the reply cache and touches no state: it is answered
//! on either socket, only with a valid Message-Authenticator, by the code that socket
//! answers with (Access-Accept on the authentication port, Accounting-Response on the
//! accounting port).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use outpost_protocol::{EventBody, NasState, RejectReason};
use radius::core::code::Code;
use radius::core::packet::Packet;
use radius::core::{rfc2865, rfc2869};
use tracing::{debug, debug_span, error, info, warn};

use crate::ErrorChain;

use super::access::{self, AccessRequest};
use super::accounting::{self, AccountingRequest};
use super::attrs::{self, HEADER_LEN};
use super::authenticator;
use super::cache::{Key, Lookup, ReplyCache};
use super::server::Config;
use super::stats::Stats;
use super::{Backend, Error};

/// What a socket is for, which decides the requests it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Access-Requests only (the 1812 socket).
    Auth,
    /// Accounting-Requests only (the 1813 socket).
    Acct,
    /// Both, on one socket.
    Both,
}

impl Listener {
    fn serves(self, code: Code) -> bool {
        matches!(
            (self, code),
            (Listener::Auth | Listener::Both, Code::AccessRequest)
                | (Listener::Acct | Listener::Both, Code::AccountingRequest)
                | (_, Code::StatusServer)
        )
    }

    /// What this socket answers a Status-Server with (RFC 5997 §3): an Access-Accept on
    /// an authentication port, an Accounting-Response on an accounting one. A socket
    /// serving both answers as the authentication port.
    fn status_reply(self) -> Code {
        match self {
            Listener::Auth | Listener::Both => Code::AccessAccept,
            Listener::Acct => Code::AccountingResponse,
        }
    }
}

/// Why a datagram got no answer; each maps to one [`Stats`] counter.
#[derive(Debug)]
enum Dropped {
    UnknownNas,
    Malformed(Error),
    BadAuthenticator(&'static str),
    MissingMessageAuthenticator,
    InProgress,
    Backend(Error),
}

/// What handling a datagram came to, short of a drop.
enum Handled {
    /// The reply, ready to send.
    Reply(Vec<u8>),
    /// An accounting record whose reply waits for the record to be durable.
    Record(Box<Awaiting>),
}

/// An Accounting-Response held back until its record is durable.
struct Awaiting {
    key: Key,
    event: Option<EventBody>,
    reply: Vec<u8>,
}

/// Handles RADIUS datagrams against a [`Backend`]; shared by the server's tasks.
pub struct Handler {
    backend: Arc<dyn Backend>,
    cache: Mutex<ReplyCache>,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Handler {
    /// A handler answering from `backend`, with the reply cache sized by `config`.
    pub fn new(backend: Arc<dyn Backend>, config: &Config) -> Self {
        Self {
            backend,
            cache: Mutex::new(ReplyCache::new(
                config.reply_cache_ttl,
                config.reply_cache_capacity,
            )),
            stats: Arc::new(Stats::default()),
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Handles one datagram from `src` that arrived on a `listener` socket; returns the
    /// reply to send back to `src`, if any. Blocks on the backend (see [`Backend`]).
    /// Never panics on any input: what it cannot use it drops and counts.
    pub fn handle(&self, listener: Listener, src: SocketAddr, datagram: &[u8]) -> Option<Vec<u8>> {
        self.handle_batch(listener, &[(src, datagram)])
            .pop()
            .flatten()
    }

    /// [`Handler::handle`] for several datagrams that arrived on a `listener` socket
    /// together; one reply (or none) per datagram, in order. The accounting records
    /// among them are handed to the backend together ([`Backend::record_batch`]), so a
    /// backend that commits in groups makes them durable with one write; each
    /// Accounting-Response is returned only if its record is durable.
    pub fn handle_batch(
        &self,
        listener: Listener,
        datagrams: &[(SocketAddr, &[u8])],
    ) -> Vec<Option<Vec<u8>>> {
        let mut replies = Vec::with_capacity(datagrams.len());
        let mut awaiting = Vec::new();
        for (i, &(src, datagram)) in datagrams.iter().enumerate() {
            Stats::bump(&self.stats.requests);
            let started = Instant::now();
            match self.handle_inner(listener, src, datagram) {
                Ok(Handled::Reply(reply)) => {
                    self.stats.observe(Some(&reply), started.elapsed());
                    replies.push(Some(reply));
                }
                Ok(Handled::Record(record)) => {
                    replies.push(None);
                    awaiting.push((i, started, record));
                }
                Err(dropped) => {
                    self.count(&dropped, src);
                    self.stats.observe(None, started.elapsed());
                    replies.push(None);
                }
            }
        }
        if awaiting.is_empty() {
            return replies;
        }
        let events = awaiting
            .iter_mut()
            .filter_map(|(_, _, a)| a.event.take())
            .collect();
        let results = self.backend.record_batch(events);
        for ((i, started, record), result) in awaiting.into_iter().zip(results) {
            match result {
                Ok(()) => {
                    // Only now, with the record durable, may the NAS forget it (RFC 2866 §2).
                    self.cache().finish(record.key, Some(&record.reply));
                    Stats::bump(&self.stats.acct_records);
                    self.stats.observe(Some(&record.reply), started.elapsed());
                    replies[i] = Some(record.reply);
                }
                Err(e) => {
                    // Not cached: the NAS's retransmission runs again.
                    self.cache().finish(record.key, None);
                    self.count(&Dropped::Backend(Error::Backend(e)), record.key.src);
                    self.stats.observe(None, started.elapsed());
                }
            }
        }
        replies
    }

    fn handle_inner(
        &self,
        listener: Listener,
        src: SocketAddr,
        datagram: &[u8],
    ) -> Result<Handled, Dropped> {
        let nas = self
            .backend
            .nas(src.ip().to_canonical())
            .ok_or(Dropped::UnknownNas)?;
        // Debug, not info: an enabled span per request cost a tenth of the throughput.
        // The rarer events logged at info and above name the NAS and subscriber
        // themselves.
        let span = debug_span!("radius", nas_id = nas.id, nas = %nas.ip);
        let _entered = span.enter();
        let secret = nas.secret.as_bytes();

        let packet =
            Packet::decode(datagram, secret).map_err(|e| Dropped::Malformed(Error::Codec(e)))?;
        // `decode` checked that Length is within 20..=4096 and the datagram; octets
        // past Length are padding (RFC 2865 §3) and are ignored everywhere.
        let length = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
        let raw = &datagram[..length];
        let code = packet.get_code();
        if !listener.serves(code) {
            return Err(Dropped::Malformed(Error::Malformed(
                "not a request this socket serves",
            )));
        }
        let mut authenticator = [0u8; 16];
        authenticator.copy_from_slice(&raw[4..HEADER_LEN]);
        if code == Code::StatusServer {
            return self
                .status(listener, &packet, raw, &authenticator, secret)
                .map(Handled::Reply);
        }

        let key = Key {
            src,
            code: raw[0],
            identifier: raw[1],
            authenticator,
        };
        match self.cache().begin(key, Instant::now()) {
            Lookup::Answered(reply) => {
                self.stats.retransmission(&reply);
                debug!(id = raw[1], "retransmission answered from the reply cache");
                return Ok(Handled::Reply(reply));
            }
            Lookup::InProgress => return Err(Dropped::InProgress),
            Lookup::New => {}
        }
        let result = match code {
            Code::AccessRequest => self
                .access(&nas, &packet, raw, &authenticator)
                .map(Handled::Reply),
            _ => self.accounting(&nas, &packet, raw, &authenticator, key),
        };
        match &result {
            Ok(Handled::Reply(reply)) => self.cache().finish(key, Some(reply)),
            Err(_) => self.cache().finish(key, None),
            // Finished once the record is durable (or is not), in `handle_batch`.
            Ok(Handled::Record(_)) => {}
        }
        result
    }

    fn access(
        &self,
        nas: &NasState,
        packet: &Packet,
        raw: &[u8],
        authenticator: &[u8; 16],
    ) -> Result<Vec<u8>, Dropped> {
        let secret = nas.secret.as_bytes();
        match attrs::message_authenticator_offset(raw).map_err(Dropped::Malformed)? {
            Some(offset)
                if !authenticator::verify_request_message_authenticator(raw, offset, secret) =>
            {
                return Err(Dropped::BadAuthenticator("Message-Authenticator"));
            }
            Some(_) => {}
            None if nas.require_message_authenticator => {
                return Err(Dropped::MissingMessageAuthenticator);
            }
            None => {}
        }

        let request = AccessRequest::parse(packet, authenticator);
        let span = debug_span!("access", user = request.user_name.as_deref());
        let _entered = span.enter();
        let subscriber = request
            .user_name
            .as_deref()
            .and_then(|u| self.backend.subscriber(u));
        let now = crate::clock::now();
        let decision = access::decide(
            &request,
            subscriber.as_deref(),
            |u| self.backend.online_sessions(u),
            secret,
            authenticator,
            now,
        );

        let refusal = match (decision, subscriber.as_deref()) {
            (Ok(grant), Some(subscriber)) => {
                let mut reply = response(packet, Code::AccessAccept);
                access::add_accept_attributes(
                    &mut reply.attributes,
                    subscriber,
                    nas.kind,
                    &self.backend.settings(),
                    now,
                );
                if let Some(success) = grant.mschap2_success {
                    reply.attributes.add(attrs::vendor_specific(
                        attrs::VENDOR_MICROSOFT,
                        attrs::MS_CHAP2_SUCCESS,
                        &success,
                    ));
                }
                if let Some(keys) = &grant.mppe {
                    add_mppe_keys(&mut reply.attributes, keys, secret, authenticator);
                }
                let bytes = encode(reply, authenticator, secret)?;
                Stats::bump(&self.stats.accepts);
                // Accepts are the bulk of the traffic: counted in Stats, logged only at debug
                // (an info line per accept cost about 30% of throughput in the benchmark).
                debug!(subscriber_id = subscriber.id, "accepted");
                return Ok(bytes);
            }
            // `decide` grants only a known subscriber; should that ever change, refuse.
            (Ok(_), None) => access::Refusal {
                reason: RejectReason::UnknownUser,
                mschap_error: None,
            },
            (Err(refusal), _) => refusal,
        };
        let mut reply = response(packet, Code::AccessReject);
        if let Some(error) = &refusal.mschap_error {
            reply.attributes.add(attrs::vendor_specific(
                attrs::VENDOR_MICROSOFT,
                attrs::MS_CHAP_ERROR,
                error,
            ));
        }
        let user = request.user_name.clone().unwrap_or_default();
        info!(nas = %nas.ip, %user, reason = ?refusal.reason, "rejected");
        let event = EventBody::AuthReject {
            username: user,
            nas_ip: nas.ip.clone(),
            reason: refusal.reason,
            calling_station_id: request.calling_station_id.clone(),
        };
        // The reject stands whether or not it could be journaled: letting someone in
        // because the disk is full would be worse than losing the record.
        if let Err(e) = self.backend.record(event) {
            error!(nas = %nas.ip, error = %ErrorChain(&e), "reject could not be journaled");
        }
        let bytes = encode(reply, authenticator, secret)?;
        self.stats.reject(refusal.reason);
        Ok(bytes)
    }

    fn accounting(
        &self,
        nas: &NasState,
        packet: &Packet,
        raw: &[u8],
        authenticator: &[u8; 16],
        key: Key,
    ) -> Result<Handled, Dropped> {
        let secret = nas.secret.as_bytes();
        if !authenticator::verify_accounting_request(raw, secret) {
            return Err(Dropped::BadAuthenticator(
                "accounting Request Authenticator",
            ));
        }
        if let Some(offset) =
            attrs::message_authenticator_offset(raw).map_err(Dropped::Malformed)?
            && !authenticator::verify_request_message_authenticator(raw, offset, secret)
        {
            return Err(Dropped::BadAuthenticator("Message-Authenticator"));
        }
        let request =
            accounting::parse(packet, &nas.ip, crate::clock::now()).map_err(Dropped::Malformed)?;
        let reply = encode(
            response_without_message_authenticator(packet, Code::AccountingResponse),
            authenticator,
            secret,
        )?;
        match request {
            AccountingRequest::Session(record) => {
                debug!(user = %record.username, session = %record.session_id, status = ?record.status, "accounting to record");
                // Sent only once the record is durable (`handle_batch`).
                Ok(Handled::Record(Box::new(Awaiting {
                    key,
                    event: Some(EventBody::Accounting(record)),
                    reply,
                })))
            }
            AccountingRequest::NasRestart { reason } => {
                let closed = self
                    .backend
                    .close_nas_sessions(&nas.ip, reason)
                    .map_err(|e| Dropped::Backend(Error::Backend(e)))?;
                info!(nas = %nas.ip, closed, reason, "NAS restarted: its sessions are closed");
                // Only now, with the sessions closed durably, may the NAS forget it
                // (RFC 2866 §2).
                Stats::bump(&self.stats.acct_records);
                Ok(Handled::Reply(reply))
            }
        }
    }

    /// Status-Server (RFC 5997): proof that this server is alive for this NAS. It must
    /// carry a valid Message-Authenticator (§3: one without is silently discarded, so it
    /// cannot be used to probe for secrets); it is never cached and changes nothing.
    fn status(
        &self,
        listener: Listener,
        packet: &Packet,
        raw: &[u8],
        authenticator: &[u8; 16],
        secret: &[u8],
    ) -> Result<Vec<u8>, Dropped> {
        match attrs::message_authenticator_offset(raw).map_err(Dropped::Malformed)? {
            None => return Err(Dropped::MissingMessageAuthenticator),
            Some(offset)
                if !authenticator::verify_request_message_authenticator(raw, offset, secret) =>
            {
                return Err(Dropped::BadAuthenticator("Message-Authenticator"));
            }
            Some(_) => {}
        }
        let bytes = encode(
            response(packet, listener.status_reply()),
            authenticator,
            secret,
        )?;
        Stats::bump(&self.stats.status_server);
        debug!("Status-Server answered");
        Ok(bytes)
    }

    fn count(&self, dropped: &Dropped, src: SocketAddr) {
        let s = &self.stats;
        match dropped {
            Dropped::UnknownNas => {
                Stats::bump(&s.unknown_nas);
                // Debug, not warn: anyone can send us datagrams; the counter is the signal.
                debug!(%src, "request from a source that is not a NAS of this site dropped");
            }
            Dropped::Malformed(e) => {
                Stats::bump(&s.malformed);
                debug!(%src, error = %e, "malformed request dropped");
            }
            Dropped::BadAuthenticator(which) => {
                Stats::bump(&s.bad_authenticator);
                warn!(%src, which, "request with a wrong authenticator dropped (forged, or the NAS has another secret)");
            }
            Dropped::MissingMessageAuthenticator => {
                Stats::bump(&s.missing_message_authenticator);
                warn!(%src, "request without Message-Authenticator dropped: a Status-Server, or an Access-Request from a NAS that must send it");
            }
            Dropped::InProgress => {
                Stats::bump(&s.duplicates_in_progress);
                debug!(%src, "retransmission of a request still in progress dropped");
            }
            Dropped::Backend(e) => {
                Stats::bump(&s.backend_errors);
                error!(%src, error = %ErrorChain(e), "request left unanswered");
            }
        }
    }

    /// The cache lock guards plain data updated in single calls, so a poisoned lock
    /// (a panic elsewhere while holding it) still holds a usable cache.
    fn cache(&self) -> MutexGuard<'_, ReplyCache> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The MPPE attributes of an MS-CHAPv2 Access-Accept (RFC 2548 §2.4): both keys
/// hidden with the secret and the request's authenticator under fresh salts (high bit
/// set, different from each other), encryption allowed rather than required (the NAS's
/// own policy decides), and 128-bit keys only: 40-bit RC4 protects nothing today.
fn add_mppe_keys(
    attributes: &mut Packet,
    keys: &super::mschapv2::MppeKeys,
    secret: &[u8],
    request_authenticator: &[u8; 16],
) {
    use super::mschapv2::hide_mppe_key;
    let salt: u16 = rand::random::<u16>() | 0x8000;
    let salts = [salt, (salt.wrapping_add(1)) | 0x8000].map(u16::to_be_bytes);
    let ms = |typ, value: &[u8]| attrs::vendor_specific(attrs::VENDOR_MICROSOFT, typ, value);
    attributes.add(ms(attrs::MS_MPPE_ENCRYPTION_POLICY, &1u32.to_be_bytes()));
    attributes.add(ms(attrs::MS_MPPE_ENCRYPTION_TYPES, &4u32.to_be_bytes()));
    let hidden = |key, salt| hide_mppe_key(key, secret, request_authenticator, salt);
    attributes.add(ms(attrs::MS_MPPE_SEND_KEY, &hidden(&keys.send, salts[0])));
    attributes.add(ms(
        attrs::MS_MPPE_RECV_KEY,
        &hidden(&keys.receive, salts[1]),
    ));
}

/// A reply being built: its code, and the codec's packet holding its attributes.
struct Reply {
    code: Code,
    /// Coded as an Access-Request: see [`encode`].
    attributes: Packet,
}

/// A reply to `request`, with a zeroed Message-Authenticator first (BlastRADIUS:
/// RFC 3579 allows it anywhere, but first is where a forged prefix cannot reach) and
/// the request's Proxy-State attributes copied back in order (RFC 2865 §5.33).
fn response(request: &Packet, code: Code) -> Reply {
    reply(request, code, true)
}

fn response_without_message_authenticator(request: &Packet, code: Code) -> Reply {
    reply(request, code, false)
}

fn reply(request: &Packet, code: Code, message_authenticator: bool) -> Reply {
    let mut attributes = request.make_response_packet(Code::AccessRequest);
    if message_authenticator {
        rfc2869::add_message_authenticator(&mut attributes, &[0; 16]);
    }
    for proxy_state in request.lookup_all(rfc2865::PROXY_STATE_TYPE) {
        attributes.add(proxy_state.clone());
    }
    Reply { code, attributes }
}

/// Encodes `reply` with the codec, then signs it (Message-Authenticator, Response
/// Authenticator).
///
/// The codec hashes a Response Authenticator into every reply it encodes, which
/// [`authenticator::sign_response`] has to redo anyway once Message-Authenticator is
/// filled in; a packet coded as an Access-Request it encodes without hashing, so the
/// reply is built as one and gets its real code in the bytes.
fn encode(
    reply: Reply,
    request_authenticator: &[u8; 16],
    secret: &[u8],
) -> Result<Vec<u8>, Dropped> {
    let mut bytes = reply
        .attributes
        .encode()
        .map_err(|e| Dropped::Backend(Error::Codec(e)))?;
    bytes[0] = reply.code as u8;
    authenticator::sign_response(&mut bytes, request_authenticator, secret);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use outpost_protocol::{NasKind, NasState, SiteSettings, SubscriberState};
    use radius::core::rfc2866;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::radius::memory::MemoryBackend;
    use crate::radius::{BackendError, mschapv2};
    use outpost_testkit::fixtures;

    const SECRET: &[u8] = b"s3cret";

    fn nas_addr() -> SocketAddr {
        "192.0.2.1:40000".parse().unwrap()
    }

    fn backend(require_message_authenticator: bool) -> MemoryBackend {
        let b = MemoryBackend::new(SiteSettings {
            acct_interim_interval_secs: 60,
            shaping_enabled: false,
        });
        b.upsert_nas(NasState {
            require_message_authenticator,
            ..fixtures::nas(1, "192.0.2.1", "s3cret", NasKind::Mikrotik)
        });
        b.upsert_subscriber(SubscriberState {
            expires_at: None,
            static_ipv4: Some("100.64.0.9".into()),
            rate: None,
            max_sessions: 2,
            ..fixtures::subscriber(1, "amina", "pa55")
        });
        b
    }

    /// A backend whose journal fails the first `failures` writes.
    struct FlakyJournal {
        inner: MemoryBackend,
        failures: AtomicU32,
    }

    impl Backend for FlakyJournal {
        fn nas(&self, ip: std::net::IpAddr) -> Option<Arc<NasState>> {
            self.inner.nas(ip)
        }
        fn subscriber(&self, username: &str) -> Option<Arc<SubscriberState>> {
            self.inner.subscriber(username)
        }
        fn settings(&self) -> SiteSettings {
            self.inner.settings()
        }
        fn online_sessions(&self, username: &str) -> u32 {
            self.inner.online_sessions(username)
        }
        fn record(&self, event: EventBody) -> Result<(), BackendError> {
            let left = self.failures.load(Ordering::SeqCst);
            if left > 0 {
                self.failures.store(left - 1, Ordering::SeqCst);
                return Err(BackendError::new(
                    "journal",
                    std::io::Error::other("disk full"),
                ));
            }
            self.inner.record(event)
        }
        fn close_nas_sessions(&self, nas_ip: &str, reason: &str) -> Result<u32, BackendError> {
            self.inner.close_nas_sessions(nas_ip, reason)
        }
    }

    fn accounting_start(session: &str) -> Vec<u8> {
        let mut p = Packet::new(Code::AccountingRequest, SECRET);
        rfc2866::add_acct_status_type(&mut p, rfc2866::ACCT_STATUS_TYPE_START);
        rfc2865::add_user_name(&mut p, "amina");
        rfc2866::add_acct_session_id(&mut p, session);
        p.encode().unwrap()
    }

    fn status_server(message_authenticator: Option<&[u8]>) -> Vec<u8> {
        let mut p = Packet::new(Code::StatusServer, SECRET);
        if message_authenticator.is_some() {
            rfc2869::add_message_authenticator(&mut p, &[0; 16]);
        }
        let mut bytes = p.encode().unwrap();
        if let Some(secret) = message_authenticator {
            authenticator::sign_request(&mut bytes, secret);
        }
        bytes
    }

    #[test]
    fn status_server_is_answered_per_port_only_when_signed_and_changes_nothing() {
        let backend = Arc::new(backend(false));
        let handler = Handler::new(backend.clone(), &Config::default());
        let signed = status_server(Some(SECRET));
        let request_auth: [u8; 16] = signed[4..20].try_into().unwrap();
        for (listener, code) in [
            (Listener::Auth, Code::AccessAccept),
            (Listener::Acct, Code::AccountingResponse),
            (Listener::Both, Code::AccessAccept),
        ] {
            let reply = handler
                .handle(listener, nas_addr(), &signed)
                .unwrap_or_else(|| panic!("{listener:?}: no answer"));
            assert_eq!(reply[0], code as u8, "{listener:?}");
            assert_eq!(reply[1], signed[1], "same identifier");
            assert!(
                authenticator::verify_response(&reply, &request_auth, SECRET),
                "{listener:?}: the answer is signed, with a Message-Authenticator"
            );
            assert!(
                attrs::message_authenticator_offset(&reply)
                    .unwrap()
                    .is_some()
            );
        }
        // Unsigned, signed with another secret, or from a stranger: silence.
        assert_eq!(
            handler.handle(Listener::Auth, nas_addr(), &status_server(None)),
            None
        );
        let forged = status_server(Some(b"not the secret"));
        assert_eq!(handler.handle(Listener::Acct, nas_addr(), &forged), None);
        let stranger: SocketAddr = "198.51.100.7:1000".parse().unwrap();
        assert_eq!(handler.handle(Listener::Auth, stranger, &signed), None);

        let s = handler.stats().snapshot();
        assert_eq!(
            (
                s.status_server,
                s.retransmissions,
                s.missing_message_authenticator,
                s.bad_authenticator,
                s.unknown_nas
            ),
            (3, 0, 1, 1, 1),
            "the same Status-Server thrice is answered thrice, never from the cache: {s:?}"
        );
        assert!(backend.journal().is_empty(), "nothing journaled");
        assert!(backend.sessions().is_empty(), "no session touched");
    }

    #[test]
    fn accounting_is_acknowledged_only_once_durable() {
        let backend = Arc::new(FlakyJournal {
            inner: backend(false),
            failures: AtomicU32::new(1),
        });
        let handler = Handler::new(backend.clone(), &Config::default());
        let start = accounting_start("s1");
        assert_eq!(
            handler.handle(Listener::Acct, nas_addr(), &start),
            None,
            "journal failed: no ack"
        );
        assert_eq!(backend.inner.sessions().len(), 0);
        // The NAS retransmits; the failure was not cached, so this time it is recorded.
        let reply = handler
            .handle(Listener::Acct, nas_addr(), &start)
            .expect("ack");
        assert_eq!(reply[0], Code::AccountingResponse as u8);
        assert_eq!(backend.inner.sessions().len(), 1);
        let s = handler.stats().snapshot();
        assert_eq!(
            (s.backend_errors, s.acct_records, s.retransmissions),
            (1, 1, 0),
            "{s:?}"
        );
    }

    #[test]
    fn a_retransmission_while_in_progress_is_dropped() {
        let handler = Handler::new(Arc::new(backend(false)), &Config::default());
        let start = accounting_start("s1");
        let key = Key {
            src: nas_addr(),
            code: start[0],
            identifier: start[1],
            authenticator: start[4..20].try_into().unwrap(),
        };
        assert_eq!(handler.cache().begin(key, Instant::now()), Lookup::New);
        assert_eq!(handler.handle(Listener::Acct, nas_addr(), &start), None);
        assert_eq!(handler.stats().snapshot().duplicates_in_progress, 1);
    }

    #[test]
    fn a_single_socket_serves_both_kinds_and_split_sockets_one_each() {
        let handler = Handler::new(Arc::new(backend(false)), &Config::default());
        let start = accounting_start("s1");
        assert!(handler.handle(Listener::Auth, nas_addr(), &start).is_none());
        assert!(handler.handle(Listener::Both, nas_addr(), &start).is_some());
        assert_eq!(handler.stats().snapshot().malformed, 1);
    }

    /// A valid, signed request of a random kind we handle, with fresh randomness (so
    /// seeds are not retransmissions of each other), for mutation.
    fn seed(rng: &mut StdRng) -> Vec<u8> {
        let kind = rng.gen_range(0..9);
        if kind >= 6 {
            let status = [1, 2, 3, 7, 8, 15][rng.gen_range(0..6)];
            let mut p = Packet::new(Code::AccountingRequest, SECRET);
            rfc2866::add_acct_status_type(&mut p, status);
            rfc2865::add_user_name(&mut p, "amina");
            rfc2866::add_acct_session_id(&mut p, &format!("s{}", rng.gen_range(0..4)));
            rfc2866::add_acct_input_octets(&mut p, rng.r#gen());
            return p.encode().unwrap();
        }
        let mut p = Packet::new(Code::AccessRequest, SECRET);
        if rng.gen_bool(0.8) {
            rfc2869::add_message_authenticator(&mut p, &[0; 16]);
        }
        rfc2865::add_user_name(&mut p, ["amina", "nobody"][usize::from(rng.gen_bool(0.1))]);
        rfc2865::add_calling_station_id(&mut p, "AA:BB:CC:00:11:22");
        let authenticator: [u8; 16] = p.get_authenticator().as_slice().try_into().unwrap();
        let password = ["pa55", "wrong"][usize::from(rng.gen_bool(0.3))];
        match kind {
            0 | 1 => rfc2865::add_user_password(&mut p, password.as_bytes()).unwrap(),
            2 | 3 => {
                let mut value = vec![9];
                value.extend(crate::radius::chap::response(
                    9,
                    password.as_bytes(),
                    &authenticator,
                ));
                rfc2865::add_chap_password(&mut p, &value);
            }
            _ => {
                let (auth, peer) = (rng.r#gen::<[u8; 16]>(), rng.r#gen::<[u8; 16]>());
                let r = mschapv2::Response {
                    ident: 1,
                    flags: 0,
                    peer_challenge: peer,
                    nt_response: mschapv2::generate_nt_response(&auth, &peer, "amina", password),
                };
                p.add(attrs::vendor_specific(
                    attrs::VENDOR_MICROSOFT,
                    attrs::MS_CHAP_CHALLENGE,
                    &auth,
                ));
                p.add(attrs::vendor_specific(
                    attrs::VENDOR_MICROSOFT,
                    attrs::MS_CHAP2_RESPONSE,
                    &r.to_bytes(),
                ));
            }
        }
        let mut bytes = p.encode().unwrap();
        authenticator::sign_request(&mut bytes, SECRET);
        bytes
    }

    fn mutate(rng: &mut StdRng, packet: &mut Vec<u8>) {
        for _ in 0..rng.gen_range(0..3) {
            match rng.gen_range(0..8) {
                0 if !packet.is_empty() => {
                    let i = rng.gen_range(0..packet.len());
                    packet[i] ^= 1 << rng.gen_range(0..8);
                }
                1 => packet.truncate(rng.gen_range(0..=packet.len())),
                2 => packet.extend((0..rng.gen_range(0..40)).map(|_| rng.r#gen::<u8>())),
                3 if packet.len() >= 4 => {
                    let len: u16 = rng.gen_range(0..5000);
                    packet[2..4].copy_from_slice(&len.to_be_bytes());
                }
                4 => {
                    // A random attribute, sometimes with a lying length.
                    let typ = [80, 26, 1, 2, 3, 40, 44, 79, rng.r#gen()][rng.gen_range(0..9)];
                    let len = rng.gen_range(0..40u8);
                    packet.push(typ);
                    packet.push(if rng.gen_bool(0.8) {
                        len + 2
                    } else {
                        rng.r#gen()
                    });
                    packet.extend((0..len).map(|_| rng.r#gen::<u8>()));
                }
                5 if packet.len() >= 4 => {
                    // Keep the Length field honest so the mutation reaches the handler.
                    let len = u16::try_from(packet.len().min(4096)).unwrap_or(4096);
                    packet[2..4].copy_from_slice(&len.to_be_bytes());
                }
                _ if !packet.is_empty() => {
                    packet[0] = [1, 4, 2, 5, 11, 12, 40, 43, rng.r#gen()][rng.gen_range(0..9)]
                }
                _ => {}
            }
        }
    }

    /// Every answer must be a well-signed reply of the right kind to its request.
    fn check_reply(packet: &[u8], reply: &[u8]) {
        let request_authenticator: [u8; 16] = packet[4..20].try_into().unwrap();
        assert!(
            authenticator::verify_response(reply, &request_authenticator, SECRET),
            "{packet:02x?}"
        );
        let decoded = Packet::decode(reply, SECRET).unwrap();
        assert_eq!(decoded.get_identifier(), packet[1]);
        let expected: &[Code] = match Code::from(packet[0]) {
            Code::AccessRequest => &[Code::AccessAccept, Code::AccessReject],
            Code::AccountingRequest => &[Code::AccountingResponse],
            Code::StatusServer => &[Code::AccessAccept, Code::AccountingResponse],
            other => panic!("answered a {other:?}"),
        };
        assert!(
            expected.contains(&decoded.get_code()),
            "{:?}",
            decoded.get_code()
        );
    }

    /// The fallback for when no fuzzer runs: thousands of seeded random and mutated
    /// packets, half re-signed so they get past authentication, some sent twice. Nothing
    /// may panic, every answer must be a well-signed reply to its request, and every
    /// datagram must land in exactly one counter.
    #[test]
    fn random_and_mutated_packets_never_panic() {
        let mut rng = StdRng::seed_from_u64(2759);
        let handler = Handler::new(Arc::new(backend(true)), &Config::default());
        let stranger: SocketAddr = "198.51.100.7:1812".parse().unwrap();
        const N: u64 = 6000;
        let mut sent = 0;
        for i in 0..N {
            let mut packet = match i % 10 {
                0 => (0..rng.gen_range(0..300))
                    .map(|_| rng.r#gen::<u8>())
                    .collect(),
                _ => seed(&mut rng),
            };
            mutate(&mut rng, &mut packet);
            if rng.gen_bool(0.5) {
                authenticator::sign_request(&mut packet, SECRET);
            }
            let listener = match packet.first() {
                _ if rng.gen_bool(0.1) => [Listener::Auth, Listener::Acct][rng.gen_range(0..2)],
                Some(1) => Listener::Auth,
                Some(4) => Listener::Acct,
                _ => Listener::Both,
            };
            let src = if rng.gen_bool(0.95) {
                nas_addr()
            } else {
                stranger
            };
            // Now and then the NAS retransmits.
            let times = if rng.gen_bool(0.05) { 2 } else { 1 };
            for _ in 0..times {
                sent += 1;
                if let Some(reply) = handler.handle(listener, src, &packet) {
                    check_reply(&packet, &reply);
                }
            }
        }
        let s = handler.stats().snapshot();
        let outcomes = s.accepts
            + s.rejects
            + s.unknown_nas
            + s.bad_authenticator
            + s.missing_message_authenticator
            + s.malformed
            + s.retransmissions
            + s.duplicates_in_progress
            + s.acct_records
            + s.status_server
            + s.backend_errors;
        assert_eq!((s.requests, outcomes), (sent, sent), "{s:?}");
        // The mutations must reach deep, not just bounce off the first check.
        for (name, n) in [
            ("accepts", s.accepts),
            ("rejects", s.rejects),
            ("acct_records", s.acct_records),
            ("bad_authenticator", s.bad_authenticator),
            ("malformed", s.malformed),
            ("unknown_nas", s.unknown_nas),
            (
                "missing_message_authenticator",
                s.missing_message_authenticator,
            ),
            ("retransmissions", s.retransmissions),
        ] {
            assert!(n > 0, "no {name}: {s:?}");
        }
    }
}
