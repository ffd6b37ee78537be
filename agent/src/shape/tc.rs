//! `tc` itself: the batch text for a full build and for a change (pure functions,
//! tested as data), and the [`Shaper`] that runs `tc -batch` and keeps what it holds.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::tree::*;
use super::*;

/// HTB's per-class DRR quantum: a tenth of a second's bytes at the class rate, kept
/// between one full frame and the kernel's ceiling (what HTB itself would compute
/// from r2q, without its warnings for slow and fast classes).
pub(super) fn quantum(kbps: u64) -> u64 {
    (kbps.saturating_mul(1000) / 8 / 10).clamp(1514, 200_000)
}

pub(super) fn htb(rate: u64, ceil: u64) -> String {
    format!(
        "htb rate {rate}kbit ceil {ceil}kbit quantum {}",
        quantum(rate)
    )
}

/// Which way a device shapes.
#[derive(Clone, Copy)]
pub(super) enum Side {
    Download,
    Upload,
}

impl Side {
    fn dev(self, cfg: &ShapeConfig) -> &str {
        match self {
            Side::Download => &cfg.subscriber_interface,
            Side::Upload => &cfg.ifb,
        }
    }

    fn offset(self) -> u32 {
        match self {
            Side::Download => OFFSET_DST,
            Side::Upload => OFFSET_SRC,
        }
    }

    fn selector(self) -> &'static str {
        match self {
            Side::Download => "dst",
            Side::Upload => "src",
        }
    }

    /// (rate, ceil) for this direction.
    fn rates(self, r: &Rate) -> (u64, u64) {
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

pub(super) fn tree(out: &mut String, cfg: &ShapeConfig, side: Side) {
    let dev = side.dev(cfg);
    let link = htb(cfg.link_kbps, cfg.link_kbps);
    let off = side.offset();
    let _ = writeln!(
        out,
        "qdisc add dev {dev} root handle 1: htb default {MINOR_DEFAULT:x}"
    );
    let _ = writeln!(
        out,
        "class add dev {dev} parent 1: classid 1:{MINOR_LINK:x} {link}"
    );
    let _ = writeln!(
        out,
        "class add dev {dev} parent 1:{MINOR_LINK:x} classid 1:{MINOR_DEFAULT:x} {link}"
    );
    for k in 0..SHARDS {
        let (class, major) = (SHARD_CLASS_BASE + k, SHARD_MAJOR_BASE + k);
        let _ = writeln!(
            out,
            "class add dev {dev} parent 1:{MINOR_LINK:x} classid 1:{class:x} {link}"
        );
        let _ = writeln!(
            out,
            "qdisc add dev {dev} parent 1:{class:x} handle {major:x}: htb"
        );
        let _ = writeln!(
            out,
            "class add dev {dev} parent {major:x}: classid {major:x}:{MINOR_LINK:x} {link}"
        );
        let f = format!("filter add dev {dev} parent {major:x}: protocol ip prio {PRIO_V4}");
        let _ = writeln!(out, "{f} handle {HT_L1:x}: u32 divisor 256");
        let _ = writeln!(
            out,
            "{f} handle 800::1 u32 ht 800:: match u32 0 0 hashkey mask 0x000000ff at {off} link {HT_L1:x}:"
        );
    }
    let f = format!("filter add dev {dev} parent 1: protocol ip prio {PRIO_V4}");
    let _ = writeln!(out, "{f} handle {HT_L1:x}: u32 divisor 256");
    for o3 in 0..256u32 {
        let _ = writeln!(out, "{f} handle {:x}: u32 divisor 256", HT_L2_BASE + o3);
    }
    for o3 in 0..256u32 {
        let _ = writeln!(
            out,
            "{f} handle {HT_L1:x}:{o3:x}:1 u32 ht {HT_L1:x}:{o3:x}: match u32 0 0 \
             hashkey mask 0x000000ff at {off} link {:x}:",
            HT_L2_BASE + o3
        );
    }
    // Linked last: until here, every packet goes to the default class.
    let _ = writeln!(
        out,
        "{f} handle 800::1 u32 ht 800:: match u32 0 0 hashkey mask 0x0000ff00 at {off} link {HT_L1:x}:"
    );
}

pub(super) fn class_line(out: &mut String, cfg: &ShapeConfig, side: Side, verb: &str, c: &Class) {
    let (rate, ceil) = side.rates(&c.rate);
    let _ = writeln!(
        out,
        "class {verb} dev {} parent {:x}:{MINOR_LINK:x} classid {} {}",
        side.dev(cfg),
        c.shard_major(),
        c.classid(),
        htb(rate, ceil)
    );
}

pub(super) fn class_del(out: &mut String, cfg: &ShapeConfig, side: Side, c: &Class) {
    let _ = writeln!(
        out,
        "class del dev {} classid {}",
        side.dev(cfg),
        c.classid()
    );
}

/// The shard's filter first, then the root's: a packet never reaches a shard that
/// cannot classify it.
pub(super) fn filter_add(out: &mut String, cfg: &ShapeConfig, side: Side, c: &Class) {
    let [_, _, o3, o4] = c.ip.octets();
    let (dev, sel, ip) = (side.dev(cfg), side.selector(), c.ip);
    let _ = writeln!(
        out,
        "filter add dev {dev} parent {:x}: protocol ip prio {PRIO_V4} handle {} u32 \
         ht {HT_L1:x}:{o4:x}: match ip {sel} {ip}/32 flowid {}",
        c.shard_major(),
        c.shard_filter_handle(),
        c.classid()
    );
    let _ = writeln!(
        out,
        "filter add dev {dev} parent 1: protocol ip prio {PRIO_V4} handle {} u32 \
         ht {:x}:{o4:x}: match ip {sel} {ip}/32 flowid 1:{:x}",
        c.filter_handle(),
        HT_L2_BASE + u32::from(o3),
        SHARD_CLASS_BASE + c.shard()
    );
}

/// The root's filter first, then the shard's (the reverse of [`filter_add`]).
pub(super) fn filter_del(out: &mut String, cfg: &ShapeConfig, side: Side, c: &Class) {
    let dev = side.dev(cfg);
    let _ = writeln!(
        out,
        "filter del dev {dev} parent 1: protocol ip prio {PRIO_V4} handle {} u32",
        c.filter_handle()
    );
    let _ = writeln!(
        out,
        "filter del dev {dev} parent {:x}: protocol ip prio {PRIO_V4} handle {} u32",
        c.shard_major(),
        c.shard_filter_handle()
    );
}

/// The batch that builds everything from scratch: deletes what `present` says is in
/// the places this module owns, builds both trees with their hash tables, one class
/// and one filter per subscriber and direction, and last the ingress redirect to the
/// IFB (so upload is never redirected into a half-built tree).
pub fn batch_full(cfg: &ShapeConfig, present: Present, classes: &[Class]) -> String {
    let mut out = String::new();
    let (sub, ifb) = (&cfg.subscriber_interface, &cfg.ifb);
    if present.subscriber_ingress {
        let _ = writeln!(out, "qdisc del dev {sub} ingress");
    }
    if present.subscriber_root {
        let _ = writeln!(out, "qdisc del dev {sub} root");
    }
    if present.ifb_root {
        let _ = writeln!(out, "qdisc del dev {ifb} root");
    }
    for side in SIDES {
        tree(&mut out, cfg, side);
    }
    for c in classes {
        for side in SIDES {
            class_line(&mut out, cfg, side, "add", c);
            filter_add(&mut out, cfg, side, c);
        }
    }
    let _ = writeln!(out, "qdisc add dev {sub} handle ffff: ingress");
    let _ = writeln!(
        out,
        "filter add dev {sub} parent ffff: protocol all prio 1 u32 match u32 0 0 \
         action mirred egress redirect dev {ifb}"
    );
    out
}

/// The batch that turns `before` into `after` touching only the subscribers that
/// differ: filters of leaving or moving subscribers are deleted first (a class with
/// filters cannot be deleted, and a moved address must be free before it is added
/// again), then leaving classes are deleted, new classes added, changed rates changed
/// in place (`class change`, only in the direction whose rate changed), and the new
/// filters added. Equal sets give an empty batch.
pub fn batch_diff(
    cfg: &ShapeConfig,
    before: &BTreeMap<i64, Class>,
    after: &BTreeMap<i64, Class>,
) -> String {
    let mut out = String::new();
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
            filter_del(&mut out, cfg, side, b);
        }
        for (b, _) in pairs.iter().filter(|p| moved(p)) {
            filter_del(&mut out, cfg, side, b);
        }
    }
    for side in SIDES {
        for b in &gone {
            class_del(&mut out, cfg, side, b);
        }
    }
    for a in &new {
        for side in SIDES {
            class_line(&mut out, cfg, side, "add", a);
        }
    }
    for (b, a) in &pairs {
        for side in SIDES {
            if side.rates(&b.rate) != side.rates(&a.rate) {
                class_line(&mut out, cfg, side, "change", a);
            }
        }
    }
    for side in SIDES {
        for a in &new {
            filter_add(&mut out, cfg, side, a);
        }
        for (_, a) in pairs.iter().filter(|p| moved(p)) {
            filter_add(&mut out, cfg, side, a);
        }
    }
    out
}

/// Applies shaping and remembers what it applied, so incremental changes can be
/// computed as a diff. Synchronous: run it on a blocking thread.
#[derive(Debug)]
pub struct Shaper {
    cfg: ShapeConfig,
    /// What the kernel has (or, with `needs_full`, what it should have).
    classes: BTreeMap<i64, Class>,
    /// Set until a full apply succeeds, and again after a failed batch.
    needs_full: bool,
}

impl Shaper {
    /// A shaper that has applied nothing yet: the first change is a full apply.
    pub fn new(cfg: ShapeConfig) -> Shaper {
        Shaper {
            cfg,
            classes: BTreeMap::new(),
            needs_full: true,
        }
    }

    /// Where it shapes.
    pub fn config(&self) -> &ShapeConfig {
        &self.cfg
    }

    /// The class of a shaped subscriber.
    pub fn class_of(&self, subscriber_id: i64) -> Option<&Class> {
        self.classes.get(&subscriber_id)
    }

    /// Every shaped subscriber's class, by subscriber id.
    pub fn classes(&self) -> impl Iterator<Item = &Class> {
        self.classes.values()
    }

    /// Builds everything from scratch for exactly `subs` (ensures the IFB exists and
    /// is up, replaces the qdiscs this module owns).
    pub fn full(&mut self, subs: &[Shaped]) -> Result<()> {
        let classes = assign(subs)?;
        self.apply_full(classes)
    }

    /// Adds subscribers, or re-rates or re-addresses ones already shaped.
    pub fn upsert(&mut self, subs: &[Shaped]) -> Result<()> {
        if self.needs_full {
            let mut all: BTreeMap<i64, Shaped> = self
                .classes
                .values()
                .map(|c| (c.subscriber_id, shaped(c)))
                .collect();
            check_input(subs)?;
            all.extend(subs.iter().map(|s| (s.subscriber_id, *s)));
            return self.rebuild(all.into_values().collect());
        }
        let next = assign_upsert(&self.classes, subs)?;
        self.apply_diff(next)
    }

    /// Stops shaping these subscribers; ids not shaped are ignored.
    pub fn remove(&mut self, ids: &[i64]) -> Result<()> {
        let mut next = self.classes.clone();
        for id in ids {
            next.remove(id);
        }
        if self.needs_full {
            return self.rebuild(next.values().map(shaped).collect());
        }
        self.apply_diff(next)
    }

    /// Removes the qdiscs this module owns and the IFB; the next change is a full apply.
    pub fn clear(&mut self) -> Result<()> {
        let present = self.present()?;
        let sub = self.cfg.subscriber_interface.clone();
        if present.subscriber_ingress {
            self.run("tc", &["qdisc", "del", "dev", &sub, "ingress"])?;
        }
        if present.subscriber_root {
            self.run("tc", &["qdisc", "del", "dev", &sub, "root"])?;
        }
        if self.ifb_exists()? {
            let ifb = self.cfg.ifb.clone();
            self.run("ip", &["link", "del", "dev", &ifb])?;
        }
        self.classes.clear();
        self.needs_full = true;
        tracing::info!(interface = %sub, "shaping cleared");
        Ok(())
    }

    fn rebuild(&mut self, subs: Vec<Shaped>) -> Result<()> {
        tracing::warn!(
            interface = %self.cfg.subscriber_interface,
            "the shaping tree needs a rebuild (first apply, or a batch failed): applying all"
        );
        self.full(&subs)
    }

    fn apply_full(&mut self, classes: BTreeMap<i64, Class>) -> Result<()> {
        let started = Instant::now();
        self.ensure_ifb()?;
        let present = self.present()?;
        let list: Vec<Class> = classes.values().copied().collect();
        let batch = batch_full(&self.cfg, present, &list);
        // Whatever happens below, the kernel no longer holds the old set.
        self.classes = classes;
        self.needs_full = true;
        self.batch(&batch)?;
        self.needs_full = false;
        tracing::info!(
            interface = %self.cfg.subscriber_interface,
            subscribers = self.classes.len(),
            lines = batch.lines().count(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "shaping applied in full"
        );
        Ok(())
    }

    fn apply_diff(&mut self, next: BTreeMap<i64, Class>) -> Result<()> {
        let batch = batch_diff(&self.cfg, &self.classes, &next);
        self.classes = next;
        if batch.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.batch(&batch) {
            self.needs_full = true;
            return Err(e);
        }
        tracing::debug!(
            interface = %self.cfg.subscriber_interface,
            lines = batch.lines().count(),
            "shaping changed"
        );
        Ok(())
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        match &self.cfg.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]).args(args);
                c
            }
            None => {
                let mut c = Command::new(program);
                c.args(args);
                c
            }
        }
    }

    fn output(&self, program: &str, args: &[&str]) -> Result<std::process::Output> {
        self.command(program, args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::Spawn {
                program: program.to_string(),
                source,
            })
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = self.output(program, args)?;
        if !out.status.success() {
            return Err(Error::Command {
                command: format!("{program} {}", args.join(" ")),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn batch(&self, batch: &str) -> Result<()> {
        let mut child = self
            .command("tc", &["-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| Error::Spawn {
                program: "tc".into(),
                source,
            })?;
        let mut stdin = child.stdin.take().expect("stdin was piped");
        // tc stops reading at a failed line; a write error then is not the story, tc's
        // own report below is.
        let _ = stdin.write_all(batch.as_bytes());
        drop(stdin);
        let out = child.wait_with_output().map_err(|source| Error::Spawn {
            program: "tc".into(),
            source,
        })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            if !stderr.trim().is_empty() {
                tracing::debug!(stderr = %stderr.trim(), "tc batch warnings");
            }
            return Ok(());
        }
        Err(batch_error(batch, &stderr, &out.status.to_string()))
    }

    fn ifb_kind(&self) -> Result<Option<Option<String>>> {
        let out = self.output("ip", &["-d", "-j", "link", "show", "dev", &self.cfg.ifb])?;
        if !out.status.success() {
            return Ok(None);
        }
        let command = format!("ip -d -j link show dev {}", self.cfg.ifb);
        let links: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
            .map_err(|source| Error::Parse { command, source })?;
        let kind = links
            .first()
            .and_then(|l| l.pointer("/linkinfo/info_kind"))
            .and_then(|k| k.as_str())
            .map(str::to_string);
        Ok(Some(kind))
    }

    fn ifb_exists(&self) -> Result<bool> {
        match self.ifb_kind()? {
            None => Ok(false),
            Some(Some(k)) if k == "ifb" => Ok(true),
            Some(kind) => Err(Error::NotIfb {
                name: self.cfg.ifb.clone(),
                kind,
            }),
        }
    }

    fn ensure_ifb(&self) -> Result<()> {
        let ifb = self.cfg.ifb.as_str();
        if !self.ifb_exists()? {
            self.run("ip", &["link", "add", "name", ifb, "type", "ifb"])?;
        }
        // An IFB's default queue is 32 packets; HTB leaves take the device's queue
        // length as their pfifo limit, and 32 makes TCP upload collapse below the plan.
        self.run(
            "ip",
            &["link", "set", "dev", ifb, "txqueuelen", "1000", "up"],
        )?;
        Ok(())
    }

    fn qdiscs(&self, dev: &str) -> Result<Vec<serde_json::Value>> {
        let out = self.run("tc", &["-j", "qdisc", "show", "dev", dev])?;
        serde_json::from_str(&out).map_err(|source| Error::Parse {
            command: format!("tc -j qdisc show dev {dev}"),
            source,
        })
    }

    fn present(&self) -> Result<Present> {
        let root = |qs: &[serde_json::Value]| {
            qs.iter().any(|q| {
                q.get("root").and_then(|r| r.as_bool()) == Some(true)
                    && q.get("handle").and_then(|h| h.as_str()) != Some("0:")
            })
        };
        let sub = self.qdiscs(&self.cfg.subscriber_interface)?;
        let ifb = if self.ifb_exists()? {
            self.qdiscs(&self.cfg.ifb)?
        } else {
            Vec::new()
        };
        Ok(Present {
            subscriber_root: root(&sub),
            subscriber_ingress: sub
                .iter()
                .any(|q| q.get("handle").and_then(|h| h.as_str()) == Some("ffff:")),
            ifb_root: root(&ifb),
        })
    }
}

pub(super) fn shaped(c: &Class) -> Shaped {
    Shaped {
        subscriber_id: c.subscriber_id,
        ip: c.ip,
        rate: c.rate,
    }
}

/// Reads tc's "Command failed -:<line>" to name the line a batch stopped at.
pub(super) fn batch_error(batch: &str, stderr: &str, status: &str) -> Error {
    let failed = stderr.lines().find_map(|l| {
        l.trim()
            .strip_prefix("Command failed -:")
            .and_then(|n| n.trim().parse::<usize>().ok())
    });
    match failed {
        Some(line) => Error::Batch {
            line,
            text: batch
                .lines()
                .nth(line.saturating_sub(1))
                .unwrap_or_default()
                .to_string(),
            message: stderr
                .lines()
                .filter(|l| !l.trim().starts_with("Command failed"))
                .collect::<Vec<_>>()
                .join(" ")
                .trim()
                .to_string(),
        },
        None => Error::Command {
            command: "tc -batch -".into(),
            status: status.to_string(),
            stderr: stderr.trim().to_string(),
        },
    }
}
