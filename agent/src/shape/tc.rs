//! The tree as a list of operations ([`Op`]): what a full build and a change do, built
//! by pure functions and tested as data. [`Op::tc`] writes an operation as the `tc`
//! command line it equals, which is how the plans are tested and how the benchmark
//! runs the same plan through `tc -batch`; the [`super::Shaper`] sends the same
//! operations as rtnetlink messages (`netlink.rs`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::*;

/// HTB's per-class DRR quantum: a tenth of a second's bytes at the class rate, kept
/// between one full frame and the kernel's ceiling (what HTB itself would compute
/// from r2q, without its warnings for slow and fast classes).
pub(super) fn quantum(kbps: u64) -> u64 {
    (kbps.saturating_mul(1000) / 8 / 10).clamp(1514, 200_000)
}

/// `major:minor` as one 32-bit tc handle.
pub(super) const fn handle(major: u16, minor: u16) -> u32 {
    (major as u32) << 16 | minor as u32
}

/// A u32 filter handle: 12 bits of hash table, 8 of bucket, 12 of node.
pub(super) const fn u32_handle(table: u32, bucket: u32, node: u32) -> u32 {
    table << 20 | bucket << 12 | node
}

/// u32's root hash table (`800:`), created by the kernel with the first filter.
pub(super) const HT_ROOT: u32 = 0x800;

/// Which device an operation is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dev {
    /// The subscriber interface (download).
    Subscriber,
    /// The IFB (upload).
    Ifb,
}

/// Which way a device shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Side {
    Download,
    Upload,
}

impl Side {
    fn dev(self) -> Dev {
        match self {
            Side::Download => Dev::Subscriber,
            Side::Upload => Dev::Ifb,
        }
    }

    fn offset(self) -> u32 {
        match self {
            Side::Download => OFFSET_DST,
            Side::Upload => OFFSET_SRC,
        }
    }

    /// (rate, ceil) for this direction.
    pub(super) fn rates(self, r: &Rate) -> (u64, u64) {
        match self {
            Side::Download => (
                r.download_kbps,
                r.burst_download_kbps.unwrap_or(r.download_kbps),
            ),
            Side::Upload => (r.upload_kbps, r.burst_upload_kbps.unwrap_or(r.upload_kbps)),
        }
    }
}

pub(super) const SIDES: [Side; 2] = [Side::Download, Side::Upload];

/// One change to the kernel's traffic control, as plain data. Handles are the kernel's
/// 32-bit ones (`major << 16 | minor` for qdiscs and classes, [`u32_handle`] for
/// filters). Every filter is u32, `prio 10 protocol ip` unless said otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Deletes the device's root qdisc and everything under it.
    DelRoot(Dev),
    /// Deletes the subscriber interface's ingress qdisc (and its redirect).
    DelIngress,
    /// An HTB qdisc at `parent` (`None`: the root), `default` its default class minor (0: none).
    Htb {
        dev: Dev,
        parent: Option<u32>,
        handle: u32,
        default: u16,
    },
    /// An HTB class added (`change`: an existing one's rates changed in place).
    Class {
        dev: Dev,
        change: bool,
        parent: u32,
        classid: u32,
        rate_kbps: u64,
        ceil_kbps: u64,
        /// The subscriber it shapes (`None`: the tree's own classes).
        subscriber: Option<i64>,
    },
    /// A subscriber's class deleted.
    DelClass {
        dev: Dev,
        classid: u32,
        subscriber: i64,
    },
    /// An empty u32 hash table of 256 buckets in the qdisc `parent`.
    HashTable { dev: Dev, parent: u32, table: u32 },
    /// A u32 node in `ht` (table and bucket) matching everything, that hashes the
    /// packet's `mask`ed word at `at` into the buckets of table `link`.
    HashLink {
        dev: Dev,
        parent: u32,
        handle: u32,
        ht: u32,
        mask: u32,
        at: u32,
        link: u32,
    },
    /// A u32 node in `ht` matching the address `ip` (the word at `at`) to class `flowid`.
    Match {
        dev: Dev,
        parent: u32,
        handle: u32,
        ht: u32,
        at: u32,
        ip: Ipv4Addr,
        flowid: u32,
        subscriber: i64,
    },
    /// A u32 node deleted.
    DelFilter {
        dev: Dev,
        parent: u32,
        handle: u32,
        subscriber: i64,
    },
    /// The subscriber interface's ingress qdisc `ffff:`.
    Ingress,
    /// Every packet arriving on the subscriber interface redirected to the IFB's egress.
    Redirect,
}

/// `1:`, `12a:2a`.
fn tc_handle(h: u32) -> String {
    match h & 0xffff {
        0 => format!("{:x}:", h >> 16),
        m => format!("{:x}:{m:x}", h >> 16),
    }
}

/// u32 handles as tc writes them: `800::1`, `100:b:1`, `100:` (a table), `200:b:` (a bucket).
fn tc_u32(h: u32) -> String {
    let (table, bucket, node) = (h >> 20, (h >> 12) & 0xff, h & 0xfff);
    match (table, bucket, node) {
        (t, 0, 0) => format!("{t:x}:"),
        (HT_ROOT, 0, n) => format!("{HT_ROOT:x}::{n:x}"),
        (t, b, n) => format!("{t:x}:{b:x}:{n:x}"),
    }
}

/// A bucket (`ht`) as tc's `ht` argument: `800::`, `100:b:`, `100:0:`.
fn tc_ht(h: u32) -> String {
    let (table, bucket) = (h >> 20, (h >> 12) & 0xff);
    if table == HT_ROOT && bucket == 0 {
        format!("{table:x}::")
    } else {
        format!("{table:x}:{bucket:x}:")
    }
}

impl Op {
    /// The device's name.
    pub fn dev_name<'a>(&self, cfg: &'a ShapeConfig) -> &'a str {
        let dev = match *self {
            Op::DelRoot(dev)
            | Op::Htb { dev, .. }
            | Op::Class { dev, .. }
            | Op::DelClass { dev, .. }
            | Op::HashTable { dev, .. }
            | Op::HashLink { dev, .. }
            | Op::Match { dev, .. }
            | Op::DelFilter { dev, .. } => dev,
            Op::DelIngress | Op::Ingress | Op::Redirect => Dev::Subscriber,
        };
        match dev {
            Dev::Subscriber => &cfg.subscriber_interface,
            Dev::Ifb => &cfg.ifb,
        }
    }

    /// The subscriber it is about, if any.
    pub fn subscriber(&self) -> Option<i64> {
        match *self {
            Op::Class { subscriber, .. } => subscriber,
            Op::DelClass { subscriber, .. }
            | Op::Match { subscriber, .. }
            | Op::DelFilter { subscriber, .. } => Some(subscriber),
            _ => None,
        }
    }

    /// The `tc` command (a `tc -batch` line, without `tc`) that does the same.
    pub fn tc(&self, cfg: &ShapeConfig) -> String {
        let dev = self.dev_name(cfg);
        let filter = |parent: u32| {
            format!(
                "filter add dev {dev} parent {} protocol ip prio {PRIO_V4}",
                tc_handle(parent)
            )
        };
        match *self {
            Op::DelRoot(_) => format!("qdisc del dev {dev} root"),
            Op::DelIngress => format!("qdisc del dev {dev} ingress"),
            Op::Htb {
                parent,
                handle,
                default,
                ..
            } => {
                let at = match parent {
                    None => "root".to_string(),
                    Some(p) => format!("parent {}", tc_handle(p)),
                };
                let default = match default {
                    0 => String::new(),
                    d => format!(" default {d:x}"),
                };
                format!(
                    "qdisc add dev {dev} {at} handle {} htb{default}",
                    tc_handle(handle)
                )
            }
            Op::Class {
                change,
                parent,
                classid,
                rate_kbps,
                ceil_kbps,
                ..
            } => format!(
                "class {} dev {dev} parent {} classid {} htb rate {rate_kbps}kbit ceil {ceil_kbps}kbit quantum {}",
                if change { "change" } else { "add" },
                tc_handle(parent),
                tc_handle(classid),
                quantum(rate_kbps)
            ),
            Op::DelClass { classid, .. } => {
                format!("class del dev {dev} classid {}", tc_handle(classid))
            }
            Op::HashTable { parent, table, .. } => format!(
                "{} handle {} u32 divisor 256",
                filter(parent),
                tc_u32(table << 20)
            ),
            Op::HashLink {
                parent,
                handle,
                ht,
                mask,
                at,
                link,
                ..
            } => format!(
                "{} handle {} u32 ht {} match u32 0 0 hashkey mask 0x{mask:08x} at {at} link {}",
                filter(parent),
                tc_u32(handle),
                tc_ht(ht),
                tc_u32(link << 20)
            ),
            Op::Match {
                parent,
                handle,
                ht,
                at,
                ip,
                flowid,
                ..
            } => format!(
                "{} handle {} u32 ht {} match ip {} {ip}/32 flowid {}",
                filter(parent),
                tc_u32(handle),
                tc_ht(ht),
                if at == OFFSET_DST { "dst" } else { "src" },
                tc_handle(flowid)
            ),
            Op::DelFilter { parent, handle, .. } => format!(
                "filter del dev {dev} parent {} protocol ip prio {PRIO_V4} handle {} u32",
                tc_handle(parent),
                tc_u32(handle)
            ),
            Op::Ingress => format!("qdisc add dev {dev} handle ffff: ingress"),
            Op::Redirect => format!(
                "filter add dev {dev} parent ffff: protocol all prio 1 u32 match u32 0 0 \
                 action mirred egress redirect dev {}",
                cfg.ifb
            ),
        }
    }
}

/// The operations as a `tc -batch` text, one line each.
pub fn batch_text(cfg: &ShapeConfig, ops: &[Op]) -> String {
    let mut out = String::new();
    for op in ops {
        let _ = writeln!(out, "{}", op.tc(cfg));
    }
    out
}

fn tree(out: &mut Vec<Op>, cfg: &ShapeConfig, side: Side) {
    let dev = side.dev();
    let at = side.offset();
    let link = |parent, classid| Op::Class {
        dev,
        change: false,
        parent,
        classid,
        rate_kbps: cfg.link_kbps,
        ceil_kbps: cfg.link_kbps,
        subscriber: None,
    };
    let root = handle(1, 0);
    out.push(Op::Htb {
        dev,
        parent: None,
        handle: root,
        default: MINOR_DEFAULT,
    });
    out.push(link(root, handle(1, MINOR_LINK)));
    out.push(link(handle(1, MINOR_LINK), handle(1, MINOR_DEFAULT)));
    for k in 0..SHARDS {
        let (class, major) = (handle(1, SHARD_CLASS_BASE + k), shard_major(k));
        out.push(link(handle(1, MINOR_LINK), class));
        out.push(Op::Htb {
            dev,
            parent: Some(class),
            handle: handle(major, 0),
            default: 0,
        });
        out.push(link(handle(major, 0), handle(major, MINOR_LINK)));
        out.push(Op::HashTable {
            dev,
            parent: handle(major, 0),
            table: HT_L1,
        });
        out.push(Op::HashLink {
            dev,
            parent: handle(major, 0),
            handle: u32_handle(HT_ROOT, 0, 1),
            ht: u32_handle(HT_ROOT, 0, 0),
            mask: 0xff,
            at,
            link: HT_L1,
        });
    }
    out.push(Op::HashTable {
        dev,
        parent: root,
        table: HT_L1,
    });
    for o3 in 0..256u32 {
        out.push(Op::HashTable {
            dev,
            parent: root,
            table: HT_L2_BASE + o3,
        });
    }
    for o3 in 0..256u32 {
        out.push(Op::HashLink {
            dev,
            parent: root,
            handle: u32_handle(HT_L1, o3, 1),
            ht: u32_handle(HT_L1, o3, 0),
            mask: 0xff,
            at,
            link: HT_L2_BASE + o3,
        });
    }
    // Linked last: until here, every packet goes to the default class.
    out.push(Op::HashLink {
        dev,
        parent: root,
        handle: u32_handle(HT_ROOT, 0, 1),
        ht: u32_handle(HT_ROOT, 0, 0),
        mask: 0xff00,
        at,
        link: HT_L1,
    });
}

fn class_op(side: Side, change: bool, c: &Class) -> Op {
    let (rate_kbps, ceil_kbps) = side.rates(&c.rate);
    Op::Class {
        dev: side.dev(),
        change,
        parent: handle(c.shard_major(), MINOR_LINK),
        classid: handle(c.shard_major(), c.minor),
        rate_kbps,
        ceil_kbps,
        subscriber: Some(c.subscriber_id),
    }
}

fn class_del(side: Side, c: &Class) -> Op {
    Op::DelClass {
        dev: side.dev(),
        classid: handle(c.shard_major(), c.minor),
        subscriber: c.subscriber_id,
    }
}

/// (shard filter, root filter) of a subscriber: (parent, handle, ht).
fn filter_places(c: &Class) -> [(u32, u32, u32); 2] {
    let [_, _, o3, o4] = c.ip.octets();
    let (o3, o4) = (u32::from(o3), u32::from(o4));
    let shard_node = u32::from(c.minor / SHARDS + 1);
    let l2 = HT_L2_BASE + o3;
    [
        (
            handle(c.shard_major(), 0),
            u32_handle(HT_L1, o4, shard_node),
            u32_handle(HT_L1, o4, 0),
        ),
        (
            handle(1, 0),
            u32_handle(l2, o4, u32::from(c.node)),
            u32_handle(l2, o4, 0),
        ),
    ]
}

/// The shard's filter first, then the root's: a packet never reaches a shard that
/// cannot classify it.
fn filter_add(out: &mut Vec<Op>, side: Side, c: &Class) {
    let [shard, root] = filter_places(c);
    let flowids = [
        handle(c.shard_major(), c.minor),
        handle(1, SHARD_CLASS_BASE + c.shard()),
    ];
    for ((parent, handle, ht), flowid) in [shard, root].into_iter().zip(flowids) {
        out.push(Op::Match {
            dev: side.dev(),
            parent,
            handle,
            ht,
            at: side.offset(),
            ip: c.ip,
            flowid,
            subscriber: c.subscriber_id,
        });
    }
}

/// The root's filter first, then the shard's (the reverse of [`filter_add`]).
fn filter_del(out: &mut Vec<Op>, side: Side, c: &Class) {
    let [shard, root] = filter_places(c);
    for (parent, handle, _) in [root, shard] {
        out.push(Op::DelFilter {
            dev: side.dev(),
            parent,
            handle,
            subscriber: c.subscriber_id,
        });
    }
}

/// The operations that build everything from scratch: delete what `present` says is in
/// the places this module owns, build both trees with their hash tables, one class
/// and two filters per subscriber and direction, and last the ingress redirect to the
/// IFB (so upload is never redirected into a half-built tree).
pub fn ops_full(cfg: &ShapeConfig, present: Present, classes: &[Class]) -> Vec<Op> {
    let mut out = Vec::with_capacity(2 * (600 + 3 * classes.len()) + 5);
    if present.subscriber_ingress {
        out.push(Op::DelIngress);
    }
    if present.subscriber_root {
        out.push(Op::DelRoot(Dev::Subscriber));
    }
    if present.ifb_root {
        out.push(Op::DelRoot(Dev::Ifb));
    }
    for side in SIDES {
        tree(&mut out, cfg, side);
    }
    for c in classes {
        for side in SIDES {
            out.push(class_op(side, false, c));
            filter_add(&mut out, side, c);
        }
    }
    out.push(Op::Ingress);
    out.push(Op::Redirect);
    out
}

/// The operations that turn `before` into `after` touching only the subscribers that
/// differ: filters of leaving or moving subscribers are deleted first (a class with
/// filters cannot be deleted, and a moved address must be free before it is added
/// again), then leaving classes are deleted, new classes added, changed rates changed
/// in place (`class change`, only in the direction whose rate changed), and the new
/// filters added. Equal sets give nothing to do.
pub fn ops_diff(before: &BTreeMap<i64, Class>, after: &BTreeMap<i64, Class>) -> Vec<Op> {
    let mut out = Vec::new();
    // A class whose minor changed cannot be changed in place: it leaves and comes back.
    let kept = |id: &i64| -> Option<(&Class, &Class)> {
        let (b, a) = (before.get(id)?, after.get(id)?);
        (b.minor == a.minor).then_some((b, a))
    };
    let gone: Vec<&Class> = before
        .values()
        .filter(|b| kept(&b.subscriber_id).is_none())
        .collect();
    let new: Vec<&Class> = after
        .values()
        .filter(|a| kept(&a.subscriber_id).is_none())
        .collect();
    let pairs: Vec<(&Class, &Class)> = after.keys().filter_map(kept).collect();
    let moved = |(b, a): &(&Class, &Class)| b.ip != a.ip || b.node != a.node;

    for side in SIDES {
        for b in &gone {
            filter_del(&mut out, side, b);
        }
        for (b, _) in pairs.iter().filter(|p| moved(p)) {
            filter_del(&mut out, side, b);
        }
    }
    for side in SIDES {
        for b in &gone {
            out.push(class_del(side, b));
        }
    }
    for a in &new {
        for side in SIDES {
            out.push(class_op(side, false, a));
        }
    }
    for (b, a) in &pairs {
        for side in SIDES {
            if side.rates(&b.rate) != side.rates(&a.rate) {
                out.push(class_op(side, true, a));
            }
        }
    }
    for side in SIDES {
        for a in &new {
            filter_add(&mut out, side, a);
        }
        for (_, a) in pairs.iter().filter(|p| moved(p)) {
            filter_add(&mut out, side, a);
        }
    }
    out
}

/// [`ops_full`] as `tc -batch` text.
pub fn batch_full(cfg: &ShapeConfig, present: Present, classes: &[Class]) -> String {
    batch_text(cfg, &ops_full(cfg, present, classes))
}

/// [`ops_diff`] as `tc -batch` text.
pub fn batch_diff(
    cfg: &ShapeConfig,
    before: &BTreeMap<i64, Class>,
    after: &BTreeMap<i64, Class>,
) -> String {
    batch_text(cfg, &ops_diff(before, after))
}
