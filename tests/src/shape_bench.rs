//! The shaping benchmark's machinery: a full apply of N subscribers by the agent's
//! [`Shaper`] (rtnetlink) and by `tc -batch` of the same plan, each in a fresh network
//! namespace on a veth, in the same run; and one re-rate each way. The method is
//! described in `benches/shape.rs`.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::Instant;

use anyhow::{Context, ensure};
use outpost_agent::shape::{Present, ShapeConfig, Shaped, Shaper, assign, batch_full};
use outpost_protocol::Rate;
use outpost_testkit::netns::Netns;

/// What to measure, from the environment.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Subscriber counts to apply (`SIZES`, "1000,5000,20000").
    pub sizes: Vec<usize>,
    /// Full applies per size and method (`RUNS`, 2).
    pub runs: usize,
    /// Re-rates timed per method, at the largest size (`CHANGES`, 20).
    pub changes: usize,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            sizes: vec![1000, 5000, 20_000],
            runs: 2,
            changes: 20,
        }
    }
}

impl BenchConfig {
    /// The defaults, overridden by the environment variables named on each field.
    pub fn from_env() -> anyhow::Result<Self> {
        use crate::system::env_or as var;
        let d = Self::default();
        let sizes = match std::env::var("SIZES") {
            Ok(v) if !v.is_empty() => v
                .split(',')
                .map(|s| s.trim().parse().with_context(|| format!("SIZES={v}")))
                .collect::<anyhow::Result<_>>()?,
            _ => d.sizes,
        };
        Ok(BenchConfig {
            sizes,
            runs: var("RUNS", d.runs)?.max(1),
            changes: var("CHANGES", d.changes)?.max(1),
        })
    }
}

/// One measured quantity: its samples, in seconds.
#[derive(Debug, Clone)]
pub struct Figure {
    /// What was measured, and how.
    pub what: String,
    /// The samples, in seconds.
    pub samples: Vec<f64>,
}

impl Figure {
    /// The median (upper of an even count).
    pub fn median(&self) -> f64 {
        let mut v = self.samples.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    }
}

/// Everything one run measured.
#[derive(Debug, Default)]
pub struct Results {
    /// All figures, in the order measured.
    pub figures: Vec<Figure>,
}

impl Results {
    /// The figure whose description starts with `prefix`.
    pub fn get(&self, prefix: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.what.starts_with(prefix))
    }

    /// Medians (and every sample) as a table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{:<58} {:>12}  samples", "what", "median");
        for f in &self.figures {
            let samples: Vec<String> = f.samples.iter().map(|s| format!("{s:.4}")).collect();
            let _ = writeln!(
                out,
                "{:<58} {:>10.4} s  {}",
                f.what,
                f.median(),
                samples.join(" ")
            );
        }
        out
    }
}

/// `n` subscribers as the lab test has them: ids spread past the 16-bit minor space,
/// addresses across 100.64.0.0/10, 50 different plans.
pub fn subscribers(n: usize) -> Vec<Shaped> {
    (0..n as u32)
        .map(|i| Shaped {
            subscriber_id: 1000 + i64::from(i) * 7,
            ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 10)) + i * 3),
            rate: Rate {
                download_kbps: 10_000 + u64::from(i % 50) * 1000,
                upload_kbps: 5000,
                burst_download_kbps: None,
                burst_upload_kbps: None,
            },
        })
        .collect()
}

/// A namespace with a veth `sub0` up (its peer down: nothing is sent while we measure).
fn lab(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    ns.run(&[
        "ip", "link", "add", "sub0", "type", "veth", "peer", "name", "sub1",
    ]);
    ns.run(&["ip", "link", "set", "sub0", "up"]);
    ns
}

fn cfg(ns: &Netns) -> ShapeConfig {
    ShapeConfig {
        subscriber_interface: "sub0".into(),
        ifb: "ifbsh0".into(),
        link_kbps: 10_000_000,
        netns: Some(ns.name.clone()),
    }
}

/// How many subscriber classes `tc` shows on the device (the tree's own: 2 + 2 per shard).
fn subscriber_classes(ns: &Netns, dev: &str) -> usize {
    let shown = ns.stdout(&["tc", "class", "show", "dev", dev]);
    shown.lines().filter(|l| l.starts_with("class htb")).count()
        - 2
        - 2 * usize::from(outpost_agent::shape::SHARDS)
}

/// Deletes the trees before the namespace goes, untimed. A namespace's devices are
/// torn down by a kernel worker after `ip netns del` returns, and every HTB class's
/// filter block stays in a list the kernel searches (globally) at each class add until
/// then: the next apply would pay for this one's leftovers.
fn teardown(ns: Netns) {
    for dev in ["sub0", "ifbsh0"] {
        ns.ok(&["tc", "qdisc", "del", "dev", dev, "root"]);
    }
    ns.ok(&["tc", "qdisc", "del", "dev", "sub0", "ingress"]);
    drop(ns);
}

/// CPU seconds from `/proc` (user + system; in the kernel, the tree is built in the
/// syscalls of whoever sends it): `fields` are the 1-based fields of a `stat` file.
fn cpu(path: &str, fields: [usize; 2]) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let words: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields
        .iter()
        .filter_map(|f| words.get(f - 3).and_then(|w| w.parse::<f64>().ok()))
        .sum();
    ticks / 100.0 // USER_HZ
}

/// This thread's CPU seconds plus those of every child the process has waited for.
fn cpu_now() -> f64 {
    cpu("/proc/thread-self/stat", [14, 15]) + cpu("/proc/self/stat", [16, 17])
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Runs every measurement of `cfg`.
pub fn run_all(cfg_: &BenchConfig) -> anyhow::Result<Results> {
    let mut r = Results::default();
    println!("load average at start: {}", load());
    let largest = cfg_.sizes.iter().copied().max().unwrap_or(0);
    for &n in &cfg_.sizes {
        let subs = subscribers(n);
        let (mut ours, mut over, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
        let (mut ours_cpu, mut theirs_cpu) = (Vec::new(), Vec::new());
        let (mut our_change, mut their_change) = (Vec::new(), Vec::new());
        for run in 0..cfg_.runs {
            // Ours: Shaper::full into a fresh namespace, then again over its own tree
            // (the agent's restart), then single re-rates.
            let ns = lab("shbn");
            let mut shaper = Shaper::new(cfg(&ns));
            let (t, c) = (Instant::now(), cpu_now());
            shaper.full(&subs).context("full apply through netlink")?;
            ours.push(secs(t));
            ours_cpu.push(cpu_now() - c);
            for dev in ["sub0", "ifbsh0"] {
                ensure!(subscriber_classes(&ns, dev) == n, "{dev}: classes missing");
            }
            let mut again = Shaper::new(cfg(&ns));
            let t = Instant::now();
            again.full(&subs).context("full apply over the tree")?;
            over.push(secs(t));
            if n == largest && run == 0 {
                for k in 0..cfg_.changes {
                    let mut one = subs[(k * 7919) % n];
                    one.rate.download_kbps += 1000 * (k as u64 + 1);
                    let t = Instant::now();
                    again.upsert(&[one]).context("re-rate")?;
                    our_change.push(secs(t));
                    let c = again.class_of(one.subscriber_id).expect("shaped");
                    let shown = ns.stdout(&[
                        "tc",
                        "class",
                        "show",
                        "dev",
                        "sub0",
                        "classid",
                        &c.classid(),
                    ]);
                    let want = format!("rate {}", tc_rate(one.rate.download_kbps));
                    ensure!(shown.contains(&want), "re-rate not applied: {shown}");
                }
            }
            teardown(ns);

            // tc -batch of the same plan (the batch the agent ran before), same place.
            let ns = lab("shbt");
            ns.run(&["ip", "link", "add", "ifbsh0", "type", "ifb"]);
            ns.run(&["ip", "link", "set", "ifbsh0", "txqueuelen", "1000", "up"]);
            let classes: Vec<_> = assign(&subs)?.into_values().collect();
            let batch = batch_full(&cfg(&ns), Present::default(), &classes);
            let path = std::env::temp_dir().join(format!("shape-bench-{}.tc", ns.name));
            std::fs::write(&path, &batch)?;
            // tc runs from a thread inside the namespace: no `ip netns exec` is timed.
            let path_s = path.to_str().expect("utf-8 path").to_string();
            let (took, out) = ns.within(move || {
                let (t, c) = (Instant::now(), cpu_now());
                let out = tc(&["-batch", &path_s]);
                ((secs(t), cpu_now() - c), out)
            });
            theirs.push(took.0);
            theirs_cpu.push(took.1);
            let _ = std::fs::remove_file(&path);
            let out = out?;
            ensure!(
                out.status.success(),
                "tc -batch: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            for dev in ["sub0", "ifbsh0"] {
                ensure!(subscriber_classes(&ns, dev) == n, "{dev}: classes missing");
            }
            if n == largest && run == 0 {
                let changes: Vec<Vec<String>> = (0..cfg_.changes)
                    .map(|k| {
                        let c = &classes[(k * 7919) % n];
                        let rate = format!("{}kbit", c.rate.download_kbps + 1000 * (k as u64 + 1));
                        let parent = format!("{:x}:1", c.shard_major());
                        [
                            "class",
                            "change",
                            "dev",
                            "sub0",
                            "parent",
                            &parent,
                            "classid",
                            &c.classid(),
                            "htb",
                            "rate",
                            &rate,
                            "ceil",
                            &rate,
                        ]
                        .map(str::to_string)
                        .to_vec()
                    })
                    .collect();
                their_change = ns.within(move || {
                    let mut took = Vec::new();
                    for args in &changes {
                        let args: Vec<&str> = args.iter().map(String::as_str).collect();
                        let t = Instant::now();
                        let out = tc(&args)?;
                        took.push(secs(t));
                        ensure!(out.status.success(), "tc class change: {out:?}");
                    }
                    Ok(took)
                })?;
            }
            teardown(ns);
        }
        r.figures.push(Figure {
            what: format!("ours: Shaper::full of {n}, fresh namespace"),
            samples: ours,
        });
        r.figures.push(Figure {
            what: format!("ours: Shaper::full of {n} over its own tree"),
            samples: over,
        });
        r.figures.push(Figure {
            what: format!("tc -batch of the same plan, {n}, fresh namespace"),
            samples: theirs,
        });
        r.figures.push(Figure {
            what: format!("CPU: ours, Shaper::full of {n} (thread + children)"),
            samples: ours_cpu,
        });
        r.figures.push(Figure {
            what: format!("CPU: tc -batch of {n} (the tc process)"),
            samples: theirs_cpu,
        });
        if !our_change.is_empty() {
            r.figures.push(Figure {
                what: format!("ours: upsert (re-rate 1) among {n}"),
                samples: our_change,
            });
            r.figures.push(Figure {
                what: format!("tc class change (one process) among {n}"),
                samples: their_change,
            });
        }
    }
    println!("load average at end: {}", load());
    Ok(r)
}

fn tc(args: &[&str]) -> anyhow::Result<std::process::Output> {
    std::process::Command::new("tc")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .context("running tc")
}

/// `tc`'s way of writing a rate given in kbit/s.
fn tc_rate(kbps: u64) -> String {
    if kbps.is_multiple_of(1000) {
        format!("{}Mbit", kbps / 1000)
    } else {
        format!("{kbps}Kbit")
    }
}
