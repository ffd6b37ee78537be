//! rtnetlink for the shaper: each [`Op`] as the one `RTM_{NEW,DEL}{QDISC,TCLASS,TFILTER}`
//! message `tc` would send for it, many per `sendmsg`, one ACK checked per message.
//!
//! Why our own encoder: the crates that speak rtnetlink (`netlink-packet-route`) have
//! no HTB class options, and what we send is eight fixed message shapes. The layouts
//! are the kernel's `uapi/linux/pkt_sched.h` and `pkt_cls.h`; the values are what
//! iproute2 6.1 computes for the same command (rate tables are left out: the kernel
//! only reads them for link-layer-unaware rates, and ours say Ethernet, as tc's do).
//! The lab test reads a tree built this way back with `tc` and compares it with the
//! same plan applied by `tc -batch`.
//!
//! The kernel runs the messages of one `sendmsg` in order, each on its own: a failed
//! one does not stop those after it in the same buffer. So a change goes out in
//! chunks of [`CHUNK`] messages, every reply of a chunk is read before the next is
//! sent, and the first refusal stops the sending.

use std::io;
use std::os::fd::AsFd;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::tc::{Dev, Op, quantum};
use super::{Error, PRIO_V4, Result, ShapeConfig};

/// Messages per `sendmsg` (about 130 KB of classes and filters, 37 KB of ACKs).
pub const CHUNK: usize = 1024;

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWQDISC: u16 = 36;
const RTM_DELQDISC: u16 = 37;
const RTM_GETQDISC: u16 = 38;
const RTM_NEWTCLASS: u16 = 40;
const RTM_DELTCLASS: u16 = 41;
const RTM_NEWTFILTER: u16 = 44;
const RTM_DELTFILTER: u16 = 45;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLMSG_HDRLEN: usize = 16;
const IFLA_IFNAME: u16 = 3;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;
const TCA_U32_CLASSID: u16 = 1;
const TCA_U32_HASH: u16 = 2;
const TCA_U32_LINK: u16 = 3;
const TCA_U32_DIVISOR: u16 = 4;
const TCA_U32_SEL: u16 = 5;
const TCA_U32_ACT: u16 = 7;
const TC_U32_TERMINAL: u8 = 1;
const TCA_ACT_KIND: u16 = 1;
const TCA_ACT_OPTIONS: u16 = 2;
const TCA_MIRRED_PARMS: u16 = 2;
const TC_ACT_STOLEN: i32 = 4;
const TCA_EGRESS_REDIR: i32 = 1;
const TC_H_ROOT: u32 = 0xffff_ffff;
const TC_H_INGRESS: u32 = 0xffff_fff1;
const INGRESS_HANDLE: u32 = 0xffff_0000;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_ALL: u16 = 0x0003;
const TC_LINKLAYER_ETHERNET: u8 = 1;
/// tc's default `mtu` for HTB classes: the burst is one rate-second / HZ plus this.
const HTB_MTU: u64 = 1600;
/// tc's `cell_log` for that mtu (the smallest with `mtu >> cell_log <= 255`).
const HTB_CELL_LOG: u8 = 3;
/// Scheduler ticks per microsecond: the kernel's ticks are 64 ns (`PSCHED_SHIFT`), as
/// `/proc/net/psched` says (`000003e8 00000040`: 1000 ns per 64 ticks-units).
const TICKS_PER_USEC: f64 = 1000.0 / 64.0;
/// tc's HZ for bursts, from `/proc/net/psched`'s clock (1 GHz on high-resolution timers).
const PSCHED_HZ: u64 = 1_000_000_000;
const RCVBUF: usize = 4 << 20;
const SNDBUF: usize = 1 << 20;
const REPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Appends rtnetlink messages and attributes to one buffer.
#[derive(Debug, Default)]
struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    fn begin(&mut self, ty: u16, flags: u16, seq: u32) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        start
    }
    /// `struct tcmsg`.
    fn tcmsg(&mut self, ifindex: u32, handle: u32, parent: u32, info: u32) {
        self.buf.extend_from_slice(&[0, 0, 0, 0]); // family AF_UNSPEC, padding
        for v in [ifindex, handle, parent, info] {
            self.buf.extend_from_slice(&v.to_ne_bytes());
        }
    }
    fn end(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }
    fn attr(&mut self, ty: u16, data: &[u8]) {
        self.buf
            .extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
    fn attr_u32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_ne_bytes());
    }
    fn attr_str(&mut self, ty: u16, s: &str) {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(ty, &v);
    }
    /// A nested attribute, without NLA_F_NESTED (as tc sends them; the kernel parses
    /// these attributes either way).
    fn nest(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        start
    }
    fn nest_end(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }
}

/// `struct tc_ratespec` for `bytes` per second, as tc fills it.
fn ratespec(out: &mut Vec<u8>, bytes: u64) {
    out.push(HTB_CELL_LOG);
    out.push(TC_LINKLAYER_ETHERNET);
    out.extend_from_slice(&0u16.to_ne_bytes()); // overhead
    out.extend_from_slice(&(-1i16).to_ne_bytes()); // cell_align
    out.extend_from_slice(&0u16.to_ne_bytes()); // mpu
    out.extend_from_slice(&(u32::try_from(bytes).unwrap_or(u32::MAX)).to_ne_bytes());
}

/// HTB's burst for a rate, in scheduler ticks: what `tc` computes without `burst`
/// (`tc_calc_xmittime`: the time to send the bytes, cut to whole microseconds, then
/// in ticks; so a 10 Gbit/s class gets 1 µs, 15 ticks).
fn burst_ticks(bytes: u64) -> u32 {
    let size = bytes / PSCHED_HZ + HTB_MTU;
    let usec = (1_000_000.0 * (size as f64 / bytes as f64)) as u32;
    (f64::from(usec) * TICKS_PER_USEC) as u32
}

/// `struct tc_htb_opt`, then the 64-bit rates when they do not fit.
fn htb_class_options(m: &mut Msg, rate_kbps: u64, ceil_kbps: u64) {
    let (rate, ceil) = (rate_kbps * 125, ceil_kbps * 125);
    let mut opt = Vec::with_capacity(44);
    ratespec(&mut opt, rate);
    ratespec(&mut opt, ceil);
    for v in [
        burst_ticks(rate),
        burst_ticks(ceil),
        quantum(rate_kbps) as u32,
        0, // level
        0, // prio
    ] {
        opt.extend_from_slice(&v.to_ne_bytes());
    }
    m.attr(TCA_HTB_PARMS, &opt);
    if rate > u64::from(u32::MAX) {
        m.attr(TCA_HTB_RATE64, &rate.to_ne_bytes());
    }
    if ceil > u64::from(u32::MAX) {
        m.attr(TCA_HTB_CEIL64, &ceil.to_ne_bytes());
    }
}

/// `struct tc_u32_sel` with one key.
fn u32_sel(flags: u8, key: (u32, u32, u32), hash: Option<(u32, u32)>) -> Vec<u8> {
    let (mask, val, off) = key;
    let (hmask, hoff) = hash.unwrap_or((0, 0));
    let mut s = Vec::with_capacity(32);
    s.extend_from_slice(&[flags, 0, 1, 0]); // flags, offshift, nkeys, padding
    s.extend_from_slice(&0u16.to_ne_bytes()); // offmask
    s.extend_from_slice(&0u16.to_ne_bytes()); // off
    s.extend_from_slice(&0i16.to_ne_bytes()); // offoff
    s.extend_from_slice(&(hoff as i16).to_ne_bytes());
    s.extend_from_slice(&hmask.to_be_bytes());
    s.extend_from_slice(&mask.to_be_bytes());
    s.extend_from_slice(&val.to_be_bytes());
    s.extend_from_slice(&(off as i32).to_ne_bytes());
    s.extend_from_slice(&0i32.to_ne_bytes()); // offmask
    s
}

/// `tcm_info` of a filter: priority and protocol (in network order).
fn filter_info(prio: u32, protocol: u16) -> u32 {
    prio << 16 | u32::from(u16::from_ne_bytes(protocol.to_be_bytes()))
}

/// The interface indexes an operation list refers to.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ifindex {
    pub(super) subscriber: u32,
    pub(super) ifb: u32,
}

impl Ifindex {
    fn of(&self, dev: Dev) -> u32 {
        match dev {
            Dev::Subscriber => self.subscriber,
            Dev::Ifb => self.ifb,
        }
    }
}

/// Appends `op` as one message asking for an ACK.
fn encode(m: &mut Msg, op: &Op, seq: u32, idx: Ifindex) {
    const ADD: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    const PLAIN: u16 = NLM_F_REQUEST | NLM_F_ACK;
    let v4 = filter_info(PRIO_V4, ETH_P_IP);
    let start;
    match *op {
        Op::DelRoot(dev) => {
            start = m.begin(RTM_DELQDISC, PLAIN, seq);
            m.tcmsg(idx.of(dev), 0, TC_H_ROOT, 0);
        }
        Op::DelIngress => {
            start = m.begin(RTM_DELQDISC, PLAIN, seq);
            m.tcmsg(idx.subscriber, INGRESS_HANDLE, TC_H_INGRESS, 0);
        }
        Op::Htb {
            dev,
            parent,
            handle,
            default,
        } => {
            start = m.begin(RTM_NEWQDISC, ADD, seq);
            m.tcmsg(idx.of(dev), handle, parent.unwrap_or(TC_H_ROOT), 0);
            m.attr_str(TCA_KIND, "htb");
            let o = m.nest(TCA_OPTIONS);
            // struct tc_htb_glob: version 3, rate2quantum 10, defcls, debug, direct_pkts.
            let mut glob = Vec::with_capacity(20);
            for v in [3u32, 10, u32::from(default), 0, 0] {
                glob.extend_from_slice(&v.to_ne_bytes());
            }
            m.attr(TCA_HTB_INIT, &glob);
            m.nest_end(o);
        }
        Op::Class {
            dev,
            change,
            parent,
            classid,
            rate_kbps,
            ceil_kbps,
            ..
        } => {
            start = m.begin(RTM_NEWTCLASS, if change { PLAIN } else { ADD }, seq);
            m.tcmsg(idx.of(dev), classid, parent, 0);
            m.attr_str(TCA_KIND, "htb");
            let o = m.nest(TCA_OPTIONS);
            htb_class_options(m, rate_kbps, ceil_kbps);
            m.nest_end(o);
        }
        Op::DelClass { dev, classid, .. } => {
            start = m.begin(RTM_DELTCLASS, PLAIN, seq);
            m.tcmsg(idx.of(dev), classid, 0, 0);
        }
        Op::HashTable { dev, parent, table } => {
            start = m.begin(RTM_NEWTFILTER, ADD, seq);
            m.tcmsg(idx.of(dev), table << 20, parent, v4);
            m.attr_str(TCA_KIND, "u32");
            let o = m.nest(TCA_OPTIONS);
            m.attr_u32(TCA_U32_DIVISOR, 256);
            m.nest_end(o);
        }
        Op::HashLink {
            dev,
            parent,
            handle,
            ht,
            mask,
            at,
            link,
        } => {
            start = m.begin(RTM_NEWTFILTER, ADD, seq);
            m.tcmsg(idx.of(dev), handle, parent, v4);
            m.attr_str(TCA_KIND, "u32");
            let o = m.nest(TCA_OPTIONS);
            m.attr_u32(TCA_U32_HASH, ht);
            m.attr_u32(TCA_U32_LINK, link << 20);
            m.attr(TCA_U32_SEL, &u32_sel(0, (0, 0, 0), Some((mask, at))));
            m.nest_end(o);
        }
        Op::Match {
            dev,
            parent,
            handle,
            ht,
            at,
            ip,
            flowid,
            ..
        } => {
            start = m.begin(RTM_NEWTFILTER, ADD, seq);
            m.tcmsg(idx.of(dev), handle, parent, v4);
            m.attr_str(TCA_KIND, "u32");
            let o = m.nest(TCA_OPTIONS);
            m.attr_u32(TCA_U32_HASH, ht);
            m.attr_u32(TCA_U32_CLASSID, flowid);
            let key = (u32::MAX, u32::from(ip), at);
            m.attr(TCA_U32_SEL, &u32_sel(TC_U32_TERMINAL, key, None));
            m.nest_end(o);
        }
        Op::DelFilter {
            dev,
            parent,
            handle,
            ..
        } => {
            start = m.begin(RTM_DELTFILTER, PLAIN, seq);
            m.tcmsg(idx.of(dev), handle, parent, v4);
            m.attr_str(TCA_KIND, "u32");
        }
        Op::Ingress => {
            start = m.begin(RTM_NEWQDISC, ADD, seq);
            m.tcmsg(idx.subscriber, INGRESS_HANDLE, TC_H_INGRESS, 0);
            m.attr_str(TCA_KIND, "ingress");
        }
        Op::Redirect => {
            start = m.begin(RTM_NEWTFILTER, ADD, seq);
            m.tcmsg(idx.subscriber, 0, INGRESS_HANDLE, filter_info(1, ETH_P_ALL));
            m.attr_str(TCA_KIND, "u32");
            let o = m.nest(TCA_OPTIONS);
            m.attr(TCA_U32_SEL, &u32_sel(TC_U32_TERMINAL, (0, 0, 0), None));
            let acts = m.nest(TCA_U32_ACT);
            let first = m.nest(1);
            m.attr_str(TCA_ACT_KIND, "mirred");
            let ao = m.nest(TCA_ACT_OPTIONS);
            // struct tc_mirred: tc_gen (index, capab, action, refcnt, bindcnt), eaction, ifindex.
            let mut p = Vec::with_capacity(28);
            for v in [0i32, 0, TC_ACT_STOLEN, 0, 0, TCA_EGRESS_REDIR] {
                p.extend_from_slice(&v.to_ne_bytes());
            }
            p.extend_from_slice(&idx.ifb.to_ne_bytes());
            m.attr(TCA_MIRRED_PARMS, &p);
            m.nest_end(ao);
            m.nest_end(first);
            m.nest_end(acts);
            m.nest_end(o);
        }
    }
    m.end(start);
}

/// One reply: its type, sequence number, and (for errors and ACKs) the errno and the
/// kernel's message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    ty: u16,
    seq: u32,
    errno: i32,
    message: Option<String>,
    payload: Vec<u8>,
}

fn parse_replies(mut buf: &[u8], out: &mut Vec<Reply>) -> Result<()> {
    let malformed = || Error::Netlink {
        op: "reading a reply",
        source: io::Error::new(io::ErrorKind::InvalidData, "malformed netlink message"),
    };
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(malformed());
        }
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        let flags = u16::from_ne_bytes([buf[6], buf[7]]);
        let seq = u32::from_ne_bytes(buf[8..12].try_into().expect("4 bytes"));
        let payload = &buf[NLMSG_HDRLEN..len];
        let (mut errno, mut message) = (0, None);
        if ty == NLMSG_ERROR {
            if payload.len() < 4 + NLMSG_HDRLEN {
                return Err(malformed());
            }
            errno = -i32::from_ne_bytes(payload[0..4].try_into().expect("4 bytes"));
            if flags & NLM_F_ACK_TLVS != 0 {
                // With NETLINK_CAP_ACK the original message is cut to its header.
                let mut tlv = &payload[4 + NLMSG_HDRLEN..];
                while tlv.len() >= 4 {
                    let alen = usize::from(u16::from_ne_bytes([tlv[0], tlv[1]]));
                    let aty = u16::from_ne_bytes([tlv[2], tlv[3]]) & 0x3fff;
                    if alen < 4 || alen > tlv.len() {
                        break;
                    }
                    if aty == NLMSGERR_ATTR_MSG {
                        let s = &tlv[4..alen];
                        let s = s.split(|b| *b == 0).next().unwrap_or(s);
                        message = Some(String::from_utf8_lossy(s).into_owned());
                    }
                    tlv = &tlv[((alen + 3) & !3).min(tlv.len())..];
                }
            }
        }
        out.push(Reply {
            ty,
            seq,
            errno,
            message,
            payload: if ty == NLMSG_ERROR {
                Vec::new()
            } else {
                payload.to_vec()
            },
        });
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    Ok(())
}

/// A qdisc as a dump lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct QdiscSeen {
    pub(super) handle: u32,
    pub(super) parent: u32,
}

impl QdiscSeen {
    /// A root qdisc of ours or anyone's (not the device's default, handle 0).
    pub(super) fn is_configured_root(&self) -> bool {
        self.parent == TC_H_ROOT && self.handle != 0
    }
    /// The ingress (or clsact) qdisc.
    pub(super) fn is_ingress(&self) -> bool {
        self.parent == TC_H_INGRESS
    }
}

/// An rtnetlink socket in one network namespace.
#[derive(Debug)]
pub(super) struct Conn {
    sock: Socket,
    seq: u32,
    rx: Vec<u8>,
}

fn sock_err(op: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Netlink { op, source }
}

fn open_socket() -> Result<Socket> {
    let mut sock = Socket::new(NETLINK_ROUTE).map_err(sock_err("open"))?;
    sock.bind_auto().map_err(sock_err("bind"))?;
    sock.connect(&SocketAddr::new(0, 0))
        .map_err(sock_err("connect"))?;
    // Errors carry only the header of our message, plus the kernel's explanation.
    sock.set_cap_ack(true)
        .map_err(sock_err("NETLINK_CAP_ACK"))?;
    sock.set_ext_ack(true)
        .map_err(sock_err("NETLINK_EXT_ACK"))?;
    let fd = sock.as_fd();
    let os = |op| {
        move |e: nix::Error| Error::Netlink {
            op,
            source: e.into(),
        }
    };
    use nix::sys::socket::{setsockopt, sockopt};
    setsockopt(&fd, sockopt::RcvBufForce, &RCVBUF).map_err(os("SO_RCVBUFFORCE"))?;
    setsockopt(&fd, sockopt::SndBufForce, &SNDBUF).map_err(os("SO_SNDBUFFORCE"))?;
    let wait = nix::sys::time::TimeVal::new(REPLY_WAIT.as_secs() as i64, 0);
    setsockopt(&fd, sockopt::ReceiveTimeout, &wait).map_err(os("SO_RCVTIMEO"))?;
    Ok(sock)
}

impl Conn {
    /// Opens a socket in the current namespace, or in `netns` (a name under
    /// `/run/netns`): a socket stays in the namespace it was created in, so a
    /// short-lived thread enters the namespace to create it.
    pub(super) fn open(netns: Option<&str>) -> Result<Conn> {
        let sock = match netns {
            None => open_socket()?,
            Some(name) => {
                let path = format!("/run/netns/{name}");
                std::thread::scope(|s| {
                    s.spawn(|| {
                        let f = std::fs::File::open(&path).map_err(sock_err("open netns"))?;
                        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                            |e| Error::Netlink {
                                op: "setns",
                                source: e.into(),
                            },
                        )?;
                        open_socket()
                    })
                    .join()
                    .expect("the socket thread does not panic")
                })?
            }
        };
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(Conn {
            sock,
            seq,
            rx: Vec::with_capacity(1 << 16),
        })
    }

    fn next_seq(&mut self, n: usize) -> u32 {
        let first = self.seq;
        self.seq = self.seq.wrapping_add(n as u32 + 1);
        first
    }

    fn send(&self, bytes: &[u8]) -> Result<()> {
        let n = self.sock.send(bytes, 0).map_err(sock_err("sendmsg"))?;
        if n != bytes.len() {
            return Err(Error::Netlink {
                op: "sendmsg",
                source: io::Error::other("short send"),
            });
        }
        Ok(())
    }

    /// Reads replies until `done` says the ones wanted are in (or the wait runs out).
    fn read_until(&mut self, mut done: impl FnMut(&[Reply]) -> bool) -> Result<Vec<Reply>> {
        let mut out = Vec::new();
        while !done(&out) {
            self.rx.clear();
            match self.sock.recv(&mut self.rx, 0) {
                Ok(_) => parse_replies(&self.rx, &mut out)?,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(out);
                }
                Err(e) => return Err(sock_err("recvmsg")(e)),
            }
        }
        Ok(out)
    }

    /// The index of the device `name`, `None` if there is none.
    pub(super) fn ifindex(&mut self, name: &str) -> Result<Option<u32>> {
        let seq = self.next_seq(1);
        let mut m = Msg::default();
        let start = m.begin(RTM_GETLINK, NLM_F_REQUEST, seq);
        m.buf.extend_from_slice(&[0u8; 16]); // struct ifinfomsg, all zero: by name
        m.attr_str(IFLA_IFNAME, name);
        m.end(start);
        self.send(&m.buf)?;
        let replies = self.read_until(|r| r.iter().any(|r| r.seq == seq))?;
        match replies.into_iter().find(|r| r.seq == seq) {
            Some(r) if r.ty == RTM_NEWLINK && r.payload.len() >= 8 => Ok(Some(i32::from_ne_bytes(
                r.payload[4..8].try_into().expect("4 bytes"),
            )
                as u32)),
            Some(r) if r.ty == NLMSG_ERROR && r.errno == 19 => Ok(None), // ENODEV
            Some(r) => Err(Error::Refused {
                op: format!("ip link show dev {name}"),
                subscriber: None,
                errno: r.errno,
                message: r.message,
            }),
            None => Err(Error::MissingReplies { got: 0, want: 1 }),
        }
    }

    /// The qdiscs of device `ifindex` (those a plain `tc qdisc show` lists).
    pub(super) fn qdiscs(&mut self, ifindex: u32) -> Result<Vec<QdiscSeen>> {
        let seq = self.next_seq(1);
        let mut m = Msg::default();
        let start = m.begin(RTM_GETQDISC, NLM_F_REQUEST | NLM_F_DUMP, seq);
        m.tcmsg(ifindex, 0, 0, 0);
        m.end(start);
        self.send(&m.buf)?;
        let replies = self.read_until(|r| {
            r.iter()
                .any(|r| r.seq == seq && (r.ty == NLMSG_DONE || r.ty == NLMSG_ERROR))
        })?;
        let mut out = Vec::new();
        let mut finished = false;
        for r in replies.into_iter().filter(|r| r.seq == seq) {
            match r.ty {
                RTM_NEWQDISC if r.payload.len() >= 20 => {
                    let word = |i: usize| {
                        u32::from_ne_bytes(r.payload[i..i + 4].try_into().expect("4 bytes"))
                    };
                    if word(4) == ifindex {
                        out.push(QdiscSeen {
                            handle: word(8),
                            parent: word(12),
                        });
                    }
                }
                NLMSG_DONE => finished = true,
                NLMSG_ERROR if r.errno != 0 => {
                    return Err(Error::Refused {
                        op: "tc qdisc show".into(),
                        subscriber: None,
                        errno: r.errno,
                        message: r.message,
                    });
                }
                _ => {}
            }
        }
        if !finished {
            return Err(Error::MissingReplies { got: 0, want: 1 });
        }
        Ok(out)
    }

    /// Sends `ops` in order, [`CHUNK`] per `sendmsg`, and checks every ACK; stops at
    /// the first chunk with a refusal and reports its first refused operation.
    pub(super) fn apply(&mut self, cfg: &ShapeConfig, idx: Ifindex, ops: &[Op]) -> Result<()> {
        let mut m = Msg::default();
        for chunk in ops.chunks(CHUNK) {
            let first = self.next_seq(chunk.len());
            m.buf.clear();
            for (i, op) in chunk.iter().enumerate() {
                encode(&mut m, op, first.wrapping_add(i as u32), idx);
            }
            self.send(&m.buf)?;
            let in_chunk = |seq: u32| (seq.wrapping_sub(first) as usize) < chunk.len();
            let replies = self.read_until(|r| {
                r.iter()
                    .filter(|r| r.ty == NLMSG_ERROR && in_chunk(r.seq))
                    .count()
                    >= chunk.len()
            })?;
            let mut acked = vec![false; chunk.len()];
            let mut refused: Option<(usize, Reply)> = None;
            for r in replies
                .into_iter()
                .filter(|r| r.ty == NLMSG_ERROR && in_chunk(r.seq))
            {
                let i = r.seq.wrapping_sub(first) as usize;
                acked[i] = true;
                if r.errno != 0 && refused.as_ref().is_none_or(|(j, _)| i < *j) {
                    refused = Some((i, r));
                }
            }
            if let Some((i, r)) = refused {
                return Err(Error::Refused {
                    op: chunk[i].tc(cfg),
                    subscriber: chunk[i].subscriber(),
                    errno: r.errno,
                    message: r.message,
                });
            }
            let got = acked.iter().filter(|a| **a).count();
            if got != chunk.len() {
                return Err(Error::MissingReplies {
                    got,
                    want: chunk.len(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    use crate::shape::tc::{handle, u32_handle};

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    const IDX: Ifindex = Ifindex {
        subscriber: 7,
        ifb: 9,
    };

    fn one(op: Op) -> Vec<u8> {
        let mut m = Msg::default();
        encode(&mut m, &op, 0x0102_0304, IDX);
        m.buf
    }

    #[test]
    fn a_class_is_tcmsg_kind_and_htb_parms_as_tc_fills_them() {
        let b = one(Op::Class {
            dev: Dev::Ifb,
            change: false,
            parent: handle(0x12d, 1),
            classid: handle(0x12d, 0x2a),
            rate_kbps: 8000,
            ceil_kbps: 16000,
            subscriber: Some(42),
        });
        assert_eq!(b.len(), 16 + 20 + 8 + 4 + 48);
        assert_eq!(
            u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize,
            b.len()
        );
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), RTM_NEWTCLASS);
        assert_eq!(u16::from_ne_bytes([b[6], b[7]]), 0x605);
        // tcmsg: ifindex 9, handle 12d:2a, parent 12d:1.
        assert_eq!(&b[20..24], &9u32.to_ne_bytes());
        assert_eq!(&b[24..28], &0x012d_002au32.to_ne_bytes());
        assert_eq!(&b[28..32], &0x012d_0001u32.to_ne_bytes());
        assert_eq!(&b[36..44], b"\x08\x00\x01\x00htb\x00");
        let parms = &b[52..96];
        // rate: cell_log 3, Ethernet, overhead 0, cell_align -1, mpu 0, 1 000 000 B/s.
        assert_eq!(
            hex(&parms[0..12]),
            format!("0301 0000 ffff 0000 {}", hex(&1_000_000u32.to_ne_bytes())).replace(' ', "")
        );
        assert_eq!(&parms[20..24], &2_000_000u32.to_ne_bytes());
        // tc: burst = 1600 bytes at the rate, in 64 ns ticks; quantum from the rate.
        assert_eq!(&parms[24..28], &25_000u32.to_ne_bytes());
        assert_eq!(&parms[28..32], &12_500u32.to_ne_bytes());
        assert_eq!(&parms[32..36], &100_000u32.to_ne_bytes());
    }

    #[test]
    fn rates_past_32_bits_carry_the_64_bit_attributes() {
        let b = one(Op::Class {
            dev: Dev::Subscriber,
            change: true,
            parent: handle(1, 0),
            classid: handle(1, 1),
            rate_kbps: 40_000_000,
            ceil_kbps: 40_000_000,
            subscriber: None,
        });
        assert_eq!(u16::from_ne_bytes([b[6], b[7]]), NLM_F_REQUEST | NLM_F_ACK);
        let tail = &b[b.len() - 24..];
        assert_eq!(u16::from_ne_bytes([tail[2], tail[3]]), TCA_HTB_RATE64);
        assert_eq!(&tail[4..12], &5_000_000_000u64.to_ne_bytes());
        assert_eq!(u16::from_ne_bytes([tail[14], tail[15]]), TCA_HTB_CEIL64);
    }

    #[test]
    fn a_match_is_one_terminal_key_on_the_address_in_its_bucket() {
        let b = one(Op::Match {
            dev: Dev::Subscriber,
            parent: handle(1, 0),
            handle: u32_handle(0x200, 0xb, 1),
            ht: u32_handle(0x200, 0xb, 0),
            at: 16,
            ip: Ipv4Addr::new(100, 64, 0, 11),
            flowid: handle(1, 0x3a),
            subscriber: 42,
        });
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), RTM_NEWTFILTER);
        assert_eq!(&b[24..28], &0x2000_b001u32.to_ne_bytes());
        // prio 10, protocol ip in network order.
        assert_eq!(&b[32..36], &(10u32 << 16 | 0x0008).to_ne_bytes());
        assert_eq!(&b[36..44], b"\x08\x00\x01\x00u32\x00");
        let opts = &b[48..];
        assert_eq!(
            hex(&opts[0..8]),
            format!("0800 0200 {}", hex(&0x2000_b000u32.to_ne_bytes())).replace(' ', "")
        );
        assert_eq!(&opts[12..16], &0x0001_003au32.to_ne_bytes());
        let sel = &opts[20..52];
        assert_eq!(&sel[0..4], &[TC_U32_TERMINAL, 0, 1, 0]);
        assert_eq!(&sel[16..24], &[0xff, 0xff, 0xff, 0xff, 100, 64, 0, 11]);
        assert_eq!(&sel[24..28], &16i32.to_ne_bytes());
    }

    #[test]
    fn acks_and_errors_are_read_with_the_kernels_message() {
        let mut buf = Vec::new();
        for (seq, err, msg) in [
            (5u32, 0i32, None),
            (6, -2, Some("Specified class not found")),
        ] {
            let mut m = Msg::default();
            let flags = if msg.is_some() { NLM_F_ACK_TLVS } else { 0 };
            let start = m.begin(NLMSG_ERROR, flags, seq);
            m.buf.extend_from_slice(&err.to_ne_bytes());
            m.buf.extend_from_slice(&[0u8; 16]);
            if let Some(s) = msg {
                m.attr_str(NLMSGERR_ATTR_MSG, s);
            }
            m.end(start);
            buf.extend_from_slice(&m.buf);
        }
        let mut out = Vec::new();
        parse_replies(&buf, &mut out).unwrap();
        assert_eq!(
            (out[0].seq, out[0].errno, out[0].message.as_deref()),
            (5, 0, None)
        );
        assert_eq!(
            (out[1].seq, out[1].errno, out[1].message.as_deref()),
            (6, 2, Some("Specified class not found"))
        );
    }
}
