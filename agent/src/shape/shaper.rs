//! The [`Shaper`]: applies the plans of `tc.rs` through rtnetlink (`netlink.rs`) and
//! keeps what it holds, so a change is a diff.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::netlink::{Conn, Ifindex};
use super::tc::{Op, ops_diff, ops_full};
use super::tree::*;
use super::*;

/// Applies shaping and remembers what it applied, so incremental changes can be
/// computed as a diff. Synchronous: run it on a blocking thread.
#[derive(Debug)]
pub struct Shaper {
    cfg: ShapeConfig,
    /// What the kernel has (or, with `needs_full`, what it should have).
    classes: BTreeMap<i64, Class>,
    /// Set until a full apply succeeds, and again after a failed change.
    needs_full: bool,
    /// Opened at the first change, in the configured namespace.
    conn: Option<Conn>,
}

impl Shaper {
    /// A shaper that has applied nothing yet: the first change is a full apply.
    pub fn new(cfg: ShapeConfig) -> Shaper {
        Shaper {
            cfg,
            classes: BTreeMap::new(),
            needs_full: true,
            conn: None,
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
        if subs.iter().all(|s| {
            self.classes
                .get(&s.subscriber_id)
                .is_some_and(|c| c.ip == s.ip)
        }) {
            return self.rerate(subs);
        }
        let next = assign_upsert(&self.classes, subs)?;
        // Only the subscribers named can differ: the diff looks at them alone, so a
        // re-rate among 20 000 does not walk the other 19 999.
        let touched = |m: &BTreeMap<i64, Class>| -> BTreeMap<i64, Class> {
            subs.iter()
                .filter_map(|s| m.get(&s.subscriber_id).map(|c| (c.subscriber_id, *c)))
                .collect()
        };
        let ops = ops_diff(&touched(&self.classes), &touched(&next));
        self.apply_ops(next, ops)
    }

    /// New rates for subscribers already shaped at the same address: their ids and
    /// filters stay, so nothing but their classes is looked at (no copy of the whole
    /// set, no id assignment: a re-rate among 20 000 costs what it costs among 2).
    fn rerate(&mut self, subs: &[Shaped]) -> Result<()> {
        check_input(subs)?;
        let before: BTreeMap<i64, Class> = subs
            .iter()
            .map(|s| (s.subscriber_id, self.classes[&s.subscriber_id]))
            .collect();
        let after: BTreeMap<i64, Class> = subs
            .iter()
            .map(|s| {
                (
                    s.subscriber_id,
                    Class {
                        rate: s.rate,
                        ..before[&s.subscriber_id]
                    },
                )
            })
            .collect();
        let ops = ops_diff(&before, &after);
        // What we are asked for is what we hold, whatever the kernel says.
        for (id, c) in &after {
            self.classes.insert(*id, *c);
        }
        if ops.is_empty() {
            return Ok(());
        }
        let idx = (|| {
            Ok(Ifindex {
                subscriber: self.ifindex(&self.cfg.subscriber_interface.clone())?,
                ifb: self.ifindex(&self.cfg.ifb.clone())?,
            })
        })();
        if let Err(e) = idx.and_then(|idx| self.send(idx, &ops)) {
            self.needs_full = true;
            return Err(e);
        }
        tracing::debug!(
            interface = %self.cfg.subscriber_interface,
            messages = ops.len(),
            "shaping re-rated"
        );
        Ok(())
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
        let sub = self.cfg.subscriber_interface.clone();
        if let Some(subscriber) = self.conn()?.ifindex(&sub)? {
            let seen = self.conn()?.qdiscs(subscriber)?;
            let mut ops = Vec::new();
            if seen.iter().any(|q| q.is_ingress()) {
                ops.push(Op::DelIngress);
            }
            if seen.iter().any(|q| q.is_configured_root()) {
                ops.push(Op::DelRoot(Dev::Subscriber));
            }
            let idx = Ifindex { subscriber, ifb: 0 };
            let cfg = self.cfg.clone();
            self.conn()?.apply(&cfg, idx, &ops)?;
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
            "the shaping tree needs a rebuild (first apply, or a change failed): applying all"
        );
        self.full(&subs)
    }

    fn conn(&mut self) -> Result<&mut Conn> {
        if self.conn.is_none() {
            self.conn = Some(Conn::open(self.cfg.netns.as_deref())?);
        }
        Ok(self.conn.as_mut().expect("just opened"))
    }

    fn ifindex(&mut self, name: &str) -> Result<u32> {
        self.conn()?.ifindex(name)?.ok_or_else(|| Error::NoDevice {
            name: name.to_string(),
        })
    }

    /// Sends `ops`; a broken socket is reopened at the next change.
    fn send(&mut self, idx: Ifindex, ops: &[Op]) -> Result<()> {
        let cfg = self.cfg.clone();
        let r = self.conn()?.apply(&cfg, idx, ops);
        if matches!(r, Err(Error::Netlink { .. } | Error::MissingReplies { .. })) {
            self.conn = None;
        }
        r
    }

    fn apply_full(&mut self, classes: BTreeMap<i64, Class>) -> Result<()> {
        let started = Instant::now();
        // A missing subscriber interface is found before anything is created.
        let subscriber = self.ifindex(&self.cfg.subscriber_interface.clone())?;
        self.ensure_ifb()?;
        let ifb = self.ifindex(&self.cfg.ifb.clone())?;
        let idx = Ifindex { subscriber, ifb };
        let present = self.present(idx)?;
        let list: Vec<Class> = classes.values().copied().collect();
        let ops = ops_full(&self.cfg, present, &list);
        // Whatever happens below, the kernel no longer holds the old set.
        self.classes = classes;
        self.needs_full = true;
        self.send(idx, &ops)?;
        self.needs_full = false;
        tracing::info!(
            interface = %self.cfg.subscriber_interface,
            subscribers = self.classes.len(),
            messages = ops.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "shaping applied in full"
        );
        Ok(())
    }

    fn apply_diff(&mut self, next: BTreeMap<i64, Class>) -> Result<()> {
        let ops = ops_diff(&self.classes, &next);
        self.apply_ops(next, ops)
    }

    /// Sends `ops` (the diff from what we hold to `next`) and holds `next`.
    fn apply_ops(&mut self, next: BTreeMap<i64, Class>, ops: Vec<Op>) -> Result<()> {
        if ops.is_empty() {
            self.classes = next;
            return Ok(());
        }
        let idx = (|| {
            Ok(Ifindex {
                subscriber: self.ifindex(&self.cfg.subscriber_interface.clone())?,
                ifb: self.ifindex(&self.cfg.ifb.clone())?,
            })
        })();
        self.classes = next;
        if let Err(e) = idx.and_then(|idx| self.send(idx, &ops)) {
            // Without its device (or after a refusal) the tree is not what we hold:
            // the next change builds it again from what we were asked for.
            self.needs_full = true;
            return Err(e);
        }
        tracing::debug!(
            interface = %self.cfg.subscriber_interface,
            messages = ops.len(),
            "shaping changed"
        );
        Ok(())
    }

    fn present(&mut self, idx: Ifindex) -> Result<Present> {
        let sub = self.conn()?.qdiscs(idx.subscriber)?;
        let ifb = self.conn()?.qdiscs(idx.ifb)?;
        Ok(Present {
            subscriber_root: sub.iter().any(|q| q.is_configured_root()),
            subscriber_ingress: sub.iter().any(|q| q.is_ingress()),
            ifb_root: ifb.iter().any(|q| q.is_configured_root()),
        })
    }

    // The IFB device itself is managed with `ip`: once per full apply, a few
    // milliseconds against the seconds of the tree, and `ip` already knows the link
    // attributes (kind, queue length, up) this needs.

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
}

pub(super) fn shaped(c: &Class) -> Shaped {
    Shaped {
        subscriber_id: c.subscriber_id,
        ip: c.ip,
        rate: c.rate,
    }
}
