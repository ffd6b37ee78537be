//! A RADIUS load generator: PAP Access-Requests over several UDP sockets, each keeping a
//! window of requests outstanding, the way a busy NAS (or many of them) does.
//!
//! radclient tops out near 15k requests/s on the benchmark machine, below the rates we
//! want to measure, so the benchmark drives both servers with this instead. Every
//! request gets a fresh random Request Authenticator (so a server's reply cache never
//! answers it from an earlier request with the same Identifier) and every reply is
//! checked like a NAS checks it (Response Authenticator and Message-Authenticator)
//! before it counts.
//!
//! Each socket runs as one task; on a current-thread runtime ([`run_blocking`]) the
//! whole generator is one thread, so pinning the process pins the generator.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use outpost_agent::radius::authenticator;
use radius::core::code::Code;
use radius::core::packet::Packet;
use radius::core::{rfc2865, rfc2869};
use tokio::net::UdpSocket;

/// The login of subscriber `k`, shared by every server the benchmark sets up.
pub fn username(k: u64) -> String {
    format!("user{k}")
}

/// The password of subscriber `k`.
pub fn password(k: u64) -> String {
    format!("pass{k}")
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
    /// Whether requests carry Message-Authenticator (RFC 3579 §3.2), as servers that
    /// mitigate BlastRADIUS require.
    pub message_authenticator: bool,
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
    /// Round-trip time of every verified reply, in microseconds, sorted.
    latencies_us: Vec<u32>,
}

impl LoadReport {
    /// Requests that got a verified answer.
    pub fn answered(&self) -> u64 {
        self.accepts + self.rejects + self.other
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
        let n = self.latencies_us.len();
        if n == 0 {
            return None;
        }
        // Nearest rank: the smallest value with at least q·n values at or below it.
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        Some(Duration::from_micros(u64::from(
            self.latencies_us[rank - 1],
        )))
    }

    /// How many round-trip times were recorded (one per verified reply).
    pub fn latency_samples(&self) -> usize {
        self.latencies_us.len()
    }

    fn merge(&mut self, tally: Tally, start: Instant) {
        self.sent += tally.sent;
        self.accepts += tally.accepts;
        self.rejects += tally.rejects;
        self.other += tally.other;
        self.timeouts += tally.timeouts;
        self.unmatched += tally.unmatched;
        if let Some(last) = tally.last_reply {
            self.elapsed = self.elapsed.max(last.duration_since(start));
        }
        self.latencies_us.extend(tally.latencies_us);
    }
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
    report.latencies_us.sort_unstable();
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
    other: u64,
    timeouts: u64,
    unmatched: u64,
    last_reply: Option<Instant>,
    latencies_us: Vec<u32>,
}

/// An outstanding request, kept under its Identifier.
#[derive(Clone, Copy)]
struct Slot {
    sent_at: Instant,
    authenticator: [u8; 16],
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
            let (datagram, request_authenticator) = access_request(&config, id, i % config.users)?;
            socket.send(&datagram).await?;
            slots[usize::from(id)] = Some(Slot {
                sent_at: Instant::now(),
                authenticator: request_authenticator,
            });
            outstanding += 1;
            tally.sent += 1;
        }
        if outstanding == 0 {
            return Ok(tally);
        }
        match socket.try_recv(&mut buf) {
            Ok(len) => {
                if take_reply(&buf[..len], &mut slots, secret, &mut tally) {
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
        _ => tally.other += 1,
    }
    let rtt = now.duration_since(request.sent_at).as_micros();
    tally
        .latencies_us
        .push(u32::try_from(rtt).unwrap_or(u32::MAX));
    tally.last_reply = Some(now);
    true
}

/// Builds a signed Access-Request for subscriber `k` with Identifier `id`; returns the
/// datagram and its Request Authenticator (random, from the codec).
fn access_request(config: &LoadConfig, id: u8, k: u64) -> io::Result<(Vec<u8>, [u8; 16])> {
    let secret = config.secret.as_slice();
    let mut packet = Packet::new_with_identifier(Code::AccessRequest, secret, id);
    // Message-Authenticator first, as RFC 3579 advises since BlastRADIUS; the value is
    // filled in by `sign_request` once the packet is encoded.
    if config.message_authenticator {
        rfc2869::add_message_authenticator(&mut packet, &[0; 16]);
    }
    rfc2865::add_user_name(&mut packet, &username(k));
    rfc2865::add_user_password(&mut packet, password(k).as_bytes()).map_err(io::Error::other)?;
    rfc2865::add_nas_ip_address(&mut packet, &config.nas_ip);
    let mut datagram = packet.encode().map_err(io::Error::other)?;
    authenticator::sign_request(&mut datagram, secret);
    let mut request_authenticator = [0u8; 16];
    request_authenticator.copy_from_slice(&datagram[4..20]);
    Ok((datagram, request_authenticator))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_a_password_the_server_can_read_and_a_valid_message_authenticator() {
        let config = LoadConfig::new("127.0.0.1:1812".parse().unwrap(), "s3cret", 10);
        let (datagram, ra) = access_request(&config, 7, 3).unwrap();
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
        let (_, a) = access_request(&config, 1, 1).unwrap();
        let (_, b) = access_request(&config, 1, 1).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn without_message_authenticator_the_user_name_comes_first() {
        let mut config = LoadConfig::new("127.0.0.1:1812".parse().unwrap(), "s", 10);
        config.message_authenticator = false;
        let (datagram, _) = access_request(&config, 1, 1).unwrap();
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
