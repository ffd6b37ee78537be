//! A minimal nf_tables netlink client for set elements: just enough to flush a set, add
//! and delete elements in one kernel transaction, and look single elements up.
//!
//! Why our own: the `nft` process costs ~3 ms to start and parses text or JSON for every
//! call; a change of one element this way costs a few tens of microseconds (figures in
//! [`super`]). The encoding follows the kernel's `uapi/linux/netfilter/nf_tables.h` and
//! what libnftnl sends (checked against `nft --debug=mnl` output in the tests below):
//!
//! ```text
//! sendmsg: [BATCH_BEGIN res_id=NFNL_SUBSYS_NFTABLES]
//!          [NEWSETELEM|DELSETELEM family=inet  TABLE "outpost" SET "blocked4"
//!              ELEMENTS { ELEM { KEY { VALUE <4 or 16 bytes> } } ... }] ...
//!          [BATCH_END]
//! ```
//!
//! The kernel runs the whole batch as one transaction (all or nothing) before `sendmsg`
//! returns, and queues one ACK per message that asked for it, or the error of the
//! message that failed. A DELSETELEM without ELEMENTS flushes the set. One message's
//! ELEMENTS attribute has a 16-bit length, so big loads are split into many messages of
//! the same batch. Everything goes through the safe `netlink-sys` socket; `nix` only
//! raises the socket buffers past `wmem_max` (as nft does) so a 100k-element batch fits.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsFd;

use netlink_sys::{Socket, SocketAddr};

/// `NETLINK_NETFILTER`.
const NETLINK_NETFILTER: isize = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_DONE: u16 = 3;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
/// The set is an inline `{ ... }` of a rule, owned by that rule.
const NFT_SET_ANONYMOUS: u32 = 0x1;
/// libnftnl's rule user data: the comment.
const NFTNL_UDATA_RULE_COMMENT: u8 = 0;
/// nft's datatype numbers for set keys.
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
/// How long to wait for the next part of a dump before giving up.
const DUMP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// In an error message: extended-ack attributes follow the (capped) original header.
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSG_ERROR: u16 = 2;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NFPROTO_INET: u8 = 1;
const AF_UNSPEC: u8 = 0;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const ENOENT: i32 = 2;
const NLMSG_HDRLEN: usize = 16;
/// Room for one message's ELEMENTS attribute: its length field is 16 bits.
const MAX_ELEMENTS_ATTR: usize = 60_000;
/// Lookups per `sendmsg`, so the replies fit in the receive buffer.
const GET_CHUNK: usize = 256;
const RCVBUF: usize = 8 << 20;

/// What went wrong talking to nf_tables.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not be opened, sized or used.
    #[error("netlink socket: {op}")]
    Socket {
        /// What we were doing.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused the batch; nothing of it was applied.
    #[error("nf_tables refused {what}: {} ({})", io::Error::from_raw_os_error(*.errno), .message.as_deref().unwrap_or("no detail"))]
    Refused {
        /// Which message of ours.
        what: String,
        /// The positive errno.
        errno: i32,
        /// The kernel's extended-ack message, when it sent one.
        message: Option<String>,
    },
    /// Fewer answers than requests: the receive buffer overflowed or the kernel stopped
    /// early; the outcome of the batch is unknown and must be verified.
    #[error("nf_tables answered {got} of {want} requests")]
    MissingReplies {
        /// Answers received.
        got: usize,
        /// Answers expected.
        want: usize,
    },
    /// A reply we cannot parse.
    #[error("malformed netlink reply: {0}")]
    Malformed(&'static str),
}

/// `Result` for this module.
pub type Result<T> = std::result::Result<T, Error>;

/// One change to a set, as the kernel sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOp<'a> {
    /// Remove every element of the set.
    Flush,
    /// Add these (already present ones are fine).
    Add(&'a [IpAddr]),
    /// Delete these (each must be present, or the whole batch fails with ENOENT).
    Delete(&'a [IpAddr]),
}

/// Appends netlink messages and attributes to one buffer.
#[derive(Debug, Default)]
pub(crate) struct MsgBuf {
    pub(crate) buf: Vec<u8>,
}

impl MsgBuf {
    fn begin(&mut self, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        // nfgenmsg: family, version (NFNETLINK_V0), res_id in network order.
        self.buf.push(family);
        self.buf.push(0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }
    /// An nf_tables message about the inet family, the only family we write.
    fn begin_nft(&mut self, msg: u16, flags: u16, seq: u32) -> usize {
        self.begin(NFNL_SUBSYS_NFTABLES << 8 | msg, flags, seq, NFPROTO_INET, 0)
    }
    /// A batch begin or end marker, addressed to the nf_tables subsystem.
    fn batch_marker(&mut self, ty: u16, seq: u32) -> usize {
        self.begin(ty, NLM_F_REQUEST, seq, AF_UNSPEC, NFNL_SUBSYS_NFTABLES)
    }
    fn end(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }
    fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }
    fn attr_str(&mut self, ty: u16, s: &str) {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.attr(ty, &v);
    }
    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
    fn nest_start(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        start
    }
    fn nest_end(&mut self, start: usize) {
        let len = self.buf.len() - start;
        debug_assert!(len <= usize::from(u16::MAX));
        self.buf[start..start + 2].copy_from_slice(&(len as u16).to_ne_bytes());
    }
    fn element(&mut self, addr: &IpAddr) {
        let e = self.nest_start(NFTA_LIST_ELEM);
        let k = self.nest_start(NFTA_SET_ELEM_KEY);
        match addr {
            IpAddr::V4(a) => self.attr(NFTA_DATA_VALUE, &a.octets()),
            IpAddr::V6(a) => self.attr(NFTA_DATA_VALUE, &a.octets()),
        }
        self.nest_end(k);
        self.nest_end(e);
    }
}

fn element_len(addr: &IpAddr) -> usize {
    // LIST_ELEM + KEY + VALUE headers, then the address (4 or 16, already aligned).
    12 + if addr.is_ipv4() { 4 } else { 16 }
}

/// What one message of a request was, for naming it in errors.
#[derive(Debug, Clone)]
struct Sent {
    what: String,
}

/// Encodes one transaction: `ops` on the named sets, in order. Returns the bytes and,
/// per sequence number that asks for an ACK, what it was.
fn encode_batch(
    table: &str,
    ops: &[(&str, SetOp<'_>)],
    first_seq: u32,
) -> (Vec<u8>, BTreeMap<u32, Sent>) {
    let mut m = MsgBuf::default();
    let mut seq = first_seq;
    let mut sent = BTreeMap::new();
    let b = m.batch_marker(NFNL_MSG_BATCH_BEGIN, seq);
    m.end(b);
    for (set, op) in ops {
        let (ty, flags, addrs) = match op {
            SetOp::Flush => (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK, &[][..]),
            SetOp::Add(a) => (
                NFT_MSG_NEWSETELEM,
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
                *a,
            ),
            SetOp::Delete(a) => (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK, *a),
        };
        if addrs.is_empty() && !matches!(op, SetOp::Flush) {
            continue;
        }
        let mut rest = addrs;
        loop {
            seq = seq.wrapping_add(1);
            let start = m.begin_nft(ty, flags, seq);
            m.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
            m.attr_str(NFTA_SET_ELEM_LIST_SET, set);
            let mut n = 0;
            if !rest.is_empty() {
                let list = m.nest_start(NFTA_SET_ELEM_LIST_ELEMENTS);
                let mut used = 4;
                while n < rest.len() && used + element_len(&rest[n]) <= MAX_ELEMENTS_ATTR {
                    used += element_len(&rest[n]);
                    m.element(&rest[n]);
                    n += 1;
                }
                m.nest_end(list);
            }
            m.end(start);
            let what = match op {
                SetOp::Flush => format!("flush of set {set}"),
                SetOp::Add(_) => format!("adding {n} elements to set {set}"),
                SetOp::Delete(_) => format!("deleting {n} elements from set {set}"),
            };
            sent.insert(seq, Sent { what });
            rest = &rest[n..];
            if rest.is_empty() {
                break;
            }
        }
    }
    seq = seq.wrapping_add(1);
    let e = m.batch_marker(NFNL_MSG_BATCH_END, seq);
    m.end(e);
    (m.buf, sent)
}

fn encode_get_elem(m: &mut MsgBuf, table: &str, set: &str, addr: &IpAddr, seq: u32) {
    let start = m.begin_nft(NFT_MSG_GETSETELEM, NLM_F_REQUEST | NLM_F_ACK, seq);
    m.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
    m.attr_str(NFTA_SET_ELEM_LIST_SET, set);
    let list = m.nest_start(NFTA_SET_ELEM_LIST_ELEMENTS);
    m.element(addr);
    m.nest_end(list);
    m.end(start);
}

fn encode_get_set(m: &mut MsgBuf, table: &str, set: &str, seq: u32) {
    let start = m.begin_nft(NFT_MSG_GETSET, NLM_F_REQUEST | NLM_F_ACK, seq);
    m.attr_str(NFTA_SET_TABLE, table);
    m.attr_str(NFTA_SET_NAME, set);
    m.end(start);
}

/// One answer from the kernel to one of our sequence numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ack {
    /// 0 or a positive errno.
    errno: i32,
    message: Option<String>,
}

/// Splits a receive buffer into (seq, ack) for error/ack messages and seqs that got data.
fn parse_replies(mut buf: &[u8], acks: &mut BTreeMap<u32, Ack>, data: &mut Vec<u32>) -> Result<()> {
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(Error::Malformed("message length"));
        }
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        let flags = u16::from_ne_bytes([buf[6], buf[7]]);
        let seq = u32::from_ne_bytes(buf[8..12].try_into().expect("4 bytes"));
        let payload = &buf[NLMSG_HDRLEN..len];
        if ty == NLMSG_ERROR {
            if payload.len() < 4 + NLMSG_HDRLEN {
                return Err(Error::Malformed("short error message"));
            }
            let err = i32::from_ne_bytes(payload[0..4].try_into().expect("4 bytes"));
            let mut message = None;
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
                    tlv = &tlv[(alen + 3) & !3..];
                    if tlv.len() < 4 {
                        break;
                    }
                }
            }
            acks.insert(
                seq,
                Ack {
                    errno: -err,
                    message,
                },
            );
        } else {
            data.push(seq);
        }
        let next = (len + 3) & !3;
        buf = &buf[next.min(buf.len())..];
    }
    Ok(())
}

/// A netlink socket to nf_tables in the current thread's network namespace.
#[derive(Debug)]
pub struct Conn {
    sock: Socket,
    // Interior mutability so that lookups work through `&self` (verification is a
    // read); a `Conn` is `Send` but not `Sync`.
    seq: Cell<u32>,
    sndbuf: Cell<usize>,
    rx: RefCell<Vec<u8>>,
}

fn sock_err(op: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Socket { op, source }
}

impl Conn {
    /// Opens the socket. Needs CAP_NET_ADMIN for anything but lookups.
    pub fn open() -> Result<Conn> {
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(sock_err("open"))?;
        sock.bind_auto().map_err(sock_err("bind"))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(sock_err("connect"))?;
        // Errors carry only the header of our (possibly huge) message, plus the
        // kernel's explanation.
        sock.set_cap_ack(true)
            .map_err(sock_err("NETLINK_CAP_ACK"))?;
        sock.set_ext_ack(true)
            .map_err(sock_err("NETLINK_EXT_ACK"))?;
        // The kernel answers while our sendmsg runs; we only ever drain what is queued.
        sock.set_non_blocking(true)
            .map_err(sock_err("O_NONBLOCK"))?;
        nix::sys::socket::setsockopt(
            &sock.as_fd(),
            nix::sys::socket::sockopt::RcvBufForce,
            &RCVBUF,
        )
        .map_err(|e| Error::Socket {
            op: "SO_RCVBUFFORCE",
            source: e.into(),
        })?;
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(Conn {
            sock,
            seq: Cell::new(seq),
            sndbuf: Cell::new(0),
            rx: RefCell::new(Vec::with_capacity(1 << 16)),
        })
    }

    fn next_seq(&self, n: usize) -> u32 {
        let first = self.seq.get();
        self.seq.set(first.wrapping_add(n as u32 + 2));
        first
    }

    fn send(&self, bytes: &[u8]) -> Result<()> {
        // The kernel refuses a datagram larger than the send buffer (less some slack).
        let need = bytes.len() + 4096;
        if need > self.sndbuf.get() {
            let size = need.max(1 << 20);
            nix::sys::socket::setsockopt(
                &self.sock.as_fd(),
                nix::sys::socket::sockopt::SndBufForce,
                &size,
            )
            .map_err(|e| Error::Socket {
                op: "SO_SNDBUFFORCE",
                source: e.into(),
            })?;
            self.sndbuf.set(size);
        }
        let n = self.sock.send(bytes, 0).map_err(sock_err("sendmsg"))?;
        if n != bytes.len() {
            return Err(Error::Malformed("short send"));
        }
        Ok(())
    }

    /// Reads every reply the kernel has queued.
    fn drain(&self, acks: &mut BTreeMap<u32, Ack>, data: &mut Vec<u32>) -> Result<()> {
        loop {
            let mut rx = self.rx.borrow_mut();
            rx.clear();
            match self.sock.recv(&mut *rx, 0) {
                Ok(0) => return Ok(()),
                Ok(_) => parse_replies(&rx, acks, data)?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => {
                    return Err(Error::Socket {
                        op: "recvmsg",
                        source: e,
                    });
                }
            }
        }
    }

    /// Applies `ops` to sets of `table` (family inet) as one transaction.
    pub fn apply(&self, table: &str, ops: &[(&str, SetOp<'_>)]) -> Result<()> {
        let first = self.seq.get();
        let (bytes, sent) = encode_batch(table, ops, first);
        self.next_seq(sent.len());
        if sent.is_empty() {
            return Ok(());
        }
        self.send(&bytes)?;
        let (mut acks, mut data) = (BTreeMap::new(), Vec::new());
        self.drain(&mut acks, &mut data)?;
        for (seq, s) in &sent {
            if let Some(a) = acks.get(seq).filter(|a| a.errno != 0) {
                return Err(Error::Refused {
                    what: s.what.clone(),
                    errno: a.errno,
                    message: a.message.clone(),
                });
            }
        }
        // A failure is reported for the message that failed; the others may go unanswered.
        if let Some((seq, a)) = acks.iter().find(|(_, a)| a.errno != 0) {
            return Err(Error::Refused {
                what: format!("batch message {seq}"),
                errno: a.errno,
                message: a.message.clone(),
            });
        }
        let got = sent.keys().filter(|s| acks.contains_key(s)).count();
        if got != sent.len() {
            return Err(Error::MissingReplies {
                got,
                want: sent.len(),
            });
        }
        Ok(())
    }

    /// Whether `set` exists in `table`.
    pub fn set_exists(&self, table: &str, set: &str) -> Result<bool> {
        let seq = self.next_seq(1);
        let mut m = MsgBuf::default();
        encode_get_set(&mut m, table, set, seq);
        self.send(&m.buf)?;
        let (mut acks, mut data) = (BTreeMap::new(), Vec::new());
        self.drain(&mut acks, &mut data)?;
        match acks.get(&seq) {
            Some(a) if a.errno == 0 => Ok(true),
            Some(a) if a.errno == ENOENT => Ok(false),
            Some(a) => Err(Error::Refused {
                what: format!("lookup of set {set}"),
                errno: a.errno,
                message: a.message.clone(),
            }),
            None => Err(Error::MissingReplies { got: 0, want: 1 }),
        }
    }

    /// For each address, whether it is in `set` (of its family), by single-element GETs.
    /// The set must exist (else every answer is "absent"): check with [`Conn::set_exists`].
    pub fn contains(
        &self,
        table: &str,
        set_for: impl Fn(&IpAddr) -> &'static str,
        addrs: &[IpAddr],
    ) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(addrs.len());
        for chunk in addrs.chunks(GET_CHUNK) {
            let first = self.next_seq(chunk.len());
            let mut m = MsgBuf::default();
            for (i, a) in chunk.iter().enumerate() {
                encode_get_elem(&mut m, table, set_for(a), a, first.wrapping_add(i as u32));
            }
            self.send(&m.buf)?;
            let (mut acks, mut data) = (BTreeMap::new(), Vec::new());
            self.drain(&mut acks, &mut data)?;
            for i in 0..chunk.len() {
                let seq = first.wrapping_add(i as u32);
                match acks.get(&seq) {
                    Some(a) if a.errno == 0 => out.push(true),
                    Some(a) if a.errno == ENOENT => out.push(false),
                    Some(a) => {
                        return Err(Error::Refused {
                            what: format!("lookup of {}", chunk[i]),
                            errno: a.errno,
                            message: a.message.clone(),
                        });
                    }
                    None => {
                        return Err(Error::MissingReplies {
                            got: acks.len(),
                            want: chunk.len(),
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Our table as the kernel has it, read without listing set elements: what nft 1.0.6
/// cannot do (its `list` fetches every element first, ~0.9 s with 100k of them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableState {
    /// Chain name to its number of rules.
    pub chains: BTreeMap<String, usize>,
    /// Set name to its key type as nft names it (`ipv4_addr`, `ipv6_addr`, else `type N`).
    pub sets: BTreeMap<String, String>,
    /// Chain name to the comments of its rules, in order.
    pub comments: BTreeMap<String, Vec<String>>,
}

/// The attributes of one nf_tables message (after the nfgenmsg), type to value.
fn attrs(payload: &[u8]) -> BTreeMap<u16, &[u8]> {
    let mut out = BTreeMap::new();
    let mut rest = payload.get(4..).unwrap_or(&[]);
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let ty = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            break;
        }
        out.insert(ty, &rest[4..len]);
        rest = &rest[((len + 3) & !3).min(rest.len())..];
    }
    out
}

fn attr_string(a: &BTreeMap<u16, &[u8]>, ty: u16) -> Option<String> {
    let v = a.get(&ty)?;
    let v = v.split(|b| *b == 0).next().unwrap_or(v);
    Some(String::from_utf8_lossy(v).into_owned())
}

/// The comment in libnftnl's rule user data (TLVs of u8 type, u8 length).
fn udata_comment(mut u: &[u8]) -> Option<String> {
    while u.len() >= 2 {
        let (ty, len) = (u[0], usize::from(u[1]));
        let v = u.get(2..2 + len)?;
        if ty == NFTNL_UDATA_RULE_COMMENT {
            let v = v.split(|b| *b == 0).next().unwrap_or(v);
            return Some(String::from_utf8_lossy(v).into_owned());
        }
        u = &u[2 + len..];
    }
    None
}

/// Folds dumped NEWSET/NEWCHAIN/NEWRULE messages (type, payload) of `table` into a state.
fn fold_state(table: &str, msgs: &[(u16, Vec<u8>)]) -> TableState {
    let mut st = TableState::default();
    for (ty, payload) in msgs {
        let a = attrs(payload);
        match ty & 0xff {
            NFT_MSG_NEWSET if attr_string(&a, NFTA_SET_TABLE).as_deref() == Some(table) => {
                let Some(name) = attr_string(&a, NFTA_SET_NAME) else {
                    continue;
                };
                let flags = a
                    .get(&NFTA_SET_FLAGS)
                    .and_then(|v| v.get(..4))
                    .map(|v| u32::from_be_bytes(v.try_into().expect("4 bytes")));
                if flags.unwrap_or(0) & NFT_SET_ANONYMOUS != 0 {
                    continue;
                }
                let key = a
                    .get(&NFTA_SET_KEY_TYPE)
                    .and_then(|v| v.get(..4))
                    .map(|v| u32::from_be_bytes(v.try_into().expect("4 bytes")));
                let key = match key {
                    Some(TYPE_IPADDR) => "ipv4_addr".to_string(),
                    Some(TYPE_IP6ADDR) => "ipv6_addr".to_string(),
                    Some(n) => format!("type {n}"),
                    None => "unknown".to_string(),
                };
                st.sets.insert(name, key);
            }
            NFT_MSG_NEWCHAIN if attr_string(&a, NFTA_CHAIN_TABLE).as_deref() == Some(table) => {
                if let Some(name) = attr_string(&a, NFTA_CHAIN_NAME) {
                    st.chains.entry(name).or_insert(0);
                }
            }
            NFT_MSG_NEWRULE if attr_string(&a, NFTA_RULE_TABLE).as_deref() == Some(table) => {
                if let Some(chain) = attr_string(&a, NFTA_RULE_CHAIN) {
                    *st.chains.entry(chain.clone()).or_insert(0) += 1;
                    if let Some(c) = a.get(&NFTA_RULE_USERDATA).and_then(|u| udata_comment(u)) {
                        st.comments.entry(chain).or_default().push(c);
                    }
                }
            }
            _ => {}
        }
    }
    st
}

impl Conn {
    /// Runs one dump request; the data messages' (type, payload).
    fn dump(&self, msg_type: u16, table: Option<(u16, &str)>) -> Result<Vec<(u16, Vec<u8>)>> {
        let seq = self.next_seq(1);
        let mut m = MsgBuf::default();
        let start = m.begin_nft(msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq);
        if let Some((ty, name)) = table {
            m.attr_str(ty, name);
        }
        m.end(start);
        self.send(&m.buf)?;
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + DUMP_WAIT;
        loop {
            let mut rx = self.rx.borrow_mut();
            rx.clear();
            match self.sock.recv(&mut *rx, 0) {
                Ok(_) => {}
                // Each read makes the kernel produce the next part of the dump; it can
                // still lag behind a non-blocking read.
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                    continue;
                }
                Err(e) => {
                    return Err(Error::Socket {
                        op: "recvmsg (dump)",
                        source: e,
                    });
                }
            }
            let mut buf = &rx[..];
            while buf.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
                if len < NLMSG_HDRLEN || len > buf.len() {
                    return Err(Error::Malformed("message length"));
                }
                let ty = u16::from_ne_bytes([buf[4], buf[5]]);
                let mseq = u32::from_ne_bytes(buf[8..12].try_into().expect("4 bytes"));
                let payload = &buf[NLMSG_HDRLEN..len];
                if mseq == seq {
                    match ty {
                        NLMSG_DONE => return Ok(out),
                        NLMSG_ERROR => {
                            let err = payload
                                .get(..4)
                                .map(|e| -i32::from_ne_bytes(e.try_into().expect("4 bytes")))
                                .unwrap_or(0);
                            if err != 0 {
                                return Err(Error::Refused {
                                    what: format!("dump of message type {msg_type}"),
                                    errno: err,
                                    message: None,
                                });
                            }
                        }
                        _ => out.push((ty, payload.to_vec())),
                    }
                }
                buf = &buf[((len + 3) & !3).min(buf.len())..];
            }
        }
    }

    /// Our table's sets, chains, rule counts and rule comments, or `None` when the table
    /// is absent. Set elements are not read.
    pub fn table_state(&self, table: &str) -> Result<Option<TableState>> {
        let seq = self.next_seq(1);
        let mut m = MsgBuf::default();
        let start = m.begin_nft(NFT_MSG_GETTABLE, NLM_F_REQUEST | NLM_F_ACK, seq);
        m.attr_str(NFTA_TABLE_NAME, table);
        m.end(start);
        self.send(&m.buf)?;
        let (mut acks, mut data) = (BTreeMap::new(), Vec::new());
        self.drain(&mut acks, &mut data)?;
        match acks.get(&seq) {
            Some(a) if a.errno == 0 => {}
            Some(a) if a.errno == ENOENT => return Ok(None),
            Some(a) => {
                return Err(Error::Refused {
                    what: format!("lookup of table {table}"),
                    errno: a.errno,
                    message: a.message.clone(),
                });
            }
            None => return Err(Error::MissingReplies { got: 0, want: 1 }),
        }
        let mut msgs = self.dump(NFT_MSG_GETSET, None)?;
        msgs.extend(self.dump(NFT_MSG_GETCHAIN, None)?);
        msgs.extend(self.dump(NFT_MSG_GETRULE, Some((NFTA_RULE_TABLE, table)))?);
        Ok(Some(fold_state(table, &msgs)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// `nft --debug=mnl add element inet outpost blocked4 { 10.0.0.1 }` (nftables 1.0.6)
    /// sends: BATCH_BEGIN (type 16, res_id 00 0a), NEWSETELEM (type 2572) with TABLE
    /// "outpost", SET "blocked4", SET_ID 1, ELEMENTS(N){ELEM(N){KEY(N){VALUE 0a000001}}}
    /// of lengths 20/16/12/8, BATCH_END (type 17). Ours is the same less SET_ID (only
    /// needed for sets created in the same batch), with ACK|CREATE asked for.
    #[test]
    fn add_one_ipv4_element_matches_nft() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let (bytes, sent) = encode_batch("outpost", &[("blocked4", SetOp::Add(&[a]))], 100);
        assert_eq!(sent.keys().copied().collect::<Vec<_>>(), vec![101]);
        let expected = concat!(
            // BATCH_BEGIN: len 20, type 0x10, REQUEST, seq 100, port 0, AF_UNSPEC v0 res_id 10.
            "14000000",
            "1000",
            "0100",
            "64000000",
            "00000000",
            "0000000a",
            // NEWSETELEM: len 68, type 0x0a0c, REQUEST|ACK|CREATE, seq 101; inet v0 res_id 0.
            "44000000",
            "0c0a",
            "0504",
            "65000000",
            "00000000",
            "01000000",
            "0c000100",
            "6f7574706f737400", // TABLE "outpost\0"
            "0d000200",
            "626c6f636b65643400000000", // SET "blocked4\0" + pad
            "14000380",
            "10000180",
            "0c000180",
            "08000100",
            "0a000001",
            // BATCH_END: seq 102.
            "14000000",
            "1100",
            "0100",
            "66000000",
            "00000000",
            "0000000a",
        );
        assert_eq!(hex(&bytes), expected);
    }

    /// `nft --debug=mnl flush set inet outpost blocked6` sends a DELSETELEM (type 2574)
    /// with only TABLE and SET.
    #[test]
    fn flush_is_delsetelem_without_elements_and_v6_keys_are_16_bytes() {
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let (bytes, sent) = encode_batch(
            "t",
            &[
                ("blocked6", SetOp::Flush),
                ("blocked6", SetOp::Delete(&[a])),
            ],
            0,
        );
        assert_eq!(sent.len(), 2);
        let flush = &bytes[20..20 + 44];
        assert_eq!(
            hex(flush),
            concat!(
                "2c000000",
                "0e0a",
                "0500",
                "01000000",
                "00000000",
                "01000000",
                "06000100",
                "74000000",
                "0d000200",
                "626c6f636b65643600000000"
            )
        );
        let del = &bytes[64..bytes.len() - 20];
        assert_eq!(
            u32::from_ne_bytes(del[0..4].try_into().unwrap()) as usize,
            del.len()
        );
        assert_eq!(
            u16::from_ne_bytes([del[6], del[7]]),
            NLM_F_REQUEST | NLM_F_ACK
        );
        assert!(
            hex(del).ends_with(concat!(
                "20000380",
                "1c000180",
                "18000180",
                "14000100",
                "20010db8000000000000000000000001"
            )),
            "{}",
            hex(del)
        );
    }

    #[test]
    fn big_loads_split_into_messages_under_64k() {
        let addrs: Vec<IpAddr> = (0..10_000u32)
            .map(|i| IpAddr::from((0x0a00_0000 + i).to_be_bytes()))
            .collect();
        let (bytes, sent) = encode_batch("outpost", &[("blocked4", SetOp::Add(&addrs))], 0);
        assert!(sent.len() >= 3, "{}", sent.len());
        let mut off = 0;
        let mut elements = 0;
        while off < bytes.len() {
            let len = u32::from_ne_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes([bytes[off + 4], bytes[off + 5]]);
            if ty == NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSETELEM {
                // TABLE (12) + SET (16) then the ELEMENTS nest.
                let nest = &bytes[off + 20 + 12 + 16..off + len];
                let nlen = usize::from(u16::from_ne_bytes([nest[0], nest[1]]));
                assert_eq!(nlen, nest.len());
                elements += (nlen - 4) / 16;
            }
            off += len;
        }
        assert_eq!(elements, 10_000);
    }

    #[test]
    fn replies_are_matched_to_requests() {
        let mut buf = Vec::new();
        // ACK (error 0) for seq 7.
        buf.extend_from_slice(&36u32.to_ne_bytes());
        buf.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        buf.extend_from_slice(&0x100u16.to_ne_bytes());
        buf.extend_from_slice(&7u32.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&0i32.to_ne_bytes());
        buf.extend_from_slice(&[0u8; 16]);
        // ENOENT for seq 8 with an extended-ack message.
        let text = b"no such element\0";
        let tlv_len = 4 + text.len();
        let total = 16 + 4 + 16 + ((tlv_len + 3) & !3);
        buf.extend_from_slice(&(total as u32).to_ne_bytes());
        buf.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        buf.extend_from_slice(&(0x100u16 | NLM_F_ACK_TLVS).to_ne_bytes());
        buf.extend_from_slice(&8u32.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&(-2i32).to_ne_bytes());
        buf.extend_from_slice(&[0u8; 16]);
        buf.extend_from_slice(&(tlv_len as u16).to_ne_bytes());
        buf.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        buf.extend_from_slice(text);
        while buf.len() % 4 != 0 {
            buf.push(0);
        }
        let (mut acks, mut data) = (BTreeMap::new(), Vec::new());
        parse_replies(&buf, &mut acks, &mut data).unwrap();
        assert_eq!(
            acks[&7],
            Ack {
                errno: 0,
                message: None
            }
        );
        assert_eq!(
            acks[&8],
            Ack {
                errno: 2,
                message: Some("no such element".into())
            }
        );
        assert!(data.is_empty());
        assert!(parse_replies(&buf[..20], &mut acks, &mut data).is_err());
    }

    #[test]
    fn table_state_from_dumped_messages() {
        fn msg(build: impl FnOnce(&mut MsgBuf)) -> Vec<u8> {
            let mut m = MsgBuf::default();
            m.buf.extend_from_slice(&[1, 0, 0, 0]);
            build(&mut m);
            m.buf
        }
        let set = msg(|m| {
            m.attr_str(NFTA_SET_TABLE, "outpost");
            m.attr_str(NFTA_SET_NAME, "blocked4");
            m.attr(NFTA_SET_KEY_TYPE, &TYPE_IPADDR.to_be_bytes());
        });
        let foreign_set = msg(|m| {
            m.attr_str(NFTA_SET_TABLE, "other");
            m.attr_str(NFTA_SET_NAME, "blocked6");
            m.attr(NFTA_SET_KEY_TYPE, &TYPE_IP6ADDR.to_be_bytes());
        });
        let chain = msg(|m| {
            m.attr_str(NFTA_CHAIN_TABLE, "outpost");
            m.attr_str(NFTA_CHAIN_NAME, "empty");
        });
        // nft stores `comment "hi"` as udata type 0, length 3, "hi\0".
        let rule = msg(|m| {
            m.attr_str(NFTA_RULE_TABLE, "outpost");
            m.attr_str(NFTA_RULE_CHAIN, "forward");
            m.attr(NFTA_RULE_USERDATA, &[0, 3, b'h', b'i', 0]);
        });
        let st = fold_state(
            "outpost",
            &[
                (NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSET, set),
                (NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSET, foreign_set),
                (NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWCHAIN, chain),
                (NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWRULE, rule.clone()),
                (NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWRULE, rule),
            ],
        );
        assert_eq!(
            st.sets,
            BTreeMap::from([("blocked4".to_string(), "ipv4_addr".to_string())])
        );
        assert_eq!(
            st.chains,
            BTreeMap::from([("empty".to_string(), 0), ("forward".to_string(), 2)])
        );
        assert_eq!(
            st.comments["forward"],
            vec!["hi".to_string(), "hi".to_string()]
        );
    }
}
