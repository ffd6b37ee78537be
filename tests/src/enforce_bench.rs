//! The enforcement benchmark's machinery: a throwaway lab of namespaces
//! (`sub` ─ `bng` ─ `up`), the agent's [`Enforcer`] in `bng`, and the peers (`nft -f`,
//! `nft -j -f`, the `nft` CLI per element, `iptables-restore`, `iptables` per rule) on the
//! same kernel in the same run. The method is described in `benches/enforce.rs`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use outpost_agent::enforce::{EnforceConfig, Enforcer};
use outpost_testkit::netns::{Netns, veth};

/// What to measure, from the environment.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Blocked subscribers in the full load and behind every per-change figure (`N`, 100,000).
    pub n: usize,
    /// Per-IP rules for iptables (`IPT_N`, same as `N`).
    pub ipt_n: usize,
    /// Runs of each full load and of each first-drop measurement (`RUNS`, 5).
    pub runs: usize,
    /// Single changes timed per method (`CHANGES`, 30).
    pub changes: usize,
    /// Set/chain sizes for the forwarding cost (`FWD_SIZES`, "0,10000,100000").
    pub fwd_sizes: Vec<usize>,
    /// Seconds per forwarding measurement (`FWD_SECS`, 1).
    pub fwd_secs: f64,
    /// Runs per forwarding point (`FWD_RUNS`, 3).
    pub fwd_runs: usize,
    /// Microseconds between the probe stream's datagrams (`PACE_US`, 20).
    pub pace_us: u64,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            n: 100_000,
            ipt_n: 100_000,
            runs: 5,
            changes: 30,
            fwd_sizes: vec![0, 10_000, 100_000],
            fwd_secs: 1.0,
            fwd_runs: 3,
            pace_us: 20,
        }
    }
}

impl BenchConfig {
    /// The defaults, overridden by the environment variables named on each field.
    pub fn from_env() -> anyhow::Result<Self> {
        use crate::system::env_or as var;
        let d = Self::default();
        let n = var("N", d.n)?;
        let fwd_sizes = match std::env::var("FWD_SIZES") {
            Ok(v) if !v.is_empty() => v
                .split(',')
                .map(|s| s.trim().parse().with_context(|| format!("FWD_SIZES={v}")))
                .collect::<anyhow::Result<_>>()?,
            _ => d.fwd_sizes,
        };
        Ok(BenchConfig {
            n,
            ipt_n: var("IPT_N", n)?,
            runs: var("RUNS", d.runs)?.max(1),
            changes: var("CHANGES", d.changes)?.max(1),
            fwd_sizes,
            fwd_secs: var("FWD_SECS", d.fwd_secs)?,
            fwd_runs: var("FWD_RUNS", d.fwd_runs)?.max(1),
            pace_us: var("PACE_US", d.pace_us)?,
        })
    }
}

/// One measured quantity: its samples.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Which section of the report.
    pub section: &'static str,
    /// What was measured, and how.
    pub what: String,
    /// Unit of the samples.
    pub unit: &'static str,
    /// The samples.
    pub samples: Vec<f64>,
}

impl Figure {
    /// The median (upper of an even count).
    pub fn median(&self) -> f64 {
        let mut v = self.samples.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    }
    fn min(&self) -> f64 {
        self.samples.iter().copied().fold(f64::INFINITY, f64::min)
    }
    fn max(&self) -> f64 {
        self.samples
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
    }
}

/// Everything one run of the benchmark measured.
#[derive(Debug, Default)]
pub struct Results {
    /// All figures, in the order measured.
    pub figures: Vec<Figure>,
}

impl Results {
    fn push(
        &mut self,
        section: &'static str,
        what: impl Into<String>,
        unit: &'static str,
        samples: Vec<f64>,
    ) {
        self.figures.push(Figure {
            section,
            what: what.into(),
            unit,
            samples,
        });
    }
    /// The figure whose description starts with `prefix`.
    pub fn get(&self, prefix: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.what.starts_with(prefix))
    }
    /// Medians as a table, with min/max and sample counts.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut section = "";
        for f in &self.figures {
            if f.section != section {
                section = f.section;
                let _ = writeln!(out, "\n## {section}");
                let _ = writeln!(
                    out,
                    "{:<66} {:>12} {:>12} {:>12} {:>4}",
                    "what", "median", "min", "max", "n"
                );
            }
            let _ = writeln!(
                out,
                "{:<66} {:>9.3} {:<2} {:>12.3} {:>12.3} {:>4}",
                f.what,
                f.median(),
                f.unit,
                f.min(),
                f.max(),
                f.samples.len()
            );
        }
        out
    }
}

/// The lab: three namespaces, removed with every process inside on drop.
struct Lab {
    sub: Netns,
    bng: Netns,
    up: Netns,
}

impl Lab {
    fn new() -> anyhow::Result<Lab> {
        let lab = Lab {
            sub: Netns::try_new("enfb-sub")?,
            bng: Netns::try_new("enfb-bng")?,
            up: Netns::try_new("enfb-up")?,
        };
        veth(
            &lab.sub,
            "eth0",
            Some("10.1.1.2/24"),
            &lab.bng,
            "sub",
            Some("10.1.1.1/24"),
        );
        veth(
            &lab.up,
            "eth0",
            Some("198.51.100.2/24"),
            &lab.bng,
            "upstream",
            Some("198.51.100.1/24"),
        );
        lab.sub
            .try_run(&["ip", "route", "add", "default", "via", "10.1.1.1"])?;
        lab.up
            .try_run(&["ip", "route", "add", "10.1.0.0/16", "via", "198.51.100.1"])?;
        lab.bng
            .try_run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        // Neighbours resolved before anything is timed.
        lab.sub
            .try_run(&["ping", "-c1", "-W2", "-q", "198.51.100.2"])?;
        Ok(lab)
    }

    /// The probe's two ends: a sink upstream (reads time out after 20 ms, so its
    /// reader can notice a stop) and a source at the subscriber, connected to it.
    fn probe(&self) -> anyhow::Result<(UdpSocket, UdpSocket)> {
        let sink = self.up.within(|| UdpSocket::bind(SINK))?;
        sink.set_read_timeout(Some(Duration::from_millis(20)))?;
        let source = self.sub.within(|| -> std::io::Result<UdpSocket> {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.connect(SINK)?;
            Ok(s)
        })?;
        Ok((sink, source))
    }
}

/// The subscriber whose traffic the probes carry.
const SUBSCRIBER: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 2);
const SINK: &str = "198.51.100.2:9000";

/// `n` addresses from 100.64.0.0/10, none of them the probe subscriber's.
pub fn blocked(n: usize) -> BTreeSet<IpAddr> {
    (0..n as u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x6440_0000 + i)))
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Spawns `program args` in the current thread's namespace, feeding `stdin`; its wall time.
fn timed(program: &str, args: &[&str], stdin: Option<&[u8]>) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| program.to_string())?;
    if let Some(input) = stdin {
        child.stdin.take().expect("piped").write_all(input)?;
    }
    let out = child.wait_with_output()?;
    let took = start.elapsed();
    ensure!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(took)
}

fn nft_text(addrs: &BTreeSet<IpAddr>) -> Vec<u8> {
    let mut s = String::from(
        "table inet bench_text {\n set s {\n  type ipv4_addr; size 1048576;\n  elements = { ",
    );
    for (i, a) in addrs.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{a}");
    }
    s.push_str(" }\n }\n}\n");
    s.into_bytes()
}

fn nft_json(addrs: &BTreeSet<IpAddr>) -> Vec<u8> {
    let elem: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    serde_json::json!({"nftables": [
        {"metainfo": {"json_schema_version": 1}},
        {"add": {"table": {"family": "inet", "name": "bench_json"}}},
        {"add": {"set": {"family": "inet", "table": "bench_json", "name": "s", "type": "ipv4_addr", "size": 1048576}}},
        {"add": {"element": {"family": "inet", "table": "bench_json", "name": "s", "elem": elem}}},
    ]})
    .to_string()
    .into_bytes()
}

fn iptables_rules(addrs: &BTreeSet<IpAddr>) -> Vec<u8> {
    let mut s = String::from("*filter\n:FORWARD ACCEPT [0:0]\n");
    for a in addrs {
        let _ = writeln!(s, "-A FORWARD -s {a}/32 -j DROP");
    }
    s.push_str("COMMIT\n");
    s.into_bytes()
}

fn iptables_flush() -> anyhow::Result<()> {
    timed("iptables", &["-w", "-F", "FORWARD"], None).map(drop)
}

fn config() -> EnforceConfig {
    EnforceConfig::default()
}

/// Runs every measurement; call as root. Builds and removes its own namespaces.
pub fn run_all(cfg: &BenchConfig) -> anyhow::Result<Results> {
    let lab = Arc::new(Lab::new()?);
    let cfg = cfg.clone();
    let l = lab.clone();
    let out = lab.bng.within(move || measure(&cfg, &l));
    drop(lab);
    out
}

fn measure(cfg: &BenchConfig, lab: &Lab) -> anyhow::Result<Results> {
    let mut r = Results::default();
    let addrs = blocked(cfg.n);
    let ipt_addrs = blocked(cfg.ipt_n);
    let n = cfg.n;

    // --- full load
    let (text, json, ipt) = (
        nft_text(&addrs),
        nft_json(&addrs),
        iptables_rules(&ipt_addrs),
    );
    let (mut fresh, mut again, mut again_kernel, mut t_text, mut t_json, mut t_ipt) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..cfg.runs {
        Enforcer::clear(&config().table)?;
        let mut e = Enforcer::new(config())?;
        let rep = e.full(&addrs)?;
        ensure!(
            rep.skeleton_written && rep.blocked == n,
            "fresh load: {rep:?}"
        );
        fresh.push(ms(rep.total));
        let rep = e.full(&addrs)?;
        ensure!(!rep.skeleton_written, "second full rewrote the skeleton");
        again.push(ms(rep.total));
        again_kernel.push(ms(rep.to_kernel));
        t_text.push(ms(timed("nft", &["-f", "-"], Some(&text))?));
        timed("nft", &["delete", "table", "inet", "bench_text"], None)?;
        t_json.push(ms(timed("nft", &["-j", "-f", "-"], Some(&json))?));
        timed("nft", &["delete", "table", "inet", "bench_json"], None)?;
        iptables_flush().ok();
        t_ipt.push(ms(timed("iptables-restore", &["-w"], Some(&ipt))?));
        iptables_flush()?;
    }
    let s = "full load";
    r.push(
        s,
        format!("ours: full() of {n} into a fresh table (skeleton+elements+verify)"),
        "ms",
        fresh,
    );
    r.push(
        s,
        format!("ours: full() of {n} over the existing table (incl. verify)"),
        "ms",
        again,
    );
    r.push(
        s,
        "ours: ... of which call -> kernel ACK of the element batch",
        "ms",
        again_kernel,
    );
    r.push(
        s,
        format!("nft -f (text), table + set of {n}"),
        "ms",
        t_text,
    );
    r.push(
        s,
        format!("nft -j -f (JSON), table + set of {n}"),
        "ms",
        t_json,
    );
    r.push(
        s,
        format!("iptables-restore, {} per-IP DROP rules", cfg.ipt_n),
        "ms",
        t_ipt,
    );

    // --- one change, with the big set/chain in place
    let mut e = Enforcer::new(config())?;
    e.full(&addrs)?;
    let extra = |i: usize| {
        IpAddr::V4(Ipv4Addr::new(
            100,
            127,
            (i / 250) as u8,
            (i % 250 + 1) as u8,
        ))
    };
    let (mut add_k, mut add_t, mut del_t, mut cli_add, mut cli_del) =
        (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..cfg.changes {
        let a = extra(i);
        let rep = e.change(&[a], &[])?;
        add_k.push(ms(rep.to_kernel));
        add_t.push(ms(rep.total));
        del_t.push(ms(e.change(&[], &[a])?.total));
        let b = extra(i + cfg.changes).to_string();
        let elem = format!("{{ {b} }}");
        cli_add.push(ms(timed(
            "nft",
            &["add", "element", "inet", "outpost", "blocked4", &elem],
            None,
        )?));
        cli_del.push(ms(timed(
            "nft",
            &["delete", "element", "inet", "outpost", "blocked4", &elem],
            None,
        )?));
    }
    // iptables per rule needs its chain full, and ours out of the way.
    Enforcer::clear(&config().table)?;
    timed("iptables-restore", &["-w"], Some(&ipt))?;
    let mut ipt_add = vec![];
    for i in 0..cfg.changes.min(10) {
        let b = format!("{}/32", extra(i));
        ipt_add.push(ms(timed(
            "iptables",
            &["-w", "-A", "FORWARD", "-s", &b, "-j", "DROP"],
            None,
        )?));
    }
    let s = "one change";
    r.push(
        s,
        format!("ours: change(add 1), call -> kernel ACK, set of {n}"),
        "ms",
        add_k,
    );
    r.push(s, "ours: change(add 1) incl. verify by lookup", "ms", add_t);
    r.push(
        s,
        "ours: change(remove 1) incl. verify by lookup",
        "ms",
        del_t,
    );
    r.push(
        s,
        "nft add element (one process, in-namespace)",
        "ms",
        cli_add,
    );
    r.push(
        s,
        "nft delete element (one process, in-namespace)",
        "ms",
        cli_del,
    );
    r.push(
        s,
        format!("iptables -A (one process, {} rules in FORWARD)", cfg.ipt_n),
        "ms",
        ipt_add,
    );
    iptables_flush()?;

    // --- change call to first dropped packet
    let mut e = Enforcer::new(config())?;
    e.full(&addrs)?;
    let sub = IpAddr::V4(SUBSCRIBER);
    let (mut ours, mut ours_gap, mut cli, mut iptd) = (vec![], vec![], vec![], vec![]);
    let sub_elem = format!("{{ {SUBSCRIBER} }}");
    for _ in 0..cfg.runs {
        let (lat, gap) = first_drop(lab, cfg.pace_us, &mut || {
            e.change(&[sub], &[]).map(drop).map_err(Into::into)
        })?;
        e.change(&[], &[sub])?;
        ours.push(lat);
        ours_gap.push(gap);
        let (lat, _) = first_drop(lab, cfg.pace_us, &mut || {
            timed(
                "nft",
                &["add", "element", "inet", "outpost", "blocked4", &sub_elem],
                None,
            )
            .map(drop)
        })?;
        timed(
            "nft",
            &[
                "delete", "element", "inet", "outpost", "blocked4", &sub_elem,
            ],
            None,
        )?;
        cli.push(lat);
    }
    Enforcer::clear(&config().table)?;
    timed("iptables-restore", &["-w"], Some(&ipt))?;
    for _ in 0..cfg.runs {
        let (lat, _) = first_drop(lab, cfg.pace_us, &mut || {
            timed(
                "iptables",
                &["-w", "-I", "FORWARD", "-s", "10.1.1.2/32", "-j", "DROP"],
                None,
            )
            .map(drop)
        })?;
        timed(
            "iptables",
            &["-w", "-D", "FORWARD", "-s", "10.1.1.2/32", "-j", "DROP"],
            None,
        )?;
        iptd.push(lat);
    }
    iptables_flush()?;
    let s = "change call -> first dropped packet";
    r.push(s, format!("ours: change(add), set of {n}"), "ms", ours);
    r.push(
        s,
        "probe stream: mean interval between datagrams (resolution)",
        "ms",
        ours_gap,
    );
    r.push(s, format!("nft add element process, set of {n}"), "ms", cli);
    r.push(
        s,
        format!("iptables -I process, {} rules", cfg.ipt_n),
        "ms",
        iptd,
    );

    // --- forwarding cost by size
    for &size in &cfg.fwd_sizes {
        let set = blocked(size);
        let mut e = Enforcer::new(config())?;
        e.full(&set)?;
        let mut ours = vec![];
        for _ in 0..cfg.fwd_runs {
            ours.push(forward_rate(lab, cfg.fwd_secs)?);
        }
        Enforcer::clear(&config().table)?;
        timed("iptables-restore", &["-w"], Some(&iptables_rules(&set)))?;
        let mut ipt = vec![];
        for _ in 0..cfg.fwd_runs {
            ipt.push(forward_rate(lab, cfg.fwd_secs)?);
        }
        iptables_flush()?;
        let s = "forwarding (64-byte UDP, sub -> bng -> up), delivered packets/s";
        r.push(s, format!("ours: set of {size}"), "pps", ours);
        r.push(s, format!("iptables: chain of {size} rules"), "pps", ipt);
    }
    Enforcer::clear(&config().table)?;
    Ok(r)
}

fn nanos(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

/// Streams datagrams from the subscriber to the sink, calls `block`, and returns how long
/// after the call started the first dropped datagram was sent (ms; the first sent after
/// the last that arrived), and the stream's mean interval (ms). Fails when the stream
/// never stops.
fn first_drop(
    lab: &Lab,
    pace_us: u64,
    block: &mut dyn FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(f64, f64)> {
    let base = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let (last_seen, received) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (sink, source) = lab.probe()?;
    let rx = {
        let (stop, last_seen, received) = (stop.clone(), last_seen.clone(), received.clone());
        thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::SeqCst) {
                if let Ok(8) = sink.recv(&mut buf) {
                    let ts = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
                    last_seen.fetch_max(ts, Ordering::SeqCst);
                    received.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    let tx = {
        let stop = stop.clone();
        thread::spawn(move || {
            let pace = pace_us * 1000;
            let mut next = nanos(base);
            let mut sent = Vec::with_capacity(1 << 16);
            while !stop.load(Ordering::SeqCst) {
                let now = nanos(base);
                if now < next {
                    std::hint::spin_loop();
                    continue;
                }
                next = now + pace;
                if source.send(&now.to_le_bytes()).is_ok() {
                    sent.push(now);
                }
            }
            sent
        })
    };
    let warm = Instant::now();
    while received.load(Ordering::SeqCst) < 200 {
        if warm.elapsed() > Duration::from_secs(3) {
            stop.store(true, Ordering::SeqCst);
            bail!("the probe stream does not get through before blocking");
        }
        thread::sleep(Duration::from_millis(1));
    }
    let t0 = nanos(base);
    let result = block();
    let t1 = nanos(base);
    thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::SeqCst);
    let sent = tx.join().map_err(|_| anyhow::anyhow!("sender panicked"))?;
    rx.join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))?;
    result?;
    let last = last_seen.load(Ordering::SeqCst);
    ensure!(
        last < t1 + 50_000_000,
        "datagrams still arrive 50 ms after the block returned"
    );
    // The first datagram sent after the last one that arrived is the first dropped one.
    // Measured by what was sent rather than by what arrived, so a sender that was not
    // scheduled while the blocking process ran cannot make the block look early.
    let first_dropped = sent
        .iter()
        .copied()
        .find(|&ts| ts > last)
        .context("no datagram was sent after the last one that arrived")?;
    let span = sent.last().copied().unwrap_or(0) - sent.first().copied().unwrap_or(0);
    let interval = span as f64 / sent.len().max(2) as f64;
    Ok((
        first_dropped.saturating_sub(t0) as f64 / 1e6,
        interval / 1e6,
    ))
}

/// Blasts 64-byte UDP datagrams from the subscriber through the BNG for `secs`; the
/// delivered rate.
fn forward_rate(lab: &Lab, secs: f64) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let (sink, source) = lab.probe()?;
    let rx = {
        let (stop, received) = (stop.clone(), received.clone());
        thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::SeqCst) {
                if sink.recv(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let payload = [0u8; 36]; // + 8 UDP + 20 IP = 64 bytes
    let dur = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let at_start = received.load(Ordering::SeqCst);
    while start.elapsed() < dur {
        for _ in 0..64 {
            let _ = source.send(&payload);
        }
    }
    let delivered = received.load(Ordering::SeqCst) - at_start;
    let took = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    rx.join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))?;
    ensure!(delivered > 0, "nothing was forwarded");
    Ok(delivered as f64 / took)
}
