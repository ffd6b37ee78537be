//! The WAN-check benchmark's machinery: a throwaway lab of two namespaces, `edge` (the
//! prober) and `cpe`, where `ip route add local 10.200.0.0/15 dev lo` makes every
//! address answer echo (the method of `/work/shared/anchors/03_fping.sh`), and one
//! sweep by the agent's engine (`wan-sweep`) and by Debian's `fping`, each a process
//! started the same way (`ip netns exec edge /usr/bin/time … prober …`), so wall time,
//! CPU-seconds and peak RSS are measured alike. The method is in `benches/wan.rs`.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use outpost_testkit::netns::{Netns, veth};

/// The first target; the others follow it.
pub const FIRST: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);

/// The two namespaces; removed when dropped.
pub struct Lab {
    pub edge: Netns,
    pub cpe: Netns,
}

impl Lab {
    /// Builds the lab and checks the last of `count` targets answers.
    pub fn new(count: u32) -> anyhow::Result<Lab> {
        ensure!(count <= 131_000, "the lab answers up to 131,000 targets");
        let edge = Netns::new("wanb-e");
        let cpe = Netns::new("wanb-c");
        veth(
            &edge,
            "veth-edge",
            Some("10.199.0.1/30"),
            &cpe,
            "veth-cpe",
            Some("10.199.0.2/30"),
        );
        cpe.run(&["ip", "route", "add", "local", "10.200.0.0/15", "dev", "lo"]);
        edge.run(&["ip", "route", "add", "10.200.0.0/15", "via", "10.199.0.2"]);
        // Echo replies are not rate limited (type 0 is not in icmp_ratemask); raise the
        // global ICMP budget anyway so neither prober is throttled by the lab.
        cpe.run(&[
            "sysctl",
            "-qw",
            "net.ipv4.icmp_ratelimit=0",
            "net.ipv4.icmp_msgs_per_sec=1000000",
            "net.ipv4.icmp_msgs_burst=1000000",
        ]);
        let last = last(count).to_string();
        ensure!(
            edge.ping(&last),
            "the lab's last target {last} does not answer"
        );
        Ok(Lab { edge, cpe })
    }
}

/// The last of `count` targets from [`FIRST`].
pub fn last(count: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(FIRST) + count - 1)
}

/// One prober's sweep.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub prober: String,
    pub targets: u32,
    /// From process start to exit, seconds (includes `ip netns exec`, ~3 ms, for all).
    pub wall_secs: f64,
    /// User + system CPU of the prober process, seconds.
    pub cpu_secs: f64,
    /// Peak resident set, KiB.
    pub max_rss_kib: u64,
    /// Targets reported down (every one of them answers: each is a false down).
    pub down: u64,
    /// Targets reported up.
    pub up: u64,
}

/// Runs `args` in `edge` under `/usr/bin/time`; returns (stdout, stderr, wall, cpu, rss).
fn timed(lab: &Lab, args: &[&str]) -> anyhow::Result<(String, String, f64, f64, u64)> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("time");
    let out_s = out.to_str().context("temp path")?;
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &lab.edge.name,
        "/usr/bin/time",
        "-o",
        out_s,
    ])
    .args(["-f", "%U %S %M"])
    .args(args);
    let start = Instant::now();
    let o = cmd.output().context("starting the prober")?;
    let wall = start.elapsed().as_secs_f64();
    let t = std::fs::read_to_string(&out).context("reading /usr/bin/time's figures")?;
    let line = t.lines().last().unwrap_or_default();
    let f: Vec<&str> = line.split_whitespace().collect();
    let [u, s, m] = f.as_slice() else {
        bail!("unexpected /usr/bin/time output {t:?}");
    };
    Ok((
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        wall,
        u.parse::<f64>()? + s.parse::<f64>()?,
        m.parse()?,
    ))
}

/// One sweep of `count` targets by the agent's engine at `rate_pps`.
pub fn ours(
    lab: &Lab,
    bin: &Path,
    count: u32,
    rate_pps: u32,
    timeout_ms: u64,
) -> anyhow::Result<Sweep> {
    let bin = bin.to_str().context("binary path")?;
    let (count_s, rate_s, timeout_s) = (
        count.to_string(),
        rate_pps.to_string(),
        timeout_ms.to_string(),
    );
    let first = FIRST.to_string();
    let (stdout, stderr, wall, cpu, rss) =
        timed(lab, &[bin, &first, &count_s, &rate_s, &timeout_s])?;
    let field = |k: &str| -> anyhow::Result<u64> {
        stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .with_context(|| format!("wan-sweep printed no {k}: {stdout} {stderr}"))?
            .parse::<f64>()
            .map(|v| v as u64)
            .map_err(Into::into)
    };
    Ok(Sweep {
        prober: format!("ours ({rate_pps} pps)"),
        targets: count,
        wall_secs: wall,
        cpu_secs: cpu,
        max_rss_kib: rss,
        down: field("down")?,
        up: field("answered")?,
    })
}

/// One sweep of `count` targets by fping (`-q -C1 -r0 -t500`, as the anchor), at its
/// default interval (`None`) or `-i interval_ms`.
pub fn fping(lab: &Lab, count: u32, interval_ms: Option<&str>) -> anyhow::Result<Sweep> {
    let (first, last) = (FIRST.to_string(), last(count).to_string());
    let mut args = vec!["fping", "-q", "-C1", "-r0", "-t500"];
    if let Some(i) = interval_ms {
        args.extend(["-i", i]);
    }
    args.extend(["-g", &first, &last]);
    let (_, stderr, wall, cpu, rss) = timed(lab, &args)?;
    // `-C1 -q`: one line per target on stderr, "addr : 0.05" or "addr : -".
    let (mut up, mut down) = (0, 0);
    for l in stderr.lines().filter(|l| l.contains(" : ")) {
        if l.trim_end().ends_with(" -") {
            down += 1;
        } else {
            up += 1;
        }
    }
    Ok(Sweep {
        prober: match interval_ms {
            Some(i) => format!("fping -i {i}"),
            None => "fping (default interval)".into(),
        },
        targets: count,
        wall_secs: wall,
        cpu_secs: cpu,
        max_rss_kib: rss,
        down,
        up,
    })
}

/// The sweeps as a table.
pub fn table(sweeps: &[Sweep]) -> String {
    let mut s = format!(
        "{:<28} {:>8} {:>9} {:>9} {:>10} {:>8} {:>7}\n",
        "prober", "targets", "wall s", "CPU s", "RSS MiB", "up", "down"
    );
    for w in sweeps {
        s.push_str(&format!(
            "{:<28} {:>8} {:>9.3} {:>9.3} {:>10.1} {:>8} {:>7}\n",
            w.prober,
            w.targets,
            w.wall_secs,
            w.cpu_secs,
            w.max_rss_kib as f64 / 1024.0,
            w.up,
            w.down
        ));
    }
    s
}
