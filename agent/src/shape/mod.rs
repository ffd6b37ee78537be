//! Per-subscriber speed shaping on the BNG itself (IPoE), with HTB applied through rtnetlink.
//!
//! Used when the site shapes on the agent's host (`SiteSettings::shaping_enabled`);
//! when the NAS shapes from RADIUS rate attributes this module stays off. It knows
//! nothing about plans or sites: it gets subscriber ids, IPv4 addresses and
//! [`Rate`]s, and works in the network namespace it runs in.
//!
//! # Use
//!
//! ```no_run
//! # use outpost_agent::shape::{ShapeConfig, Shaped, Shaper};
//! # use outpost_protocol::Rate;
//! # fn main() -> Result<(), outpost_agent::shape::Error> {
//! let mut shaper = Shaper::new(ShapeConfig {
//!     subscriber_interface: "eth1".into(),
//!     ifb: "ifb-up".into(),
//!     link_kbps: 10_000_000,
//!     netns: None,
//! });
//! let rate = Rate { download_kbps: 8000, upload_kbps: 4000, burst_download_kbps: None, burst_upload_kbps: None };
//! let sub = Shaped { subscriber_id: 42, ip: "100.64.0.11".parse().unwrap(), rate };
//! shaper.full(&[sub])?;                                     // at start: everything
//! shaper.upsert(&[Shaped { rate: Rate { download_kbps: 16000, ..rate }, ..sub }])?; // re-rate one
//! shaper.remove(&[42])?;
//! shaper.clear()?;                                          // shaping turned off
//! # Ok(()) }
//! ```
//!
//! # The tree
//!
//! Both directions use the same layout, with the same class ids:
//!
//! ```text
//! download: <subscriber_interface> egress       upload: <ifb> egress
//!                                                 (the subscriber interface's ingress qdisc
//!                                                  redirects every packet to the IFB)
//! 1:        htb default 2
//! 1:1       link class, link_kbps (rate = ceil)
//! 1:2       default class, link_kbps
//! 1:10+k    shard k's class (k < 64), link_kbps, holding
//!   S(k):     shard k's own htb qdisc (S(k) = shard_major(k): 100:, 101:, ... 143:)
//!   S(k):1    its link class, link_kbps
//!   S(k):m    one class per subscriber (minor m, m % 64 == k): rate = plan, ceil = burst or plan
//! ```
//!
//! Download is classified by destination address on the subscriber interface; upload
//! by source address on the IFB. Anything no filter claims (ARP, DHCP, IPv6, hosts
//! that are not shaped subscribers) falls to the default class `1:2`, which may use
//! the whole link: shaping never throttles what it does not know. Rates are HTB's:
//! layer-2 bytes, so TCP goodput lands about 5 % below the plan rate.
//!
//! ## Why shards, and where a full apply's time goes
//!
//! Almost all of it is in the kernel, per class: `tc` itself used 0.35 s of CPU in a
//! 20 000-subscriber apply whose kernel time was 32 s (`/usr/bin/time`), and classes
//! alone took 32 s of it against 1 s for all 80 000 filters. `perf` over the class adds:
//!
//! - O(classes already in that qdisc): on every new class the kernel walks all classes
//!   of the qdisc to rebind filters (`tc_ctl_tclass` -> `tc_bind_tclass` -> `htb_walk`),
//!   so one flat qdisc is quadratic (200 s for 20 000 in the lab). 64 nested HTB
//!   qdiscs cut each walk 64-fold (about 10 % of what is left).
//! - O(HTB classes in the whole system): each class has its own filter block, and
//!   binding it (`tcf_block_get` -> `flow_indr_dev_setup_offload`) first searches one
//!   global list of every block for it. This is 56 %, and then 79 %, of the time, and
//!   nothing from user space avoids it while every subscriber has two HTB classes: the
//!   sum is quadratic in the subscribers.
//! - The qdisc lookup by handle of every class add (`qdisc_match_from_root`, 22 %): a
//!   device's qdiscs sit in 16 hash buckets, and the hidden pfifo leaf of every class
//!   has handle 0; shard majors that share its bucket (4 of `100:`..`13f:`) walked all
//!   the leaves. [`shard_major`] skips them (classes alone: 32 s -> 15.5 s of kernel time).
//!
//! A second classification step inside the shard is the price, and the kernel logs once
//! per shard qdisc `htb qdisc 12D: is non-work-conserving?` (an inner HTB that is
//! throttling returns nothing to the outer one; the inner's own watchdog reschedules
//! it, and the lab test measures every rate within the tolerance). The figures of the
//! whole apply are in `tests/benches/shape.rs`'s report (README).
//!
//! # Burst
//!
//! With a burst rate set, the class gets `rate = plan, ceil = burst`: the plan rate
//! is what the subscriber is guaranteed, and it may borrow up to the burst rate for
//! as long as its shard's link class has spare capacity. This is HTB borrowing, not a
//! timed MikroTik-style burst (no burst-threshold / burst-time): on an idle link a
//! bursting subscriber keeps the burst rate indefinitely, and loses it first when the
//! link fills. Without a burst rate, `ceil = rate`.
//!
//! # Classification: u32 hash tables
//!
//! Flower (one hash table per mask) would be the simplest scalable choice, but it is
//! a kernel option (`CONFIG_NET_CLS_FLOWER`) that not every BNG kernel has, the lab's
//! included; `u32` is in every kernel that has HTB. A flat list of u32 filters is a
//! linear scan per packet, so the filters sit in hash tables keyed on the address's
//! last octets. In the root qdisc `1:`, two levels send the packet to its shard:
//!
//! ```text
//! 800::  (root)  match all, hash on octet 3  -> table 100:
//! 100:<o3>:1     match all, hash on octet 4  -> table 2<o3>:   (256 tables, 200:..2ff:)
//! 2<o3>:<o4>:<n> match ip dst|src a.b.o3.o4/32 flowid 1:<10 + shard>
//! ```
//!
//! and in the shard's qdisc one level (a shard holds 1/64 of the subscribers) sends it
//! to the subscriber's class:
//!
//! ```text
//! 800::  (root)  match all, hash on octet 4  -> table 100:
//! 100:<o4>:<m / 64 + 1>  match ip dst|src a.b.o3.o4/32 flowid <100 + shard>:<m>
//! ```
//!
//! A root bucket holds only the subscribers that share the last two octets (different
//! /16s): one or a few, even with tens of thousands of subscribers; a shard bucket about
//! subscribers / 64 / 256 (at most 4 with 65533 subscribers spread over last octets).
//! The tables are built once by [`Shaper::full`]. IPv6 is not shaped here (its packets
//! go to the default class): IPoE IPv6 means delegated prefixes, which need prefix
//! matching this layout does not do; [`Shaped::ip`] is an [`Ipv4Addr`] so the type
//! says so.
//!
//! # Ids
//!
//! HTB minors are 16 bits, and here unique across all shards. A subscriber's minor is
//! its id itself when the id is in `3..=0xffff` (so class `12d:2a` is subscriber 42,
//! handy when reading `tc` output), and `3 + (id - 3) mod 65533` otherwise; when that
//! minor is taken by another subscriber the next free one is used (linear probing). The
//! shard is `minor % 64`. [`Shaper::full`] assigns in ascending id order, so the same
//! set of subscribers always gives the same ids and the same batch: restarting and
//! re-applying is idempotent. An incremental add probes against the current occupancy,
//! so after adds and removes a probed subscriber may get another minor at the next full
//! apply; that is harmless because a full apply rebuilds the whole tree. More than
//! 65533 subscribers on one interface is [`Error::Full`]. The root filter's node id (12
//! bits) is the lowest free one in its bucket; a bucket with 4095 subscribers is
//! [`Error::BucketFull`]. The shard filter's node id is `minor / 64 + 1`, unique in
//! its shard.
//!
//! # Applying
//!
//! A change is a list of [`Op`]s from pure functions ([`ops_full`], [`ops_diff`]),
//! tested as data; each op writes itself as the `tc` line it equals ([`batch_full`],
//! [`batch_diff`]: what the agent ran through `tc -batch` before, and what the
//! benchmark still runs to compare). The [`Shaper`] sends the ops as rtnetlink messages
//! from its own socket, 1024 per `sendmsg`, and checks one ACK per
//! message: no process, no text. A refusal is [`Error::Refused`], naming the op (as its
//! `tc` line), the subscriber it is about and the kernel's message. Validation
//! (rates, duplicates, capacity) and a missing device ([`Error::NoDevice`]) are
//! found before anything is sent. A change the kernel refused half-way leaves a
//! tree the [`Shaper`] cannot vouch for, so it then marks itself for a rebuild: the
//! next [`Shaper::upsert`] or [`Shaper::remove`] does a full apply of everything it was
//! asked for (with a warning), instead of patching an unknown tree. The IFB device
//! is still created and raised with `ip` (a few milliseconds once per full apply).
//!
//! Incremental changes only touch the subscribers in question: an add is `class add`
//! plus its two `filter add`s (shard, then root), a re-rate is one RTM_NEWTCLASS change
//! of that one class (in the direction whose rate changed; a class that is not there
//! is refused, not created), a removal deletes the filters
//! (root, then shard) and then the classes. Nothing else is replaced, so other classes
//! keep their handles and counters.
//!
//! The module owns, on the subscriber interface, its root qdisc and its ingress
//! qdisc, and the IFB device (created if absent, with its root qdisc). A full apply
//! deletes whatever is in those places and builds its own.

mod netlink;
mod shaper;
mod tc;
mod tree;

use std::net::Ipv4Addr;

use outpost_protocol::Rate;

pub use shaper::Shaper;
pub use tc::{Dev, Op, batch_diff, batch_full, batch_text, ops_diff, ops_full};
pub use tree::{assign, assign_upsert};

/// Class minor of the link class every subscriber class hangs under.
pub const MINOR_LINK: u16 = 1;
/// Class minor of the default class for unclassified traffic.
pub const MINOR_DEFAULT: u16 = 2;
/// The first minor a subscriber class can get.
pub const FIRST_SUBSCRIBER_MINOR: u16 = 3;
/// How many subscribers one interface can shape (HTB's 16-bit minor space, minus
/// 0, the link class and the default class).
pub const CAPACITY: usize = (u16::MAX - FIRST_SUBSCRIBER_MINOR) as usize + 1;
/// How many subscribers can share the last two octets (u32's 12-bit node ids).
pub const BUCKET_CAPACITY: usize = 0xfff;
/// How many HTB qdiscs share the subscriber classes (see the module doc).
pub const SHARDS: u16 = 64;
/// The root's class for shard k is `1:<SHARD_CLASS_BASE + k>`.
const SHARD_CLASS_BASE: u16 = 0x10;
/// Shard majors are taken from here up, skipping those the kernel files with the
/// hidden leaf qdiscs (see [`shard_major`]).
const SHARD_MAJOR_BASE: u16 = 0x100;

/// The kernel's `hash_32(val, 4)`: the bucket of a device's 16-bucket qdisc hash
/// (`qdisc_hash`) that a qdisc with this handle is filed in and looked up from.
const fn qdisc_hash_bucket(handle: u32) -> u32 {
    handle.wrapping_mul(0x61c8_8647) >> 28
}

/// The majors of the shard qdiscs, in shard order: from [`SHARD_MAJOR_BASE`] up, those
/// whose handle does not share the bucket of handle 0. Every HTB class comes with a
/// hidden pfifo leaf qdisc of handle 0, filed in the same hash bucket; a class add
/// looks its qdisc up by handle, so a shard in that bucket walks every leaf of the
/// device (4 of 0x100..0x140 would; with them, 20 000 subscribers took twice as long).
const SHARD_MAJORS: [u16; SHARDS as usize] = {
    let mut out = [0u16; SHARDS as usize];
    let (mut k, mut major) = (0, SHARD_MAJOR_BASE);
    while k < out.len() {
        if qdisc_hash_bucket((major as u32) << 16) != qdisc_hash_bucket(0) {
            out[k] = major;
            k += 1;
        }
        major += 1;
    }
    out
};

/// Shard k's HTB qdisc major (see [`SHARD_MAJORS`]).
pub fn shard_major(k: u16) -> u16 {
    SHARD_MAJORS[usize::from(k % SHARDS)]
}
/// The filter priority of the IPv4 hash tables.
const PRIO_V4: u32 = 10;
/// The first level hash table (keyed on octet 3).
const HT_L1: u32 = 0x100;
/// The second level tables are `HT_L2_BASE + octet 3` (keyed on octet 4).
const HT_L2_BASE: u32 = 0x200;
/// u32 offsets of the addresses in the IPv4 header.
const OFFSET_SRC: u32 = 12;
const OFFSET_DST: u32 = 16;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A subscriber's rate cannot be shaped; nothing was applied.
    #[error("subscriber {subscriber_id}: {reason}")]
    InvalidRate {
        /// The subscriber whose rate is refused.
        subscriber_id: i64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The same subscriber id appears twice in one call; nothing was applied.
    #[error("subscriber {subscriber_id} appears more than once")]
    DuplicateSubscriber { subscriber_id: i64 },
    /// Two subscribers would have the same address; nothing was applied.
    #[error("address {ip} would belong to both subscriber {first} and {second}")]
    DuplicateIp {
        ip: Ipv4Addr,
        first: i64,
        second: i64,
    },
    /// More subscribers than HTB's minor space holds; nothing was applied.
    #[error("{wanted} subscribers to shape, but one interface holds at most {CAPACITY}")]
    Full { wanted: usize },
    /// Too many subscribers share the last two octets of their address; nothing was applied.
    #[error("more than {BUCKET_CAPACITY} subscribers share the last two octets of {ip}")]
    BucketFull { ip: Ipv4Addr },
    /// The configured IFB name belongs to a device of another kind; it is left alone.
    #[error("{name} exists but is a {kind:?} device, not an ifb")]
    NotIfb { name: String, kind: Option<String> },
    /// A program could not be started.
    #[error("could not run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// A command (other than a batch line) failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    /// The kernel refused an operation. With [`Shaper`], the operations sent before
    /// it in the same change were applied and those after it were not sent, except
    /// the rest of its message batch (at most [`netlink::CHUNK`] messages), which the
    /// kernel runs regardless; the next change rebuilds the whole tree.
    #[error("the kernel refused `{op}`{}: {} ({})",
        .subscriber.map(|s| format!(" (subscriber {s})")).unwrap_or_default(),
        std::io::Error::from_raw_os_error(*.errno),
        .message.as_deref().unwrap_or("no detail"))]
    Refused {
        /// The operation, as the `tc` command that equals it.
        op: String,
        /// The subscriber it is about, if any.
        subscriber: Option<i64>,
        /// The positive errno.
        errno: i32,
        /// The kernel's extended-ack message, when it sent one.
        message: Option<String>,
    },
    /// A device to shape on does not exist; nothing was applied.
    #[error("no network device {name}")]
    NoDevice { name: String },
    /// The rtnetlink socket could not be opened or used.
    #[error("rtnetlink: {op}")]
    Netlink {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// Fewer answers than requests: the outcome is unknown, the next change rebuilds.
    #[error("the kernel answered {got} of {want} requests")]
    MissingReplies { got: usize, want: usize },
    /// `tc` or `ip` printed JSON this module does not understand.
    #[error("could not read the output of `{command}`")]
    Parse {
        command: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where to shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeConfig {
    /// The interface facing the subscribers (their access network).
    pub subscriber_interface: String,
    /// The IFB device upload is shaped on; created if absent.
    pub ifb: String,
    /// The link's capacity in kbit/s: the link class and the default class get it.
    pub link_kbps: u64,
    /// Run every command under `ip netns exec <netns>`. `None` (the agent's case) works
    /// in the current namespace; lab tests drive a BNG namespace from outside.
    pub netns: Option<String>,
}

/// A subscriber to shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shaped {
    /// The subscriber's id; it decides the class minor (see the module doc).
    pub subscriber_id: i64,
    /// The subscriber's address on the access network.
    pub ip: Ipv4Addr,
    /// The plan's rates; `download` is shaped on the subscriber interface, `upload` on the IFB.
    pub rate: Rate,
}

/// A shaped subscriber with the ids it got: the class `1:<minor>` in both directions,
/// and the u32 filter `<table>:<bucket>:<node>` (see [`Class::filter_handle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    /// The subscriber it shapes.
    pub subscriber_id: i64,
    /// HTB class minor, the same on the subscriber interface and the IFB.
    pub minor: u16,
    /// u32 node id inside the address's bucket, the same on both devices.
    pub node: u16,
    /// The address its filters match (destination for download, source for upload).
    pub ip: Ipv4Addr,
    /// The rates its classes have.
    pub rate: Rate,
}

impl Class {
    /// The shard (see the module doc) the class is in: `minor % SHARDS`.
    pub fn shard(&self) -> u16 {
        self.minor % SHARDS
    }

    /// The major of the shard's HTB qdisc.
    pub fn shard_major(&self) -> u16 {
        shard_major(self.shard())
    }

    /// `<shard major>:<minor>` as tc writes it.
    pub fn classid(&self) -> String {
        format!("{:x}:{:x}", self.shard_major(), self.minor)
    }

    /// The u32 filter handle in the shard's table: `100:<octet 4>:<minor / SHARDS + 1>`,
    /// unique in the shard because the minor is.
    pub fn shard_filter_handle(&self) -> String {
        let [_, _, _, o4] = self.ip.octets();
        format!("{HT_L1:x}:{o4:x}:{:x}", self.minor / SHARDS + 1)
    }

    /// The u32 filter handle in the root's tables, `<table>:<bucket>:<node>`, as tc writes it.
    pub fn filter_handle(&self) -> String {
        let [_, _, o3, o4] = self.ip.octets();
        format!("{:x}:{:x}:{:x}", HT_L2_BASE + u32::from(o3), o4, self.node)
    }
}

/// What a full apply finds in the places it owns (from [`Shaper::full`]'s look at
/// the kernel), so that [`batch_full`] deletes exactly what is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Present {
    /// The subscriber interface has a non-default root qdisc.
    pub subscriber_root: bool,
    /// The subscriber interface has an ingress (or clsact) qdisc.
    pub subscriber_ingress: bool,
    /// The IFB has a non-default root qdisc.
    pub ifb_root: bool,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn cfg() -> ShapeConfig {
        ShapeConfig {
            subscriber_interface: "acc0".into(),
            ifb: "ifb0".into(),
            link_kbps: 1_000_000,
            netns: None,
        }
    }

    fn rate(down: u64, up: u64) -> Rate {
        Rate {
            download_kbps: down,
            upload_kbps: up,
            burst_download_kbps: None,
            burst_upload_kbps: None,
        }
    }

    fn sub(id: i64, ip: &str, down: u64, up: u64) -> Shaped {
        Shaped {
            subscriber_id: id,
            ip: ip.parse().unwrap(),
            rate: rate(down, up),
        }
    }

    #[test]
    fn minors_are_the_id_when_they_fit_and_probe_otherwise() {
        let classes = assign(&[
            sub(42, "100.64.0.11", 8000, 4000),
            sub(42 + 65533, "100.64.0.12", 8000, 4000),
            sub(70000, "100.64.0.13", 8000, 4000),
            sub(1, "100.64.0.14", 8000, 4000),
        ])
        .unwrap();
        assert_eq!(classes[&42].minor, 42);
        // 65575 wraps onto 42, which the lower id took first: the next free minor.
        assert_eq!(classes[&(42 + 65533)].minor, 43);
        assert_eq!(classes[&70000].minor, 3 + ((70000 - 3) % 65533) as u16);
        assert_eq!(classes[&1].minor, 0xfffe);
        assert_eq!(classes[&42].classid(), "12d:2a");
        assert_eq!(classes[&42].shard_filter_handle(), "100:b:1");
        assert_eq!(classes[&70000].shard_filter_handle(), "100:d:46");
    }

    #[test]
    fn the_same_set_gives_the_same_batch_whatever_its_order() {
        let a = [
            sub(7, "100.64.0.7", 8000, 4000),
            sub(65540, "100.64.1.7", 8000, 4000),
            sub(9, "100.65.0.7", 10000, 5000),
        ];
        let mut b = a;
        b.reverse();
        let ca: Vec<Class> = assign(&a).unwrap().into_values().collect();
        let cb: Vec<Class> = assign(&b).unwrap().into_values().collect();
        assert_eq!(
            batch_full(&cfg(), Present::default(), &ca),
            batch_full(&cfg(), Present::default(), &cb)
        );
        // 7 and 65540 collide on minor 7; 7 is lower so it keeps it.
        assert_eq!(ca[0].minor, 7);
        assert_eq!(ca[2].minor, 8);
        // 100.64.0.7 and 100.65.0.7 share a bucket: distinct nodes.
        assert_eq!(ca[0].filter_handle(), "200:7:1");
        assert_eq!(ca[1].filter_handle(), "200:7:2");
        assert_eq!(ca[2].filter_handle(), "201:7:1");
    }

    #[test]
    fn full_batch_builds_trees_classes_filters_and_redirect() {
        let mut s = sub(42, "100.64.0.11", 8000, 4000);
        s.rate.burst_download_kbps = Some(16000);
        let classes: Vec<Class> = assign(&[s]).unwrap().into_values().collect();
        let present = Present {
            subscriber_root: true,
            subscriber_ingress: true,
            ifb_root: false,
        };
        let batch = batch_full(&cfg(), present, &classes);
        let lines: Vec<&str> = batch.lines().collect();
        assert_eq!(lines[0], "qdisc del dev acc0 ingress");
        assert_eq!(lines[1], "qdisc del dev acc0 root");
        assert_eq!(lines[2], "qdisc add dev acc0 root handle 1: htb default 2");
        assert_eq!(
            lines[3],
            "class add dev acc0 parent 1: classid 1:1 htb rate 1000000kbit ceil 1000000kbit quantum 200000"
        );
        assert_eq!(
            lines[4],
            "class add dev acc0 parent 1:1 classid 1:2 htb rate 1000000kbit ceil 1000000kbit quantum 200000"
        );
        assert_eq!(
            lines[5..10],
            [
                "class add dev acc0 parent 1:1 classid 1:10 htb rate 1000000kbit ceil 1000000kbit quantum 200000",
                "qdisc add dev acc0 parent 1:10 handle 100: htb",
                "class add dev acc0 parent 100: classid 100:1 htb rate 1000000kbit ceil 1000000kbit quantum 200000",
                "filter add dev acc0 parent 100: protocol ip prio 10 handle 100: u32 divisor 256",
                "filter add dev acc0 parent 100: protocol ip prio 10 handle 800::1 u32 ht 800:: \
                 match u32 0 0 hashkey mask 0x000000ff at 16 link 100:",
            ]
        );
        assert!(lines.contains(&"qdisc add dev ifb0 parent 1:4f handle 143: htb"));
        assert!(lines.contains(
            &"filter add dev ifb0 parent 143: protocol ip prio 10 handle 800::1 u32 ht 800:: \
              match u32 0 0 hashkey mask 0x000000ff at 12 link 100:"
        ));
        assert!(lines.contains(
            &"filter add dev acc0 parent 1: protocol ip prio 10 handle 200: u32 divisor 256"
        ));
        assert!(lines.contains(
            &"filter add dev acc0 parent 1: protocol ip prio 10 handle 100:ff:1 u32 ht 100:ff: \
              match u32 0 0 hashkey mask 0x000000ff at 16 link 2ff:"
        ));
        assert!(lines.contains(
            &"filter add dev ifb0 parent 1: protocol ip prio 10 handle 100:0:1 u32 ht 100:0: \
              match u32 0 0 hashkey mask 0x000000ff at 12 link 200:"
        ));
        // The root's link comes after all the root's tables.
        let root_link = lines
            .iter()
            .position(|l| l.starts_with("filter add dev acc0 parent 1: ") && l.contains("ht 800::"))
            .unwrap();
        let last_table = lines
            .iter()
            .rposition(|l| l.starts_with("filter add dev acc0 parent 1: ") && l.contains("ht 100:"))
            .unwrap();
        assert!(root_link > last_table);
        let tail: Vec<&str> = lines[lines.len() - 8..].to_vec();
        assert_eq!(
            tail,
            [
                "class add dev acc0 parent 12d:1 classid 12d:2a htb rate 8000kbit ceil 16000kbit quantum 100000",
                "filter add dev acc0 parent 12d: protocol ip prio 10 handle 100:b:1 u32 ht 100:b: \
                 match ip dst 100.64.0.11/32 flowid 12d:2a",
                "filter add dev acc0 parent 1: protocol ip prio 10 handle 200:b:1 u32 ht 200:b: \
                 match ip dst 100.64.0.11/32 flowid 1:3a",
                "class add dev ifb0 parent 12d:1 classid 12d:2a htb rate 4000kbit ceil 4000kbit quantum 50000",
                "filter add dev ifb0 parent 12d: protocol ip prio 10 handle 100:b:1 u32 ht 100:b: \
                 match ip src 100.64.0.11/32 flowid 12d:2a",
                "filter add dev ifb0 parent 1: protocol ip prio 10 handle 200:b:1 u32 ht 200:b: \
                 match ip src 100.64.0.11/32 flowid 1:3a",
                "qdisc add dev acc0 handle ffff: ingress",
                "filter add dev acc0 parent ffff: protocol all prio 1 u32 match u32 0 0 \
                 action mirred egress redirect dev ifb0",
            ]
        );
        // 2 qdisc deletes, 2 x (qdisc + 2 classes + 5 per shard + 257 tables + 256 links
        // + root link), 6 lines for the subscriber, 2 for the redirect.
        assert_eq!(lines.len(), 2 + 2 * (3 + 64 * 5 + 257 + 256 + 1) + 6 + 2);
    }

    #[test]
    fn re_rate_changes_one_class_in_one_direction() {
        let before = assign(&[
            sub(42, "100.64.0.11", 8000, 4000),
            sub(43, "100.64.0.12", 12000, 6000),
        ])
        .unwrap();
        let after = assign_upsert(&before, &[sub(42, "100.64.0.11", 16000, 4000)]).unwrap();
        assert_eq!(
            batch_diff(&cfg(), &before, &after),
            "class change dev acc0 parent 12d:1 classid 12d:2a htb rate 16000kbit ceil 16000kbit quantum 200000\n"
        );
        let burst = Shaped {
            rate: Rate {
                burst_upload_kbps: Some(8000),
                ..rate(8000, 4000)
            },
            ..sub(42, "100.64.0.11", 0, 0)
        };
        let after = assign_upsert(&before, &[burst]).unwrap();
        assert_eq!(
            batch_diff(&cfg(), &before, &after),
            "class change dev ifb0 parent 12d:1 classid 12d:2a htb rate 4000kbit ceil 8000kbit quantum 50000\n"
        );
        let same = assign_upsert(&before, &[sub(43, "100.64.0.12", 12000, 6000)]).unwrap();
        assert_eq!(batch_diff(&cfg(), &before, &same), "");
    }

    #[test]
    fn add_and_remove_touch_only_their_subscriber() {
        let before = assign(&[sub(42, "100.64.0.11", 8000, 4000)]).unwrap();
        let after = assign_upsert(&before, &[sub(43, "100.64.0.12", 12000, 6000)]).unwrap();
        assert_eq!(after[&42], before[&42]);
        assert_eq!(
            batch_diff(&cfg(), &before, &after),
            "class add dev acc0 parent 12e:1 classid 12e:2b htb rate 12000kbit ceil 12000kbit quantum 150000\n\
             class add dev ifb0 parent 12e:1 classid 12e:2b htb rate 6000kbit ceil 6000kbit quantum 75000\n\
             filter add dev acc0 parent 12e: protocol ip prio 10 handle 100:c:1 u32 ht 100:c: match ip dst 100.64.0.12/32 flowid 12e:2b\n\
             filter add dev acc0 parent 1: protocol ip prio 10 handle 200:c:1 u32 ht 200:c: match ip dst 100.64.0.12/32 flowid 1:3b\n\
             filter add dev ifb0 parent 12e: protocol ip prio 10 handle 100:c:1 u32 ht 100:c: match ip src 100.64.0.12/32 flowid 12e:2b\n\
             filter add dev ifb0 parent 1: protocol ip prio 10 handle 200:c:1 u32 ht 200:c: match ip src 100.64.0.12/32 flowid 1:3b\n"
        );
        assert_eq!(
            batch_diff(&cfg(), &after, &before),
            "filter del dev acc0 parent 1: protocol ip prio 10 handle 200:c:1 u32\n\
             filter del dev acc0 parent 12e: protocol ip prio 10 handle 100:c:1 u32\n\
             filter del dev ifb0 parent 1: protocol ip prio 10 handle 200:c:1 u32\n\
             filter del dev ifb0 parent 12e: protocol ip prio 10 handle 100:c:1 u32\n\
             class del dev acc0 classid 12e:2b\n\
             class del dev ifb0 classid 12e:2b\n"
        );
    }

    #[test]
    fn swapping_addresses_deletes_both_filters_before_adding() {
        let before = assign(&[
            sub(42, "100.64.0.11", 8000, 4000),
            sub(43, "100.64.0.12", 8000, 4000),
        ])
        .unwrap();
        let after = assign_upsert(
            &before,
            &[
                sub(42, "100.64.0.12", 8000, 4000),
                sub(43, "100.64.0.11", 8000, 4000),
            ],
        )
        .unwrap();
        assert_eq!((after[&42].minor, after[&43].minor), (42, 43));
        let batch = batch_diff(&cfg(), &before, &after);
        let lines: Vec<&str> = batch.lines().collect();
        assert_eq!(lines.len(), 16);
        assert!(lines[..8].iter().all(|l| l.starts_with("filter del")));
        assert!(lines[8..].iter().all(|l| l.starts_with("filter add")));
        assert!(lines[8].contains("match ip dst 100.64.0.12/32 flowid 12d:2a"));
    }

    #[test]
    fn bad_input_is_refused_whole() {
        let zero = sub(1, "100.64.0.1", 0, 4000);
        assert!(matches!(
            assign(&[zero]),
            Err(Error::InvalidRate {
                subscriber_id: 1,
                ..
            })
        ));
        let mut low_burst = sub(2, "100.64.0.2", 8000, 4000);
        low_burst.rate.burst_download_kbps = Some(4000);
        assert!(matches!(
            assign(&[low_burst]),
            Err(Error::InvalidRate {
                subscriber_id: 2,
                ..
            })
        ));
        assert!(matches!(
            assign(&[sub(3, "100.64.0.3", 1, 1), sub(3, "100.64.0.4", 1, 1)]),
            Err(Error::DuplicateSubscriber { subscriber_id: 3 })
        ));
        assert!(matches!(
            assign(&[sub(3, "100.64.0.3", 1, 1), sub(4, "100.64.0.3", 1, 1)]),
            Err(Error::DuplicateIp {
                first: 3,
                second: 4,
                ..
            })
        ));
        let before = assign(&[sub(3, "100.64.0.3", 1, 1)]).unwrap();
        assert!(matches!(
            assign_upsert(&before, &[sub(4, "100.64.0.3", 1, 1)]),
            Err(Error::DuplicateIp {
                first: 3,
                second: 4,
                ..
            })
        ));
    }

    #[test]
    fn the_minor_space_fills_up_clearly() {
        let subs: Vec<Shaped> = (0..=CAPACITY as i64)
            .map(|i| {
                let ip = Ipv4Addr::from(0x0a00_0000 + i as u32);
                Shaped {
                    subscriber_id: i,
                    ip,
                    rate: rate(1000, 1000),
                }
            })
            .collect();
        assert!(matches!(
            assign(&subs),
            Err(Error::Full { wanted }) if wanted == CAPACITY + 1
        ));
        let full = assign(&subs[..CAPACITY]).unwrap();
        let minors: BTreeSet<u16> = full.values().map(|c| c.minor).collect();
        assert_eq!(minors.len(), CAPACITY);
        assert!(matches!(
            assign_upsert(&full, &subs[CAPACITY..]),
            Err(Error::Full { .. })
        ));
    }
}
