//! A RADIUS load generator: PAP Access-Requests (right or wrong passwords) or
//! Accounting-Requests (Start, Interim-Update, Stop) over several UDP sockets, in one of
//! two ways:
//!
//! - closed loop ([`run`], [`run_blocking`]): each socket keeps a window of requests
//!   outstanding, the way a busy NAS (or many of them) does; this finds a server's
//!   maximum rate;
//! - paced, open loop ([`run_paced`]): each [`PacedLane`] sends at a fixed rate,
//!   request `n` at `start + n / rate` whether or not earlier ones were answered, and a
//!   request's latency runs from that scheduled time, not from when it actually left:
//!   a server (or a generator) that falls behind shows it in the latency instead of
//!   quietly slowing the sender down (no coordinated omission). Several lanes run
//!   together, e.g. a flood of wrong passwords beside a stream of valid logins. How late
//!   the generator itself sent is reported apart ([`LoadReport::lateness`]).
//!
//! radclient tops out near 15k requests/s on the benchmark machine, below the rates we
//! want to measure, so the benchmark drives both servers with this instead. Every
//! request gets a fresh random Request Authenticator (so a server's reply cache never
//! answers it from an earlier request with the same Identifier) and every reply is
//! checked like a NAS checks it (Response Authenticator and Message-Authenticator)
//! before it counts.
//!
//! Each closed-loop socket runs as one task; on a current-thread runtime
//! ([`run_blocking`]) the whole generator is one thread, so pinning the process pins
//! the generator. The paced lanes run on the calling thread, waiting in `ppoll` when
//! the next send is far and spinning when it is near, so it sends on time.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use outpost_agent::radius::authenticator;
use radius::core::code::Code;
use radius::core::packet::Packet;
use radius::core::{rfc2865, rfc2866, rfc2869};
use tokio::net::UdpSocket;

/// The login of subscriber `k`, shared by every server the benchmark sets up.
pub fn username(k: u64) -> String {
    format!("user{k}")
}

/// The password of subscriber `k`.
pub fn password(k: u64) -> String {
    format!("pass{k}")
}

/// What the requests ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequestKind {
    /// PAP Access-Request with the subscriber's password: accepted.
    #[default]
    Pap,
    /// PAP Access-Request with a wrong password: rejected.
    WrongPassword,
    /// Accounting-Request: request `i` is record `i % 3` (Start, Interim-Update, Stop)
    /// of session `i / 3` ([`accounting_record`]).
    Accounting,
}

/// Which accounting record request `i` of a [`RequestKind::Accounting`] run is:
/// its Acct-Session-Id (`prefix` then the session number) and status.
pub fn accounting_record(prefix: &str, i: u64) -> (String, outpost_protocol::AcctStatus) {
    use outpost_protocol::AcctStatus;
    let status = [
        AcctStatus::Start,
        AcctStatus::InterimUpdate,
        AcctStatus::Stop,
    ][(i % 3) as usize];
    (format!("{prefix}{:08x}", i / 3), status)
}

/// What to send, where, and how hard.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The server's auth socket.
    pub target: SocketAddr,
    /// The NAS's shared secret.
    pub secret: Vec<u8>,
    /// Sent as NAS-IP-Address; the servers identify the NAS by the source address, so
    /// this is only what a real NAS would put there.
    pub nas_ip: Ipv4Addr,
    /// Request `i` (counting from 0 over the whole run) logs in as subscriber
    /// `i % users`.
    pub users: u64,
    /// Stop issuing requests after this many...
    pub requests: u64,
    /// ...or after this long, whichever comes first; then wait for what is outstanding.
    pub max_duration: Duration,
    /// UDP sockets (each is its own source port, hence its own Identifier space).
    pub sockets: usize,
    /// Requests outstanding per socket, 1..=255: the Identifier is the only thing that
    /// tells replies on one socket apart, and one Identifier is kept spare so a
    /// timed-out one is not reused at once.
    pub window: usize,
    /// A request unanswered this long counts as a timeout and its slot is reused.
    pub timeout: Duration,
    /// Whether Access-Requests carry Message-Authenticator (RFC 3579 §3.2), as servers
    /// that mitigate BlastRADIUS require.
    pub message_authenticator: bool,
    /// What to send.
    pub kind: RequestKind,
    /// Starts every Acct-Session-Id, so runs against the same server do not resend
    /// each other's sessions; random by default.
    pub session_prefix: String,
    /// Keep the index of every answered request ([`LoadReport::answered_requests`]).
    pub keep_answered: bool,
}

impl LoadConfig {
    /// A config for `target` with the benchmark's defaults: 8 sockets × 32 outstanding,
    /// 1 s timeout, Message-Authenticator on, 200,000 requests or 10 s.
    pub fn new(target: SocketAddr, secret: &str, users: u64) -> Self {
        Self {
            target,
            secret: secret.as_bytes().to_vec(),
            nas_ip: Ipv4Addr::LOCALHOST,
            users,
            requests: 200_000,
            max_duration: Duration::from_secs(10),
            sockets: 8,
            window: 32,
            timeout: Duration::from_secs(1),
            message_authenticator: true,
            kind: RequestKind::Pap,
            session_prefix: format!("{:08x}-", rand::random::<u32>()),
            keep_answered: false,
        }
    }
}

/// What one run of the generator saw.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Requests sent (each once; a timed-out request is not retransmitted).
    pub sent: u64,
    /// Verified Access-Accepts.
    pub accepts: u64,
    /// Verified Access-Rejects.
    pub rejects: u64,
    /// Verified Accounting-Responses.
    pub accounting_responses: u64,
    /// Verified replies of any other code (e.g. Access-Challenge).
    pub other: u64,
    /// Requests left unanswered for [`LoadConfig::timeout`].
    pub timeouts: u64,
    /// Datagrams that answer no outstanding request or fail verification: late answers
    /// to timed-out requests, or a server signing wrongly.
    pub unmatched: u64,
    /// From the first request sent to the last reply received (trailing timeouts, when
    /// the server is idle, do not stretch it).
    pub elapsed: Duration,
    /// Round-trip time of every verified reply, in microseconds, sorted. Paced: from
    /// the time the request was due, not the time it was sent.
    latencies_us: Vec<u32>,
    /// Paced only: how late the generator sent each request after it was due,
    /// microseconds, sorted.
    lateness_us: Vec<u32>,
    /// The index of every answered request, when [`LoadConfig::keep_answered`].
    answered: Vec<u64>,
}

impl LoadReport {
    /// Requests that got a verified answer.
    pub fn answered(&self) -> u64 {
        self.accepts + self.rejects + self.accounting_responses + self.other
    }

    /// The indices of the requests that got a verified answer, sorted (only with
    /// [`LoadConfig::keep_answered`]).
    pub fn answered_requests(&self) -> &[u64] {
        &self.answered
    }

    /// The `q` quantile of how late the paced generator sent its requests; `None`
    /// for a closed-loop run.
    pub fn lateness(&self, q: f64) -> Option<Duration> {
        quantile(&self.lateness_us, q)
    }

    /// Verified answers per second of [`LoadReport::elapsed`].
    pub fn per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.answered() as f64 / secs
        } else {
            0.0
        }
    }

    /// The `q` quantile (0 < q ≤ 1) of the round-trip times, if anything was answered.
    pub fn latency(&self, q: f64) -> Option<Duration> {
        quantile(&self.latencies_us, q)
    }

    /// How many round-trip times were recorded (one per verified reply).
    pub fn latency_samples(&self) -> usize {
        self.latencies_us.len()
    }

    fn merge(&mut self, tally: Tally, start: Instant) {
        self.sent += tally.sent;
        self.accepts += tally.accepts;
        self.rejects += tally.rejects;
        self.accounting_responses += tally.accounting_responses;
        self.other += tally.other;
        self.timeouts += tally.timeouts;
        self.unmatched += tally.unmatched;
        if let Some(last) = tally.last_reply {
            self.elapsed = self.elapsed.max(last.duration_since(start));
        }
        self.latencies_us.extend(tally.latencies_us);
        self.lateness_us.extend(tally.lateness_us);
        self.answered.extend(tally.answered);
    }

    fn sort(&mut self) {
        self.latencies_us.sort_unstable();
        self.lateness_us.sort_unstable();
        self.answered.sort_unstable();
    }
}

/// The `q` quantile (nearest rank: the smallest value with at least q·n values at or
/// below it) of sorted microseconds.
fn quantile(sorted_us: &[u32], q: f64) -> Option<Duration> {
    let n = sorted_us.len();
    if n == 0 {
        return None;
    }
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    Some(Duration::from_micros(u64::from(sorted_us[rank - 1])))
}

/// Runs the load on a current-thread runtime of its own, so the generator is one
/// thread (pin the calling process and the generator is pinned).
pub fn run_blocking(config: &LoadConfig) -> io::Result<LoadReport> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(config))
}

/// Runs the load on the current tokio runtime and reports what came back.
pub async fn run(config: &LoadConfig) -> io::Result<LoadReport> {
    if !(1..=255).contains(&config.window) || config.sockets == 0 || config.users == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "window must be 1..=255, sockets and users at least 1",
        ));
    }
    let config = Arc::new(config.clone());
    let start = Instant::now();
    let budget = Arc::new(Budget {
        next: AtomicU64::new(0),
        total: config.requests,
        deadline: start + config.max_duration,
    });
    let local: SocketAddr = if config.target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let mut tasks = Vec::with_capacity(config.sockets);
    for _ in 0..config.sockets {
        let socket = UdpSocket::bind(local).await?;
        // Connected, so the kernel drops datagrams from anyone but the server.
        socket.connect(config.target).await?;
        tasks.push(tokio::spawn(drive(socket, config.clone(), budget.clone())));
    }
    let mut report = LoadReport::default();
    for task in tasks {
        let tally = task.await.map_err(io::Error::other)??;
        report.merge(tally, start);
    }
    report.sort();
    Ok(report)
}

/// The requests left to issue, shared by the sockets.
struct Budget {
    next: AtomicU64,
    total: u64,
    deadline: Instant,
}

impl Budget {
    /// The index of the next request to send, or `None` once the run is over.
    fn take(&self) -> Option<u64> {
        if Instant::now() >= self.deadline {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.total).then_some(i)
    }
}

/// One socket's counts.
#[derive(Default)]
struct Tally {
    sent: u64,
    accepts: u64,
    rejects: u64,
    accounting_responses: u64,
    other: u64,
    timeouts: u64,
    unmatched: u64,
    last_reply: Option<Instant>,
    latencies_us: Vec<u32>,
    lateness_us: Vec<u32>,
    answered: Vec<u64>,
}

/// An outstanding request, kept under its Identifier.
#[derive(Clone, Copy)]
struct Slot {
    /// When it was sent (closed loop) or due (paced): latency runs from here.
    sent_at: Instant,
    authenticator: [u8; 16],
    /// Its index in the run.
    index: u64,
}

/// How often a waiting socket looks for expired requests; timeouts are at most this
/// late, which is fine next to a timeout of a second.
const EXPIRY_TICK: Duration = Duration::from_millis(20);

/// One socket: keep `window` requests outstanding until the budget runs out, then wait
/// for the last answers.
async fn drive(
    socket: UdpSocket,
    config: Arc<LoadConfig>,
    budget: Arc<Budget>,
) -> io::Result<Tally> {
    let secret = config.secret.as_slice();
    let mut tally = Tally::default();
    let mut slots: [Option<Slot>; 256] = [None; 256];
    // Identifiers are taken from the front and returned to the back, so the one
    // a timed-out request used is the last to be reused.
    let mut free: VecDeque<u8> = (0..=255).collect();
    let mut outstanding = 0usize;
    let mut next_expiry_check = Instant::now() + EXPIRY_TICK;
    let mut buf = [0u8; 4096];
    loop {
        while outstanding < config.window {
            let Some(i) = budget.take() else { break };
            let id = free
                .pop_front()
                .unwrap_or_else(|| unreachable!("window ≤ 255 leaves a free Identifier"));
            let (datagram, request_authenticator) = request(&config, id, i)?;
            socket.send(&datagram).await?;
            slots[usize::from(id)] = Some(Slot {
                sent_at: Instant::now(),
                authenticator: request_authenticator,
                index: i,
            });
            outstanding += 1;
            tally.sent += 1;
        }
        if outstanding == 0 {
            return Ok(tally);
        }
        match socket.try_recv(&mut buf) {
            Ok(len) => {
                if take_reply(
                    &buf[..len],
                    &mut slots,
                    secret,
                    config.keep_answered,
                    &mut tally,
                ) {
                    free.push_back(buf[1]);
                    outstanding -= 1;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Nothing to read: sleep until readable, but wake up in time to
                // expire what the server will never answer.
                let _ = tokio::time::timeout(EXPIRY_TICK, socket.readable()).await;
            }
            // ICMP port unreachable from an earlier send (the server is not up yet, or
            // has died): the request it was for times out on its own.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        if now >= next_expiry_check {
            next_expiry_check = now + EXPIRY_TICK;
            for (id, slot) in slots.iter_mut().enumerate() {
                if slot.is_some_and(|s| now.duration_since(s.sent_at) >= config.timeout) {
                    *slot = None;
                    free.push_back(id as u8);
                    outstanding -= 1;
                    tally.timeouts += 1;
                }
            }
        }
    }
}

/// Counts one received datagram. Returns whether it answered the request outstanding
/// under its Identifier (whose slot is then emptied).
fn take_reply(
    reply: &[u8],
    slots: &mut [Option<Slot>; 256],
    secret: &[u8],
    keep_answered: bool,
    tally: &mut Tally,
) -> bool {
    let now = Instant::now();
    let Some(&id) = reply.get(1) else {
        tally.unmatched += 1;
        return false;
    };
    let slot = &mut slots[usize::from(id)];
    // A reply that does not verify may be the late answer to an earlier occupant of
    // the slot: the current request stays outstanding.
    let Some(request) = slot
        .take_if(|request| authenticator::verify_response(reply, &request.authenticator, secret))
    else {
        tally.unmatched += 1;
        return false;
    };
    match reply[0] {
        2 => tally.accepts += 1,
        3 => tally.rejects += 1,
        5 => tally.accounting_responses += 1,
        _ => tally.other += 1,
    }
    if keep_answered {
        tally.answered.push(request.index);
    }
    let rtt = now.duration_since(request.sent_at).as_micros();
    tally
        .latencies_us
        .push(u32::try_from(rtt).unwrap_or(u32::MAX));
    tally.last_reply = Some(now);
    true
}

/// Builds request `i` of the run with Identifier `id`; returns the datagram and its
/// Request Authenticator.
fn request(config: &LoadConfig, id: u8, i: u64) -> io::Result<(Vec<u8>, [u8; 16])> {
    match config.kind {
        RequestKind::Pap => access_request(config, id, i % config.users, true),
        RequestKind::WrongPassword => access_request(config, id, i % config.users, false),
        RequestKind::Accounting => accounting_request(config, id, i),
    }
}

/// Builds Accounting-Request `i` ([`accounting_record`]) for subscriber
/// `(i / 3) % users`, with what a NAS puts in each record.
fn accounting_request(config: &LoadConfig, id: u8, i: u64) -> io::Result<(Vec<u8>, [u8; 16])> {
    use outpost_protocol::AcctStatus;
    let secret = config.secret.as_slice();
    let (session_id, status) = accounting_record(&config.session_prefix, i);
    let session = i / 3;
    let k = session % config.users;
    let mut packet = Packet::new_with_identifier(Code::AccountingRequest, secret, id);
    rfc2866::add_acct_status_type(
        &mut packet,
        match status {
            AcctStatus::Start => rfc2866::ACCT_STATUS_TYPE_START,
            AcctStatus::InterimUpdate => rfc2866::ACCT_STATUS_TYPE_INTERIM_UPDATE,
            AcctStatus::Stop => rfc2866::ACCT_STATUS_TYPE_STOP,
        },
    );
    rfc2865::add_user_name(&mut packet, &username(k));
    rfc2866::add_acct_session_id(&mut packet, &session_id);
    rfc2865::add_nas_ip_address(&mut packet, &config.nas_ip);
    rfc2865::add_nas_port(&mut packet, session as u32);
    rfc2865::add_framed_ip_address(
        &mut packet,
        &Ipv4Addr::new(10, 64 + (k >> 16) as u8, (k >> 8) as u8, k as u8),
    );
    rfc2866::add_acct_delay_time(&mut packet, 0);
    if status != AcctStatus::Start {
        let phase = (i % 3) as u32;
        rfc2866::add_acct_session_time(&mut packet, 1800 * phase);
        rfc2866::add_acct_input_octets(&mut packet, 61_728_394 * phase);
        rfc2866::add_acct_output_octets(&mut packet, 493_827_160 * phase);
    }
    if status == AcctStatus::Stop {
        rfc2866::add_acct_terminate_cause(&mut packet, rfc2866::ACCT_TERMINATE_CAUSE_USER_REQUEST);
    }
    // The codec computes the accounting Request Authenticator (RFC 2866 §3).
    let datagram = packet.encode().map_err(io::Error::other)?;
    let mut request_authenticator = [0u8; 16];
    request_authenticator.copy_from_slice(&datagram[4..20]);
    Ok((datagram, request_authenticator))
}

/// Builds a signed Access-Request for subscriber `k` with Identifier `id`, with its
/// password or (`right_password` false) a wrong one; returns the datagram and its
/// Request Authenticator (random, from the codec).
fn access_request(
    config: &LoadConfig,
    id: u8,
    k: u64,
    right_password: bool,
) -> io::Result<(Vec<u8>, [u8; 16])> {
    let secret = config.secret.as_slice();
    let mut packet = Packet::new_with_identifier(Code::AccessRequest, secret, id);
    // Message-Authenticator first, as RFC 3579 advises since BlastRADIUS; the value is
    // filled in by `sign_request` once the packet is encoded.
    if config.message_authenticator {
        rfc2869::add_message_authenticator(&mut packet, &[0; 16]);
    }
    rfc2865::add_user_name(&mut packet, &username(k));
    let password = if right_password {
        password(k)
    } else {
        format!("wrong{k}")
    };
    rfc2865::add_user_password(&mut packet, password.as_bytes()).map_err(io::Error::other)?;
    rfc2865::add_nas_ip_address(&mut packet, &config.nas_ip);
    let mut datagram = packet.encode().map_err(io::Error::other)?;
    authenticator::sign_request(&mut datagram, secret);
    let mut request_authenticator = [0u8; 16];
    request_authenticator.copy_from_slice(&datagram[4..20]);
    Ok((datagram, request_authenticator))
}

// ---------------------------------------------------------------- paced, open loop

/// A stream of requests at a fixed rate for [`run_paced`].
#[derive(Debug, Clone)]
pub struct PacedLane {
    /// What to send and where. `requests` and `max_duration` bound the lane (it sends
    /// `min(requests, rate × max_duration)`); `window` bounds what each socket has
    /// outstanding (a request due while every socket's window is full waits, and its
    /// wait counts in its latency); `keep_answered` is honoured.
    pub load: LoadConfig,
    /// Requests per second, spread evenly: request `n` is due at `start + n / rate`.
    pub rate: f64,
}

impl PacedLane {
    fn total(&self) -> u64 {
        let by_time = (self.rate * self.load.max_duration.as_secs_f64()).ceil() as u64;
        self.load.requests.min(by_time)
    }
}

/// One socket of a paced lane.
struct PacedSocket {
    socket: std::net::UdpSocket,
    slots: [Option<Slot>; 256],
    free: VecDeque<u8>,
    outstanding: usize,
}

/// A lane's progress.
struct PacedState {
    lane: PacedLane,
    total: u64,
    next: u64,
    sockets: Vec<PacedSocket>,
    tally: Tally,
}

/// Runs `lanes` together, each at its own fixed rate, on this thread (pin the process
/// and the generator is pinned), and reports each lane's answers. Latency is measured
/// from when each request was due (see the module docs).
pub fn run_paced(lanes: &[PacedLane]) -> io::Result<Vec<LoadReport>> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    for lane in lanes {
        let c = &lane.load;
        if !(1..=255).contains(&c.window) || c.sockets == 0 || c.users == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "window must be 1..=255, sockets and users at least 1",
            ));
        }
        if !(lane.rate.is_finite() && lane.rate > 0.0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a paced lane needs a positive rate",
            ));
        }
    }
    let mut states = Vec::with_capacity(lanes.len());
    for lane in lanes {
        let local: SocketAddr = if lane.load.target.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let mut sockets = Vec::with_capacity(lane.load.sockets);
        for _ in 0..lane.load.sockets {
            let socket = std::net::UdpSocket::bind(local)?;
            socket.connect(lane.load.target)?;
            socket.set_nonblocking(true)?;
            sockets.push(PacedSocket {
                socket,
                slots: [None; 256],
                free: (0..=255).collect(),
                outstanding: 0,
            });
        }
        states.push(PacedState {
            lane: lane.clone(),
            total: lane.total(),
            next: 0,
            sockets,
            tally: Tally::default(),
        });
    }
    let start = Instant::now() + Duration::from_millis(1);
    let mut next_expiry_check = start + EXPIRY_TICK;
    let mut buf = [0u8; 4096];
    loop {
        let mut busy = false;
        let now = Instant::now();
        let mut next_due: Option<Instant> = None;
        for state in &mut states {
            let config = &state.lane.load;
            while state.next < state.total {
                let due = start + Duration::from_secs_f64(state.next as f64 / state.lane.rate);
                if due > now {
                    next_due = Some(next_due.map_or(due, |d| d.min(due)));
                    break;
                }
                // Its own socket in turn, or any other with room.
                let n = state.sockets.len();
                let first = (state.next % n as u64) as usize;
                let Some(k) = (0..n)
                    .map(|j| (first + j) % n)
                    .find(|&k| state.sockets[k].outstanding < config.window)
                else {
                    break;
                };
                let socket = &mut state.sockets[k];
                let id = socket
                    .free
                    .pop_front()
                    .unwrap_or_else(|| unreachable!("window ≤ 255 leaves a free Identifier"));
                let (datagram, request_authenticator) = request(config, id, state.next)?;
                match socket.socket.send(&datagram) {
                    Ok(_) => {}
                    // The server is not there (yet): the request times out on its own.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                    Err(e) => return Err(e),
                }
                let late = Instant::now().saturating_duration_since(due).as_micros();
                state
                    .tally
                    .lateness_us
                    .push(u32::try_from(late).unwrap_or(u32::MAX));
                socket.slots[usize::from(id)] = Some(Slot {
                    sent_at: due,
                    authenticator: request_authenticator,
                    index: state.next,
                });
                socket.outstanding += 1;
                state.tally.sent += 1;
                state.next += 1;
                busy = true;
            }
            for socket in &mut state.sockets {
                loop {
                    match socket.socket.recv(&mut buf) {
                        Ok(len) => {
                            busy = true;
                            if take_reply(
                                &buf[..len],
                                &mut socket.slots,
                                &config.secret,
                                config.keep_answered,
                                &mut state.tally,
                            ) {
                                socket.free.push_back(buf[1]);
                                socket.outstanding -= 1;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        let now = Instant::now();
        if now >= next_expiry_check {
            next_expiry_check = now + EXPIRY_TICK;
            for state in &mut states {
                let timeout = state.lane.load.timeout;
                for socket in &mut state.sockets {
                    for (id, slot) in socket.slots.iter_mut().enumerate() {
                        if slot.is_some_and(|s| now.saturating_duration_since(s.sent_at) >= timeout)
                        {
                            *slot = None;
                            socket.free.push_back(id as u8);
                            socket.outstanding -= 1;
                            state.tally.timeouts += 1;
                        }
                    }
                }
            }
        }
        let done = states
            .iter()
            .all(|s| s.next >= s.total && s.sockets.iter().all(|k| k.outstanding == 0));
        if done {
            break;
        }
        if busy {
            continue;
        }
        // Idle: wait for a reply, but not past the next due send or expiry check.
        // `poll` counts whole milliseconds, so the last two before a send are spun.
        let until = next_due.map_or(next_expiry_check, |d| d.min(next_expiry_check));
        let wait = until.saturating_duration_since(now);
        if wait >= Duration::from_millis(2) {
            let mut fds: Vec<PollFd<'_>> = states
                .iter()
                .flat_map(|s| &s.sockets)
                .map(|k| PollFd::new(k.socket.as_fd(), PollFlags::POLLIN))
                .collect();
            let ms = u16::try_from(wait.as_millis() - 1).unwrap_or(u16::MAX);
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        } else {
            std::hint::spin_loop();
        }
    }
    Ok(states
        .into_iter()
        .map(|state| {
            let mut report = LoadReport::default();
            report.merge(state.tally, start);
            report.sort();
            report
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_a_password_the_server_can_read_and_a_valid_message_authenticator() {
        let config = LoadConfig::new("127.0.0.1:1812".parse().unwrap(), "s3cret", 10);
        let (datagram, ra) = access_request(&config, 7, 3, true).unwrap();
        assert_eq!(datagram[0], 1);
        assert_eq!(datagram[1], 7);
        let packet = Packet::decode(&datagram, b"s3cret").unwrap();
        assert_eq!(
            rfc2865::lookup_user_name(&packet).unwrap().unwrap(),
            "user3"
        );
        let hidden = packet
            .lookup(rfc2865::USER_PASSWORD_TYPE)
            .unwrap()
            .encode_bytes();
        assert_eq!(
            outpost_agent::radius::pap::decode_user_password(&hidden, b"s3cret", &ra).unwrap(),
            b"pass3"
        );
        // Message-Authenticator is the first attribute: type 80, length 18.
        assert_eq!(&datagram[20..22], &[80, 18]);
        assert!(authenticator::verify_request_message_authenticator(
            &datagram, 22, b"s3cret"
        ));
        assert!(!authenticator::verify_request_message_authenticator(
            &datagram, 22, b"other"
        ));
    }

    #[test]
    fn each_request_gets_its_own_authenticator() {
        let config = LoadConfig::new("127.0.0.1:1812".parse().unwrap(), "s", 10);
        let (_, a) = access_request(&config, 1, 1, true).unwrap();
        let (_, b) = access_request(&config, 1, 1, true).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn without_message_authenticator_the_user_name_comes_first() {
        let mut config = LoadConfig::new("127.0.0.1:1812".parse().unwrap(), "s", 10);
        config.message_authenticator = false;
        let (datagram, _) = access_request(&config, 1, 1, true).unwrap();
        assert_eq!(datagram[20], 1, "User-Name");
        let packet = Packet::decode(&datagram, b"s").unwrap();
        assert_eq!(rfc2869::lookup_message_authenticator(&packet), None);
    }

    #[test]
    fn latency_quantiles_use_the_nearest_rank() {
        let report = LoadReport {
            latencies_us: (1..=100).collect(),
            ..LoadReport::default()
        };
        assert_eq!(report.latency(0.99), Some(Duration::from_micros(99)));
        assert_eq!(report.latency(0.5), Some(Duration::from_micros(50)));
        assert_eq!(report.latency(1.0), Some(Duration::from_micros(100)));
        assert_eq!(LoadReport::default().latency(0.99), None);
    }

    #[tokio::test]
    async fn a_window_beyond_the_identifier_space_is_refused() {
        let mut config = LoadConfig::new("127.0.0.1:9".parse().unwrap(), "s", 10);
        config.window = 256;
        assert_eq!(
            run(&config).await.unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
