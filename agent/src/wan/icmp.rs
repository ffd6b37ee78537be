//! Our ICMP echo engine: one raw socket per address family for all targets.
//!
//! Written here rather than taken from a crate because the crates at hand open a socket
//! or a task per target, or match replies by the 16-bit sequence alone. A sweep sends
//! one echo to every target, paced by token buckets (the site's and each reseller's),
//! and matches each answer by what we put in its payload: a random tag of this process
//! (so answers to other pingers on the box are ignored), the target's index and the
//! sweep's number (so a late answer to an earlier sweep is not taken for this one),
//! and checks it came from the target's address. The timeouts need no timer per target:
//! every probe waits the same time and they are sent in order, so the queue of sent
//! probes is already ordered by deadline and expires from its front.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{SockaddrLike, SockaddrStorage, recvfrom, setsockopt, sockopt};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;
/// ICMP header (8) + tag (8) + index (4) + sweep (4).
const PACKET_LEN: usize = 24;

/// What one sweep cost and saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// Echo requests sent.
    pub sent: u64,
    /// Matching answers received in time.
    pub answered: u64,
    /// Packets read that were not ours or not in time (other pingers, late answers).
    pub ignored: u64,
    /// Sends the kernel refused (no route, buffer full); counted as lost.
    pub send_errors: u64,
}

/// The echo engine: the raw sockets and this process's tag.
pub struct Pinger {
    v4: Option<Socket>,
    v6: Option<Socket>,
    tag: u64,
    ident: u16,
    sweep: u32,
}

/// One probe in flight, in the deadline queue.
struct Pending {
    deadline: Instant,
    index: u32,
}

/// A token bucket: `rate` per second, holding at most `burst`.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32, now: Instant) -> Bucket {
        // A millisecond's worth (at least one) may go at once: poll wakes about that often.
        let burst = (rate as f64 / 1000.0).max(1.0);
        Bucket {
            tokens: burst,
            rate: rate as f64,
            burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.at = now;
    }

    fn take(&mut self) -> bool {
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Time until the next token.
    fn wait(&self) -> Duration {
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }
}

impl Pinger {
    /// Opens the raw sockets (CAP_NET_RAW). A family the host lacks (no IPv6) is left
    /// out; its targets then fail. Fails only when neither family opens.
    pub fn open(recv_buffer_bytes: usize) -> io::Result<Pinger> {
        let open = |domain, proto| -> io::Result<Socket> {
            let s = Socket::new(domain, Type::RAW, Some(proto))?;
            s.set_nonblocking(true)?;
            // As root the buffer may pass net.core.rmem_max; otherwise the capped size.
            if setsockopt(&s, sockopt::RcvBufForce, &recv_buffer_bytes).is_err() {
                s.set_recv_buffer_size(recv_buffer_bytes)?;
            }
            s.set_send_buffer_size(recv_buffer_bytes.min(4 << 20))?;
            Ok(s)
        };
        let v4 = open(Domain::IPV4, Protocol::ICMPV4);
        let v6 = open(Domain::IPV6, Protocol::ICMPV6);
        if let (Err(e), Err(_)) = (&v4, &v6) {
            return Err(io::Error::new(
                e.kind(),
                format!("opening the ICMP raw sockets (needs CAP_NET_RAW): {e}"),
            ));
        }
        let tag: u64 = rand::random();
        Ok(Pinger {
            v4: v4.ok(),
            v6: v6.ok(),
            tag,
            ident: (tag >> 48) as u16,
            sweep: 0,
        })
    }

    /// Sends one echo to every target and waits for the answers: the round trip of
    /// each target's answer, or `None` when none came within `timeout`. `group[i]`
    /// names target `i`'s reseller, whose bucket of `group_rate` per second it draws
    /// from beside the site's `rate`.
    pub fn sweep(
        &mut self,
        targets: &[IpAddr],
        group: &[i64],
        rate: u32,
        group_rate: u32,
        timeout: Duration,
    ) -> (Vec<Option<Duration>>, SweepStats) {
        assert_eq!(targets.len(), group.len(), "one group per target");
        self.sweep = self.sweep.wrapping_add(1);
        let sweep = self.sweep;
        let n = targets.len();
        let mut rtt: Vec<Option<Duration>> = vec![None; n];
        let mut sent_at: Vec<Option<Instant>> = vec![None; n];
        let mut in_flight = vec![false; n];
        let mut stats = SweepStats::default();
        let start = Instant::now();
        let mut site = Bucket::new(rate, start);
        // Each reseller's targets in order, served round-robin.
        let mut order: Vec<i64> = Vec::new();
        let mut queues: HashMap<i64, (Bucket, VecDeque<u32>)> = HashMap::new();
        for (i, g) in group.iter().enumerate() {
            queues
                .entry(*g)
                .or_insert_with(|| {
                    order.push(*g);
                    (Bucket::new(group_rate, start), VecDeque::new())
                })
                .1
                .push_back(i as u32);
        }
        let mut unsent = n;
        let mut pending: VecDeque<Pending> = VecDeque::new();
        let mut awaiting = 0usize;
        let mut buf = [0u8; PACKET_LEN];
        let mut rbuf = vec![0u8; 2048];
        let mut next_group = 0usize;
        while unsent > 0 || awaiting > 0 {
            let now = Instant::now();
            // Send what the buckets allow.
            site.refill(now);
            let mut group_wait = Duration::MAX;
            while unsent > 0 && site.tokens >= 1.0 {
                let mut sent_one = false;
                for _ in 0..order.len() {
                    let g = order[next_group % order.len()];
                    next_group = next_group.wrapping_add(1);
                    let (bucket, queue) = queues.get_mut(&g).expect("every group has a queue");
                    if queue.is_empty() {
                        continue;
                    }
                    bucket.refill(now);
                    if !bucket.take() {
                        group_wait = group_wait.min(bucket.wait());
                        continue;
                    }
                    site.take();
                    let index = queue.pop_front().expect("not empty");
                    unsent -= 1;
                    let target = targets[index as usize];
                    let at = Instant::now();
                    match self.send(target, index, sweep, &mut buf) {
                        Ok(()) => {
                            stats.sent += 1;
                            sent_at[index as usize] = Some(at);
                            in_flight[index as usize] = true;
                            pending.push_back(Pending {
                                deadline: at + timeout,
                                index,
                            });
                            awaiting += 1;
                        }
                        Err(_) => stats.send_errors += 1,
                    }
                    sent_one = true;
                    break;
                }
                if !sent_one {
                    break;
                }
            }
            // Read every answer waiting.
            let answered = self.drain(targets, sweep, &mut rbuf, |index, from_ok| {
                let i = index as usize;
                match (from_ok, in_flight[i], sent_at[i]) {
                    (true, true, Some(at)) if at.elapsed() <= timeout => {
                        rtt[i] = Some(at.elapsed());
                        in_flight[i] = false;
                        true
                    }
                    _ => false,
                }
            });
            stats.answered += answered.0;
            stats.ignored += answered.1;
            awaiting -= answered.0 as usize;
            // Expire from the front of the deadline queue.
            let now = Instant::now();
            while let Some(p) = pending.front() {
                if !in_flight[p.index as usize] {
                    pending.pop_front();
                    continue;
                }
                if p.deadline <= now {
                    in_flight[p.index as usize] = false;
                    pending.pop_front();
                    awaiting -= 1;
                    continue;
                }
                break;
            }
            if unsent == 0 && awaiting == 0 {
                break;
            }
            // Sleep until a token, a deadline or an answer.
            let mut wait = pending
                .front()
                .map(|p| p.deadline.saturating_duration_since(now))
                .unwrap_or(Duration::from_millis(10));
            if unsent > 0 {
                wait = wait.min(site.wait().max(Duration::from_micros(1)));
                if group_wait != Duration::MAX {
                    wait = wait.min(group_wait);
                }
            }
            self.wait(wait);
        }
        (rtt, stats)
    }

    fn send(
        &self,
        target: IpAddr,
        index: u32,
        sweep: u32,
        buf: &mut [u8; PACKET_LEN],
    ) -> io::Result<()> {
        let (sock, kind) = match target {
            IpAddr::V4(_) => (self.v4.as_ref(), ECHO_REQUEST_V4),
            IpAddr::V6(_) => (self.v6.as_ref(), ECHO_REQUEST_V6),
        };
        let sock = sock.ok_or_else(|| io::Error::from(io::ErrorKind::Unsupported))?;
        buf[0] = kind;
        buf[1] = 0;
        buf[2..4].copy_from_slice(&[0, 0]);
        buf[4..6].copy_from_slice(&self.ident.to_be_bytes());
        buf[6..8].copy_from_slice(&(index as u16).to_be_bytes());
        buf[8..16].copy_from_slice(&self.tag.to_be_bytes());
        buf[16..20].copy_from_slice(&index.to_be_bytes());
        buf[20..24].copy_from_slice(&sweep.to_be_bytes());
        if target.is_ipv4() {
            // The kernel fills in ICMPv6 checksums itself (RFC 3542), not ICMP ones.
            let sum = checksum(&buf[..]);
            buf[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        sock.send_to(&buf[..], &SockAddr::from(SocketAddr::new(target, 0)))?;
        Ok(())
    }

    /// Reads every datagram waiting on both sockets; `hit(index, from_the_target)`
    /// says whether an answer of ours counted. Returns (counted, ignored).
    fn drain(
        &self,
        targets: &[IpAddr],
        sweep: u32,
        buf: &mut [u8],
        mut hit: impl FnMut(u32, bool) -> bool,
    ) -> (u64, u64) {
        let (mut counted, mut ignored) = (0, 0);
        for (sock, v6) in [(self.v4.as_ref(), false), (self.v6.as_ref(), true)] {
            let Some(sock) = sock else { continue };
            loop {
                let (len, from) = match recvfrom::<SockaddrStorage>(sock.as_raw_fd(), buf) {
                    Ok(r) => r,
                    Err(nix::errno::Errno::EAGAIN) => break,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => break,
                };
                let packet = &buf[..len];
                // IPv4 raw sockets hand over the IP header; IPv6 ones do not.
                let (icmp, reply) = if v6 {
                    (packet, ECHO_REPLY_V6)
                } else {
                    let ihl = packet
                        .first()
                        .map(|b| usize::from(b & 0x0f) * 4)
                        .unwrap_or(0);
                    (packet.get(ihl..).unwrap_or(&[]), ECHO_REPLY_V4)
                };
                let ours = icmp.len() >= PACKET_LEN
                    && icmp[0] == reply
                    && icmp[1] == 0
                    && icmp[8..16] == self.tag.to_be_bytes()
                    && u32::from_be_bytes(icmp[20..24].try_into().expect("4 bytes")) == sweep;
                let index = if ours {
                    u32::from_be_bytes(icmp[16..20].try_into().expect("4 bytes"))
                } else {
                    u32::MAX
                };
                if (index as usize) >= targets.len() {
                    ignored += 1;
                    continue;
                }
                let source = from.and_then(|f| source_ip(&f));
                if hit(index, source == Some(targets[index as usize])) {
                    counted += 1;
                } else {
                    ignored += 1;
                }
            }
        }
        (counted, ignored)
    }

    fn wait(&self, wait: Duration) {
        let ms = wait.as_micros().div_ceil(1000).min(1000) as u16;
        let mut fds: Vec<PollFd> = [self.v4.as_ref(), self.v6.as_ref()]
            .into_iter()
            .flatten()
            .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
            .collect();
        let _ = poll(&mut fds, PollTimeout::from(ms));
    }
}

fn source_ip(a: &SockaddrStorage) -> Option<IpAddr> {
    match a.family()? {
        nix::sys::socket::AddressFamily::Inet => a.as_sockaddr_in().map(|s| IpAddr::V4(s.ip())),
        nix::sys::socket::AddressFamily::Inet6 => a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())),
        _ => None,
    }
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = match chunk {
            [a, b] => u16::from_be_bytes([*a, *b]),
            [a] => u16::from_be_bytes([*a, 0]),
            _ => 0,
        };
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_rfc_1071s() {
        // An echo request with every field zero but the type: 0x0800 → 0xf7ff.
        let mut p = [0u8; 8];
        p[0] = 8;
        assert_eq!(checksum(&p), 0xf7ff);
        let sum = checksum(&p);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
    }

    #[test]
    fn buckets_pace_and_cap_bursts() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1000, t0);
        assert!(b.take());
        assert!(!b.take(), "1000/s lets one go per millisecond");
        b.refill(t0 + Duration::from_secs(5));
        assert!(b.take());
        assert!(!b.take(), "idle time does not bank a burst");
    }
}
